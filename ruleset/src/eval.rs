//! The decision engine. [`Engine::new`] indexes a table once so that each evaluation
//! looks only at the rules that can match the peer's identity: exact IDs through a
//! sorted map, wildcard patterns through a segment trie.

use std::collections::BTreeMap;

use crate::{
    spiffe, Action, CertFacts, Decision, KeyInfo, Peer, PeerCert, Reason, Revoked, Rule, Segment,
    Table,
};

/// A node of the wildcard-pattern trie. The root's children are trust domains.
#[derive(Debug, Default)]
struct TrieNode {
    literal: BTreeMap<String, TrieNode>,
    one: Option<Box<TrieNode>>,
    /// Rules whose pattern ends here with `**` (one or more further segments).
    rest: Vec<u32>,
    /// Rules whose pattern ends exactly here.
    end: Vec<u32>,
}

impl TrieNode {
    fn insert(&mut self, td: &str, segments: &[Segment], rule: u32) {
        let mut node = self.literal.entry(td.to_owned()).or_default();
        for seg in segments {
            node = match seg {
                Segment::Literal(s) => node.literal.entry(s.clone()).or_default(),
                Segment::One => node.one.get_or_insert_with(Box::default),
                Segment::Rest => {
                    node.rest.push(rule);
                    return;
                }
            };
        }
        node.end.push(rule);
    }

    /// Collects every rule with a pattern matching `segments` (a walk of the trie).
    fn collect(&self, segments: &[&str], out: &mut Vec<u32>) {
        match segments.split_first() {
            None => out.extend_from_slice(&self.end),
            Some((first, rest)) => {
                out.extend_from_slice(&self.rest);
                if let Some(child) = self.literal.get(*first) {
                    child.collect(rest, out);
                }
                if let Some(child) = &self.one {
                    child.collect(rest, out);
                }
            }
        }
    }
}

/// A table ready for evaluation.
#[derive(Debug)]
pub struct Engine {
    table: Table,
    exact: BTreeMap<String, Vec<u32>>,
    trie: TrieNode,
    /// Rules without `principals`: candidates for every identity.
    any_identity: Vec<u32>,
}

impl Engine {
    /// Indexes `table` for evaluation.
    pub fn new(table: Table) -> Engine {
        let mut exact: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        let mut trie = TrieNode::default();
        let mut any_identity = Vec::new();
        for (i, rule) in (0u32..).zip(&table.rules) {
            if rule.principals.is_empty() {
                any_identity.push(i);
            }
            for p in &rule.principals {
                if p.is_exact() {
                    exact.entry(p.to_string()).or_default().push(i);
                } else {
                    trie.insert(p.trust_domain(), p.segments(), i);
                }
            }
        }
        Engine {
            table,
            exact,
            trie,
            any_identity,
        }
    }

    /// Decodes and indexes a table.
    pub fn from_bytes(bytes: &[u8]) -> Result<Engine, crate::DecodeError> {
        crate::decode(bytes).map(Engine::new)
    }

    /// The table this engine decides with.
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// Whether this table can decide for a certificate the host only vouches for
    /// ([`PeerCert::Vouched`]: first URI SAN, SHA-256 digest, subject): no revocation
    /// entry of any kind (what the CA signed, the key, issuer and serial, the issuing CA
    /// all need the certificate itself) and no key, signature or lifetime constraint.
    /// Trust domains, TLS version and the rules need only what the host vouches for.
    pub fn decides_without_certificate(&self) -> bool {
        let t = &self.table;
        let c = &t.constraints;
        t.revocation.is_empty()
            && c.keys.is_none()
            && c.forbid_sig_hashes.is_empty()
            && c.max_lifetime_secs.is_none()
    }

    /// Decides for one peer, in the order documented in ARCHITECTURE.md ("Decision
    /// order"): certificate presence, revocation, identity, certificate and connection
    /// constraints, deny rules, allow rules, default action.
    pub fn evaluate<'a>(&'a self, peer: &'a Peer) -> Decision<'a> {
        let t = &self.table;
        let decide = |action, reason, identity| Decision {
            action,
            reason,
            rule: None,
            policy: None,
            mode: t.mode,
            identity,
        };
        let deny = |reason, identity| decide(Action::Deny, reason, identity);

        let (identity, facts): (&str, Option<&CertFacts>) = match &peer.cert {
            PeerCert::Missing => return deny(Reason::NoPeerCert, None),
            PeerCert::Unparsable(_) => return deny(Reason::BadPeerCert, None),
            PeerCert::Assumed { identity } => (identity, None),
            PeerCert::Vouched(v) => {
                let first = v.first_uri_san.as_deref();
                let spiffe = first.filter(|u| spiffe::has_spiffe_scheme(u));
                if !self.decides_without_certificate() {
                    return deny(Reason::PeerCertificateUnavailable, spiffe);
                }
                match (first, spiffe) {
                    // No URI SAN at all: certainly no SPIFFE ID.
                    (None, _) => return deny(Reason::NoSpiffeId, None),
                    // A later URI SAN, which the host does not give, may be the SPIFFE
                    // ID: only the certificate could tell.
                    (Some(_), None) => return deny(Reason::PeerCertificateUnavailable, None),
                    // INVARIANT: a second SPIFFE ID cannot be seen here; the support
                    // table in docs/filter.md says so.
                    (Some(_), Some(id)) => (id, None),
                }
            }
            PeerCert::Parsed(facts) => {
                let single = facts.spiffe_id();
                // Revocation comes first: a revoked certificate is denied as such,
                // whatever else is wrong with it.
                if let Some(why) = t.revocation.check(facts) {
                    let reason = match why {
                        Revoked::Certificate => Reason::RevokedCertificate,
                        Revoked::Key => Reason::RevokedKey,
                        Revoked::Serial => Reason::RevokedSerial,
                        Revoked::Issuer => Reason::RevokedIssuer,
                    };
                    return deny(reason, single);
                }
                match single {
                    Some(id) => (id, Some(&**facts)),
                    None if facts.spiffe_ids().next().is_none() => {
                        return deny(Reason::NoSpiffeId, None)
                    }
                    None => return deny(Reason::MultipleSpiffeIds, None),
                }
            }
        };
        if spiffe::validate_id(identity).is_err() {
            return deny(Reason::InvalidSpiffeId, None);
        }
        if let Some(reason) = self.constraint_violation(identity, facts, peer) {
            return deny(reason, Some(identity));
        }
        match self.first_matching_rule(identity, peer) {
            Some(rule) => Decision {
                action: rule.action,
                reason: match rule.action {
                    Action::Allow => Reason::AllowRule,
                    Action::Deny => Reason::DenyRule,
                },
                rule: Some(&rule.name),
                policy: t
                    .policy_names
                    .get(usize::from(rule.policy))
                    .map(String::as_str),
                mode: t.mode,
                identity: Some(identity),
            },
            None => match t.default_action {
                Action::Allow => decide(Action::Allow, Reason::DefaultAllow, Some(identity)),
                Action::Deny => deny(Reason::DefaultDeny, Some(identity)),
            },
        }
    }

