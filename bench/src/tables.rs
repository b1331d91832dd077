//! Synthetic tables: N identity rules (exact SPIFFE IDs or wildcard patterns) and M
//! revoked serials, built directly through the `ruleset` API so that the micro and the
//! Envoy benchmarks measure exactly the same tables.

use ruleset::{Action, AuditLog, Constraints, Mode, Pattern, Revocation, Rule, Table};

/// Trust domain of every benchmark identity.
pub const TRUST_DOMAIN: &str = "bench.certgate.test";
/// Subject of the benchmark CA, the issuer of every client certificate and revoked serial.
pub const CA_DN: &str = "CN=certgate bench CA,O=certgate bench";

/// The `i`-th identity of the exact-ID rule set.
pub fn identity(i: usize) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/team{}/sa/svc{i}", i % 100)
}

/// An identity matched by the `i`-th rule of the pattern rule set (and no other).
pub fn pattern_identity(i: usize) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/app{i}/sa/worker")
}

/// How the rules name identities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    /// One exact SPIFFE ID per rule ([`identity`]).
    Exact,
    /// One wildcard pattern per rule, `spiffe://TD/ns/app<i>/sa/*` ([`pattern_identity`]).
    Pattern,
}

impl RuleKind {
    /// Name used in benchmark ids.
    pub fn name(self) -> &'static str {
        match self {
            RuleKind::Exact => "exact",
            RuleKind::Pattern => "pattern",
        }
    }

    /// An identity that the `i`-th rule allows.
    pub fn identity(self, i: usize) -> String {
        match self {
            RuleKind::Exact => identity(i),
            RuleKind::Pattern => pattern_identity(i),
        }
    }
}

/// `n` allow rules, one principal each.
pub fn rules(n: usize, kind: RuleKind) -> anyhow::Result<Vec<Rule>> {
    (0..n)
        .map(|i| {
            let principal = match kind {
                RuleKind::Exact => identity(i),
                RuleKind::Pattern => format!("spiffe://{TRUST_DOMAIN}/ns/app{i}/sa/*"),
            };
            Ok(Rule {
                name: format!("allow-{i}"),
                policy: 0,
                action: Action::Allow,
                principals: vec![Pattern::parse(&principal)
                    .map_err(|e| anyhow::anyhow!("pattern `{principal}`: {e}"))?],
                not_principals: Vec::new(),
                ports: Vec::new(),
                sni: Vec::new(),
                source_cidrs: Vec::new(),
            })
        })
        .collect()
}

/// A deterministic stream of random 16-byte serials (splitmix64), the size a CA that
/// follows the CA/B Forum's 64-bit-entropy rule typically issues. The first byte is
/// kept in 0x01..=0x7f so every serial is a positive DER INTEGER of exactly 16 bytes.
pub fn random_serials(n: usize, seed: u64) -> impl Iterator<Item = [u8; 16]> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    (0..n).map(move |_| {
        let mut s = [0u8; 16];
        s[..8].copy_from_slice(&next().to_be_bytes());
        s[8..].copy_from_slice(&next().to_be_bytes());
        s[0] = (s[0] & 0x7f).max(1);
        s
    })
}

/// The issuer id of [`CA_DN`], as the engine computes it from a certificate.
pub fn ca_issuer_id() -> anyhow::Result<u64> {
    ruleset::dn::parse_dn_string(CA_DN).map_err(|e| anyhow::anyhow!("`{CA_DN}`: {e}"))
}

/// A normalised table: `rules`, default deny, enforce mode, and `revoked` random serials
/// of [`CA_DN`] (seeded, so none collides with a client certificate) plus `extra`.
pub fn table(rules: Vec<Rule>, revoked: usize, extra: &[Vec<u8>]) -> anyhow::Result<Table> {
    let issuer = ca_issuer_id()?;
    let mut revocation = Revocation::default();
    for s in random_serials(revoked, 0x5EED) {
        revocation.add_serial(Some(issuer), &s);
    }
    for s in extra {
        revocation.add_serial(Some(issuer), s);
    }
    let mut t = Table {
        policy_names: vec!["bench".to_string()],
        policy_digest: [0x42; 32],
        issued_at_ms: 0,
        expires_at_ms: None,
        signer: None,
        mode: Mode::Enforce,
        default_action: Action::Deny,
        audit_log: AuditLog::Deny,
        constraints: Constraints::default(),
        revocation,
        rules,
    };
    t.normalize();
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_distinct_and_positive() {
        let v: Vec<_> = random_serials(1000, 1).collect();
        let mut d = v.clone();
        d.sort();
        d.dedup();
        assert_eq!(d.len(), v.len());
        assert!(v.iter().all(|s| (1..0x80).contains(&s[0])));
    }

    #[test]
    fn a_rule_allows_its_identity() {
        for kind in [RuleKind::Exact, RuleKind::Pattern] {
            let rules = rules(10, kind).unwrap();
            assert!(rules[7].principals[0].matches(&kind.identity(7)));
            assert!(!rules[6].principals[0].matches(&kind.identity(7)));
        }
    }
}
