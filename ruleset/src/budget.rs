//! What a decoded table costs in memory, estimated from its encoding before anything is
//! allocated for it. Small encodings can expand a lot: a 12-byte principal pattern
//! becomes a parsed pattern, an entry in the engine's index and, for wildcards, a trie
//! node per segment with a map of its own. Without a budget a crafted 37 MB table took
//! 787 MB to decode; with it the decoder refuses such a table before it grows.
//!
//! The estimate is an upper bound of what `decode` and `Engine::new` allocate on a 64-bit
//! host (fixed constants, not `size_of`, so that every host, native or wasm32, accepts
//! exactly the same tables). The revocation keys cost nothing here: they are read in
//! place from the table's bytes. `ruleset/FORMAT.md` ("Limits and failure") documents the
//! figures.

use crate::decode_error::DecodeError;

/// Most memory, in bytes, the decoded form of a table may take besides the table's own
/// bytes (rules, patterns, strings and the engine's index over them).
pub const MAX_DECODED_BYTES: usize = 256 << 20;

/// Allocator overhead per heap allocation (header and rounding).
const ALLOC: usize = 16;
/// An owned string's header.
const STRING: usize = 24;
/// A rule: its fields (name header, five list headers) and its engine index entries.
pub(crate) const RULE: usize = 256;
/// A port range in a rule.
pub(crate) const PORT_RANGE: usize = 4;
/// A source CIDR in a rule.
pub(crate) const CIDR: usize = 24;
/// A parsed pattern, its entry in the engine's exact-identity map or trie root, and the
/// rule index stored with it.
const PATTERN: usize = 256;
/// A segment of an exact pattern: the parsed segment and its string.
const SEGMENT: usize = 64;
/// A segment of a wildcard pattern: the parsed segment and, in the worst case (no prefix
/// shared with another pattern), a trie node and the map node that holds it (a B-tree
/// leaf is allocated for eleven entries).
const TRIE_SEGMENT: usize = 1536;

/// An owned string of `len` bytes, header included.
pub(crate) fn string(len: usize) -> usize {
    STRING.saturating_add(ALLOC).saturating_add(len)
}

/// The backing allocation of a list of `n` items of `item` bytes each (its header is
/// counted with its owner).
pub(crate) fn list(n: usize, item: usize) -> usize {
    if n == 0 {
        0
    } else {
        n.saturating_mul(item).saturating_add(ALLOC)
    }
}

/// A principal pattern as written in the table (`spiffe://td/a/*`), parsed and indexed.
pub(crate) fn pattern(text: &str) -> usize {
    let path = text.strip_prefix("spiffe://").unwrap_or(text);
    let segments = path.matches('/').count();
    let per_segment = if text.contains('*') {
        TRIE_SEGMENT
    } else {
        SEGMENT
    };
    PATTERN
        .saturating_add(text.len().saturating_mul(2))
        .saturating_add(ALLOC.saturating_mul(2))
        .saturating_add(segments.saturating_mul(per_segment))
}

/// The estimated memory of `table`'s decoded form, as [`crate::decode`] charges it item by
/// item against [`MAX_DECODED_BYTES`] (so the encoder can refuse what the decoder would).
pub fn decoded_cost(table: &crate::Table) -> usize {
    let strings = |items: &[String]| {
        items.iter().fold(list(items.len(), 0), |sum, s| {
            sum.saturating_add(string(s.len()))
        })
    };
    let patterns = |items: &[crate::Pattern]| {
        items.iter().fold(list(items.len(), 0), |sum, p| {
            sum.saturating_add(pattern(&p.to_string()))
        })
    };
    let mut total = strings(&table.policy_names)
        .saturating_add(strings(&table.constraints.trust_domains))
        .saturating_add(list(table.rules.len(), RULE));
    for rule in &table.rules {
        total = total
            .saturating_add(string(rule.name.len()))
            .saturating_add(patterns(&rule.principals))
            .saturating_add(patterns(&rule.not_principals))
            .saturating_add(list(rule.ports.len(), PORT_RANGE))
            .saturating_add(strings(&rule.sni))
            .saturating_add(list(rule.source_cidrs.len(), CIDR));
    }
    total
}

