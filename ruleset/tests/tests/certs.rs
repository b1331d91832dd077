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

/// Regression: an RSA key under the RSASSA-PSS SPKI OID counted as "other", so
/// `rsaMinBits` and the RSA-only policies never saw it.
#[test]
fn rsassa_pss_keys_are_rsa_with_their_modulus_size() {
    for bits in ["2048", "3072"] {
        let der = openssl_cert(
            &[
                "-newkey",
                "rsa-pss",
                "-pkeyopt",
                &format!("rsa_keygen_bits:{bits}"),
            ],
            "sha256",
        );
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(
            cert.public_key().algorithm.algorithm.to_id_string(),
            "1.2.840.113549.1.1.10",
            "openssl made a PSS-keyed certificate"
        );
        let f = parse_der(&der).unwrap();
        assert_eq!(
            f.key,
            KeyInfo::Rsa {
                bits: bits.parse().unwrap()
            }
        );
        assert_eq!(f.signature.name, "rsassa-pss-sha256");
    }
}

/// A self-signed certificate from the openssl CLI with `extra` arguments to `req`, and
/// the config that picks the string types OpenSSL's `default` mask does: PrintableString
/// for ASCII, T61String for Latin-1, BMPString beyond.
fn openssl_cert_with(extra: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("req.cnf");
    std::fs::write(
        &config,
        "[req]\ndistinguished_name=dn\nstring_mask=default\nutf8=yes\n[dn]\n",
    )
    .unwrap();
    let der = dir.path().join("cert.der");
    let out = Command::new("openssl")
        .args(["req", "-x509", "-nodes", "-days", "1", "-config"])
        .arg(&config)
        .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"])
        .args(["-keyout"])
        .arg(dir.path().join("key.pem"))
        .args(extra)
        .args(["-outform", "DER", "-out"])
        .arg(&der)
        .output()
        .expect("the openssl CLI is needed to make test certificates");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(der).unwrap()
}

/// The ASN.1 string tag of every attribute value of a certificate's issuer.
fn issuer_string_tags(der: &[u8]) -> Vec<u32> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.issuer()
        .iter_attributes()
        .map(|a| a.attr_value().tag().0)
        .collect()
}

/// Regression: issuer names in BMPString, UniversalString or TeletexString never
/// matched a policy `issuer:`. Certificates and CRLs from real tooling, in each type.
#[test]
fn issuer_names_in_every_string_type_match_the_policy_name() {
    const T61: u32 = 20;
    const UNIVERSAL: u32 = 28;
    const BMP: u32 = 30;
    let latin = parse_dn_string_ok("CN=Zürich CA,O=Exämple");
    // openssl: T61String for Latin-1.
    let der = openssl_cert_with(&["-subj", "/O=Exämple/CN=Zürich CA"]);
    assert_eq!(issuer_string_tags(&der), vec![T61, T61]);
    let f = parse_der(&der).unwrap();
    assert_eq!(f.issuer_id, latin);
    assert_eq!(f.issuer, "CN=Zürich CA,O=Exämple");
    // openssl: BMPString beyond Latin-1.
    let der = openssl_cert_with(&["-subj", "/O=Exämple/CN=Zürich CA 中"]);
    assert_eq!(issuer_string_tags(&der), vec![T61, BMP]);
    assert_eq!(
        parse_der(&der).unwrap().issuer_id,
        parse_dn_string_ok("CN=zürich ca 中,O=exämple")
    );

    // rcgen: a CA named in BMPString or UniversalString issues a leaf and a CRL.
    let bmp = |s: &str| rcgen::DnValue::BmpString(rcgen::string::BmpString::try_from(s).unwrap());
    let ucs = |s: &str| {
        rcgen::DnValue::UniversalString(rcgen::string::UniversalString::try_from(s).unwrap())
    };
    type Value<'a> = &'a dyn Fn(&str) -> rcgen::DnValue;
    let types: [(u32, Value<'_>); 2] = [(BMP, &bmp), (UNIVERSAL, &ucs)];
    for (tag, value) in types {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(DnType::OrganizationName, value("Exämple"));
        p.distinguished_name
            .push(DnType::CommonName, value("Zürich CA"));
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
        let leaf = CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .signed_by(&KeyPair::generate().unwrap(), &ca)
            .unwrap();
        assert_eq!(issuer_string_tags(leaf.der()), vec![tag, tag]);
        let f = parse_der(leaf.der()).unwrap();
        assert_eq!(f.issuer_id, latin, "tag {tag}");
        // RFC 4514 order is the reverse of the DER order (rcgen writes CN first).
        assert_eq!(f.issuer, "O=Exämple,CN=Zürich CA");

        let crl = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2026, 1, 1),
            next_update: rcgen::date_time_ymd(2026, 2, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: vec![],
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&ca)
        .unwrap();
        let (_, crl) = x509_parser::parse_x509_crl(crl.der()).unwrap();
        assert_eq!(ruleset::dn::issuer_id_of(crl.issuer()), latin, "tag {tag}");
    }
}

fn parse_dn_string_ok(s: &str) -> u64 {
    ruleset::dn::parse_dn_string(s).unwrap()
}

/// Regression: a serial written as OpenSSL prints a negative one (`-4F380A`) was read
/// as the positive 4F380A, so the policy never revoked the certificate.
#[test]
fn a_negative_serial_is_revoked_as_openssl_prints_it() {
    for (set, printed_by_text) in [
        ("-0x4F380A", "-4F380A"),
        (
            "-0x4F380A11223344556677889900",
            "(Negative)4f:38:0a:11:22:33:44:55:66:77:88:99:00",
        ),
    ] {
        let der = openssl_cert_with(&["-subj", "/CN=neg", "-set_serial", set]);
        let f = parse_der(&der).unwrap();
        let text = Command::new("openssl")
            .args(["x509", "-inform", "DER", "-noout", "-serial"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(&der)?;
                c.wait_with_output()
            })
            .unwrap();
        let printed = String::from_utf8(text.stdout).unwrap();
        let printed = printed.trim().strip_prefix("serial=").unwrap().to_owned();
        assert!(printed.starts_with('-'), "{printed}");
        let issuer = parse_dn_string_ok("CN=neg");
        for spelling in [printed.as_str(), printed_by_text] {
            let mut t = crate::support::table(vec![]);
            t.default_action = Action::Allow;
            t.revocation.add_serial(
                Some(issuer),
                &ruleset::cert::parse_serial(spelling).unwrap(),
            );
            t.revocation.normalize();
            let engine = Engine::new(t);
            let peer = crate::support::peer(f.clone());
            assert_eq!(
                engine.evaluate(&peer).reason,
                Reason::RevokedSerial,
                "{spelling}"
            );
        }
        // The positive serial of the same digits is another certificate.
        let mut t = crate::support::table(vec![]);
        t.default_action = Action::Allow;
        let positive = printed.trim_start_matches('-');
        t.revocation.add_serial(
            Some(issuer),
            &ruleset::cert::parse_serial(positive).unwrap(),
        );
        t.revocation.normalize();
        let peer = crate::support::peer(f.clone());
        assert_ne!(Engine::new(t).evaluate(&peer).reason, Reason::RevokedSerial);
    }
}
