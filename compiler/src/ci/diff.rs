//! Semantic diff of two policy versions (`certgate diff`): who gains or loses access, which
//! constraints tighten or loosen, which revocations come and go. Pure: both sides are
//! compiled tables (from policies or read from `.cgt` files), plus, for policy sides, the
//! revocation entries as written (a table only holds keyed hashes of them).
//!
//! Access is compared by evaluating both tables with the engine on probe peers, not by
//! comparing rule text, so deny rules, rule order, `notPrincipals`, the default action and
//! trust domains all count. The probes are one identity per principal pattern either table
//! names (wildcards stand for an identity no exact principal names), one unnamed identity
//! per trust domain and one of a trust domain neither names, crossed with every elementary
//! port interval (ports that every rule treats alike), every server name either table names
//! plus another name and none, and every source block's network address plus an address in
//! no block. Certificate constraints are compared as settings, not probed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ruleset::{Action, AuditLog, Engine, KeyPolicy, Mode, Peer, Table, TlsVersion, ANY_SEGMENT};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::model::Policy;

/// The version of the `certgate diff --format json` schema.
pub const VERSION: u32 = 1;

/// Probing stops after this many evaluations per table (a table with thousands of rules);
/// the diff then says it is incomplete.
pub const MAX_PROBES: usize = 500_000;

/// The revocation entries a policy side writes, for a diff by value: keyed by what they
/// revoke, shown as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationEntries {
    /// (issuer id or any, serial) → `serial 4F380A, issuer CN=...` (or `from CRL path`).
    pub serials: BTreeMap<(Option<u64>, Vec<u8>), String>,
    /// Revoked certificates, keys and issuers, by the key they add, described.
    pub others: BTreeMap<[u8; 32], String>,
    /// CRL paths as written → `crl PATH (issuer)`.
    pub crls: BTreeMap<String, String>,
}

impl RevocationEntries {
    /// Collects the entries of parsed policies; `text` gives a file's source, for showing
    /// an issuer as written.
    pub fn of<'t>(
        policies: &[Policy],
        text: impl Fn(usize) -> Option<&'t str>,
    ) -> RevocationEntries {
        let mut e = RevocationEntries::default();
        for p in policies {
            for s in &p.spec.serials {
                let written = text(p.file)
                    .and_then(|t| t.get(s.span.start..s.span.end))
                    .map(|w| w.split_whitespace().collect::<Vec<_>>().join(" "))
                    .unwrap_or_default();
                let hex = ruleset::cert::serial_hex(&s.value.serial);
                e.serials.insert(
                    (s.value.issuer, s.value.serial.clone()),
                    format!("serial {hex}: {written}"),
                );
            }
            for c in &p.spec.crls {
                if let Some(info) = &c.crl {
                    e.crls.insert(
                        c.path.value.clone(),
                        format!("crl {} (issuer {})", c.path.value, info.issuer),
                    );
                    for e2 in &info.indirect {
                        e.serials
                            .entry((Some(e2.issuer_id), e2.serial.clone()))
                            .or_insert_with(|| {
                                format!(
                                    "serial {} of {} (from indirect CRL {})",
                                    ruleset::cert::serial_hex(&e2.serial),
                                    e2.issuer,
                                    c.path.value
                                )
                            });
                    }
                    for serial in &info.revoked {
                        e.serials
                            .entry((Some(info.issuer_id), serial.clone()))
                            .or_insert_with(|| {
                                format!(
                                    "serial {} of {} (from CRL {})",
                                    ruleset::cert::serial_hex(serial),
                                    info.issuer,
                                    c.path.value
                                )
                            });
                    }
                }
            }
            let certs = [
                ("certificate", &p.spec.certificates),
                ("issuer", &p.spec.issuers),
            ];
            for (what, list) in certs {
                for f in list {
                    for der in &f.certs {
                        let digest: [u8; 32] = Sha256::new()
                            .chain_update(what)
                            .chain_update(der)
                            .finalize()
                            .into();
                        e.others.insert(
                            digest,
                            format!(
                                "{what} {} ({})",
                                ruleset::cert::hex_lower(&digest[..8]),
                                f.path.value
                            ),
                        );
                    }
                }
            }
            for k in &p.spec.public_keys {
                for key in &k.keys {
                    e.others.insert(
                        *key,
                        format!(
                            "public key {} ({})",
                            ruleset::cert::hex_lower(key),
                            k.value.value
                        ),
                    );
                }
            }
        }
        e
    }
}