/// The running total of a decode, checked against [`MAX_DECODED_BYTES`] before each
/// allocation it pays for.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    used: usize,
}

impl Budget {
    /// Adds `bytes`, or refuses the table if the total would pass the budget.
    pub(crate) fn charge(&mut self, bytes: usize) -> Result<(), DecodeError> {
        self.used = self.used.saturating_add(bytes);
        if self.used > MAX_DECODED_BYTES {
            return Err(DecodeError::Limit {
                what: "the estimated memory of the decoded table (bytes)",
                limit: MAX_DECODED_BYTES,
            });
        }
        Ok(())
    }

    /// What has been charged so far.
    pub(crate) fn used(&self) -> usize {
        self.used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The constants bound the real sizes on this (64-bit) host.
    #[test]
    fn constants_cover_the_native_sizes() {
        use std::mem::size_of;
        assert!(size_of::<String>() <= STRING);
        assert!(size_of::<crate::Rule>() + 2 * size_of::<u32>() <= RULE);
        assert!(size_of::<crate::PortRange>() <= PORT_RANGE);
        assert!(size_of::<crate::Cidr>() <= CIDR);
        assert!(size_of::<crate::Pattern>() + size_of::<Vec<u32>>() + 64 <= PATTERN);
        assert!(size_of::<crate::Segment>() + ALLOC <= SEGMENT);
    }

    #[test]
    fn the_budget_refuses_past_its_limit() {
        let mut b = Budget::default();
        assert!(b.charge(MAX_DECODED_BYTES).is_ok());
        assert!(matches!(b.charge(1), Err(DecodeError::Limit { .. })));
        let mut b = Budget::default();
        assert!(b.charge(usize::MAX).is_err());
    }

    /// The encoder's sum and the decoder's running total agree, item by item.
    #[test]
    fn the_decoder_charges_what_decoded_cost_says() {
        use crate::{Action, Cidr, Pattern, PortRange, Rule, Table};
        let rule = |i: usize| Rule {
            name: format!("rule-{i}"),
            policy: 0,
            action: if i % 2 == 0 {
                Action::Allow
            } else {
                Action::Deny
            },
            principals: (0..i)
                .map(|j| Pattern::parse(&format!("spiffe://td{i}/ns/n{j}/sa/*")).unwrap())
                .chain([Pattern::parse("spiffe://td/exact/id").unwrap()])
                .collect(),
            not_principals: (0..i % 3)
                .map(|j| Pattern::parse(&format!("spiffe://td/x{j}/**")).unwrap())
                .collect(),
            ports: (0..i % 4)
                .map(|p| PortRange {
                    start: p as u16,
                    end: p as u16 + 1,
                })
                .collect(),
            sni: (0..i % 3).map(|j| format!("s{j}.example.com")).collect(),
            source_cidrs: (0..i % 2)
                .map(|_| Cidr::parse("10.0.0.0/8").unwrap())
                .collect(),
        };
        let mut t = Table {
            policy_names: vec!["a".into(), "policy-b".into()],
            policy_digest: [1; 32],
            issued_at_ms: 1,
            expires_at_ms: Some(2),
            signer: None,
            mode: crate::Mode::Enforce,
            default_action: Action::Deny,
            audit_log: crate::AuditLog::Deny,
            constraints: crate::Constraints {
                trust_domains: vec!["td".into(), "cluster.local".into()],
                ..Default::default()
            },
            revocation: crate::Revocation::default(),
            rules: (0..12).map(rule).collect(),
        };
        t.revocation.add_serial(Some(1), &[1, 2, 3]);
        t.revocation.normalize();
        let bytes = crate::encode(&t).unwrap();
        let (decoded, charged) = crate::decode::decode_counted(bytes).unwrap();
        assert_eq!(decoded, t);
        assert_eq!(charged, decoded_cost(&t));
        assert!(charged > 12 * RULE);
    }

    #[test]
    fn wildcards_cost_a_trie_node_per_segment() {
        assert_eq!(pattern("spiffe://a"), 256 + 20 + 32);
        assert_eq!(pattern("spiffe://a/b/c"), 256 + 28 + 32 + 2 * 64);
        assert_eq!(pattern("spiffe://a/b/*"), 256 + 28 + 32 + 2 * 1536);
    }
}
