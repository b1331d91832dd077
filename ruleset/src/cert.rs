//! The one place that turns certificate bytes into [`CertFacts`]. The filter, the CLI
//! and the playground all call it, so they see the same serial, key and identity.

use std::fmt;

use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::public_key::PublicKey;
use x509_parser::signature_algorithm::SignatureAlgorithm;

use crate::{CertFacts, Curve, KeyInfo, PeerCert, SigHash, SigInfo};

/// Longest accepted serial number, in bytes (RFC 5280 allows 20; some CAs exceed it).
pub const MAX_SERIAL_LEN: usize = 64;

/// Why certificate bytes could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
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
        }
    }
}

impl std::error::Error for CertError {}

/// Why a serial number string could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerialError {
    /// Nothing but separators.
    Empty,
    /// A character that is not a hex digit or an accepted separator.
    BadChar(char),
    /// Longer than [`MAX_SERIAL_LEN`] bytes.
    TooLong,
}

impl fmt::Display for SerialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SerialError::Empty => write!(f, "the serial number is empty"),
            SerialError::BadChar(c) => write!(
                f,
                "`{}` is not a hex digit (write serials in hex, optionally with `:` separators)",
                c.escape_debug()
            ),
            SerialError::TooLong => {
                write!(f, "the serial number is longer than {MAX_SERIAL_LEN} bytes")
            }
        }
    }
}

impl std::error::Error for SerialError {}

/// Strips leading zero bytes: serials compare by magnitude, whatever DER padding or
/// policy spelling they came with.
pub fn normalize_serial(raw: &[u8]) -> Vec<u8> {
    strip_leading_zeros(raw).to_vec()
}

/// The serial's magnitude: `raw` without leading zero bytes.
pub fn strip_leading_zeros(raw: &[u8]) -> &[u8] {
    let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    raw.get(start..).unwrap_or_default()
}

/// Parses a hex serial: `4f:38:0a`, `4F380A`, `0x4f380a` or `4f 38 0a`.
pub fn parse_serial(s: &str) -> Result<Vec<u8>, SerialError> {
    let s = s.trim();
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    let mut nibbles = Vec::with_capacity(s.len());
    for c in s.chars() {
        match c {
            ':' | ' ' | '-' => {}
            c => nibbles.push(c.to_digit(16).ok_or(SerialError::BadChar(c))?),
        }
    }
    if nibbles.is_empty() {
        return Err(SerialError::Empty);
    }
    // An odd count means a leading zero nibble was left out.
    if nibbles.len() % 2 == 1 {
        nibbles.insert(0, 0);
    }
    let bytes: Vec<u8> = nibbles
        .chunks(2)
        .map(|pair| match pair {
            [hi, lo] => u8::try_from((hi << 4) | lo).unwrap_or(0),
            _ => 0,
        })
        .collect();
    let serial = normalize_serial(&bytes);
    if serial.len() > MAX_SERIAL_LEN {
        return Err(SerialError::TooLong);
    }
    Ok(serial)
}

/// Uppercase hex without separators (`00` for a zero serial), as in ECS
/// `tls.client.x509.serial_number`.
pub fn serial_hex(serial: &[u8]) -> String {
    if serial.is_empty() {
        return "00".to_owned();
    }
    serial.iter().map(|b| format!("{b:02X}")).collect()
}

/// Lowercase hex without separators.
pub fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 64 hex digits (separators `:` allowed) into a SHA-256 fingerprint.
pub fn parse_fingerprint(s: &str) -> Option<[u8; 32]> {
    let digits: Vec<u32> = s
        .trim()
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_digit(16))
        .collect::<Option<_>>()?;
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(digits.chunks(2)) {
        if let [hi, lo] = pair {
            *o = u8::try_from((hi << 4) | lo).ok()?;
        }
    }
    Some(out)
}

fn oid_name(oid: &str) -> Option<(&'static str, SigHash)> {
    Some(match oid {
        "1.2.840.113549.1.1.4" => ("md5WithRSAEncryption", SigHash::Md5),
        "1.2.840.113549.1.1.5" => ("sha1WithRSAEncryption", SigHash::Sha1),
        "1.2.840.113549.1.1.14" => ("sha224WithRSAEncryption", SigHash::Sha224),
        "1.2.840.113549.1.1.11" => ("sha256WithRSAEncryption", SigHash::Sha256),
        "1.2.840.113549.1.1.12" => ("sha384WithRSAEncryption", SigHash::Sha384),
        "1.2.840.113549.1.1.13" => ("sha512WithRSAEncryption", SigHash::Sha512),
        "1.2.840.10045.4.1" => ("ecdsa-with-SHA1", SigHash::Sha1),
        "1.2.840.10045.4.3.1" => ("ecdsa-with-SHA224", SigHash::Sha224),
        "1.2.840.10045.4.3.2" => ("ecdsa-with-SHA256", SigHash::Sha256),
        "1.2.840.10045.4.3.3" => ("ecdsa-with-SHA384", SigHash::Sha384),
        "1.2.840.10045.4.3.4" => ("ecdsa-with-SHA512", SigHash::Sha512),
        "1.2.840.10040.4.3" => ("dsa-with-SHA1", SigHash::Sha1),
        "1.3.101.112" => ("Ed25519", SigHash::Other),
        _ => return None,
    })
}

