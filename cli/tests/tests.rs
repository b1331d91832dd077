//! The `certgate` binary's integration tests, one binary: golden diagnostics, the example
//! policies, the CLI contract, packaging, the policy-CI commands and the table feed. They run
//! the built binary on the compiler's test data (compiler/tests: the golden inputs in `ui/`,
//! certificates in `fixtures/`, the policy-CI inputs in `policy-ci/`).

#[path = "suite/cli.rs"]
mod cli;
#[path = "suite/common.rs"]
mod common;
#[path = "suite/crl_urls.rs"]
mod crl_urls;
#[path = "suite/diagnostics.rs"]
mod diagnostics;
#[path = "suite/examples.rs"]
mod examples;
#[path = "suite/package.rs"]
mod package;
#[path = "suite/policy_ci.rs"]
mod policy_ci;
#[path = "suite/serve.rs"]
mod serve;
