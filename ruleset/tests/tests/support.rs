//! Builders shared by the test modules.

use ruleset::*;

pub fn pat(s: &str) -> Pattern {
    Pattern::parse(s).unwrap()
}

pub fn rule(name: &str, action: Action, principals: &[&str]) -> Rule {
    Rule {
        name: name.into(),
        policy: 0,
        action,
        principals: principals.iter().map(|p| pat(p)).collect(),
        not_principals: vec![],
        ports: vec![],
        sni: vec![],
        source_cidrs: vec![],
    }
}

pub fn table(rules: Vec<Rule>) -> Table {
    Table {
        policy_names: vec!["test-policy".into()],
        policy_digest: [7; 32],
        issued_at_ms: 0,
        expires_at_ms: None,
        signer: None,
        mode: Mode::Enforce,
        default_action: Action::Deny,
        audit_log: AuditLog::Deny,
        constraints: Constraints::default(),
        revocation: Revocation::default(),
        rules,
    }
}

pub fn facts(spiffe: &[&str]) -> CertFacts {
    CertFacts {
        serial: vec![0x4f, 0x38, 0x0a],
        issuer: "CN=Intermediate CA, O=Example".into(),
        issuer_id: ruleset::dn::parse_dn_string("CN=Intermediate CA,O=Example").unwrap(),
        subject: "O=Example".into(),
        not_before: 1_700_000_000,
        not_after: 1_700_000_000 + 3600,
        key: KeyInfo::Ecdsa {
            curve: Some(Curve::P256),
        },
        signature: SigInfo {
            name: "ecdsa-with-SHA256".into(),
            hash: SigHash::Sha256,
        },
        uri_sans: spiffe.iter().map(|s| s.to_string()).collect(),
        dns_sans: vec![],
        other_sans: Vec::new(),
        sha256: [0x11; 32],
        revocation_keys: ruleset::RevocationKeys::from_digests([0x22; 32], [0x33; 32], [0x44; 32]),
        subject_key_id: None,
        authority_key_id: None,
    }
}

pub fn peer(f: CertFacts) -> Peer {
    Peer {
        cert: PeerCert::Parsed(std::sync::Arc::new(f)),
        tls_version: Some(TlsVersion::V1_3),
        port: Some(8443),
        sni: None,
        source_ip: None,
    }
}

pub fn who(id: &str) -> Peer {
    peer(facts(&[id]))
}

/// A version-2 header (magic, version, flags) with the right length and CRC-32 in front
/// of `digest_and_body` (the policy digest, issue time, expiry and body), so that only
/// the semantic checks can reject what follows.
pub fn seal(digest_and_body: &[u8]) -> Vec<u8> {
    let body_len = (digest_and_body.len() - 48) as u32;
    let mut out = b"CGT\x01\x02\x00\x00\x00".to_vec();
    out.extend_from_slice(&body_len.to_le_bytes());
    out.extend_from_slice(&crc32(digest_and_body).to_le_bytes());
    out.extend_from_slice(digest_and_body);
    out
}

/// Bitwise CRC-32 (IEEE), independent of the code under test.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
