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
        issued_at_ms: 1_767_225_600_000,
        expires_at_ms: Some(1_767_830_400_000),
        signer: None,
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
    b[4] = 1;
    assert_eq!(decode(&b), Err(DecodeError::UnsupportedVersion(1)));
    let mut b = bytes.clone();
    b[6] = 1;
    assert_eq!(decode(&b), Err(DecodeError::UnknownFlags(1)));
    let mut b = bytes.clone();
    b.pop();
    assert!(matches!(
        decode(&b),
        Err(DecodeError::LengthMismatch { .. })
    ));
    let mut b = bytes.clone();
    b.push(0);
    assert_eq!(decode(&b), Err(DecodeError::BadTrailer));
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
    b[48 + 5] = 9;
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
    let rules_at = 48
        + inner[48..]
            .iter()
            .enumerate()
            .position(|(i, _)| inner[48 + i] == 3 && inner[48 + i + 1..48 + i + 5] == [4, 0, 0, 0])
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

/// The sections of an encoded table's body (after the 64-byte header), as
/// `(tag, payload)`.
fn sections(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut body = &bytes[64..];
    let mut out = Vec::new();
    while !body.is_empty() {
        let len = u32::from_le_bytes(body[1..5].try_into().unwrap()) as usize;
        out.push((body[0], body[5..5 + len].to_vec()));
        body = &body[5 + len..];
    }
    out
}

/// A sealed table: the sections of `base` with the rules section replaced by `rules`.
fn with_rules_section(base: &Table, rules: &[u8]) -> Vec<u8> {
    let bytes = encode(base).unwrap();
    let mut inner = bytes[16..64].to_vec();
    for (tag, payload) in sections(&bytes) {
        let payload = if tag == 3 { rules.to_vec() } else { payload };
        inner.push(tag);
        inner.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        inner.extend_from_slice(&payload);
    }
    seal(&inner)
}

/// A rules section of `rules` rules, each with `per_rule` copies of `pattern` and no
/// other condition: a small encoding of a large decoded table.
fn tiny_patterns(rules: u32, per_rule: u32, pattern: &str) -> Vec<u8> {
    let mut out = rules.to_le_bytes().to_vec();
    for i in 0..rules {
        let name = format!("r{i}");
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&[0, 0, 0]); // policy 0, allow
        out.extend_from_slice(&per_rule.to_le_bytes());
        for _ in 0..per_rule {
            out.extend_from_slice(&(pattern.len() as u16).to_le_bytes());
            out.extend_from_slice(pattern.as_bytes());
        }
        out.extend_from_slice(&[0; 16]); // no notPrincipals, ports, sni, CIDRs
    }
    out
}

/// Regression: decoding a crafted 37 MB table (millions of short patterns) took 787 MB.
/// It is refused by the memory budget, before the patterns that would pass it are parsed.
#[test]
fn many_tiny_patterns_are_refused_by_the_memory_budget() {
    let base = table(vec![]);
    for (rules, pattern) in [(31, "spiffe://a"), (3, "spiffe://a/b/*")] {
        let bytes = with_rules_section(&base, &tiny_patterns(rules, 100_000, pattern));
        assert!(bytes.len() > 4_000_000, "{}", bytes.len());
        assert_eq!(
            decode(&bytes),
            Err(DecodeError::Limit {
                what: "the estimated memory of the decoded table (bytes)",
                limit: MAX_DECODED_BYTES,
            }),
            "{pattern}"
        );
    }
    // The same encoding with fewer rules is a valid table: the budget, not the bytes,
    // refused it.
    let small = with_rules_section(&base, &tiny_patterns(2, 1000, "spiffe://a/b/*"));
    assert_eq!(decode(&small).unwrap().rules.len(), 2);
}

/// A table the decoder would refuse is not written either.
#[test]
fn the_encoder_refuses_what_the_decoder_would() {
    let patterns: Vec<&str> = vec!["spiffe://a/b/*"; 100_000];
    let t = table(
        (0..3)
            .map(|i| rule(&format!("r{i}"), Action::Allow, &patterns))
            .collect(),
    );
    assert!(decoded_cost(&t) > MAX_DECODED_BYTES);
    assert!(matches!(encode(&t), Err(EncodeError::Limit { .. })));
}

