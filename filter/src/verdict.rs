//! What a decision tells a front end to do. Made by the decision pipeline
//! (`decide.rs`) and remembered per HTTP connection (`connections.rs`).

/// What the front end must do, and the id it may show to a refused client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Let the connection (request) through.
    pub admit: bool,
    /// Unique decision id (also in the audit record and the warn log line); empty for
    /// an admitted connection without a record, where nothing would show it.
    pub decision_id: String,
    /// The audit record, when `audit.log` asked for one.
    pub record: Option<String>,
    /// HTTP: a newer table denies a connection an older one admitted; close it.
    pub close: bool,
    /// Refused because the revocation data is stale: true of this moment, not of the
    /// connection, so the HTTP front end must not remember it (a recovered feed, which
    /// a `304` confirms without a new table generation, must let the next request in).
    pub stale: bool,
}
