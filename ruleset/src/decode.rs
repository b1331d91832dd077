//! Bytes → table, for untrusted input: every read is bounds-checked, every count is
//! checked against a named limit before anything is allocated for it, enumerations
//! reject unknown values, lists that must be sorted are checked, and trailing bytes
//! (after a section or after the table) are an error. Layout: `ruleset/FORMAT.md`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::budget::{self, Budget};
use crate::format::*;
use crate::revocation::{le_u64, strictly_ascending, KeySet, OnStale};
use crate::{
    Action, AuditLog, Cidr, Constraints, KeyPolicy, Mode, Pattern, PortRange, Revocation, Rule,
    Table, TlsVersion,
};

// Where callers have always found the decoder's error.
pub use crate::decode_error::DecodeError;

struct Reader<'a> {
    buf: &'a [u8],
    /// Offset of `buf` in `table`.
    pos: usize,
    /// The whole table, which key sets keep and read in place.
    table: &'a Arc<Vec<u8>>,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::Truncated { what });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        self.pos = self.pos.saturating_add(n);
        Ok(head)
    }
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(u8::from_le_bytes(self.array(what)?))
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    fn flag(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::BadValue { what }),
        }
    }
    /// Reads a count and checks it against `limit` and against the bytes left, given
    /// the smallest encoding of one item, before the caller allocates for it.
    fn count(
        &mut self,
        limit: usize,
        min_item: usize,
        what: &'static str,
    ) -> Result<usize, DecodeError> {
        let n = usize::try_from(self.u32(what)?).map_err(|_| DecodeError::Limit { what, limit })?;
        if n > limit {
            return Err(DecodeError::Limit { what, limit });
        }
        if n.saturating_mul(min_item) > self.buf.len() {
            return Err(DecodeError::Truncated { what });
        }
        Ok(n)
    }
    fn str(&mut self, what: &'static str) -> Result<&'a str, DecodeError> {
        let len = usize::from(self.u16(what)?);
        if len > MAX_STRING_LEN {
            return Err(DecodeError::Limit {
                what,
                limit: MAX_STRING_LEN,
            });
        }
        std::str::from_utf8(self.take(len, what)?).map_err(|_| DecodeError::BadUtf8 { what })
    }
    fn strs(&mut self, limit: usize, what: &'static str) -> Result<Vec<&'a str>, DecodeError> {
        let n = self.count(limit, 2, what)?;
        (0..n).map(|_| self.str(what)).collect()
    }
    /// Owned strings, paid for in `budget` before they are copied.
    fn owned_strs(
        &mut self,
        limit: usize,
        what: &'static str,
        budget: &mut Budget,
    ) -> Result<Vec<&'a str>, DecodeError> {
        let strs = self.strs(limit, what)?;
        budget.charge(budget::list(strs.len(), 0))?;
        for s in &strs {
            budget.charge(budget::string(s.len()))?;
        }
        Ok(strs)
    }
    fn patterns(
        &mut self,
        what: &'static str,
        budget: &mut Budget,
    ) -> Result<Vec<Pattern>, DecodeError> {
        let strs = self.strs(MAX_RULE_LIST, what)?;
        budget.charge(budget::list(strs.len(), 0))?;
        for s in &strs {
            budget.charge(budget::pattern(s))?;
        }
        strs.into_iter()
            .map(|s| Pattern::parse(s).map_err(|e| DecodeError::BadPattern(format!("`{s}`: {e}"))))
            .collect()
    }
    /// Reads a list of 64-bit keys that must be strictly ascending. The keys stay where
    /// they are: the set reads them from the table's bytes.
    fn keys(&mut self, limit: usize, what: &'static str) -> Result<KeySet, DecodeError> {
        let n = self.count(limit, 8, what)?;
        let start = self.pos;
        let bytes = self.take(n.saturating_mul(8), what)?;
        // INVARIANT: strictly ascending, so lookups can search and no key repeats.
        if !strictly_ascending(bytes.chunks_exact(8).map(le_u64)) {
            return Err(DecodeError::Unsorted { what });
        }
        Ok(KeySet::in_table(
            Arc::clone(self.table),
            start..start.saturating_add(bytes.len()),
        ))
    }
    /// Reads a section header and returns a reader over exactly its payload.
    fn section(&mut self, expected: u8) -> Result<Reader<'a>, DecodeError> {
        let found = self.u8("section tag")?;
        if found != expected {
            return Err(DecodeError::UnexpectedSection { expected, found });
        }
        let len =
            usize::try_from(self.u32("section length")?).map_err(|_| DecodeError::TooLarge)?;
        let pos = self.pos;
        Ok(Reader {
            buf: self.take(len, "section payload")?,
            pos,
            table: self.table,
        })
    }
    fn finish(&self, section: &'static str) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes { section })
        }
    }
}

