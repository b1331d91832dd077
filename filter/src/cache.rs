//! A bounded per-VM cache of parsed peer certificates, keyed by Envoy's
//! `connection.sha256_peer_certificate_digest`.
//!
//! Most connections come from a few workloads presenting the same certificate until it
//! rotates, so reading the PEM and parsing X.509 once per certificate instead of once
//! per connection is the filter's main saving. Eviction is first-in first-out: cheap,
//! and a rotated certificate ages out on its own.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use ruleset::PeerCert;

/// Parsed certificates (or the parse error) by SHA-256 digest, at most `capacity`.
#[derive(Debug)]
pub struct CertCache {
    capacity: usize,
    entries: HashMap<String, Rc<PeerCert>>,
    // INVARIANT: holds exactly the keys of `entries`, oldest first.
    order: VecDeque<String>,
}

impl CertCache {
    /// An empty cache; `capacity` 0 caches nothing.
    pub fn new(capacity: usize) -> Self {
        CertCache {
            capacity,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The cached certificate for `digest`.
    pub fn get(&self, digest: &str) -> Option<Rc<PeerCert>> {
        self.entries.get(digest).cloned()
    }

    /// Remembers `cert` under `digest`, evicting the oldest entry when full.
    pub fn insert(&mut self, digest: String, cert: Rc<PeerCert>) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_oldest_first_and_stays_bounded() {
        let mut c = CertCache::new(2);
        for k in ["a", "b", "c"] {
            c.insert(k.into(), Rc::new(PeerCert::Missing));
        }
        assert_eq!(c.len(), 2);
        assert!(c.get("a").is_none());
        assert!(c.get("b").is_some() && c.get("c").is_some());
        c.insert("c".into(), Rc::new(PeerCert::Missing));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let mut c = CertCache::new(0);
        c.insert("a".into(), Rc::new(PeerCert::Missing));
        assert_eq!(c.len(), 0);
    }
}
