//! The certificate and key files of `spec.revocation` (`certificates`, `publicKeys`,
//! `issuers`, `caCertificates`): read through the [`crate::Loader`] as CRLs are, and
//! turned into the keys `ruleset::Revocation` stores.

use ruleset::cert::{looks_like_pem, pem_blocks};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::x509::SubjectPublicKeyInfo;

/// Every certificate of a PEM bundle, or the one certificate of a DER file, each
/// checked to parse.
pub fn read_certs(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    crate::crl::read_ca_certs(bytes)
}

/// [`read_certs`] for files that must hold CA certificates only (`issuers`,
/// `caCertificates`): a leaf there would revoke nothing, silently.
pub fn read_ca_certs(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let certs = read_certs(bytes)?;
    for der in &certs {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|_| "not a PEM or DER X.509 certificate".to_string())?;
        let ca = cert
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|bc| bc.value.ca);
        if !ca {
            return Err(format!(
                "`{}` is not a CA certificate (no basicConstraints `CA:TRUE`), so it issued nothing to revoke",
                ruleset::dn::format_name(cert.subject())
            ));
        }
    }
    Ok(certs)
}

/// The revoked-key SHA-256s of a public key file: for each certificate (PEM
/// `CERTIFICATE` or DER) or public key (PEM `PUBLIC KEY` or DER SubjectPublicKeyInfo),
/// its canonical key and its SPKI SHA-256, so a certificate is caught by either.
pub fn read_public_keys(bytes: &[u8]) -> Result<Vec<[u8; 32]>, String> {
    let mut out = Vec::new();
    let mut add = |spki: &SubjectPublicKeyInfo<'_>| {
        out.push(ruleset::cert::public_key_sha256(spki));
        out.push(sha256(spki.raw));
    };
    if looks_like_pem(bytes) {
        let blocks = pem_blocks(bytes).map_err(|e| e.to_string())?;
        for b in &blocks {
            match b.label.as_str() {
                "CERTIFICATE" => {
                    let (_, cert) = X509Certificate::from_der(&b.der).map_err(|_| {
                        "a `CERTIFICATE` block is not an X.509 certificate".to_string()
                    })?;
                    add(cert.public_key());
                }
                "PUBLIC KEY" => {
                    let (_, spki) = SubjectPublicKeyInfo::from_der(&b.der).map_err(|_| {
                        "a `PUBLIC KEY` block is not a SubjectPublicKeyInfo".to_string()
                    })?;
                    add(&spki);
                }
                _ => {}
            }
        }
    } else if let Ok((_, cert)) = X509Certificate::from_der(bytes) {
        add(cert.public_key());
    } else if let Ok((_, spki)) = SubjectPublicKeyInfo::from_der(bytes) {
        add(&spki);
    } else {
        return Err("not a PEM or DER certificate or public key".into());
    }
    if out.is_empty() {
        return Err("no `CERTIFICATE` or `PUBLIC KEY` block in the PEM file".into());
    }
    Ok(out)
}

/// What a CA certificate revokes when the CA is revoked: its subject's issuer id
/// and its subject key identifier (`None` without one: everything under the name).
pub fn issuer_of(der: &[u8]) -> Option<(u64, Option<Vec<u8>>)> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let facts = ruleset::cert::parse_der(der).ok()?;
    Some((
        ruleset::dn::issuer_id_of(cert.subject()),
        facts.subject_key_id,
    ))
}

/// The (issuer id, serial) a CRL entry would name to revoke this certificate.
pub fn issuer_and_serial(der: &[u8]) -> Option<(u64, Vec<u8>)> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some((
        ruleset::dn::issuer_id_of(cert.issuer()),
        ruleset::cert::normalize_serial(cert.raw_serial()),
    ))
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error() {
        assert!(read_public_keys(b"garbage").is_err());
        assert!(
            read_public_keys(b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n").is_err()
        );
        assert!(read_certs(b"garbage").is_err());
    }

    #[test]
    fn a_certificate_and_its_public_key_give_the_same_keys() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let from_cert = read_public_keys(cert.pem().as_bytes()).unwrap();
        let from_key = read_public_keys(key.public_key_pem().as_bytes()).unwrap();
        let from_der = read_public_keys(cert.der()).unwrap();
        assert_eq!(from_cert.len(), 2);
        assert_eq!(from_cert, from_key);
        assert_eq!(from_cert, from_der);
        let facts = ruleset::cert::parse_der(cert.der()).unwrap();
        assert_eq!(
            from_cert,
            vec![facts.public_key_sha256(), facts.spki_sha256()]
        );
    }
}
