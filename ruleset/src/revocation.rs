//! The revocation set: revoked certificates as sorted 64-bit keys, so a table holds
//! exactly 8 bytes per entry whatever the serial length, and a lookup is one bucket of a
//! directory over the keys' top bits. Serials bound to their issuer, serials revoked for
//! every issuer, and fingerprints are three separate sets; a lookup hashes the serial
//! once. Collisions are discussed in `ruleset/FORMAT.md`.

use crate::siphash::{siphash24, REVOCATION_KEY};

/// A revoked serial as the compiler collects it from policies and CRLs, before it is
/// hashed into the set.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RevokedSerial {
    /// [`crate::dn::parse_dn_string`] / [`crate::dn::issuer_id_of`] of the issuer, or
    /// `None` for "any issuer".
    pub issuer: Option<u64>,
    /// The serial's big-endian magnitude without leading zero bytes.
    pub serial: Vec<u8>,
}

/// Longest hash input: the domain tag and the longest serial.
const MAX_INPUT: usize = 1 + crate::cert::MAX_SERIAL_LEN;

/// SipHash-2-4 of `"S" || serial magnitude`: the one hash a serial lookup computes.
pub fn serial_hash(serial: &[u8]) -> u64 {
    let magnitude = crate::cert::strip_leading_zeros(serial);
    let mut buf = [0u8; MAX_INPUT];
    buf[0] = b'S';
    let len = magnitude.len().min(crate::cert::MAX_SERIAL_LEN);
    if let (Some(dst), Some(src)) = (buf.get_mut(1..=len), magnitude.get(..len)) {
        dst.copy_from_slice(src);
    }
    siphash24(&REVOCATION_KEY, buf.get(..=len).unwrap_or_default())
}

/// Key of a serial revoked for one issuer: the serial hash XOR the issuer id. For two
/// different (issuer, serial) pairs the keys are equal with probability 2^-64: different
/// serials hash independently, and the same serial under two issuers differs by the
/// (different) issuer ids.
pub fn serial_key(issuer: u64, serial: &[u8]) -> u64 {
    serial_hash(serial) ^ issuer
}

/// Key of a serial revoked for every issuer: the serial hash.
pub fn any_issuer_serial_key(serial: &[u8]) -> u64 {
    serial_hash(serial)
}

/// Key of a certificate revoked by SHA-256 fingerprint: its first 8 bytes, big-endian
/// (SHA-256 output is already uniform).
pub fn fingerprint_key(sha256: &[u8; 32]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(sha256.get(..8).unwrap_or(&[0; 8]));
    u64::from_be_bytes(first)
}

/// Keys per directory bucket, on average: a bucket spans about two cache lines.
const KEYS_PER_BUCKET: usize = 16;
/// Most directory buckets (64 MiB of offsets would be absurd for any real table).
const MAX_BUCKET_BITS: u32 = 24;

/// A sorted, deduplicated set of 64-bit keys, with a directory on the keys' top bits so a
/// lookup touches one bucket of about [`KEYS_PER_BUCKET`] keys. The directory is derived
/// from the keys (never stored in a table) and costs 4 bytes per bucket, a quarter byte
/// per key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeySet {
    /// INVARIANT (once normalised): strictly ascending.
    keys: Vec<u64>,
    /// `dir[b]..dir[b + 1]` are the keys whose top `bits` bits equal `b`; empty until
    /// the keys are normalised (lookups then fall back to binary search).
    dir: Vec<u32>,
    bits: u32,
}

impl KeySet {
    /// Builds a set from keys that are already strictly ascending (the decoder checks).
    pub(crate) fn from_sorted(keys: Vec<u64>) -> Self {
        let mut set = KeySet {
            keys,
            dir: Vec::new(),
            bits: 0,
        };
        set.index();
        set
    }

    /// Builds the directory for the (sorted) keys.
    fn index(&mut self) {
        let n = self.keys.len();
        let (Ok(n32), false) = (u32::try_from(n), n == 0) else {
            // Empty, or more keys than u32 offsets address: binary search only.
            self.dir = Vec::new();
            self.bits = 0;
            return;
        };
        let buckets_wanted = (n / KEYS_PER_BUCKET).max(1);
        let bits = usize::BITS
            .saturating_sub(1)
            .saturating_sub(buckets_wanted.leading_zeros())
            .min(MAX_BUCKET_BITS);
        let buckets = 1usize << bits;
        let mut dir = Vec::with_capacity(buckets.saturating_add(1));
        let mut i = 0u32;
        for b in 0..buckets as u64 {
            // First key whose bucket is >= b.
            while self
                .keys
                .get(i as usize)
                .is_some_and(|k| bucket_of(*k, bits) < b)
            {
                i = i.saturating_add(1);
            }
            dir.push(i);
        }
        dir.push(n32);
        self.dir = dir;
        self.bits = bits;
    }