/// One side of a diff.
#[derive(Debug, Clone)]
pub struct Side<'a> {
    /// What the user named (paths), for the header.
    pub label: String,
    /// The table.
    pub table: &'a Table,
    /// The revocation entries, when the side was compiled from policies.
    pub entries: Option<RevocationEntries>,
}

/// A decision, short.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Verdict {
    /// `allow` or `deny`.
    pub action: &'static str,
    /// Reason code.
    pub reason: &'static str,
    /// Deciding rule.
    pub rule: Option<String>,
}

impl Verdict {
    fn text(&self) -> String {
        match &self.rule {
            Some(r) => format!("{} (`{r}`)", self.action),
            None => format!("{} ({})", self.action, self.reason),
        }
    }
}

/// Identities that gain or lose access under some conditions.
#[derive(Debug, Clone, Serialize)]
pub struct AccessChange {
    /// `gained` or `lost`.
    pub change: &'static str,
    /// The principal pattern, or `any other identity in TD`.
    pub principal: String,
    /// Port intervals (`8443`, `8000-8100`, `other`), or `["any"]`.
    pub ports: Vec<String>,
    /// Server names (`none` for no SNI, `other` for one no rule names), or `["any"]`.
    pub sni: Vec<String>,
    /// Source blocks (`other` for an address in none), or `["any"]`.
    pub sources: Vec<String>,
    /// The decision before.
    pub before: Verdict,
    /// The decision after.
    pub after: Verdict,
}

/// A table-wide setting that changed.
#[derive(Debug, Clone, Serialize)]
pub struct SettingChange {
    /// The policy field, such as `tls.minVersion`.
    pub setting: &'static str,
    /// Value before (`null`: unset).
    pub before: Option<String>,
    /// Value after.
    pub after: Option<String>,
    /// `tightened`, `loosened`, or `changed` when neither is clear.
    pub change: &'static str,
}

/// Counts and, for policy sides, the entries added and removed.
#[derive(Debug, Clone, Serialize)]
pub struct RevocationChange {
    /// Revoked serial keys before and after.
    pub serials: (usize, usize),
    /// Revoked certificate, key and issuer keys before and after.
    pub others: (usize, usize),
    /// Whether the revocation data differs at all (also when the counts are equal).
    pub changed: bool,
    /// Entries only in the new side (policy sides only; `null` otherwise).
    pub added: Option<Vec<String>>,
    /// Entries only in the old side (policy sides only; `null` otherwise).
    pub removed: Option<Vec<String>>,
}

/// Rule names added, removed or changed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RuleChanges {
    /// Only in the new table.
    pub added: Vec<String>,
    /// Only in the old table.
    pub removed: Vec<String>,
    /// In both, with different conditions or action.
    pub changed: Vec<String>,
}

/// The whole diff.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Diff {
    /// Schema version, [`VERSION`].
    pub version: u32,
    /// The old side's label.
    pub old: String,
    /// The new side's label.
    pub new: String,
    /// Policy digests (hex) before and after.
    pub digests: (String, String),
    /// Anyone gained access, a setting loosened, or a revocation was removed.
    pub widened: bool,
    /// Anyone lost access, a setting tightened, or a revocation was added.
    pub narrowed: bool,
    /// Access changes.
    pub access: Vec<AccessChange>,
    /// Setting changes.
    pub settings: Vec<SettingChange>,
    /// Revocation changes.
    pub revocation: RevocationChange,
    /// Rule changes by name.
    pub rules: RuleChanges,
    /// Probing stopped at [`MAX_PROBES`]: access changes may be missing.
    pub truncated: bool,
}

