//! The names of the last certificate read, remembered with what was computed from them:
//! leaves come from few CAs, so a host that reads one new leaf after another formats and
//! hashes an issuer once, not per leaf.

use std::cell::RefCell;
use std::thread::LocalKey;

use x509_parser::x509::X509Name;

use super::name::{format_name, issuer_id_of};

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

/// The display form and issuer id of `name`, a certificate's issuer.
pub(super) fn issuer(name: &X509Name<'_>) -> (String, u64) {
    remembered(&LAST_ISSUER, name, |name| {
        (format_name(name), issuer_id_of(name))
    })
}

/// The display form of `name`, a certificate's subject.
pub(super) fn subject(name: &X509Name<'_>) -> String {
    remembered(&LAST_SUBJECT, name, format_name)
}

#[cfg(test)]
mod tests {
    use crate::cert::name::{format_name, issuer_id_of};
    use crate::cert::parse_der;

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
            assert_eq!(facts.issuer, format_name(cert.issuer()));
            assert_eq!(facts.issuer_id, issuer_id_of(cert.issuer()));
            assert_eq!(facts.subject, format_name(cert.subject()));
        }
    }
}