fn mode(b: u8) -> Result<Mode, DecodeError> {
    match b {
        0 => Ok(Mode::Enforce),
        1 => Ok(Mode::Audit),
        _ => Err(DecodeError::BadValue { what: "mode" }),
    }
}
fn action(b: u8, what: &'static str) -> Result<Action, DecodeError> {
    match b {
        0 => Ok(Action::Allow),
        1 => Ok(Action::Deny),
        _ => Err(DecodeError::BadValue { what }),
    }
}
fn audit_log(b: u8) -> Result<AuditLog, DecodeError> {
    match b {
        0 => Ok(AuditLog::All),
        1 => Ok(AuditLog::Deny),
        2 => Ok(AuditLog::None),
        _ => Err(DecodeError::BadValue { what: "audit log" }),
    }
}
fn tls(b: u8) -> Result<Option<TlsVersion>, DecodeError> {
    match b {
        0 => Ok(None),
        1 => Ok(Some(TlsVersion::V1_0)),
        2 => Ok(Some(TlsVersion::V1_1)),
        3 => Ok(Some(TlsVersion::V1_2)),
        4 => Ok(Some(TlsVersion::V1_3)),
        _ => Err(DecodeError::BadValue {
            what: "TLS version",
        }),
    }
}
fn bits<T: Copy>(mask: u8, known: &[(T, u8)], what: &'static str) -> Result<Vec<T>, DecodeError> {
    let all = known.iter().fold(0u8, |acc, (_, b)| acc | b);
    if mask & !all != 0 {
        return Err(DecodeError::BadValue { what });
    }
    Ok(known
        .iter()
        .filter(|(_, b)| mask & b != 0)
        .map(|(t, _)| *t)
        .collect())
}

/// The header's fields after the checksum.
struct Header {
    digest: [u8; 32],
    issued_at_ms: u64,
    expires_at_ms: Option<u64>,
    signer: Option<[u8; 32]>,
}

/// Checks the header and the signature trailer's shape, and returns the header and a
/// reader over the body.
fn header(table: &Arc<Vec<u8>>) -> Result<(Header, Reader<'_>), DecodeError> {
    if table.len() > MAX_TABLE_LEN {
        return Err(DecodeError::TooLarge);
    }
    let (unsigned, trailer) = crate::signature::split(table)?;
    let mut r = Reader {
        buf: unsigned,
        pos: 0,
        table,
    };
    if r.array::<4>("magic")? != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = r.u16("version")?;
    if version != VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let flags = r.u16("flags")?;
    if flags != 0 {
        return Err(DecodeError::UnknownFlags(flags));
    }
    let body_len = r.u32("body length")?;
    let crc = r.u32("checksum")?;
    // The checksum covers the policy digest, the times and the body.
    let covered = r.buf;
    let digest = r.array::<32>("policy digest")?;
    let issued_at_ms = r.u64("issue time")?;
    let expires_at_ms = Some(r.u64("expiry")?).filter(|&e| e != 0);
    if u64::from(body_len) != r.buf.len() as u64 {
        return Err(DecodeError::LengthMismatch {
            declared: u64::from(body_len),
            actual: r.buf.len() as u64,
        });
    }
    let actual = crc32(covered);
    if actual != crc {
        return Err(DecodeError::Checksum {
            expected: crc,
            actual,
        });
    }
    Ok((
        Header {
            digest,
            issued_at_ms,
            expires_at_ms,
            signer: trailer.map(|t| t.public_key),
        },
        r,
    ))
}

/// Decodes a table from untrusted bytes (copying them; see [`decode_owned`]).
pub fn decode(bytes: &[u8]) -> Result<Table, DecodeError> {
    decode_owned(bytes.to_vec())
}

/// Decodes a table from untrusted bytes it takes over: the table keeps them and reads
/// its revocation keys in place, so a million revoked serials cost their 8 MB once.
pub fn decode_owned(bytes: Vec<u8>) -> Result<Table, DecodeError> {
    decode_counted(bytes).map(|(table, _)| table)
}

