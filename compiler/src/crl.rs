//! Certificate revocation lists: PEM or DER X.509 CRLs read into the facts a policy needs
//! (issuer, validity, revoked serials). `certgate crl` prints the same facts.

use ruleset::cert::{looks_like_pem, pem_blocks};
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

/// Why a `crlUrls` entry is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlError {
    /// The scheme is not `http` or `https` (the scheme, lowercased).
    Scheme(String),
    /// Not an absolute http(s) URL certgate can fetch (what is wrong).
    Malformed(&'static str),
}

/// Checks a `crlUrls` entry: an absolute `http://` or `https://` URL with a host, an optional
/// port, no credentials, no fragment, no whitespace. Returns the key two entries are
/// duplicates by (scheme and host lowercased, the rest as written).
pub fn check_url(url: &str) -> Result<String, UrlError> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(match url.split_once(':') {
            Some((s, _))
                if !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
            {
                UrlError::Scheme(s.to_ascii_lowercase())
            }
            _ => UrlError::Malformed("it is not an absolute URL (`http://HOST/PATH`)"),
        });
    };
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(UrlError::Scheme(scheme));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(UrlError::Malformed(
            "it contains whitespace or a control character",
        ));
    }
    if url.contains('#') {
        return Err(UrlError::Malformed("it has a fragment (`#...`)"));
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.contains('@') {
        return Err(UrlError::Malformed(
            "it carries credentials (`user@`), which a policy file must not hold",
        ));
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((h, "")) => (h, None),
            Some((h, p)) => match p.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None => return Err(UrlError::Malformed("its IPv6 host is malformed")),
            },
            None => return Err(UrlError::Malformed("its IPv6 host is malformed")),
        },
        None => match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    if host.is_empty() {
        return Err(UrlError::Malformed("it has no host"));
    }
    let host_ok = if authority.starts_with('[') {
        host.chars()
            .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
    } else {
        host.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
    };
    if !host_ok {
        return Err(UrlError::Malformed(
            "its host is not a DNS name or an IP address",
        ));
    }
    if let Some(p) = port {
        if !matches!(p.parse::<u16>(), Ok(n) if n > 0) || !p.chars().all(|c| c.is_ascii_digit()) {
            return Err(UrlError::Malformed(
                "its port is not a number from 1 to 65535",
            ));
        }
    }
    Ok(format!(
        "{scheme}://{}{path}",
        authority.to_ascii_lowercase()
    ))
}

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
    /// Serial numbers revoked for the CRL's own issuer: big-endian magnitudes without
    /// leading zero bytes, in file order.
    pub revoked: Vec<Vec<u8>>,
    /// Entries of an indirect CRL that belong to another issuer (after a
    /// `certificateIssuer` entry extension), in file order.
    pub indirect: Vec<IndirectEntry>,
}

/// A serial an indirect CRL revokes for an issuer other than the CRL's signer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndirectEntry {
    /// The certificate issuer's distinguished name, for display.
    pub issuer: String,
    /// [`ruleset::dn::issuer_id_of`] of that issuer.
    pub issuer_id: u64,
    /// The serial's big-endian magnitude.
    pub serial: Vec<u8>,
}

impl CrlInfo {
    /// Every revoked (issuer id, serial) pair, direct and indirect entries alike.
    pub fn entries(&self) -> impl Iterator<Item = (u64, &[u8])> {
        let direct = self.revoked.iter().map(|s| (self.issuer_id, s.as_slice()));
        let indirect = self
            .indirect
            .iter()
            .map(|e| (e.issuer_id, e.serial.as_slice()));
        direct.chain(indirect)
    }
}

/// CRL extensions certgate understands (RFC 5280 5.2): authority key identifier,
/// issuer alternative name, CRL number, issuing distribution point, freshest CRL,
/// authority information access. A critical extension outside this list is refused,
/// as RFC 5280 requires; a delta CRL indicator is refused on its own.
const KNOWN_CRL_EXTENSIONS: &[&str] = &[
    "2.5.29.35",
    "2.5.29.18",
    "2.5.29.20",
    "2.5.29.28",
    "2.5.29.46",
    "1.3.6.1.5.5.7.1.1",
];
/// The delta CRL indicator.
const DELTA_CRL_INDICATOR: &str = "2.5.29.27";
/// CRL entry extensions certgate understands (RFC 5280 5.3): reason code, hold
/// instruction code, invalidity date, certificate issuer.
const KNOWN_ENTRY_EXTENSIONS: &[&str] = &["2.5.29.21", "2.5.29.23", "2.5.29.24", "2.5.29.29"];
/// The certificate issuer entry extension of indirect CRLs.
const CERTIFICATE_ISSUER: &str = "2.5.29.29";

