//! Property: for random tables and peers, the indexed engine over a table that went
//! through encode and decode decides exactly like a naive interpreter that scans every
//! rule and matches patterns by plain recursion.

use proptest::prelude::*;
use ruleset::*;

const TDS: [&str; 2] = ["a.test", "b.test"];
const SEGS: [&str; 3] = ["x", "y", "z"];

fn identity() -> impl Strategy<Value = String> {
    (0..TDS.len(), prop::collection::vec(0..SEGS.len(), 0..4)).prop_map(|(td, segs)| {
        let mut s = format!("spiffe://{}", TDS[td]);
        for i in segs {
            s.push('/');
            s.push_str(SEGS[i]);
        }
        s
    })
}

fn pattern() -> impl Strategy<Value = String> {
    (
        0..TDS.len(),
        prop::collection::vec(0..SEGS.len() + 1, 0..4),
        any::<bool>(),
    )
        .prop_map(|(td, segs, rest)| {
            let mut s = format!("spiffe://{}", TDS[td]);
            for i in segs {
                s.push('/');
                s.push_str(SEGS.get(i).copied().unwrap_or("*"));
            }
            if rest {
                s.push_str("/**");
            }
            s
        })
}

fn rule_strategy() -> impl Strategy<Value = Rule> {
    (
        any::<bool>(),
        prop::collection::vec(pattern(), 0..3),
        prop::collection::vec(pattern(), 0..2),
        prop::option::of(prop::sample::select(vec![80u16, 8443])),
    )
        .prop_map(|(allow, principals, not, port)| Rule {
            name: String::new(),
            policy: 0,
            action: if allow { Action::Allow } else { Action::Deny },
            principals: principals
                .iter()
                .map(|p| Pattern::parse(p).unwrap())
                .collect(),
            not_principals: not.iter().map(|p| Pattern::parse(p).unwrap()).collect(),
            ports: port
                .map(|p| vec![PortRange { start: p, end: p }])
                .unwrap_or_default(),
            sni: vec![],
            source_cidrs: vec![],
        })
}

fn table_strategy() -> impl Strategy<Value = Table> {
    (
        prop::collection::vec(rule_strategy(), 0..10),
        any::<bool>(),
        prop::option::of(0..TDS.len()),
    )
        .prop_map(|(mut rules, default_allow, td)| {
            for (i, r) in rules.iter_mut().enumerate() {
                r.name = format!("r{i}");
            }
            Table {
                policy_names: vec!["p".into()],
                policy_digest: [0; 32],
                issued_at_ms: 0,
                expires_at_ms: None,
                signer: None,
                mode: Mode::Enforce,
                default_action: if default_allow {
                    Action::Allow
                } else {
                    Action::Deny
                },
                audit_log: AuditLog::All,
                constraints: Constraints {
                    trust_domains: td.map(|i| vec![TDS[i].to_owned()]).unwrap_or_default(),
                    ..Constraints::default()
                },
                revocation: Revocation::default(),
                rules,
            }
        })
}

/// Plain recursive matcher over the pattern's source text.
fn naive_match(pattern: &str, id: &str) -> bool {
    fn go(p: &[&str], s: &[&str]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(&"**"), _) => !s.is_empty(),
            (Some(&"*"), Some(_)) => go(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &s[1..]),
            _ => false,
        }
    }
    let p: Vec<&str> = pattern["spiffe://".len()..].split('/').collect();
    let s: Vec<&str> = id["spiffe://".len()..].split('/').collect();
    go(&p, &s)
}

fn naive(t: &Table, id: &str, port: u16) -> (Action, Reason, Option<String>) {
    let td = id["spiffe://".len()..].split('/').next().unwrap();
    if !t.constraints.trust_domains.is_empty()
        && !t.constraints.trust_domains.iter().any(|d| d == td)
    {
        return (Action::Deny, Reason::UntrustedDomain, None);
    }
    let matches = |r: &Rule| {
        (r.principals.is_empty() || r.principals.iter().any(|p| naive_match(&p.to_string(), id)))
            && !r
                .not_principals
                .iter()
                .any(|p| naive_match(&p.to_string(), id))
            && (r.ports.is_empty() || r.ports.iter().any(|p| p.start <= port && port <= p.end))
    };
    for action in [Action::Deny, Action::Allow] {
        if let Some(r) = t
            .rules
            .iter()
            .filter(|r| r.action == action)
            .find(|r| matches(r))
        {
            let reason = if action == Action::Deny {
                Reason::DenyRule
            } else {
                Reason::AllowRule
            };
            return (action, reason, Some(r.name.clone()));
        }
    }
    match t.default_action {
        Action::Allow => (Action::Allow, Reason::DefaultAllow, None),
        Action::Deny => (Action::Deny, Reason::DefaultDeny, None),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn indexed_engine_equals_naive_interpreter(
        t in table_strategy(),
        ids in prop::collection::vec(identity(), 1..8),
        port in prop::sample::select(vec![80u16, 443, 8443]),
    ) {
        let engine = Engine::from_bytes(&encode(&t).unwrap()).unwrap();
        prop_assert_eq!(engine.table(), &t);
        for id in &ids {
            let peer = Peer {
                port: Some(port),
                ..Peer::new(PeerCert::Assumed { identity: id.clone() })
            };
            let d = engine.evaluate(&peer);
            let got = (d.action, d.reason, d.rule.map(str::to_owned));
            prop_assert_eq!(got, naive(&t, id, port), "identity {}", id);
        }
    }
}

/// Re-seals mutated bytes with a correct length and checksum so mutations reach the
/// section parsers instead of stopping at the CRC.
fn reseal(bytes: Vec<u8>) -> Vec<u8> {
    if bytes.len() < 48 {
        return bytes;
    }
    let mut sealed = crate::support::seal(&bytes[16..]);
    sealed[..4].copy_from_slice(&bytes[..4]);
    sealed[4..8].copy_from_slice(&bytes[4..8]);
    sealed
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The stable-toolchain counterpart of `fuzz/fuzz_targets/decode.rs`: structured
    /// mutations of valid tables never panic the decoder, and whatever it accepts
    /// re-encodes to the same bytes.
    #[test]
    fn mutated_tables_never_panic_and_accepted_ones_round_trip(
        t in table_strategy(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..6),
    ) {
        let mut bytes = encode(&t).unwrap();
        for (at, value, kind) in edits {
            if bytes.is_empty() { break; }
            let i = at.index(bytes.len());
            match kind {
                0 => bytes[i] = value,
                1 => { bytes.insert(i, value); }
                _ => { bytes.remove(i); }
            }
        }
        let bytes = reseal(bytes);
        if let Ok(decoded) = decode(&bytes) {
            prop_assert_eq!(encode(&decoded).unwrap(), bytes);
            let peer = Peer::new(PeerCert::Assumed { identity: "spiffe://a.test/x".into() });
            let _ = Engine::new(decoded).evaluate(&peer);
        }
    }
}