/// Elementary port intervals: every rule's port ranges either contain all of one or none.
/// The intervals no range touches share one label, `other` (or `any` when no rule names a
/// port).
fn port_probes(tables: &[&Table]) -> Vec<(String, u16)> {
    let mut cuts = BTreeSet::new();
    let mut ranges = Vec::new();
    for t in tables {
        for r in &t.rules {
            for p in &r.ports {
                cuts.insert(u32::from(p.start));
                cuts.insert(u32::from(p.end) + 1);
                ranges.push(*p);
            }
        }
    }
    if ranges.is_empty() {
        return vec![("any".into(), 1)];
    }
    cuts.insert(1);
    cuts.insert(65_536);
    let cuts: Vec<u32> = cuts.into_iter().collect();
    let mut out = Vec::new();
    let mut other = None;
    for w in cuts.windows(2) {
        let (Some(a), Some(b)) = (w.first(), w.get(1)) else {
            continue;
        };
        let (Ok(start), Ok(end)) = (u16::try_from(*a), u16::try_from(b - 1)) else {
            continue;
        };
        if start == 0 {
            continue;
        }
        if ranges.iter().any(|r| r.contains(start)) {
            let label = if start == end {
                start.to_string()
            } else {
                format!("{start}-{end}")
            };
            out.push((label, start));
        } else if other.is_none() {
            other = Some(start);
        }
    }
    if let Some(p) = other {
        out.push(("other".into(), p));
    }
    out
}

fn sni_probes(tables: &[&Table]) -> Vec<(String, Option<String>)> {
    let mut names = BTreeSet::new();
    for t in tables {
        for r in &t.rules {
            names.extend(r.sni.iter().cloned());
        }
    }
    if names.is_empty() {
        return vec![("any".into(), None)];
    }
    let mut out: Vec<(String, Option<String>)> = names
        .into_iter()
        .map(|n| {
            let probe = ruleset::sni::example(&n);
            (n, Some(probe))
        })
        .collect();
    out.push(("other".into(), Some("other.invalid".into())));
    out.push(("none".into(), None));
    out
}

fn source_probes(tables: &[&Table]) -> Vec<(String, Option<IpAddr>)> {
    let mut cidrs: BTreeMap<String, ruleset::Cidr> = BTreeMap::new();
    for t in tables {
        for r in &t.rules {
            cidrs.extend(r.source_cidrs.iter().map(|c| (c.to_string(), *c)));
        }
    }
    if cidrs.is_empty() {
        return vec![("any".into(), None)];
    }
    let blocks: Vec<ruleset::Cidr> = cidrs.values().copied().collect();
    let mut out: Vec<(String, Option<IpAddr>)> = cidrs
        .into_iter()
        .map(|(label, c)| (label, Some(c.addr)))
        .collect();
    // Documentation addresses (RFC 5737, RFC 3849): the first that no block holds.
    let other = ["192.0.2.1", "198.51.100.1", "203.0.113.1", "2001:db8::1"]
        .iter()
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .find(|a| !blocks.iter().any(|b| b.contains(*a)));
    if let Some(a) = other {
        out.push(("other".into(), Some(a)));
    }
    out
}

fn subjects(tables: &[&Table]) -> Vec<(String, String)> {
    let mut patterns = BTreeSet::new();
    let mut domains = BTreeSet::new();
    for t in tables {
        domains.extend(t.constraints.trust_domains.iter().cloned());
        for r in &t.rules {
            for p in r.principals.iter().chain(&r.not_principals) {
                domains.insert(p.trust_domain().to_string());
                patterns.insert(p.clone());
            }
        }
    }
    let mut out: Vec<(String, String)> = patterns
        .iter()
        .map(|p| (p.to_string(), p.example()))
        .collect();
    for d in domains {
        out.push((
            format!("any other identity in {d}"),
            format!("spiffe://{d}/{ANY_SEGMENT}/{ANY_SEGMENT}"),
        ));
    }
    // A trust domain neither version names: rules without principals, the default action
    // and the trust-domain constraint decide for it.
    out.push((
        "any identity of another trust domain".to_string(),
        format!("spiffe://other.invalid/{ANY_SEGMENT}/{ANY_SEGMENT}"),
    ));
    out
}

fn verdict(engine: &Engine, peer: &Peer) -> Verdict {
    let d = engine.evaluate(peer);
    Verdict {
        action: d.action.as_str(),
        reason: d.reason.code(),
        rule: d.rule.map(str::to_string),
    }
}

type Condition = (String, String, String);

fn distinct<'a>(v: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    v.filter(|x| seen.insert(*x)).cloned().collect()
}

