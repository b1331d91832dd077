//! A rule's conditions besides `principals`, as one view: what each is called in a policy,
//! how it is shown, and when it holds for a peer. The engine matches rules through it and
//! `certgate inspect` lists rules through it, and the compiler's shadowed-rule check asks
//! it whether one rule covers another ([`Rule::covers`]), so adding a condition to [`Rule`]
//! means adding it to the model, here (which the engine uses) and to the codec, nothing
//! else.

use crate::{Cidr, Pattern, Peer, PortRange, Rule};

/// One condition of a rule besides its principals. An empty list places no condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition<'r> {
    /// `notPrincipals`: the identity must match none of these patterns.
    NotPrincipals(&'r [Pattern]),
    /// `ports`: the destination port must lie in one of these ranges.
    Ports(&'r [PortRange]),
    /// `sni`: the requested server name must match one of these names.
    Sni(&'r [String]),
    /// `sourceCidrs`: the source address must lie in one of these blocks.
    SourceCidrs(&'r [Cidr]),
}

impl Rule {
    /// The rule's conditions besides `principals`, in the order policies document them.
    pub fn conditions(&self) -> [Condition<'_>; 4] {
        [
            Condition::NotPrincipals(&self.not_principals),
            Condition::Ports(&self.ports),
            Condition::Sni(&self.sni),
            Condition::SourceCidrs(&self.source_cidrs),
        ]
    }
}

impl Rule {
    /// Sound, simple subsumption: `true` only if every connection `other` matches, `self`
    /// matches too (whatever the action). It may answer `false` for some rules that are in
    /// fact covered; the compiler warns about shadowed rules with it.
    pub fn covers(&self, other: &Rule) -> bool {
        let principals = self.principals.is_empty()
            || (!other.principals.is_empty()
                && other
                    .principals
                    .iter()
                    .all(|p| self.principals.iter().any(|q| p.is_covered_by(q))));
        principals
            && self
                .conditions()
                .iter()
                .zip(other.conditions().iter())
                .all(|(a, b)| a.covers(b))
    }
}

/// An empty list means "any": it covers everything and is covered only by "any".
fn covers_list<T>(a: &[T], b: &[T], covers: impl Fn(&T, &T) -> bool) -> bool {
    a.is_empty() || (!b.is_empty() && b.iter().all(|y| a.iter().any(|x| covers(x, y))))
}

impl Condition<'_> {
    /// Whether every connection `other` lets through, `self` lets through too: sound, and
    /// `false` for conditions of different kinds.
    pub fn covers(&self, other: &Condition<'_>) -> bool {
        match (self, other) {
            // Every identity `self` excludes must be excluded by `other` too.
            (Condition::NotPrincipals(a), Condition::NotPrincipals(b)) => {
                a.iter().all(|n| b.iter().any(|m| n.is_covered_by(m)))
            }
            (Condition::Ports(a), Condition::Ports(b)) => covers_list(a, b, PortRange::covers),
            (Condition::Sni(a), Condition::Sni(b)) => {
                covers_list(a, b, |x, y| crate::sni::covers(x, y))
            }
            (Condition::SourceCidrs(a), Condition::SourceCidrs(b)) => {
                covers_list(a, b, |x, y| x.covers(y))
            }
            _ => false,
        }
    }

    /// The condition's field name in a policy rule (and in `certgate inspect`).
    pub fn field(&self) -> &'static str {
        match self {
            Condition::NotPrincipals(_) => "notPrincipals",
            Condition::Ports(_) => "ports",
            Condition::Sni(_) => "sni",
            Condition::SourceCidrs(_) => "sourceCidrs",
        }
    }

    /// Whether the rule says nothing with this condition.
    pub fn is_empty(&self) -> bool {
        match self {
            Condition::NotPrincipals(v) => v.is_empty(),
            Condition::Ports(v) => v.is_empty(),
            Condition::Sni(v) => v.is_empty(),
            Condition::SourceCidrs(v) => v.is_empty(),
        }
    }

    /// The values as policies write them (`8443`, `8000-8100`, `10.0.0.0/8`, ...).
    pub fn values(&self) -> Vec<String> {
        fn show<T: ToString>(v: &[T]) -> Vec<String> {
            v.iter().map(ToString::to_string).collect()
        }
        match self {
            Condition::NotPrincipals(v) => show(v),
            Condition::Ports(v) => show(v),
            Condition::Sni(v) => show(v),
            Condition::SourceCidrs(v) => show(v),
        }
    }

    /// Whether the condition holds for `identity` and the connection facts of `peer`. A
    /// fact the host did not supply counts as `unknown`: the engine passes `false` for
    /// allow rules and `true` for deny rules, so a missing fact fails closed.
    pub fn holds(&self, identity: &str, peer: &Peer, unknown: bool) -> bool {
        match self {
            Condition::NotPrincipals(ps) => !ps.iter().any(|p| p.matches(identity)),
            Condition::Ports(ranges) => {
                ranges.is_empty()
                    || peer
                        .port
                        .map_or(unknown, |port| ranges.iter().any(|r| r.contains(port)))
            }
            Condition::Sni(names) => {
                names.is_empty()
                    || peer.sni.as_deref().map_or(unknown, |sni| {
                        names.iter().any(|p| crate::sni::matches(p, sni))
                    })
            }
            Condition::SourceCidrs(blocks) => {
                blocks.is_empty()
                    || peer
                        .source_ip
                        .map_or(unknown, |ip| blocks.iter().any(|c| c.contains(ip)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Action, PeerCert};

    fn rule() -> Rule {
        Rule {
            name: "r".into(),
            policy: 0,
            action: Action::Allow,
            principals: vec![],
            not_principals: vec![Pattern::parse("spiffe://td/ns/a/**").unwrap()],
            ports: vec![
                PortRange {
                    start: 8000,
                    end: 8100,
                },
                PortRange {
                    start: 443,
                    end: 443,
                },
            ],
            sni: vec!["*.svc".into()],
            source_cidrs: vec![Cidr::parse("10.0.0.0/8").unwrap()],
        }
    }

    #[test]
    fn fields_and_values_as_policies_write_them() {
        let r = rule();
        let shown: Vec<(&str, Vec<String>)> = r
            .conditions()
            .iter()
            .map(|c| (c.field(), c.values()))
            .collect();
        assert_eq!(
            shown,
            [
                ("notPrincipals", vec!["spiffe://td/ns/a/**".to_string()]),
                ("ports", vec!["8000-8100".into(), "443".into()]),
                ("sni", vec!["*.svc".into()]),
                ("sourceCidrs", vec!["10.0.0.0/8".into()]),
            ]
        );
        assert!(r.conditions().iter().all(|c| !c.is_empty()));
    }

    #[test]
    fn a_missing_fact_counts_as_unknown_and_an_excluded_identity_never_holds() {
        let r = rule();
        let id = "spiffe://td/ns/b/sa/x";
        let mut peer = Peer::assumed(id.into());
        for c in r.conditions().iter().skip(1) {
            assert!(!c.holds(id, &peer, false), "{}", c.field());
            assert!(c.holds(id, &peer, true), "{}", c.field());
        }
        peer.port = Some(443);
        peer.sni = Some("API.svc".into());
        peer.source_ip = Some("10.1.2.3".parse().unwrap());
        assert!(r.conditions().iter().all(|c| c.holds(id, &peer, false)));
        peer.port = Some(444);
        assert!(!r.conditions()[1].holds(id, &peer, true));
        let excluded = "spiffe://td/ns/a/sa/x";
        assert!(!r.conditions()[0].holds(excluded, &Peer::new(PeerCert::Missing), true));
    }

    #[test]
    fn a_rule_covers_what_it_matches_in_every_condition() {
        let r = rule();
        assert!(r.covers(&r));
        let any = Rule {
            not_principals: vec![],
            ports: vec![],
            sni: vec![],
            source_cidrs: vec![],
            ..rule()
        };
        assert!(any.covers(&r) && !r.covers(&any));
        // Narrower in one condition: covered; wider in one: not.
        let narrower = Rule {
            ports: vec![PortRange {
                start: 8080,
                end: 8080,
            }],
            source_cidrs: vec![Cidr::parse("10.1.0.0/16").unwrap()],
            sni: vec!["a.svc".into()],
            not_principals: vec![Pattern::parse("spiffe://td/ns/**").unwrap()],
            ..rule()
        };
        assert!(r.covers(&narrower) && !narrower.covers(&r));
        let wider_cidr = Rule {
            source_cidrs: vec![Cidr::parse("0.0.0.0/0").unwrap()],
            ..rule()
        };
        assert!(!r.covers(&wider_cidr));
        // Principals: empty is any identity; a list covers the patterns it covers.
        let only_a = Rule {
            principals: vec![Pattern::parse("spiffe://td/ns/b").unwrap()],
            ..rule()
        };
        assert!(r.covers(&only_a) && !only_a.covers(&r));
    }
}
