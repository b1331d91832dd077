//! The table being served: its bytes and what the endpoints say about it. Below both
//! the directory scan that picks it and the metrics that describe it.

use bytes::Bytes;

use crate::delta::Deltas;

/// The table being served, shared with every connection.
#[derive(Debug, Clone)]
pub struct Served {
    /// The table's bytes as read (a cheap, reference-counted handle).
    pub bytes: Bytes,
    /// The strong ETag: the quoted lowercase hex SHA-256 of `bytes`.
    pub etag: String,
    /// The table's issue time, Unix milliseconds.
    pub issued_at_ms: u64,
    /// When the table's data stops being current, Unix milliseconds; `None`: never.
    pub expires_at_ms: Option<u64>,
    /// The tables served before it, from which a poller may get a delta to it.
    pub deltas: Deltas,
}
