//! What the engine knows about the other side of a connection. Hosts fill it in:
//! the filter from Envoy attributes, the CLI from files and flags.

use std::net::IpAddr;
use std::sync::OnceLock;

use crate::{Curve, SigHash, TlsVersion};

/// The public key of a certificate, as far as policy cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyInfo {
    /// RSA with the modulus size in bits.
    Rsa {
        /// Modulus size in bits.
        bits: u32,
    },
    /// ECDSA on a named curve; `None` if the curve is not one certgate knows.
    Ecdsa {
        /// The curve, if known.
        curve: Option<Curve>,
    },
    /// Ed25519.
    Ed25519,
    /// Any other algorithm, by OID in dotted form.
    Other {
        /// Dotted OID of the key algorithm.
        oid: String,
    },
}

/// The signature algorithm of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigInfo {
    /// Display name, such as `ecdsa-with-SHA256` or `sha1WithRSAEncryption`.
    pub name: String,
    /// The hash it uses, for `forbidSignatureAlgorithms`.
    pub hash: SigHash,
}

/// Facts read from one X.509 certificate by [`crate::cert::parse_der`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    /// Serial number: big-endian magnitude without leading zero bytes.
    pub serial: Vec<u8>,
    /// Issuer distinguished name in RFC 4514 order, for display.
    pub issuer: String,
    /// [`crate::dn::issuer_id`] of the issuer, for revocation lookups.
    pub issuer_id: u64,
    /// Subject distinguished name, for display.
    pub subject: String,
    /// notBefore, seconds since the Unix epoch.
    pub not_before: i64,
    /// notAfter, seconds since the Unix epoch.
    pub not_after: i64,
    /// Public key facts.
    pub key: KeyInfo,
    /// Signature algorithm facts.
    pub signature: SigInfo,
    /// Every URI subject alternative name, in certificate order.
    pub uri_sans: Vec<String>,
    /// Every DNS subject alternative name, in certificate order.
    pub dns_sans: Vec<String>,
    /// Every other subject alternative name the record can show as text (email
    /// addresses, IP addresses), in certificate order; nothing decides on them.
    pub other_sans: Vec<String>,
    /// SHA-256 over the DER encoding. Not a revocation key: whoever holds the
    /// certificate can re-encode it (an ECDSA `s` becomes `n - s`) and change it.
    pub sha256: [u8; 32],
    /// The revocation digests of the certificate, computed when first asked for.
    pub revocation_keys: RevocationKeys,
    /// The subject key identifier extension, if present.
    pub subject_key_id: Option<Vec<u8>>,
    /// The key identifier of the authority key identifier extension, if present.
    pub authority_key_id: Option<Vec<u8>>,
}

/// The digests revocation looks certificates up by, computed on first use: hashing
/// them costs a new certificate several microseconds in wasm, which a table that
/// revokes no certificates or keys should not pay. A host may cache the facts across
/// tables: the digests do not depend on the table, only on when they are first needed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RevocationKeys {
    /// The tbsCertificate DER, the SubjectPublicKeyInfo DER and the canonical key
    /// bytes, one after the other.
    source: Vec<u8>,
    /// End of the tbsCertificate and of the SPKI in `source`.
    tbs_end: usize,
    spki_end: usize,
    tbs: OnceLock<[u8; 32]>,
    spki: OnceLock<[u8; 32]>,
    key: OnceLock<[u8; 32]>,
}

impl RevocationKeys {
    /// Keys to be hashed from these bytes when first needed.
    pub fn new(tbs: &[u8], spki: &[u8], canonical_key: Vec<u8>) -> Self {
        let mut source = Vec::with_capacity(
            tbs.len()
                .saturating_add(spki.len())
                .saturating_add(canonical_key.len()),
        );
        source.extend_from_slice(tbs);
        let tbs_end = source.len();
        source.extend_from_slice(spki);
        let spki_end = source.len();
        source.extend(canonical_key);
        RevocationKeys {
            source,
            tbs_end,
            spki_end,
            ..RevocationKeys::default()
        }
    }

    /// Keys given as digests (a host that describes a certificate without its bytes).
    pub fn from_digests(tbs: [u8; 32], spki: [u8; 32], key: [u8; 32]) -> Self {
        RevocationKeys {
            tbs: OnceLock::from(tbs),
            spki: OnceLock::from(spki),
            key: OnceLock::from(key),
            ..RevocationKeys::default()
        }
    }

    fn digest(&self, cell: &OnceLock<[u8; 32]>, from: usize, to: usize) -> [u8; 32] {
        *cell.get_or_init(|| {
            use sha2::Digest as _;
            sha2::Sha256::digest(self.source.get(from..to).unwrap_or_default()).into()
        })
    }
}

impl CertFacts {
    /// SHA-256 over the tbsCertificate DER: what the CA signed, the same for every
    /// encoding of the certificate (the revoked-certificate key).
    pub fn tbs_sha256(&self) -> [u8; 32] {
        let k = &self.revocation_keys;
        k.digest(&k.tbs, 0, k.tbs_end)
    }

    /// SHA-256 over the SubjectPublicKeyInfo DER (`openssl pkey -pubin -outform der |
    /// sha256sum`).
    pub fn spki_sha256(&self) -> [u8; 32] {
        let k = &self.revocation_keys;
        k.digest(&k.spki, k.tbs_end, k.spki_end)
    }