/// The conditions as ports × server names × sources, when they are exactly that product.
fn product(conds: &[Condition]) -> Option<(Vec<String>, Vec<String>, Vec<String>)> {
    let p = distinct(conds.iter().map(|c| &c.0));
    let s = distinct(conds.iter().map(|c| &c.1));
    let c = distinct(conds.iter().map(|c| &c.2));
    (conds.len() == p.len() * s.len() * c.len()).then_some((p, s, c))
}

fn access(old: &Table, new: &Table) -> (Vec<AccessChange>, bool) {
    let tables = [old, new];
    let subjects = subjects(&tables);
    let ports = port_probes(&tables);
    let snis = sni_probes(&tables);
    let sources = source_probes(&tables);
    let (eo, en) = (Engine::new(old.clone()), Engine::new(new.clone()));
    let mut groups: BTreeMap<(String, &'static str, Verdict, Verdict), Vec<Condition>> =
        BTreeMap::new();
    let mut order: Vec<(String, &'static str, Verdict, Verdict)> = Vec::new();
    let mut count = 0usize;
    let mut truncated = false;
    'outer: for (label, id) in &subjects {
        for (pl, port) in &ports {
            for (sl, sni) in &snis {
                for (cl, src) in &sources {
                    count += 1;
                    if count > MAX_PROBES {
                        truncated = true;
                        break 'outer;
                    }
                    let peer = Peer {
                        tls_version: Some(TlsVersion::V1_3),
                        port: Some(*port),
                        sni: sni.clone(),
                        source_ip: *src,
                        ..Peer::assumed(id.clone())
                    };
                    let (b, a) = (verdict(&eo, &peer), verdict(&en, &peer));
                    if b.action == a.action {
                        continue;
                    }
                    let change = if a.action == "allow" {
                        "gained"
                    } else {
                        "lost"
                    };
                    let key = (label.clone(), change, b, a);
                    if !groups.contains_key(&key) {
                        order.push(key.clone());
                    }
                    groups
                        .entry(key)
                        .or_default()
                        .push((pl.clone(), sl.clone(), cl.clone()));
                }
            }
        }
    }
    let all_snis: BTreeSet<&String> = snis.iter().map(|(l, _)| l).collect();
    let all_sources: BTreeSet<&String> = sources.iter().map(|(l, _)| l).collect();
    let all_ports: BTreeSet<&String> = ports.iter().map(|(l, _)| l).collect();
    let squash = |v: Vec<String>, all: &BTreeSet<&String>| {
        if v.len() == all.len() && all.len() > 1 {
            vec!["any".to_string()]
        } else {
            v
        }
    };
    let mut out = Vec::new();
    for key in order {
        let Some(conds) = groups.get(&key) else {
            continue;
        };
        let mut rows = Vec::new();
        if let Some((p, s, c)) = product(conds) {
            rows.push((
                squash(p, &all_ports),
                squash(s, &all_snis),
                squash(c, &all_sources),
            ));
        } else {
            // Not one product: a row per port interval, or per condition when even that
            // is not a product.
            let mut by_port: BTreeMap<&String, Vec<Condition>> = BTreeMap::new();
            for c in conds {
                by_port.entry(&c.0).or_default().push(c.clone());
            }
            for (_, cs) in by_port {
                match product(&cs) {
                    Some((p, s, c)) => {
                        rows.push((p, squash(s, &all_snis), squash(c, &all_sources)))
                    }
                    None => {
                        rows.extend(cs.into_iter().map(|(p, s, c)| (vec![p], vec![s], vec![c])))
                    }
                }
            }
        }
        let (principal, change, before, after) = key;
        for (ports, sni, sources) in rows {
            out.push(AccessChange {
                change,
                principal: principal.clone(),
                ports,
                sni,
                sources,
                before: before.clone(),
                after: after.clone(),
            });
        }
    }
    (out, truncated)
}

fn tls(v: Option<TlsVersion>) -> Option<String> {
    v.map(|v| v.as_str().to_string())
}

fn keys_text(k: &Option<KeyPolicy>) -> Option<String> {
    k.as_ref().map(|k| {
        let curves: Vec<&str> = k.ecdsa_curves.iter().map(|c| c.as_str()).collect();
        format!(
            "rsaMinBits: {}, ecdsaCurves: [{}], ed25519: {}",
            k.rsa_min_bits
                .map_or("forbidden".to_string(), |b| b.to_string()),
            curves.join(", "),
            k.ed25519
        )
    })
}

/// Whether key policy `a` accepts every key `b` accepts.
fn keys_cover(a: &Option<KeyPolicy>, b: &Option<KeyPolicy>) -> bool {
    match (a, b) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => {
            let rsa = match (a.rsa_min_bits, b.rsa_min_bits) {
                (_, None) => true,
                (None, Some(_)) => false,
                (Some(x), Some(y)) => x <= y,
            };
            rsa && b.ecdsa_curves.iter().all(|c| a.ecdsa_curves.contains(c))
                && (a.ed25519 || !b.ed25519)
        }
    }
}

