//! Turns Envoy connection attributes into the engine's [`Peer`].
//!
//! Only valid once the TLS handshake is complete (first downstream data, HTTP request
//! headers, or `connection.mtls` true): earlier, Envoy returns empty values and even
//! caches a wrong `connection.tls_version`.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use ruleset::{Peer, PeerCert, TlsVersion};

use crate::cache::{CertCache, Known};
use crate::host::Host;

pub const DIGEST: &[&str] = &["connection", "sha256_peer_certificate_digest"];
pub const PEER_CERT: &[&str] = &["connection", "peer_certificate"];
pub const TLS_VERSION: &[&str] = &["connection", "tls_version"];
pub const SNI: &[&str] = &["connection", "requested_server_name"];
pub const MTLS: &[&str] = &["connection", "mtls"];
pub const CONNECTION_ID: &[&str] = &["connection", "id"];
pub const DESTINATION_PORT: &[&str] = &["destination", "port"];
pub const SOURCE_ADDRESS: &[&str] = &["source", "address"];

/// Which connection attributes to read. Every read is a host call that allocates its
/// answer in the VM, so a decision reads only what the table's rules and constraints
/// look at; a record (which shows them all) completes the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    pub tls_version: bool,
    pub port: bool,
    pub sni: bool,
    pub source: bool,
}

impl Needs {
    /// No attribute: the table decides on the certificate alone.
    pub const NONE: Needs = Needs {
        tls_version: false,
        port: false,
        sni: false,
        source: false,
    };

    /// Every attribute.
    pub const ALL: Needs = Needs {
        tls_version: true,
        port: true,
        sni: true,
        source: true,
    };

    /// What `table` decides with: the TLS version under `minVersion`, and the port, SNI
    /// and source address when some rule has that condition.
    pub fn of(table: &ruleset::Table) -> Needs {
        let rules = &table.rules;
        Needs {
            tls_version: table.constraints.min_tls.is_some(),
            port: rules.iter().any(|r| !r.ports.is_empty()),
            sni: rules.iter().any(|r| !r.sni.is_empty()),
            source: rules.iter().any(|r| !r.source_cidrs.is_empty()),
        }
    }
}

/// Reads the attributes `needs` asks for that `peer` does not have yet.
pub fn complete(host: &dyn Host, peer: &mut Peer, needs: Needs) {
    if needs.tls_version && peer.tls_version.is_none() {
        peer.tls_version = string_property(host, TLS_VERSION).and_then(|v| TlsVersion::parse(&v));
    }
    if needs.port && peer.port.is_none() {
        peer.port = int_property(host, DESTINATION_PORT).and_then(|p| u16::try_from(p).ok());
    }
    if needs.sni && peer.sni.is_none() {
        peer.sni = string_property(host, SNI);
    }
    if needs.source && peer.source_ip.is_none() {
        peer.source_ip = string_property(host, SOURCE_ADDRESS).and_then(|a| parse_ip(&a));
    }
}

/// The peer of the current connection, with the attributes `needs` asks for, and its
/// certificate's cache entry (`None` when the host gave no digest or no certificate).
/// The certificate comes from `cache` when its digest is known; only a miss reads and
/// parses `connection.peer_certificate`.
pub fn gather(
    host: &dyn Host,
    cache: &RefCell<CertCache>,
    needs: Needs,
) -> (Peer, Option<Rc<Known>>) {
    let digest = string_property(host, DIGEST);
    let cached = digest.as_deref().and_then(|d| cache.borrow().get(d));
    let known = match cached {
        Some(known) => known,
        None => {
            // Envoy's digest is the SHA-256 of the DER leaf it hands over as PEM: taken
            // as the certificate's fingerprint, it saves hashing the leaf again in wasm.
            let sha256 = digest.as_deref().and_then(ruleset::cert::parse_fingerprint);
            let cert = match host.property(PEER_CERT) {
                Some(pem) if !pem.is_empty() => {
                    ruleset::cert::peer_cert_from_pem_with_sha256(&pem, sha256)
                }
                _ => PeerCert::Missing,
            };
            // A missing certificate is not cached: its digest is empty anyway, and a
            // host hiccup must not pin a wrong answer.
            let Some(digest) = digest.filter(|_| !matches!(cert, PeerCert::Missing)) else {
                let mut peer = Peer::new(cert);
                complete(host, &mut peer, needs);
                return (peer, None);
            };
            let known = Rc::new(Known::new(cert));
            cache.borrow_mut().insert(digest, Rc::clone(&known));
            known
        }
    };
    let mut peer = Peer::new(known.cert.clone());
    complete(host, &mut peer, needs);
    (peer, Some(known))
}

/// A non-empty UTF-8 property.
pub fn string_property(host: &dyn Host, path: &[&str]) -> Option<String> {
    host.property(path)
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|s| !s.is_empty())
}

/// An integer property (Envoy serialises int64/uint64 as 8 little-endian bytes).
pub fn int_property(host: &dyn Host, path: &[&str]) -> Option<u64> {
    let bytes: [u8; 8] = host.property(path)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// A boolean property (one byte).
pub fn bool_property(host: &dyn Host, path: &[&str]) -> bool {
    matches!(host.property(path).as_deref(), Some([1]))
}

/// `source.address` is `ip:port` (`[v6]:port`), or a bare address on some hosts.
fn parse_ip(address: &str) -> Option<IpAddr> {
    address
        .parse::<SocketAddr>()
        .map(|s| s.ip())
        .or_else(|_| address.parse::<IpAddr>())
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;

    fn cert_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["a.example".to_owned()]).unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    fn sha256_of(host: &FakeHost, digest: &str, pem: &str) -> [u8; 32] {
        host.set(0, "connection.sha256_peer_certificate_digest", digest);
        host.set(0, "connection.peer_certificate", pem);
        let cache = RefCell::new(CertCache::new(4));
        match gather(host, &cache, Needs::ALL).0.cert {
            PeerCert::Parsed(facts) => facts.sha256,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_fingerprint_is_envoys_digest_when_it_is_one() {
        let host = FakeHost::default();
        let pem = cert_pem();
        let own = match ruleset::cert::peer_cert_from_pem(pem.as_bytes()) {
            PeerCert::Parsed(facts) => facts.sha256,
            other => panic!("{other:?}"),
        };
        let hex = ruleset::cert::hex_lower(&own);
        assert_eq!(sha256_of(&host, &hex, &pem), own);
        // Whatever Envoy says is taken: it hashed the very leaf it hands over.
        assert_eq!(sha256_of(&host, &"ab".repeat(32), &pem), [0xab; 32]);
        // Not a SHA-256 in hex: the leaf is hashed here.
        assert_eq!(sha256_of(&host, "SAME-DIGEST", &pem), own);
    }

    #[test]
    fn parses_source_addresses() {
        assert_eq!(parse_ip("10.0.0.1:5555"), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(parse_ip("[::1]:80"), Some("::1".parse().unwrap()));
        assert_eq!(parse_ip("::1"), Some("::1".parse().unwrap()));
        assert_eq!(parse_ip("unix:/sock"), None);
    }
}
