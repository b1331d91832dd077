//! What a certificate's key and signature say to policy ([`KeyInfo`], [`SigInfo`]), the
//! canonical form of a public key that revocation keys it by, and the subject and
//! authority key identifiers.

use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::error::X509Error;
use x509_parser::extensions::{AuthorityKeyIdentifier, KeyIdentifier};
use x509_parser::oid_registry::{
    OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER, OID_X509_EXT_SUBJECT_KEY_IDENTIFIER,
};
use x509_parser::prelude::FromDer as _;
use x509_parser::public_key::RSAPublicKey;
use x509_parser::signature_algorithm::SignatureAlgorithm;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::error::CertError;
use super::oid::{find_oid, hash_of_oid, KeyAlg, CURVES, KEY_ALGORITHMS, SIGNATURES};
use super::serial::{normalize_serial, strip_leading_zeros};
use crate::{KeyInfo, SigHash, SigInfo};

/// The signature algorithm of `cert`: its display name and the hash it uses.
pub(super) fn signature_info(cert: &X509Certificate<'_>) -> SigInfo {
    let alg = &cert.signature_algorithm;
    if let Some((name, hash)) = find_oid(&alg.algorithm, SIGNATURES) {
        return SigInfo {
            name: (*name).to_owned(),
            hash: *hash,
        };
    }
    // RSASSA-PSS names its hash in the parameters (SHA-1 when absent).
    if let Ok(SignatureAlgorithm::RSASSA_PSS(params)) = SignatureAlgorithm::try_from(alg) {
        let hash = hash_of_oid(&params.hash_algorithm_oid().to_id_string());
        return SigInfo {
            name: format!("rsassa-pss-{}", hash.as_str()),
            hash,
        };
    }
    SigInfo {
        name: alg.algorithm.to_id_string(),
        hash: SigHash::Other,
    }
}

/// Bits of a big-endian unsigned magnitude.
fn bit_len(magnitude: &[u8]) -> u32 {
    let m = normalize_serial(magnitude);
    match m.first() {
        None => 0,
        Some(first) => {
            let whole = u32::try_from(m.len().saturating_sub(1))
                .unwrap_or(u32::MAX)
                .saturating_mul(8);
            whole.saturating_add(8u32.saturating_sub(first.leading_zeros()))
        }
    }
}

/// SHA-256 of `bytes`.
fn sha256_of(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// SHA-256 over the canonical form of a public key, the same for every encoding of
/// one key that its holder could present (see `ruleset/FORMAT.md`):
/// - ECDSA on a named curve: `"certgate-pk-ec\0"`, the curve OID's length and DER
///   content, then the x coordinate without leading zero bytes. Compressed,
///   uncompressed and hybrid points carry the same x, and so do `P` and `-P`, which
///   the same private key controls (`-P = (n - d)G`).
/// - RSA (under `rsaEncryption` or RSASSA-PSS): `"certgate-pk-rsa\0"`, the modulus
///   length (`u32`, big-endian) and magnitude, then the exponent magnitude.
/// - Ed25519: `"certgate-pk-ed25519\0"` and the 32 raw key bytes.
/// - anything else, or a key that does not parse: `"certgate-pk-spki\0"` and the
///   SubjectPublicKeyInfo DER.
pub fn public_key_sha256(spki: &SubjectPublicKeyInfo<'_>) -> [u8; 32] {
    sha256_of(&canonical_public_key(spki))
}

/// The canonical form [`public_key_sha256`] hashes: built when a certificate is read,
/// hashed only when a table revokes keys.
fn canonical_public_key(spki: &SubjectPublicKeyInfo<'_>) -> Vec<u8> {
    key_facts(spki).1
}

/// What policy sees of a key ([`KeyInfo`]) and its canonical form, read together: one
/// algorithm lookup and one parse of the key serve both.
pub(super) fn key_facts(spki: &SubjectPublicKeyInfo<'_>) -> (KeyInfo, Vec<u8>) {
    let mut h = Vec::with_capacity(spki.raw.len().saturating_add(24));
    let key = spki.subject_public_key.data.as_ref();
    let info = match find_oid(&spki.algorithm.algorithm, KEY_ALGORITHMS) {
        Some(KeyAlg::Ecdsa) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok());
            if let (Some(curve), Some(x)) = (&curve, ec_x(key)) {
                let oid = curve.as_bytes();
                h.extend_from_slice(b"certgate-pk-ec\0");
                h.push(u8::try_from(oid.len()).unwrap_or(u8::MAX));
                h.extend_from_slice(oid);
                h.extend_from_slice(strip_leading_zeros(x));
            }
            KeyInfo::Ecdsa {
                curve: curve.and_then(|c| find_oid(&c, CURVES).copied()),
            }
        }
        // rsaEncryption and RSASSA-PSS keys hold the same RSAPublicKey; x509-parser's
        // `parsed()` reads only the former, so the key is read here for both.
        Some(KeyAlg::Rsa) => match RSAPublicKey::from_der(key) {
            Ok((_, rsa)) => {
                let n = strip_leading_zeros(rsa.modulus);
                h.extend_from_slice(b"certgate-pk-rsa\0");
                h.extend_from_slice(&u32::try_from(n.len()).unwrap_or(u32::MAX).to_be_bytes());
                h.extend_from_slice(n);
                h.extend_from_slice(strip_leading_zeros(rsa.exponent));
                KeyInfo::Rsa {
                    bits: bit_len(rsa.modulus),
                }
            }
            Err(_) => KeyInfo::Other {
                oid: spki.algorithm.algorithm.to_id_string(),
            },
        },
        Some(KeyAlg::Ed25519) => {
            if key.len() == 32 {
                h.extend_from_slice(b"certgate-pk-ed25519\0");
                h.extend_from_slice(key);
            }
            KeyInfo::Ed25519
        }
        None => KeyInfo::Other {
            oid: spki.algorithm.algorithm.to_id_string(),
        },
    };
    // A key without a canonical form above is named by its whole SPKI.
    if h.is_empty() {
        h.extend_from_slice(b"certgate-pk-spki\0");
        h.extend_from_slice(spki.raw);
    }
    (info, h)
}

