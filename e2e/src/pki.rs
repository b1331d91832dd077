//! A throwaway PKI made fresh for each test run: a root and an intermediate CA, the
//! server certificate Envoy presents, one SPIFFE workload leaf per matrix case, a CRL
//! that revokes one of them, and a root CRL that revokes the intermediate (for the
//! revoked-CA tests only).
//!
//! rcgen (ring) issues what it can; the openssl CLI issues what rcgen cannot (RSA keys,
//! which ring cannot generate, and a SHA-1 signature, which rcgen refuses to make).
//! Both sign with the same intermediate key, so every leaf chains to the same root.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair,
    KeyUsagePurpose, RevokedCertParams, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// The trust domain of every workload in the test PKI.
pub const TRUST_DOMAIN: &str = "cluster.local";
/// The DNS name in Envoy's server certificate; clients verify it.
pub const SERVER_NAME: &str = "envoy.certgate.test";
/// The subject of the intermediate CA (the issuer of every leaf).
pub const INTERMEDIATE_DN: &str = "CN=certgate e2e intermediate CA,O=certgate e2e";
/// The intermediate CA's serial, which the root CRL revokes.
pub const INTERMEDIATE_SERIAL: u64 = 0x1A7E;

/// The key of a workload leaf, and how it is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafKey {
    /// ECDSA P-256, signed with ECDSA-SHA256 (rcgen).
    EcdsaP256,
    /// Ed25519 (rcgen).
    Ed25519,
    /// RSA of the given size, signed with ECDSA-SHA256 (openssl CLI).
    Rsa(u32),
    /// ECDSA P-256 key, certificate signed with ECDSA-SHA1 (openssl CLI).
    EcdsaSha1,
}

/// One workload leaf to issue.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    /// Short name; files are `<name>.pem` (leaf + intermediate), `<name>.key`.
    pub name: &'static str,
    /// URI SANs, in order.
    pub uris: Vec<String>,
    /// Key and signature.
    pub key: LeafKey,
    /// Lifetime, `notAfter - notBefore`.
    pub lifetime: Duration,
    /// Serial number (positive, big-endian, as issued).
    pub serial: u64,
}

/// An issued workload leaf.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// What was asked for.
    pub spec: LeafSpec,
    /// PEM: the leaf, then the intermediate (what a client presents).
    pub chain_pem: PathBuf,
    /// PEM: the private key (PKCS#8).
    pub key_pem: PathBuf,
}

impl Leaf {
    /// The first URI SAN (the SPIFFE ID for single-ID leaves).
    pub fn spiffe_id(&self) -> &str {
        self.spec.uris.first().map(String::as_str).unwrap_or("")
    }

    /// The serial as uppercase hex without separators or leading zeros.
    pub fn serial_hex(&self) -> String {
        format!("{:X}", self.spec.serial)
    }
}

/// The PKI of one run, written under `dir`.
#[derive(Debug)]
pub struct Pki {
    /// Where everything is written.
    pub dir: PathBuf,
    /// The root CA certificate (what Envoy trusts).
    pub root_pem: PathBuf,
    /// The intermediate CA certificate.
    pub intermediate_pem: PathBuf,
    /// Envoy's server certificate chain and key.
    pub server_chain_pem: PathBuf,
    /// Envoy's server key.
    pub server_key_pem: PathBuf,
    /// The CRL (PEM), issued by the intermediate, at `crl/intermediate.crl` under `dir`.
    pub crl_pem: PathBuf,
    /// A CRL (PEM) issued by the root that revokes the intermediate, at `crl/root.crl`.
    pub root_crl_pem: PathBuf,
    /// Every workload leaf.
    pub leaves: Vec<Leaf>,
}

/// SPIFFE ID in the test trust domain.
pub fn spiffe(path: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/{path}")
}

