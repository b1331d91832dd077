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
/// Envoy 1.36 and 1.37 lack `connection.peer_certificate` but give these.
pub const FIRST_URI_SAN: &[&str] = &["connection", "uri_san_peer_certificate"];
pub const SUBJECT: &[&str] = &["connection", "subject_peer_certificate"];
pub const TLS_VERSION: &[&str] = &["connection", "tls_version"];
pub const SNI: &[&str] = &["connection", "requested_server_name"];
pub const MTLS: &[&str] = &["connection", "mtls"];
pub const CONNECTION_ID: &[&str] = &["connection", "id"];
pub const DESTINATION_PORT: &[&str] = &["destination", "port"];
pub const SOURCE_ADDRESS: &[&str] = &["source", "address"];
/// Read for audit records only.
pub const SOURCE_PORT: &[&str] = &["source", "port"];
/// Read for audit records only.
pub const DESTINATION_ADDRESS: &[&str] = &["destination", "address"];

/// Which connection attributes to read: what the table decides with
/// ([`ruleset::Table::inputs`]). Every read is a host call that allocates its answer in
/// the VM, so a decision reads only those; a record (which shows them all) completes the
/// rest.
pub use ruleset::Inputs as Needs;

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
///
/// A proxy without that attribute (Envoy before 1.38) still says that a certificate
/// was presented (a digest, or `connection.mtls`): the peer is then
/// [`PeerCert::Vouched`] with what the proxy does give, never [`PeerCert::Missing`],
/// so the engine can tell "no certificate" from "no way to read it".
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
                    ruleset::cert::peer_cert_from_pem_with_sha256(&pem_text(pem), sha256)
                }
                _ if digest.is_some() || bool_property(host, MTLS) => vouched(host, sha256),
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

/// What a proxy without `connection.peer_certificate` vouches for.
fn vouched(host: &dyn Host, sha256: Option<[u8; 32]>) -> PeerCert {
    PeerCert::Vouched(std::sync::Arc::new(ruleset::Vouched {
        first_uri_san: string_property(host, FIRST_URI_SAN),
        sha256,
        subject: string_property(host, SUBJECT),
    }))
}

/// The PEM text of `connection.peer_certificate`: Envoy's attribute docs call it
/// URL-encoded, the builds measured give it plain. Plain PEM has no `%` (base64,
/// dashes, line breaks), so a `%` means percent-encoding. A malformed escape is kept
/// as it is; the PEM parser then refuses it (`bad_peer_cert`, failing closed).
pub fn pem_text(raw: Vec<u8>) -> Vec<u8> {
    if !raw.contains(&b'%') {
        return raw;
    }
    let hex = |b: u8| {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw.as_slice();
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        if b == b'%' {
            if let [hi, lo, after @ ..] = rest {
                if let (Some(hi), Some(lo)) = (hex(*hi), hex(*lo)) {
                    out.push(hi.wrapping_shl(4) | lo);
                    rest = after;
                    continue;
                }
            }
        }
        out.push(b);
    }
    out
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
pub fn parse_ip(address: &str) -> Option<IpAddr> {
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

    fn url_encode(text: &str) -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    char::from(b).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    fn gathered(host: &FakeHost) -> PeerCert {
        let cache = RefCell::new(CertCache::new(4));
        gather(host, &cache, Needs::ALL).0.cert
    }

    #[test]
    fn url_encoded_pem_is_the_same_certificate_as_plain_pem() {
        let pem = cert_pem();
        assert!(url_encode(&pem).contains("%0A"), "line breaks are encoded");
        let plain = {
            let host = FakeHost::default();
            host.set(0, "connection.peer_certificate", pem.as_str());
            gathered(&host)
        };
        let encoded = {
            let host = FakeHost::default();
            host.set(0, "connection.peer_certificate", url_encode(&pem));
            gathered(&host)
        };
        assert!(matches!(plain, PeerCert::Parsed(_)), "{plain:?}");
        assert_eq!(plain, encoded);
        // Lowercase hex too.
        let lower = url_encode(&pem).replace("%0A", "%0a");
        assert_eq!(pem_text(lower.into_bytes()), pem.as_bytes());
    }

    #[test]
    fn malformed_percent_escapes_fail_closed() {
        // Kept as they are, so the parser refuses them rather than guessing.
        assert_eq!(pem_text(b"a%zzb%4".to_vec()), b"a%zzb%4");
        assert_eq!(pem_text(b"%41%".to_vec()), b"A%");
        let host = FakeHost::default();
        let mangled = url_encode(&cert_pem()).replacen("%0A", "%0G", 1);
        host.set(0, "connection.peer_certificate", mangled);
        assert!(matches!(gathered(&host), PeerCert::Unparsable(_)));
    }

    #[test]
    fn a_proxy_without_the_pem_attribute_vouches_for_what_it_has() {
        // Envoy 1.36/1.37: digest, first URI SAN and subject, no PEM.
        let host = FakeHost::default();
        let digest = "ab".repeat(32);
        host.set(
            0,
            "connection.sha256_peer_certificate_digest",
            digest.as_str(),
        );
        host.set(
            0,
            "connection.uri_san_peer_certificate",
            "spiffe://a.test/x",
        );
        host.set(0, "connection.subject_peer_certificate", "CN=x");
        let want = PeerCert::Vouched(std::sync::Arc::new(ruleset::Vouched {
            first_uri_san: Some("spiffe://a.test/x".into()),
            sha256: Some([0xab; 32]),
            subject: Some("CN=x".into()),
        }));
        let cache = RefCell::new(CertCache::new(4));
        let (peer, known) = gather(&host, &cache, Needs::NONE);
        assert_eq!(peer.cert, want);
        assert!(
            known.is_some(),
            "cached by digest like a parsed certificate"
        );
        assert_eq!(gather(&host, &cache, Needs::NONE).0.cert, want);
        // An empty PEM is no PEM.
        host.set(0, "connection.peer_certificate", "");
        assert_eq!(gathered(&host), want);
    }

    #[test]
    fn mtls_without_digest_or_pem_is_vouched_not_missing() {
        let host = FakeHost::default();
        host.set(0, "connection.mtls", vec![1u8]);
        host.set(
            0,
            "connection.uri_san_peer_certificate",
            "spiffe://a.test/x",
        );
        match gathered(&host) {
            PeerCert::Vouched(v) => {
                assert_eq!(v.sha256, None);
                assert_eq!(v.first_uri_san.as_deref(), Some("spiffe://a.test/x"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_certificate_is_still_missing() {
        // No digest, no PEM, mtls false: the peer presented nothing.
        let host = FakeHost::default();
        host.set(0, "connection.mtls", vec![0u8]);
        host.set(0, "connection.uri_san_peer_certificate", "");
        assert_eq!(gathered(&host), PeerCert::Missing);
        assert_eq!(gathered(&FakeHost::default()), PeerCert::Missing);
    }

    #[test]
    fn parses_source_addresses() {
        assert_eq!(parse_ip("10.0.0.1:5555"), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(parse_ip("[::1]:80"), Some("::1".parse().unwrap()));
        assert_eq!(parse_ip("::1"), Some("::1".parse().unwrap()));
        assert_eq!(parse_ip("unix:/sock"), None);
    }
}