/// [`decode_owned`], with what the decoded form was charged in its memory budget.
pub(crate) fn decode_counted(bytes: Vec<u8>) -> Result<(Table, usize), DecodeError> {
    let bytes = Arc::new(bytes);
    let (head, mut r) = header(&bytes)?;

    let mut s = r.section(SECTION_META)?;
    let mode = mode(s.u8("mode")?)?;
    let default_action = action(s.u8("default action")?, "default action")?;
    let audit_log = audit_log(s.u8("audit log")?)?;
    // What the decoded form will cost, paid before each allocation (FORMAT.md,
    // "Limits and failure").
    let mut budget = Budget::default();
    let policy_names = s
        .owned_strs(MAX_POLICIES, "policy names", &mut budget)?
        .into_iter()
        .map(str::to_owned)
        .collect();
    s.finish("meta section")?;

    let mut s = r.section(SECTION_CONSTRAINTS)?;
    let min_tls = tls(s.u8("minimum TLS version")?)?;
    let max_lifetime_secs = if s.flag("max lifetime flag")? {
        Some(s.u64("max lifetime")?)
    } else {
        None
    };
    let keys = if s.flag("key policy flag")? {
        let rsa_min_bits = if s.flag("RSA flag")? {
            Some(s.u32("RSA minimum bits")?)
        } else {
            None
        };
        let ecdsa_curves = bits(s.u8("curves")?, &CURVE_BITS, "curves")?;
        let ed25519 = s.flag("ed25519 flag")?;
        Some(KeyPolicy {
            rsa_min_bits,
            ecdsa_curves,
            ed25519,
        })
    } else {
        None
    };
    let forbid_sig_hashes = bits(s.u8("signature hashes")?, &HASH_BITS, "signature hashes")?;
    let trust_domains = s
        .owned_strs(MAX_TRUST_DOMAINS, "trust domains", &mut budget)?
        .into_iter()
        .map(|td| {
            crate::spiffe::validate_trust_domain(td)
                .map(|()| td.to_owned())
                .map_err(|e| DecodeError::BadPattern(format!("trust domain `{td}`: {e}")))
        })
        .collect::<Result<_, _>>()?;
    s.finish("constraints section")?;
    let constraints = Constraints {
        min_tls,
        trust_domains,
        max_lifetime_secs,
        keys,
        forbid_sig_hashes,
    };

    let mut s = r.section(SECTION_RULES)?;
    // Smallest rule: name length, policy, action and five empty lists.
    let n = s.count(MAX_RULES, 2 + 2 + 1 + 5 * 4, "rules")?;
    budget.charge(budget::list(n, budget::RULE))?;
    let mut rules = Vec::with_capacity(n);
    for _ in 0..n {
        let name = s.str("rule name")?;
        budget.charge(budget::string(name.len()))?;
        let name = name.to_owned();
        let policy = s.u16("rule policy")?;
        let action = action(s.u8("rule action")?, "rule action")?;
        let principals = s.patterns("principals", &mut budget)?;
        let not_principals = s.patterns("notPrincipals", &mut budget)?;
        let np = s.count(MAX_RULE_LIST, 4, "ports")?;
        budget.charge(budget::list(np, budget::PORT_RANGE))?;
        let ports = (0..np)
            .map(|_| {
                let start = s.u16("port")?;
                let end = s.u16("port")?;
                if end < start {
                    return Err(DecodeError::BadValue { what: "port range" });
                }
                Ok(PortRange { start, end })
            })
            .collect::<Result<_, _>>()?;
        let sni = s
            .owned_strs(MAX_RULE_LIST, "sni", &mut budget)?
            .into_iter()
            .map(|p| {
                crate::sni::is_valid_pattern(p)
                    .then(|| p.to_owned())
                    .ok_or(DecodeError::BadValue { what: "sni" })
            })
            .collect::<Result<_, _>>()?;
        let nc = s.count(MAX_RULE_LIST, 6, "sourceCidrs")?;
        budget.charge(budget::list(nc, budget::CIDR))?;
        let source_cidrs = (0..nc)
            .map(|_| {
                let addr = match s.u8("address family")? {
                    4 => IpAddr::V4(Ipv4Addr::from(s.array::<4>("IPv4 address")?)),
                    6 => IpAddr::V6(Ipv6Addr::from(s.array::<16>("IPv6 address")?)),
                    _ => {
                        return Err(DecodeError::BadValue {
                            what: "address family",
                        })
                    }
                };
                let prefix = s.u8("prefix length")?;
                // Prefix within the family's length and no host bits set.
                Cidr::new(addr, prefix).ok_or(DecodeError::BadValue {
                    what: "source CIDR",
                })
            })
            .collect::<Result<_, _>>()?;
        rules.push(Rule {
            name,
            policy,
            action,
            principals,
            not_principals,
            ports,
            sni,
            source_cidrs,
        });
    }
    s.finish("rules section")?;

    let mut s = r.section(SECTION_REVOCATION)?;
    let on_stale = match s.u8("stale policy")? {
        0 => OnStale::Deny,
        1 => OnStale::Keep,
        _ => {
            return Err(DecodeError::BadValue {
                what: "stale policy",
            })
        }
    };
    let [l1, l2, l3, l4, l5, l6] = REVOCATION_LISTS;
    let sets = [
        s.keys(MAX_REVOKED, l1)?,
        s.keys(MAX_REVOKED, l2)?,
        s.keys(MAX_REVOKED, l3)?,
        s.keys(MAX_REVOKED, l4)?,
        s.keys(MAX_REVOKED, l5)?,
        s.keys(MAX_REVOKED, l6)?,
    ];
    s.finish("revocation section")?;
    r.finish("table")?;

    Ok((
        Table {
            policy_names,
            policy_digest: head.digest,
            issued_at_ms: head.issued_at_ms,
            expires_at_ms: head.expires_at_ms,
            signer: head.signer,
            mode,
            default_action,
            audit_log,
            constraints,
            revocation: Revocation::from_sets(sets, on_stale),
            rules,
        },
        budget.used(),
    ))
}
