//! What the engine knows about the other side of a connection. Hosts fill it in:
//! the filter from Envoy attributes, the CLI from files and flags.

use std::net::IpAddr;

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
    /// SHA-256 over the tbsCertificate DER: what the CA signed, the same for every
    /// encoding of the certificate (the revoked-certificate key).
    pub tbs_sha256: [u8; 32],
    /// SHA-256 over the SubjectPublicKeyInfo DER (`openssl pkey -pubin -outform der |
    /// sha256sum`).
    pub spki_sha256: [u8; 32],
    /// SHA-256 over the canonical form of the public key
    /// ([`crate::cert::public_key_sha256`]): the same for every encoding of one key.
    pub public_key_sha256: [u8; 32],
    /// The subject key identifier extension, if present.
    pub subject_key_id: Option<Vec<u8>>,
    /// The key identifier of the authority key identifier extension, if present.
    pub authority_key_id: Option<Vec<u8>>,
}

impl CertFacts {
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
}
