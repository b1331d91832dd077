//! The subject alternative name extension, read without x509-parser's deep parse of
//! every extension but with its answers: where the URI SANs (SPIFFE IDs) and DNS names
//! come from.

use x509_parser::certificate::X509Certificate;
use x509_parser::error::X509Error;
use x509_parser::extensions::SubjectAlternativeName;
use x509_parser::oid_registry::OID_X509_EXT_SUBJECT_ALT_NAME;
use x509_parser::prelude::FromDer as _;

use super::error::CertError;

/// The subject alternative name extension of a certificate parsed without deep
/// extension parsing, with the answers of x509-parser's own
/// `X509Certificate::subject_alternative_name` after a deep parse: a repeated extension
/// is `DuplicateExtensions`, one that does not parse is `InvalidExtensions`.
pub(super) fn subject_alt_names<'a>(
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

#[cfg(test)]
mod tests {
    use x509_parser::extensions::GeneralName;

    use crate::cert::{parse_der, CertError};

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
}
