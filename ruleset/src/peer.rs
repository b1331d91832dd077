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

/// Why a [`Peer`] could not be built from what a person typed (a certificate file, a
/// TLS version, an address). The `Display` text is a sentence fragment that follows the
/// input's name where the caller has one (``"`client.pem` " + "is not a certificate: …"``).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerError {
    /// The certificate input is neither PEM nor a DER certificate; the text says why.
    NotACertificate(String),
    /// The certificate input is PEM without a certificate in it.
    NoCertificate,
    /// Neither a certificate nor an identity was given.
    NoPeer,
    /// A TLS version other than `1.2` or `1.3`.
    UnknownTlsVersion(String),
    /// A source address that is not an IP address.
    NotAnIpAddress(String),
}

impl std::fmt::Display for PeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerError::NotACertificate(e) => write!(f, "is not a certificate: {e}"),
            PeerError::NoCertificate => f.write_str("holds no certificate"),
            PeerError::NoPeer => f.write_str("give a certificate or an identity"),
            PeerError::UnknownTlsVersion(v) => {
                write!(f, "unknown TLS version `{v}`: use 1.2 or 1.3")
            }
            PeerError::NotAnIpAddress(s) => write!(f, "`{s}` is not an IP address"),
        }
    }
}

impl std::error::Error for PeerError {}

/// Reads the leaf (the first certificate of a PEM bundle, or a DER certificate) as the
/// peer certificate, the way the filter reads the one Envoy hands over.
pub fn leaf_certificate(pem_or_der: &[u8]) -> Result<PeerCert, PeerError> {
    let certs = crate::cert::parse_pem_or_der(pem_or_der)
        .map_err(|e| PeerError::NotACertificate(e.to_string()))?;
    certs
        .into_iter()
        .next()
        .map(|leaf| PeerCert::Parsed(std::sync::Arc::new(leaf)))
        .ok_or(PeerError::NoCertificate)
}

/// Parses a TLS version as people write it (`1.2`, `1.3`).
pub fn parse_tls_version(text: &str) -> Result<TlsVersion, PeerError> {
    TlsVersion::parse(text).ok_or_else(|| PeerError::UnknownTlsVersion(text.to_owned()))
}

/// Parses a source address (surrounding blanks ignored).
pub fn parse_source_ip(text: &str) -> Result<IpAddr, PeerError> {
    text.trim()
        .parse()
        .map_err(|_| PeerError::NotAnIpAddress(text.to_owned()))
}

/// Builds a [`Peer`] from the parts a person gives (`certgate eval`, `certgate test`,
/// the playground), with one set of checks and messages for all of them: a certificate
/// wins over an identity, empty optional text counts as absent.
#[derive(Debug, Clone, Default)]
pub struct PeerBuilder {
    cert: Option<PeerCert>,
    identity: Option<String>,
    tls_version: Option<TlsVersion>,
    port: Option<u16>,
    sni: Option<String>,
    source_ip: Option<IpAddr>,
}

impl PeerBuilder {
    /// A builder with nothing set.
    pub fn new() -> Self {
        PeerBuilder::default()
    }

    /// The peer certificate, already in hand (a described certificate, or none).
    pub fn cert(mut self, cert: PeerCert) -> Self {
        self.cert = Some(cert);
        self
    }

    /// The peer certificate from PEM or DER bytes ([`leaf_certificate`]).
    pub fn cert_pem_or_der(self, bytes: &[u8]) -> Result<Self, PeerError> {
        Ok(self.cert(leaf_certificate(bytes)?))
    }

    /// A what-if SPIFFE ID ([`PeerCert::Assumed`]), used when no certificate is set.
    pub fn identity(mut self, identity: Option<String>) -> Self {
        self.identity = identity;
        self
    }

    /// The negotiated TLS version.
    pub fn tls_version(mut self, version: Option<TlsVersion>) -> Self {
        self.tls_version = version;
        self
    }

    /// The negotiated TLS version as text ([`parse_tls_version`]); empty is unknown.
    pub fn tls_version_text(self, text: Option<&str>) -> Result<Self, PeerError> {
        let version = match text.filter(|t| !t.is_empty()) {
            None => None,
            Some(t) => Some(parse_tls_version(t)?),
        };
        Ok(self.tls_version(version))
    }

