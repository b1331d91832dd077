//! The end-to-end harness: a throwaway PKI, in-process backends, TLS clients, the
//! `certgate` CLI and a real Envoy, wired so a test reads like the matrix in the
//! e2e issue. Used by `tests/tests.rs` and by the `demo` binary (`make demo`).
//!
//! Test-only code: it returns `anyhow` errors and never ships.

pub mod backend;
pub mod certgate;
pub mod client;
pub mod ecs;
pub mod envoy;
pub mod feed;
pub mod matrix;
pub mod pki;
pub mod run;
pub mod scenario;
pub mod tools;

pub use backend::{Backend, BackendKind};
pub use certgate::{Certgate, EmitEnvoy};
pub use client::{End, Exchange, TlsPin, Want};
pub use envoy::{Envoy, ListenerKind, ListenerSpec};
pub use matrix::{Case, Client, Expect, Target, Wire};
pub use pki::{Leaf, Pki};
pub use run::Run;
pub use scenario::{Listener, Scenario};
pub use tools::Tools;
