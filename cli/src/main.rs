//! `certgate`: compile mTLS policies into tables, check them in CI, explain decisions, and
//! emit the Envoy and Istio configuration that carries a table to the filter.
//!
//! This file only parses arguments and dispatches; each subcommand lives in
//! `commands/<name>.rs` and returns its exit code (0 ok, 1 policy findings, 2 usage or I/O).
//! The policy language itself is the `certgate-compiler` library; `oci` packages the filter.

mod commands;
mod oci;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Compile and inspect certgate mTLS policies.
#[derive(Debug, Parser)]
#[command(
    name = "certgate",
    version,
    about = "Compile, check and explain certgate mTLS certificate policies",
    long_about = "certgate turns MeshTLSPolicy YAML into a compact binary table that the certgate \
Envoy filter enforces, and explains what a table decides for a certificate.",
    after_help = "Exit codes: 0 ok, 1 policy findings (errors, or warnings with --deny-warnings), \
2 usage or I/O error.\n\nExamples:\n  certgate check policies/zero-trust.yaml\n  certgate compile policies/zero-trust.yaml -o table.cgt\n  \
certgate eval --table table.cgt --cert client.pem --tls-version 1.3\n  certgate emit istio --table table.cgt --name certgate --url oci://registry.example/certgate:1"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Compile(commands::compile::Args),
    Keygen(commands::keygen::Args),
    Check(commands::check::Args),
    Inspect(commands::inspect::Args),
    Eval(commands::eval::Args),
    Cert(commands::cert::Args),
    Crl(commands::crl::Args),
    // Boxed: its flags (the feed's trust options among them) make it the largest.
    Emit(Box<commands::emit::Args>),
    Package(commands::package::Args),
    Serve(commands::serve::Args),
    Drill(commands::drill::Args),
    Test(commands::test::Args),
    Diff(commands::diff::Args),
    Report(commands::report::Args),
}

fn main() -> ExitCode {
    // clap exits with 2 on usage errors and 0 for --help/--version.
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Compile(a) => commands::compile::run(a),
        Command::Keygen(a) => commands::keygen::run(a),
        Command::Check(a) => commands::check::run(a),
        Command::Inspect(a) => commands::inspect::run(a),
        Command::Eval(a) => commands::eval::run(a),
        Command::Cert(a) => commands::cert::run(a),
        Command::Crl(a) => commands::crl::run(a),
        Command::Emit(a) => commands::emit::run(*a),
        Command::Package(a) => commands::package::run(a),
        Command::Serve(a) => commands::serve::run(a),
        Command::Drill(a) => commands::drill::run(a),
        Command::Test(a) => commands::test::run(a),
        Command::Diff(a) => commands::diff::run(a),
        Command::Report(a) => commands::report::run(a),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // One line: the context chain joined, so scripts can grep it.
            eprintln!("error: {}", commands::one_line(&e));
            ExitCode::from(commands::EXIT_USAGE)
        }
    }
}