fn direction(loosened: bool, tightened: bool) -> &'static str {
    match (loosened, tightened) {
        (true, false) => "loosened",
        (false, true) => "tightened",
        _ => "changed",
    }
}

fn settings(old: &Table, new: &Table) -> Vec<SettingChange> {
    let mut out = Vec::new();
    let mut push = |setting, before: Option<String>, after: Option<String>, change| {
        out.push(SettingChange {
            setting,
            before,
            after,
            change,
        })
    };
    if old.mode != new.mode {
        push(
            "mode",
            Some(old.mode.as_str().into()),
            Some(new.mode.as_str().into()),
            direction(new.mode == Mode::Audit, new.mode == Mode::Enforce),
        );
    }
    if old.default_action != new.default_action {
        push(
            "defaultAction",
            Some(old.default_action.as_str().into()),
            Some(new.default_action.as_str().into()),
            direction(
                new.default_action == Action::Allow,
                new.default_action == Action::Deny,
            ),
        );
    }
    let (oc, nc) = (&old.constraints, &new.constraints);
    if oc.min_tls != nc.min_tls {
        // None accepts any version: lower than every minimum.
        push(
            "tls.minVersion",
            tls(oc.min_tls),
            tls(nc.min_tls),
            direction(nc.min_tls < oc.min_tls, nc.min_tls > oc.min_tls),
        );
    }
    let (ot, nt): (BTreeSet<&String>, BTreeSet<&String>) = (
        oc.trust_domains.iter().collect(),
        nc.trust_domains.iter().collect(),
    );
    if ot != nt {
        // Empty accepts any trust domain.
        let loosened = (!ot.is_empty() && nt.is_empty())
            || (!nt.is_empty() && !nt.is_subset(&ot) && !ot.is_empty());
        let tightened = (ot.is_empty() && !nt.is_empty())
            || (!ot.is_empty() && !nt.is_empty() && !ot.is_subset(&nt));
        let show = |s: &BTreeSet<&String>| {
            Some(if s.is_empty() {
                "any".to_string()
            } else {
                s.iter().map(|d| d.as_str()).collect::<Vec<_>>().join(", ")
            })
        };
        push(
            "peerCertificate.trustDomains",
            show(&ot),
            show(&nt),
            direction(loosened, tightened),
        );
    }
    if oc.max_lifetime_secs != nc.max_lifetime_secs {
        let (a, b) = (
            oc.max_lifetime_secs.unwrap_or(u64::MAX),
            nc.max_lifetime_secs.unwrap_or(u64::MAX),
        );
        push(
            "peerCertificate.maxLifetime",
            oc.max_lifetime_secs.map(crate::duration::format),
            nc.max_lifetime_secs.map(crate::duration::format),
            direction(b > a, b < a),
        );
    }
    if oc.keys != nc.keys {
        push(
            "peerCertificate.keys",
            keys_text(&oc.keys).or(Some("any".into())),
            keys_text(&nc.keys).or(Some("any".into())),
            direction(
                !keys_cover(&oc.keys, &nc.keys),
                !keys_cover(&nc.keys, &oc.keys),
            ),
        );
    }
    let (of, nf): (BTreeSet<_>, BTreeSet<_>) = (
        oc.forbid_sig_hashes.iter().collect(),
        nc.forbid_sig_hashes.iter().collect(),
    );
    if of != nf {
        let show = |s: &BTreeSet<&ruleset::SigHash>| {
            Some(s.iter().map(|h| h.as_str()).collect::<Vec<_>>().join(", "))
        };
        push(
            "peerCertificate.forbidSignatureAlgorithms",
            show(&of),
            show(&nf),
            direction(!of.is_subset(&nf), !nf.is_subset(&of)),
        );
    }
    if old.audit_log != new.audit_log {
        let rank = |a: AuditLog| match a {
            AuditLog::None => 0,
            AuditLog::Deny => 1,
            AuditLog::All => 2,
        };
        push(
            "audit.log",
            Some(old.audit_log.as_str().into()),
            Some(new.audit_log.as_str().into()),
            direction(
                rank(new.audit_log) < rank(old.audit_log),
                rank(new.audit_log) > rank(old.audit_log),
            ),
        );
    }
    let (os, ns) = (old.revocation.on_stale(), new.revocation.on_stale());
    if os != ns {
        push(
            "revocation.onStale",
            Some(os.as_str().into()),
            Some(ns.as_str().into()),
            direction(
                ns == ruleset::revocation::OnStale::Keep,
                ns == ruleset::revocation::OnStale::Deny,
            ),
        );
    }
    out
}

