//! The revocation set: revoked certificates as sorted 64-bit keys, so a table holds
//! exactly 8 bytes per entry whatever the serial length, and a lookup is one bucket of a
//! directory over the keys' top bits. Six separate sets: serials bound to their issuer,
//! serials revoked for every issuer, certificates by what their CA signed, public keys,
//! and revoked issuers (by name and key id, and by name alone). Every key is over
//! something the holder of a certificate's private key cannot change; collisions and
//! malleability are discussed in `ruleset/FORMAT.md`.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

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
const MAX_INPUT: usize = 1 + crate::cert::serial::MAX_SERIAL_LEN;

/// SipHash-2-4 of `"S" || serial magnitude`: the one hash a serial lookup computes.
pub fn serial_hash(serial: &[u8]) -> u64 {
    let magnitude = crate::cert::serial::strip_leading_zeros(serial);
    let mut buf = [0u8; MAX_INPUT];
    buf[0] = b'S';
    let len = magnitude.len().min(crate::cert::serial::MAX_SERIAL_LEN);
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

/// The first 8 bytes of a SHA-256 output, big-endian (SHA-256 output is already
/// uniform): the key of a revoked certificate (over its tbsCertificate), of a revoked
/// public key (over its canonical form or its SPKI DER).
pub fn sha256_key(sha256: &[u8; 32]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(sha256.get(..8).unwrap_or(&[0; 8]));
    u64::from_be_bytes(first)
}

/// Key of a revoked issuer named by issuer id `name` and key identifier `key_id` (the
/// CA's subject key identifier, which its certificates carry as authority key
/// identifier): SipHash-2-4 of `"K" || key_id`, XOR the name id.
pub fn issuer_key(name: u64, key_id: &[u8]) -> u64 {
    let mut buf = Vec::with_capacity(key_id.len().saturating_add(1));
    buf.push(b'K');
    buf.extend_from_slice(key_id);
    siphash24(&REVOCATION_KEY, &buf) ^ name
}

/// Key of "some CA of this name is revoked by key identifier": what a certificate
/// *without* an authority key identifier is checked against, so leaving the extension
/// out does not dodge a revoked CA (fail closed). SipHash-2-4 of `"N"`, XOR the name id.
pub fn issuer_name_any_key(name: u64) -> u64 {
    siphash24(&REVOCATION_KEY, b"N") ^ name
}

/// Keys per directory bucket, on average: a bucket spans about two cache lines.
const KEYS_PER_BUCKET: usize = 16;
/// Most directory buckets (64 MiB of offsets would be absurd for any real table).
const MAX_BUCKET_BITS: u32 = 24;

/// A sorted, deduplicated set of 64-bit keys, with a directory on the keys' top bits so a
/// lookup touches one bucket of about [`KEYS_PER_BUCKET`] keys. The directory is derived
/// from the keys (never stored in a table) and costs 4 bytes per bucket, a quarter byte
/// per key.
#[derive(Clone, Default)]
pub struct KeySet {
    /// INVARIANT (once normalised, and always for a decoded set): strictly ascending.
    keys: Keys,
    /// `dir[b]..dir[b + 1]` are the keys whose top `bits` bits equal `b`; empty until
    /// the keys are normalised (lookups then fall back to binary search).
    dir: Vec<u32>,
    bits: u32,
}

/// Where a set's keys live.
#[derive(Clone)]
enum Keys {
    /// Collected by the compiler: pushed, then sorted and deduplicated.
    Owned(Vec<u64>),
    /// In place in a decoded table: the little-endian keys at `range` of its bytes. A
    /// decoded table keeps its bytes and reads its keys there, so a VM holds a million
    /// revoked serials once, not twice.
    InTable {
        table: Arc<Vec<u8>>,
        range: Range<usize>,
    },
}

impl Default for Keys {
    fn default() -> Self {
        Keys::Owned(Vec::new())
    }
}

impl Keys {
    /// The keys, in order.
    fn iter(&self) -> KeyIter<'_> {
        match self {
            Keys::Owned(v) => KeyIter::Words(v.iter()),
            Keys::InTable { table, range } => KeyIter::Bytes(words(table, range).chunks_exact(8)),
        }
    }

    fn len(&self) -> usize {
        match self {
            Keys::Owned(v) => v.len(),
            Keys::InTable { table, range } => words(table, range).len() / 8,
        }
    }
}

