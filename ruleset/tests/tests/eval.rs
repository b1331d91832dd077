//! The decision order of ARCHITECTURE.md ("Decision order"), one reason at a time.

use ruleset::*;

use crate::support::*;

const WEB: &str = "spiffe://cluster.local/ns/frontend/sa/web";
const LEGACY: &str = "spiffe://cluster.local/ns/legacy/sa/old";

fn engine(t: Table) -> Engine {
    Engine::new(t)
}

fn decide(e: &Engine, p: &Peer) -> (Action, &'static str, Option<String>) {
    let d = e.evaluate(p);
    (d.action, d.reason.code(), d.rule.map(str::to_owned))
}

#[test]
fn allow_rule_admits_and_names_itself() {
    let e = engine(table(vec![rule("web", Action::Allow, &[WEB])]));
    let p = who(WEB);
    let d = e.evaluate(&p);
    assert_eq!(d.action, Action::Allow);
    assert_eq!(d.reason, Reason::AllowRule);
    assert_eq!(d.rule, Some("web"));
    assert_eq!(d.policy, Some("test-policy"));
    assert_eq!(d.identity, Some(WEB));
    assert!(d.admits());
}

#[test]
fn unknown_identity_falls_to_the_default() {
    let e = engine(table(vec![rule("web", Action::Allow, &[WEB])]));
    assert_eq!(
        decide(&e, &who(LEGACY)),
        (Action::Deny, "default_deny", None)
    );
    let mut t = table(vec![]);
    t.default_action = Action::Allow;
    assert_eq!(
        decide(&engine(t), &who(LEGACY)),
        (Action::Allow, "default_allow", None)
    );
}

#[test]
fn deny_rules_beat_earlier_allow_rules() {
    let e = engine(table(vec![
        rule("all", Action::Allow, &["spiffe://cluster.local/**"]),
        rule(
            "no-legacy",
            Action::Deny,
            &["spiffe://cluster.local/ns/legacy/**"],
        ),
    ]));
    assert_eq!(
        decide(&e, &who(LEGACY)),
        (Action::Deny, "deny_rule", Some("no-legacy".into()))
    );
    assert_eq!(
        decide(&e, &who(WEB)),
        (Action::Allow, "allow_rule", Some("all".into()))
    );
}

#[test]
fn first_matching_rule_in_order_wins() {
    let e = engine(table(vec![
        rule(
            "one",
            Action::Allow,
            &["spiffe://cluster.local/ns/*/sa/web"],
        ),
        rule("two", Action::Allow, &[WEB]),
    ]));
    assert_eq!(decide(&e, &who(WEB)).2.as_deref(), Some("one"));
}

#[test]
fn certificate_problems_come_first() {
    let e = engine(table(vec![rule("any", Action::Allow, &[])]));
    let missing = Peer::new(PeerCert::Missing);
    assert_eq!(decide(&e, &missing).1, "no_peer_cert");
    let bad = Peer::new(PeerCert::Unparsable("x".into()));
    assert_eq!(decide(&e, &bad).1, "bad_peer_cert");
    assert_eq!(decide(&e, &peer(facts(&[]))).1, "no_spiffe_id");
    assert_eq!(
        decide(&e, &peer(facts(&["https://example.com/x"]))).1,
        "no_spiffe_id"
    );
    assert_eq!(
        decide(&e, &peer(facts(&[WEB, LEGACY]))).1,
        "multiple_spiffe_ids"
    );
    assert_eq!(
        decide(&e, &peer(facts(&["spiffe://Bad/x"]))).1,
        "invalid_spiffe_id"
    );
    // A second, non-SPIFFE URI SAN does not make the identity ambiguous.
    assert_eq!(
        decide(&e, &peer(facts(&[WEB, "https://example.com"]))).1,
        "allow_rule"
    );
}

