//! Checks across documents: merging spec settings (conflicts are errors), unique names, and
//! the warnings about policies that compile but do not mean what they say (shadowed rules,
//! allow-anyone rules, principals outside the trust domains, weak keys, long lifetimes).

use std::collections::HashMap;

use ruleset::{baseline, Action, AuditLog, KeyPolicy, Mode, OnStale, SigHash, TlsVersion};

use crate::diag::{Code, Diagnostic, Sink};
use crate::model::{Policy, RuleSpec};
use crate::source::Spanned;

/// The spec settings of all documents, merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// `spec.mode`, default `enforce`.
    pub mode: Mode,
    /// `spec.defaultAction`, default `deny`.
    pub default_action: Action,
    /// `spec.audit.log`, default `deny`.
    pub audit_log: AuditLog,
    /// `spec.tls.minVersion`.
    pub min_tls: Option<TlsVersion>,
    /// Union of `trustDomains`, in first-seen order.
    pub trust_domains: Vec<String>,
    /// `maxLifetime` in seconds.
    pub max_lifetime: Option<u64>,
    /// `keys`.
    pub keys: Option<KeyPolicy>,
    /// Union of `forbidSignatureAlgorithms`, sorted.
    pub forbid_signatures: Vec<SigHash>,
    /// `spec.revocation.onStale`, default `deny`.
    pub on_stale: OnStale,
    /// The shortest `spec.revocation.maxAge`, in seconds: the strictest wins, so merging
    /// never extends how long any one policy's revocation data counts as current.
    pub max_age: Option<u64>,
}

/// Values as the policy language writes them, for conflict messages.
trait Word {
    fn word(&self) -> String;
}

impl Word for Mode {
    fn word(&self) -> String {
        self.as_str().to_string()
    }
}
impl Word for Action {
    fn word(&self) -> String {
        self.as_str().to_string()
    }
}
impl Word for AuditLog {
    fn word(&self) -> String {
        self.as_str().to_string()
    }
}
impl Word for OnStale {
    fn word(&self) -> String {
        self.as_str().to_string()
    }
}
impl Word for TlsVersion {
    fn word(&self) -> String {
        self.as_str().to_string()
    }
}
impl Word for u64 {
    fn word(&self) -> String {
        crate::duration::format(*self)
    }
}
impl Word for KeyPolicy {
    fn word(&self) -> String {
        let mut parts = Vec::new();
        if let Some(b) = self.rsa_min_bits {
            parts.push(format!("rsaMinBits: {b}"));
        }
        if !self.ecdsa_curves.is_empty() {
            let c: Vec<&str> = self.ecdsa_curves.iter().map(|c| c.as_str()).collect();
            parts.push(format!("ecdsaCurves: [{}]", c.join(", ")));
        }
        parts.push(format!("ed25519: {}", self.ed25519));
        format!("{{{}}}", parts.join(", "))
    }
}

/// Merges one setting: every document that sets it must set the same value.
fn agree<T: PartialEq + Clone + Word>(
    policies: &[Policy],
    field: &str,
    get: impl Fn(&Policy) -> Option<&Spanned<T>>,
    sink: &mut Sink,
) -> Option<T> {
    let mut first: Option<(&Spanned<T>, &str)> = None;
    for p in policies {
        let Some(v) = get(p) else { continue };
        match first {
            None => first = Some((v, &p.name.value)),
            Some((f, fname)) if f.value != v.value => sink.push(
                Diagnostic::new(
                    Code::Conflict,
                    Some(v.span),
                    format!(
                        "`{field}` is `{}` in policy `{}` but `{}` in policy `{fname}`",
                        v.value.word(),
                        p.name.value,
                        f.value.word()
                    ),
                )
                .label("this value")
                .related(f.span, format!("`{}` set here", f.value.word()))
                .help(format!(
                    "all policies compiled into one table share `{field}`: set it in one document, or to the same value everywhere"
                )),
            ),
            Some(_) => {}
        }
    }
    first.map(|(f, _)| f.value.clone())
}

