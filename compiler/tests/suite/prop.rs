//! For random small policies, the compiled table (encoded, decoded, evaluated by the
//! ruleset engine) decides exactly as a straightforward interpreter over the parsed policy
//! model, for random peers. The interpreter follows ARCHITECTURE.md's "Decision order" literally.

use std::net::IpAddr;

use certgate_compiler::{compile, Input, NoFiles, Options};
use proptest::prelude::*;
use ruleset::{
    Action, CertFacts, Curve, Engine, KeyInfo, Mode, Peer, PeerCert, Reason, SigHash, SigInfo,
    TlsVersion,
};

const TRUST_DOMAINS: &[&str] = &["a.test", "b.test"];
const PATTERNS: &[&str] = &[
    "spiffe://a.test/ns/x/sa/y",
    "spiffe://a.test/ns/x/sa/*",
    "spiffe://a.test/ns/*/sa/y",
    "spiffe://a.test/ns/**",
    "spiffe://a.test/ns/x",
    "spiffe://b.test/ns/x/sa/y",
    "spiffe://b.test/**",
];
const IDENTITIES: &[&str] = &[
    "spiffe://a.test/ns/x/sa/y",
    "spiffe://a.test/ns/x/sa/z",
    "spiffe://a.test/ns/w/sa/y",
    "spiffe://a.test/ns/x",
    "spiffe://b.test/ns/x/sa/y",
    "spiffe://c.test/ns/x/sa/y",
];
const PORTS: &[&str] = &["[80]", "[\"8000-8100\"]", "[443, 8443]"];
const PEER_PORTS: &[u16] = &[80, 8050, 443, 9999];
const SNIS: &[&str] = &["[api.test]", "[\"*.test\"]", "[api.test, other.example]"];
const PEER_SNIS: &[&str] = &["api.test", "x.test", "other.example", "a.b.test"];
const CIDRS: &[&str] = &[
    "[10.0.0.0/8]",
    "[192.168.1.0/24, \"fd00::/8\"]",
    "[10.1.2.3]",
];
const PEER_IPS: &[&str] = &[
    "10.1.2.3",
    "192.168.1.7",
    "fd00::1",
    "8.8.8.8",
    "::ffff:10.9.9.9",
];
const ISSUERS: &[&str] = &["CN=A", "CN=B"];
const SERIALS: &[&str] = &["01", "02", "03"];

#[derive(Debug, Clone)]
struct GenRule {
    deny: bool,
    principals: Option<Vec<usize>>,
    not_principals: Vec<usize>,
    ports: Option<usize>,
    sni: Option<usize>,
    cidrs: Option<usize>,
}

#[derive(Debug, Clone)]
struct GenPolicy {
    audit: bool,
    default_allow: bool,
    trust_domains: Vec<usize>,
    min_tls: Option<bool>,
    max_lifetime: Option<bool>,
    keys: Option<(Option<u32>, Vec<usize>, bool)>,
    forbid_sha1: bool,
    serials: Vec<(usize, Option<usize>)>,
    fingerprint: bool,
    rules: Vec<GenRule>,
}

fn rule() -> impl Strategy<Value = GenRule> {
    (
        any::<bool>(),
        proptest::option::of(proptest::collection::vec(0..PATTERNS.len(), 1..3)),
        proptest::collection::vec(0..PATTERNS.len(), 0..2),
        proptest::option::of(0..PORTS.len()),
        proptest::option::of(0..SNIS.len()),
        proptest::option::of(0..CIDRS.len()),
    )
        .prop_map(
            |(deny, principals, not_principals, ports, sni, cidrs)| GenRule {
                deny,
                principals,
                not_principals,
                ports,
                sni,
                cidrs,
            },
        )
}

fn policy() -> impl Strategy<Value = GenPolicy> {
    (
        (
            any::<bool>(),
            any::<bool>(),
            proptest::sample::subsequence(vec![0usize, 1], 0..=2),
        ),
        (
            proptest::option::of(any::<bool>()),
            proptest::option::of(any::<bool>()),
        ),
        proptest::option::of((
            proptest::option::of(prop_oneof![Just(2048u32), Just(3072u32)]),
            proptest::sample::subsequence(vec![0usize, 1], 0..=2),
            any::<bool>(),
        )),
        any::<bool>(),
        proptest::collection::vec(
            (0..SERIALS.len(), proptest::option::of(0..ISSUERS.len())),
            0..2,
        ),
        any::<bool>(),
        proptest::collection::vec(rule(), 0..6),
    )
        .prop_map(
            |(
                (audit, default_allow, trust_domains),
                (min_tls, max_lifetime),
                keys,
                forbid_sha1,
                serials,
                fingerprint,
                rules,
            )| GenPolicy {
                audit,
                default_allow,
                trust_domains,
                min_tls,
                max_lifetime,
                keys,
                forbid_sha1,
                serials,
                fingerprint,
                rules,
            },
        )
}

