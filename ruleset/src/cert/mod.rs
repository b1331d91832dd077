//! The one place that turns certificate bytes into [`CertFacts`]. The filter, the CLI
//! and the playground all call it, so they see the same serial, key and identity.

use std::cell::RefCell;
use std::fmt;
use std::thread::LocalKey;

use sha2::{Digest, Sha256};
use x509_parser::certificate::{X509Certificate, X509CertificateParser};
use x509_parser::der_parser::oid::Oid;
use x509_parser::error::X509Error;
use x509_parser::extensions::{
    AuthorityKeyIdentifier, GeneralName, KeyIdentifier, SubjectAlternativeName,
};
use x509_parser::nom::Parser as _;
use x509_parser::oid_registry::{
    OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER, OID_X509_EXT_SUBJECT_ALT_NAME,
    OID_X509_EXT_SUBJECT_KEY_IDENTIFIER,
};
use x509_parser::prelude::FromDer as _;
use x509_parser::public_key::RSAPublicKey;
use x509_parser::signature_algorithm::SignatureAlgorithm;
use x509_parser::x509::{SubjectPublicKeyInfo, X509Name};

use crate::{CertFacts, Curve, KeyInfo, PeerCert, RevocationKeys, SigHash, SigInfo};

pub mod name;

/// Longest accepted serial number, in bytes (RFC 5280 allows 20; some CAs exceed it).
pub const MAX_SERIAL_LEN: usize = 64;

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

/// Why a serial number string could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SerialError {
    /// Nothing but separators.
    Empty,
    /// A character that is not a hex digit or an accepted separator.
    BadChar(char),
    /// Longer than [`MAX_SERIAL_LEN`] bytes.
    TooLong,
    /// A `-` that is not the leading sign of the whole number.
    MisplacedMinus,
    /// A sign followed by a separator or another sign (`- 4f`, `-:4f`, `--4f`).
    SignThenSeparator,
    /// A negative zero (`-0`): a sign on nothing.
    NegativeZero,
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
            SerialError::MisplacedMinus => write!(
                f,
                "`-` is only accepted as the sign in front of the whole number, not as a separator"
            ),
            SerialError::SignThenSeparator => {
                write!(f, "the sign `-` must be followed directly by a hex digit")
            }
            SerialError::NegativeZero => write!(f, "a negative zero is not a serial number"),
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

