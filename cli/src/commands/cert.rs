//! `certgate cert`: the facts certgate reads from a certificate, the ones policies test.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{anyhow, Context};
use certgate_compiler::certinfo::to_json;
use certgate_compiler::time::rfc3339;
use ruleset::{CertFacts, KeyInfo};
use serde_json::json;

use super::{Format, EXIT_OK};

/// Show certificate facts.
#[derive(Debug, clap::Args)]
#[command(
    about = "Show what certgate reads from a certificate (PEM bundle or DER)",
    after_help = "For each certificate: subject, issuer, serial (hex), notBefore/notAfter (RFC 3339 UTC), \
key algorithm and size or curve, signature algorithm, URI and DNS SANs, SPIFFE ID, the whole-certificate SHA-256 \
(for audit records only: re-encoding the certificate changes it), and the revocation keys: the certificate key \
(SHA-256 of what the CA signed, the same for every encoding), the SPKI SHA-256 (for `revocation.publicKeys`), \
the canonical public key digest, and the subject and authority key identifiers (a CA revoked by \
`revocation.issuers` revokes the certificates whose authority key identifier is its subject key identifier).\n\n\
Exit codes: 0 ok, 2 unreadable or malformed input (one line on stderr).\n\n\
Examples:\n  certgate cert client.pem\n  certgate cert chain.pem --format json | jq -r '.certificates[0].revocationKeys.spkiSha256'"
)]
pub struct Args {
    /// PEM (one or more certificates) or DER file
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// `human` text or versioned `json`
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

fn key_text(k: &KeyInfo) -> String {
    match k {
        KeyInfo::Rsa { bits } => format!("RSA {bits} bits"),
        KeyInfo::Ecdsa { curve } => {
            format!("ECDSA {}", curve.map_or("(unknown curve)", |c| c.as_str()))
        }
        KeyInfo::Ed25519 => "Ed25519".to_string(),
        KeyInfo::Other { oid } => format!("other ({oid})"),
    }
}

fn to_text(c: &CertFacts) -> String {
    let mut o = String::new();
    let lifetime = u64::try_from(c.not_after.saturating_sub(c.not_before)).unwrap_or(0);
    let _ = writeln!(o, "subject     {}", c.subject);
    let _ = writeln!(o, "issuer      {}", c.issuer);
    let _ = writeln!(o, "serial      {}", ruleset::cert::serial_hex(&c.serial));
    let _ = writeln!(o, "notBefore   {}", rfc3339(c.not_before));
    let _ = writeln!(
        o,
        "notAfter    {}  (lifetime {})",
        rfc3339(c.not_after),
        certgate_compiler::duration::format(lifetime)
    );
    let _ = writeln!(o, "key         {}", key_text(&c.key));
    let _ = writeln!(
        o,
        "signature   {} ({})",
        c.signature.name,
        c.signature.hash.as_str()
    );
    for u in &c.uri_sans {
        let _ = writeln!(o, "URI SAN     {u}");
    }
    for d in &c.dns_sans {
        let _ = writeln!(o, "DNS SAN     {d}");
    }
    let _ = writeln!(o, "SPIFFE ID   {}", c.spiffe_id().unwrap_or("(none)"));
    let _ = writeln!(
        o,
        "sha256      {}  (whole certificate; changes when re-encoded)",
        ruleset::cert::hex_lower(&c.sha256)
    );
    let hex = ruleset::cert::hex_lower;
    let _ = writeln!(o, "revocation keys:");
    let _ = writeln!(
        o,
        "  certificate  {}  (tbsCertificate SHA-256; revocation.certificates)",
        hex(&c.tbs_sha256())
    );
    let _ = writeln!(
        o,
        "  spki sha256  {}  (revocation.publicKeys)",
        hex(&c.spki_sha256())
    );
    let _ = writeln!(
        o,
        "  public key   {}  (canonical key digest)",
        hex(&c.public_key_sha256())
    );
    let id = |k: &Option<Vec<u8>>| k.as_deref().map_or_else(|| "(none)".to_string(), hex);
    let _ = writeln!(o, "  subject key id    {}", id(&c.subject_key_id));
    let _ = writeln!(o, "  authority key id  {}", id(&c.authority_key_id));
    o
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<u8> {
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read `{}`", args.file.display()))?;
    let certs = ruleset::cert::parse_pem_or_der(&bytes)
        .map_err(|e| anyhow!("`{}` is not a certificate: {e}", args.file.display()))?;
    match args.format {
        Format::Json => {
            let out = json!({"version": 1, "certificates": certs.iter().map(to_json).collect::<Vec<_>>()});
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Format::Human => {
            let texts: Vec<String> = certs.iter().map(to_text).collect();
            print!("{}", texts.join("\n"));
        }
    }
    Ok(EXIT_OK)
}