const REVOKED_FP: [u8; 32] = [0xab; 32];

fn yaml(p: &GenPolicy) -> String {
    let mut y = String::from(
        "apiVersion: certgate.dev/v1alpha1\nkind: MeshTLSPolicy\nmetadata: {name: prop}\nspec:\n",
    );
    y += &format!("  mode: {}\n", if p.audit { "audit" } else { "enforce" });
    y += &format!(
        "  defaultAction: {}\n",
        if p.default_allow { "allow" } else { "deny" }
    );
    if let Some(v13) = p.min_tls {
        y += &format!(
            "  tls: {{minVersion: \"{}\"}}\n",
            if v13 { "1.3" } else { "1.2" }
        );
    }
    y += "  peerCertificate:\n";
    y += "    forbidSignatureAlgorithms: [md5]\n";
    if !p.trust_domains.is_empty() {
        let tds: Vec<&str> = p.trust_domains.iter().map(|i| TRUST_DOMAINS[*i]).collect();
        y += &format!("    trustDomains: [{}]\n", tds.join(", "));
    }
    if let Some(long) = p.max_lifetime {
        y += &format!("    maxLifetime: {}\n", if long { "7d" } else { "24h" });
    }
    if let Some((rsa, curves, ed)) = &p.keys {
        y += "    keys:\n";
        if let Some(b) = rsa {
            y += &format!("      rsaMinBits: {b}\n");
        }
        let names: Vec<&str> = curves.iter().map(|c| ["P-256", "P-384"][*c]).collect();
        y += &format!(
            "      ecdsaCurves: [{}]\n      ed25519: {ed}\n",
            names.join(", ")
        );
    }
    if p.forbid_sha1 {
        y = y.replace("[md5]", "[md5, sha1]");
    }
    y += "  revocation:\n    serials:\n";
    for (s, issuer) in &p.serials {
        match issuer {
            Some(i) => {
                y += &format!(
                    "      - {{serial: \"{}\", issuer: \"{}\"}}\n",
                    SERIALS[*s], ISSUERS[*i]
                )
            }
            None => y += &format!("      - {{serial: \"{}\"}}\n", SERIALS[*s]),
        }
    }
    if p.serials.is_empty() {
        y = y.replace("    serials:\n", "    serials: []\n");
    }
    if p.fingerprint {
        y += &format!("    publicKeys: [\"{}\"]\n", "ab".repeat(32));
    }
    y += "  rules:\n";
    if p.rules.is_empty() {
        y = y.replace("  rules:\n", "  rules: []\n");
    }
    for (i, r) in p.rules.iter().enumerate() {
        y += &format!(
            "    - name: r{i}\n      action: {}\n",
            if r.deny { "deny" } else { "allow" }
        );
        if let Some(ps) = &r.principals {
            let v: Vec<String> = ps.iter().map(|i| format!("\"{}\"", PATTERNS[*i])).collect();
            y += &format!("      principals: [{}]\n", v.join(", "));
        }
        if !r.not_principals.is_empty() {
            let v: Vec<String> = r
                .not_principals
                .iter()
                .map(|i| format!("\"{}\"", PATTERNS[*i]))
                .collect();
            y += &format!("      notPrincipals: [{}]\n", v.join(", "));
        }
        if let Some(i) = r.ports {
            y += &format!("      ports: {}\n", PORTS[i]);
        }
        if let Some(i) = r.sni {
            y += &format!("      sni: {}\n", SNIS[i]);
        }
        if let Some(i) = r.cidrs {
            y += &format!("      sourceCidrs: {}\n", CIDRS[i]);
        }
    }
    y
}

#[derive(Debug, Clone)]
struct GenPeer {
    identity: usize,
    key: usize,
    sha1: bool,
    long_lived: bool,
    serial: usize,
    issuer: usize,
    revoked_fp: bool,
    tls: Option<bool>,
    port: Option<usize>,
    sni: Option<usize>,
    ip: Option<usize>,
}