    /// SHA-256 over the canonical form of the public key
    /// ([`crate::cert::public_key_sha256`]): the same for every encoding of one key.
    pub fn public_key_sha256(&self) -> [u8; 32] {
        let k = &self.revocation_keys;
        k.digest(&k.key, k.spki_end, k.source.len())
    }

    /// The certificate's SPIFFE ID: its one `spiffe://` URI SAN, or `None` when it has
    /// none or several (a valid X509-SVID has exactly one; the engine denies the others).
    pub fn spiffe_id(&self) -> Option<&str> {
        let mut ids = self.spiffe_ids();
        let first = ids.next();
        if ids.next().is_some() {
            None
        } else {
            first
        }
    }

    /// The `spiffe://` URI SANs of this certificate. A valid X509-SVID has exactly one.
    pub fn spiffe_ids(&self) -> impl Iterator<Item = &str> {
        self.uri_sans
            .iter()
            .map(String::as_str)
            .filter(|u| crate::spiffe::has_spiffe_scheme(u))
    }
}

/// The state of the peer certificate as the host saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerCert {
    /// The peer presented no certificate (or the host could not read one).
    Missing,
    /// The peer's certificate could not be parsed; the text says why.
    Unparsable(String),
    /// The parsed certificate. Shared, so a host's certificate cache hands out the same
    /// facts to every connection without copying them.
    Parsed(std::sync::Arc<CertFacts>),
    /// What-if evaluation by identity only (`certgate eval --identity`):
    /// certificate constraints and revocation are not checked.
    Assumed {
        /// The SPIFFE ID to evaluate.
        identity: String,
    },
    /// The host verified a certificate but cannot hand it over (Envoy before 1.38 has
    /// no `connection.peer_certificate`); it vouches for a few facts of it instead. The
    /// engine decides with them only when the table needs nothing more
    /// ([`crate::Engine::decides_without_certificate`]), else denies with
    /// [`crate::Reason::PeerCertificateUnavailable`].
    Vouched(std::sync::Arc<Vouched>),
}

/// What a host vouches for about a certificate it verified without handing it over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vouched {
    /// The certificate's first URI SAN (Envoy gives no other); `None` when it has none.
    pub first_uri_san: Option<String>,
    /// SHA-256 over the certificate's DER encoding, when the host gave it.
    pub sha256: Option<[u8; 32]>,
    /// Subject distinguished name, for display.
    pub subject: Option<String>,
}

/// Everything the engine may look at for one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The peer certificate.
    pub cert: PeerCert,
    /// Negotiated TLS version, if known.
    pub tls_version: Option<TlsVersion>,
    /// Destination port, if known.
    pub port: Option<u16>,
    /// Requested server name (SNI), if the client sent one.
    pub sni: Option<String>,
    /// Source address, if known.
    pub source_ip: Option<IpAddr>,
}

impl Peer {
    /// A peer with the given certificate state and no connection facts.
    pub fn new(cert: PeerCert) -> Self {
        Peer {
            cert,
            tls_version: None,
            port: None,
            sni: None,
            source_ip: None,
        }
    }

    /// A what-if peer known by its SPIFFE ID only ([`PeerCert::Assumed`]), with no
    /// connection facts.
    pub fn assumed(identity: String) -> Self {
        Peer::new(PeerCert::Assumed { identity })
    }
}

#[cfg(test)]
mod tests {
    use crate::{Action, AuditLog, Constraints, Engine, Mode, Peer, PeerCert, Revocation, Table};

    #[test]
    fn revocation_digests_are_computed_only_when_a_table_needs_them() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = vec![rcgen::SanType::URI("spiffe://a/b".try_into().unwrap())];
        let der = p.self_signed(&key).unwrap().der().to_vec();
        let facts = std::sync::Arc::new(crate::cert::parse_der(&der).unwrap());
        let peer = Peer::new(PeerCert::Parsed(std::sync::Arc::clone(&facts)));
        let table = |revocation: Revocation| {
            let mut t = Table {
                policy_names: vec!["p".into()],
                policy_digest: [0; 32],
                issued_at_ms: 0,
                expires_at_ms: None,
                signer: None,
                mode: Mode::Enforce,
                default_action: Action::Allow,
                audit_log: AuditLog::None,
                constraints: Constraints::default(),
                revocation,
                rules: vec![],
            };
            t.normalize();
            Engine::new(t)
        };
        // A table without certificate or key entries hashes nothing.
        let serials_only = {
            let mut r = Revocation::default();
            r.add_serial(None, &[0x01, 0x02]);
            table(r)
        };
        assert_eq!(serials_only.evaluate(&peer).reason.code(), "default_allow");
        let k = &facts.revocation_keys;
        assert!(k.tbs.get().is_none() && k.spki.get().is_none() && k.key.get().is_none());
        // The same (cached) facts under a later table that revokes the certificate.
        let mut r = Revocation::default();
        r.add_certificate(&facts.tbs_sha256());
        assert_eq!(
            table(r).evaluate(&peer).reason.code(),
            "revoked_certificate"
        );
        // The lazily computed digests are the digests of the bytes.
        use sha2::Digest as _;
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let want: [u8; 32] = sha2::Sha256::digest(cert.tbs_certificate.as_ref()).into();
        assert_eq!(facts.tbs_sha256(), want);
        let want: [u8; 32] = sha2::Sha256::digest(cert.public_key().raw).into();
        assert_eq!(facts.spki_sha256(), want);
        assert_eq!(
            facts.public_key_sha256(),
            crate::cert::public_key_sha256(cert.public_key())
        );
    }
}
