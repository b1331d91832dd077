//! `certgate crl`: what certgate reads from a CRL, the serials a policy importing it revokes.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{anyhow, Context};
use certgate_compiler::time::rfc3339;
use serde_json::json;

use super::{Format, EXIT_OK};

/// Show CRL facts.
#[derive(Debug, clap::Args)]
#[command(
    about = "Show what certgate reads from a CRL (PEM or DER)",
    after_help = "Prints the issuer, thisUpdate, nextUpdate (RFC 3339 UTC), the CRL number and the revoked \
serials (hex), then the entries an indirect CRL revokes for other issuers (certificateIssuer). \
Delta CRLs, unknown critical extensions and unmarked indirect entries are refused.\n\n\
Exit codes: 0 ok, 2 unreadable, malformed or refused CRL (one line on stderr).\n\n\
Examples:\n  certgate crl policies/crl/intermediate.crl.pem\n  certgate crl intermediate.crl --format json | jq '.revoked | length'"
)]
pub struct Args {
    /// PEM (`X509 CRL`) or DER file
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// `human` text or versioned `json`
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<u8> {
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read `{}`", args.file.display()))?;
    let crl = certgate_compiler::crl::parse(&bytes)
        .map_err(|e| anyhow!("`{}` is not a CRL: {e}", args.file.display()))?;
    let revoked: Vec<String> = crl
        .revoked
        .iter()
        .map(|s| ruleset::cert::serial_hex(s))
        .collect();
    let indirect: Vec<(String, String)> = crl
        .indirect
        .iter()
        .map(|e| (e.issuer.clone(), ruleset::cert::serial_hex(&e.serial)))
        .collect();
    let stale = crl.next_update.is_some_and(|n| n < super::now());
    match args.format {
        Format::Json => {
            let out = json!({
                "version": 1,
                "issuer": crl.issuer,
                "thisUpdate": rfc3339(crl.this_update),
                "nextUpdate": crl.next_update.map(rfc3339),
                "expired": stale,
                "crlNumber": crl.number,
                "revoked": revoked,
                "indirect": indirect
                    .iter()
                    .map(|(issuer, serial)| json!({"issuer": issuer, "serial": serial}))
                    .collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Format::Human => {
            let mut o = String::new();
            let _ = writeln!(o, "issuer      {}", crl.issuer);
            let _ = writeln!(o, "thisUpdate  {}", rfc3339(crl.this_update));
            let next = crl.next_update.map_or("(none)".to_string(), rfc3339);
            let _ = writeln!(
                o,
                "nextUpdate  {next}{}",
                if stale {
                    "  (past: fetch a fresh CRL)"
                } else {
                    ""
                }
            );
            let _ = writeln!(
                o,
                "CRL number  {}",
                crl.number.as_deref().unwrap_or("(none)")
            );
            let _ = writeln!(o, "revoked     {} serials", revoked.len());
            for s in &revoked {
                let _ = writeln!(o, "  {s}");
            }
            if !indirect.is_empty() {
                let _ = writeln!(
                    o,
                    "indirect    {} serials of other issuers (certificateIssuer)",
                    indirect.len()
                );
                for (issuer, s) in &indirect {
                    let _ = writeln!(o, "  {s}  {issuer}");
                }
            }
            print!("{o}");
        }
    }
    Ok(EXIT_OK)
}