/// Whether `keys` are strictly ascending (so lookups can search and no key repeats).
pub(crate) fn strictly_ascending(mut keys: impl Iterator<Item = u64>) -> bool {
    let mut prev = keys.next();
    keys.all(|k| {
        let ascending = prev.is_some_and(|p| p < k);
        prev = Some(k);
        ascending
    })
}

/// A little-endian `u64` from 8 bytes (0 from a short slice, which callers never pass).
pub(crate) fn le_u64(bytes: &[u8]) -> u64 {
    bytes.try_into().map_or(0, u64::from_le_bytes)
}

/// The bytes of an in-table key list (the decoder checked the range).
fn words<'a>(table: &'a [u8], range: &Range<usize>) -> &'a [u8] {
    table.get(range.clone()).unwrap_or_default()
}

/// Random access to ascending keys, however they are stored.
trait Sorted {
    fn count(&self) -> usize;
    fn at(&self, i: usize) -> Option<u64>;
}

impl Sorted for [u64] {
    fn count(&self) -> usize {
        self.len()
    }
    fn at(&self, i: usize) -> Option<u64> {
        self.get(i).copied()
    }
}

/// Keys stored as consecutive little-endian words.
struct LeWords<'a>(&'a [u8]);

impl Sorted for LeWords<'_> {
    fn count(&self) -> usize {
        self.0.len() / 8
    }
    fn at(&self, i: usize) -> Option<u64> {
        let start = i.checked_mul(8)?;
        Some(le_u64(self.0.get(start..start.checked_add(8)?)?))
    }
}

/// Whether `key` is among `keys[lo..hi]` (ascending): binary search.
fn search<S: Sorted + ?Sized>(keys: &S, mut lo: usize, mut hi: usize, key: u64) -> bool {
    while lo < hi {
        let mid = lo.saturating_add(hi.saturating_sub(lo) / 2);
        match keys.at(mid) {
            Some(k) if k == key => return true,
            Some(k) if k < key => lo = mid.saturating_add(1),
            Some(_) => hi = mid,
            None => return false,
        }
    }
    false
}

/// The keys of a set, in order.
#[derive(Debug)]
pub(crate) enum KeyIter<'a> {
    Words(std::slice::Iter<'a, u64>),
    Bytes(std::slice::ChunksExact<'a, u8>),
}

impl Iterator for KeyIter<'_> {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        match self {
            KeyIter::Words(it) => it.next().copied(),
            KeyIter::Bytes(it) => it.next().map(le_u64),
        }
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            KeyIter::Words(it) => it.size_hint(),
            KeyIter::Bytes(it) => it.size_hint(),
        }
    }
}

impl ExactSizeIterator for KeyIter<'_> {}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet")
            .field("len", &self.len())
            .field(
                "stored",
                &match self.keys {
                    Keys::Owned(_) => "owned",
                    Keys::InTable { .. } => "in table",
                },
            )
            .finish()
    }
}

/// Sets are equal when they hold the same keys, wherever those live.
impl PartialEq for KeySet {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for KeySet {}

impl KeySet {
    /// A set over the keys at `range` of a decoded table's bytes, which the decoder has
    /// checked are strictly ascending.
    pub(crate) fn in_table(table: Arc<Vec<u8>>, range: Range<usize>) -> Self {
        let mut set = KeySet {
            keys: Keys::InTable { table, range },
            dir: Vec::new(),
            bits: 0,
        };
        set.index();
        set
    }

    /// The keys, in order.
    pub(crate) fn iter(&self) -> KeyIter<'_> {
        self.keys.iter()
    }

    /// Takes the keys out as an owned list (a copy when they live in a table).
    fn take_owned(&mut self) -> Vec<u64> {
        self.dir.clear();
        self.bits = 0;
        match std::mem::take(&mut self.keys) {
            Keys::Owned(v) => v,
            in_table @ Keys::InTable { .. } => in_table.iter().collect(),
        }
    }