/// Parses a hex serial: `4f:38:0a`, `4F380A`, `0x4f380a` or `4f 38 0a`; a negative
/// one as OpenSSL prints it: `-4F380A` (`-serial`), `(Negative)4f:38:0a` (`-text`), or
/// `-0x4f380a`, `-4f:38:0a`.
///
/// The result is what a certificate or CRL with that serial holds (see
/// [`normalize_serial`]): a DER INTEGER's content bytes are two's complement, so a
/// negative serial is converted to its minimal two's-complement bytes (`-4F380A` is
/// the content `B0 C7 F6`). The only `-` accepted is a sign directly in front of the
/// first digit (after an optional `0x`): `4f-38` and `- 4f` are refused rather than
/// guessed at.
pub fn parse_serial(s: &str) -> Result<Vec<u8>, SerialError> {
    let s = s.trim();
    let (negative, s) = if let Some(rest) = s.strip_prefix("(Negative)") {
        (true, rest)
    } else if let Some(rest) = s.strip_prefix('-') {
        (true, rest)
    } else {
        (false, s)
    };
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    if negative && !s.chars().next().is_some_and(|c| c.is_ascii_hexdigit()) {
        return Err(SerialError::SignThenSeparator);
    }
    let mut nibbles = Vec::with_capacity(s.len());
    for c in s.chars() {
        match c {
            ':' | ' ' => {}
            '-' => return Err(SerialError::MisplacedMinus),
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
    let magnitude = normalize_serial(&bytes);
    let serial = if negative {
        if magnitude.is_empty() {
            return Err(SerialError::NegativeZero);
        }
        negate_magnitude(&magnitude)
    } else {
        magnitude
    };
    if serial.len() > MAX_SERIAL_LEN {
        return Err(SerialError::TooLong);
    }
    Ok(serial)
}

/// The minimal two's-complement bytes (a DER INTEGER's content) of `-magnitude`, for a
/// non-zero big-endian `magnitude` without leading zeros.
fn negate_magnitude(magnitude: &[u8]) -> Vec<u8> {
    // Two's complement over one more byte than the magnitude: invert, then add one.
    let mut out: Vec<u8> = std::iter::once(0xffu8)
        .chain(magnitude.iter().map(|b| !b))
        .collect();
    for byte in out.iter_mut().rev() {
        let (sum, carry) = byte.overflowing_add(1);
        *byte = sum;
        if !carry {
            break;
        }
    }
    // Minimal: drop a leading 0xFF while the next byte still carries the sign.
    let redundant = out
        .windows(2)
        .take_while(|w| matches!(w, [0xff, next] if next & 0x80 != 0))
        .count();
    out.split_off(redundant)
}

/// Uppercase hex without separators (`00` for a zero serial), as in ECS
/// `tls.client.x509.serial_number`.
pub fn serial_hex(serial: &[u8]) -> String {
    if serial.is_empty() {
        return "00".to_owned();
    }
    hex_with(serial, b"0123456789ABCDEF")
}

/// Lowercase hex without separators.
pub fn hex_lower(bytes: &[u8]) -> String {
    hex_with(bytes, b"0123456789abcdef")
}

/// Uppercase hex, two digits per byte (as the audit record shows fingerprints).
pub fn hex_upper(bytes: &[u8]) -> String {
    hex_with(bytes, b"0123456789ABCDEF")
}

/// Two digits per byte from `digits`, without the formatting machinery (a `format!`
/// per byte cost the filter several microseconds per audit record under V8).
fn hex_with(bytes: &[u8], digits: &[u8; 16]) -> String {
    let digit = |n: u8| char::from(digits.get(usize::from(n & 0x0f)).copied().unwrap_or(b'0'));
    let mut out = String::with_capacity(bytes.len().saturating_mul(2));
    for b in bytes {
        out.push(digit(b >> 4));
        out.push(digit(*b));
    }
    out
}

/// Parses 64 hex digits (separators `:` allowed) into a SHA-256 fingerprint.
pub fn parse_fingerprint(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    let mut nibbles = 0usize;
    // Bytes, not chars: a non-ASCII byte is no hex digit either way.
    for b in s.trim().bytes().filter(|b| *b != b':') {
        let digit = u8::try_from(char::from(b).to_digit(16)?).ok()?;
        let byte = out.get_mut(nibbles / 2)?;
        *byte = (*byte << 4) | digit;
        nibbles = nibbles.checked_add(1)?;
    }
    (nibbles == 64).then_some(out)
}

/// The row of `table` (DER content bytes, dotted OID, value) for `oid`.
/// Compared by bytes first: formatting an OID as a string allocates and divides per
/// arc, which cost the filter microseconds per certificate in wasm. A miss falls back
/// to the dotted form, so a non-minimally encoded OID still finds its row as before.
pub(crate) fn find_row<'t, 'o, T>(
    oid: &Oid<'_>,
    table: &'t [(&'o [u8], &'o str, T)],
) -> Option<&'t (&'o [u8], &'o str, T)> {
    let der = oid.as_bytes();
    if let Some(row) = table.iter().find(|(d, _, _)| *d == der) {
        return Some(row);
    }
    let dotted = oid.to_id_string();
    table.iter().find(|(_, d, _)| *d == dotted)
}

/// The value of [`find_row`].
fn find_oid<'t, T>(oid: &Oid<'_>, table: &'t [(&[u8], &str, T)]) -> Option<&'t T> {
    find_row(oid, table).map(|(_, _, v)| v)
}

/// Signature algorithms by OID: display name and hash.
const SIGNATURES: &[(&[u8], &str, (&str, SigHash))] = &[
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x04],
        "1.2.840.113549.1.1.4",
        ("md5WithRSAEncryption", SigHash::Md5),
    ),
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05],
        "1.2.840.113549.1.1.5",
        ("sha1WithRSAEncryption", SigHash::Sha1),
    ),
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0e],
        "1.2.840.113549.1.1.14",
        ("sha224WithRSAEncryption", SigHash::Sha224),
    ),
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b],
        "1.2.840.113549.1.1.11",
        ("sha256WithRSAEncryption", SigHash::Sha256),
    ),
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c],
        "1.2.840.113549.1.1.12",
        ("sha384WithRSAEncryption", SigHash::Sha384),
    ),
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d],
        "1.2.840.113549.1.1.13",
        ("sha512WithRSAEncryption", SigHash::Sha512),
    ),
    (
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01],
        "1.2.840.10045.4.1",
        ("ecdsa-with-SHA1", SigHash::Sha1),
    ),
    (
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x01],
        "1.2.840.10045.4.3.1",
        ("ecdsa-with-SHA224", SigHash::Sha224),
    ),
    (
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02],
        "1.2.840.10045.4.3.2",
        ("ecdsa-with-SHA256", SigHash::Sha256),
    ),
    (
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03],
        "1.2.840.10045.4.3.3",
        ("ecdsa-with-SHA384", SigHash::Sha384),
    ),
    (
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04],
        "1.2.840.10045.4.3.4",
        ("ecdsa-with-SHA512", SigHash::Sha512),
    ),
    (
        &[0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x03],
        "1.2.840.10040.4.3",
        ("dsa-with-SHA1", SigHash::Sha1),
    ),
    (
        &[0x2b, 0x65, 0x70],
        "1.3.101.112",
        ("Ed25519", SigHash::Other),
    ),
];

/// Key algorithms by OID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyAlg {
    Rsa,
    Ecdsa,
    Ed25519,
}

const KEY_ALGORITHMS: &[(&[u8], &str, KeyAlg)] = &[
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
        "1.2.840.113549.1.1.1",
        KeyAlg::Rsa,
    ),
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a],
        "1.2.840.113549.1.1.10",
        KeyAlg::Rsa,
    ),
    (
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01],
        "1.2.840.10045.2.1",
        KeyAlg::Ecdsa,
    ),
    (&[0x2b, 0x65, 0x70], "1.3.101.112", KeyAlg::Ed25519),
];