/// The leaves every scenario uses. Names are what tests refer to.
pub fn standard_leaves() -> Vec<LeafSpec> {
    let short = Duration::hours(12);
    let leaf = |name, uris: Vec<String>, key, lifetime, serial| LeafSpec {
        name,
        uris,
        key,
        lifetime,
        serial,
    };
    vec![
        leaf(
            "web",
            vec![spiffe("ns/frontend/sa/web")],
            LeafKey::EcdsaP256,
            short,
            0x5E01,
        ),
        leaf(
            "checkout",
            vec![spiffe("ns/checkout/sa/api")],
            LeafKey::EcdsaP256,
            short,
            0x5E02,
        ),
        leaf(
            "stranger",
            vec![spiffe("ns/other/sa/stranger")],
            LeafKey::EcdsaP256,
            short,
            0x5E03,
        ),
        leaf(
            "legacy",
            vec![spiffe("ns/legacy/sa/old")],
            LeafKey::EcdsaP256,
            short,
            0x5E04,
        ),
        leaf(
            "revoked",
            vec![spiffe("ns/checkout/sa/revoked")],
            LeafKey::EcdsaP256,
            short,
            0x5E05,
        ),
        leaf(
            "rsa2048",
            vec![spiffe("ns/checkout/sa/rsa2048")],
            LeafKey::Rsa(2048),
            short,
            0x5E06,
        ),
        leaf(
            "rsa1024",
            vec![spiffe("ns/checkout/sa/rsa1024")],
            LeafKey::Rsa(1024),
            short,
            0x5E07,
        ),
        leaf(
            "ed25519",
            vec![spiffe("ns/checkout/sa/ed25519")],
            LeafKey::Ed25519,
            short,
            0x5E08,
        ),
        leaf(
            "longlived",
            vec![spiffe("ns/checkout/sa/longlived")],
            LeafKey::EcdsaP256,
            Duration::days(365),
            0x5E09,
        ),
        leaf(
            "sha1",
            vec![spiffe("ns/checkout/sa/sha1")],
            LeafKey::EcdsaSha1,
            short,
            0x5E0A,
        ),
        leaf(
            "twouri",
            vec![spiffe("ns/checkout/sa/one"), spiffe("ns/checkout/sa/two")],
            LeafKey::EcdsaP256,
            short,
            0x5E0B,
        ),
        // Expired half an hour ago (issued an hour ago for 30 minutes): Envoy refuses it in
        // the handshake, before the filter runs (the lifecycle test).
        leaf(
            "expired",
            vec![spiffe("ns/frontend/sa/web")],
            LeafKey::EcdsaP256,
            Duration::minutes(30),
            0x5E0D,
        ),
        leaf(
            "foreign",
            vec!["spiffe://evil.example/ns/frontend/sa/web".to_string()],
            LeafKey::EcdsaP256,
            short,
            0x5E0C,
        ),
    ]
}

/// The leaf the CRL revokes.
pub const REVOKED_LEAF: &str = "revoked";

