//! Deltas between tables: `apply(X, diff(X, Y))` rebuilds Y byte for byte, and a delta
//! that is corrupt, truncated, oversized, for another base or whose result is not the
//! table it announces is refused. The caller verifies the result's signature as it would
//! a fetched table's, so a delta cannot smuggle in a table the key did not sign.

use proptest::prelude::*;
use ruleset::delta::{apply, diff, etag, sha256, DeltaError};
use ruleset::*;

use crate::support::{rule, table};

const CAP: usize = 64 << 20;

fn signed(table: &Table, kp: &ed25519_compact::KeyPair) -> Vec<u8> {
    let mut bytes = encode(table).unwrap();
    let sig = kp.sk.sign(signature::message(&bytes), None);
    signature::append_trailer(&mut bytes, &kp.pk, &sig);
    bytes
}

/// A table of `serials` revoked serials (plus a few keys of other lists) issued at `at`.
fn revoking(serials: impl IntoIterator<Item = u32>, at: u64) -> Table {
    let mut t = table(vec![rule("a", Action::Allow, &["spiffe://td/a"])]);
    t.issued_at_ms = at;
    for s in serials {
        t.revocation.add_serial(Some(9), &s.to_be_bytes());
    }
    t.revocation.add_key(&[3; 32]);
    t.revocation.normalize();
    t
}

#[test]
fn one_more_revoked_serial_is_a_small_delta_that_rebuilds_the_signed_table() {
    let kp = ed25519_compact::KeyPair::generate();
    let x = signed(&revoking(0..10_000, 1), &kp);
    let y = signed(&revoking(0..10_001, 2), &kp);
    let d = diff(&x, &y).unwrap();
    // Header, digests, one added key and the trailer: far below the table's 80 KB.
    assert!(d.len() < 400, "delta of {} bytes", d.len());
    let rebuilt = apply(&x, &d, CAP).unwrap();
    assert_eq!(rebuilt, y);
    assert_eq!(etag(&rebuilt), etag(&y));
    assert!(signature::verify(&rebuilt, &[*kp.pk]).is_ok());
    assert_eq!(decode(&rebuilt).unwrap(), decode(&y).unwrap());
    // A decoded table keeps its bytes, trailer included: the base of the next delta.
    assert_eq!(decode(&y).unwrap().revocation.table_bytes(), Some(&y[..]));
    assert_eq!(revoking(0..1, 1).revocation.table_bytes(), None);
}

#[test]
fn removed_keys_changed_rules_and_unsigned_tables_round_trip() {
    let x = encode(&revoking([1, 2, 3, 50, 60], 1)).unwrap();
    let mut t = revoking([2, 3, 4, 60, 70], 2);
    t.rules.push(rule("b", Action::Deny, &["spiffe://td/b"]));
    t.constraints.trust_domains = vec!["td".into()];
    let y = encode(&t).unwrap();
    assert_eq!(apply(&x, &diff(&x, &y).unwrap(), CAP).unwrap(), y);
    // And back again, and to itself.
    assert_eq!(apply(&y, &diff(&y, &x).unwrap(), CAP).unwrap(), x);
    assert_eq!(apply(&x, &diff(&x, &x).unwrap(), CAP).unwrap(), x);
}

#[test]
fn a_delta_for_another_base_is_refused() {
    let x = encode(&revoking(0..10, 1)).unwrap();
    let other = encode(&revoking(0..11, 1)).unwrap();
    let y = encode(&revoking(0..12, 2)).unwrap();
    let d = diff(&x, &y).unwrap();
    assert_eq!(apply(&other, &d, CAP), Err(DeltaError::WrongBase));
}

#[test]
fn every_truncation_and_every_flipped_byte_is_refused() {
    let kp = ed25519_compact::KeyPair::generate();
    let x = signed(&revoking(0..100, 1), &kp);
    let y = signed(&revoking(0..101, 2), &kp);
    let d = diff(&x, &y).unwrap();
    for n in 0..d.len() {
        assert!(apply(&x, &d[..n], CAP).is_err(), "truncated at {n}");
    }
    let mut longer = d.clone();
    longer.push(0);
    assert_eq!(apply(&x, &longer, CAP), Err(DeltaError::TrailingBytes));
    for i in 0..d.len() {
        let mut bad = d.clone();
        bad[i] ^= 0x01;
        // Every byte counts towards the result or its checks: none yields a table.
        assert!(apply(&x, &bad, CAP).is_err(), "flipped byte {i} accepted");
    }
}

/// Someone who can forge the feed's answer but not the key computes a delta to a table
/// of their own: it applies (the delta names its result's digest), but the result's
/// signature does not verify under the pinned key, so the filter refuses it.
#[test]
fn a_delta_to_a_forged_table_applies_but_does_not_verify() {
    let kp = ed25519_compact::KeyPair::generate();
    let attacker = ed25519_compact::KeyPair::generate();
    let x = signed(&revoking(0..10, 1), &kp);
    // The revocation withdrawn, re-signed by another key.
    let forged = signed(&revoking(0..5, 2), &attacker);
    let rebuilt = apply(&x, &diff(&x, &forged).unwrap(), CAP).unwrap();
    assert!(signature::verify(&rebuilt, &[*kp.pk]).is_err());
    // The same forged table with the genuine key in its trailer: the signature fails.
    let mut claimed = encode(&revoking(0..5, 2)).unwrap();
    let sig = attacker.sk.sign(signature::message(&claimed), None);
    signature::append_trailer(&mut claimed, &kp.pk, &sig);
    let rebuilt = apply(&x, &diff(&x, &claimed).unwrap(), CAP).unwrap();
    assert!(signature::verify(&rebuilt, &[*kp.pk]).is_err());
}

