//! `certgate check`: diagnostics only, for editors and CI.

use std::path::PathBuf;

use super::{DiagFormat, EXIT_FINDINGS, EXIT_OK};

/// Check policies without writing a table.
#[derive(Debug, clap::Args)]
#[command(
    about = "Check policies and report every error and warning",
    after_help = "CRLs named by URL (`revocation.crlUrls`) are fetched and verified as `certgate compile` does (see its --help for the --crl-* flags).\n\n\
Exit codes: 0 no errors (and no warnings with --deny-warnings), 1 findings, 2 usage or I/O error.\n\n\
Examples:\n  certgate check deploy/payments/\n  certgate check --deny-warnings policies/zero-trust.yaml\n  certgate check --format json deploy/payments/ | jq '.diagnostics[].code'"
)]
pub struct Args {
    /// Policy files, or directories of `*.yaml`/`*.yml` files (`*.test.yaml` skipped)
    #[arg(required = true, value_name = "FILE_OR_DIR")]
    pub inputs: Vec<PathBuf>,
    /// Fail (exit 1) on warnings too, for CI
    #[arg(long)]
    pub deny_warnings: bool,
    #[command(flatten)]
    pub crl: super::crl_fetch::CrlArgs,
    /// `human`: diagnostics with source snippets on stderr; `json`: the versioned report on stdout; `sarif`: SARIF 2.1.0 on stdout
    #[arg(long, value_enum, default_value_t = DiagFormat::Human)]
    pub format: DiagFormat,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<u8> {
    let c = super::compile_paths_with(&args.inputs, &args.crl)?;
    super::report(&c, args.format, args.deny_warnings);
    Ok(if c.failed(args.deny_warnings) {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    })
}
