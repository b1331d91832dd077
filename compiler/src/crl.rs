//! Certificate revocation lists: PEM or DER X.509 CRLs read into the facts a policy needs
//! (issuer, validity, revoked serials). `certgate crl` prints the same facts.

use ruleset::cert::{looks_like_pem, pem_blocks};
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
    /// No given CA certificate verifies the CRL's signature.
    #[error("tried {0}")]
    NotSigned(String),
    /// This build cannot verify signatures (the browser playground).
    #[error("CRL signatures cannot be verified in this build")]
    VerifyUnavailable,
}

/// The DER of a PEM (`X509 CRL`, the first block) or DER CRL.
fn crl_der(bytes: &[u8]) -> Result<Vec<u8>, CrlError> {
    if !looks_like_pem(bytes) {
        return Ok(bytes.to_vec());
    }
    let block = pem_blocks(bytes)
        .map_err(|e| match e {
            ruleset::cert::CertError::Pem(why) => CrlError::Pem(why),
            other => CrlError::Pem(other.to_string()),
        })?
        .into_iter()
        .next()
        .ok_or_else(|| CrlError::Pem("no PEM block".into()))?;
    if block.label != "X509 CRL" {
        return Err(CrlError::WrongPemLabel(block.label));
    }
    Ok(block.der)
}

/// Reads the CA certificates of a `crlIssuers` file: every `CERTIFICATE` block of a PEM
/// bundle, or one DER certificate. Each is checked to parse as X.509.
pub fn read_ca_certs(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    use x509_parser::prelude::X509Certificate;
    let ders = if looks_like_pem(bytes) {
        pem_blocks(bytes)
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|b| b.label == "CERTIFICATE")
            .map(|b| b.der)
            .collect()
    } else {
        vec![bytes.to_vec()]
    };
    if ders.is_empty() {
        return Err("no `CERTIFICATE` block in the PEM file".into());
    }
    for der in &ders {
        X509Certificate::from_der(der)
            .map_err(|_| "not a PEM or DER X.509 certificate".to_string())?;
    }
    Ok(ders)
}

/// Checks that the CRL in `bytes` (PEM or DER) is signed by the key of one of `cas`
/// (DER certificates, as [`read_ca_certs`] returns them).
pub fn verify_signed_by(bytes: &[u8], cas: &[Vec<u8>]) -> Result<(), CrlError> {
    let der = crl_der(bytes)?;
    let (_, crl) = CertificateRevocationList::from_der(&der)
        .map_err(|e| CrlError::Der(crate::yaml::lowercase_first(&e.to_string())))?;
    verify_with(&crl, cas)
}

#[cfg(not(target_arch = "wasm32"))]
fn verify_with(crl: &CertificateRevocationList<'_>, cas: &[Vec<u8>]) -> Result<(), CrlError> {
    use x509_parser::prelude::X509Certificate;
    let mut tried = Vec::new();
    for der in cas {
        let Ok((_, ca)) = X509Certificate::from_der(der) else {
            continue;
        };
        if crl.verify_signature(ca.public_key()).is_ok() {
            return Ok(());
        }
        tried.push(format!("`{}`", ca.subject()));
    }
    Err(CrlError::NotSigned(tried.join(", ")))
}

// ring (x509-parser's `verify`) is left out of the browser build; the playground has no
// files to verify anyway.
#[cfg(target_arch = "wasm32")]
fn verify_with(_crl: &CertificateRevocationList<'_>, _cas: &[Vec<u8>]) -> Result<(), CrlError> {
    Err(CrlError::VerifyUnavailable)
}

/// Reads a PEM (`-----BEGIN X509 CRL-----`) or DER CRL.
pub fn parse(bytes: &[u8]) -> Result<CrlInfo, CrlError> {
    parse_der(&crl_der(bytes)?)
}