fn peer() -> impl Strategy<Value = GenPeer> {
    (
        (0..IDENTITIES.len(), 0..5usize, any::<bool>(), any::<bool>()),
        (
            0..SERIALS.len(),
            0..ISSUERS.len(),
            proptest::bool::weighted(0.2),
        ),
        (
            proptest::option::of(any::<bool>()),
            proptest::option::of(0..PEER_PORTS.len()),
            proptest::option::of(0..PEER_SNIS.len()),
            proptest::option::of(0..PEER_IPS.len()),
        ),
    )
        .prop_map(
            |(
                (identity, key, sha1, long_lived),
                (serial, issuer, revoked_fp),
                (tls, port, sni, ip),
            )| GenPeer {
                identity,
                key,
                sha1,
                long_lived,
                serial,
                issuer,
                revoked_fp,
                tls,
                port,
                sni,
                ip,
            },
        )
}

fn facts(p: &GenPeer) -> CertFacts {
    let key = match p.key {
        0 => KeyInfo::Rsa { bits: 1024 },
        1 => KeyInfo::Rsa { bits: 2048 },
        2 => KeyInfo::Ecdsa {
            curve: Some(Curve::P256),
        },
        3 => KeyInfo::Ecdsa {
            curve: Some(Curve::P521),
        },
        _ => KeyInfo::Ed25519,
    };
    let hash = if p.sha1 {
        SigHash::Sha1
    } else {
        SigHash::Sha256
    };
    CertFacts {
        serial: ruleset::cert::parse_serial(SERIALS[p.serial]).unwrap(),
        issuer: ISSUERS[p.issuer].to_string(),
        issuer_id: ruleset::dn::parse_dn_string(ISSUERS[p.issuer]).unwrap(),
        subject: String::new(),
        not_before: 1_700_000_000,
        not_after: 1_700_000_000 + if p.long_lived { 3 * 86_400 } else { 3600 },
        key,
        signature: SigInfo {
            name: "test".into(),
            hash,
        },
        uri_sans: vec![IDENTITIES[p.identity].to_string()],
        dns_sans: vec![],
        other_sans: Vec::new(),
        sha256: [0x11; 32],
        revocation_keys: ruleset::RevocationKeys::from_digests(
            [0x22; 32],
            if p.revoked_fp { REVOKED_FP } else { [0x33; 32] },
            [0x44; 32],
        ),
        subject_key_id: None,
        authority_key_id: None,
    }
}

fn to_peer(p: &GenPeer) -> Peer {
    Peer {
        cert: PeerCert::Parsed(std::sync::Arc::new(facts(p))),
        tls_version: p.tls.map(|v13| {
            if v13 {
                TlsVersion::V1_3
            } else {
                TlsVersion::V1_2
            }
        }),
        port: p.port.map(|i| PEER_PORTS[i]),
        sni: p.sni.map(|i| PEER_SNIS[i].to_string()),
        source_ip: p.ip.map(|i| PEER_IPS[i].parse::<IpAddr>().unwrap()),
    }
}