#[test]
fn revocation_by_serial_issuer_certificate_key_and_ca() {
    let issuer = ruleset::dn::parse_dn_string("O=Example, CN=Intermediate CA").unwrap();
    let mut t = table(vec![rule("any", Action::Allow, &[])]);
    t.revocation.add_serial(Some(issuer), &[0x4f, 0x38, 0x0a]);
    t.normalize();
    let e = engine(t.clone());
    assert_eq!(decide(&e, &who(WEB)).1, "revoked_serial");
    // The same serial from another issuer is a different certificate.
    let mut other = facts(&[WEB]);
    other.issuer_id ^= 1;
    assert_eq!(decide(&e, &peer(other.clone())).1, "allow_rule");
    // An entry without an issuer applies to every issuer.
    t.revocation = Revocation::default();
    t.revocation.add_serial(None, &[0x00, 0x4f, 0x38, 0x0a]);
    t.normalize();
    assert_eq!(decide(&engine(t.clone()), &peer(other)).1, "revoked_serial");
    let f = facts(&[WEB]);
    let only = |add: &dyn Fn(&mut Revocation)| {
        let mut t = t.clone();
        t.revocation = Revocation::default();
        add(&mut t.revocation);
        t.normalize();
        engine(t)
    };
    // Whole-certificate SHA-256 is no key: revoking it revokes nothing.
    let e = only(&|r| r.add_certificate(&f.sha256));
    assert_eq!(decide(&e, &who(WEB)).1, "allow_rule");
    let e = only(&|r| r.add_certificate(&f.tbs_sha256()));
    assert_eq!(decide(&e, &who(WEB)).1, "revoked_certificate");
    let e = only(&|r| r.add_key(&f.public_key_sha256()));
    assert_eq!(decide(&e, &who(WEB)).1, "revoked_key");
    let e = only(&|r| r.add_key(&f.spki_sha256()));
    assert_eq!(decide(&e, &who(WEB)).1, "revoked_key");
    let e = only(&|r| r.add_issuer(f.issuer_id, Some(b"ca key")));
    let mut with_aki = f.clone();
    with_aki.authority_key_id = Some(b"ca key".to_vec());
    assert_eq!(decide(&e, &peer(with_aki.clone())).1, "revoked_issuer");
    // Without an authority key identifier the leaf cannot prove another CA issued it.
    assert_eq!(decide(&e, &who(WEB)).1, "revoked_issuer");
    with_aki.authority_key_id = Some(b"new key".to_vec());
    assert_eq!(decide(&e, &peer(with_aki)).1, "allow_rule");
    // Certificate before key before serial before issuer.
    let e = only(&|r| {
        r.add_certificate(&f.tbs_sha256());
        r.add_key(&f.spki_sha256());
        r.add_serial(None, &f.serial);
        r.add_issuer(f.issuer_id, None);
    });
    assert_eq!(decide(&e, &who(WEB)).1, "revoked_certificate");
    let e = only(&|r| {
        r.add_key(&f.spki_sha256());
        r.add_serial(None, &f.serial);
        r.add_issuer(f.issuer_id, None);
    });
    assert_eq!(decide(&e, &who(WEB)).1, "revoked_key");
    let e = only(&|r| {
        r.add_serial(None, &f.serial);
        r.add_issuer(f.issuer_id, None);
    });
    assert_eq!(decide(&e, &who(WEB)).1, "revoked_serial");
}

#[test]
fn constraints_deny_with_their_own_reason() {
    let base = || table(vec![rule("any", Action::Allow, &[])]);
    let check = |t: Table, f: CertFacts, want: &str| {
        assert_eq!(decide(&engine(t), &peer(f)).1, want);
    };

    let mut t = base();
    t.constraints.trust_domains = vec!["prod.example".into()];
    check(t, facts(&[WEB]), "untrusted_domain");

    let keys = KeyPolicy {
        rsa_min_bits: Some(2048),
        ecdsa_curves: vec![Curve::P256],
        ed25519: false,
    };
    let mut t = base();
    t.constraints.keys = Some(keys.clone());
    let mut f = facts(&[WEB]);
    f.key = KeyInfo::Rsa { bits: 1024 };
    check(t.clone(), f.clone(), "weak_rsa_key");
    f.key = KeyInfo::Rsa { bits: 2048 };
    check(t.clone(), f.clone(), "allow_rule");
    f.key = KeyInfo::Ecdsa {
        curve: Some(Curve::P384),
    };
    check(t.clone(), f.clone(), "curve_not_allowed");
    f.key = KeyInfo::Ecdsa { curve: None };
    check(t.clone(), f.clone(), "curve_not_allowed");
    f.key = KeyInfo::Ed25519;
    check(t.clone(), f.clone(), "key_type_not_allowed");
    let mut no_rsa = t.clone();
    no_rsa.constraints.keys = Some(KeyPolicy {
        rsa_min_bits: None,
        ..keys
    });
    f.key = KeyInfo::Rsa { bits: 4096 };
    check(no_rsa, f, "key_type_not_allowed");

    let mut t = base();
    t.constraints.forbid_sig_hashes = vec![SigHash::Sha1, SigHash::Md5];
    let mut f = facts(&[WEB]);
    f.signature = SigInfo {
        name: "sha1WithRSAEncryption".into(),
        hash: SigHash::Sha1,
    };
    check(t, f, "forbidden_signature");

    let mut t = base();
    t.constraints.max_lifetime_secs = Some(3599);
    check(t.clone(), facts(&[WEB]), "lifetime_too_long");
    t.constraints.max_lifetime_secs = Some(3600);
    check(t, facts(&[WEB]), "allow_rule");
}

