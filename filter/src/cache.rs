//! A bounded per-VM cache of parsed peer certificates, keyed by Envoy's
//! `connection.sha256_peer_certificate_digest`.
//!
//! Most connections come from a few workloads presenting the same certificate until it
//! rotates, so reading the PEM and parsing X.509 once per certificate instead of once
//! per connection is the filter's main saving; each entry also keeps the decision last
//! made for its certificate (see [`Memo`]). Eviction is first-in first-out: cheap, and
//! a rotated certificate ages out on its own.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

use ruleset::PeerCert;

use crate::memo::Memo;

/// A certificate the cache knows: its parsed facts (or why it did not parse), and the
/// decision last made for it.
#[derive(Debug)]
pub struct Known {
    pub cert: PeerCert,
    memo: RefCell<Option<Rc<Memo>>>,
}

impl Known {
    pub fn new(cert: PeerCert) -> Self {
        Known {
            cert,
            memo: RefCell::new(None),
        }
    }

    /// The decision remembered for table `generation`, or the one `make` builds, which
    /// is remembered in its place.
    pub fn memo(&self, generation: u64, make: impl FnOnce() -> Memo) -> Rc<Memo> {
        let mut slot = self.memo.borrow_mut();
        match &*slot {
            Some(memo) if memo.generation() == generation => Rc::clone(memo),
            _ => {
                let memo = Rc::new(make());
                *slot = Some(Rc::clone(&memo));
                memo
            }
        }
    }
}

/// Known certificates by SHA-256 digest, at most `capacity`.
#[derive(Debug)]
pub struct CertCache {
    capacity: usize,
    entries: HashMap<String, Rc<Known>, BuildHasherDefault<DigestHasher>>,
    // INVARIANT: holds exactly the keys of `entries`, oldest first.
    order: VecDeque<String>,
}

impl CertCache {
    /// An empty cache; `capacity` 0 caches nothing.
    pub fn new(capacity: usize) -> Self {
        CertCache {
            capacity,
            entries: HashMap::default(),
            order: VecDeque::new(),
        }
    }

    /// The cached certificate for `digest`.
    pub fn get(&self, digest: &str) -> Option<Rc<Known>> {
        self.entries.get(digest).cloned()
    }

    /// Remembers `cert` under `digest`, evicting the oldest entry when full.
    pub fn insert(&mut self, digest: String, cert: Rc<Known>) {
        if self.capacity == 0 || self.entries.contains_key(&digest) {
            return;
        }
        while self.entries.len() >= self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.entries.remove(&old);
                }
                None => break,
            }
        }
        self.order.push_back(digest.clone());
        self.entries.insert(digest, cert);
    }

    /// Number of cached certificates.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// FxHash over 8-byte words, mixed once at the end. Keys are hex SHA-256 digests, and a
/// client cannot choose its certificate's digest (its CA signed the certificate), so
/// SipHash's keyed defence against chosen keys buys nothing here; it cost a new
/// certificate four SipHash runs over 64 bytes.
#[derive(Debug, Default)]
pub struct DigestHasher(u64);

impl DigestHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for DigestHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            self.add(u64::from_le_bytes(word.try_into().unwrap_or_default()));
        }
        for b in words.remainder() {
            self.add(u64::from(*b));
        }
    }

    fn finish(&self) -> u64 {
        // Fx leaves the low bits weak; hashbrown indexes with them.
        let h = self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^ (h >> 29)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_oldest_first_and_stays_bounded() {
        let mut c = CertCache::new(2);
        for k in ["a", "b", "c"] {
            c.insert(k.into(), Rc::new(Known::new(PeerCert::Missing)));
        }
        assert_eq!(c.len(), 2);
        assert!(c.get("a").is_none());
        assert!(c.get("b").is_some() && c.get("c").is_some());
        c.insert("c".into(), Rc::new(Known::new(PeerCert::Missing)));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn digests_that_share_a_prefix_are_still_told_apart() {
        let mut c = CertCache::new(4);
        let a = format!("{}{}", "ab".repeat(31), "00");
        let b = format!("{}{}", "ab".repeat(31), "01");
        let (ha, hb) = [&a, &b]
            .map(|k| {
                let mut h = DigestHasher::default();
                h.write(k.as_bytes());
                h.finish()
            })
            .into();
        assert_ne!(ha, hb);
        c.insert(a.clone(), Rc::new(Known::new(PeerCert::Missing)));
        c.insert(
            b.clone(),
            Rc::new(Known::new(PeerCert::Unparsable("b".into()))),
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(&a).map(|k| k.cert.clone()), Some(PeerCert::Missing));
        assert_eq!(
            c.get(&b).map(|k| k.cert.clone()),
            Some(PeerCert::Unparsable("b".into()))
        );
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let mut c = CertCache::new(0);
        c.insert("a".into(), Rc::new(Known::new(PeerCert::Missing)));
        assert_eq!(c.len(), 0);
    }
}
