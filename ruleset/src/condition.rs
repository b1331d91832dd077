//! A rule's conditions besides `principals`, as one view: what each is called in a policy,
//! how it is shown, and when it holds for a peer. The engine matches rules through it and
//! `certgate inspect` lists rules through it, so adding a condition to [`Rule`] means
//! adding it to the model, here (which the engine uses) and to the codec, nothing else.

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

impl Condition<'_> {
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
}
