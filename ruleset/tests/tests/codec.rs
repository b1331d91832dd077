//! The binary format: the byte fixture, round trips, and rejection of every kind of
//! damaged input (the decoder sees untrusted bytes).

use ruleset::*;

use crate::support::*;

fn fixture_bytes() -> Vec<u8> {
    let text = include_str!("../fixtures/minimal.cgt.hex");
    let hex: String = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join(" ")
        .split_whitespace()
        .collect();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn fixture_table() -> Table {
    let mut r = rule(
        "web",
        Action::Allow,
        &["spiffe://cluster.local/ns/web/sa/*"],
    );
    r.ports = vec![PortRange {
        start: 8443,
        end: 8443,
    }];
    Table {
        policy_names: vec!["demo".into()],
        policy_digest: core::array::from_fn(|i| i as u8),
        mode: Mode::Enforce,
        default_action: Action::Deny,
        audit_log: AuditLog::Deny,
        constraints: Constraints {
            min_tls: Some(TlsVersion::V1_3),
            trust_domains: vec!["cluster.local".into()],
            max_lifetime_secs: Some(86400),
            keys: Some(KeyPolicy {
                rsa_min_bits: Some(2048),
                ecdsa_curves: vec![Curve::P256, Curve::P384],
                ed25519: true,
            }),
            forbid_sig_hashes: vec![SigHash::Md5, SigHash::Sha1],
        },
        revocation: {
            let mut r = Revocation::default();
            r.add_serial(None, &[0x4f, 0x38, 0x0a]);
            r.normalize();
            r
        },
        rules: vec![r],
    }
}

#[test]
fn the_documented_fixture_decodes_and_reencodes_byte_for_byte() {
    let bytes = fixture_bytes();
    assert_eq!(decode(&bytes).unwrap(), fixture_table());
    assert_eq!(encode(&fixture_table()).unwrap(), bytes);
}

fn rich_table() -> Table {
    let mut t = fixture_table();
    let mut r = rule(
        "deny-legacy",
        Action::Deny,
        &["spiffe://cluster.local/ns/legacy/**"],
    );
    r.not_principals = vec![pat("spiffe://cluster.local/ns/legacy/sa/ok")];
    r.sni = vec!["*.svc".into(), "exact.example".into()];
    r.source_cidrs = vec![
        Cidr {
            addr: "10.0.0.0".parse().unwrap(),
            prefix: 8,
        },
        Cidr {
            addr: "fd00::".parse().unwrap(),
            prefix: 64,
        },
    ];
    t.rules.push(r);
    t.revocation.add_serial(Some(42), &[1]);
    t.revocation.add_certificate(&[3; 32]);
    t.revocation.add_certificate(&[1; 32]);
    t.revocation.add_key(&[4; 32]);
    t.revocation.add_issuer(7, Some(b"key id"));
    t.revocation.add_issuer(8, None);
    t.normalize();
    t
}

#[test]
fn round_trip_preserves_everything() {
    let t = rich_table();
    assert_eq!(decode(&encode(&t).unwrap()).unwrap(), t);
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = encode(&rich_table()).unwrap();
    for len in 0..bytes.len() {
        assert!(decode(&bytes[..len]).is_err(), "truncated to {len} bytes");
    }
}

#[test]
fn every_single_byte_corruption_is_an_error() {
    let bytes = encode(&rich_table()).unwrap();
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x01;
        assert!(decode(&b).is_err(), "byte {i} flipped");
    }
}

#[test]
fn header_errors_are_specific() {
    let bytes = encode(&rich_table()).unwrap();
    let mut b = bytes.clone();
    b[0] = b'X';
    assert_eq!(decode(&b), Err(DecodeError::BadMagic));
    let mut b = bytes.clone();
    b[4] = 2;
    assert_eq!(decode(&b), Err(DecodeError::UnsupportedVersion(2)));
    let mut b = bytes.clone();
    b[6] = 1;
    assert_eq!(decode(&b), Err(DecodeError::UnknownFlags(1)));
    let mut b = bytes.clone();
    b.push(0);
    assert!(matches!(
        decode(&b),
        Err(DecodeError::LengthMismatch { .. })
    ));
    let mut b = bytes.clone();
    let last = b.len() - 1;
    b[last] ^= 0xff;
    assert!(matches!(decode(&b), Err(DecodeError::Checksum { .. })));
    assert_eq!(
        decode(b"").unwrap_err().to_string(),
        "truncated table: input ends inside magic"
    );
}