/// The x coordinate of a SEC 1 point: `02|03 x`, `04 x y` or the hybrid `06|07 x y`.
fn ec_x(point: &[u8]) -> Option<&[u8]> {
    let (first, rest) = point.split_first()?;
    match first {
        0x02 | 0x03 if !rest.is_empty() => Some(rest),
        0x04 | 0x06 | 0x07 if !rest.is_empty() && rest.len() % 2 == 0 => rest.get(..rest.len() / 2),
        _ => None,
    }
}

/// The subject and authority key identifiers of a certificate parsed without deep
/// extension parsing. A repeated or malformed extension is an error: a certificate
/// could otherwise choose which of two identifiers a lookup sees.
pub(super) type KeyIds = (Option<Vec<u8>>, Option<Vec<u8>>);

pub(super) fn key_ids(cert: &X509Certificate<'_>) -> Result<KeyIds, CertError> {
    let bad = |e: X509Error| CertError::BadKeyId(e.to_string());
    let ski = match cert
        .get_extension_unique(&OID_X509_EXT_SUBJECT_KEY_IDENTIFIER)
        .map_err(bad)?
    {
        None => None,
        Some(ext) => match KeyIdentifier::from_der(ext.value) {
            Ok((_, id)) => Some(id.0.to_vec()),
            Err(_) => return Err(bad(X509Error::InvalidExtensions)),
        },
    };
    let aki = match cert
        .get_extension_unique(&OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER)
        .map_err(bad)?
    {
        None => None,
        Some(ext) => match AuthorityKeyIdentifier::from_der(ext.value) {
            Ok((_, aki)) => aki.key_identifier.map(|id| id.0.to_vec()),
            Err(_) => return Err(bad(X509Error::InvalidExtensions)),
        },
    };
    Ok((ski, aki))
}

#[cfg(test)]
mod tests {
    use x509_parser::prelude::FromDer as _;
    use x509_parser::x509::SubjectPublicKeyInfo;

    use super::*;
    use crate::cert::{parse_der, CertError};

    /// DER TLV with a definite length (test inputs are short).
    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        match body.len() {
            n if n < 0x80 => v.push(n as u8),
            n if n < 0x100 => v.extend([0x81, n as u8]),
            n => v.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        v.extend_from_slice(body);
        v
    }

    /// The content of the DER element at the start of `der`, and what follows it.
    fn split_tlv(der: &[u8]) -> (&[u8], &[u8], &[u8]) {
        let (len, hdr) = match der[1] {
            n if n < 0x80 => (n as usize, 2),
            0x81 => (der[2] as usize, 3),
            0x82 => ((der[2] as usize) << 8 | der[3] as usize, 4),
            _ => unreachable!(),
        };
        (&der[..hdr + len], &der[hdr..hdr + len], &der[hdr + len..])
    }