fn rules(old: &Table, new: &Table) -> RuleChanges {
    let by_name = |t: &Table| -> BTreeMap<String, ruleset::Rule> {
        t.rules
            .iter()
            .map(|r| {
                let mut r = r.clone();
                // The policy index moves when policies are added; not a rule change.
                r.policy = 0;
                (r.name.clone(), r)
            })
            .collect()
    };
    let (o, n) = (by_name(old), by_name(new));
    RuleChanges {
        added: n.keys().filter(|k| !o.contains_key(*k)).cloned().collect(),
        removed: o.keys().filter(|k| !n.contains_key(*k)).cloned().collect(),
        changed: n
            .iter()
            .filter(|(k, r)| o.get(*k).is_some_and(|or| or != *r))
            .map(|(k, _)| k.clone())
            .collect(),
    }
}

fn revocation(old: &Side<'_>, new: &Side<'_>) -> RevocationChange {
    let (or, nr) = (&old.table.revocation, &new.table.revocation);
    let (added, removed) = match (&old.entries, &new.entries) {
        (Some(o), Some(n)) => {
            fn only<K: Ord, V: Clone>(a: &BTreeMap<K, V>, b: &BTreeMap<K, V>) -> Vec<V> {
                a.iter()
                    .filter(|(k, _)| !b.contains_key(*k))
                    .map(|(_, v)| v.clone())
                    .collect()
            }
            let diff = |a: &RevocationEntries, b: &RevocationEntries| {
                let mut v = only(&a.crls, &b.crls);
                v.extend(only(&a.serials, &b.serials));
                v.extend(only(&a.others, &b.others));
                v
            };
            (Some(diff(n, o)), Some(diff(o, n)))
        }
        _ => (None, None),
    };
    // onStale is a setting (reported there); compare the key sets alone.
    let mut or_keys = or.clone();
    or_keys.set_on_stale(nr.on_stale());
    RevocationChange {
        serials: (or.serial_count(), nr.serial_count()),
        others: (other_count(or), other_count(nr)),
        changed: or_keys != *nr,
        added,
        removed,
    }
}

/// Keys of revoked certificates, public keys and issuers in a table.
fn other_count(r: &ruleset::Revocation) -> usize {
    r.certificate_count()
        .saturating_add(r.key_count())
        .saturating_add(r.issuer_count())
}

