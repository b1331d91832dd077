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
Exit codes: 0 written, 1 policy findings (nothing written), 2 usage or I/O error.\n\n\
Examples:\n  certgate compile deploy/payments/ -o payments.cgt\n  certgate compile base.yaml payments.yaml -o payments.cgt --deny-warnings"
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
    /// Diagnostics format (see `certgate check --help`)
    #[arg(long, value_enum, default_value_t = DiagFormat::Human)]
    pub format: DiagFormat,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<u8> {
    let c = super::compile_paths(&args.inputs)?;
    let failed = c.failed(args.deny_warnings);
    let bytes = match (&c.bytes, failed) {
        (Some(b), false) => b,
        _ => {
            super::report(&c, args.format, args.deny_warnings);
            return Ok(EXIT_FINDINGS);
        }
    };
    write_atomically(&args.output, bytes)?;
    super::report(&c, args.format, args.deny_warnings);
    if args.format == DiagFormat::Human {
        if let Some(t) = &c.table {
            eprintln!(
                "wrote {} ({} bytes, {} rules, digest sha256:{})",
                args.output.display(),
                bytes.len(),
                t.rules.len(),
                ruleset::cert::hex_lower(&t.policy_digest)
            );
        }
    }
    Ok(EXIT_OK)
}

/// Writes `bytes` to a temporary file in `out`'s directory, syncs it and renames it over
/// `out`: readers (a config pusher, Envoy) never see a partial table.
fn write_atomically(out: &Path, bytes: &[u8]) -> anyhow::Result<()> {
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
