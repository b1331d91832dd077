//! Why certificate bytes could not be read: the one error of every reading entry point
//! ([`super::parse_der`], [`super::pem_blocks`], ...), below the modules that raise it.

use std::fmt;

use super::serial::MAX_SERIAL_LEN;

/// Why certificate bytes could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertError {
    /// The bytes are not a DER certificate.
    Der(String),
    /// Bytes follow the DER certificate.
    TrailingBytes,
    /// A PEM block is malformed.
    Pem(String),
    /// PEM input without a `CERTIFICATE` block.
    NoCertificate,
    /// The subject alternative name extension is malformed or repeated.
    BadSan(String),
    /// The serial number is longer than [`MAX_SERIAL_LEN`].
    SerialTooLong,
    /// The authority or subject key identifier extension is malformed or repeated.
    BadKeyId(String),
}

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertError::Der(e) => write!(f, "not a valid DER certificate: {e}"),
            CertError::TrailingBytes => write!(f, "unexpected bytes after the certificate"),
            CertError::Pem(e) => write!(f, "malformed PEM: {e}"),
            CertError::NoCertificate => write!(f, "no `CERTIFICATE` block in the PEM input"),
            CertError::BadSan(e) => {
                write!(f, "malformed subject alternative name extension: {e}")
            }
            CertError::SerialTooLong => {
                write!(f, "the serial number is longer than {MAX_SERIAL_LEN} bytes")
            }
            CertError::BadKeyId(e) => write!(f, "malformed key identifier extension: {e}"),
        }
    }
}

impl std::error::Error for CertError {}
