//! The compiler's integration tests, one binary: golden diagnostics, the example policies,
//! the CLI contract, and the property test against a naive interpreter.

#[path = "suite/cli.rs"]
mod cli;
#[path = "suite/common.rs"]
mod common;
#[path = "suite/diagnostics.rs"]
mod diagnostics;
#[path = "suite/examples.rs"]
mod examples;
#[path = "suite/package.rs"]
mod package;
#[path = "suite/policy_ci.rs"]
mod policy_ci;
#[path = "suite/prop.rs"]
mod prop;
#[path = "suite/serve.rs"]
mod serve;
