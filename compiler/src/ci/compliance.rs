//! The compliance report (`certgate report`): scores a compiled policy set against the
//! hardening checklist in docs/hardening.md, each finding tied to the policy line that
//! decides it (or, for a setting nobody wrote, the policy where it belongs). Pure: the
//! caller passes the compilation and the time CRL freshness is judged at.

use ruleset::{Action, AuditLog, Mode, Segment, TlsVersion};
use serde::Serialize;

use crate::source::Span;
use crate::Compilation;

/// The version of the `certgate report --format json` schema.
pub const VERSION: u32 = 1;

/// Longest lifetime the checklist recommends (24 hours).
pub const LIFETIME_RECOMMENDED_SECS: u64 = 86_400;

/// Whether a check must pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Compliance needs it.
    Required,
    /// Better practice.
    Recommended,
}

/// A check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Met.
    Pass,
    /// Not met.
    Fail,
    /// Does not apply (nothing to check).
    #[serde(rename = "n/a")]
    NotApplicable,
}

/// A place in a policy file.
#[derive(Debug, Clone, Serialize)]
pub struct Location {
    /// Policy path as given.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

/// One checklist item and its outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Stable id, the anchor in docs/hardening.md (`tls-min-version`).
    pub id: &'static str,
    /// Required or recommended.
    pub level: Level,
    /// What the checklist asks.
    pub title: &'static str,
    /// Pass, fail, n/a.
    pub status: Status,
    /// What certgate found.
    pub message: String,
    /// Where: the deciding lines, or where the missing setting belongs.
    pub locations: Vec<Location>,
}

/// Passed and total for one level.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Score {
    /// Checks passed (n/a counts as passed).
    pub passed: usize,
    /// Checks of this level.
    pub total: usize,
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct ComplianceReport {
    /// Schema version, [`VERSION`].
    pub version: u32,
    /// The policy files, as given.
    pub files: Vec<String>,
    /// The policy names.
    pub policies: Vec<String>,
    /// Every required check passed.
    pub compliant: bool,
    /// Required checks.
    pub required: Score,
    /// Recommended checks.
    pub recommended: Score,
    /// Every check, in checklist order.
    pub checks: Vec<Check>,
}

struct Ctx<'a> {
    c: &'a Compilation,
}

impl Ctx<'_> {
    fn at(&self, span: Span) -> Option<Location> {
        self.c.locate(span).map(|(file, start, _)| Location {
            file: file.to_string(),
            line: start.line,
            column: start.column,
        })
    }

    /// Where a table-wide setting is written (every document that sets it), or where it
    /// belongs (the first policy's name) when no document does.
    fn setting(&self, span_of: impl Fn(&crate::Policy) -> Option<Span>) -> Vec<Location> {
        let set: Vec<Location> = self
            .c
            .policies
            .iter()
            .filter_map(|p| span_of(p).and_then(|s| self.at(s)))
            .collect();
        if set.is_empty() {
            self.c
                .policies
                .first()
                .and_then(|p| self.at(p.name.span))
                .into_iter()
                .collect()
        } else {
            set
        }
    }
}

fn check(
    id: &'static str,
    level: Level,
    title: &'static str,
    ok: bool,
    message: String,
    locations: Vec<Location>,
) -> Check {
    Check {
        id,
        level,
        title,
        status: if ok { Status::Pass } else { Status::Fail },
        message,
        locations,
    }
}