/// The naive interpreter over the compiler's policy model.
fn interpret(c: &certgate_compiler::Compilation, peer: &Peer) -> (Action, Reason, Option<String>) {
    let merged = c.merged.as_ref().unwrap();
    let spec = &c.policies[0].spec;
    let PeerCert::Parsed(f) = &peer.cert else {
        unreachable!()
    };
    let deny = |r| (Action::Deny, r, None);
    if spec
        .public_keys
        .iter()
        .any(|k| k.keys.contains(&f.spki_sha256()))
    {
        return deny(Reason::RevokedKey);
    }
    if spec
        .serials
        .iter()
        .any(|s| s.value.serial == f.serial && s.value.issuer.is_none_or(|i| i == f.issuer_id))
    {
        return deny(Reason::RevokedSerial);
    }
    let id = f.uri_sans[0].as_str();
    let td = id
        .trim_start_matches("spiffe://")
        .split('/')
        .next()
        .unwrap();
    if !merged.trust_domains.is_empty() && !merged.trust_domains.iter().any(|t| t == td) {
        return deny(Reason::UntrustedDomain);
    }
    if let Some(k) = &merged.keys {
        let bad = match &f.key {
            KeyInfo::Rsa { bits } => match k.rsa_min_bits {
                None => Some(Reason::KeyTypeNotAllowed),
                Some(min) if *bits < min => Some(Reason::WeakRsaKey),
                _ => None,
            },
            KeyInfo::Ecdsa { curve } => {
                if k.ecdsa_curves.is_empty() {
                    Some(Reason::KeyTypeNotAllowed)
                } else if curve.is_some_and(|c| k.ecdsa_curves.contains(&c)) {
                    None
                } else {
                    Some(Reason::CurveNotAllowed)
                }
            }
            KeyInfo::Ed25519 => (!k.ed25519).then_some(Reason::KeyTypeNotAllowed),
            KeyInfo::Other { .. } => Some(Reason::KeyTypeNotAllowed),
        };
        if let Some(r) = bad {
            return deny(r);
        }
    }
    if merged.forbid_signatures.contains(&f.signature.hash) {
        return deny(Reason::ForbiddenSignature);
    }
    if let Some(max) = merged.max_lifetime {
        if (f.not_after - f.not_before) as u64 > max {
            return deny(Reason::LifetimeTooLong);
        }
    }
    if let Some(min) = merged.min_tls {
        match peer.tls_version {
            None => return deny(Reason::TlsVersionUnknown),
            Some(v) if v < min => return deny(Reason::TlsVersionTooLow),
            _ => {}
        }
    }
    for want in [Action::Deny, Action::Allow] {
        for r in spec.rules.iter().filter(|r| r.action.value == want) {
            // A condition on a fact the peer lacks: deny rules match, allow rules do not.
            let unknown = want == Action::Deny;
            let principals = r
                .principals
                .as_ref()
                .is_none_or(|ps| ps.iter().any(|p| p.value.matches(id)));
            let not = r.not_principals.iter().any(|p| p.value.matches(id));
            let ports = r.ports.is_empty()
                || peer.port.map_or(unknown, |port| {
                    r.ports
                        .iter()
                        .any(|p| p.value.start <= port && port <= p.value.end)
                });
            let sni = r.sni.is_empty()
                || peer.sni.as_deref().map_or(unknown, |s| {
                    r.sni.iter().any(|p| match p.value.strip_prefix("*.") {
                        Some(suffix) => s
                            .split_once('.')
                            .is_some_and(|(l, rest)| !l.is_empty() && rest == suffix),
                        None => p.value == s,
                    })
                });
            let cidrs = r.source_cidrs.is_empty()
                || peer.source_ip.map_or(unknown, |ip| {
                    r.source_cidrs.iter().any(|c| c.value.contains(ip))
                });
            if principals && !not && ports && sni && cidrs {
                let reason = if want == Action::Deny {
                    Reason::DenyRule
                } else {
                    Reason::AllowRule
                };
                return (want, reason, Some(r.name.value.clone()));
            }
        }
    }
    match merged.default_action {
        Action::Allow => (Action::Allow, Reason::DefaultAllow, None),
        Action::Deny => deny(Reason::DefaultDeny),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn table_decides_like_the_naive_interpreter(p in policy(), peers in proptest::collection::vec(peer(), 1..12)) {
        let text = yaml(&p);
        let c = compile(vec![Input::new("prop.yaml", text.clone())], &NoFiles, &Options { now: 0 });
        prop_assert_eq!(c.error_count(), 0, "{}\n{:#?}", text, c.diagnostics);
        let bytes = c.bytes.clone().unwrap();
        let engine = Engine::from_bytes(&bytes).unwrap();
        prop_assert_eq!(engine.table().mode, if p.audit { Mode::Audit } else { Mode::Enforce });
        // Rules the compiler calls shadowed must never decide (the check is sound).
        let shadowed: Vec<String> = c
            .diagnostics
            .iter()
            .filter(|d| d.code == certgate_compiler::Code::ShadowedRule)
            .filter_map(|d| d.message.split('`').nth(1).map(str::to_string))
            .collect();
        // The indexed check finds exactly what comparing every pair finds.
        let order = certgate_compiler::check::evaluation_order(&c.policies);
        let brute: Vec<String> = order
            .iter()
            .enumerate()
            .filter(|(j, b)| order[..*j].iter().any(|a| a.lower(0).covers(&b.lower(0))))
            .map(|(_, b)| b.name.value.clone())
            .collect();
        let mut sorted_shadowed = shadowed.clone();
        sorted_shadowed.sort();
        let mut sorted_brute = brute;
        sorted_brute.sort();
        prop_assert_eq!(sorted_shadowed, sorted_brute);
        for gp in &peers {
            let peer = to_peer(gp);
            let d = engine.evaluate(&peer);
            if let Some(rule) = d.rule {
                prop_assert!(!shadowed.iter().any(|s| s == rule), "shadowed rule {} decided\n{}", rule, text);
            }
            let want = interpret(&c, &peer);
            prop_assert_eq!(
                (d.action, d.reason, d.rule.map(str::to_string)),
                want,
                "policy:\n{}\npeer: {:?}",
                text,
                peer
            );
        }
    }
}