#[test]
fn tls_version_floor() {
    let mut t = table(vec![rule("any", Action::Allow, &[])]);
    t.constraints.min_tls = Some(TlsVersion::V1_3);
    let e = engine(t);
    let mut p = who(WEB);
    assert_eq!(decide(&e, &p).1, "allow_rule");
    p.tls_version = Some(TlsVersion::V1_2);
    assert_eq!(decide(&e, &p).1, "tls_version_too_low");
    p.tls_version = None;
    assert_eq!(decide(&e, &p).1, "tls_version_unknown");
}

#[test]
fn revocation_is_checked_before_constraints() {
    let mut t = table(vec![]);
    t.constraints.trust_domains = vec!["elsewhere".into()];
    t.revocation.add_certificate(&[0x22; 32]);
    t.normalize();
    assert_eq!(decide(&engine(t), &who(WEB)).1, "revoked_certificate");
}

#[test]
fn ports_sni_sources_and_not_principals() {
    let mut r = rule("web-8443", Action::Allow, &["spiffe://cluster.local/**"]);
    r.ports = vec![PortRange {
        start: 8443,
        end: 8443,
    }];
    r.sni = vec!["*.payments.svc".into()];
    r.source_cidrs = vec![Cidr {
        addr: "10.0.0.0".parse().unwrap(),
        prefix: 8,
    }];
    r.not_principals = vec![pat(LEGACY)];
    let e = engine(table(vec![r]));
    let mut p = who(WEB);
    p.sni = Some("api.payments.svc".into());
    p.source_ip = Some("10.1.2.3".parse().unwrap());
    assert_eq!(decide(&e, &p).1, "allow_rule");
    let mut q = p.clone();
    q.port = Some(9000);
    assert_eq!(decide(&e, &q).1, "default_deny");
    let mut q = p.clone();
    q.sni = Some("payments.svc".into());
    assert_eq!(decide(&e, &q).1, "default_deny");
    let mut q = p.clone();
    q.source_ip = Some("192.168.0.1".parse().unwrap());
    assert_eq!(decide(&e, &q).1, "default_deny");
    // IPv4-mapped IPv6 sources match IPv4 blocks.
    let mut q = p.clone();
    q.source_ip = Some("::ffff:10.9.9.9".parse().unwrap());
    assert_eq!(decide(&e, &q).1, "allow_rule");
    let mut q = p.clone();
    q.cert = who(LEGACY).cert;
    assert_eq!(decide(&e, &q).1, "default_deny");
}

#[test]
fn unknown_facts_never_widen_access() {
    let mut allow = rule("allow-8443", Action::Allow, &[]);
    allow.ports = vec![PortRange {
        start: 8443,
        end: 8443,
    }];
    let mut deny = rule("deny-admin-sni", Action::Deny, &[]);
    deny.sni = vec!["admin.internal".into()];
    let mut t = table(vec![allow.clone()]);
    let mut p = who(WEB);
    p.port = None;
    assert_eq!(decide(&engine(t.clone()), &p).1, "default_deny");
    t.rules = vec![deny, rule("any", Action::Allow, &[])];
    p.sni = None;
    assert_eq!(decide(&engine(t), &p).1, "deny_rule");
}

#[test]
fn audit_mode_records_but_admits() {
    let mut t = table(vec![]);
    t.mode = Mode::Audit;
    let e = engine(t);
    let p = who(WEB);
    let d = e.evaluate(&p);
    assert_eq!(d.action, Action::Deny);
    assert!(d.admits());
    assert!(d.would_deny());
}

#[test]
fn what_if_identity_skips_certificate_checks_only() {
    let mut t = table(vec![rule("web", Action::Allow, &[WEB])]);
    t.constraints.keys = Some(KeyPolicy::default());
    t.constraints.trust_domains = vec!["cluster.local".into()];
    let e = engine(t);
    let p = |id: &str| Peer {
        tls_version: Some(TlsVersion::V1_3),
        ..Peer::new(PeerCert::Assumed {
            identity: id.into(),
        })
    };
    assert_eq!(decide(&e, &p(WEB)).1, "allow_rule");
    assert_eq!(decide(&e, &p("spiffe://other/x")).1, "untrusted_domain");
    assert_eq!(decide(&e, &p("not-spiffe")).1, "invalid_spiffe_id");
}