/// Scores a compilation without errors (`merged` present). `now` is seconds since the
/// Unix epoch, for CRL freshness.
pub fn report(c: &Compilation, now: i64) -> ComplianceReport {
    let x = Ctx { c };
    let mut checks = Vec::new();
    // `merged` is always present after `compile`; without it there is nothing to score.
    let Some(m) = c.merged.clone() else {
        return ComplianceReport {
            version: VERSION,
            files: c.inputs.iter().map(|i| i.path.clone()).collect(),
            policies: Vec::new(),
            compliant: false,
            required: Score::default(),
            recommended: Score::default(),
            checks,
        };
    };
    let tls_at = x.setting(|p| p.spec.min_tls.as_ref().map(|s| s.span));
    checks.push(check(
        "tls-min-version",
        Level::Required,
        "TLS 1.2 or newer is required",
        m.min_tls.is_some_and(|v| v >= TlsVersion::V1_2),
        match m.min_tls {
            Some(v) => format!("`tls.minVersion` is `{v}`"),
            None => "`tls.minVersion` is not set: any version Envoy negotiates is accepted".into(),
        },
        tls_at.clone(),
    ));
    checks.push(check(
        "tls-1-3",
        Level::Recommended,
        "TLS 1.3 only",
        m.min_tls == Some(TlsVersion::V1_3),
        match m.min_tls {
            Some(TlsVersion::V1_3) => "`tls.minVersion` is `1.3`".into(),
            None => "`tls.minVersion` is not set".into(),
            Some(_) => "TLS 1.2 connections are accepted; set `tls.minVersion: \"1.3\"` once every client speaks it".into(),
        },
        tls_at,
    ));
    let keys_at = x.setting(|p| {
        p.spec
            .rsa_min_bits_span
            .or(p.spec.keys.as_ref().map(|k| k.span))
    });
    let (keys_ok, keys_msg) = match &m.keys {
        None => (
            false,
            "`peerCertificate.keys` is not set: any key is accepted, RSA-1024 included".to_string(),
        ),
        Some(k) => match k.rsa_min_bits {
            Some(b) if ruleset::baseline::is_weak_rsa_min_bits(b) => (
                false,
                format!(
                    "RSA keys of {b} bits are accepted; require at least {}",
                    ruleset::baseline::RSA_MIN_BITS
                ),
            ),
            Some(b) => (
                true,
                format!(
                    "RSA keys of at least {b} bits; ECDSA curves: {}; Ed25519: {}",
                    curves(k),
                    k.ed25519
                ),
            ),
            None => (
                true,
                format!(
                    "no RSA; ECDSA curves: {}; Ed25519: {}",
                    curves(k),
                    k.ed25519
                ),
            ),
        },
    };
    checks.push(check(
        "key-strength",
        Level::Required,
        "RSA keys of 2048 bits or more, or elliptic-curve keys",
        keys_ok,
        keys_msg,
        keys_at,
    ));
    let weak: Vec<&str> = ["md5", "sha1"]
        .into_iter()
        .filter(|h| !m.forbid_signatures.iter().any(|f| f.as_str() == *h))
        .collect();
    checks.push(check(
        "signature-hashes",
        Level::Required,
        "MD5 and SHA-1 signatures are refused",
        weak.is_empty(),
        if weak.is_empty() {
            "`forbidSignatureAlgorithms` refuses md5 and sha1".into()
        } else {
            format!(
                "certificates signed with {} are accepted",
                weak.join(" and ")
            )
        },
        x.setting(|p| p.spec.forbid_signatures.first().map(|s| s.span)),
    ));
    let life_at = x.setting(|p| p.spec.max_lifetime.as_ref().map(|s| s.span));
    let life = m.max_lifetime;
    let life_text = life.map(crate::duration::format);
    checks.push(check(
        "lifetime-90d",
        Level::Required,
        "certificate lifetime of 90 days or less",
        life.is_some_and(|l| !ruleset::baseline::is_long_lifetime(l)),
        match &life_text {
            Some(t) => format!("`maxLifetime` is `{t}`"),
            None => "`peerCertificate.maxLifetime` is not set: certificates of any lifetime are accepted".into(),
        },
        life_at.clone(),
    ));
    checks.push(check(
        "lifetime-24h",
        Level::Recommended,
        "certificate lifetime of 24 hours or less",
        life.is_some_and(|l| l <= LIFETIME_RECOMMENDED_SECS),
        match &life_text {
            Some(t) => format!("`maxLifetime` is `{t}`"),
            None => "`peerCertificate.maxLifetime` is not set".into(),
        },
        life_at,
    ));
    checks.push(check(
        "trust-domains",
        Level::Recommended,
        "peers are confined to named trust domains",
        !m.trust_domains.is_empty(),
        if m.trust_domains.is_empty() {
            "`peerCertificate.trustDomains` is not set: a SPIFFE ID from any trust domain passes the constraints".into()
        } else {
            format!("trust domains: {}", m.trust_domains.join(", "))
        },
        x.setting(|p| p.spec.trust_domains.first().map(|s| s.span)),
    ));
    // Revocation.
    let mut rev_at = Vec::new();
    let mut crls = Vec::new();
    for p in &c.policies {
        rev_at.extend(p.spec.crls.iter().filter_map(|r| x.at(r.path.span)));
        rev_at.extend(p.spec.serials.iter().filter_map(|s| x.at(s.span)));
        rev_at.extend(
            p.spec
                .certificates
                .iter()
                .chain(&p.spec.issuers)
                .filter_map(|f| x.at(f.path.span)),
        );
        rev_at.extend(p.spec.public_keys.iter().filter_map(|k| x.at(k.value.span)));
        crls.extend(p.spec.crls.iter());
    }
    let configured = !rev_at.is_empty();
    let others: usize = c
        .policies
        .iter()
        .map(|p| p.spec.certificates.len() + p.spec.public_keys.len() + p.spec.issuers.len())
        .sum();
    checks.push(check(
        "revocation-configured",
        Level::Required,
        "revocation is configured",
        configured,
        if configured {
            format!(
                "{} CRL{}, {} serial entr{}, {} certificate/key/issuer entr{}",
                crls.len(),
                if crls.len() == 1 { "" } else { "s" },
                c.policies
                    .iter()
                    .map(|p| p.spec.serials.len())
                    .sum::<usize>(),
                if c.policies
                    .iter()
                    .map(|p| p.spec.serials.len())
                    .sum::<usize>()
                    == 1
                {
                    "y"
                } else {
                    "ies"
                },
                others,
                if others == 1 { "y" } else { "ies" },
            )
        } else {
            "no `revocation`: a compromised certificate stays valid until it expires".into()
        },
        if configured {
            rev_at
        } else {
            x.setting(|_| None)
        },
    ));
    let mut stale = Vec::new();
    let mut stale_at = Vec::new();
    let mut fresh_at = Vec::new();
    for r in &crls {
        let Some(info) = &r.crl else { continue };
        match info.next_update {
            Some(n) if n >= now => fresh_at.extend(x.at(r.path.span)),
            Some(n) => {
                stale.push(format!(
                    "`{}` is past its nextUpdate {}",
                    r.path.value,
                    crate::time::rfc3339(n)
                ));
                stale_at.extend(x.at(r.path.span));
            }
            None => {
                stale.push(format!(
                    "`{}` has no nextUpdate: its freshness cannot be judged",
                    r.path.value
                ));
                stale_at.extend(x.at(r.path.span));
            }
        }
    }
    checks.push(if crls.is_empty() {
        Check {
            id: "revocation-fresh",
            level: Level::Required,
            title: "CRLs are fresh",
            status: Status::NotApplicable,
            message: "no CRL is imported".into(),
            locations: Vec::new(),
        }
    } else {
        check(
            "revocation-fresh",
            Level::Required,
            "CRLs are fresh",
            stale.is_empty(),
            if stale.is_empty() {
                format!(
                    "every CRL is before its nextUpdate at {}",
                    crate::time::rfc3339(now)
                )
            } else {
                stale.join("; ")
            },
            if stale.is_empty() { fresh_at } else { stale_at },
        )
    });
    checks.push(check(
        "default-deny",
        Level::Required,
        "connections no rule allows are denied",
        m.default_action == Action::Deny,
        format!("`defaultAction` is `{}`", m.default_action),
        x.setting(|p| p.spec.default_action.as_ref().map(|s| s.span)),
    ));
    let mut wild = Vec::new();
    let mut wild_at = Vec::new();
    for p in &c.policies {
        for r in p
            .spec
            .rules
            .iter()
            .filter(|r| r.action.value == Action::Allow)
        {
            match &r.principals {
                None => {
                    wild.push(format!("`{}` allows any identity", r.name.value));
                    wild_at.extend(x.at(r.name.span));
                }
                Some(ps) => {
                    for pat in ps.iter().filter(|pat| {
                        pat.value
                            .segments()
                            .iter()
                            .all(|s| !matches!(s, Segment::Literal(_)))
                    }) {
                        wild.push(format!(
                            "`{}` allows `{}`: every workload of the trust domain",
                            r.name.value, pat.value
                        ));
                        wild_at.extend(x.at(pat.span));
                    }
                }
            }
        }
    }
    checks.push(check(
        "no-wildcard-allow",
        Level::Required,
        "no allow rule admits a whole trust domain or any identity",
        wild.is_empty(),
        if wild.is_empty() {
            "every allow rule names a workload, a namespace or a narrower pattern".into()
        } else {
            wild.join("; ")
        },
        wild_at,
    ));
    checks.push(check(
        "audit-logging",
        Level::Required,
        "deny decisions are logged",
        m.audit_log != AuditLog::None,
        format!("`audit.log` is `{}`", m.audit_log),
        x.setting(|p| p.spec.audit_log.as_ref().map(|s| s.span)),
    ));
    checks.push(check(
        "enforce-mode",
        Level::Required,
        "the policy is enforced (audit mode is for rollouts, not production)",
        m.mode == Mode::Enforce,
        match m.mode {
            Mode::Enforce => "`mode` is `enforce`".into(),
            Mode::Audit => {
                "`mode` is `audit`: every connection is let through, denials are only recorded"
                    .into()
            }
        },
        x.setting(|p| p.spec.mode.as_ref().map(|s| s.span)),
    ));
    let score = |level| {
        let of: Vec<&Check> = checks.iter().filter(|c| c.level == level).collect();
        Score {
            passed: of.iter().filter(|c| c.status != Status::Fail).count(),
            total: of.len(),
        }
    };
    let required = score(Level::Required);
    let recommended = score(Level::Recommended);
    ComplianceReport {
        version: VERSION,
        files: c.inputs.iter().map(|i| i.path.clone()).collect(),
        policies: c.policies.iter().map(|p| p.name.value.clone()).collect(),
        compliant: required.passed == required.total,
        required,
        recommended,
        checks,
    }
}

