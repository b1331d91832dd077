//! Integration tests of the ruleset crate: one binary, one module per concern
//! (the modules live in `tests/tests/`, where cargo does not look for test targets).

#[path = "tests/certs.rs"]
mod certs;
#[path = "tests/codec.rs"]
mod codec;
#[path = "tests/delta.rs"]
mod delta;
#[path = "tests/docs.rs"]
mod docs;
#[path = "tests/eval.rs"]
mod eval;
#[path = "tests/props.rs"]
mod props;
#[path = "tests/support.rs"]
mod support;
