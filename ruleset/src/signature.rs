//! The table's optional Ed25519 signature trailer: what is signed, how a trailer is found,
//! and its verification against pinned public keys. The filter verifies a fed table here
//! before it decodes anything else; the compiler signs (it holds the private key, which
//! nothing in this crate ever sees). Layout and reasoning: `ruleset/FORMAT.md`.

use std::fmt;

use crate::decode_error::DecodeError;
use crate::format::{HEADER_LEN, MAGIC, VERSION};

/// First four bytes of the signature trailer.
pub const TRAILER_MAGIC: [u8; 4] = *b"CGS1";
/// Trailer size: magic, Ed25519 public key, Ed25519 signature.
pub const TRAILER_LEN: usize = 4 + 32 + 64;
/// Domain separation: the signed message starts with this, so a certgate table
/// signature can never be replayed as a signature over anything else made with the
/// same key (and the other way round).
pub const CONTEXT: &[u8] = b"certgate-table-signature-v1\0";

/// A signature trailer as decoded: who claims to have signed, and the signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    /// The signer's Ed25519 public key (also its key id: pinned keys are compared whole).
    pub public_key: [u8; 32],
    /// The Ed25519 signature over [`message`] of the table bytes.
    pub signature: [u8; 64],
}

/// Why a table's signature is not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignatureError {
    /// The bytes do not have the table's shape (header, body, at most one trailer).
    Malformed(DecodeError),
    /// The table has no signature trailer.
    Unsigned,
    /// The trailer names a key that is not pinned.
    UnknownKey([u8; 32]),
    /// The signature does not verify under the (pinned) key it names.
    BadSignature([u8; 32]),
}

impl fmt::Display for SignatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignatureError::Malformed(e) => write!(f, "{e}"),
            SignatureError::Unsigned => write!(f, "the table is not signed"),
            // Hex, not `key_id`'s base64: the filter shows this, and base64 encoding
            // would be code in the module for one log line.
            SignatureError::UnknownKey(k) => write!(
                f,
                "the table is signed by key {} (hex), which is not pinned",
                crate::cert::hex::hex_lower(k)
            ),
            SignatureError::BadSignature(k) => write!(
                f,
                "the signature by key {} (hex) does not verify",
                crate::cert::hex::hex_lower(k)
            ),
        }
    }
}

impl std::error::Error for SignatureError {}

/// A public key as `feed.publicKeys` takes it: `ed25519:` and standard base64.
pub fn key_id(public_key: &[u8; 32]) -> String {
    use base64::Engine as _;
    format!(
        "ed25519:{}",
        base64::engine::general_purpose::STANDARD.encode(public_key)
    )
}

/// Parses a public key written as [`key_id`] writes it (the `ed25519:` prefix optional).
pub fn parse_key(text: &str) -> Option<[u8; 32]> {
    use base64::Engine as _;
    let b64 = text.trim();
    let b64 = b64.strip_prefix("ed25519:").unwrap_or(b64);
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    <[u8; 32]>::try_from(bytes.as_slice()).ok()
}

/// Splits `bytes` into the table (header and body) and its trailer, if any. Accepts
/// exactly: no trailer, or one well-formed trailer. Bytes that are not a table of this
/// version are returned whole, for the decoder to name what is wrong.
pub fn split(bytes: &[u8]) -> Result<(&[u8], Option<Trailer>), DecodeError> {
    let (Some(magic), Some(version), Some(len)) =
        (bytes.get(0..4), bytes.get(4..6), bytes.get(8..12))
    else {
        return Ok((bytes, None));
    };
    if magic != MAGIC || version != VERSION.to_le_bytes() {
        return Ok((bytes, None));
    }
    let mut body_len = [0u8; 4];
    body_len.copy_from_slice(len);
    let end = usize::try_from(u32::from_le_bytes(body_len))
        .ok()
        .and_then(|b| b.checked_add(HEADER_LEN))
        .ok_or(DecodeError::TooLarge)?;
    if bytes.len() <= end {
        // Complete, or short (the decoder reports the length mismatch).
        return Ok((bytes, None));
    }
    let (table, rest) = bytes.split_at(end);
    if rest.len() != TRAILER_LEN || rest.get(0..4) != Some(&TRAILER_MAGIC[..]) {
        return Err(DecodeError::BadTrailer);
    }
    let mut public_key = [0u8; 32];
    let mut signature = [0u8; 64];
    public_key.copy_from_slice(rest.get(4..36).ok_or(DecodeError::BadTrailer)?);
    signature.copy_from_slice(rest.get(36..TRAILER_LEN).ok_or(DecodeError::BadTrailer)?);
    Ok((
        table,
        Some(Trailer {
            public_key,
            signature,
        }),
    ))
}

/// The message an Ed25519 signature covers: [`CONTEXT`] then the table bytes (header and
/// body, without the trailer).
pub fn message(table: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(CONTEXT.len().saturating_add(table.len()));
    m.extend_from_slice(CONTEXT);
    m.extend_from_slice(table);
    m
}

/// Appends a trailer to unsigned table bytes (the compiler's half of signing).
pub fn append_trailer(table: &mut Vec<u8>, public_key: &[u8; 32], signature: &[u8; 64]) {
    table.reserve(TRAILER_LEN);
    table.extend_from_slice(&TRAILER_MAGIC);
    table.extend_from_slice(public_key);
    table.extend_from_slice(signature);
}

/// Checks that `bytes` carry a signature trailer whose key is one of `pinned` and whose
/// signature verifies; returns that key. Nothing but the header's length and the
/// trailer is read, so an unsigned or forged table is refused before its body is parsed.
pub fn verify(bytes: &[u8], pinned: &[[u8; 32]]) -> Result<[u8; 32], SignatureError> {
    let (table, trailer) = split(bytes).map_err(SignatureError::Malformed)?;
    let trailer = trailer.ok_or(SignatureError::Unsigned)?;
    let key = trailer.public_key;
    if !pinned.contains(&key) {
        return Err(SignatureError::UnknownKey(key));
    }
    let bad = |_| SignatureError::BadSignature(key);
    let pk = ed25519_compact::PublicKey::new(key);
    let sig = ed25519_compact::Signature::new(trailer.signature);
    // Incremental: the same message as `message(table)`, without copying the table.
    let mut state = pk.verify_incremental(&sig).map_err(bad)?;
    state.absorb(CONTEXT);
    state.absorb(table);
    state.verify().map_err(bad)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_round_trip_with_or_without_prefix() {
        let k = [7u8; 32];
        let id = key_id(&k);
        assert!(id.starts_with("ed25519:"));
        assert_eq!(parse_key(&id), Some(k));
        assert_eq!(parse_key(id.trim_start_matches("ed25519:")), Some(k));
        assert_eq!(parse_key("ed25519:AAAA"), None);
        assert_eq!(parse_key("not base64!"), None);
    }
}