    fn constraint_violation(
        &self,
        identity: &str,
        facts: Option<&CertFacts>,
        peer: &Peer,
    ) -> Option<Reason> {
        let c = &self.table.constraints;
        if !c.trust_domains.is_empty() {
            let td = spiffe::trust_domain_of(identity).unwrap_or_default();
            if !c.trust_domains.iter().any(|d| d == td) {
                return Some(Reason::UntrustedDomain);
            }
        }
        if let Some(facts) = facts {
            if let Some(keys) = &c.keys {
                let verdict = match &facts.key {
                    KeyInfo::Rsa { bits } => match keys.rsa_min_bits {
                        None => Some(Reason::KeyTypeNotAllowed),
                        Some(min) if *bits < min => Some(Reason::WeakRsaKey),
                        Some(_) => None,
                    },
                    KeyInfo::Ecdsa { .. } if keys.ecdsa_curves.is_empty() => {
                        Some(Reason::KeyTypeNotAllowed)
                    }
                    KeyInfo::Ecdsa { curve } => match curve {
                        Some(curve) if keys.ecdsa_curves.contains(curve) => None,
                        _ => Some(Reason::CurveNotAllowed),
                    },
                    KeyInfo::Ed25519 if keys.ed25519 => None,
                    KeyInfo::Ed25519 | KeyInfo::Other { .. } => Some(Reason::KeyTypeNotAllowed),
                };
                if verdict.is_some() {
                    return verdict;
                }
            }
            if c.forbid_sig_hashes.contains(&facts.signature.hash) {
                return Some(Reason::ForbiddenSignature);
            }
            if let Some(max) = c.max_lifetime_secs {
                let lifetime = facts.not_after.saturating_sub(facts.not_before);
                if u64::try_from(lifetime).unwrap_or(0) > max {
                    return Some(Reason::LifetimeTooLong);
                }
            }
        }
        match (c.min_tls, peer.tls_version) {
            (None, _) => None,
            (Some(_), None) => Some(Reason::TlsVersionUnknown),
            (Some(min), Some(v)) if v < min => Some(Reason::TlsVersionTooLow),
            (Some(_), Some(_)) => None,
        }
    }

    /// Deny rules first, then allow rules, each in policy order ([`crate::order`]);
    /// first match wins.
    fn first_matching_rule(&self, identity: &str, peer: &Peer) -> Option<&Rule> {
        let rules = &self.table.rules;
        let mut candidates = self.any_identity.clone();
        if let Some(found) = self.exact.get(identity) {
            candidates.extend_from_slice(found);
        }
        if let Ok((td, path)) = spiffe::split(identity) {
            let mut segments: Vec<&str> = vec![td];
            segments.extend(path.into_iter().flat_map(|p| p.split('/')));
            self.trie.collect(&segments, &mut candidates);
        }
        let priority = |i: &u32| {
            let position = usize::try_from(*i).unwrap_or(usize::MAX);
            let action = rules.get(position).map_or(Action::Allow, |r| r.action);
            crate::order::priority(action, position)
        };
        candidates.sort_unstable_by_key(priority);
        candidates.dedup();
        candidates
            .into_iter()
            .filter_map(|i| usize::try_from(i).ok().and_then(|i| rules.get(i)))
            .find(|rule| rule_matches_besides_principals(rule, identity, peer))
    }
}

/// Whether `rule` matches once its principals matched: every other condition holds
/// ([`crate::Condition::holds`]). A condition on a fact the host did not supply fails
/// closed: an allow rule does not match, a deny rule does.
fn rule_matches_besides_principals(rule: &Rule, identity: &str, peer: &Peer) -> bool {
    let unknown = rule.action == Action::Deny;
    rule.conditions()
        .iter()
        .all(|c| c.holds(identity, peer, unknown))
}
