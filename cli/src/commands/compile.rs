//! `certgate compile`: policies in, one table file out, atomically.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{DiagFormat, EXIT_FINDINGS, EXIT_OK};

/// Compile policies into a table.
#[derive(Debug, clap::Args)]
#[command(
    about = "Compile policies into a binary table (.cgt)",
    after_help = "The table is written to a temporary file next to OUT and renamed into place, so OUT is \
either the previous file or the complete new table; nothing is written when there is an error \
(or a warning with --deny-warnings).\n\n\
The table carries its issue time (now, in milliseconds; SOURCE_DATE_EPOCH or --issued-at-ms for \
reproducible builds) and an expiry: the earliest CRL nextUpdate, or the issue time plus \
`spec.revocation.maxAge`, whichever comes first. When OUT already holds a table of the same policies \
issued at or after that time, the new one is issued one millisecond after it, so a feed never sees \
two tables of one lineage with the same or a decreasing issue time. With --sign-key the table gets an \
Ed25519 signature trailer that filters verify against their pinned `feed.publicKeys`.\n\n\
CRLs named by URL (`revocation.crlUrls`) are fetched once each (at most --crl-max-bytes, within \
--crl-timeout-ms, no redirects; https trusts --crl-ca or the built-in Mozilla roots) and verified \
against `crlIssuers` like CRL files; with --crl-cache DIR the requests are conditional and a URL \
that cannot be fetched falls back to its cached copy (noted on stderr); otherwise it is an error. \
`certgate serve --policies` refreshes them continuously.\n\n\
Exit codes: 0 written, 1 policy findings (nothing written), 2 usage or I/O error.\n\n\
Examples:\n  certgate compile deploy/payments/ -o payments.cgt\n  certgate compile base.yaml payments.yaml -o payments.cgt --deny-warnings\n  \
certgate compile deploy/payments/ -o payments.cgt --sign-key signing.key"
)]
pub struct Args {
    /// Policy files, or directories of `*.yaml`/`*.yml` files (`*.test.yaml` skipped)
    #[arg(required = true, value_name = "FILE_OR_DIR")]
    pub inputs: Vec<PathBuf>,
    /// Where to write the table
    #[arg(short, long, value_name = "OUT.cgt")]
    pub output: PathBuf,
    /// Treat warnings as errors
    #[arg(long)]
    pub deny_warnings: bool,
    /// Sign the table with this Ed25519 private key (PKCS#8 PEM, from `certgate keygen`)
    #[arg(long, value_name = "KEY")]
    pub sign_key: Option<PathBuf>,
    /// Issue time in Unix milliseconds (default: SOURCE_DATE_EPOCH in seconds, else now)
    #[arg(long, value_name = "MS")]
    pub issued_at_ms: Option<u64>,
    #[command(flatten)]
    pub crl: super::crl_fetch::CrlArgs,
    /// Diagnostics format (see `certgate check --help`)
    #[arg(long, value_enum, default_value_t = DiagFormat::Human)]
    pub format: DiagFormat,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<u8> {
    // The key is read first: a missing key must not cost a compilation.
    let key = args
        .sign_key
        .as_deref()
        .map(super::keygen::read_private)
        .transpose()?;
    let mut c = super::compile_paths_with(&args.inputs, &args.crl)?;
    if let Some(names) = c.table.as_ref().map(|t| t.policy_names.clone()) {
        let issued = issue_time(args.issued_at_ms, &args.output, &names)?;
        c.stamp(issued)
            .map_err(|e| anyhow::anyhow!("the table cannot be encoded: {e}"))?;
    }
    let failed = c.failed(args.deny_warnings);
    let bytes = match (&c.bytes, failed) {
        (Some(b), false) => b,
        _ => {
            super::report(&c, args.format, args.deny_warnings);
            return Ok(EXIT_FINDINGS);
        }
    };
    let mut bytes = bytes.clone();
    if let Some(kp) = &key {
        super::keygen::sign(&mut bytes, kp);
    }
    let bytes = &bytes;
    write_atomically(&args.output, bytes)?;
    super::report(&c, args.format, args.deny_warnings);
    if args.format == DiagFormat::Human {
        if let Some(t) = &c.table {
            eprintln!(
                "wrote {} ({} bytes, {} rules, digest sha256:{}, issued at {} ms, {})",
                args.output.display(),
                bytes.len(),
                t.rules.len(),
                ruleset::cert::hex_lower(&t.policy_digest),
                t.issued_at_ms,
                key.as_ref().map_or("unsigned".to_string(), |kp| format!(
                    "signed by {}",
                    ruleset::signature::key_id(&kp.pk)
                )),
            );
        }
    }
    Ok(EXIT_OK)
}

/// The issue time: `--issued-at-ms`, else SOURCE_DATE_EPOCH (seconds), else now; then one
/// millisecond after the table already at `out` if that one has the same policies and is
/// not older (monotonic per lineage, even across a clock stepped back).
pub(crate) fn issue_time(flag: Option<u64>, out: &Path, names: &[String]) -> anyhow::Result<u64> {
    let base = match flag {
        Some(ms) => ms,
        None => match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(s) => s
                .trim()
                .parse::<u64>()
                .map(|secs| secs.saturating_mul(1000))
                .map_err(|_| {
                    anyhow::anyhow!("SOURCE_DATE_EPOCH `{s}` is not a number of seconds")
                })?,
            Err(_) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        },
    };
    let previous = std::fs::read(out)
        .ok()
        .and_then(|b| ruleset::decode(&b).ok())
        .filter(|t| t.policy_names == names)
        .map(|t| t.issued_at_ms);
    Ok(match previous {
        Some(p) if p >= base => p.saturating_add(1),
        _ => base,
    })
}

/// Writes `bytes` to a temporary file in `out`'s directory, syncs it and renames it over
/// `out`: readers (a config pusher, Envoy) never see a partial table.
pub(crate) fn write_atomically(out: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .with_context(|| format!("`{}` is not a file path", out.display()))?;
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, out)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write `{}`", out.display()));
    }
    Ok(())
}
