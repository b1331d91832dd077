//! The revocation set: revoked certificates as 64-bit SipHash-2-4 keys, sorted, so a
//! table holds exactly 8 bytes per entry whatever the serial length, and a lookup is an
//! interpolation into a uniformly distributed array (a couple of cache lines), not a
//! tree walk. Keys are domain-separated: serial bound to an issuer, serial for every
//! issuer, SHA-256 fingerprint. Collisions are discussed in `ruleset/FORMAT.md`.

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

/// Longest key input: tag, issuer id, longest serial.
const MAX_INPUT: usize = 1 + 8 + crate::cert::MAX_SERIAL_LEN;

/// SipHash of `tag || parts...`, assembled on the stack (inputs are short).
fn key_of(tag: u8, parts: &[&[u8]]) -> u64 {
    let mut buf = [0u8; MAX_INPUT];
    let mut len = 0usize;
    for part in std::iter::once(&[tag][..]).chain(parts.iter().copied()) {
        let end = len.saturating_add(part.len()).min(MAX_INPUT);
        if let (Some(dst), Some(src)) = (buf.get_mut(len..end), part.get(..end.saturating_sub(len)))
        {
            dst.copy_from_slice(src);
        }
        len = end;
    }
    siphash24(&REVOCATION_KEY, buf.get(..len).unwrap_or_default())
}

/// Key of a serial revoked for one issuer.
pub fn serial_key(issuer: u64, serial: &[u8]) -> u64 {
    key_of(
        b'S',
        &[
            &issuer.to_be_bytes(),
            crate::cert::strip_leading_zeros(serial),
        ],
    )
}

/// Key of a serial revoked for every issuer.
pub fn any_issuer_serial_key(serial: &[u8]) -> u64 {
    key_of(b'A', &[crate::cert::strip_leading_zeros(serial)])
}

/// Key of a certificate revoked by SHA-256 fingerprint.
pub fn fingerprint_key(sha256: &[u8; 32]) -> u64 {
    key_of(b'F', &[sha256])
}

/// A sorted, deduplicated set of 64-bit keys with interpolation lookup.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeySet {
    /// INVARIANT (once normalised): strictly ascending.
    keys: Vec<u64>,
}

impl KeySet {
    /// Builds a set from keys that are already strictly ascending (the decoder checks).
    pub(crate) fn from_sorted(keys: Vec<u64>) -> Self {
        KeySet { keys }
    }

    pub(crate) fn keys(&self) -> &[u64] {
        &self.keys
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

    /// Whether `key` is in the set. Keys are uniform (SipHash outputs), so interpolating
    /// between the bracketing keys lands next to the key in one or two probes; after a
    /// few probes (a table whose keys are not uniform, say a hand-made one) it falls back
    /// to binary search, so no table can make a lookup slower than `O(log n)`.
    pub fn contains(&self, key: u64) -> bool {
        const PROBES: usize = 4;
        let keys = self.keys.as_slice();
        let (Some(&first), Some(&last)) = (keys.first(), keys.last()) else {
            return false;
        };
        if key < first || key > last {
            return false;
        }
        // INVARIANT: keys[lo] <= key <= keys[hi].
        let mut lo = 0usize;
        let mut hi = keys.len().saturating_sub(1);
        for _ in 0..PROBES {
            let (Some(&klo), Some(&khi)) = (keys.get(lo), keys.get(hi)) else {
                return false;
            };
            if key == klo || key == khi {
                return true;
            }
            let width = hi.saturating_sub(lo);
            if width <= 16 {
                break;
            }
            // klo < key < khi here, so both differences are positive and off < width.
            let num = u128::from(key.wrapping_sub(klo)).wrapping_mul(width as u128);
            let off = num
                .checked_div(u128::from(khi.wrapping_sub(klo)))
                .and_then(|q| usize::try_from(q).ok())
                .unwrap_or(0);
            let pos = lo
                .saturating_add(off)
                .clamp(lo.saturating_add(1), hi.saturating_sub(1));
            match keys.get(pos).map(|k| k.cmp(&key)) {
                Some(std::cmp::Ordering::Equal) => return true,
                Some(std::cmp::Ordering::Less) => lo = pos,
                Some(std::cmp::Ordering::Greater) => hi = pos,
                None => return false,
            }
        }
        keys.get(lo..=hi)
            .is_some_and(|w| w.binary_search(&key).is_ok())
    }
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
    serials: KeySet,
    fingerprints: KeySet,
    on_stale: OnStale,
}

impl Revocation {
    pub(crate) fn from_sets(serials: KeySet, fingerprints: KeySet, on_stale: OnStale) -> Self {
        Revocation {
            serials,
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

    pub(crate) fn serial_keys(&self) -> &[u64] {
        self.serials.keys()
    }

    pub(crate) fn fingerprint_keys(&self) -> &[u64] {
        self.fingerprints.keys()
    }

    pub(crate) fn is_normalized(&self) -> bool {
        self.serials.is_normalized() && self.fingerprints.is_normalized()
    }

    /// Adds a revoked serial (big-endian; leading zero bytes do not matter) for the
    /// issuer with this id, or for every issuer with `None`. Call
    /// [`Revocation::normalize`] before encoding.
    pub fn add_serial(&mut self, issuer: Option<u64>, serial: &[u8]) {
        self.serials.keys.push(match issuer {
            Some(id) => serial_key(id, serial),
            None => any_issuer_serial_key(serial),
        });
    }

    /// Adds a revoked certificate by the SHA-256 of its DER encoding.
    pub fn add_fingerprint(&mut self, sha256: &[u8; 32]) {
        self.fingerprints.keys.push(fingerprint_key(sha256));
    }

    /// Number of revoked-serial keys (after normalisation: distinct entries).
    pub fn serial_count(&self) -> usize {
        self.serials.len()
    }

    /// Number of revoked-fingerprint keys.
    pub fn fingerprint_count(&self) -> usize {
        self.fingerprints.len()
    }

    /// Sorts and deduplicates both sets, establishing the invariant the encoder, the
    /// decoder and lookups rely on.
    pub fn normalize(&mut self) {
        for set in [&mut self.serials, &mut self.fingerprints] {
            set.keys.sort_unstable();
            set.keys.dedup();
        }
    }

    /// Whether a certificate from `issuer_id` with `serial` is revoked, either for that
    /// issuer or by an entry for every issuer.
    pub fn is_serial_revoked(&self, issuer_id: u64, serial: &[u8]) -> bool {
        !self.serials.is_empty()
            && (self.serials.contains(serial_key(issuer_id, serial))
                || self.serials.contains(any_issuer_serial_key(serial)))
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