/// Diffs two sides.
pub fn diff(old: &Side<'_>, new: &Side<'_>) -> Diff {
    let (access, truncated) = access(old.table, new.table);
    let settings = settings(old.table, new.table);
    let revocation = revocation(old, new);
    let rules = rules(old.table, new.table);
    // Fewer revocations re-admit certificates: widening. Tables alone show only counts;
    // a changed set with equal counts may do both.
    let (rev_wider, rev_narrower) = match (&revocation.added, &revocation.removed) {
        (Some(a), Some(r)) => (!r.is_empty(), !a.is_empty()),
        _ => {
            let (os, ns) = revocation.serials;
            let (of, nf) = revocation.others;
            let fewer = ns < os || nf < of;
            let more = ns > os || nf > of;
            let same_counts = !fewer && !more;
            (
                fewer || (same_counts && revocation.changed),
                more || (same_counts && revocation.changed),
            )
        }
    };
    let widened = access.iter().any(|a| a.change == "gained")
        || settings.iter().any(|s| s.change != "tightened")
        || rev_wider;
    let narrowed = access.iter().any(|a| a.change == "lost")
        || settings.iter().any(|s| s.change != "loosened")
        || rev_narrower;
    Diff {
        version: VERSION,
        old: old.label.clone(),
        new: new.label.clone(),
        digests: (
            ruleset::cert::hex_lower(&old.table.policy_digest),
            ruleset::cert::hex_lower(&new.table.policy_digest),
        ),
        widened,
        narrowed,
        access,
        settings,
        revocation,
        rules,
        truncated,
    }
}

