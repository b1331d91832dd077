//! Certificate facts from real certificates: made per run by rcgen (ECDSA, Ed25519)
//! and by the openssl CLI (RSA sizes and SHA-1 signatures, which rcgen cannot make).

use std::process::Command;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType,
    SerialNumber, SignatureAlgorithm,
};
use ruleset::cert::{parse_der, parse_pem_or_der, peer_cert_from_pem, serial_hex};
use ruleset::*;

fn ca() -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name
        .push(DnType::OrganizationName, "Example");
    p.distinguished_name
        .push(DnType::CommonName, "Intermediate CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(
    ca: &CertifiedIssuer<'static, KeyPair>,
    alg: &'static SignatureAlgorithm,
    uris: &[&str],
) -> rcgen::Certificate {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.subject_alt_names = uris
        .iter()
        .map(|u| SanType::URI(u.to_string().try_into().unwrap()))
        .chain([SanType::DnsName("web.example".try_into().unwrap())])
        .collect();
    p.serial_number = Some(SerialNumber::from_slice(&[0x00, 0x4f, 0x38, 0x0a]));
    p.not_before = rcgen::date_time_ymd(2026, 1, 1);
    p.not_after = rcgen::date_time_ymd(2026, 1, 2);
    let key = KeyPair::generate_for(alg).unwrap();
    p.signed_by(&key, ca).unwrap()
}

const WEB: &str = "spiffe://cluster.local/ns/frontend/sa/web";

#[test]
fn ecdsa_leaf_facts() {
    let ca = ca();
    let cert = leaf(&ca, &rcgen::PKCS_ECDSA_P256_SHA256, &[WEB]);
    let f = parse_der(cert.der()).unwrap();
    assert_eq!(f.serial, vec![0x4f, 0x38, 0x0a]);
    assert_eq!(serial_hex(&f.serial), "4F380A");
    // RFC 4514 order is the reverse of the DER order (rcgen writes CN first).
    assert_eq!(f.issuer, "O=Example,CN=Intermediate CA");
    assert_eq!(
        f.key,
        KeyInfo::Ecdsa {
            curve: Some(Curve::P256)
        }
    );
    assert_eq!(f.signature.hash, SigHash::Sha256);
    assert_eq!(f.signature.name, "ecdsa-with-SHA256");
    assert_eq!(f.not_after - f.not_before, 86_400);
    assert_eq!(f.uri_sans, vec![WEB.to_owned()]);
    assert_eq!(f.dns_sans, vec!["web.example".to_owned()]);
    assert_eq!(
        f.issuer_id,
        ruleset::dn::parse_dn_string("CN=Intermediate CA,O=Example").unwrap()
    );
    use sha2::Digest;
    assert_eq!(
        f.sha256.as_slice(),
        sha2::Sha256::digest(cert.der()).as_slice()
    );

    let p384 = leaf(&ca, &rcgen::PKCS_ECDSA_P384_SHA384, &[WEB]);
    let f = parse_der(p384.der()).unwrap();
    assert_eq!(
        f.key,
        KeyInfo::Ecdsa {
            curve: Some(Curve::P384)
        }
    );
    // The signature is the issuer's: the CA's P-256 key signs with SHA-256.
    assert_eq!(f.signature.hash, SigHash::Sha256);
}

#[test]
fn ed25519_and_every_uri_san() {
    let ca = ca();
    let other = "spiffe://cluster.local/ns/legacy/sa/old";
    let cert = leaf(&ca, &rcgen::PKCS_ED25519, &[WEB, other]);
    let f = parse_der(cert.der()).unwrap();
    assert_eq!(f.key, KeyInfo::Ed25519);
    assert_eq!(f.uri_sans, vec![WEB.to_owned(), other.to_owned()]);
    // Two SPIFFE IDs are ambiguous: the engine refuses the certificate.
    let t = Table {
        policy_names: vec![],
        policy_digest: [0; 32],
        issued_at_ms: 0,
        expires_at_ms: None,
        signer: None,
        mode: Mode::Enforce,
        default_action: Action::Allow,
        audit_log: AuditLog::All,
        constraints: Constraints::default(),
        revocation: Revocation::default(),
        rules: vec![],
    };
    let e = Engine::new(t);
    let p = Peer::new(peer_cert_from_pem(cert.pem().as_bytes()));
    assert_eq!(e.evaluate(&p).reason, Reason::MultipleSpiffeIds);
}

#[test]
fn pem_bundles_and_der_both_read() {
    let ca = ca();
    let a = leaf(&ca, &rcgen::PKCS_ECDSA_P256_SHA256, &[WEB]);
    let bundle = format!("{}{}", a.pem(), ca.pem());
    let certs = parse_pem_or_der(bundle.as_bytes()).unwrap();
    assert_eq!(certs.len(), 2);
    assert_eq!(parse_pem_or_der(a.der()).unwrap().len(), 1);
    let mut trailing = a.der().to_vec();
    trailing.push(0);
    assert_eq!(
        parse_der(&trailing),
        Err(ruleset::cert::CertError::TrailingBytes)
    );
    match peer_cert_from_pem(bundle.as_bytes()) {
        PeerCert::Parsed(f) => assert_eq!(f.uri_sans, vec![WEB.to_owned()]),
        other => panic!("leaf expected, got {other:?}"),
    }
}

/// Makes a self-signed certificate with the openssl CLI and returns its DER bytes.
fn openssl_cert(key_args: &[&str], digest: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    let der = dir.path().join("cert.der");
    let ok = Command::new("openssl")
        .arg("req")
        .args([
            "-x509",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/O=Example/CN=rsa",
        ])
        .args(key_args)
        .arg(format!("-{digest}"))
        .args(["-addext", &format!("subjectAltName=URI:{WEB}")])
        .arg("-keyout")
        .arg(&key)
        .args(["-outform", "DER", "-out"])
        .arg(&der)
        .output()
        .expect("the openssl CLI is needed to make RSA test certificates");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    std::fs::read(der).unwrap()
}

#[test]
fn rsa_sizes_and_sha1_signatures_from_openssl() {
    let f = parse_der(&openssl_cert(&["-newkey", "rsa:1024"], "sha256")).unwrap();
    assert_eq!(f.key, KeyInfo::Rsa { bits: 1024 });
    assert_eq!(f.signature.hash, SigHash::Sha256);
    let f = parse_der(&openssl_cert(&["-newkey", "rsa:2048"], "sha1")).unwrap();
    assert_eq!(f.key, KeyInfo::Rsa { bits: 2048 });
    assert_eq!(f.signature.hash, SigHash::Sha1);
    assert_eq!(f.signature.name, "sha1WithRSAEncryption");
    let f = parse_der(&openssl_cert(
        &["-newkey", "rsa:2048", "-sigopt", "rsa_padding_mode:pss"],
        "sha384",
    ))
    .unwrap();
    assert_eq!(f.signature.hash, SigHash::Sha384);
    assert_eq!(f.signature.name, "rsassa-pss-sha384");
}