    /// `a - b` for big-endian magnitudes with `a >= b`, as long as `a`.
    fn sub(a: &[u8], b: &[u8]) -> Vec<u8> {
        let mut out = a.to_vec();
        let mut borrow = 0i32;
        for i in 0..out.len() {
            let ai = out[out.len() - 1 - i] as i32;
            let bi = if i < b.len() {
                b[b.len() - 1 - i] as i32
            } else {
                0
            };
            let mut d = ai - bi - borrow;
            borrow = i32::from(d < 0);
            if d < 0 {
                d += 256;
            }
            let at = out.len() - 1 - i;
            out[at] = d as u8;
        }
        out
    }

    /// A DER INTEGER of a non-negative magnitude.
    fn der_uint(magnitude: &[u8]) -> Vec<u8> {
        let mut m = strip_leading_zeros(magnitude).to_vec();
        if m.first().is_none_or(|b| *b >= 0x80) {
            m.insert(0, 0);
        }
        tlv(0x02, &m)
    }

    const P256_N: [u8; 32] = [
        0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63,
        0x25, 0x51,
    ];

    const P256_P: [u8; 32] = [
        0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff,
    ];

    /// The certificate with its ECDSA P-256 signature's `s` replaced by `n - s`: what
    /// the holder of a certificate can make without any key.
    fn flip_s(cert: &[u8]) -> Vec<u8> {
        let (_, body, _) = split_tlv(cert);
        let (tbs, rest, _) = {
            let (tbs, _, rest) = split_tlv(body);
            (tbs, rest, ())
        };
        let (alg, _, rest) = split_tlv(rest);
        let (_, bits, _) = split_tlv(rest);
        let (_, sig, _) = split_tlv(&bits[1..]);
        let (_, r, rest) = split_tlv(sig);
        let (_, s, _) = split_tlv(rest);
        let s2 = sub(&P256_N, strip_leading_zeros(s));
        let mut sig2 = der_uint(r);
        sig2.extend(der_uint(&s2));
        let mut bits2 = vec![0];
        bits2.extend(tlv(0x30, &sig2));
        let mut body2 = tbs.to_vec();
        body2.extend_from_slice(alg);
        body2.extend(tlv(0x03, &bits2));
        tlv(0x30, &body2)
    }

