//! The one place that turns certificate bytes into [`CertFacts`]. The filter, the CLI
//! and the playground all call it, so they see the same serial, key and identity.
//!
//! The reading entry points are here; each concept has its own module below them:
//! `error` (why bytes are not a certificate), `pem` (PEM blocks), `serial` (serial
//! numbers), `hex` (hex text and fingerprints), `oid` (the algorithm OIDs certgate
//! knows), [`name`] (distinguished names and issuer ids, also `ruleset::dn`), `key` (key
//! and signature facts, the canonical key, key identifiers), `san` (subject alternative
//! names) and `memo` (the last issuer and subject, remembered). Every public item keeps
//! its `ruleset::cert::` path through the re-exports here.

use sha2::{Digest, Sha256};
use x509_parser::certificate::X509CertificateParser;
use x509_parser::extensions::GeneralName;
use x509_parser::nom::Parser as _;

use crate::{CertFacts, PeerCert, RevocationKeys};

mod error;
pub(crate) mod hex;
mod key;
mod memo;
pub mod name;
mod oid;
mod pem;
mod san;
pub(crate) mod serial;

pub use error::CertError;
pub use hex::{hex_lower, hex_upper, parse_fingerprint};
pub use key::public_key_sha256;
pub use pem::{looks_like_pem, pem_blocks, PemBlock};
pub use serial::{
    normalize_serial, parse_serial, serial_hex, strip_leading_zeros, SerialError, MAX_SERIAL_LEN,
};

/// Reads one DER certificate. Trailing bytes are an error.
pub fn parse_der(der: &[u8]) -> Result<CertFacts, CertError> {
    let mut sha256 = [0u8; 32];
    sha256.copy_from_slice(&Sha256::digest(der));
    parse_der_with_sha256(der, sha256)
}

/// An IP address SAN as text; a length other than 4 or 16 bytes is not an address.
fn ip_text(bytes: &[u8]) -> Option<String> {
    let ip = match bytes.len() {
        4 => std::net::IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => std::net::IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        _ => return None,
    };
    Some(ip.to_string())
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
    let mut other_sans = Vec::new();
    if let Some(san) = san::subject_alt_names(&cert)? {
        for name in &san.general_names {
            match name {
                GeneralName::URI(u) => uri_sans.push((*u).to_owned()),
                GeneralName::DNSName(d) => dns_sans.push((*d).to_owned()),
                GeneralName::RFC822Name(e) => other_sans.push((*e).to_owned()),
                GeneralName::IPAddress(ip) => {
                    if let Some(ip) = ip_text(ip) {
                        other_sans.push(ip);
                    }
                }
                _ => {}
            }
        }
    }
    let (issuer, issuer_id) = memo::issuer(cert.issuer());
    let subject = memo::subject(cert.subject());
    let (subject_key_id, authority_key_id) = key::key_ids(&cert)?;
    let spki = cert.public_key();
    let (key, canonical_key) = key::key_facts(spki);
    Ok(CertFacts {
        serial,
        issuer,
        issuer_id,
        subject,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        key,
        signature: key::signature_info(&cert),
        uri_sans,
        dns_sans,
        other_sans,
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

    #[test]
    fn ip_address_sans_are_text_and_other_lengths_are_not_addresses() {
        assert_eq!(
            super::ip_text(&[192, 0, 2, 7]).as_deref(),
            Some("192.0.2.7")
        );
        let mut v6 = [0u8; 16];
        v6[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        v6[15] = 7;
        assert_eq!(super::ip_text(&v6).as_deref(), Some("2001:db8::7"));
        // A name constraint's address and mask (8 bytes), or garbage: not an address.
        for bad in [&[][..], &[1, 2, 3], &[10, 0, 0, 0, 255, 0, 0, 0], &[0; 17]] {
            assert_eq!(super::ip_text(bad), None, "{bad:?}");
        }
    }
}