    /// The destination port.
    pub fn port(mut self, port: Option<u16>) -> Self {
        self.port = port;
        self
    }

    /// The requested server name; empty is none.
    pub fn sni(mut self, sni: Option<String>) -> Self {
        self.sni = sni.filter(|s| !s.is_empty());
        self
    }

    /// The source address.
    pub fn source_ip(mut self, ip: Option<IpAddr>) -> Self {
        self.source_ip = ip;
        self
    }

    /// The source address as text ([`parse_source_ip`]); blank is unknown.
    pub fn source_ip_text(self, text: Option<&str>) -> Result<Self, PeerError> {
        let ip = match text.filter(|t| !t.trim().is_empty()) {
            None => None,
            Some(t) => Some(parse_source_ip(t)?),
        };
        Ok(self.source_ip(ip))
    }

    /// The peer; [`PeerError::NoPeer`] without a certificate or an identity.
    pub fn build(self) -> Result<Peer, PeerError> {
        let cert = match (self.cert, self.identity) {
            (Some(cert), _) => cert,
            (None, Some(identity)) => Peer::assumed(identity).cert,
            (None, None) => return Err(PeerError::NoPeer),
        };
        Ok(Peer {
            cert,
            tls_version: self.tls_version,
            port: self.port,
            sni: self.sni,
            source_ip: self.source_ip,
        })
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

    mod builder {
        use crate::peer::{PeerBuilder, PeerError};
        use crate::{PeerCert, TlsVersion};

        fn pem() -> String {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            p.subject_alt_names = vec![rcgen::SanType::URI("spiffe://a/b".try_into().unwrap())];
            p.self_signed(&key).unwrap().pem()
        }

        #[test]
        fn a_certificate_wins_over_an_identity_and_empty_text_is_absent() {
            let peer = PeerBuilder::new()
                .identity(Some("spiffe://a/other".into()))
                .cert_pem_or_der(pem().as_bytes())
                .unwrap()
                .tls_version_text(Some(""))
                .unwrap()
                .source_ip_text(Some("  "))
                .unwrap()
                .sni(Some(String::new()))
                .port(Some(8443))
                .build()
                .unwrap();
            match &peer.cert {
                PeerCert::Parsed(f) => assert_eq!(f.uri_sans, ["spiffe://a/b"]),
                other => panic!("{other:?}"),
            }
            assert_eq!(
                (peer.tls_version, peer.sni, peer.source_ip, peer.port),
                (None, None, None, Some(8443))
            );
            let peer = PeerBuilder::new()
                .identity(Some("spiffe://a/b".into()))
                .tls_version_text(Some("1.3"))
                .unwrap()
                .source_ip_text(Some(" 10.0.0.1 "))
                .unwrap()
                .build()
                .unwrap();
            assert_eq!(
                peer.cert,
                PeerCert::Assumed {
                    identity: "spiffe://a/b".into()
                }
            );
            assert_eq!(peer.tls_version, Some(TlsVersion::V1_3));
            assert_eq!(peer.source_ip, Some("10.0.0.1".parse().unwrap()));
        }

        /// What a person may get wrong is refused, with the message every caller shows.
        #[test]
        fn bad_parts_are_refused_with_one_message_each() {
            let err = |r: Result<PeerBuilder, PeerError>| r.unwrap_err().to_string();
            assert_eq!(PeerBuilder::new().build().unwrap_err(), PeerError::NoPeer);
            assert!(err(PeerBuilder::new().cert_pem_or_der(b"garbage"))
                .starts_with("is not a certificate: "));
            // PEM armour with no certificate inside, and a truncated certificate.
            let empty = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
            assert!(PeerBuilder::new().cert_pem_or_der(empty).is_err());
            let cut = pem();
            let cut = &cut.as_bytes()[..cut.len() / 2];
            assert!(
                err(PeerBuilder::new().cert_pem_or_der(cut)).starts_with("is not a certificate")
            );
            assert_eq!(
                err(PeerBuilder::new().tls_version_text(Some("1.1.1"))),
                "unknown TLS version `1.1.1`: use 1.2 or 1.3"
            );
            assert_eq!(
                err(PeerBuilder::new().source_ip_text(Some("10.0.0.256"))),
                "`10.0.0.256` is not an IP address"
            );
        }
    }
}