/// Why a CRL could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
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
    /// A critical extension certgate does not understand (RFC 5280: refuse the CRL).
    #[error("the CRL has a critical extension `{0}` certgate does not understand")]
    UnknownCritical(String),
    /// A revoked entry has a critical extension certgate does not understand.
    #[error("the entry for serial `{serial}` has a critical extension `{oid}` certgate does not understand")]
    UnknownCriticalEntry {
        /// The entry's serial, hex.
        serial: String,
        /// The extension's dotted OID.
        oid: String,
    },
    /// A delta CRL: it lists only changes since a base CRL.
    #[error(
        "delta CRLs are not supported (this one lists only changes since base CRL number {0})"
    )]
    Delta(String),
    /// A `certificateIssuer` entry extension without the indirect CRL flag.
    #[error("the entry for serial `{0}` names another certificate issuer, but the CRL is not marked indirect (issuingDistributionPoint `indirectCRL`)")]
    NotIndirect(String),
    /// A `certificateIssuer` entry extension that names no directory name.
    #[error("the certificate issuer of the entry for serial `{0}` is malformed or names no directory name")]
    BadCertificateIssuer(String),
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
    let mut indirect_flag = false;
    for ext in crl.extensions() {
        let oid = ext.oid.to_id_string();
        if oid == DELTA_CRL_INDICATOR {
            let base = x509_parser::der_parser::der::parse_der_integer(ext.value)
                .ok()
                .and_then(|(_, n)| n.as_u64().ok())
                .map_or_else(|| "(unreadable)".into(), |n| n.to_string());
            return Err(CrlError::Delta(base));
        }
        if let x509_parser::extensions::ParsedExtension::IssuingDistributionPoint(idp) =
            ext.parsed_extension()
        {
            indirect_flag = idp.indirect_crl;
        }
        if ext.critical && !KNOWN_CRL_EXTENSIONS.contains(&oid.as_str()) {
            return Err(CrlError::UnknownCritical(oid));
        }
    }
    let (mut revoked, mut indirect) = (Vec::new(), Vec::new());
    // RFC 5280 5.3.3: entries belong to the CRL issuer until a `certificateIssuer`
    // extension names another one; that issuer holds for the entries after it too.
    let mut current: Option<(String, u64)> = None;
    for r in crl.iter_revoked_certificates() {
        let serial = strip_zeros(r.raw_serial());
        let hex = ruleset::cert::serial_hex(&serial);
        for ext in r.extensions() {
            let oid = ext.oid.to_id_string();
            if ext.critical && !KNOWN_ENTRY_EXTENSIONS.contains(&oid.as_str()) {
                return Err(CrlError::UnknownCriticalEntry { serial: hex, oid });
            }
            if oid == CERTIFICATE_ISSUER {
                if !indirect_flag {
                    return Err(CrlError::NotIndirect(hex));
                }
                current = Some(
                    certificate_issuer(ext.value)
                        .ok_or(CrlError::BadCertificateIssuer(hex.clone()))?,
                );
            }
        }
        match &current {
            None => revoked.push(serial),
            Some((issuer, issuer_id)) => indirect.push(IndirectEntry {
                issuer: issuer.clone(),
                issuer_id: *issuer_id,
                serial,
            }),
        }
    }
    Ok(CrlInfo {
        issuer: ruleset::dn::format_name(crl.issuer()),
        issuer_id: ruleset::dn::issuer_id_of(crl.issuer()),
        this_update: crl.last_update().timestamp(),
        next_update: crl.next_update().map(|t| t.timestamp()),
        number: crl.crl_number().map(|n| n.to_string()),
        revoked,
        indirect,
    })
}