    fn ec_leaf() -> (Vec<u8>, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["a.example".to_string()]).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, "leaf");
        let der = p.self_signed(&key).unwrap().der().to_vec();
        (der, key)
    }

    #[test]
    fn a_re_encoded_signature_keeps_the_certificate_key() {
        let (der, _) = ec_leaf();
        let flipped = flip_s(&der);
        assert_ne!(flipped, der);
        // Still a valid signature by the same key (the holder needs no private key):
        // openssl checks the self-signature; a damaged signature is refused.
        let verifies = |der: &[u8]| {
            use base64::Engine as _;
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("c.pem");
            let b64 = base64::engine::general_purpose::STANDARD.encode(der);
            std::fs::write(
                &path,
                format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n"),
            )
            .unwrap();
            let p = path.to_str().unwrap();
            std::process::Command::new("openssl")
                .args(["verify", "-check_ss_sig", "-CAfile", p, p])
                .output()
                .unwrap()
                .status
                .success()
        };
        assert!(verifies(&der));
        assert!(verifies(&flipped));
        let mut damaged = flipped.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(!verifies(&damaged));
        let (a, b) = (parse_der(&der).unwrap(), parse_der(&flipped).unwrap());
        assert_ne!(a.sha256, b.sha256, "a new whole-certificate digest");
        assert_eq!(a.tbs_sha256(), b.tbs_sha256());
        assert_eq!(a.spki_sha256(), b.spki_sha256());
        assert_eq!(a.public_key_sha256(), b.public_key_sha256());
        assert_eq!(a.serial, b.serial);
        // Flipping twice gives the original bytes back.
        assert_eq!(flip_s(&flipped), der);
        // Another certificate has another certificate key and public key.
        let (other, _) = ec_leaf();
        let c = parse_der(&other).unwrap();
        assert_ne!(a.tbs_sha256(), c.tbs_sha256());
        assert_ne!(a.public_key_sha256(), c.public_key_sha256());
    }

    fn spki(alg: &[u8], key: &[u8]) -> Vec<u8> {
        let mut bits = vec![0];
        bits.extend_from_slice(key);
        let mut body = tlv(0x30, alg);
        body.extend(tlv(0x03, &bits));
        tlv(0x30, &body)
    }

    fn key_of(spki_der: &[u8]) -> [u8; 32] {
        let (_, spki) = SubjectPublicKeyInfo::from_der(spki_der).unwrap();
        public_key_sha256(&spki)
    }

    fn ec_alg(curve: usize) -> Vec<u8> {
        let mut alg = tlv(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]);
        alg.extend(tlv(0x06, CURVES[curve].0));
        alg
    }

    /// The AlgorithmIdentifier contents of rsaEncryption (with its NULL parameters) and of
    /// RSASSA-PSS.
    fn rsa_algs() -> (Vec<u8>, Vec<u8>) {
        let mut rsa = tlv(0x06, KEY_ALGORITHMS[0].0);
        rsa.extend([0x05, 0x00]);
        (rsa, tlv(0x06, KEY_ALGORITHMS[1].0))
    }

    /// An RSAPublicKey of modulus `n` and exponent `e`.
    fn rsa_key(n: &[u8], e: &[u8]) -> Vec<u8> {
        let mut body = der_uint(n);
        body.extend(der_uint(e));
        tlv(0x30, &body)
    }

    #[test]
    fn every_encoding_of_one_ec_key_gives_one_key() {
        let (der, _) = ec_leaf();
        let facts = parse_der(&der).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let point = cert.public_key().subject_public_key.data.to_vec();
        assert_eq!(point.len(), 65);
        let (x, y) = (&point[1..33], &point[33..]);
        let alg = ec_alg(0);
        let uncompressed = spki(&alg, &point);
        assert_eq!(uncompressed, cert.public_key().raw);
        let want = key_of(&uncompressed);
        assert_eq!(want, facts.public_key_sha256());
        let odd = y[31] & 1;
        let compressed = [&[0x02 | odd][..], x].concat();
        assert_eq!(key_of(&spki(&alg, &compressed)), want);
        // -P = (x, p - y): the same private key (n - d) controls it.
        let neg_y = sub(&P256_P, y);
        let negated = [&[0x04][..], x, &neg_y].concat();
        assert_eq!(key_of(&spki(&alg, &negated)), want);
        let neg_compressed = [&[0x02 | (odd ^ 1)][..], x].concat();
        assert_eq!(key_of(&spki(&alg, &neg_compressed)), want);
        // The SPKI digests differ, so both kinds of key are needed.
        assert_ne!(sha256_of(&spki(&alg, &compressed)), facts.spki_sha256());
        // Another x, or the same x on another curve, is another key.
        let mut other = point.clone();
        other[5] ^= 1;
        assert_ne!(key_of(&spki(&alg, &other)), want);
        assert_ne!(key_of(&spki(&ec_alg(1), &point)), want);
    }

    #[test]
    fn rsa_keys_are_keyed_by_modulus_and_exponent_under_either_oid() {
        let n = [&[0xc5u8][..], &[0x5a; 255]].concat();
        let (rsa, pss) = rsa_algs();
        let key = rsa_key(&n, &[1, 0, 1]);
        let want = key_of(&spki(&rsa, &key));
        assert_eq!(key_of(&spki(&pss, &key)), want);
        assert_ne!(sha256_of(&spki(&pss, &key)), sha256_of(&spki(&rsa, &key)));
        assert_ne!(key_of(&spki(&rsa, &rsa_key(&n, &[3]))), want);
        let mut n2 = n.clone();
        n2[100] ^= 1;
        assert_ne!(key_of(&spki(&rsa, &rsa_key(&n2, &[1, 0, 1]))), want);
        // Ed25519: the raw key; an unknown algorithm falls back to the SPKI.
        let ed = tlv(0x06, KEY_ALGORITHMS[3].0);
        assert_ne!(key_of(&spki(&ed, &[7; 32])), key_of(&spki(&ed, &[8; 32])));
        let unknown = tlv(0x06, &[0x2a, 0x03]);
        assert_ne!(
            key_of(&spki(&unknown, &[7; 32])),
            key_of(&spki(&ed, &[7; 32]))
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Every encoding of an EC point its holder controls (compressed, uncompressed,
        /// hybrid, and `-P`) gives one key; another x or another curve gives another.
        #[test]
        fn ec_encodings_of_one_point_share_a_key(
            x in proptest::array::uniform32(proptest::prelude::any::<u8>()),
            y in proptest::array::uniform32(proptest::prelude::any::<u8>()),
            bit in 0usize..256,
        ) {
            let alg = ec_alg(0);
            let odd = y[31] & 1;
            let want = key_of(&spki(&alg, &[&[0x04][..], &x, &y].concat()));
            let neg_y = sub(&P256_P, &y);
            for point in [
                [&[0x02 | odd][..], &x].concat(),
                [&[0x03 ^ odd][..], &x].concat(),
                [&[0x06 | odd][..], &x, &y].concat(),
                [&[0x04][..], &x, &neg_y].concat(),
            ] {
                proptest::prop_assert_eq!(key_of(&spki(&alg, &point)), want);
            }
            let mut other = x;
            other[bit / 8] ^= 1 << (bit % 8);
            proptest::prop_assert_ne!(key_of(&spki(&alg, &[&[0x04][..], &other, &y].concat())), want);
            proptest::prop_assert_ne!(key_of(&spki(&ec_alg(1), &[&[0x04][..], &x, &y].concat())), want);
        }

        /// An RSA key is its modulus and exponent, under either OID; changing either
        /// changes the key.
        #[test]
        fn rsa_keys_are_their_modulus_and_exponent(
            n in proptest::collection::vec(proptest::prelude::any::<u8>(), 2..300),
            e in proptest::collection::vec(1u8..=255, 1..4),
            bit in 0usize..16,
        ) {
            let (rsa, pss) = rsa_algs();
            let want = key_of(&spki(&rsa, &rsa_key(&n, &e)));
            proptest::prop_assert_eq!(key_of(&spki(&pss, &rsa_key(&n, &e))), want);
            let mut n2 = n.clone();
            let last = n2.len() - 1;
            n2[last - (bit / 8) % n.len().min(2)] ^= 1 << (bit % 8);
            proptest::prop_assume!(strip_leading_zeros(&n2) != strip_leading_zeros(&n));
            proptest::prop_assert_ne!(key_of(&spki(&rsa, &rsa_key(&n2, &e))), want);
            let mut e2 = e.clone();
            e2.push(1);
            proptest::prop_assert_ne!(key_of(&spki(&rsa, &rsa_key(&n, &e2))), want);
        }
    }

    #[test]
    fn key_identifiers_are_read() {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(vec![1, 2, 3, 4]);
        let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).unwrap();
        let ca_facts = parse_der(ca.der()).unwrap();
        assert_eq!(ca_facts.subject_key_id, Some(vec![1, 2, 3, 4]));
        let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        leaf.use_authority_key_identifier_extension = true;
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = parse_der(leaf.signed_by(&key, &ca).unwrap().der()).unwrap();
        assert_eq!(leaf.authority_key_id, Some(vec![1, 2, 3, 4]));
    }

    #[test]
    fn a_repeated_or_malformed_key_identifier_makes_the_certificate_unparsable() {
        // A certificate with two authority key identifiers could choose which one a
        // revoked-issuer lookup sees; one that does not parse hides it.
        let aki = [2, 5, 29, 35];
        let good = vec![0x30, 0x04, 0x80, 0x02, 0x01, 0x02];
        let key = rcgen::KeyPair::generate().unwrap();
        for exts in [vec![good.clone(), good.clone()], vec![vec![0x04, 0x00]]] {
            let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            p.custom_extensions = exts
                .iter()
                .map(|c| rcgen::CustomExtension::from_oid_content(&aki, c.clone()))
                .collect();
            let der = p.self_signed(&key).unwrap().der().to_vec();
            assert!(
                matches!(parse_der(&der), Err(CertError::BadKeyId(_))),
                "{exts:?}"
            );
        }
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(&aki, good)];
        let der = p.self_signed(&key).unwrap().der().to_vec();
        assert_eq!(parse_der(&der).unwrap().authority_key_id, Some(vec![1, 2]));
    }

    #[test]
    fn bit_len_counts_the_magnitude() {
        assert_eq!(bit_len(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(bit_len(&[0x01]), 1);
        assert_eq!(bit_len(&[]), 0);
    }
}
