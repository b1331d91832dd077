//! What a compiled table holds, as JSON (`certgate inspect --format json`) or as text.

use std::fmt::Write as _;

use ruleset::{Condition, Rule, Table};
use serde_json::{json, Value};

/// The version of the `inspect` JSON schema.
pub const VERSION: u32 = 1;

fn rule_json(t: &Table, r: &Rule) -> Value {
    let mut v = json!({
        "name": r.name,
        "policy": t.policy_names.get(usize::from(r.policy)),
        "action": r.action.as_str(),
        "principals": r.principals.iter().map(ToString::to_string).collect::<Vec<_>>(),
    });
    if let Some(fields) = v.as_object_mut() {
        for c in r.conditions() {
            fields.insert(c.field().to_string(), json!(c.values()));
        }
    }
    v
}

/// The table as a JSON value. `size` is the encoded size in bytes.
pub fn to_json(t: &Table, size: usize) -> Value {
    let c = &t.constraints;
    json!({
        "version": VERSION,
        "size": size,
        "digest": ruleset::cert::hex_lower(&t.policy_digest),
        "issuedAt": time_ms(t.issued_at_ms),
        "issuedAtMs": t.issued_at_ms,
        "expiresAt": t.expires_at_ms.map(time_ms),
        "expiresAtMs": t.expires_at_ms,
        "signer": t.signer.as_ref().map(ruleset::signature::key_id),
        "policies": t.policy_names,
        "mode": t.mode.as_str(),
        "defaultAction": t.default_action.as_str(),
        "audit": {"log": t.audit_log.as_str()},
        "constraints": {
            "minTlsVersion": c.min_tls.map(|v| v.as_str()),
            "trustDomains": c.trust_domains,
            "maxLifetime": c.max_lifetime_secs.map(crate::duration::format),
            "maxLifetimeSeconds": c.max_lifetime_secs,
            "keys": c.keys.as_ref().map(|k| json!({
                "rsaMinBits": k.rsa_min_bits,
                "ecdsaCurves": k.ecdsa_curves.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
                "ed25519": k.ed25519,
            })),
            "forbidSignatureAlgorithms": c.forbid_sig_hashes.iter().map(|h| h.as_str()).collect::<Vec<_>>(),
        },
        "revocation": {
            "serials": t.revocation.serial_count(),
            "certificates": t.revocation.certificate_count(),
            "publicKeys": t.revocation.key_count(),
            "issuers": t.revocation.issuer_count(),
            "onStale": t.revocation.on_stale().as_str(),
        },
        "rules": t.rules.iter().map(|r| rule_json(t, r)).collect::<Vec<_>>(),
    })
}

/// Unix milliseconds as RFC 3339 (whole seconds; the milliseconds are in the `…Ms` field).
fn time_ms(ms: u64) -> String {
    crate::time::rfc3339(i64::try_from(ms / 1000).unwrap_or(i64::MAX))
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "any".to_string()
    } else {
        items.join(", ")
    }
}

/// The table as text for people.
pub fn to_text(t: &Table, size: usize) -> String {
    let c = &t.constraints;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "table     {size} bytes, digest sha256:{}",
        ruleset::cert::hex_lower(&t.policy_digest)
    );
    let _ = writeln!(
        o,
        "issued    {} ({} ms)",
        time_ms(t.issued_at_ms),
        t.issued_at_ms
    );
    let _ = writeln!(
        o,
        "expires   {}",
        t.expires_at_ms
            .map_or("never".to_string(), |e| format!("{} ({e} ms)", time_ms(e)))
    );
    // The trailer's claim: `inspect` has no pinned keys, the filter checks them.
    let _ = writeln!(
        o,
        "signer    {}",
        t.signer
            .as_ref()
            .map_or("unsigned".to_string(), |k| format!(
                "{} (not verified here)",
                ruleset::signature::key_id(k)
            ))
    );
    let _ = writeln!(o, "policies  {}", t.policy_names.join(", "));
    let _ = writeln!(o, "mode      {}", t.mode.as_str());
    let _ = writeln!(o, "default   {}", t.default_action.as_str());
    let _ = writeln!(o, "audit log {}", t.audit_log.as_str());
    let _ = writeln!(o, "\nconstraints");
    let _ = writeln!(
        o,
        "  min TLS version     {}",
        c.min_tls.map_or("any", |v| v.as_str())
    );
    let _ = writeln!(o, "  trust domains       {}", list(&c.trust_domains));
    let _ = writeln!(
        o,
        "  max lifetime        {}",
        c.max_lifetime_secs
            .map_or("any".to_string(), crate::duration::format)
    );
    let keys = match &c.keys {
        None => "any".to_string(),
        Some(k) => {
            let mut parts = Vec::new();
            match k.rsa_min_bits {
                Some(b) => parts.push(format!("RSA >= {b} bits")),
                None => parts.push("no RSA".to_string()),
            }
            if k.ecdsa_curves.is_empty() {
                parts.push("no ECDSA".to_string());
            } else {
                let names: Vec<&str> = k.ecdsa_curves.iter().map(|c| c.as_str()).collect();
                parts.push(format!("ECDSA {}", names.join("/")));
            }
            parts.push(if k.ed25519 { "Ed25519" } else { "no Ed25519" }.to_string());
            parts.join(", ")
        }
    };
    let _ = writeln!(o, "  keys                {keys}");
    let forbid: Vec<String> = c
        .forbid_sig_hashes
        .iter()
        .map(|h| h.as_str().to_string())
        .collect();
    let _ = writeln!(
        o,
        "  forbidden sig hash  {}",
        if forbid.is_empty() {
            "none".to_string()
        } else {
            forbid.join(", ")
        }
    );
    let _ = writeln!(
        o,
        "\nrevocation  {} serials, {} certificates, {} public keys, {} issuers (stored as keyed hashes), onStale {}",
        t.revocation.serial_count(),
        t.revocation.certificate_count(),
        t.revocation.key_count(),
        t.revocation.issuer_count(),
        t.revocation.on_stale().as_str()
    );
    let _ = writeln!(
        o,
        "\nrules (deny rules are tried first, then allow rules, each in this order)"
    );
    for r in &t.rules {
        let policy = t
            .policy_names
            .get(usize::from(r.policy))
            .map_or("?", String::as_str);
        let _ = writeln!(o, "  {} {} (policy {policy})", r.action.as_str(), r.name);
        let principals: Vec<String> = r.principals.iter().map(ToString::to_string).collect();
        let _ = writeln!(o, "    principals     {}", list(&principals));
        for c in r.conditions() {
            // Ports are always shown (`any` when unrestricted); the rest only when set.
            if matches!(c, Condition::Ports(_)) {
                let _ = writeln!(o, "    {:<15}{}", c.field(), list(&c.values()));
            } else if !c.is_empty() {
                let _ = writeln!(o, "    {:<15}{}", c.field(), c.values().join(", "));
            }
        }
    }
    if t.rules.is_empty() {
        let _ = writeln!(o, "  (none)");
    }
    o
}
