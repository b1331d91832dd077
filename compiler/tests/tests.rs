//! The compiler library's integration tests, one binary: the property test of the compiled
//! table against a naive interpreter of the policy. The tests that run the `certgate` binary
//! (golden diagnostics, the example policies, the CLI contract) live with it, in cli/tests.

#[path = "suite/prop.rs"]
mod prop;
