//! Building a [`Peer`] from what a person typed (`certgate eval`, `certgate test`, the
//! playground): a certificate file, an identity, a TLS version, an address. Apart from
//! `peer` because it reads certificates through `cert`, which itself builds on `peer`.

use std::net::IpAddr;

use crate::peer::{Peer, PeerCert};
use crate::TlsVersion;

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
    use super::{PeerBuilder, PeerError};
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
        assert!(err(PeerBuilder::new().cert_pem_or_der(cut)).starts_with("is not a certificate"));
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