    /// Builds the directory for the (sorted) keys.
    fn index(&mut self) {
        let n = self.len();
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
        // dir[b] is the position of the first key whose bucket is >= b.
        let mut next_bucket = 0u64;
        for (i, k) in self.iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(n32);
            while next_bucket <= bucket_of(k, bits) {
                dir.push(i);
                next_bucket = next_bucket.saturating_add(1);
            }
        }
        dir.resize(buckets.saturating_add(1), n32);
        self.dir = dir;
        self.bits = bits;
    }

    /// Adds a key; the directory is rebuilt by `normalize`, lookups wait until then.
    fn push(&mut self, key: u64) {
        let mut keys = self.take_owned();
        keys.push(key);
        self.keys = Keys::Owned(keys);
    }

    /// Sorts, deduplicates and indexes the keys.
    fn normalize(&mut self) {
        let mut keys = self.take_owned();
        keys.sort_unstable();
        keys.dedup();
        self.keys = Keys::Owned(keys);
        self.index();
    }

    fn is_normalized(&self) -> bool {
        strictly_ascending(self.iter())
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `key` is in the set: the directory names its bucket, and within the
    /// bucket the key's remaining bits say where it should sit (keys are uniform), so a
    /// short scan from there decides, usually inside one cache line. Without a directory
    /// (an unindexed set) it is a binary search of the whole set.
    pub fn contains(&self, key: u64) -> bool {
        match &self.keys {
            Keys::Owned(v) => self.find(v.as_slice(), key),
            Keys::InTable { table, range } => self.find(&LeWords(words(table, range)), key),
        }
    }

    fn find<S: Sorted + ?Sized>(&self, keys: &S, key: u64) -> bool {
        let n = keys.count();
        let b = bucket_of(key, self.bits) as usize;
        let (Some(&start), Some(&end)) = (self.dir.get(b), self.dir.get(b.saturating_add(1)))
        else {
            return search(keys, 0, n, key);
        };
        let (start, end) = (start as usize, (end as usize).min(n));
        let len = end.saturating_sub(start);
        if len == 0 {
            return false;
        }
        // The key's bits below the bucket bits, scaled to the bucket's length.
        let rest = key.checked_shl(self.bits).unwrap_or(0);
        let guess = start.saturating_add(
            usize::try_from(u128::from(rest).wrapping_mul(len as u128) >> 64).unwrap_or(0),
        );
        // Search a few keys around the guess when they bracket the key, the bucket
        // otherwise: a lookup never costs more than a binary search, whatever the table.
        let lo = guess.saturating_sub(4).max(start);
        let hi = guess.saturating_add(4).min(end);
        let bracketed = (lo == start || keys.at(lo).is_some_and(|k| k <= key))
            && (hi == end || keys.at(hi.saturating_sub(1)).is_some_and(|k| k >= key));
        if bracketed {
            search(keys, lo, hi, key)
        } else {
            search(keys, start, end, key)
        }
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

/// Why a certificate is revoked (decision step 2), in the order they are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// What its CA signed (the tbsCertificate) is revoked.
    Certificate,
    /// Its public key is revoked.
    Key,
    /// Its serial is revoked (for its issuer, or for every issuer).
    Serial,
    /// The CA that issued it is revoked.
    Issuer,
}

/// The six key lists of the revocation section, in table order.
pub(crate) const LISTS: usize = 6;

/// The revocation set (decision step 2), and what to do when it goes stale.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Revocation {
    by_issuer: KeySet,
    any_issuer: KeySet,
    certificates: KeySet,
    keys: KeySet,
    issuers: KeySet,
    issuer_names: KeySet,
    on_stale: OnStale,
}

impl Revocation {
    pub(crate) fn from_sets(sets: [KeySet; LISTS], on_stale: OnStale) -> Self {
        let [by_issuer, any_issuer, certificates, keys, issuers, issuer_names] = sets;
        Revocation {
            by_issuer,
            any_issuer,
            certificates,
            keys,
            issuers,
            issuer_names,
            on_stale,
        }
    }