impl Pki {
    /// Issues the CAs, the server certificate, `leaves` and the CRL under `dir`.
    pub fn generate(dir: &Path, leaves: &[LeafSpec]) -> Result<Pki> {
        std::fs::create_dir_all(dir.join("crl"))?;
        let now = OffsetDateTime::now_utc();

        let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut root_params = ca_params("certgate e2e root CA", now, Duration::days(30));
        root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let root = CertifiedIssuer::self_signed(root_params, root_key)?;

        let int_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let int_key_pem = int_key.serialize_pem();
        let mut int_params = ca_params("certgate e2e intermediate CA", now, Duration::days(30));
        int_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        int_params.use_authority_key_identifier_extension = true;
        int_params.serial_number =
            Some(SerialNumber::from_slice(&serial_bytes(INTERMEDIATE_SERIAL)));
        let int = CertifiedIssuer::signed_by(int_params, int_key, &root)?;

        let root_pem = dir.join("root.pem");
        let intermediate_pem = dir.join("intermediate.pem");
        std::fs::write(&root_pem, root.pem())?;
        std::fs::write(&intermediate_pem, int.pem())?;
        let int_key_path = dir.join("intermediate.key");
        std::fs::write(&int_key_path, &int_key_pem)?;

        // Envoy's own certificate: a server leaf with a DNS SAN the clients verify.
        let server_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut server_params = leaf_params(now, Duration::days(1), 0x5E00);
        server_params.subject_alt_names = vec![
            SanType::DnsName(SERVER_NAME.try_into()?),
            SanType::URI(spiffe("ns/payments/sa/envoy").try_into()?),
        ];
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server = server_params.signed_by(&server_key, &int)?;
        let server_chain_pem = dir.join("server.pem");
        let server_key_pem = dir.join("server.key");
        std::fs::write(&server_chain_pem, format!("{}{}", server.pem(), int.pem()))?;
        std::fs::write(&server_key_pem, server_key.serialize_pem())?;

        let mut issued = Vec::new();
        for spec in leaves {
            let chain_pem = dir.join(format!("{}.pem", spec.name));
            let key_pem = dir.join(format!("{}.key", spec.name));
            let leaf_pem = match spec.key {
                LeafKey::EcdsaP256 | LeafKey::Ed25519 => {
                    let alg = if spec.key == LeafKey::Ed25519 {
                        &rcgen::PKCS_ED25519
                    } else {
                        &rcgen::PKCS_ECDSA_P256_SHA256
                    };
                    let key = KeyPair::generate_for(alg)?;
                    let mut params = leaf_params(now, spec.lifetime, spec.serial);
                    params.subject_alt_names = spec
                        .uris
                        .iter()
                        .map(|u| Ok(SanType::URI(u.as_str().try_into()?)))
                        .collect::<Result<_>>()?;
                    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
                    let cert = params.signed_by(&key, &int)?;
                    std::fs::write(&key_pem, key.serialize_pem())?;
                    cert.pem()
                }
                LeafKey::Rsa(bits) => openssl_leaf(
                    dir,
                    spec,
                    &format!("rsa:{bits}"),
                    "sha256",
                    &intermediate_pem,
                    &int_key_path,
                    &key_pem,
                )?,
                LeafKey::EcdsaSha1 => openssl_leaf(
                    dir,
                    spec,
                    "ec:P-256",
                    "sha1",
                    &intermediate_pem,
                    &int_key_path,
                    &key_pem,
                )?,
            };
            std::fs::write(&chain_pem, format!("{}{}", leaf_pem, int.pem()))?;
            issued.push(Leaf {
                spec: spec.clone(),
                chain_pem,
                key_pem,
            });
        }

        let revoked: Vec<RevokedCertParams> = leaves
            .iter()
            .filter(|l| l.name == REVOKED_LEAF)
            .map(|l| RevokedCertParams {
                serial_number: SerialNumber::from_slice(&serial_bytes(l.serial)),
                revocation_time: now - Duration::minutes(5),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect();
        let crl = CertificateRevocationListParams {
            this_update: now - Duration::minutes(5),
            next_update: now + Duration::days(7),
            crl_number: SerialNumber::from_slice(&[1]),
            issuing_distribution_point: None,
            revoked_certs: revoked,
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&int)?;
        let crl_pem = dir.join("crl").join("intermediate.crl");
        std::fs::write(&crl_pem, crl.pem()?)?;
        let root_crl = CertificateRevocationListParams {
            this_update: now - Duration::minutes(5),
            next_update: now + Duration::days(7),
            crl_number: SerialNumber::from_slice(&[1]),
            issuing_distribution_point: None,
            revoked_certs: vec![RevokedCertParams {
                serial_number: SerialNumber::from_slice(&serial_bytes(INTERMEDIATE_SERIAL)),
                revocation_time: now - Duration::minutes(5),
                reason_code: Some(rcgen::RevocationReason::CaCompromise),
                invalidity_date: None,
            }],
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&root)?;
        let root_crl_pem = dir.join("crl").join("root.crl");
        std::fs::write(&root_crl_pem, root_crl.pem()?)?;

        Ok(Pki {
            dir: dir.to_path_buf(),
            root_pem,
            intermediate_pem,
            server_chain_pem,
            server_key_pem,
            crl_pem,
            root_crl_pem,
            leaves: issued,
        })
    }

    /// The issued leaf called `name`.
    pub fn leaf(&self, name: &str) -> &Leaf {
        match self.leaves.iter().find(|l| l.spec.name == name) {
            Some(l) => l,
            None => panic!("test PKI has no leaf `{name}`"),
        }
    }
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "certgate e2e");
    dn
}

impl Pki {
    /// A new CRL (DER) of the intermediate CA, signed with its key, revoking the leaves
    /// named `revoked`, issued `age` ago (for CRLs that change during a test).
    pub fn intermediate_crl(&self, revoked: &[&str], age: Duration, number: u8) -> Result<Vec<u8>> {
        let key = KeyPair::from_pem(&std::fs::read_to_string(self.dir.join("intermediate.key"))?)?;
        let now = OffsetDateTime::now_utc();
        // Same name and key as the intermediate certificate: that is what a CRL verifies by.
        let issuer = rcgen::Issuer::new(
            ca_params("certgate e2e intermediate CA", now, Duration::days(30)),
            key,
        );
        let crl = CertificateRevocationListParams {
            this_update: now - age,
            next_update: now + Duration::days(1),
            crl_number: SerialNumber::from_slice(&[number]),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|name| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&serial_bytes(
                        self.leaf(name).spec.serial,
                    )),
                    revocation_time: now - age,
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&issuer)?;
        Ok(crl.der().to_vec())
    }
}