/// The directory name of a `certificateIssuer` entry extension (GeneralNames), for
/// display and as an issuer id.
fn certificate_issuer(value: &[u8]) -> Option<(String, u64)> {
    use x509_parser::extensions::{GeneralName, IssuerAlternativeName};
    let (_, names) = IssuerAlternativeName::from_der(value).ok()?;
    names.general_names.iter().find_map(|n| match n {
        GeneralName::DirectoryName(name) => Some((
            ruleset::dn::format_name(name),
            ruleset::dn::issuer_id_of(name),
        )),
        _ => None,
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
    fn crl_urls_are_absolute_http_urls_without_credentials() {
        assert_eq!(
            check_url("HTTP://CA.Example:8080/a.crl"),
            Ok("http://ca.example:8080/a.crl".into())
        );
        assert!(check_url("https://[::1]:443/x?y=1").is_ok());
        assert_eq!(
            check_url("ldap://ca/x"),
            Err(UrlError::Scheme("ldap".into()))
        );
        assert_eq!(
            check_url("file:/etc/crl"),
            Err(UrlError::Scheme("file".into()))
        );
        for bad in [
            "ca.example/a.crl",
            "http:///a.crl",
            "http://user:pw@ca/a.crl",
            "http://ca:0/a.crl",
            "http://ca:99999/a.crl",
            "http://ca:80x/a.crl",
            "http://ca/a b.crl",
            "http://ca/a.crl#frag",
            "http://[::1/a.crl",
            "http://c%61/a.crl",
        ] {
            assert!(
                matches!(check_url(bad), Err(UrlError::Malformed(_))),
                "{bad} accepted"
            );
        }
    }

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
    fn indirect_entries_belong_to_their_certificate_issuer() {
        let crl = parse(include_bytes!("../tests/ui/crl/indirect.crl.der")).unwrap();
        assert_eq!(crl.issuer, "CN=Example CA");
        assert_eq!(crl.revoked, vec![vec![0x10]]);
        let other = ruleset::dn::parse_dn_string("CN=Other CA").unwrap();
        // The certificate issuer holds for the entries after it too (RFC 5280 5.3.3).
        assert_eq!(
            crl.indirect
                .iter()
                .map(|e| (e.issuer.as_str(), e.issuer_id, e.serial.clone()))
                .collect::<Vec<_>>(),
            vec![
                ("CN=Other CA", other, vec![0x11]),
                ("CN=Other CA", other, vec![0x12]),
            ]
        );
        let entries: Vec<(u64, Vec<u8>)> = crl.entries().map(|(i, s)| (i, s.to_vec())).collect();
        assert_eq!(entries.len(), 3);
        assert!(entries.contains(&(crl.issuer_id, vec![0x10])));
        assert!(!entries.contains(&(crl.issuer_id, vec![0x11])));
    }

    #[test]
    fn unsupported_crls_are_refused() {
        let refused = |bytes: &[u8]| parse(bytes).unwrap_err();
        assert_eq!(
            refused(include_bytes!("../tests/ui/crl/critical-extension.crl.der")),
            CrlError::UnknownCritical("1.2.3.4".into())
        );
        assert!(matches!(
            refused(include_bytes!(
                "../tests/ui/crl/critical-entry-extension.crl.der"
            )),
            CrlError::UnknownCriticalEntry { .. }
        ));
        assert_eq!(
            refused(include_bytes!("../tests/ui/crl/delta.crl.der")),
            CrlError::Delta("6".into())
        );
        assert_eq!(
            refused(include_bytes!("../tests/ui/crl/unmarked-indirect.crl.der")),
            CrlError::NotIndirect("11".into())
        );
    }

    /// A root, two intermediates under it (serials 0x77 and 0x78) and a leaf of each.
    struct Pki {
        root: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
        inters: Vec<rcgen::CertifiedIssuer<'static, rcgen::KeyPair>>,
        leaves: Vec<Vec<u8>>,
    }

    fn pki() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        let ca = |cn: &str, serial: u8| {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.distinguished_name.push(DnType::CommonName, cn);
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.serial_number = Some(rcgen::SerialNumber::from_slice(&[serial]));
            p.use_authority_key_identifier_extension = true;
            p
        };
        let root =
            CertifiedIssuer::self_signed(ca("Root", 1), KeyPair::generate().unwrap()).unwrap();
        let mut inters = Vec::new();
        let mut leaves = Vec::new();
        for (i, serial) in [0x77u8, 0x78].into_iter().enumerate() {
            // Both intermediates have the same name: only the key id tells them apart.
            let inter = CertifiedIssuer::signed_by(
                ca("Intermediate", serial),
                KeyPair::generate().unwrap(),
                &root,
            )
            .unwrap();
            let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
            leaf.subject_alt_names = vec![rcgen::SanType::URI(
                format!("spiffe://example.org/w{i}").try_into().unwrap(),
            )];
            leaf.use_authority_key_identifier_extension = true;
            let key = KeyPair::generate().unwrap();
            leaves.push(leaf.signed_by(&key, &inter).unwrap().der().to_vec());
            inters.push(inter);
        }
        Pki {
            root,
            inters,
            leaves,
        }
    }

    #[test]
    fn a_crl_revoking_a_known_ca_revokes_what_it_issued() {
        let pki = pki();
        let crl = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2026, 1, 1),
            next_update: rcgen::date_time_ymd(2040, 1, 1),
            crl_number: rcgen::SerialNumber::from_slice(&[1]),
            issuing_distribution_point: None,
            revoked_certs: vec![rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from_slice(&[0x77]),
                revocation_time: rcgen::date_time_ymd(2026, 1, 1),
                reason_code: None,
                invalidity_date: None,
            }],
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&pki.root)
        .unwrap();
        struct Files(Vec<(&'static str, Vec<u8>)>);
        impl crate::Loader for Files {
            fn load(&self, _: &crate::Input, path: &str) -> Result<Vec<u8>, String> {
                self.0
                    .iter()
                    .find(|(p, _)| *p == path)
                    .map(|(_, b)| b.clone())
                    .ok_or_else(|| "no such file".into())
            }
        }
        let files = Files(vec![
            ("root.crl", crl.der().to_vec()),
            ("root.pem", pki.root.pem().into_bytes()),
            (
                "inters.pem",
                pki.inters
                    .iter()
                    .map(|c| c.pem())
                    .collect::<String>()
                    .into_bytes(),
            ),
            ("inter1.pem", pki.inters[1].pem().into_bytes()),
        ]);
        let decide = |spec: &str, leaf: &[u8]| {
            let text = format!("apiVersion: certgate.dev/v1alpha1\nkind: MeshTLSPolicy\nmetadata: {{name: a}}\nspec:\n  defaultAction: allow\n  revocation:\n{spec}");
            let c = crate::compile(
                vec![crate::Input::new("a.yaml", &text)],
                &files,
                &crate::Options { now: 0 },
            );
            assert_eq!(c.diagnostics, vec![], "{spec}");
            let engine = ruleset::Engine::new(c.table.unwrap());
            let facts = ruleset::cert::parse_der(leaf).unwrap();
            let peer = ruleset::Peer::new(ruleset::PeerCert::Parsed(std::sync::Arc::new(facts)));
            engine.evaluate(&peer).reason.code()
        };
        // The root's CRL revokes intermediate 0x77; the compiler knows it from
        // `caCertificates`, so its leaf is refused and the other intermediate's is not.
        let known =
            "    crls: [root.crl]\n    crlIssuers: [root.pem]\n    caCertificates: [inters.pem]\n";
        assert_eq!(decide(known, &pki.leaves[0]), "revoked_issuer");
        assert_eq!(decide(known, &pki.leaves[1]), "default_allow");
        // Without the CA certificate the CRL revokes only the intermediate itself.
        let unknown = "    crls: [root.crl]\n    crlIssuers: [root.pem]\n";
        assert_eq!(decide(unknown, &pki.leaves[0]), "default_allow");
        // `issuers`: a compromised intermediate, told apart from its namesake by key id.
        let issuers = "    issuers: [inter1.pem]\n";
        assert_eq!(decide(issuers, &pki.leaves[1]), "revoked_issuer");
        assert_eq!(decide(issuers, &pki.leaves[0]), "default_allow");
    }

    #[test]
    fn serials_lose_leading_zeros() {
        assert_eq!(strip_zeros(&[0, 0x80, 1]), vec![0x80, 1]);
        assert_eq!(strip_zeros(&[0]), Vec::<u8>::new());
    }
}