fn hash_of_oid(oid: &str) -> SigHash {
    match oid {
        "1.2.840.113549.2.5" => SigHash::Md5,
        "1.3.14.3.2.26" => SigHash::Sha1,
        "2.16.840.1.101.3.4.2.4" => SigHash::Sha224,
        "2.16.840.1.101.3.4.2.1" => SigHash::Sha256,
        "2.16.840.1.101.3.4.2.2" => SigHash::Sha384,
        "2.16.840.1.101.3.4.2.3" => SigHash::Sha512,
        _ => SigHash::Other,
    }
}

fn signature_info(cert: &X509Certificate<'_>) -> SigInfo {
    let alg = &cert.signature_algorithm;
    let oid = alg.algorithm.to_id_string();
    if let Some((name, hash)) = oid_name(&oid) {
        return SigInfo {
            name: name.to_owned(),
            hash,
        };
    }
    // RSASSA-PSS names its hash in the parameters (SHA-1 when absent).
    if let Ok(SignatureAlgorithm::RSASSA_PSS(params)) = SignatureAlgorithm::try_from(alg) {
        let hash = hash_of_oid(&params.hash_algorithm_oid().to_id_string());
        return SigInfo {
            name: format!("rsassa-pss-{}", hash.as_str()),
            hash,
        };
    }
    SigInfo {
        name: oid,
        hash: SigHash::Other,
    }
}

/// Bits of a big-endian unsigned magnitude.
fn bit_len(magnitude: &[u8]) -> u32 {
    let m = normalize_serial(magnitude);
    match m.first() {
        None => 0,
        Some(first) => {
            let whole = u32::try_from(m.len().saturating_sub(1))
                .unwrap_or(u32::MAX)
                .saturating_mul(8);
            whole.saturating_add(8u32.saturating_sub(first.leading_zeros()))
        }
    }
}

fn key_info(cert: &X509Certificate<'_>) -> KeyInfo {
    let spki = cert.public_key();
    let oid = spki.algorithm.algorithm.to_id_string();
    match oid.as_str() {
        "1.2.840.113549.1.1.1" | "1.2.840.113549.1.1.10" => match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => KeyInfo::Rsa {
                bits: bit_len(rsa.modulus),
            },
            _ => KeyInfo::Other { oid },
        },
        "1.2.840.10045.2.1" => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .and_then(|c| match c.to_id_string().as_str() {
                    "1.2.840.10045.3.1.7" => Some(Curve::P256),
                    "1.3.132.0.34" => Some(Curve::P384),
                    "1.3.132.0.35" => Some(Curve::P521),
                    _ => None,
                });
            KeyInfo::Ecdsa { curve }
        }
        "1.3.101.112" => KeyInfo::Ed25519,
        _ => KeyInfo::Other { oid },
    }
}

/// Reads one DER certificate. Trailing bytes are an error.
pub fn parse_der(der: &[u8]) -> Result<CertFacts, CertError> {
    let (rest, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| CertError::Der(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CertError::TrailingBytes);
    }
    let serial = normalize_serial(cert.raw_serial());
    if serial.len() > MAX_SERIAL_LEN {
        return Err(CertError::SerialTooLong);
    }
    let mut uri_sans = Vec::new();
    let mut dns_sans = Vec::new();
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CertError::BadSan(e.to_string()))?;
    if let Some(san) = san {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(u) => uri_sans.push((*u).to_owned()),
                GeneralName::DNSName(d) => dns_sans.push((*d).to_owned()),
                _ => {}
            }
        }
    }
    let mut sha256 = [0u8; 32];
    sha256.copy_from_slice(&Sha256::digest(der));
    Ok(CertFacts {
        serial,
        issuer: crate::dn::format_name(cert.issuer()),
        issuer_id: crate::dn::issuer_id_of(cert.issuer()),
        subject: crate::dn::format_name(cert.subject()),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        key: key_info(&cert),
        signature: signature_info(&cert),
        uri_sans,
        dns_sans,
        sha256,
    })
}

/// Whether `bytes` start (after whitespace) with a PEM `-----BEGIN ` line; anything
/// else is read as DER.
pub fn looks_like_pem(bytes: &[u8]) -> bool {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    bytes
        .get(start..)
        .is_some_and(|b| b.starts_with(b"-----BEGIN "))
}

/// One `-----BEGIN label-----` … `-----END label-----` block, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemBlock {
    /// The label, such as `CERTIFICATE` or `X509 CRL`.
    pub label: String,
    /// The decoded contents (DER).
    pub der: Vec<u8>,
}