fn curves(k: &ruleset::KeyPolicy) -> String {
    if k.ecdsa_curves.is_empty() {
        return "none".into();
    }
    k.ecdsa_curves
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl ComplianceReport {
    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Markdown: the score, then one row per check.
    pub fn to_markdown(&self) -> String {
        let mut out = String::from("## certgate compliance report\n\n");
        out.push_str(&format!(
            "Policies {} from {}, scored against [the hardening checklist](docs/hardening.md).\n\n",
            self.policies
                .iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(", "),
            self.files
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        out.push_str(&format!(
            "**{}**: required {}/{}, recommended {}/{}.\n\n",
            if self.compliant {
                "Compliant"
            } else {
                "Not compliant"
            },
            self.required.passed,
            self.required.total,
            self.recommended.passed,
            self.recommended.total
        ));
        out.push_str("| status | level | check | where | finding |\n|---|---|---|---|---|\n");
        for c in &self.checks {
            let status = match c.status {
                Status::Pass => "pass",
                Status::Fail if c.level == Level::Required => "**FAIL**",
                Status::Fail => "fail",
                Status::NotApplicable => "n/a",
            };
            let level = match c.level {
                Level::Required => "required",
                Level::Recommended => "recommended",
            };
            let place = c
                .locations
                .iter()
                .map(|l| format!("`{}:{}`", l.file, l.line))
                .collect::<Vec<_>>()
                .join(", ");
            out.push_str(&format!(
                "| {status} | {level} | [{}](docs/hardening.md#{}) | {place} | {} |\n",
                c.title,
                c.id,
                c.message.replace('|', "\\|")
            ));
        }
        out
    }

    /// The failed checks as a SARIF 2.1.0 log (required: `error`, recommended: `warning`),
    /// each at its first location, for code-scanning annotations.
    pub fn to_sarif(&self) -> String {
        let results: Vec<serde_json::Value> = self
            .checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .map(|c| {
                let mut v = serde_json::json!({
                    "ruleId": format!("certgate-hardening::{}", c.id),
                    "level": if c.level == Level::Required { "error" } else { "warning" },
                    "message": {"text": format!("{}: {}", c.title, c.message)},
                });
                let locs: Vec<serde_json::Value> = c
                    .locations
                    .iter()
                    .map(|l| {
                        serde_json::json!({"physicalLocation": {
                            "artifactLocation": {"uri": l.file},
                            "region": {"startLine": l.line, "startColumn": l.column},
                        }})
                    })
                    .collect();
                if !locs.is_empty() {
                    v["locations"] = serde_json::Value::Array(locs);
                }
                v
            })
            .collect();
        let rules: Vec<serde_json::Value> = self
            .checks
            .iter()
            .map(|c| {
                serde_json::json!({
                    "id": format!("certgate-hardening::{}", c.id),
                    "shortDescription": {"text": c.title},
                    "helpUri": format!("https://github.com/certgate/certgate/blob/main/docs/hardening.md#{}", c.id),
                    "defaultConfiguration": {"level": if c.level == Level::Required { "error" } else { "warning" }},
                })
            })
            .collect();
        crate::diag::report::sarif_log("certgate-report", rules, results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{compile, Input, NoFiles, Options};

    fn run(body: &str) -> ComplianceReport {
        let text = format!("apiVersion: certgate.dev/v1alpha1\nkind: MeshTLSPolicy\nmetadata: {{name: p}}\nspec:\n{body}");
        let c = compile(
            vec![Input::new("p.yaml", text)],
            &NoFiles,
            &Options { now: 0 },
        );
        report(&c, 0)
    }

    fn status(r: &ComplianceReport, id: &str) -> Status {
        r.checks.iter().find(|c| c.id == id).unwrap().status
    }

    #[test]
    fn an_empty_policy_fails_what_it_leaves_open() {
        let r = run("  rules:\n    - {name: all, action: allow}\n");
        assert!(!r.compliant);
        for id in [
            "tls-min-version",
            "key-strength",
            "lifetime-90d",
            "revocation-configured",
            "no-wildcard-allow",
        ] {
            assert_eq!(status(&r, id), Status::Fail, "{id}");
        }
        assert_eq!(status(&r, "default-deny"), Status::Pass);
        assert_eq!(status(&r, "revocation-fresh"), Status::NotApplicable);
        // Unset settings point at where they belong: the policy name on line 3.
        let tls = r.checks.iter().find(|c| c.id == "tls-min-version").unwrap();
        assert_eq!(tls.locations[0].line, 3);
    }

    #[test]
    fn a_trust_domain_wide_allow_is_a_wildcard() {
        let r = run("  rules:\n    - {name: td, action: allow, principals: [\"spiffe://t.test/**\"]}\n    - {name: ns, action: allow, principals: [\"spiffe://t.test/ns/a/**\"]}\n");
        let c = r
            .checks
            .iter()
            .find(|c| c.id == "no-wildcard-allow")
            .unwrap();
        assert_eq!(c.status, Status::Fail);
        assert_eq!(c.locations.len(), 1, "{c:?}");
    }
}
