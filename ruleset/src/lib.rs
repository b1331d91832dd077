//! certgate's shared core: the compiled table (its model and its binary format), the
//! decision engine, and the one place that turns a certificate into [`Peer`] facts.
//!
//! The compiler, the proxy-wasm filter and the browser playground all decide through
//! [`Engine::evaluate`], so a decision explained in CI is the decision Envoy makes.
//!
//! ```text
//! Table --encode--> bytes --decode--> Table --Engine::new--> Engine --evaluate(Peer)--> Decision
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

pub mod baseline;
mod budget;
pub mod cert;
mod condition;
mod decision;
pub mod decode;
mod decode_error;
pub mod delta;
pub mod encode;
mod eval;
mod format;
mod model;
pub mod order;
mod pattern;
pub mod peer;
pub mod peer_builder;
pub mod revocation;
mod revocation_check;
pub mod signature;
mod siphash;
pub mod sni;
pub mod spiffe;

pub use budget::{decoded_cost, MAX_DECODED_BYTES};
pub use cert::name as dn;
pub use condition::Condition;
pub use decision::{Decision, Reason};
pub use decode::{decode, decode_owned};
pub use decode_error::DecodeError;
pub use encode::{encode, EncodeError};
pub use eval::Engine;
pub use format::{MAGIC, VERSION};
pub use model::{
    Action, AuditLog, Cidr, CidrError, Constraints, Curve, Inputs, KeyPolicy, Mode, PortRange,
    Rule, SigHash, Table, TlsVersion,
};
pub use pattern::{Pattern, Segment, ANY_SEGMENT};
pub use peer::{CertFacts, KeyInfo, Peer, PeerCert, RevocationKeys, SigInfo, Vouched};
pub use peer_builder::{PeerBuilder, PeerError};
pub use revocation::{OnStale, Revocation, Revoked, RevokedSerial};

/// Largest per-VM certificate cache the filter accepts (`certCacheSize`, in entries; a
/// parsed certificate costs about a kilobyte). Here because both the filter, which
/// refuses a larger configuration, and `certgate emit`, which must not print one, need it.
pub const MAX_CERT_CACHE_SIZE: usize = 65_536;