fn ca_params(cn: &str, now: OffsetDateTime, lifetime: Duration) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(cn);
    p.not_before = now - Duration::hours(1);
    p.not_after = p.not_before + lifetime;
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

fn leaf_params(now: OffsetDateTime, lifetime: Duration, serial: u64) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name
        .push(DnType::OrganizationName, "certgate e2e");
    p.not_before = now - Duration::hours(1);
    p.not_after = p.not_before + lifetime;
    p.serial_number = Some(SerialNumber::from_slice(&serial_bytes(serial)));
    p.use_authority_key_identifier_extension = true;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p
}

/// Big-endian bytes without leading zeros (positive as DER INTEGER for our serials).
fn serial_bytes(serial: u64) -> Vec<u8> {
    let bytes = serial.to_be_bytes();
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(7);
    bytes.get(first..).unwrap_or(&bytes).to_vec()
}

/// Issues a leaf with the openssl CLI: `keyspec` as for `req -newkey`, `digest` the
/// signature hash. Writes the key to `key_out` and returns the leaf PEM.
fn openssl_leaf(
    dir: &Path,
    spec: &LeafSpec,
    keyspec: &str,
    digest: &str,
    ca_pem: &Path,
    ca_key: &Path,
    key_out: &Path,
) -> Result<String> {
    let csr = dir.join(format!("{}.csr", spec.name));
    let ext = dir.join(format!("{}.ext", spec.name));
    let out = dir.join(format!("{}.leaf.pem", spec.name));
    let (alg, opt) = match keyspec.split_once(':') {
        Some(("rsa", bits)) => ("RSA", format!("rsa_keygen_bits:{bits}")),
        Some(("ec", curve)) => ("EC", format!("ec_paramgen_curve:{curve}")),
        _ => bail!("unknown key spec `{keyspec}`"),
    };
    run_openssl(&[
        "genpkey",
        "-algorithm",
        alg,
        "-pkeyopt",
        &opt,
        "-out",
        &path_str(key_out)?,
    ])?;
    run_openssl(&[
        "req",
        "-new",
        "-key",
        &path_str(key_out)?,
        "-subj",
        "/O=certgate e2e",
        "-out",
        &path_str(&csr)?,
    ])?;
    let sans: Vec<String> = spec.uris.iter().map(|u| format!("URI:{u}")).collect();
    std::fs::write(
        &ext,
        format!(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=clientAuth\nsubjectAltName={}\n\
             authorityKeyIdentifier=keyid\n",
            sans.join(",")
        ),
    )?;
    // `openssl x509 -req` counts whole days from now (OpenSSL 3.0 has no -not_before):
    // a 12 h leaf becomes a 1-day leaf, still well under the policies' maxLifetime.
    let hours = spec.lifetime.whole_hours().max(1);
    let days = (hours + 23) / 24;
    run_openssl(&[
        "x509",
        "-req",
        "-in",
        &path_str(&csr)?,
        "-CA",
        &path_str(ca_pem)?,
        "-CAkey",
        &path_str(ca_key)?,
        "-set_serial",
        &format!("0x{:X}", spec.serial),
        &format!("-{digest}"),
        "-days",
        &days.to_string(),
        "-extfile",
        &path_str(&ext)?,
        "-out",
        &path_str(&out)?,
    ])?;
    Ok(std::fs::read_to_string(&out)?)
}

