//! The benchmark PKI, made fresh for each run: one ECDSA P-256 CA that issues Envoy's
//! server certificate and every client certificate, a 1,000,000-entry CRL for the
//! compile benchmark, and an RSA leaf (openssl CLI: ring cannot generate RSA keys) for
//! the parse benchmark.
//!
//! Client certificates share one key pair: a certificate is what certgate caches and
//! parses, so thousands of distinct certificates are as good as thousands of keys here,
//! and issuing one costs a signature instead of a key generation.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair,
    KeyUsagePurpose, RevokedCertParams, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// The DNS name in Envoy's server certificate.
pub const SERVER_NAME: &str = "envoy.bench.certgate.test";

/// The CA, the server identity and the shared client key.
#[derive(Debug)]
pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
    client_key: KeyPair,
    /// Envoy's server certificate (PEM).
    pub server_cert_pem: String,
    /// Envoy's server key (PEM).
    pub server_key_pem: String,
    not_before: OffsetDateTime,
}

impl Pki {
    /// A new CA, server certificate and client key.
    pub fn new() -> Result<Pki> {
        let now = OffsetDateTime::now_utc();
        let not_before = now - Duration::hours(1);
        let mut ca_params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "certgate bench");
        dn.push(DnType::CommonName, "certgate bench CA");
        ca_params.distinguished_name = dn;
        ca_params.not_before = not_before;
        ca_params.not_after = now + Duration::days(2);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(
            ca_params,
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
        )?;

        let server_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut sp = leaf_params(not_before, &[0x5e, 0x00]);
        sp.subject_alt_names = vec![SanType::DnsName(SERVER_NAME.try_into()?)];
        sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server = sp.signed_by(&server_key, &ca)?;

        Ok(Pki {
            server_cert_pem: server.pem(),
            server_key_pem: server_key.serialize_pem(),
            client_key: KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
            ca,
            not_before,
        })
    }

    /// The CA certificate (PEM), what Envoy trusts for client certificates.
    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// The shared client private key, PKCS#8 DER.
    pub fn client_key_der(&self) -> Vec<u8> {
        self.client_key.serialize_der()
    }

    /// A client certificate (DER) for `identity` with `serial`, signed by the CA.
    pub fn client_cert(&self, identity: &str, serial: &[u8]) -> Result<Vec<u8>> {
        let mut p = leaf_params(self.not_before, serial);
        p.subject_alt_names = vec![SanType::URI(identity.try_into()?)];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        Ok(p.signed_by(&self.client_key, &self.ca)?.der().to_vec())
    }

    /// A CRL (DER) by the CA revoking `serials`.
    pub fn crl_der(&self, serials: impl Iterator<Item = [u8; 16]>) -> Result<Vec<u8>> {
        let when = self.not_before;
        let revoked_certs = serials
            .map(|s| RevokedCertParams {
                serial_number: SerialNumber::from_slice(&s),
                revocation_time: when,
                reason_code: None,
                invalidity_date: None,
            })
            .collect();
        let crl = CertificateRevocationListParams {
            this_update: when,
            next_update: when + Duration::days(7),
            crl_number: SerialNumber::from_slice(&[1]),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.ca)?;
        Ok(crl.der().to_vec())
    }
}

/// The serial of the `i`-th client certificate: 16 bytes, a fixed prefix then `i`, so
/// serials never repeat within a run and are as long as a real CA's.
pub fn client_serial(i: u64) -> Vec<u8> {
    let mut s = vec![0x7e, 0xc1, 0x1e, 0x47, 0x5e, 0x41, 0xa1, 0x00];
    s.extend_from_slice(&i.to_be_bytes());
    s
}

fn leaf_params(not_before: OffsetDateTime, serial: &[u8]) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name
        .push(DnType::OrganizationName, "certgate bench");
    p.not_before = not_before;
    p.not_after = not_before + Duration::hours(25);
    p.serial_number = Some(SerialNumber::from_slice(serial));
    p.use_authority_key_identifier_extension = true;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p
}

/// A self-signed RSA-2048 leaf with one SPIFFE URI SAN (DER), made with the openssl CLI.
pub fn rsa_leaf_der(dir: &Path, identity: &str) -> Result<Vec<u8>> {
    let key = dir.join("rsa.key");
    let cert = dir.join("rsa.der");
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/O=certgate bench/CN=rsa leaf"])
        .args(["-addext", &format!("subjectAltName=URI:{identity}")])
        .args(["-outform", "DER", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .context("running openssl (needed for the RSA leaf)")?;
    if !out.status.success() {
        bail!(
            "openssl req failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(std::fs::read(&cert)?)
}
