//! `certgate report`: scores a policy set against the hardening checklist
//! (docs/hardening.md), as markdown, JSON or SARIF.

use std::path::PathBuf;

use certgate_compiler::ci::compliance::{self, Level, Status};

use super::{DiagFormat, EXIT_FINDINGS, EXIT_OK};

/// Output of `certgate report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// Markdown: the score and a row per check.
    Markdown,
    /// The versioned JSON report.
    Json,
    /// SARIF 2.1.0: the failed checks, for code-scanning annotations.
    Sarif,
}

/// When `certgate report` exits 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FailOn {
    /// A required check fails.
    Required,
    /// Any check fails.
    Recommended,
}

/// Score policies against the hardening checklist.
#[derive(Debug, clap::Args)]
#[command(
    about = "Score policies against the hardening checklist (docs/hardening.md)",
    after_help = "The inputs compile into one table, as with `certgate compile`; report each table separately.\n\n\
Exit codes: 0 report printed (and no failed check under --fail-on), 1 --fail-on matched or the \
policies do not compile, 2 usage or I/O error.\n\n\
Examples:\n  certgate report policies/zero-trust.yaml\n  certgate report --fail-on required --format sarif policies/zero-trust.yaml > report.sarif"
)]
pub struct Args {
    /// Policy files, or directories of `*.yaml`/`*.yml` files
    #[arg(required = true, value_name = "FILE_OR_DIR")]
    pub inputs: Vec<PathBuf>,
    /// Output on stdout
    #[arg(long, value_enum, default_value_t = ReportFormat::Markdown)]
    pub format: ReportFormat,
    /// Exit 1 when a required check fails (`required`) or any check fails (`recommended`)
    #[arg(long, value_enum, value_name = "LEVEL")]
    pub fail_on: Option<FailOn>,
    /// Judge CRL freshness at this time, in seconds since the Unix epoch (default: now)
    #[arg(long, value_name = "EPOCH_SECONDS")]
    pub now: Option<i64>,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<u8> {
    let now = args.now.unwrap_or_else(super::now);
    let inputs = super::read_inputs(&args.inputs)?;
    let c = certgate_compiler::compile(
        inputs,
        &super::FsLoader,
        &certgate_compiler::Options { now },
    );
    if c.table.is_none() {
        super::report(&c, DiagFormat::Human, false);
        return Ok(EXIT_FINDINGS);
    }
    let r = compliance::report(&c, now);
    match args.format {
        ReportFormat::Markdown => print!("{}", r.to_markdown()),
        ReportFormat::Json => println!("{}", r.to_json()),
        ReportFormat::Sarif => println!("{}", r.to_sarif()),
    }
    let failed = |level: Option<Level>| {
        r.checks
            .iter()
            .any(|c| c.status == Status::Fail && level.is_none_or(|l| c.level == l))
    };
    let fail = match args.fail_on {
        None => false,
        Some(FailOn::Required) => failed(Some(Level::Required)),
        Some(FailOn::Recommended) => failed(None),
    };
    Ok(if fail { EXIT_FINDINGS } else { EXIT_OK })
}