/// The order of the P-256 group.
const P256_N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// A DER element at the start of `der`: (whole element, content, rest).
fn der_split(der: &[u8]) -> Result<(&[u8], &[u8], &[u8])> {
    let first = *der.get(1).context("short DER")?;
    let (len, hdr) = match first {
        n if n < 0x80 => (usize::from(n), 2),
        0x81 => (usize::from(*der.get(2).context("short DER")?), 3),
        0x82 => {
            let hi = usize::from(*der.get(2).context("short DER")?);
            let lo = usize::from(*der.get(3).context("short DER")?);
            ((hi << 8) | lo, 4)
        }
        _ => bail!("unsupported DER length"),
    };
    let end = hdr + len;
    Ok((
        der.get(..end).context("short DER")?,
        der.get(hdr..end).context("short DER")?,
        der.get(end..).context("short DER")?,
    ))
}

/// A DER element with a definite length.
fn der_tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    let n = body.len();
    if n < 0x80 {
        v.push(n as u8);
    } else if n < 0x100 {
        v.extend([0x81, n as u8]);
    } else {
        v.extend([0x82, (n >> 8) as u8, n as u8]);
    }
    v.extend_from_slice(body);
    v
}

/// A non-negative DER INTEGER from a big-endian magnitude.
fn der_uint(magnitude: &[u8]) -> Vec<u8> {
    let start = magnitude
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(magnitude.len());
    let mut m = magnitude.get(start..).unwrap_or_default().to_vec();
    if m.first().is_none_or(|b| *b >= 0x80) {
        m.insert(0, 0);
    }
    der_tlv(0x02, &m)
}

/// A certificate signed with ECDSA P-256, with its signature's `s` replaced by `n - s`:
/// another DER encoding, another SHA-256, the same tbsCertificate, and still a valid
/// signature (ECDSA accepts both; BoringSSL has no low-S rule). What the holder of a
/// revoked certificate can make without any key.
pub fn reencode_ecdsa_signature(cert_der: &[u8]) -> Result<Vec<u8>> {
    let (_, body, _) = der_split(cert_der)?;
    let (tbs, _, rest) = der_split(body)?;
    let (alg, _, rest) = der_split(rest)?;
    let (_, bits, _) = der_split(rest)?;
    let (_, sig, _) = der_split(bits.get(1..).context("empty signature")?)?;
    let (_, r, rest) = der_split(sig)?;
    let (_, s, _) = der_split(rest)?;
    // n - s over 32-byte big-endian magnitudes (s < n).
    let s_start = s.iter().position(|b| *b != 0).unwrap_or(s.len());
    let s = s.get(s_start..).unwrap_or_default();
    if s.len() > 32 {
        bail!("not a P-256 signature");
    }
    let mut padded = [0u8; 32];
    padded
        .get_mut(32 - s.len()..)
        .context("signature length")?
        .copy_from_slice(s);
    let mut neg = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = i16::from(P256_N[i]) - i16::from(padded[i]) - borrow;
        borrow = i16::from(d < 0);
        if d < 0 {
            d += 256;
        }
        neg[i] = d as u8;
    }
    let mut sig2 = der_uint(r);
    sig2.extend(der_uint(&neg));
    let mut bits2 = vec![0];
    bits2.extend(der_tlv(0x30, &sig2));
    let mut body2 = tbs.to_vec();
    body2.extend_from_slice(alg);
    body2.extend(der_tlv(0x03, &bits2));
    Ok(der_tlv(0x30, &body2))
}

/// Whether openssl verifies `cert_pem` (a leaf) against `root` through `intermediate`.
pub fn openssl_verifies(root: &Path, intermediate: &Path, cert_pem: &Path) -> Result<bool> {
    let out = Command::new("openssl")
        .args(["verify", "-CAfile", &path_str(root)?, "-untrusted"])
        .arg(intermediate)
        .arg(cert_pem)
        .output()
        .context("running the openssl CLI (is openssl installed?)")?;
    Ok(out.status.success())
}

fn path_str(p: &Path) -> Result<String> {
    p.to_str()
        .map(str::to_owned)
        .with_context(|| format!("non-UTF-8 path {}", p.display()))
}

fn run_openssl(args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .context("running the openssl CLI (is openssl installed?)")?;
    if !out.status.success() {
        bail!(
            "openssl {} failed: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