/// Merges settings and reports conflicts, duplicate names and all warnings.
pub(crate) fn check(policies: &[Policy], sink: &mut Sink) -> Merged {
    let merged = Merged {
        mode: agree(policies, "spec.mode", |p| p.spec.mode.as_ref(), sink).unwrap_or(Mode::Enforce),
        default_action: agree(
            policies,
            "spec.defaultAction",
            |p| p.spec.default_action.as_ref(),
            sink,
        )
        .unwrap_or(Action::Deny),
        audit_log: agree(
            policies,
            "spec.audit.log",
            |p| p.spec.audit_log.as_ref(),
            sink,
        )
        .unwrap_or(AuditLog::Deny),
        on_stale: agree(
            policies,
            "spec.revocation.onStale",
            |p| p.spec.on_stale.as_ref(),
            sink,
        )
        .unwrap_or_default(),
        min_tls: agree(
            policies,
            "spec.tls.minVersion",
            |p| p.spec.min_tls.as_ref(),
            sink,
        ),
        max_lifetime: agree(
            policies,
            "spec.peerCertificate.maxLifetime",
            |p| p.spec.max_lifetime.as_ref(),
            sink,
        ),
        keys: agree(
            policies,
            "spec.peerCertificate.keys",
            |p| p.spec.keys.as_ref(),
            sink,
        ),
        trust_domains: {
            let mut v: Vec<String> = Vec::new();
            for td in policies.iter().flat_map(|p| &p.spec.trust_domains) {
                if !v.contains(&td.value) {
                    v.push(td.value.clone());
                }
            }
            v
        },
        max_age: policies
            .iter()
            .filter_map(|p| p.spec.max_age.as_ref().map(|m| m.value))
            .min(),
        forbid_signatures: {
            let mut v: Vec<SigHash> = policies
                .iter()
                .flat_map(|p| p.spec.forbid_signatures.iter().map(|s| s.value))
                .collect();
            v.sort();
            v.dedup();
            v
        },
    };
    unique_names(policies, sink);
    for p in policies {
        if let (Some(keys), Some(span)) = (&p.spec.keys, p.spec.rsa_min_bits_span) {
            if let Some(bits) = keys
                .value
                .rsa_min_bits
                .filter(|b| baseline::is_weak_rsa_min_bits(*b))
            {
                sink.push(
                    Diagnostic::new(
                        Code::WeakRsa,
                        Some(span),
                        format!("`rsaMinBits` of `{bits}` admits RSA keys that can be factored"),
                    )
                    .label(format!("below {}", baseline::RSA_MIN_BITS))
                    .help(format!(
                        "use `rsaMinBits: {}` or more (NIST SP 800-131A)",
                        baseline::RSA_MIN_BITS
                    )),
                );
            }
        }
        if let Some(l) = p
            .spec
            .max_lifetime
            .as_ref()
            .filter(|l| baseline::is_long_lifetime(l.value))
        {
            sink.push(
                Diagnostic::new(
                    Code::LongLifetime,
                    Some(l.span),
                    format!(
                        "`maxLifetime` of `{}` admits certificates valid for more than {} days",
                        crate::duration::format(l.value),
                        baseline::MAX_LIFETIME_SECS / 86_400
                    ),
                )
                .label(format!(
                    "above {}",
                    crate::duration::format(baseline::MAX_LIFETIME_SECS)
                ))
                .help(format!(
                    "workload certificates should be short-lived: use `24h` (or at most `{}`)",
                    crate::duration::format(baseline::MAX_LIFETIME_SECS)
                )),
            );
        }
        for r in &p.spec.rules {
            if r.action.value == Action::Allow && r.principals.is_none() {
                let scope = if merged.trust_domains.is_empty() {
                    "any identity".to_string()
                } else {
                    format!(
                        "any identity in {}",
                        trust_domain_list(&merged.trust_domains)
                    )
                };
                sink.push(
                    Diagnostic::new(
                        Code::AllowAnyIdentity,
                        Some(r.name.span),
                        format!("allow rule `{}` admits {scope}", r.name.value),
                    )
                    .label("no `principals`")
                    .help("list the workloads it is for in `principals`, such as `spiffe://cluster.local/ns/frontend/sa/web`"),
                );
            }
            if !merged.trust_domains.is_empty() {
                for pat in r.principals.iter().flatten() {
                    let td = pat.value.trust_domain();
                    if !merged.trust_domains.iter().any(|t| t == td) {
                        sink.push(
                            Diagnostic::new(
                                Code::OutsideTrustDomains,
                                Some(pat.span),
                                format!(
                                    "principal `{}` is outside the declared trust domains {}, so it never matches",
                                    pat.value,
                                    trust_domain_list(&merged.trust_domains)
                                ),
                            )
                            .label(format!("trust domain `{td}`"))
                            .help(format!(
                                "add `{td}` to `spec.peerCertificate.trustDomains`, or fix the principal"
                            )),
                        );
                    }
                }
            }
        }
    }
    shadowed(policies, sink);
    merged
}

fn trust_domain_list(tds: &[String]) -> String {
    let q: Vec<String> = tds.iter().map(|t| format!("`{t}`")).collect();
    q.join(", ")
}