    pub(crate) fn keys(&self) -> &[u64] {
        &self.keys
    }

    /// Adds a key; the directory is rebuilt by `normalize`, lookups wait until then.
    fn push(&mut self, key: u64) {
        self.dir.clear();
        self.keys.push(key);
    }

    fn is_normalized(&self) -> bool {
        self.keys.windows(2).all(|w| matches!(w, [a, b] if a < b))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether `key` is in the set: the directory names its bucket, and within the
    /// bucket the key's remaining bits say where it should sit (keys are uniform), so a
    /// short scan from there decides, usually inside one cache line. Without a directory
    /// (an unindexed set) it is a binary search of the whole set.
    pub fn contains(&self, key: u64) -> bool {
        let b = bucket_of(key, self.bits) as usize;
        let (Some(&start), Some(&end)) = (self.dir.get(b), self.dir.get(b.saturating_add(1)))
        else {
            return self.keys.binary_search(&key).is_ok();
        };
        let Some(bucket) = self.keys.get(start as usize..end as usize) else {
            return false;
        };
        // The key's bits below the bucket bits, scaled to the bucket's length.
        let rest = key.checked_shl(self.bits).unwrap_or(0);
        let guess =
            usize::try_from(u128::from(rest).wrapping_mul(bucket.len() as u128) >> 64).unwrap_or(0);
        // Search a few keys around the guess when they bracket the key, the bucket
        // otherwise: a lookup never costs more than a binary search, whatever the table.
        let lo = guess.saturating_sub(4);
        let hi = guess.saturating_add(4).min(bucket.len());
        let bracketed = (lo == 0 || bucket.get(lo).is_some_and(|k| *k <= key))
            && (hi == bucket.len() || bucket.get(hi.saturating_sub(1)).is_some_and(|k| *k >= key));
        let window = if bracketed {
            bucket.get(lo..hi)
        } else {
            Some(bucket)
        };
        window.is_some_and(|w| w.binary_search(&key).is_ok())
    }
}

/// The top `bits` bits of `key` (0 when `bits` is 0).
fn bucket_of(key: u64, bits: u32) -> u64 {
    key.checked_shr(64u32.saturating_sub(bits)).unwrap_or(0)
}

/// What a host does when its revocation data is stale: a live feed has not delivered
/// a good table for longer than the host's `maxStale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OnStale {
    /// Deny every connection until fresh data arrives (fail closed).
    #[default]
    Deny,
    /// Keep enforcing the last good table.
    Keep,
}

impl OnStale {
    /// The policy keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            OnStale::Deny => "deny",
            OnStale::Keep => "keep",
        }
    }

    /// Parses the policy keyword.
    pub fn parse(s: &str) -> Option<OnStale> {
        match s {
            "deny" => Some(OnStale::Deny),
            "keep" => Some(OnStale::Keep),
            _ => None,
        }
    }
}

/// The revocation set (decision step 2), and what to do when it goes stale.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Revocation {
    by_issuer: KeySet,
    any_issuer: KeySet,
    fingerprints: KeySet,
    on_stale: OnStale,
}

impl Revocation {
    pub(crate) fn from_sets(
        by_issuer: KeySet,
        any_issuer: KeySet,
        fingerprints: KeySet,
        on_stale: OnStale,
    ) -> Self {
        Revocation {
            by_issuer,
            any_issuer,
            fingerprints,
            on_stale,
        }
    }

    /// What a host with a live feed does once the data is stale (default: deny).
    pub fn on_stale(&self) -> OnStale {
        self.on_stale
    }

    /// Sets [`Revocation::on_stale`].
    pub fn set_on_stale(&mut self, on_stale: OnStale) {
        self.on_stale = on_stale;
    }

    /// The three key lists, in table order: issuer-bound serials, any-issuer serials,
    /// fingerprints.
    pub(crate) fn key_lists(&self) -> [&[u64]; 3] {
        [
            self.by_issuer.keys(),
            self.any_issuer.keys(),
            self.fingerprints.keys(),
        ]
    }

    pub(crate) fn is_normalized(&self) -> bool {
        self.by_issuer.is_normalized()
            && self.any_issuer.is_normalized()
            && self.fingerprints.is_normalized()
    }