    /// The bytes of the table these sets were decoded from, as the decoder got them
    /// (header, body and signature trailer; the keys are read in place there), so a
    /// host can apply a delta to the table in force without a second copy. `None` for
    /// sets the compiler built.
    pub fn table_bytes(&self) -> Option<&[u8]> {
        match &self.by_issuer.keys {
            Keys::InTable { table, .. } => Some(table.as_slice()),
            Keys::Owned(_) => None,
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

    /// The six key lists, in table order: issuer-bound serials, any-issuer serials,
    /// certificates, public keys, issuers by name and key id, issuers by name.
    pub(crate) fn key_lists(&self) -> [&KeySet; LISTS] {
        [
            &self.by_issuer,
            &self.any_issuer,
            &self.certificates,
            &self.keys,
            &self.issuers,
            &self.issuer_names,
        ]
    }

    pub(crate) fn is_normalized(&self) -> bool {
        self.key_lists().iter().all(|s| s.is_normalized())
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

    /// Adds a revoked certificate by the SHA-256 of its tbsCertificate DER
    /// ([`crate::CertFacts::tbs_sha256`]): every encoding of what its CA signed.
    pub fn add_certificate(&mut self, tbs_sha256: &[u8; 32]) {
        self.certificates.push(sha256_key(tbs_sha256));
    }

    /// Adds a revoked public key by a SHA-256 the lookup computes too: the canonical
    /// key ([`crate::CertFacts::public_key_sha256`]) or the SPKI DER
    /// ([`crate::CertFacts::spki_sha256`]).
    pub fn add_key(&mut self, sha256: &[u8; 32]) {
        self.keys.push(sha256_key(sha256));
    }

    /// Adds a revoked CA: everything issued under the name with id `name` (its
    /// subject's [`crate::dn::issuer_id_of`]) and, with `key_id`, only under that
    /// authority key identifier (its subject key identifier). Without a key id every
    /// certificate of that issuer name is revoked.
    pub fn add_issuer(&mut self, name: u64, key_id: Option<&[u8]>) {
        match key_id {
            Some(id) => {
                self.issuers.push(issuer_key(name, id));
                self.issuer_names.push(issuer_name_any_key(name));
            }
            None => self.issuer_names.push(name),
        }
    }

    /// Whether no certificate is revoked at all (every key list is empty).
    pub fn is_empty(&self) -> bool {
        self.key_lists().iter().all(|s| s.is_empty())
    }

    /// Number of revoked-serial keys (after normalisation: distinct entries).
    pub fn serial_count(&self) -> usize {
        self.by_issuer.len().saturating_add(self.any_issuer.len())
    }

    /// Number of revoked-certificate keys.
    pub fn certificate_count(&self) -> usize {
        self.certificates.len()
    }

    /// Number of revoked-public-key keys (a key revoked by file counts twice: its
    /// canonical form and its SPKI).
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Number of revoked-issuer keys (both issuer lists).
    pub fn issuer_count(&self) -> usize {
        self.issuers.len().saturating_add(self.issuer_names.len())
    }

    /// Sorts and deduplicates the sets and indexes them, establishing the invariants the
    /// encoder, the decoder and lookups rely on.
    pub fn normalize(&mut self) {
        for set in [
            &mut self.by_issuer,
            &mut self.any_issuer,
            &mut self.certificates,
            &mut self.keys,
            &mut self.issuers,
            &mut self.issuer_names,
        ] {
            set.normalize();
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

    /// Whether a certificate is revoked by what its CA signed. `tbs_sha256` gives its
    /// [`crate::CertFacts::tbs_sha256`], asked for only when any certificate is revoked:
    /// hashing costs a new certificate microseconds in wasm.
    pub(crate) fn is_certificate_revoked(&self, tbs_sha256: impl FnOnce() -> [u8; 32]) -> bool {
        !self.certificates.is_empty() && self.certificates.contains(sha256_key(&tbs_sha256()))
    }

    /// Whether a certificate's public key is revoked, by its canonical form or its SPKI
    /// DER ([`crate::CertFacts::public_key_sha256`], [`crate::CertFacts::spki_sha256`]),
    /// each asked for only when needed.
    pub(crate) fn is_key_revoked(
        &self,
        public_key_sha256: impl FnOnce() -> [u8; 32],
        spki_sha256: impl FnOnce() -> [u8; 32],
    ) -> bool {
        !self.keys.is_empty()
            && (self.keys.contains(sha256_key(&public_key_sha256()))
                || self.keys.contains(sha256_key(&spki_sha256())))
    }

    /// Whether a certificate issued under the name with id `name` and with this
    /// authority key identifier comes from a revoked CA. Without an authority key
    /// identifier, any revoked CA of that name counts (fail closed).
    pub fn is_issuer_revoked(&self, name: u64, authority_key_id: Option<&[u8]>) -> bool {
        // The compiler puts a name key beside every (name, key id) key, but a lookup
        // does not rely on it: a table from another encoder is read as it is.
        let names = !self.issuer_names.is_empty();
        if names && self.issuer_names.contains(name) {
            return true;
        }
        match authority_key_id {
            Some(id) => !self.issuers.is_empty() && self.issuers.contains(issuer_key(name, id)),
            None => names && self.issuer_names.contains(issuer_name_any_key(name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(keys: Vec<u64>) -> KeySet {
        let mut set = KeySet {
            keys: Keys::Owned(keys),
            ..KeySet::default()
        };
        set.normalize();
        set
    }

    fn in_table(keys: &[u64]) -> KeySet {
        // Two bytes before the keys: words need not be aligned.
        let mut bytes = vec![0xee, 0xee];
        bytes.extend(keys.iter().flat_map(|k| k.to_le_bytes()));
        let len = bytes.len();
        KeySet::in_table(Arc::new(bytes), 2..len)
    }

    #[test]
    fn keys_in_a_table_are_found_like_owned_keys() {
        let keys: Vec<u64> = (1..5_000u64)
            .map(|k| k.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let (a, b) = (owned(keys.clone()), in_table(&keys));
        assert_eq!(a, b);
        assert_eq!(b.len(), keys.len());
        assert_eq!(a.dir, b.dir);
        for k in keys.iter().flat_map(|k| [*k, k.wrapping_add(1)]) {
            assert_eq!(a.contains(k), keys.binary_search(&k).is_ok(), "{k}");
            assert_eq!(b.contains(k), a.contains(k), "{k}");
        }
        // Adding to a decoded set copies it out of the table first.
        let mut c = b.clone();
        c.push(3);
        c.normalize();
        assert!(c.contains(3) && !b.contains(3));
        assert_eq!(c.len(), keys.len() + 1);
    }

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
        let set = owned(keys);
        assert!(set.bits > 0);
        for k in 0..60_000u64 {
            assert_eq!(set.contains(k), k % 3 == 0, "{k}");
        }
    }

    #[test]
    fn extreme_keys_are_found() {
        let set = owned(vec![0, 1, u64::MAX - 1, u64::MAX]);
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
        r.normalize();
        assert!(r.is_serial_revoked(1, &[0x4f]));
        assert!(r.is_serial_revoked(2, &[0, 0x4f]));
        assert!(!r.is_serial_revoked(2, &[0x4f, 0]));
    }

    #[test]
    fn revoked_issuers_match_by_name_and_key_id_and_fail_closed_without_one() {
        let mut r = Revocation::default();
        assert!(!r.is_issuer_revoked(1, None));
        r.add_issuer(1, Some(b"key-a"));
        r.add_issuer(2, None);
        r.normalize();
        // Name and key id.
        assert!(r.is_issuer_revoked(1, Some(b"key-a")));
        // The same name under another key (a re-keyed CA) is not revoked.
        assert!(!r.is_issuer_revoked(1, Some(b"key-b")));
        // No authority key identifier: any revoked CA of that name counts.
        assert!(r.is_issuer_revoked(1, None));
        // Another name with the revoked key id is not revoked.
        assert!(!r.is_issuer_revoked(3, Some(b"key-a")));
        assert!(!r.is_issuer_revoked(3, None));
        // A CA revoked by name alone revokes everything under that name.
        assert!(r.is_issuer_revoked(2, Some(b"anything")));
        assert!(r.is_issuer_revoked(2, None));
        assert_eq!(r.issuer_count(), 3);
    }
}