#[test]
fn semantic_damage_under_a_valid_checksum_is_still_rejected() {
    let bytes = encode(&fixture_table()).unwrap();
    let inner = &bytes[16..];
    assert_eq!(
        decode(&seal(inner)),
        Ok(fixture_table()),
        "seal() is faithful"
    );

    // Trailing byte inside the last section: stale byte, an empty issuer-bound list,
    // the any-issuer list with one key, four empty lists = 33 payload bytes, after the
    // 4-byte length.
    let mut b = inner.to_vec();
    let len_at = b.len() - 33 - 4;
    assert_eq!(b[len_at], 33);
    b[len_at] += 1;
    b.push(0);
    assert_eq!(
        decode(&seal(&b)),
        Err(DecodeError::TrailingBytes {
            section: "revocation section"
        })
    );

    // An unknown stale policy.
    let mut b = inner.to_vec();
    b[len_at + 4] = 2;
    assert_eq!(
        decode(&seal(&b)),
        Err(DecodeError::BadValue {
            what: "stale policy"
        })
    );

    // An unknown enum value: the mode byte is the first byte of the meta payload.
    let mut b = inner.to_vec();
    b[32 + 5] = 9;
    assert_eq!(
        decode(&seal(&b)),
        Err(DecodeError::BadValue { what: "mode" })
    );

    // An invalid principal pattern.
    let pat_at = b.windows(6).position(|w| w == b"spiffe").unwrap();
    let mut b = inner.to_vec();
    b[pat_at] = b'x';
    assert!(matches!(decode(&seal(&b)), Err(DecodeError::BadPattern(_))));
}

#[test]
fn unsorted_revocations_are_refused_by_both_sides() {
    // Issuer names are keys as they are: of the two insertion orders exactly one is
    // unsorted.
    let refused = [[1u64, 2], [2, 1]]
        .iter()
        .filter(|order| {
            let mut t = fixture_table();
            order.iter().for_each(|n| t.revocation.add_issuer(*n, None));
            encode(&t).is_err()
        })
        .count();
    assert_eq!(refused, 1);
    let mut t = fixture_table();
    t.revocation.add_issuer(1, None);
    t.revocation.add_issuer(1, None);
    assert_eq!(encode(&t), Err(EncodeError::NotNormalized), "duplicate key");
    t.normalize();
    let bytes = encode(&t).unwrap();

    // The decoder checks the order itself: swap the two last keys of a two-key set.
    t.revocation.add_issuer(2, None);
    t.normalize();
    let bytes2 = encode(&t).unwrap();
    assert_eq!(bytes2.len(), bytes.len() + 8);
    let mut inner = bytes2[16..].to_vec();
    let n = inner.len();
    let (a, b) = (inner[n - 16..n - 8].to_vec(), inner[n - 8..].to_vec());
    inner[n - 16..n - 8].copy_from_slice(&b);
    inner[n - 8..].copy_from_slice(&a);
    assert_eq!(
        decode(&seal(&inner)),
        Err(DecodeError::Unsorted {
            what: "revoked issuers (name)"
        })
    );
}

#[test]
fn huge_counts_fail_before_allocating() {
    // A rules section claiming u32::MAX rules in a few bytes.
    let mut t = fixture_table();
    t.rules.clear();
    let bytes = encode(&t).unwrap();
    let inner = &bytes[16..];
    let rules_at = 32
        + inner[32..]
            .iter()
            .enumerate()
            .position(|(i, _)| inner[32 + i] == 3 && inner[32 + i + 1..32 + i + 5] == [4, 0, 0, 0])
            .unwrap();
    let mut b = inner.to_vec();
    b[rules_at + 5..rules_at + 9].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        decode(&seal(&b)),
        Err(DecodeError::Limit { what: "rules", .. })
    ));
}

#[test]
fn engine_from_bytes_decides() {
    let e = Engine::from_bytes(&encode(&rich_table()).unwrap()).unwrap();
    let mut f = facts(&["spiffe://cluster.local/ns/legacy/sa/x"]);
    assert_eq!(e.evaluate(&peer(f.clone())).reason, Reason::RevokedSerial);
    f.serial = vec![0x99];
    assert_eq!(e.evaluate(&peer(f)).reason, Reason::DenyRule);
}
