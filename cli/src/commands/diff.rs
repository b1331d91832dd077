//! `certgate diff`: what changes between two policy versions, for a pull-request comment
//! (markdown) or a pipeline (JSON, and an exit code when access widens).

use std::path::PathBuf;

use anyhow::Context;
use certgate_compiler::ci::diff::{self, RevocationEntries, Side};

use super::{DiagFormat, EXIT_FINDINGS, EXIT_OK};

/// Output of `certgate diff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DiffFormat {
    /// Markdown, for a pull-request comment or a terminal.
    Markdown,
    /// The versioned JSON report.
    Json,
}

/// When `certgate diff` exits 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FailOn {
    /// Someone gains access, a setting loosens, or a revocation is removed.
    Widen,
    /// Anything the policy decides changes.
    Change,
}

/// Compare two policy versions.
#[derive(Debug, clap::Args)]
#[command(
    about = "Show who gains or loses access between two policy versions, and what loosens or tightens",
    after_help = "OLD and NEW are each a policy file, a directory of policies, or a compiled table (.cgt). \
Access is compared by evaluating both versions on probe peers (every principal pattern, port interval, \
server name and source block either version names); settings (mode, default action, TLS version, keys, \
lifetime, trust domains, signature hashes, audit log) and revocations are compared as values. Tables hold \
revocations as keyed hashes: diff policies to see which entries changed.\n\n\
Exit codes: 0 done (and no widening/change under --fail-on), 1 --fail-on matched, or a side does not \
compile, 2 usage or I/O error.\n\n\
Examples:\n  certgate diff base/policies/zero-trust.yaml policies/zero-trust.yaml\n  \
certgate diff --fail-on widen old.cgt new.cgt\n  certgate diff --format json base/policies/ policies/ | jq .widened"
)]
pub struct Args {
    /// The old version: policy file, directory, or table
    #[arg(value_name = "OLD")]
    pub old: PathBuf,
    /// The new version: policy file, directory, or table
    #[arg(value_name = "NEW")]
    pub new: PathBuf,
    /// Output on stdout
    #[arg(long, value_enum, default_value_t = DiffFormat::Markdown)]
    pub format: DiffFormat,
    /// Exit 1 when access widens (`widen`) or anything changes (`change`)
    #[arg(long, value_enum, value_name = "WHEN")]
    pub fail_on: Option<FailOn>,
}

/// A loaded side: the table and, for policies, the revocation entries.
type Loaded = Option<(ruleset::Table, Option<RevocationEntries>)>;

fn load(path: &PathBuf) -> anyhow::Result<Loaded> {
    if path.is_file() {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read `{}`", path.display()))?;
        if bytes.starts_with(&ruleset::MAGIC) {
            let (_, t) = super::read_table(path)?;
            return Ok(Some((t, None)));
        }
    }
    let c = super::compile_paths(std::slice::from_ref(path))?;
    match &c.table {
        Some(t) => {
            let entries =
                RevocationEntries::of(&c.policies, |f| c.inputs.get(f).map(|i| i.text.as_str()));
            Ok(Some((t.clone(), Some(entries))))
        }
        None => {
            super::report(&c, DiagFormat::Human, false);
            eprintln!(
                "error: `{}` does not compile; `certgate check` shows why",
                path.display()
            );
            Ok(None)
        }
    }
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<u8> {
    let (Some(old), Some(new)) = (load(&args.old)?, load(&args.new)?) else {
        return Ok(EXIT_FINDINGS);
    };
    let d = diff::diff(
        &Side {
            label: args.old.display().to_string(),
            table: &old.0,
            entries: old.1,
        },
        &Side {
            label: args.new.display().to_string(),
            table: &new.0,
            entries: new.1,
        },
    );
    match args.format {
        DiffFormat::Markdown => print!("{}", d.to_markdown()),
        DiffFormat::Json => println!("{}", d.to_json()),
    }
    let fail = match args.fail_on {
        None => false,
        Some(FailOn::Widen) => d.widened,
        Some(FailOn::Change) => d.widened || d.narrowed || d.revocation.changed,
    };
    Ok(if fail { EXIT_FINDINGS } else { EXIT_OK })
}
