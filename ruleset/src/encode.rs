//! Table → bytes. The writer enforces every limit the reader checks, so a table that
//! encodes also decodes. Layout: `ruleset/FORMAT.md`.

use std::fmt;
use std::net::IpAddr;

use crate::format::*;
use crate::{Action, AuditLog, Mode, Table, TlsVersion};

/// Why a table could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// A list or string exceeds a format limit.
    Limit {
        /// What exceeded the limit.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// The revocation lists are not sorted and deduplicated (call `Table::normalize`).
    NotNormalized,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::Limit { what, limit } => {
                write!(f, "{what} exceeds the table format's limit of {limit}")
            }
            EncodeError::NotNormalized => {
                write!(f, "revocation lists must be sorted and deduplicated")
            }
        }
    }
}

impl std::error::Error for EncodeError {}

pub(crate) fn mode_byte(m: Mode) -> u8 {
    match m {
        Mode::Enforce => 0,
        Mode::Audit => 1,
    }
}
pub(crate) fn action_byte(a: Action) -> u8 {
    match a {
        Action::Allow => 0,
        Action::Deny => 1,
    }
}
pub(crate) fn audit_byte(a: AuditLog) -> u8 {
    match a {
        AuditLog::All => 0,
        AuditLog::Deny => 1,
        AuditLog::None => 2,
    }
}
pub(crate) fn tls_byte(v: Option<TlsVersion>) -> u8 {
    match v {
        None => 0,
        Some(TlsVersion::V1_0) => 1,
        Some(TlsVersion::V1_1) => 2,
        Some(TlsVersion::V1_2) => 3,
        Some(TlsVersion::V1_3) => 4,
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn count(&mut self, n: usize, limit: usize, what: &'static str) -> Result<(), EncodeError> {
        let err = EncodeError::Limit { what, limit };
        if n > limit {
            return Err(err);
        }
        self.u32(u32::try_from(n).map_err(|_| err)?);
        Ok(())
    }
    fn str(&mut self, s: &str, what: &'static str) -> Result<(), EncodeError> {
        let err = EncodeError::Limit {
            what,
            limit: MAX_STRING_LEN,
        };
        if s.len() > MAX_STRING_LEN {
            return Err(err);
        }
        self.u16(u16::try_from(s.len()).map_err(|_| err)?);
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
    fn strs<'a>(
        &mut self,
        items: impl ExactSizeIterator<Item = &'a str>,
        limit: usize,
        what: &'static str,
    ) -> Result<(), EncodeError> {
        self.count(items.len(), limit, what)?;
        items.into_iter().try_for_each(|s| self.str(s, what))
    }
    fn keys(
        &mut self,
        keys: &crate::revocation::KeySet,
        limit: usize,
        what: &'static str,
    ) -> Result<(), EncodeError> {
        self.count(keys.len(), limit, what)?;
        self.0.reserve(keys.len().saturating_mul(8));
        keys.iter().for_each(|k| self.u64(k));
        Ok(())
    }
    /// Writes `tag`, a length placeholder, the payload, then patches the length.
    fn section(
        &mut self,
        tag: u8,
        body: impl FnOnce(&mut Writer) -> Result<(), EncodeError>,
    ) -> Result<(), EncodeError> {
        self.u8(tag);
        let at = self.0.len();
        self.u32(0);
        body(self)?;
        let len = self.0.len().saturating_sub(at).saturating_sub(4);
        let len = u32::try_from(len).map_err(|_| EncodeError::Limit {
            what: "section",
            limit: MAX_TABLE_LEN,
        })?;
        if let Some(slot) = self.0.get_mut(at..at.saturating_add(4)) {
            slot.copy_from_slice(&len.to_le_bytes());
        }
        Ok(())
    }
}

/// Encodes a table. The revocation lists must be normalised (`Table::normalize`).
pub fn encode(table: &Table) -> Result<Vec<u8>, EncodeError> {
    let rev = &table.revocation;
    if !rev.is_normalized() {
        return Err(EncodeError::NotNormalized);
    }
    // The decoder refuses a table whose decoded form passes its memory budget; such a
    // table is not written.
    if crate::budget::decoded_cost(table) > crate::budget::MAX_DECODED_BYTES {
        return Err(EncodeError::Limit {
            what: "the estimated memory of the decoded table (bytes)",
            limit: crate::budget::MAX_DECODED_BYTES,
        });
    }
    let mut w = Writer(Vec::new());
    w.section(SECTION_META, |w| {
        w.u8(mode_byte(table.mode));
        w.u8(action_byte(table.default_action));
        w.u8(audit_byte(table.audit_log));
        w.strs(
            table.policy_names.iter().map(String::as_str),
            MAX_POLICIES,
            "policy names",
        )
    })?;
    w.section(SECTION_CONSTRAINTS, |w| {
        let c = &table.constraints;
        w.u8(tls_byte(c.min_tls));
        match c.max_lifetime_secs {
            None => w.u8(0),
            Some(s) => {
                w.u8(1);
                w.u64(s);
            }
        }
        match &c.keys {
            None => w.u8(0),
            Some(k) => {
                w.u8(1);
                match k.rsa_min_bits {
                    None => w.u8(0),
                    Some(bits) => {
                        w.u8(1);
                        w.u32(bits);
                    }
                }
                let curves = CURVE_BITS
                    .iter()
                    .filter(|(c, _)| k.ecdsa_curves.contains(c))
                    .fold(0u8, |acc, (_, bit)| acc | bit);
                w.u8(curves);
                w.u8(u8::from(k.ed25519));
            }
        }
        let hashes = HASH_BITS
            .iter()
            .filter(|(h, _)| c.forbid_sig_hashes.contains(h))
            .fold(0u8, |acc, (_, bit)| acc | bit);
        w.u8(hashes);
        w.strs(
            c.trust_domains.iter().map(String::as_str),
            MAX_TRUST_DOMAINS,
            "trust domains",
        )
    })?;
    w.section(SECTION_RULES, |w| {
        w.count(table.rules.len(), MAX_RULES, "rules")?;
        for r in &table.rules {
            w.str(&r.name, "rule name")?;
            w.u16(r.policy);
            w.u8(action_byte(r.action));
            let principals: Vec<String> = r.principals.iter().map(|p| p.to_string()).collect();
            w.strs(
                principals.iter().map(String::as_str),
                MAX_RULE_LIST,
                "principals",
            )?;
            let not: Vec<String> = r.not_principals.iter().map(|p| p.to_string()).collect();
            w.strs(
                not.iter().map(String::as_str),
                MAX_RULE_LIST,
                "notPrincipals",
            )?;
            w.count(r.ports.len(), MAX_RULE_LIST, "ports")?;
            for p in &r.ports {
                w.u16(p.start);
                w.u16(p.end);
            }
            w.strs(r.sni.iter().map(String::as_str), MAX_RULE_LIST, "sni")?;
            w.count(r.source_cidrs.len(), MAX_RULE_LIST, "sourceCidrs")?;
            for c in &r.source_cidrs {
                match c.addr {
                    IpAddr::V4(a) => {
                        w.u8(4);
                        w.0.extend_from_slice(&a.octets());
                    }
                    IpAddr::V6(a) => {
                        w.u8(6);
                        w.0.extend_from_slice(&a.octets());
                    }
                }
                w.u8(c.prefix);
            }
        }
        Ok(())
    })?;
    w.section(SECTION_REVOCATION, |w| {
        w.u8(match rev.on_stale() {
            crate::OnStale::Deny => 0,
            crate::OnStale::Keep => 1,
        });
        for (set, what) in rev.key_lists().into_iter().zip(REVOCATION_LISTS) {
            w.keys(set, MAX_REVOKED, what)?;
        }
        Ok(())
    })?;
    let body = w.0;
    let too_big = EncodeError::Limit {
        what: "table size",
        limit: MAX_TABLE_LEN,
    };
    if body.len().saturating_add(HEADER_LEN) > MAX_TABLE_LEN {
        return Err(too_big);
    }
    let mut out = Vec::with_capacity(body.len().saturating_add(HEADER_LEN));
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(
        &u32::try_from(body.len())
            .map_err(|_| too_big)?
            .to_le_bytes(),
    );
    let crc_at = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&table.policy_digest);
    out.extend_from_slice(&table.issued_at_ms.to_le_bytes());
    // 0 means "no expiry"; a table cannot expire at the epoch itself.
    out.extend_from_slice(&table.expires_at_ms.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&body);
    // The checksum covers the policy digest, the times and the body.
    let crc = crc32(out.get(crc_at.saturating_add(4)..).unwrap_or_default());
    if let Some(slot) = out.get_mut(crc_at..crc_at.saturating_add(4)) {
        slot.copy_from_slice(&crc.to_le_bytes());
    }
    Ok(out)
}
