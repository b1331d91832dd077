//! What certgate reads from a certificate, as the versioned JSON `certgate cert` prints and
//! the playground shows; one definition so the two cannot drift apart.

use ruleset::{CertFacts, KeyInfo};
use serde_json::{json, Value};

use crate::time::rfc3339;

/// The public key as JSON: algorithm and bits or curve.
pub fn key_json(k: &KeyInfo) -> Value {
    match k {
        KeyInfo::Rsa { bits } => json!({"algorithm": "RSA", "bits": bits}),
        KeyInfo::Ecdsa { curve } => {
            json!({"algorithm": "ECDSA", "curve": curve.map(|c| c.as_str())})
        }
        KeyInfo::Ed25519 => json!({"algorithm": "Ed25519"}),
        KeyInfo::Other { oid } => json!({"algorithm": "other", "oid": oid}),
    }
}

/// One certificate as JSON (an element of `certificates` in `certgate cert --format json`).
pub fn to_json(c: &CertFacts) -> Value {
    json!({
        "subject": c.subject,
        "issuer": c.issuer,
        "serial": ruleset::cert::serial_hex(&c.serial),
        "notBefore": rfc3339(c.not_before),
        "notAfter": rfc3339(c.not_after),
        "lifetimeSeconds": c.not_after.saturating_sub(c.not_before),
        "key": key_json(&c.key),
        "signatureAlgorithm": c.signature.name,
        "signatureHash": c.signature.hash.as_str(),
        "uriSans": c.uri_sans,
        "dnsSans": c.dns_sans,
        "spiffeId": c.spiffe_id(),
        "sha256": ruleset::cert::hex_lower(&c.sha256),
        "revocationKeys": {
            "tbsSha256": ruleset::cert::hex_lower(&c.tbs_sha256()),
            "spkiSha256": ruleset::cert::hex_lower(&c.spki_sha256()),
            "publicKeySha256": ruleset::cert::hex_lower(&c.public_key_sha256()),
            "subjectKeyId": c.subject_key_id.as_deref().map(ruleset::cert::hex_lower),
            "authorityKeyId": c.authority_key_id.as_deref().map(ruleset::cert::hex_lower),
        },
    })
}