    /// Adds a revoked serial (big-endian; leading zero bytes do not matter) for the
    /// issuer with this id, or for every issuer with `None`. Call
    /// [`Revocation::normalize`] before encoding or looking up.
    pub fn add_serial(&mut self, issuer: Option<u64>, serial: &[u8]) {
        match issuer {
            Some(id) => self.by_issuer.push(serial_key(id, serial)),
            None => self.any_issuer.push(any_issuer_serial_key(serial)),
        }
    }

    /// Adds a revoked certificate by the SHA-256 of its DER encoding.
    pub fn add_fingerprint(&mut self, sha256: &[u8; 32]) {
        self.fingerprints.push(fingerprint_key(sha256));
    }

    /// Number of revoked-serial keys (after normalisation: distinct entries).
    pub fn serial_count(&self) -> usize {
        self.by_issuer.len().saturating_add(self.any_issuer.len())
    }

    /// Number of revoked-fingerprint keys.
    pub fn fingerprint_count(&self) -> usize {
        self.fingerprints.len()
    }

    /// Sorts and deduplicates the sets and indexes them, establishing the invariants the
    /// encoder, the decoder and lookups rely on.
    pub fn normalize(&mut self) {
        for set in [
            &mut self.by_issuer,
            &mut self.any_issuer,
            &mut self.fingerprints,
        ] {
            set.keys.sort_unstable();
            set.keys.dedup();
            set.index();
        }
    }

    /// Whether a certificate from `issuer_id` with `serial` is revoked, either for that
    /// issuer or by an entry for every issuer. Hashes the serial once; an empty set costs
    /// nothing.
    pub fn is_serial_revoked(&self, issuer_id: u64, serial: &[u8]) -> bool {
        if self.by_issuer.is_empty() && self.any_issuer.is_empty() {
            return false;
        }
        let h = serial_hash(serial);
        (!self.by_issuer.is_empty() && self.by_issuer.contains(h ^ issuer_id))
            || (!self.any_issuer.is_empty() && self.any_issuer.contains(h))
    }

    /// Whether a certificate with this SHA-256 fingerprint is revoked.
    pub fn is_fingerprint_revoked(&self, sha256: &[u8; 32]) -> bool {
        !self.fingerprints.is_empty() && self.fingerprints.contains(fingerprint_key(sha256))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_finds_every_member_and_no_neighbour() {
        for n in [1usize, 2, 3, 100, 5000] {
            let mut r = Revocation::default();
            for i in 0..n as u32 {
                r.add_serial(Some(7), &i.to_be_bytes());
            }
            r.normalize();
            assert_eq!(r.serial_count(), n);
            for i in 0..n as u32 {
                assert!(
                    r.is_serial_revoked(7, &i.to_be_bytes()),
                    "member {i} of {n}"
                );
                assert!(!r.is_serial_revoked(8, &i.to_be_bytes()));
            }
            for i in n as u32..n as u32 + 100 {
                assert!(!r.is_serial_revoked(7, &i.to_be_bytes()));
            }
        }
    }

    #[test]
    fn skewed_keys_in_one_bucket_are_still_found() {
        // Not SipHash output: every key lands in bucket 0, guesses are far off.
        let keys: Vec<u64> = (0..20_000u64).map(|k| k * 3).collect();
        let set = KeySet::from_sorted(keys);
        assert!(set.bits > 0);
        for k in 0..60_000u64 {
            assert_eq!(set.contains(k), k % 3 == 0, "{k}");
        }
    }

    #[test]
    fn extreme_keys_are_found() {
        let set = KeySet::from_sorted(vec![0, 1, u64::MAX - 1, u64::MAX]);
        for k in [0, 1, u64::MAX - 1, u64::MAX] {
            assert!(set.contains(k));
        }
        assert!(!set.contains(2));
        assert!(!KeySet::default().contains(0));
    }

    #[test]
    fn leading_zeros_and_issuer_scope() {
        let mut r = Revocation::default();
        r.add_serial(None, &[0, 0, 0x4f]);
        r.add_fingerprint(&[9; 32]);
        r.normalize();
        assert!(r.is_serial_revoked(1, &[0x4f]));
        assert!(r.is_serial_revoked(2, &[0, 0x4f]));
        assert!(!r.is_serial_revoked(2, &[0x4f, 0]));
        assert!(r.is_fingerprint_revoked(&[9; 32]));
        assert!(!r.is_fingerprint_revoked(&[8; 32]));
    }
}
