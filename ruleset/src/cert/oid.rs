//! The object identifiers certgate reads from a certificate (signature algorithms, key
//! algorithms, named curves, hash functions) and the lookup by DER bytes that every OID
//! table here and in [`super::name`] uses.

use x509_parser::der_parser::oid::Oid;

use crate::{Curve, SigHash};

/// The row of `table` (DER content bytes, dotted OID, value) for `oid`.
/// Compared by bytes first: formatting an OID as a string allocates and divides per
/// arc, which cost the filter microseconds per certificate in wasm. A miss falls back
/// to the dotted form, so a non-minimally encoded OID still finds its row as before.
pub(super) fn find_row<'t, 'o, T>(
    oid: &Oid<'_>,
    table: &'t [(&'o [u8], &'o str, T)],
) -> Option<&'t (&'o [u8], &'o str, T)> {
    let der = oid.as_bytes();
    if let Some(row) = table.iter().find(|(d, _, _)| *d == der) {
        return Some(row);
    }
    let dotted = oid.to_id_string();
    table.iter().find(|(_, d, _)| *d == dotted)
}

/// The value of [`find_row`].
pub(super) fn find_oid<'t, T>(oid: &Oid<'_>, table: &'t [(&[u8], &str, T)]) -> Option<&'t T> {
    find_row(oid, table).map(|(_, _, v)| v)
}

/// Signature algorithms by OID: display name and hash.
pub(super) const SIGNATURES: &[(&[u8], &str, (&str, SigHash))] = &[
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x04],
        "1.2.840.113549.1.1.4",
        ("md5WithRSAEncryption", SigHash::Md5),
    ),
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05],
        "1.2.840.113549.1.1.5",
        ("sha1WithRSAEncryption", SigHash::Sha1),
    ),
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0e],
        "1.2.840.113549.1.1.14",
        ("sha224WithRSAEncryption", SigHash::Sha224),
    ),
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b],
        "1.2.840.113549.1.1.11",
        ("sha256WithRSAEncryption", SigHash::Sha256),
    ),
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c],
        "1.2.840.113549.1.1.12",
        ("sha384WithRSAEncryption", SigHash::Sha384),
    ),
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d],
        "1.2.840.113549.1.1.13",
        ("sha512WithRSAEncryption", SigHash::Sha512),
    ),
    (
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01],
        "1.2.840.10045.4.1",
        ("ecdsa-with-SHA1", SigHash::Sha1),
    ),
    (
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x01],
        "1.2.840.10045.4.3.1",
        ("ecdsa-with-SHA224", SigHash::Sha224),
    ),
    (
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02],
        "1.2.840.10045.4.3.2",
        ("ecdsa-with-SHA256", SigHash::Sha256),
    ),
    (
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03],
        "1.2.840.10045.4.3.3",
        ("ecdsa-with-SHA384", SigHash::Sha384),
    ),
    (
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04],
        "1.2.840.10045.4.3.4",
        ("ecdsa-with-SHA512", SigHash::Sha512),
    ),
    (
        &[0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x03],
        "1.2.840.10040.4.3",
        ("dsa-with-SHA1", SigHash::Sha1),
    ),
    (
        &[0x2b, 0x65, 0x70],
        "1.3.101.112",
        ("Ed25519", SigHash::Other),
    ),
];

/// Key algorithms by OID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyAlg {
    Rsa,
    Ecdsa,
    Ed25519,
}

pub(super) const KEY_ALGORITHMS: &[(&[u8], &str, KeyAlg)] = &[
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
        "1.2.840.113549.1.1.1",
        KeyAlg::Rsa,
    ),
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a],
        "1.2.840.113549.1.1.10",
        KeyAlg::Rsa,
    ),
    (
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01],
        "1.2.840.10045.2.1",
        KeyAlg::Ecdsa,
    ),
    (&[0x2b, 0x65, 0x70], "1.3.101.112", KeyAlg::Ed25519),
];

pub(super) const CURVES: &[(&[u8], &str, Curve)] = &[
    (
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
        "1.2.840.10045.3.1.7",
        Curve::P256,
    ),
    (&[0x2b, 0x81, 0x04, 0x00, 0x22], "1.3.132.0.34", Curve::P384),
    (&[0x2b, 0x81, 0x04, 0x00, 0x23], "1.3.132.0.35", Curve::P521),
];

pub(super) fn hash_of_oid(oid: &str) -> SigHash {
    match oid {
        "1.2.840.113549.2.5" => SigHash::Md5,
        "1.3.14.3.2.26" => SigHash::Sha1,
        "2.16.840.1.101.3.4.2.4" => SigHash::Sha224,
        "2.16.840.1.101.3.4.2.1" => SigHash::Sha256,
        "2.16.840.1.101.3.4.2.2" => SigHash::Sha384,
        "2.16.840.1.101.3.4.2.3" => SigHash::Sha512,
        _ => SigHash::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oid_tables_hold_the_der_of_their_dotted_oids() {
        fn check<T>(table: &[(&[u8], &str, T)]) {
            for (der, dotted, _) in table {
                let oid: Oid<'_> = dotted.parse().unwrap();
                assert_eq!(oid.as_bytes(), *der, "{dotted}");
            }
        }
        check(SIGNATURES);
        check(KEY_ALGORITHMS);
        check(CURVES);
    }

    #[test]
    fn oids_are_found_by_bytes_and_by_their_dotted_form() {
        let p256: Oid<'_> = "1.2.840.10045.3.1.7".parse().unwrap();
        assert_eq!(find_oid(&p256, CURVES), Some(&Curve::P256));
        // 1.3.132.0.34 with a redundant 0x80 in its second-to-last arc: other bytes,
        // the same dotted form, so the same row as before byte comparison.
        let padded = Oid::new(std::borrow::Cow::Borrowed(&[
            0x2b, 0x81, 0x04, 0x80, 0x00, 0x22,
        ]));
        assert_eq!(padded.to_id_string(), "1.3.132.0.34");
        assert_eq!(find_oid(&padded, CURVES), Some(&Curve::P384));
        let unknown: Oid<'_> = "1.2.3.4".parse().unwrap();
        assert_eq!(find_oid(&unknown, CURVES), None);
    }
}
