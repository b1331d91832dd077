//! Whether a read certificate is revoked ([`Revocation::check`]), in the order the
//! decision takes it. Apart from the revocation set because it reads [`CertFacts`]: the
//! peer facts sit above the table model, which holds the revocation set, so a check
//! inside `revocation` would make it import a module that imports it back.

use crate::revocation::{Revocation, Revoked};
use crate::CertFacts;

impl Revocation {
    /// Whether the certificate with these facts is revoked, and why, checked in the
    /// order certificate, key, serial, issuer. An empty list costs nothing.
    pub fn check(&self, facts: &CertFacts) -> Option<Revoked> {
        if self.is_certificate_revoked(|| facts.tbs_sha256()) {
            return Some(Revoked::Certificate);
        }
        if self.is_key_revoked(|| facts.public_key_sha256(), || facts.spki_sha256()) {
            return Some(Revoked::Key);
        }
        if self.is_serial_revoked(facts.issuer_id, &facts.serial) {
            return Some(Revoked::Serial);
        }
        if self.is_issuer_revoked(facts.issuer_id, facts.authority_key_id.as_deref()) {
            return Some(Revoked::Issuer);
        }
        None
    }
}
