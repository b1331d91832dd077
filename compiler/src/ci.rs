//! The CI tooling over compiled policies, one module per `certgate` subcommand it serves:
//! policy tests (`certgate test`), the semantic diff of two versions (`certgate diff`) and
//! the compliance report against the hardening checklist (`certgate report`). Each is pure:
//! the caller hands in compilations, loaders and the time.

pub mod compliance;
pub mod diff;
pub mod test;
