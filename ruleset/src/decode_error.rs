//! Why bytes are not a table: the one error of the decoder, of the signature trailer's
//! checks and of the decoded-memory budget. Its own module, below all three, so that
//! the decoder can call the other two without either of them importing the decoder.

use std::fmt;

use crate::format::{MAX_TABLE_LEN, VERSION};

/// Why bytes are not a valid table. Hosts must treat any of these as "no table":
/// the filter refuses its configuration, the CLI exits non-zero.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ends before `what` could be read.
    Truncated {
        /// The field being read.
        what: &'static str,
    },
    /// The input does not start with the table magic.
    BadMagic,
    /// A format version this build does not read.
    UnsupportedVersion(u16),
    /// Reserved flag bits are set.
    UnknownFlags(u16),
    /// The header's body length disagrees with the input length.
    LengthMismatch {
        /// Length announced by the header.
        declared: u64,
        /// Length actually present.
        actual: u64,
    },
    /// The body's CRC-32 does not match the header.
    Checksum {
        /// Checksum in the header.
        expected: u32,
        /// Checksum of the body.
        actual: u32,
    },
    /// The input is larger than the format allows.
    TooLarge,
    /// A section tag other than the one expected at this position.
    UnexpectedSection {
        /// Expected tag.
        expected: u8,
        /// Tag found.
        found: u8,
    },
    /// A section's payload is longer than what its fields use.
    TrailingBytes {
        /// The section with unused bytes.
        section: &'static str,
    },
    /// A count or length exceeds a format limit.
    Limit {
        /// What exceeded the limit.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// A field holds a value outside its domain.
    BadValue {
        /// The field.
        what: &'static str,
    },
    /// A string is not UTF-8.
    BadUtf8 {
        /// The field.
        what: &'static str,
    },
    /// A principal pattern or trust domain does not parse.
    BadPattern(String),
    /// A list that must be strictly ascending is not.
    Unsorted {
        /// The list.
        what: &'static str,
    },
    /// Bytes after the table that are not exactly one signature trailer.
    BadTrailer,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { what } => {
                write!(f, "truncated table: input ends inside {what}")
            }
            DecodeError::BadMagic => write!(f, "not a certgate table (bad magic)"),
            DecodeError::UnsupportedVersion(v) => write!(
                f,
                "unsupported table format version {v} (this build reads version {VERSION})"
            ),
            DecodeError::UnknownFlags(x) => write!(f, "unknown header flags {x:#06x}"),
            DecodeError::LengthMismatch { declared, actual } => write!(
                f,
                "table length mismatch: header declares {declared} body bytes, {actual} present"
            ),
            DecodeError::Checksum { expected, actual } => write!(
                f,
                "table checksum mismatch: header {expected:08x}, body {actual:08x} (corrupt table)"
            ),
            DecodeError::TooLarge => write!(f, "table larger than {MAX_TABLE_LEN} bytes"),
            DecodeError::UnexpectedSection { expected, found } => {
                write!(f, "expected section {expected}, found section {found}")
            }
            DecodeError::TrailingBytes { section } => {
                write!(f, "unexpected bytes at the end of the {section}")
            }
            DecodeError::Limit { what, limit } => write!(f, "{what} exceeds the limit of {limit}"),
            DecodeError::BadValue { what } => write!(f, "invalid value for {what}"),
            DecodeError::BadUtf8 { what } => write!(f, "{what} is not valid UTF-8"),
            DecodeError::BadPattern(e) => write!(f, "invalid principal pattern: {e}"),
            DecodeError::Unsorted { what } => write!(f, "{what} are not strictly ascending"),
            DecodeError::BadTrailer => write!(
                f,
                "unexpected bytes after the table (not one well-formed signature trailer)"
            ),
        }
    }
}

impl std::error::Error for DecodeError {}