fn parse_der(der: &[u8]) -> Result<CrlInfo, CrlError> {
    let (rest, crl) = CertificateRevocationList::from_der(der)
        .map_err(|e| CrlError::Der(crate::yaml::lowercase_first(&e.to_string())))?;
    if !rest.is_empty() {
        return Err(CrlError::TrailingBytes(rest.len()));
    }
    let revoked = crl
        .iter_revoked_certificates()
        .map(|r| strip_zeros(r.raw_serial()))
        .collect();
    Ok(CrlInfo {
        issuer: ruleset::dn::format_name(crl.issuer()),
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

    const V2_PEM: &[u8] = include_bytes!("../../policies/crl/intermediate.crl.pem");
    const V2_CA: &[u8] = include_bytes!("../../policies/crl/intermediate-ca.pem");
    const V1_DER: &[u8] = include_bytes!("../tests/ui/crl/v1.crl.der");
    const V1_CA: &[u8] = include_bytes!("../tests/ui/crl/v1-ca.pem");
    const WRONG_CA: &[u8] = include_bytes!("../tests/ui/crl/wrong-ca.pem");

    #[test]
    fn reads_v2_pem_and_v1_der() {
        let v2 = parse(V2_PEM).unwrap();
        assert_eq!(v2.revoked, vec![vec![0x4f, 0x38, 0x0a]]);
        assert!(v2.number.is_some());
        let v1 = parse(V1_DER).unwrap();
        // RFC 4514 order and spelling, as `certgate cert` shows certificate issuers.
        assert_eq!(v1.issuer, "CN=Example v1 CA,O=Example");
        assert_eq!(v1.revoked, vec![vec![0x10, 0x01]]);
        assert_eq!(v1.number, None);
        assert_ne!(v1.issuer_id, v2.issuer_id);
    }

    #[test]
    fn signatures_verify_against_the_right_ca_only() {
        let v2_ca = read_ca_certs(V2_CA).unwrap();
        let v1_ca = read_ca_certs(V1_CA).unwrap();
        let both: Vec<Vec<u8>> = v2_ca.iter().chain(&v1_ca).cloned().collect();
        verify_signed_by(V2_PEM, &v2_ca).unwrap();
        verify_signed_by(V1_DER, &v1_ca).unwrap();
        verify_signed_by(V2_PEM, &both).unwrap();
        verify_signed_by(V1_DER, &both).unwrap();
        // same issuer name, another key
        let wrong = read_ca_certs(WRONG_CA).unwrap();
        assert!(matches!(
            verify_signed_by(V2_PEM, &wrong),
            Err(CrlError::NotSigned(_))
        ));
        assert!(matches!(
            verify_signed_by(V1_DER, &v2_ca),
            Err(CrlError::NotSigned(_))
        ));
        assert!(read_ca_certs(b"garbage").is_err());
        assert!(read_ca_certs(V2_PEM).is_err());
    }

    #[test]
    fn several_crls_from_several_issuers_compile_into_one_table() {
        struct Files;
        impl crate::Loader for Files {
            fn load(&self, _: &crate::Input, path: &str) -> Result<Vec<u8>, String> {
                Ok(match path {
                    "v2.crl.pem" => V2_PEM,
                    "v1.crl.der" => V1_DER,
                    "v2-ca.pem" => V2_CA,
                    "v1-ca.pem" => V1_CA,
                    _ => return Err("no such file".into()),
                }
                .to_vec())
            }
        }
        let text = "apiVersion: certgate.dev/v1alpha1\nkind: MeshTLSPolicy\nmetadata: {name: a}\nspec:\n  revocation:\n    crls: [v2.crl.pem, v1.crl.der]\n    crlIssuers: [v2-ca.pem, v1-ca.pem]\n    onStale: keep\n";
        let c = crate::compile(
            vec![crate::Input::new("a.yaml", text)],
            &Files,
            &crate::Options { now: 0 },
        );
        assert_eq!(c.diagnostics, vec![]);
        let t = c.table.unwrap();
        assert_eq!(t.revocation.serial_count(), 2);
        assert_eq!(t.revocation.on_stale(), ruleset::OnStale::Keep);
        let v1 = parse(V1_DER).unwrap();
        assert!(t.revocation.is_serial_revoked(v1.issuer_id, &[0x10, 0x01]));
        assert!(!t
            .revocation
            .is_serial_revoked(v1.issuer_id, &[0x4f, 0x38, 0x0a]));
    }

    #[test]
    fn serials_lose_leading_zeros() {
        assert_eq!(strip_zeros(&[0, 0x80, 1]), vec![0x80, 1]);
        assert_eq!(strip_zeros(&[0]), Vec::<u8>::new());
    }
}