fn cell(v: &[String]) -> String {
    if v.is_empty() {
        return "any".into();
    }
    v.iter()
        .map(|s| match s.as_str() {
            "any" | "other" | "none" => s.clone(),
            _ => format!("`{s}`"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl Diff {
    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Markdown for a pull-request comment.
    pub fn to_markdown(&self) -> String {
        let mut out = String::from("## certgate policy diff\n\n");
        out.push_str(&format!("`{}` → `{}`\n\n", self.old, self.new));
        let verdict = match (self.widened, self.narrowed) {
            (true, true) => "**Access widened and narrowed.**",
            (true, false) => "**Access widened.**",
            (false, true) => "Access narrowed.",
            (false, false) => "No change in what the policy decides.",
        };
        out.push_str(verdict);
        out.push('\n');
        if self.truncated {
            out.push_str(&format!(
                "\n> The tables are too large to probe completely ({MAX_PROBES} evaluations): access changes may be missing.\n"
            ));
        }
        if !self.access.is_empty() {
            out.push_str("\n### Access\n\n| change | principal | ports | SNI | source | before | after |\n|---|---|---|---|---|---|---|\n");
            for a in &self.access {
                out.push_str(&format!(
                    "| {} | `{}` | {} | {} | {} | {} | {} |\n",
                    if a.change == "gained" {
                        "**gained**"
                    } else {
                        "lost"
                    },
                    a.principal,
                    cell(&a.ports),
                    cell(&a.sni),
                    cell(&a.sources),
                    a.before.text(),
                    a.after.text()
                ));
            }
        }
        if !self.settings.is_empty() {
            out.push_str("\n### Settings\n\n| setting | before | after | |\n|---|---|---|---|\n");
            for s in &self.settings {
                let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "unset".into());
                out.push_str(&format!(
                    "| `{}` | {} | {} | {} |\n",
                    s.setting,
                    show(&s.before),
                    show(&s.after),
                    if s.change == "loosened" {
                        "**loosened**"
                    } else {
                        s.change
                    }
                ));
            }
        }
        let r = &self.revocation;
        if r.changed {
            out.push_str(&format!(
                "\n### Revocation\n\n- revoked serials: {} → {}\n- revoked certificate, key and issuer keys: {} → {}\n",
                r.serials.0, r.serials.1, r.others.0, r.others.1
            ));
            for (what, list) in [("added", &r.added), ("**removed**", &r.removed)] {
                if let Some(list) = list {
                    for e in list {
                        out.push_str(&format!("- {what}: `{e}`\n"));
                    }
                }
            }
            if r.added.is_none() {
                out.push_str(
                    "- (compiled tables hold keyed hashes: diff the policies to see the entries)\n",
                );
            }
        }
        let rc = &self.rules;
        if !(rc.added.is_empty() && rc.removed.is_empty() && rc.changed.is_empty()) {
            out.push_str("\n### Rules\n\n");
            for (what, list) in [
                ("added", &rc.added),
                ("removed", &rc.removed),
                ("changed", &rc.changed),
            ] {
                if !list.is_empty() {
                    let names: Vec<String> = list.iter().map(|n| format!("`{n}`")).collect();
                    out.push_str(&format!("- {what}: {}\n", names.join(", ")));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{compile, Input, NoFiles, Options};

    fn table(body: &str) -> Table {
        let text = format!("apiVersion: certgate.dev/v1alpha1\nkind: MeshTLSPolicy\nmetadata: {{name: p}}\nspec:\n{body}");
        let c = compile(
            vec![Input::new("p.yaml", text)],
            &NoFiles,
            &Options { now: 0 },
        );
        c.table.unwrap_or_else(|| panic!("{:?}", c.diagnostics))
    }

    fn run(a: &Table, b: &Table) -> Diff {
        let side = |t| Side {
            label: "x".into(),
            table: t,
            entries: None,
        };
        diff(&side(a), &side(b))
    }

    #[test]
    fn a_wider_pattern_gains_access_on_its_ports_only() {
        let old = table("  rules:\n    - {name: r, action: allow, principals: [spiffe://t.test/ns/a/sa/web], ports: [8443]}\n");
        let new = table("  rules:\n    - {name: r, action: allow, principals: [\"spiffe://t.test/ns/a/sa/*\"], ports: [8443]}\n");
        let d = run(&old, &new);
        assert!(d.widened && !d.narrowed, "{d:#?}");
        assert_eq!(d.access.len(), 1, "{d:#?}");
        assert_eq!(d.access[0].principal, "spiffe://t.test/ns/a/sa/*");
        assert_eq!(d.access[0].ports, vec!["8443"]);
        assert_eq!(d.rules.changed, vec!["r"]);
        assert!(!run(&old, &old).widened);
    }

    #[test]
    fn a_new_deny_rule_narrows_and_port_ranges_split_exactly() {
        let old = table("  rules:\n    - {name: r, action: allow, principals: [\"spiffe://t.test/**\"], ports: [\"8000-8100\"]}\n");
        let new = table("  rules:\n    - {name: r, action: allow, principals: [\"spiffe://t.test/**\"], ports: [\"8000-8200\"]}\n    - {name: d, action: deny, principals: [spiffe://t.test/ns/bad]}\n");
        let d = run(&old, &new);
        assert!(d.widened && d.narrowed);
        let gained: Vec<&AccessChange> = d.access.iter().filter(|a| a.change == "gained").collect();
        assert!(
            gained.iter().all(|a| a.ports == vec!["8101-8200"]),
            "{gained:#?}"
        );
        assert!(d
            .access
            .iter()
            .any(|a| a.change == "lost" && a.principal == "spiffe://t.test/ns/bad"));
    }

    #[test]
    fn an_allow_rule_without_principals_opens_every_trust_domain() {
        let old = table("  rules: []\n");
        let new = table("  rules:\n    - {name: all, action: allow, ports: [443]}\n");
        let d = run(&old, &new);
        assert!(d.widened);
        assert_eq!(d.access.len(), 1, "{d:#?}");
        assert_eq!(
            d.access[0].principal,
            "any identity of another trust domain"
        );
        assert_eq!(d.access[0].ports, vec!["443"]);
        // Confined by trust domain, only that domain's identities gain.
        let confined = table("  peerCertificate: {trustDomains: [t.test]}\n  rules:\n    - {name: all, action: allow, ports: [443]}\n");
        let d = run(&old, &confined);
        let who: Vec<&str> = d.access.iter().map(|a| a.principal.as_str()).collect();
        assert_eq!(who, vec!["any other identity in t.test"]);
    }

    #[test]
    fn settings_say_which_way_they_moved() {
        let old = table("  tls: {minVersion: \"1.3\"}\n  peerCertificate: {maxLifetime: 24h, keys: {ecdsaCurves: [P-256]}}\n");
        let new = table("  mode: audit\n  tls: {minVersion: \"1.2\"}\n  peerCertificate: {maxLifetime: 1h, keys: {ecdsaCurves: [P-256], rsaMinBits: 2048}}\n");
        let d = run(&old, &new);
        let s: Vec<(&str, &str)> = d.settings.iter().map(|s| (s.setting, s.change)).collect();
        assert_eq!(
            s,
            vec![
                ("mode", "loosened"),
                ("tls.minVersion", "loosened"),
                ("peerCertificate.maxLifetime", "tightened"),
                ("peerCertificate.keys", "loosened"),
            ]
        );
    }
}