fn unique_names(policies: &[Policy], sink: &mut Sink) {
    let mut seen: HashMap<&str, &Spanned<String>> = HashMap::new();
    for p in policies {
        if let Some(first) = seen.get(p.name.value.as_str()) {
            sink.push(
                Diagnostic::new(
                    Code::DuplicatePolicy,
                    Some(p.name.span),
                    format!("policy `{}` is declared twice", p.name.value),
                )
                .label("second declaration")
                .related(first.span, "first declared here")
                .help("give each policy document its own `metadata.name`"),
            );
        } else {
            seen.insert(&p.name.value, &p.name);
        }
    }
    let mut rules: HashMap<&str, &Spanned<String>> = HashMap::new();
    for r in policies.iter().flat_map(|p| &p.spec.rules) {
        if let Some(first) = rules.get(r.name.value.as_str()) {
            sink.push(
                Diagnostic::new(
                    Code::DuplicateRule,
                    Some(r.name.span),
                    format!("rule `{}` is declared twice", r.name.value),
                )
                .label("second declaration")
                .related(first.span, "first declared here")
                .help("rule names are unique across every policy compiled into a table: rename one of them"),
            );
        } else {
            rules.insert(&r.name.value, &r.name);
        }
    }
}

/// The rules in the order the engine tries them ([`ruleset::order`]): deny rules, then
/// allow rules, each in document order.
pub fn evaluation_order(policies: &[Policy]) -> Vec<&RuleSpec> {
    let all: Vec<&RuleSpec> = policies.iter().flat_map(|p| &p.spec.rules).collect();
    ruleset::order::evaluation_order(&all, |r| r.action.value)
        .into_iter()
        .copied()
        .collect()
}

/// Indexes rules by what their principals could cover, so finding the rules that might
/// shadow a rule does not compare every pair (tables can hold hundreds of thousands of
/// rules). A rule `a` can only cover `b` if `a` has no principals, or has a pattern covering
/// `b`'s first principal: that pattern is `b`'s exact ID or a wildcard in its trust domain.
struct CoverIndex {
    /// Rules without `principals`, by evaluation position.
    any: Vec<usize>,
    /// Rules by each exact principal they list.
    exact: HashMap<String, Vec<usize>>,
    /// Rules by the trust domain of each wildcard principal they list.
    wildcard: HashMap<String, Vec<usize>>,
}

impl CoverIndex {
    fn new(order: &[&RuleSpec]) -> Self {
        let mut index = CoverIndex {
            any: Vec::new(),
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        };
        for (i, r) in order.iter().enumerate() {
            match &r.principals {
                None => index.any.push(i),
                Some(ps) => {
                    for p in ps {
                        let list = if p.value.is_exact() {
                            index.exact.entry(p.value.to_string()).or_default()
                        } else {
                            index
                                .wildcard
                                .entry(p.value.trust_domain().to_string())
                                .or_default()
                        };
                        // INVARIANT: each list is ascending and holds a rule once.
                        if list.last() != Some(&i) {
                            list.push(i);
                        }
                    }
                }
            }
        }
        index
    }

    /// Positions of the rules that might cover `b`, each list ascending.
    fn candidates(&self, b: &RuleSpec) -> Vec<&[usize]> {
        let mut lists: Vec<&[usize]> = vec![&self.any];
        if let Some(first) = b.principals.as_ref().and_then(|ps| ps.first()) {
            if first.value.is_exact() {
                if let Some(l) = self.exact.get(&first.value.to_string()) {
                    lists.push(l);
                }
            }
            if let Some(l) = self.wildcard.get(first.value.trust_domain()) {
                lists.push(l);
            }
        }
        lists
    }
}

fn shadowed(policies: &[Policy], sink: &mut Sink) {
    let order = evaluation_order(policies);
    let index = CoverIndex::new(&order);
    // What a rule covers is the engine's business: ask the table's form of each rule.
    let lowered: Vec<ruleset::Rule> = order.iter().map(|r| r.lower(0)).collect();
    for (j, b) in order.iter().enumerate() {
        let first_cover = index
            .candidates(b)
            .into_iter()
            .filter_map(|list| {
                list.iter()
                    .take_while(|i| **i < j)
                    .find(|i| {
                        lowered
                            .get(**i)
                            .zip(lowered.get(j))
                            .is_some_and(|(a, b)| a.covers(b))
                    })
                    .copied()
            })
            .min();
        let Some(a) = first_cover.and_then(|i| order.get(i)) else {
            continue;
        };
        let why = if a.action.value == Action::Deny && b.action.value == Action::Allow {
            "deny rules are tried before allow rules; "
        } else {
            ""
        };
        sink.push(
            Diagnostic::new(
                Code::ShadowedRule,
                Some(b.name.span),
                format!(
                    "rule `{}` can never decide: rule `{}` matches every connection it matches",
                    b.name.value, a.name.value
                ),
            )
            .label("never decides")
            .related(a.name.span, "this rule decides first")
            .help(format!(
                "{why}remove `{}`, or narrow `{}`",
                b.name.value, a.name.value
            )),
        );
    }
}