/// A realistic large table: a million revoked serials and twenty thousand rules, each
/// with exact and wildcard principals, ports and server names.
fn realistic_large_table() -> Table {
    let rules = (0..20_000)
        .map(|i| {
            let mut r = rule(
                &format!("team-{i}-to-payments"),
                if i % 10 == 0 {
                    Action::Deny
                } else {
                    Action::Allow
                },
                &[
                    &format!("spiffe://cluster.local/ns/team-{i}/sa/frontend"),
                    &format!("spiffe://cluster.local/ns/team-{i}/sa/worker"),
                    &format!("spiffe://cluster.local/ns/team-{i}/sa/*"),
                ],
            );
            r.ports = vec![PortRange {
                start: 8443,
                end: 8443,
            }];
            r.sni = vec![format!("team-{i}.internal.example.com")];
            r
        })
        .collect();
    let mut t = table(rules);
    for i in 0..1_000_000u32 {
        t.revocation.add_serial(Some(42), &i.to_be_bytes());
    }
    t.revocation.normalize();
    t
}

#[test]
fn realistic_large_tables_still_decode() {
    let t = realistic_large_table();
    let cost = decoded_cost(&t);
    assert!(cost < MAX_DECODED_BYTES, "{cost}");
    let e = Engine::from_bytes(&encode(&t).unwrap()).unwrap();
    assert_eq!(e.table().revocation.serial_count(), 1_000_000);
    assert_eq!(e.table().rules.len(), 20_000);
}

/// `VmRSS` or `VmHWM` of this process, in bytes.
fn proc_status_kb(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<usize>()
        .unwrap()
        * 1024
}

/// Run alone in a child process by [`the_estimate_bounds_the_measured_memory`]: decodes
/// and indexes the table in `CERTGATE_MEASURE_TABLE`, and prints how much the peak
/// resident memory grew.
#[test]
#[ignore = "run by the_estimate_bounds_the_measured_memory in a process of its own"]
fn measure_decode_child() {
    let Ok(path) = std::env::var("CERTGATE_MEASURE_TABLE") else {
        return;
    };
    let bytes = std::fs::read(path).unwrap();
    let before = proc_status_kb("VmRSS:");
    let engine = Engine::new(decode_owned(bytes).unwrap());
    let peak = proc_status_kb("VmHWM:");
    println!("GROWTH {}", peak.saturating_sub(before));
    drop(engine);
}

/// The budget's estimate is an upper bound of what decoding and indexing really take:
/// measured as the peak resident memory of a process that does nothing else.
#[test]
fn the_estimate_bounds_the_measured_memory() {
    let dir = tempfile::tempdir().unwrap();
    let wildcards: Vec<String> = (0..20_000)
        .map(|i| format!("spiffe://a/n{i}/x/y/*"))
        .collect();
    let wildcards: Vec<&str> = wildcards.iter().map(String::as_str).collect();
    let exact: Vec<Vec<String>> = (0..8)
        .map(|r| (0..50_000).map(|i| format!("spiffe://a/{r}/{i}")).collect())
        .collect();
    let exact: Vec<Rule> = exact
        .iter()
        .map(|ids| {
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            rule("e", Action::Allow, &ids)
        })
        .collect();
    for (name, t) in [
        ("realistic", realistic_large_table()),
        (
            "wildcards",
            table(vec![rule("w", Action::Allow, &wildcards)]),
        ),
        ("exact", table(exact)),
    ] {
        let path = dir.path().join(format!("{name}.cgt"));
        std::fs::write(&path, encode(&t).unwrap()).unwrap();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "codec::measure_decode_child",
                "--ignored",
                "--nocapture",
            ])
            .args(["--test-threads", "1"])
            .env("CERTGATE_MEASURE_TABLE", &path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        let growth: usize = stdout
            .lines()
            .find_map(|l| l.split("GROWTH ").nth(1))
            .unwrap_or_else(|| panic!("no measurement: {stdout}"))
            .parse()
            .unwrap();
        let estimate = decoded_cost(&t);
        eprintln!("{name}: measured {growth} bytes, estimated {estimate}");
        assert!(growth > 0, "{name}");
        assert!(
            growth <= estimate,
            "{name}: measured {growth} > estimated {estimate}"
        );
    }
}

fn signed(table: &Table, kp: &ed25519_compact::KeyPair) -> Vec<u8> {
    let mut bytes = encode(table).unwrap();
    let sig = kp.sk.sign(signature::message(&bytes), None);
    signature::append_trailer(&mut bytes, &kp.pk, &sig);
    bytes
}

#[test]
fn a_signed_table_decodes_with_its_claimed_signer_and_verifies_only_under_its_key() {
    let kp = ed25519_compact::KeyPair::generate();
    let other = ed25519_compact::KeyPair::generate();
    let bytes = signed(&fixture_table(), &kp);
    assert_eq!(bytes.len(), encode(&fixture_table()).unwrap().len() + 100);
    let t = decode(&bytes).unwrap();
    assert_eq!(t.signer, Some(*kp.pk));
    assert_eq!(Table { signer: None, ..t }, fixture_table());

    assert_eq!(signature::verify(&bytes, &[*other.pk, *kp.pk]), Ok(*kp.pk));
    assert_eq!(
        signature::verify(&bytes, &[*other.pk]),
        Err(signature::SignatureError::UnknownKey(*kp.pk))
    );
    assert_eq!(
        signature::verify(&encode(&fixture_table()).unwrap(), &[*kp.pk]),
        Err(signature::SignatureError::Unsigned)
    );
}

