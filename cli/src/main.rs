//! `certgate`: compile mTLS policies into tables, check them in CI, explain decisions, and
//! emit the Envoy and Istio configuration that carries a table to the filter.
//!
//! This file only parses arguments and dispatches; each subcommand lives in `cli/<name>.rs`
//! and returns its exit code (0 ok, 1 policy findings, 2 usage or I/O).

mod cli;

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
    Compile(cli::compile::Args),
    Keygen(cli::keygen::Args),
    Check(cli::check::Args),
    Inspect(cli::inspect::Args),
    Eval(cli::eval::Args),
    Cert(cli::cert::Args),
    Crl(cli::crl::Args),
    // Boxed: its flags (the feed's trust options among them) make it the largest.
    Emit(Box<cli::emit::Args>),
    Package(cli::package::Args),
    Serve(cli::serve::Args),
    Test(cli::test::Args),
    Diff(cli::diff::Args),
    Report(cli::report::Args),
}

fn main() -> ExitCode {
    // clap exits with 2 on usage errors and 0 for --help/--version.
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Compile(a) => cli::compile::run(a),
        Command::Keygen(a) => cli::keygen::run(a),
        Command::Check(a) => cli::check::run(a),
        Command::Inspect(a) => cli::inspect::run(a),
        Command::Eval(a) => cli::eval::run(a),
        Command::Cert(a) => cli::cert::run(a),
        Command::Crl(a) => cli::crl::run(a),
        Command::Emit(a) => cli::emit::run(*a),
        Command::Package(a) => cli::package::run(a),
        Command::Serve(a) => cli::serve::run(a),
        Command::Test(a) => cli::test::run(a),
        Command::Diff(a) => cli::diff::run(a),
        Command::Report(a) => cli::report::run(a),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // One line: the context chain joined, so scripts can grep it.
            eprintln!("error: {}", cli::one_line(&e));
            ExitCode::from(cli::EXIT_USAGE)
        }
    }
}
