//! Deltas from the live feed (RFC 3229, `A-IM: certgate-delta`): a `226 IM Used` answer
//! carries what changed from the table in force to the newest table, and is applied to
//! the bytes of the table in force, which the decoded table keeps anyway (its revocation
//! keys are read in place there), so a delta costs no second copy of the base. The
//! result is the newest table byte for byte (its SHA-256 must be the answer's ETag) and
//! goes through the same install as a fetched table: signature, lineage, expiry,
//! rollback and loosening checks unchanged. Any failure is a refused delta: the caller
//! counts it and fetches the whole table next.

use ruleset::delta::{apply, digest_etag, result_of, IM_NAME};

use crate::host::Host;
use crate::shared::Shared;

/// The table a `226` answer to a poll that named `sent_etag` describes, rebuilt from the
/// table in force; at most `max_len` bytes. `Err`: why the delta is refused.
pub fn rebuild(
    host: &dyn Host,
    shared: &Shared,
    body_size: usize,
    sent_etag: &str,
    max_len: usize,
) -> Result<Vec<u8>, String> {
    let header = |name| {
        host.http_call_response_header(name)
            .and_then(|v| String::from_utf8(v).ok())
    };
    if !header("im").is_some_and(|im| im.trim().eq_ignore_ascii_case(IM_NAME)) {
        return Err(format!("226 IM Used without `im: {IM_NAME}`"));
    }
    if header("delta-base").is_some_and(|base| base.trim() != sent_etag) {
        return Err("226 IM Used for another base than the table in force".into());
    }
    let etag = header("etag").ok_or("226 IM Used without an ETag")?;
    if body_size > max_len {
        return Err(format!("delta of {body_size} bytes is too large"));
    }
    let delta = host.http_call_response_body(body_size).unwrap_or_default();
    // The announced result must be the ETag (checked against the bytes by `apply`).
    if result_of(&delta).map(|d| digest_etag(&d)).as_deref() != Some(etag.trim()) {
        return Err("the delta's result is not the table its ETag names".into());
    }
    let active = shared
        .table
        .active()
        .ok_or("no table in force to apply a delta to")?;
    let base = active
        .engine
        .table()
        .revocation
        .table_bytes()
        .ok_or("the table in force keeps no bytes to apply a delta to")?;
    apply(base, &delta, max_len).map_err(|e| e.reason().to_owned())
}