#[test]
fn forged_and_damaged_signatures_are_refused() {
    let kp = ed25519_compact::KeyPair::generate();
    let bytes = signed(&fixture_table(), &kp);
    let pinned = [*kp.pk];
    // Any flipped bit in the signed part, or in the signature, fails verification (a flip
    // in the key names another key, which is not pinned).
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x01;
        assert!(signature::verify(&b, &pinned).is_err(), "byte {i} flipped");
    }
    // The attacker's own key in the trailer of a loosened table.
    let forger = ed25519_compact::KeyPair::generate();
    let mut loose = fixture_table();
    loose.mode = Mode::Audit;
    let forged = signed(&loose, &forger);
    assert_eq!(
        signature::verify(&forged, &pinned),
        Err(signature::SignatureError::UnknownKey(*forger.pk))
    );
    // The pinned key in the trailer, the forger's signature.
    let mut b = forged.clone();
    let n = b.len();
    b[n - 96..n - 64].copy_from_slice(&*kp.pk);
    assert_eq!(
        signature::verify(&b, &pinned),
        Err(signature::SignatureError::BadSignature(*kp.pk))
    );
    // A signature over the same bytes without the domain separation prefix.
    let mut b = encode(&fixture_table()).unwrap();
    let sig = kp.sk.sign(&b, None);
    signature::append_trailer(&mut b, &kp.pk, &sig);
    assert_eq!(
        signature::verify(&b, &pinned),
        Err(signature::SignatureError::BadSignature(*kp.pk))
    );
}

#[test]
fn only_no_trailer_or_exactly_one_well_formed_trailer_decodes() {
    let kp = ed25519_compact::KeyPair::generate();
    let bytes = signed(&fixture_table(), &kp);
    // Two trailers, a truncated trailer, a wrong trailer magic, one stray byte.
    let mut two = bytes.clone();
    two.extend_from_slice(&bytes[bytes.len() - 100..]);
    let mut magic = bytes.clone();
    let at = bytes.len() - 100;
    magic[at + 3] = b'2';
    let unsigned = encode(&fixture_table()).unwrap();
    let mut stray = unsigned.clone();
    stray.push(0);
    for (what, b) in [
        ("two trailers", two),
        ("truncated", bytes[..bytes.len() - 1].to_vec()),
        ("bad magic", magic),
        ("stray byte", stray),
    ] {
        assert_eq!(decode(&b), Err(DecodeError::BadTrailer), "{what}");
        assert!(signature::verify(&b, &[*kp.pk]).is_err(), "{what}");
    }
}

#[test]
fn issue_time_and_expiry_round_trip_and_zero_means_no_expiry() {
    let mut t = fixture_table();
    t.expires_at_ms = None;
    let bytes = encode(&t).unwrap();
    assert_eq!(&bytes[56..64], &[0; 8]);
    assert_eq!(decode(&bytes).unwrap().expires_at_ms, None);
    assert_eq!(
        u64::from_le_bytes(bytes[48..56].try_into().unwrap()),
        1_767_225_600_000
    );
}

/// The group order of Ed25519, little-endian.
const ED25519_L: [u8; 32] = [
    237, 211, 245, 92, 26, 99, 18, 88, 214, 156, 247, 162, 222, 249, 222, 20, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 16,
];

#[test]
fn a_signature_cannot_be_mauled_into_a_second_valid_one() {
    // S + L verifies in a lax verifier (the same point); it must be refused, so a
    // re-encoded copy of a signed table is not a second valid table.
    let kp = ed25519_compact::KeyPair::generate();
    let mut bytes = signed(&fixture_table(), &kp);
    let n = bytes.len();
    let s = &mut bytes[n - 32..];
    let mut carry = 0u16;
    for (b, l) in s.iter_mut().zip(ED25519_L) {
        let sum = u16::from(*b) + u16::from(l) + carry;
        *b = sum as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0, "S + L fits in 256 bits");
    assert_eq!(
        signature::verify(&bytes, &[*kp.pk]),
        Err(signature::SignatureError::BadSignature(*kp.pk))
    );
    // A small-order public key (the identity) pinned by mistake accepts nothing.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut b = encode(&fixture_table()).unwrap();
    signature::append_trailer(&mut b, &identity, &[0; 64]);
    assert!(signature::verify(&b, &[identity]).is_err());
}