#[test]
fn reason_codes_are_stable_and_round_trip() {
    for r in Reason::ALL {
        assert_eq!(Reason::from_code(r.code()), Some(r));
    }
    let codes: Vec<_> = Reason::ALL.iter().map(|r| r.code()).collect();
    let mut sorted = codes.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), codes.len(), "codes must be unique");
}

fn vouched(first_uri_san: Option<&str>, sha256: Option<[u8; 32]>) -> Peer {
    Peer {
        tls_version: Some(TlsVersion::V1_3),
        ..Peer::new(PeerCert::Vouched(std::sync::Arc::new(Vouched {
            first_uri_san: first_uri_san.map(str::to_owned),
            sha256,
            subject: Some("CN=web".into()),
        })))
    }
}

#[test]
fn a_vouched_certificate_is_decided_by_identity_when_the_table_needs_nothing_more() {
    let mut t = table(vec![
        rule("no-legacy", Action::Deny, &[LEGACY]),
        rule("web", Action::Allow, &[WEB]),
    ]);
    t.constraints.trust_domains = vec!["cluster.local".into()];
    t.constraints.min_tls = Some(TlsVersion::V1_3);
    let e = engine(t);
    assert!(e.decides_without_certificate());
    assert_eq!(
        decide(&e, &vouched(Some(WEB), Some([1; 32]))).1,
        "allow_rule"
    );
    assert_eq!(
        decide(&e, &vouched(Some(LEGACY), Some([1; 32]))).1,
        "deny_rule"
    );
    assert_eq!(
        decide(
            &e,
            &vouched(Some("spiffe://cluster.local/ns/x/sa/y"), Some([1; 32]))
        )
        .1,
        "default_deny"
    );
    assert_eq!(
        decide(&e, &vouched(Some("spiffe://other/x"), Some([1; 32]))).1,
        "untrusted_domain"
    );
    let old_tls = Peer {
        tls_version: Some(TlsVersion::V1_2),
        ..vouched(Some(WEB), Some([1; 32]))
    };
    assert_eq!(decide(&e, &old_tls).1, "tls_version_too_low");
    // No URI SAN at all: no SPIFFE ID. A non-SPIFFE first URI SAN may hide one behind
    // it, which only the certificate would show.
    assert_eq!(decide(&e, &vouched(None, Some([1; 32]))).1, "no_spiffe_id");
    assert_eq!(
        decide(&e, &vouched(Some("https://example.com/x"), Some([1; 32]))).1,
        "peer_certificate_unavailable"
    );
    assert_eq!(
        decide(&e, &vouched(Some("spiffe://Bad/x"), Some([1; 32]))).1,
        "invalid_spiffe_id"
    );
}

#[test]
fn a_vouched_certificate_is_denied_as_unavailable_when_the_table_needs_the_certificate() {
    let base = || table(vec![rule("web", Action::Allow, &[WEB])]);
    let mut serials = base();
    serials.revocation.add_serial(None, &[1, 2, 3]);
    let mut keys = base();
    keys.constraints.keys = Some(KeyPolicy::default());
    let mut sigs = base();
    sigs.constraints.forbid_sig_hashes = vec![SigHash::Sha1];
    let mut lifetime = base();
    lifetime.constraints.max_lifetime_secs = Some(3600);
    // Every kind of revocation entry needs the certificate: what the CA signed, the
    // key, the issuing CA.
    let mut certificates = base();
    certificates.revocation.add_certificate(&[7; 32]);
    let mut revoked_keys = base();
    revoked_keys.revocation.add_key(&[7; 32]);
    let mut issuers = base();
    issuers.revocation.add_issuer(42, Some(&[1, 2, 3]));
    let mut issuer_names = base();
    issuer_names.revocation.add_issuer(42, None);
    for (what, mut t) in [
        ("serials", serials),
        ("certificates", certificates),
        ("revoked keys", revoked_keys),
        ("issuers", issuers),
        ("issuer names", issuer_names),
        ("keys", keys),
        ("signatures", sigs),
        ("lifetime", lifetime),
    ] {
        t.revocation.normalize();
        let e = engine(t);
        assert!(!e.decides_without_certificate(), "{what}");
        let p = vouched(Some(WEB), Some([1; 32]));
        let d = e.evaluate(&p);
        assert_eq!(d.reason, Reason::PeerCertificateUnavailable, "{what}");
        assert_eq!(d.action, Action::Deny, "{what}");
        // The identity the host vouches for is shown, to help the operator.
        assert_eq!(d.identity, Some(WEB), "{what}");
        // The same table still decides a full certificate on its merits.
        assert_ne!(
            decide(&e, &who(WEB)).1,
            "peer_certificate_unavailable",
            "{what}"
        );
    }
    assert!(engine(base()).decides_without_certificate());
}