#[test]
fn a_result_over_the_cap_is_refused_before_it_is_built() {
    let x = encode(&revoking(0..10, 1)).unwrap();
    let y = encode(&revoking(0..10_000, 2)).unwrap();
    let d = diff(&x, &y).unwrap();
    assert_eq!(
        apply(&x, &d, y.len() - 1),
        Err(DeltaError::TooLarge { limit: y.len() - 1 })
    );
    assert_eq!(apply(&x, &d, y.len()).unwrap(), y);
}

/// A delta that announces a small result but carries more (a huge forged section, a
/// forged key count) is stopped at the announced length, not after allocating.
#[test]
fn forged_lengths_and_counts_are_refused() {
    let x = encode(&revoking(0..10, 1)).unwrap();
    let y = encode(&revoking(0..11, 2)).unwrap();
    let d = diff(&x, &y).unwrap();
    // Layout: magic 4, version 2, flags 2, base 32, result 32, length 4, header 64.
    let fixed = 4 + 2 + 2 + 32 + 32 + 4 + 64;
    // Sections 1-3 are unchanged: tag and kind each. Then section 4: tag, kind 2, on
    // stale, then list 1's removed count.
    let count = fixed + 3 * 2 + 2 + 1;
    assert_eq!(d[count - 3], 4);
    assert_eq!(d[count - 2], 2);
    for forged in [u32::MAX, 1 << 28, 11] {
        let mut bad = d.clone();
        bad[count..count + 4].copy_from_slice(&forged.to_le_bytes());
        assert!(apply(&x, &bad, CAP).is_err(), "{forged}");
    }
    // Announced result length forged up, and down.
    for len in [u32::MAX, 0, y.len() as u32 + 8] {
        let mut bad = d.clone();
        bad[72..76].copy_from_slice(&len.to_le_bytes());
        assert!(apply(&x, &bad, CAP).is_err(), "{len}");
    }
}

#[test]
fn a_delta_that_removes_an_absent_key_or_adds_a_present_one_is_refused() {
    // Tables large enough that the revocation section travels as a patch.
    let x = encode(&revoking(0..100, 1)).unwrap();
    let with = encode(&revoking(0..101, 2)).unwrap();
    let without = encode(&revoking(2..100, 2)).unwrap();
    // A delta computed from another base (that held serial 100 too) pointed at x by its
    // base digest: the removal of a key x does not hold must not pass silently.
    let other = encode(&revoking(0..101, 1)).unwrap();
    let mut d = diff(&other, &without).unwrap();
    d[8..40].copy_from_slice(&sha256(&x));
    let r = apply(&x, &d, CAP);
    assert!(matches!(r, Err(DeltaError::BadKeys { .. })), "{r:?}");
    // A delta that adds serial 100 pointed at a base that already holds it.
    let mut d = diff(&x, &with).unwrap();
    let base_with = encode(&revoking(0..101, 0)).unwrap();
    d[8..40].copy_from_slice(&sha256(&base_with));
    let r = apply(&base_with, &d, CAP);
    assert!(matches!(r, Err(DeltaError::BadKeys { .. })), "{r:?}");
}

#[test]
fn garbage_is_not_a_delta_and_a_broken_base_is_named() {
    let x = encode(&revoking(0..3, 1)).unwrap();
    assert_eq!(
        apply(&x, b"", CAP),
        Err(DeltaError::Truncated { what: "magic" })
    );
    assert_eq!(apply(&x, b"CGT\x01rest", CAP), Err(DeltaError::BadMagic));
    let y = encode(&revoking(0..4, 2)).unwrap();
    let mut d = diff(&x, &y).unwrap();
    d[4] = 9;
    assert_eq!(apply(&x, &d, CAP), Err(DeltaError::UnsupportedVersion(9)));
    // A base that is not a table: the digest matches (the delta was made for it) but it
    // has no table layout.
    assert!(diff(b"not a table", &y).is_err());
}

fn serials() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(0u32..400, 0..200)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn apply_of_diff_is_the_target(a in serials(), b in serials(), rules in 0usize..3, audit: bool) {
        let x = encode(&revoking(a, 1)).unwrap();
        let mut t = revoking(b, 2);
        for i in 0..rules {
            t.rules.push(rule(&format!("r{i}"), Action::Deny, &["spiffe://td/x/*"]));
        }
        if audit {
            t.mode = Mode::Audit;
        }
        let y = encode(&t).unwrap();
        let d = diff(&x, &y).unwrap();
        prop_assert_eq!(apply(&x, &d, CAP).unwrap(), y);
    }
}