/// Every PEM block in `text`, in order; text outside blocks is ignored (as OpenSSL
/// does). Written here with the `base64` crate, which the filter links anyway, rather
/// than through x509-parser's PEM reader and its own base64 dependency.
pub fn pem_blocks(text: &[u8]) -> Result<Vec<PemBlock>, CertError> {
    use base64::Engine as _;
    let text = std::str::from_utf8(text).map_err(|_| CertError::Pem("not UTF-8 text".into()))?;
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("-----BEGIN ") {
        let after = rest.get(at.saturating_add(11)..).unwrap_or_default();
        let (label, body) = after
            .split_once("-----")
            .ok_or_else(|| CertError::Pem("unterminated BEGIN line".into()))?;
        let end = format!("-----END {label}-----");
        let (b64, tail) = body
            .split_once(end.as_str())
            .ok_or_else(|| CertError::Pem(format!("no `{end}` line")))?;
        let b64: String = b64.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| CertError::Pem(format!("invalid base64 in `{label}` block: {e}")))?;
        blocks.push(PemBlock {
            label: label.to_owned(),
            der,
        });
        rest = tail;
    }
    Ok(blocks)
}

/// Reads every certificate in a PEM bundle, or the one certificate of a DER input.
pub fn parse_pem_or_der(bytes: &[u8]) -> Result<Vec<CertFacts>, CertError> {
    if !looks_like_pem(bytes) {
        return parse_der(bytes).map(|c| vec![c]);
    }
    let certs = pem_blocks(bytes)?
        .into_iter()
        .filter(|b| b.label == "CERTIFICATE")
        .map(|b| parse_der(&b.der))
        .collect::<Result<Vec<_>, _>>()?;
    if certs.is_empty() {
        return Err(CertError::NoCertificate);
    }
    Ok(certs)
}

/// The leaf (first) certificate of a PEM bundle or a DER input, without parsing the
/// rest of the chain.
fn leaf_of(bytes: &[u8]) -> Result<CertFacts, CertError> {
    if !looks_like_pem(bytes) {
        return parse_der(bytes);
    }
    let leaf = pem_blocks(bytes)?
        .into_iter()
        .find(|b| b.label == "CERTIFICATE")
        .ok_or(CertError::NoCertificate)?;
    parse_der(&leaf.der)
}

/// The filter's view of `connection.peer_certificate`: no bytes is a missing
/// certificate; anything that does not yield a leaf is unparsable. The first
/// certificate is the leaf.
pub fn peer_cert_from_pem(bytes: &[u8]) -> PeerCert {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return PeerCert::Missing;
    }
    match leaf_of(bytes) {
        Ok(leaf) => PeerCert::Parsed(std::sync::Arc::new(leaf)),
        Err(e) => PeerCert::Unparsable(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_parse_in_every_spelling() {
        let want = vec![0x4f, 0x38, 0x0a];
        for s in ["4f:38:0a", "4F380A", "0x4f380a", "4f 38 0a", "00:4f:38:0a"] {
            assert_eq!(parse_serial(s), Ok(want.clone()), "{s}");
        }
        assert_eq!(parse_serial("f380a"), Ok(vec![0x0f, 0x38, 0x0a]));
        assert_eq!(parse_serial("4g"), Err(SerialError::BadChar('g')));
        assert_eq!(parse_serial(" : "), Err(SerialError::Empty));
        assert_eq!(parse_serial(&"ab".repeat(65)), Err(SerialError::TooLong));
        assert_eq!(serial_hex(&[0x4f, 0x0a]), "4F0A");
        assert_eq!(serial_hex(&[]), "00");
    }

    #[test]
    fn fingerprints_need_64_hex_digits() {
        let hex = "ab".repeat(32);
        assert_eq!(parse_fingerprint(&hex), Some([0xab; 32]));
        assert_eq!(parse_fingerprint(&"ab:".repeat(32)), Some([0xab; 32]));
        assert_eq!(parse_fingerprint(&"ab".repeat(31)), None);
        assert_eq!(parse_fingerprint(&"zz".repeat(32)), None);
    }

    #[test]
    fn bit_len_counts_the_magnitude() {
        assert_eq!(bit_len(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(bit_len(&[0x01]), 1);
        assert_eq!(bit_len(&[]), 0);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(parse_der(b"garbage"), Err(CertError::Der(_))));
        assert_eq!(
            parse_pem_or_der(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
            Err(CertError::NoCertificate)
        );
        assert_eq!(peer_cert_from_pem(b"  \n"), PeerCert::Missing);
        for bad in [
            &b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n"[..],
            b"-----BEGIN CERTIFICATE-----\nAAAA\n",
            b"-----BEGIN CERTIFICATE\nAAAA\n",
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            b"\x30\x03\x02\x01\x01",
            b"\xff\xfe",
        ] {
            assert!(
                matches!(peer_cert_from_pem(bad), PeerCert::Unparsable(_)),
                "{bad:?}"
            );
        }
    }
}