/// The connection facts a table decides with: one per condition kind, and none for a
/// table that decides on the certificate alone (hosts read only these per decision).
#[test]
fn a_table_names_the_connection_facts_it_decides_with() {
    let plain = table(vec![rule("web", Action::Allow, &[WEB])]);
    assert_eq!(plain.inputs(), Inputs::NONE);
    let mut t = plain.clone();
    t.constraints.min_tls = Some(TlsVersion::V1_3);
    assert_eq!(
        t.inputs(),
        Inputs {
            tls_version: true,
            ..Inputs::NONE
        }
    );
    let mut ports = rule("p", Action::Deny, &[WEB]);
    ports.ports = vec![PortRange {
        start: 8443,
        end: 8443,
    }];
    let mut sni = rule("s", Action::Allow, &[WEB]);
    sni.sni = vec!["a.example.com".into()];
    let mut source = rule("c", Action::Allow, &[WEB]);
    source.source_cidrs = vec![Cidr::parse("10.0.0.0/8").unwrap()];
    for (r, want) in [
        (
            ports,
            Inputs {
                port: true,
                ..Inputs::NONE
            },
        ),
        (
            sni,
            Inputs {
                sni: true,
                ..Inputs::NONE
            },
        ),
        (
            source,
            Inputs {
                source: true,
                ..Inputs::NONE
            },
        ),
    ] {
        let mut t = plain.clone();
        t.rules.push(r);
        assert_eq!(t.inputs(), want);
    }
    let mut all = table(vec![]);
    all.constraints.min_tls = Some(TlsVersion::V1_2);
    for (i, r) in [(0, "p"), (1, "s"), (2, "c")] {
        let mut x = rule(r, Action::Allow, &[WEB]);
        match i {
            0 => x.ports = vec![PortRange { start: 1, end: 2 }],
            1 => x.sni = vec!["*.example.com".into()],
            _ => x.source_cidrs = vec![Cidr::parse("fd00::/8").unwrap()],
        }
        all.rules.push(x);
    }
    assert_eq!(all.inputs(), Inputs::ALL);
}

/// The engine decides with the first rule of `order::evaluation_order` that matches, the
/// order the compiler's shadowed-rule check walks: one definition of "deny first".
#[test]
fn engine_decides_by_the_shared_evaluation_order() {
    let rules = vec![
        rule("allow-any", Action::Allow, &[]),
        rule("allow-web", Action::Allow, &[WEB]),
        rule("deny-legacy", Action::Deny, &[LEGACY]),
        rule("deny-web", Action::Deny, &[WEB]),
    ];
    let order: Vec<&str> = order::evaluation_order(&rules, |r| r.action)
        .into_iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(order, ["deny-legacy", "deny-web", "allow-any", "allow-web"]);
    let e = engine(table(rules));
    assert_eq!(
        decide(&e, &who(WEB)),
        (Action::Deny, "deny_rule", Some("deny-web".into()))
    );
    assert_eq!(
        decide(&e, &who("spiffe://cluster.local/ns/other/sa/x")),
        (Action::Allow, "allow_rule", Some("allow-any".into()))
    );
}

#[test]
fn stale_denies_in_the_table_mode_else_the_configured_one_else_enforce() {
    let none = Decision::stale(None, None);
    assert_eq!(
        (none.action, none.reason, none.mode),
        (Action::Deny, Reason::StaleRevocation, Mode::Enforce)
    );
    assert!(!none.admits());
    assert_eq!((none.rule, none.policy, none.identity), (None, None, None));
    assert!(Decision::stale(None, Some(Mode::Audit)).would_deny());
    let mut t = table(vec![]);
    let d = Decision::stale(Some(&t), Some(Mode::Audit));
    assert_eq!(
        d.mode,
        Mode::Enforce,
        "the table's mode wins over the host's"
    );
    assert!(!d.admits());
    t.mode = Mode::Audit;
    assert!(Decision::stale(Some(&t), None).would_deny());
}
