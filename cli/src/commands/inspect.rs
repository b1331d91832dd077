//! `certgate inspect`: what a table file holds.

use std::path::PathBuf;

use super::{Format, EXIT_OK};

/// Show a table's contents.
#[derive(Debug, clap::Args)]
#[command(
    about = "Show what a compiled table holds",
    after_help = "The table is decoded with the same bounds-checked decoder the filter uses; a corrupt \
or truncated file is an error (exit 2).\n\n\
Examples:\n  certgate inspect table.cgt\n  certgate inspect table.cgt --format json | jq '.rules[].name'"
)]
pub struct Args {
    /// The table file
    #[arg(value_name = "TABLE.cgt")]
    pub table: PathBuf,
    /// `human` text or versioned `json`
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<u8> {
    let (bytes, table) = super::read_table(&args.table)?;
    match args.format {
        Format::Human => print!(
            "{}",
            certgate_compiler::inspect::to_text(&table, bytes.len())
        ),
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&certgate_compiler::inspect::to_json(
                &table,
                bytes.len()
            ))?
        ),
    }
    Ok(EXIT_OK)
}