const CURVES: &[(&[u8], &str, Curve)] = &[
    (
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
        "1.2.840.10045.3.1.7",
        Curve::P256,
    ),
    (&[0x2b, 0x81, 0x04, 0x00, 0x22], "1.3.132.0.34", Curve::P384),
    (&[0x2b, 0x81, 0x04, 0x00, 0x23], "1.3.132.0.35", Curve::P521),
];

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
    if let Some((name, hash)) = find_oid(&alg.algorithm, SIGNATURES) {
        return SigInfo {
            name: (*name).to_owned(),
            hash: *hash,
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
        name: alg.algorithm.to_id_string(),
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

/// SHA-256 of `bytes`.
fn sha256_of(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// SHA-256 over the canonical form of a public key, the same for every encoding of
/// one key that its holder could present (see `ruleset/FORMAT.md`):
/// - ECDSA on a named curve: `"certgate-pk-ec\0"`, the curve OID's length and DER
///   content, then the x coordinate without leading zero bytes. Compressed,
///   uncompressed and hybrid points carry the same x, and so do `P` and `-P`, which
///   the same private key controls (`-P = (n - d)G`).
/// - RSA (under `rsaEncryption` or RSASSA-PSS): `"certgate-pk-rsa\0"`, the modulus
///   length (`u32`, big-endian) and magnitude, then the exponent magnitude.
/// - Ed25519: `"certgate-pk-ed25519\0"` and the 32 raw key bytes.
/// - anything else, or a key that does not parse: `"certgate-pk-spki\0"` and the
///   SubjectPublicKeyInfo DER.
pub fn public_key_sha256(spki: &SubjectPublicKeyInfo<'_>) -> [u8; 32] {
    sha256_of(&canonical_public_key(spki))
}

/// The canonical form [`public_key_sha256`] hashes: built when a certificate is read,
/// hashed only when a table revokes keys.
fn canonical_public_key(spki: &SubjectPublicKeyInfo<'_>) -> Vec<u8> {
    key_facts(spki).1
}

/// What policy sees of a key ([`KeyInfo`]) and its canonical form, read together: one
/// algorithm lookup and one parse of the key serve both.
fn key_facts(spki: &SubjectPublicKeyInfo<'_>) -> (KeyInfo, Vec<u8>) {
    let mut h = Vec::with_capacity(spki.raw.len().saturating_add(24));
    let key = spki.subject_public_key.data.as_ref();
    let info = match find_oid(&spki.algorithm.algorithm, KEY_ALGORITHMS) {
        Some(KeyAlg::Ecdsa) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok());
            if let (Some(curve), Some(x)) = (&curve, ec_x(key)) {
                let oid = curve.as_bytes();
                h.extend_from_slice(b"certgate-pk-ec\0");
                h.push(u8::try_from(oid.len()).unwrap_or(u8::MAX));
                h.extend_from_slice(oid);
                h.extend_from_slice(strip_leading_zeros(x));
            }
            KeyInfo::Ecdsa {
                curve: curve.and_then(|c| find_oid(&c, CURVES).copied()),
            }
        }
        // rsaEncryption and RSASSA-PSS keys hold the same RSAPublicKey; x509-parser's
        // `parsed()` reads only the former, so the key is read here for both.
        Some(KeyAlg::Rsa) => match RSAPublicKey::from_der(key) {
            Ok((_, rsa)) => {
                let n = strip_leading_zeros(rsa.modulus);
                h.extend_from_slice(b"certgate-pk-rsa\0");
                h.extend_from_slice(&u32::try_from(n.len()).unwrap_or(u32::MAX).to_be_bytes());
                h.extend_from_slice(n);
                h.extend_from_slice(strip_leading_zeros(rsa.exponent));
                KeyInfo::Rsa {
                    bits: bit_len(rsa.modulus),
                }
            }
            Err(_) => KeyInfo::Other {
                oid: spki.algorithm.algorithm.to_id_string(),
            },
        },
        Some(KeyAlg::Ed25519) => {
            if key.len() == 32 {
                h.extend_from_slice(b"certgate-pk-ed25519\0");
                h.extend_from_slice(key);
            }
            KeyInfo::Ed25519
        }
        None => KeyInfo::Other {
            oid: spki.algorithm.algorithm.to_id_string(),
        },
    };
    // A key without a canonical form above is named by its whole SPKI.
    if h.is_empty() {
        h.extend_from_slice(b"certgate-pk-spki\0");
        h.extend_from_slice(spki.raw);
    }
    (info, h)
}

/// The x coordinate of a SEC 1 point: `02|03 x`, `04 x y` or the hybrid `06|07 x y`.
fn ec_x(point: &[u8]) -> Option<&[u8]> {
    let (first, rest) = point.split_first()?;
    match first {
        0x02 | 0x03 if !rest.is_empty() => Some(rest),
        0x04 | 0x06 | 0x07 if !rest.is_empty() && rest.len() % 2 == 0 => rest.get(..rest.len() / 2),
        _ => None,
    }
}

/// The subject and authority key identifiers of a certificate parsed without deep
/// extension parsing. A repeated or malformed extension is an error: a certificate
/// could otherwise choose which of two identifiers a lookup sees.
type KeyIds = (Option<Vec<u8>>, Option<Vec<u8>>);

fn key_ids(cert: &X509Certificate<'_>) -> Result<KeyIds, CertError> {
    let bad = |e: X509Error| CertError::BadKeyId(e.to_string());
    let ski = match cert
        .get_extension_unique(&OID_X509_EXT_SUBJECT_KEY_IDENTIFIER)
        .map_err(bad)?
    {
        None => None,
        Some(ext) => match KeyIdentifier::from_der(ext.value) {
            Ok((_, id)) => Some(id.0.to_vec()),
            Err(_) => return Err(bad(X509Error::InvalidExtensions)),
        },
    };
    let aki = match cert
        .get_extension_unique(&OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER)
        .map_err(bad)?
    {
        None => None,
        Some(ext) => match AuthorityKeyIdentifier::from_der(ext.value) {
            Ok((_, aki)) => aki.key_identifier.map(|id| id.0.to_vec()),
            Err(_) => return Err(bad(X509Error::InvalidExtensions)),
        },
    };
    Ok((ski, aki))
}

/// Reads one DER certificate. Trailing bytes are an error.
pub fn parse_der(der: &[u8]) -> Result<CertFacts, CertError> {
    let mut sha256 = [0u8; 32];
    sha256.copy_from_slice(&Sha256::digest(der));
    parse_der_with_sha256(der, sha256)
}

/// [`parse_der`] for a host that already knows the certificate's SHA-256 (Envoy's
/// `connection.sha256_peer_certificate_digest` is the digest of the same DER leaf it
/// hands over as PEM): hashing again in wasm costs more than parsing the DN.
/// `sha256` must be the SHA-256 of `der`; it becomes [`CertFacts::sha256`] unchecked.
pub fn parse_der_with_sha256(der: &[u8], sha256: [u8; 32]) -> Result<CertFacts, CertError> {
    // Only the subject alternative name extension is read, so only it is parsed (below):
    // deep parsing decodes every extension, and a malformed one never fails the
    // certificate anyway (x509-parser keeps it as `ParsedExtension::ParseError`).
    let (rest, cert) = X509CertificateParser::new()
        .with_deep_parse_extensions(false)
        .parse(der)
        .map_err(|e| CertError::Der(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CertError::TrailingBytes);
    }
    let serial = normalize_serial(cert.raw_serial());
    if serial.len() > MAX_SERIAL_LEN {
        return Err(CertError::SerialTooLong);
    }
    let mut uri_sans = Vec::new();
    let mut dns_sans = Vec::new();
    if let Some(san) = subject_alt_names(&cert)? {
        for name in &san.general_names {
            match name {
                GeneralName::URI(u) => uri_sans.push((*u).to_owned()),
                GeneralName::DNSName(d) => dns_sans.push((*d).to_owned()),
                _ => {}
            }
        }
    }
    let (issuer, issuer_id) = remembered(&LAST_ISSUER, cert.issuer(), |name| {
        (crate::dn::format_name(name), crate::dn::issuer_id_of(name))
    });
    let subject = remembered(&LAST_SUBJECT, cert.subject(), crate::dn::format_name);
    let (subject_key_id, authority_key_id) = key_ids(&cert)?;
    let spki = cert.public_key();
    let (key, canonical_key) = key_facts(spki);
    Ok(CertFacts {
        serial,
        issuer,
        issuer_id,
        subject,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        key,
        signature: signature_info(&cert),
        uri_sans,
        dns_sans,
        sha256,
        revocation_keys: RevocationKeys::new(
            cert.tbs_certificate.as_ref(),
            spki.raw,
            canonical_key,
        ),
        subject_key_id,
        authority_key_id,
    })
}

/// A name remembered by its DER bytes, with what was computed from it.
type Memo<T> = RefCell<Option<(Vec<u8>, T)>>;

thread_local! {
    /// The issuer of the last certificate read, with its display form and id. Leaves
    /// come from few CAs, so a host that reads one new leaf after another (the filter,
    /// on every new client certificate) formats and hashes an issuer once, not per leaf.
    static LAST_ISSUER: Memo<(String, u64)> = const { RefCell::new(None) };
    /// The subject of the last certificate read, with its display form: workload
    /// certificates often share one (Istio's are empty; SPIFFE puts identity in the SAN).
    static LAST_SUBJECT: Memo<String> = const { RefCell::new(None) };
}

/// `compute(name)`, or what it gave for the same name bytes last time (the same bytes
/// give the same answer).
fn remembered<T: Clone>(
    memo: &'static LocalKey<Memo<T>>,
    name: &X509Name<'_>,
    compute: impl FnOnce(&X509Name<'_>) -> T,
) -> T {
    let raw = name.as_raw();
    let hit = memo.with(|last| {
        let last = last.try_borrow().ok()?;
        let (der, value) = last.as_ref()?;
        (der.as_slice() == raw).then(|| value.clone())
    });
    if let Some(value) = hit {
        return value;
    }
    let value = compute(name);
    memo.with(|last| {
        if let Ok(mut last) = last.try_borrow_mut() {
            *last = Some((raw.to_vec(), value.clone()));
        }
    });
    value
}

/// The subject alternative name extension of a certificate parsed without deep
/// extension parsing, with the answers of x509-parser's own
/// `X509Certificate::subject_alternative_name` after a deep parse: a repeated extension
/// is `DuplicateExtensions`, one that does not parse is `InvalidExtensions`.
fn subject_alt_names<'a>(
    cert: &X509Certificate<'a>,
) -> Result<Option<SubjectAlternativeName<'a>>, CertError> {
    let bad = |e: X509Error| CertError::BadSan(e.to_string());
    let Some(ext) = cert
        .get_extension_unique(&OID_X509_EXT_SUBJECT_ALT_NAME)
        .map_err(bad)?
    else {
        return Ok(None);
    };
    // Bytes after the name sequence are ignored, as the deep parser ignores them.
    match SubjectAlternativeName::from_der(ext.value) {
        Ok((_, san)) => Ok(Some(san)),
        Err(_) => Err(bad(X509Error::InvalidExtensions)),
    }
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
        // Concatenated, not `format!`ed: the formatting machinery is cold code in the
        // filter, and a cache miss on it cost more than the concatenation.
        let end = ["-----END ", label, "-----"].concat();
        let (b64, tail) = body
            .split_once(end.as_str())
            .ok_or_else(|| CertError::Pem(format!("no `{end}` line")))?;
        // The runs between whitespace are copied whole, not byte by byte, and not as
        // `char`s into a `String`: in wasm, that filter cost more than the decoding.
        let mut packed = Vec::with_capacity(b64.len());
        for run in b64.as_bytes().split(u8::is_ascii_whitespace) {
            packed.extend_from_slice(run);
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(&packed)
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
/// rest of the chain. With `sha256`, the caller's digest of the leaf is taken as is.
fn leaf_of(bytes: &[u8], sha256: Option<[u8; 32]>) -> Result<CertFacts, CertError> {
    let parse = |der: &[u8]| match sha256 {
        Some(digest) => parse_der_with_sha256(der, digest),
        None => parse_der(der),
    };
    if !looks_like_pem(bytes) {
        return parse(bytes);
    }
    let leaf = pem_blocks(bytes)?
        .into_iter()
        .find(|b| b.label == "CERTIFICATE")
        .ok_or(CertError::NoCertificate)?;
    parse(&leaf.der)
}

/// The filter's view of `connection.peer_certificate`: no bytes is a missing
/// certificate; anything that does not yield a leaf is unparsable. The first
/// certificate is the leaf.
pub fn peer_cert_from_pem(bytes: &[u8]) -> PeerCert {
    peer_cert_from_pem_with_sha256(bytes, None)
}

/// [`peer_cert_from_pem`] with the leaf's SHA-256 when the host knows it (Envoy's
/// `connection.sha256_peer_certificate_digest`), which saves hashing it again; `None`
/// hashes the leaf.
pub fn peer_cert_from_pem_with_sha256(bytes: &[u8], sha256: Option<[u8; 32]>) -> PeerCert {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return PeerCert::Missing;
    }
    match leaf_of(bytes, sha256) {
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

    /// Regression: `-4F380A`, as OpenSSL prints a negative serial, was read as the
    /// positive 4F380A (`-` was a separator), so the certificate stayed allowed.
    #[test]
    fn negative_serials_are_their_der_content_bytes() {
        let want = vec![0xb0, 0xc7, 0xf6];
        for s in [
            "-4F380A",
            "-4f:38:0a",
            "-0x4f380a",
            " -4F380A ",
            "(Negative)4f:38:0a",
            "-004f380a",
        ] {
            assert_eq!(parse_serial(s), Ok(want.clone()), "{s}");
        }
        // Minimal two's complement at the byte boundaries.
        assert_eq!(parse_serial("-1"), Ok(vec![0xff]));
        assert_eq!(parse_serial("-80"), Ok(vec![0x80]));
        assert_eq!(parse_serial("-81"), Ok(vec![0xff, 0x7f]));
        assert_eq!(parse_serial("-ff"), Ok(vec![0xff, 0x01]));
        assert_eq!(parse_serial("-100"), Ok(vec![0xff, 0x00]));
        assert_eq!(parse_serial("-8000"), Ok(vec![0x80, 0x00]));
        // The same bytes as every i64, as Rust's own two's complement gives them.
        for n in [
            1i64,
            2,
            127,
            128,
            129,
            255,
            256,
            0x4f380a,
            0x7fff_ffff,
            i64::MAX,
        ] {
            let be = (-n).to_be_bytes();
            let skip = be
                .windows(2)
                .take_while(|w| w[0] == 0xff && w[1] & 0x80 != 0)
                .count();
            assert_eq!(
                parse_serial(&format!("-{n:x}")),
                Ok(be[skip..].to_vec()),
                "{n}"
            );
        }
        // The limit is on the two's-complement bytes: a 64-byte magnitude whose top
        // bit is set needs a 65th byte for the sign.
        assert_eq!(
            parse_serial(&format!("-{}", "7b".repeat(64))).map(|s| s.len()),
            Ok(64)
        );
        assert_eq!(
            parse_serial(&format!("-{}", "ab".repeat(64))),
            Err(SerialError::TooLong)
        );
        assert_eq!(
            parse_serial(&format!("-{}", "ff".repeat(64))),
            Err(SerialError::TooLong)
        );
    }

    #[test]
    fn malformed_signs_are_refused() {
        for (s, want) in [
            ("4f-38-0a", SerialError::MisplacedMinus),
            ("-4f-38", SerialError::MisplacedMinus),
            ("0x-4f", SerialError::MisplacedMinus),
            ("4f380a-", SerialError::MisplacedMinus),
            ("- 4f380a", SerialError::SignThenSeparator),
            ("-:4f:38", SerialError::SignThenSeparator),
            ("--4f", SerialError::SignThenSeparator),
            ("-", SerialError::SignThenSeparator),
            ("-0x", SerialError::SignThenSeparator),
            ("(Negative) 4f", SerialError::SignThenSeparator),
            ("-0", SerialError::NegativeZero),
            ("-00:00", SerialError::NegativeZero),
        ] {
            assert_eq!(parse_serial(s), Err(want), "{s}");
        }
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
    fn oid_tables_hold_the_der_of_their_dotted_oids() {
        fn check<T>(table: &[(&[u8], &str, T)]) {
            for (der, dotted, _) in table {
                let oid: Oid<'_> = dotted.parse().unwrap();
                assert_eq!(oid.as_bytes(), *der, "{dotted}");
            }
        }
        check(SIGNATURES);
        check(KEY_ALGORITHMS);
        check(CURVES);
    }

    #[test]
    fn oids_are_found_by_bytes_and_by_their_dotted_form() {
        let p256: Oid<'_> = "1.2.840.10045.3.1.7".parse().unwrap();
        assert_eq!(find_oid(&p256, CURVES), Some(&Curve::P256));
        // 1.3.132.0.34 with a redundant 0x80 in its second-to-last arc: other bytes,
        // the same dotted form, so the same row as before byte comparison.
        let padded = Oid::new(std::borrow::Cow::Borrowed(&[
            0x2b, 0x81, 0x04, 0x80, 0x00, 0x22,
        ]));
        assert_eq!(padded.to_id_string(), "1.3.132.0.34");
        assert_eq!(find_oid(&padded, CURVES), Some(&Curve::P384));
        let unknown: Oid<'_> = "1.2.3.4".parse().unwrap();
        assert_eq!(find_oid(&unknown, CURVES), None);
    }

    /// The SAN answer of a deep parse, x509-parser's own, as `parse_der` words it.
    fn deep_sans(der: &[u8]) -> Result<Vec<String>, CertError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
        let san = cert
            .subject_alternative_name()
            .map_err(|e| CertError::BadSan(e.to_string()))?;
        Ok(san.map_or_else(Vec::new, |san| {
            san.value
                .general_names
                .iter()
                .filter(|n| matches!(n, GeneralName::URI(_) | GeneralName::DNSName(_)))
                .map(|n| n.to_string())
                .collect()
        }))
    }

    #[test]
    fn shallow_parse_reads_sans_as_the_deep_parse_does() {
        let san_oid = [2, 5, 29, 17];
        let uri = |u: &str| {
            let mut v = vec![0x86, u8::try_from(u.len()).unwrap()];
            v.extend_from_slice(u.as_bytes());
            v
        };
        let seq = |body: Vec<u8>| {
            let mut v = vec![0x30, u8::try_from(body.len()).unwrap()];
            v.extend(body);
            v
        };
        let good = seq(uri("spiffe://example.org/a"));
        let mut dns = vec![0x82, 0x03];
        dns.extend_from_slice(b"a.b");
        let mut trailing = good.clone();
        trailing.extend_from_slice(&[0x05, 0x00]);
        let cases: Vec<Vec<Vec<u8>>> = vec![
            vec![],
            vec![good.clone()],
            vec![trailing],
            vec![good.clone(), good.clone()],
            vec![seq(vec![0x86, 0x05, b'a'])],
            vec![vec![0x04, 0x00]],
            vec![seq(vec![0xa9, 0x00])],
            vec![seq(dns)],
            vec![vec![]],
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        for sans in cases {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.custom_extensions = sans
                .iter()
                .map(|c| rcgen::CustomExtension::from_oid_content(&san_oid, c.clone()))
                .collect();
            let der = params.self_signed(&key).unwrap().der().to_vec();
            let ours = parse_der(&der).map(|f| {
                let uris = f.uri_sans.iter().map(|u| format!("URI({u})"));
                let dns = f.dns_sans.iter().map(|d| format!("DNSName({d})"));
                uris.chain(dns).collect::<Vec<_>>()
            });
            assert_eq!(ours, deep_sans(&der), "{sans:?}");
        }
    }

    #[test]
    fn remembered_names_are_the_names_of_the_new_leaf() {
        let issue = |issuer_cn: &str, leaf_cn: &str| {
            let ca_key = rcgen::KeyPair::generate().unwrap();
            let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            ca.distinguished_name
                .push(rcgen::DnType::CommonName, issuer_cn);
            ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).unwrap();
            let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            leaf.distinguished_name
                .push(rcgen::DnType::CommonName, leaf_cn);
            let key = rcgen::KeyPair::generate().unwrap();
            leaf.signed_by(&key, &ca).unwrap().der().to_vec()
        };
        let (a1, a2, b) = (
            issue("CA a", "one"),
            issue("CA a", "two"),
            issue("CA b", "three"),
        );
        for der in [&a1, &a2, &b, &a1, &b, &b] {
            let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
            let facts = parse_der(der).unwrap();
            assert_eq!(facts.issuer, crate::dn::format_name(cert.issuer()));
            assert_eq!(facts.issuer_id, crate::dn::issuer_id_of(cert.issuer()));
            assert_eq!(facts.subject, crate::dn::format_name(cert.subject()));
        }
    }

    /// DER TLV with a definite length (test inputs are short).
    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        match body.len() {
            n if n < 0x80 => v.push(n as u8),
            n if n < 0x100 => v.extend([0x81, n as u8]),
            n => v.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        v.extend_from_slice(body);
        v
    }

    /// The content of the DER element at the start of `der`, and what follows it.
    fn split_tlv(der: &[u8]) -> (&[u8], &[u8], &[u8]) {
        let (len, hdr) = match der[1] {
            n if n < 0x80 => (n as usize, 2),
            0x81 => (der[2] as usize, 3),
            0x82 => ((der[2] as usize) << 8 | der[3] as usize, 4),
            _ => unreachable!(),
        };
        (&der[..hdr + len], &der[hdr..hdr + len], &der[hdr + len..])
    }

    /// `a - b` for big-endian magnitudes with `a >= b`, as long as `a`.
    fn sub(a: &[u8], b: &[u8]) -> Vec<u8> {
        let mut out = a.to_vec();
        let mut borrow = 0i32;
        for i in 0..out.len() {
            let ai = out[out.len() - 1 - i] as i32;
            let bi = if i < b.len() {
                b[b.len() - 1 - i] as i32
            } else {
                0
            };
            let mut d = ai - bi - borrow;
            borrow = i32::from(d < 0);
            if d < 0 {
                d += 256;
            }
            let at = out.len() - 1 - i;
            out[at] = d as u8;
        }
        out
    }

    /// A DER INTEGER of a non-negative magnitude.
    fn der_uint(magnitude: &[u8]) -> Vec<u8> {
        let mut m = strip_leading_zeros(magnitude).to_vec();
        if m.first().is_none_or(|b| *b >= 0x80) {
            m.insert(0, 0);
        }
        tlv(0x02, &m)
    }

    const P256_N: [u8; 32] = [
        0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63,
        0x25, 0x51,
    ];
    const P256_P: [u8; 32] = [
        0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff,
    ];

    /// The certificate with its ECDSA P-256 signature's `s` replaced by `n - s`: what
    /// the holder of a certificate can make without any key.
    fn flip_s(cert: &[u8]) -> Vec<u8> {
        let (_, body, _) = split_tlv(cert);
        let (tbs, rest, _) = {
            let (tbs, _, rest) = split_tlv(body);
            (tbs, rest, ())
        };
        let (alg, _, rest) = split_tlv(rest);
        let (_, bits, _) = split_tlv(rest);
        let (_, sig, _) = split_tlv(&bits[1..]);
        let (_, r, rest) = split_tlv(sig);
        let (_, s, _) = split_tlv(rest);
        let s2 = sub(&P256_N, strip_leading_zeros(s));
        let mut sig2 = der_uint(r);
        sig2.extend(der_uint(&s2));
        let mut bits2 = vec![0];
        bits2.extend(tlv(0x30, &sig2));
        let mut body2 = tbs.to_vec();
        body2.extend_from_slice(alg);
        body2.extend(tlv(0x03, &bits2));
        tlv(0x30, &body2)
    }

    fn ec_leaf() -> (Vec<u8>, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["a.example".to_string()]).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, "leaf");
        let der = p.self_signed(&key).unwrap().der().to_vec();
        (der, key)
    }

    #[test]
    fn a_re_encoded_signature_keeps_the_certificate_key() {
        let (der, _) = ec_leaf();
        let flipped = flip_s(&der);
        assert_ne!(flipped, der);
        // Still a valid signature by the same key (the holder needs no private key):
        // openssl checks the self-signature; a damaged signature is refused.
        let verifies = |der: &[u8]| {
            use base64::Engine as _;
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("c.pem");
            let b64 = base64::engine::general_purpose::STANDARD.encode(der);
            std::fs::write(
                &path,
                format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n"),
            )
            .unwrap();
            let p = path.to_str().unwrap();
            std::process::Command::new("openssl")
                .args(["verify", "-check_ss_sig", "-CAfile", p, p])
                .output()
                .unwrap()
                .status
                .success()
        };
        assert!(verifies(&der));
        assert!(verifies(&flipped));
        let mut damaged = flipped.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(!verifies(&damaged));
        let (a, b) = (parse_der(&der).unwrap(), parse_der(&flipped).unwrap());
        assert_ne!(a.sha256, b.sha256, "a new whole-certificate digest");
        assert_eq!(a.tbs_sha256(), b.tbs_sha256());
        assert_eq!(a.spki_sha256(), b.spki_sha256());
        assert_eq!(a.public_key_sha256(), b.public_key_sha256());
        assert_eq!(a.serial, b.serial);
        // Flipping twice gives the original bytes back.
        assert_eq!(flip_s(&flipped), der);
        // Another certificate has another certificate key and public key.
        let (other, _) = ec_leaf();
        let c = parse_der(&other).unwrap();
        assert_ne!(a.tbs_sha256(), c.tbs_sha256());
        assert_ne!(a.public_key_sha256(), c.public_key_sha256());
    }

    fn spki(alg: &[u8], key: &[u8]) -> Vec<u8> {
        let mut bits = vec![0];
        bits.extend_from_slice(key);
        let mut body = tlv(0x30, alg);
        body.extend(tlv(0x03, &bits));
        tlv(0x30, &body)
    }

    fn key_of(spki_der: &[u8]) -> [u8; 32] {
        let (_, spki) = SubjectPublicKeyInfo::from_der(spki_der).unwrap();
        public_key_sha256(&spki)
    }

    fn ec_alg(curve: usize) -> Vec<u8> {
        let mut alg = tlv(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]);
        alg.extend(tlv(0x06, CURVES[curve].0));
        alg
    }

    /// The AlgorithmIdentifier contents of rsaEncryption (with its NULL parameters) and of
    /// RSASSA-PSS.
    fn rsa_algs() -> (Vec<u8>, Vec<u8>) {
        let mut rsa = tlv(0x06, KEY_ALGORITHMS[0].0);
        rsa.extend([0x05, 0x00]);
        (rsa, tlv(0x06, KEY_ALGORITHMS[1].0))
    }

    /// An RSAPublicKey of modulus `n` and exponent `e`.
    fn rsa_key(n: &[u8], e: &[u8]) -> Vec<u8> {
        let mut body = der_uint(n);
        body.extend(der_uint(e));
        tlv(0x30, &body)
    }

    #[test]
    fn every_encoding_of_one_ec_key_gives_one_key() {
        let (der, _) = ec_leaf();
        let facts = parse_der(&der).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let point = cert.public_key().subject_public_key.data.to_vec();
        assert_eq!(point.len(), 65);
        let (x, y) = (&point[1..33], &point[33..]);
        let alg = ec_alg(0);
        let uncompressed = spki(&alg, &point);
        assert_eq!(uncompressed, cert.public_key().raw);
        let want = key_of(&uncompressed);
        assert_eq!(want, facts.public_key_sha256());
        let odd = y[31] & 1;
        let compressed = [&[0x02 | odd][..], x].concat();
        assert_eq!(key_of(&spki(&alg, &compressed)), want);
        // -P = (x, p - y): the same private key (n - d) controls it.
        let neg_y = sub(&P256_P, y);
        let negated = [&[0x04][..], x, &neg_y].concat();
        assert_eq!(key_of(&spki(&alg, &negated)), want);
        let neg_compressed = [&[0x02 | (odd ^ 1)][..], x].concat();
        assert_eq!(key_of(&spki(&alg, &neg_compressed)), want);
        // The SPKI digests differ, so both kinds of key are needed.
        assert_ne!(sha256_of(&spki(&alg, &compressed)), facts.spki_sha256());
        // Another x, or the same x on another curve, is another key.
        let mut other = point.clone();
        other[5] ^= 1;
        assert_ne!(key_of(&spki(&alg, &other)), want);
        assert_ne!(key_of(&spki(&ec_alg(1), &point)), want);
    }

    #[test]
    fn rsa_keys_are_keyed_by_modulus_and_exponent_under_either_oid() {
        let n = [&[0xc5u8][..], &[0x5a; 255]].concat();
        let (rsa, pss) = rsa_algs();
        let key = rsa_key(&n, &[1, 0, 1]);
        let want = key_of(&spki(&rsa, &key));
        assert_eq!(key_of(&spki(&pss, &key)), want);
        assert_ne!(sha256_of(&spki(&pss, &key)), sha256_of(&spki(&rsa, &key)));
        assert_ne!(key_of(&spki(&rsa, &rsa_key(&n, &[3]))), want);
        let mut n2 = n.clone();
        n2[100] ^= 1;
        assert_ne!(key_of(&spki(&rsa, &rsa_key(&n2, &[1, 0, 1]))), want);
        // Ed25519: the raw key; an unknown algorithm falls back to the SPKI.
        let ed = tlv(0x06, KEY_ALGORITHMS[3].0);
        assert_ne!(key_of(&spki(&ed, &[7; 32])), key_of(&spki(&ed, &[8; 32])));
        let unknown = tlv(0x06, &[0x2a, 0x03]);
        assert_ne!(
            key_of(&spki(&unknown, &[7; 32])),
            key_of(&spki(&ed, &[7; 32]))
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Every encoding of an EC point its holder controls (compressed, uncompressed,
        /// hybrid, and `-P`) gives one key; another x or another curve gives another.
        #[test]
        fn ec_encodings_of_one_point_share_a_key(
            x in proptest::array::uniform32(proptest::prelude::any::<u8>()),
            y in proptest::array::uniform32(proptest::prelude::any::<u8>()),
            bit in 0usize..256,
        ) {
            let alg = ec_alg(0);
            let odd = y[31] & 1;
            let want = key_of(&spki(&alg, &[&[0x04][..], &x, &y].concat()));
            let neg_y = sub(&P256_P, &y);
            for point in [
                [&[0x02 | odd][..], &x].concat(),
                [&[0x03 ^ odd][..], &x].concat(),
                [&[0x06 | odd][..], &x, &y].concat(),
                [&[0x04][..], &x, &neg_y].concat(),
            ] {
                proptest::prop_assert_eq!(key_of(&spki(&alg, &point)), want);
            }
            let mut other = x;
            other[bit / 8] ^= 1 << (bit % 8);
            proptest::prop_assert_ne!(key_of(&spki(&alg, &[&[0x04][..], &other, &y].concat())), want);
            proptest::prop_assert_ne!(key_of(&spki(&ec_alg(1), &[&[0x04][..], &x, &y].concat())), want);
        }

        /// An RSA key is its modulus and exponent, under either OID; changing either
        /// changes the key.
        #[test]
        fn rsa_keys_are_their_modulus_and_exponent(
            n in proptest::collection::vec(proptest::prelude::any::<u8>(), 2..300),
            e in proptest::collection::vec(1u8..=255, 1..4),
            bit in 0usize..16,
        ) {
            let (rsa, pss) = rsa_algs();
            let want = key_of(&spki(&rsa, &rsa_key(&n, &e)));
            proptest::prop_assert_eq!(key_of(&spki(&pss, &rsa_key(&n, &e))), want);
            let mut n2 = n.clone();
            let last = n2.len() - 1;
            n2[last - (bit / 8) % n.len().min(2)] ^= 1 << (bit % 8);
            proptest::prop_assume!(strip_leading_zeros(&n2) != strip_leading_zeros(&n));
            proptest::prop_assert_ne!(key_of(&spki(&rsa, &rsa_key(&n2, &e))), want);
            let mut e2 = e.clone();
            e2.push(1);
            proptest::prop_assert_ne!(key_of(&spki(&rsa, &rsa_key(&n, &e2))), want);
        }
    }

    #[test]
    fn key_identifiers_are_read() {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(vec![1, 2, 3, 4]);
        let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).unwrap();
        let ca_facts = parse_der(ca.der()).unwrap();
        assert_eq!(ca_facts.subject_key_id, Some(vec![1, 2, 3, 4]));
        let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        leaf.use_authority_key_identifier_extension = true;
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = parse_der(leaf.signed_by(&key, &ca).unwrap().der()).unwrap();
        assert_eq!(leaf.authority_key_id, Some(vec![1, 2, 3, 4]));
    }

    #[test]
    fn a_repeated_or_malformed_key_identifier_makes_the_certificate_unparsable() {
        // A certificate with two authority key identifiers could choose which one a
        // revoked-issuer lookup sees; one that does not parse hides it.
        let aki = [2, 5, 29, 35];
        let good = vec![0x30, 0x04, 0x80, 0x02, 0x01, 0x02];
        let key = rcgen::KeyPair::generate().unwrap();
        for exts in [vec![good.clone(), good.clone()], vec![vec![0x04, 0x00]]] {
            let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            p.custom_extensions = exts
                .iter()
                .map(|c| rcgen::CustomExtension::from_oid_content(&aki, c.clone()))
                .collect();
            let der = p.self_signed(&key).unwrap().der().to_vec();
            assert!(
                matches!(parse_der(&der), Err(CertError::BadKeyId(_))),
                "{exts:?}"
            );
        }
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(&aki, good)];
        let der = p.self_signed(&key).unwrap().der().to_vec();
        assert_eq!(parse_der(&der).unwrap().authority_key_id, Some(vec![1, 2]));
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
