//! Reads the leaf out of Envoy's `connection.peer_certificate` (plain PEM).
//!
//! `ruleset::cert::peer_cert_from_pem` does the same through x509-parser's PEM reader,
//! whose base64 dependency (data-encoding) alone costs about 60 KB of the module; the
//! filter already links the `base64` crate for its configuration, so it unwraps the
//! armour here and hands the DER to `ruleset::cert::parse_der`, which stays the one
//! place that turns a certificate into facts.

use base64::Engine as _;
use ruleset::PeerCert;

const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const END: &str = "-----END CERTIFICATE-----";

/// The peer certificate in `bytes`: no bytes (or only whitespace) is a missing
/// certificate; anything that does not yield a leaf is unparsable. The first
/// certificate is the leaf. Input that is not PEM is tried as DER.
pub fn peer_cert(bytes: &[u8]) -> PeerCert {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return PeerCert::Missing;
    }
    let der = match std::str::from_utf8(bytes) {
        Ok(text) if text.trim_start().starts_with("-----BEGIN") => match leaf_der(text) {
            Ok(der) => der,
            Err(why) => return PeerCert::Unparsable(why.to_owned()),
        },
        _ => bytes.to_vec(),
    };
    match ruleset::cert::parse_der(&der) {
        Ok(facts) => PeerCert::Parsed(Box::new(facts)),
        Err(e) => PeerCert::Unparsable(e.to_string()),
    }
}

fn leaf_der(text: &str) -> Result<Vec<u8>, &'static str> {
    let (_, after_begin) = text.split_once(BEGIN).ok_or("no certificate in PEM")?;
    let (body, _) = after_begin
        .split_once(END)
        .ok_or("incomplete PEM certificate")?;
    let b64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| "invalid base64 in PEM certificate")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_garbage() {
        assert_eq!(peer_cert(b""), PeerCert::Missing);
        assert_eq!(peer_cert(b" \n"), PeerCert::Missing);
        for bad in [
            &b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n"[..],
            b"-----BEGIN CERTIFICATE-----\nAAAA\n",
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            b"\x30\x03\x02\x01\x01",
        ] {
            assert!(matches!(peer_cert(bad), PeerCert::Unparsable(_)), "{bad:?}");
        }
    }
}
