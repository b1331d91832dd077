//! Certificate revocation lists: PEM or DER X.509 CRLs read into the facts a policy needs
//! (issuer, validity, revoked serials). `certgate crl` prints the same facts.

use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

/// What a CRL file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlInfo {
    /// Issuer distinguished name, for display.
    pub issuer: String,
    /// [`ruleset::dn::issuer_id_of`] of the issuer.
    pub issuer_id: u64,
    /// thisUpdate, seconds since the Unix epoch.
    pub this_update: i64,
    /// nextUpdate, seconds since the Unix epoch, if present.
    pub next_update: Option<i64>,
    /// The CRL number extension, in decimal, if present.
    pub number: Option<String>,
    /// Revoked serial numbers: big-endian magnitudes without leading zero bytes, in file order.
    pub revoked: Vec<Vec<u8>>,
}

/// Why a CRL could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrlError {
    /// The PEM armour is broken.
    #[error("not a valid PEM file: {0}")]
    Pem(String),
    /// The PEM block is not a CRL.
    #[error("the PEM block is `{0}`, not `X509 CRL`")]
    WrongPemLabel(String),
    /// The DER is not an X.509 CRL (the parser's detail is kept for debugging, not shown).
    #[error("not a valid X.509 CRL (PEM `X509 CRL` or DER)")]
    Der(String),
    /// Bytes follow the CRL.
    #[error("{0} unexpected bytes after the CRL")]
    TrailingBytes(usize),
}

/// Reads a PEM (`-----BEGIN X509 CRL-----`) or DER CRL.
pub fn parse(bytes: &[u8]) -> Result<CrlInfo, CrlError> {
    if looks_like_pem(bytes) {
        let (_, pem) = x509_parser::pem::parse_x509_pem(bytes)
            .map_err(|e| CrlError::Pem(lowercase(&e.to_string())))?;
        if pem.label != "X509 CRL" {
            return Err(CrlError::WrongPemLabel(pem.label));
        }
        parse_der(&pem.contents)
    } else {
        parse_der(bytes)
    }
}

fn looks_like_pem(bytes: &[u8]) -> bool {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    bytes
        .get(start..)
        .is_some_and(|rest| rest.starts_with(b"-----BEGIN"))
}

fn lowercase(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

fn parse_der(der: &[u8]) -> Result<CrlInfo, CrlError> {
    let (rest, crl) = CertificateRevocationList::from_der(der)
        .map_err(|e| CrlError::Der(lowercase(&e.to_string())))?;
    if !rest.is_empty() {
        return Err(CrlError::TrailingBytes(rest.len()));
    }
    let revoked = crl
        .iter_revoked_certificates()
        .map(|r| strip_zeros(r.raw_serial()))
        .collect();
    Ok(CrlInfo {
        issuer: crl.issuer().to_string(),
        issuer_id: ruleset::dn::issuer_id_of(crl.issuer()),
        this_update: crl.last_update().timestamp(),
        next_update: crl.next_update().map(|t| t.timestamp()),
        number: crl.crl_number().map(|n| n.to_string()),
        revoked,
    })
}

fn strip_zeros(serial: &[u8]) -> Vec<u8> {
    let first = serial.iter().position(|b| *b != 0).unwrap_or(serial.len());
    serial.get(first..).unwrap_or_default().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse(b"").is_err());
        assert!(parse(b"hello").is_err());
        assert!(parse(b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n").is_err());
        assert!(matches!(
            parse(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            Err(CrlError::WrongPemLabel(_))
        ));
    }

    #[test]
    fn serials_lose_leading_zeros() {
        assert_eq!(strip_zeros(&[0, 0x80, 1]), vec![0x80, 1]);
        assert_eq!(strip_zeros(&[0]), Vec::<u8>::new());
    }
}
