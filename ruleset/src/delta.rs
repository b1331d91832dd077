//! Delta updates between two tables (the feed's `226 IM Used` answers, RFC 3229): what
//! changed from a base table X to a table Y, small when only revocation keys changed,
//! and [`apply`], which rebuilds Y from X's bytes *byte for byte*, so Y's SHA-256 and its
//! signature trailer verify on the result exactly as on a fetched table. A delta is not
//! trusted: it names the SHA-256 of its base and of its result, and [`apply`] checks
//! both; the caller then decodes and verifies the result as any table. The bytes are
//! documented in `ruleset/FORMAT.md` ("Delta").
//!
//! Works on the layout of the bytes only (header, four sections, trailer): a delta never
//! needs the decoder, and its result is decoded afterwards like any fetched table.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::format::{HEADER_LEN, MAGIC, MAX_TABLE_LEN, SECTION_REVOCATION, VERSION};
use crate::signature::TRAILER_LEN;

/// First four bytes of every delta.
pub const DELTA_MAGIC: [u8; 4] = *b"CGD\x01";
/// The only delta version this build reads and writes.
pub const DELTA_VERSION: u16 = 1;
/// The `A-IM` / `IM` instance-manipulation name of this format on the feed.
pub const IM_NAME: &str = "certgate-delta";

/// A section carried unchanged from the base.
const SAME: u8 = 0;
/// A section carried whole.
const WHOLE: u8 = 1;
/// The revocation section as keys removed and added per list.
const PATCHED: u8 = 2;
/// Key lists in the revocation section.
const LISTS: usize = 6;
/// Sections of a table body.
const SECTIONS: u8 = 4;

/// Why a delta cannot be applied. Any of these means "no table": fetch the full one.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeltaError {
    /// The delta ends before `what` could be read.
    Truncated {
        /// The field being read.
        what: &'static str,
    },
    /// Not a delta (bad magic).
    BadMagic,
    /// A delta version this build does not read.
    UnsupportedVersion(u16),
    /// A field holds a value outside its domain.
    BadValue {
        /// The field.
        what: &'static str,
    },
    /// The delta was made for another base table.
    WrongBase,
    /// The base's bytes do not have a table's layout.
    BadBase,
    /// The result would be larger than `limit` bytes.
    TooLarge {
        /// The limit applied.
        limit: usize,
    },
    /// A key list of the delta is not strictly ascending, removes a key the base does not
    /// hold or adds one it already holds.
    BadKeys {
        /// The list.
        what: &'static str,
    },
    /// Bytes after the delta's last field.
    TrailingBytes,
    /// The result's length or SHA-256 is not the one the delta announces.
    Mismatch,
}

impl fmt::Display for DeltaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeltaError::Truncated { what } => {
                write!(f, "truncated delta: input ends inside {what}")
            }
            DeltaError::BadMagic => f.write_str("not a certgate delta (bad magic)"),
            DeltaError::UnsupportedVersion(v) => write!(
                f,
                "unsupported delta version {v} (this build reads version {DELTA_VERSION})"
            ),
            DeltaError::BadValue { what } => write!(f, "invalid value for {what} in the delta"),
            DeltaError::WrongBase => f.write_str("the delta is for another base table"),
            DeltaError::BadBase => f.write_str("the base is not a table"),
            DeltaError::TooLarge { limit } => {
                write!(f, "the delta's result exceeds the limit of {limit} bytes")
            }
            DeltaError::BadKeys { what } => write!(
                f,
                "the delta's {what} are not strictly ascending or do not fit the base"
            ),
            DeltaError::TrailingBytes => f.write_str("unexpected bytes at the end of the delta"),
            DeltaError::Mismatch => {
                f.write_str("the delta's result is not the table it announces (length or SHA-256)")
            }
        }
    }
}

impl std::error::Error for DeltaError {}

impl DeltaError {
    /// What went wrong, without the details [`fmt::Display`] adds (for hosts that keep
    /// their size down, such as the filter).
    pub fn reason(&self) -> &'static str {
        match self {
            DeltaError::Truncated { .. } => "truncated delta",
            DeltaError::BadMagic => "not a certgate delta",
            DeltaError::UnsupportedVersion(_) => "unsupported delta version",
            DeltaError::BadValue { .. } => "invalid value in the delta",
            DeltaError::WrongBase => "the delta is for another base table",
            DeltaError::BadBase => "the base is not a table",
            DeltaError::TooLarge { .. } => "the delta's result exceeds the table size limit",
            DeltaError::BadKeys { .. } => "the delta's keys do not fit the base",
            DeltaError::TrailingBytes => "unexpected bytes at the end of the delta",
            DeltaError::Mismatch => "the delta's result is not the table it announces",
        }
    }
}

/// The SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The feed's strong ETag of a table: its SHA-256 in lowercase hex, quoted.
pub fn etag(bytes: &[u8]) -> String {
    digest_etag(&sha256(bytes))
}

/// The ETag of a table whose SHA-256 is `digest`.
pub fn digest_etag(digest: &[u8; 32]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(66);
    s.push('"');
    for b in digest {
        let _ = write!(s, "{b:02x}");
    }
    s.push('"');
    s
}

/// The SHA-256 of the table a delta announces, if `delta` starts like one ([`apply`]
/// checks the result against it).
pub fn result_of(delta: &[u8]) -> Option<[u8; 32]> {
    let mut r = Reader(delta);
    r.header().ok().map(|h| h.result)
}

/// The layout of a table's bytes: header, the four section payloads, the trailer (empty
/// or [`TRAILER_LEN`] bytes; not checked here, the caller verifies the result).
struct Layout<'a> {
    header: &'a [u8],
    sections: [&'a [u8]; SECTIONS as usize],
    trailer: &'a [u8],
}

fn layout(bytes: &[u8]) -> Result<Layout<'_>, DeltaError> {
    let mut r = Reader(bytes);
    let header = r
        .take(HEADER_LEN, "header")
        .map_err(|_| DeltaError::BadBase)?;
    if header.get(0..4) != Some(&MAGIC[..]) || header.get(4..6) != Some(&VERSION.to_le_bytes()[..])
    {
        return Err(DeltaError::BadBase);
    }
    let mut sections: [&[u8]; SECTIONS as usize] = [&[]; SECTIONS as usize];
    for (tag, slot) in (1..=SECTIONS).zip(sections.iter_mut()) {
        if r.u8("section tag").map_err(|_| DeltaError::BadBase)? != tag {
            return Err(DeltaError::BadBase);
        }
        let len = r.len32("section length").map_err(|_| DeltaError::BadBase)?;
        *slot = r.take(len, "section").map_err(|_| DeltaError::BadBase)?;
    }
    let trailer = r.0;
    if !trailer.is_empty() && trailer.len() != TRAILER_LEN {
        return Err(DeltaError::BadBase);
    }
    Ok(Layout {
        header,
        sections,
        trailer,
    })
}

/// The revocation section of a table: its on-stale byte and its six key lists (the
/// keys' bytes, 8 per key).
fn revocation(payload: &[u8]) -> Result<(u8, [&[u8]; LISTS]), DeltaError> {
    let mut r = Reader(payload);
    let on_stale = r.u8("on stale").map_err(|_| DeltaError::BadBase)?;
    let mut lists: [&[u8]; LISTS] = [&[]; LISTS];
    for list in &mut lists {
        *list = r.keys("revocation keys").map_err(|_| DeltaError::BadBase)?;
    }
    if !r.0.is_empty() {
        return Err(DeltaError::BadBase);
    }
    Ok((on_stale, lists))
}

/// The delta that turns the table `base` into the table `target` (both complete, as
/// served: header, body and optional trailer). Fails only if either is not laid out as a
/// table. The revocation section is carried as keys removed and added when that is
/// smaller than carrying it whole.
pub fn diff(base: &[u8], target: &[u8]) -> Result<Vec<u8>, DeltaError> {
    let x = layout(base)?;
    let y = layout(target)?;
    let result_len = u32::try_from(target.len()).map_err(|_| DeltaError::TooLarge {
        limit: MAX_TABLE_LEN,
    })?;
    let mut out = Vec::new();
    out.extend_from_slice(&DELTA_MAGIC);
    out.extend_from_slice(&DELTA_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&sha256(base));
    out.extend_from_slice(&sha256(target));
    out.extend_from_slice(&result_len.to_le_bytes());
    out.extend_from_slice(y.header);
    for ((tag, old), new) in (1..=SECTIONS).zip(x.sections).zip(y.sections) {
        out.push(tag);
        if old == new {
            out.push(SAME);
            continue;
        }
        let patch = if tag == SECTION_REVOCATION {
            Some(patch(old, new)?)
        } else {
            None
        };
        match patch {
            Some(p) if p.len() < new.len().saturating_add(4) => {
                out.push(PATCHED);
                out.extend_from_slice(&p);
            }
            _ => {
                out.push(WHOLE);
                let len = u32::try_from(new.len()).map_err(|_| DeltaError::BadBase)?;
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(new);
            }
        }
    }
    if y.trailer.is_empty() {
        out.push(0);
    } else {
        out.push(1);
        out.extend_from_slice(y.trailer);
    }
    Ok(out)
}

/// The revocation section `new` as keys removed from and added to `old`, list by list.
fn patch(old: &[u8], new: &[u8]) -> Result<Vec<u8>, DeltaError> {
    let (_, old_lists) = revocation(old)?;
    let (on_stale, new_lists) = revocation(new)?;
    let mut out = vec![on_stale];
    for (a, b) in old_lists.iter().zip(new_lists.iter()) {
        let (a, b) = (keys(a), keys(b));
        let (mut removed, mut added) = (Vec::new(), Vec::new());
        let (mut i, mut j) = (a.clone().peekable(), b.clone().peekable());
        loop {
            match (i.peek().copied(), j.peek().copied()) {
                (None, None) => break,
                (Some(x), None) => {
                    removed.push(x);
                    i.next();
                }
                (None, Some(y)) => {
                    added.push(y);
                    j.next();
                }
                (Some(x), Some(y)) if x == y => {
                    i.next();
                    j.next();
                }
                (Some(x), Some(y)) if x < y => {
                    removed.push(x);
                    i.next();
                }
                (Some(_), Some(y)) => {
                    added.push(y);
                    j.next();
                }
            }
        }
        for set in [removed, added] {
            let n = u32::try_from(set.len()).map_err(|_| DeltaError::BadBase)?;
            out.extend_from_slice(&n.to_le_bytes());
            for k in set {
                out.extend_from_slice(&k.to_le_bytes());
            }
        }
    }
    Ok(out)
}

/// The keys of a list's bytes (8 bytes each, little-endian).
fn keys(bytes: &[u8]) -> impl Iterator<Item = u64> + Clone + '_ {
    bytes.chunks_exact(8).map(|c| {
        let mut k = [0u8; 8];
        k.copy_from_slice(c);
        u64::from_le_bytes(k)
    })
}

/// The fixed fields at the start of a delta.
struct Head<'a> {
    base: [u8; 32],
    result: [u8; 32],
    result_len: usize,
    header: &'a [u8],
}

/// Rebuilds the table a delta announces from the bytes of its base. The result is at
/// most `max_len` bytes (and at most the format's 512 MiB) and is checked against the
/// length and SHA-256 the delta announces; memory for it is reserved only after the
/// announced length passed `max_len`. The caller still verifies and decodes the result
/// as a fetched table: a delta proves nothing about the table's signature.
pub fn apply(base: &[u8], delta: &[u8], max_len: usize) -> Result<Vec<u8>, DeltaError> {
    let limit = max_len.min(MAX_TABLE_LEN);
    let mut r = Reader(delta);
    let head = r.header()?;
    if head.base != sha256(base) {
        return Err(DeltaError::WrongBase);
    }
    if head.result_len > limit {
        return Err(DeltaError::TooLarge { limit });
    }
    let x = layout(base)?;
    let mut out = Out {
        bytes: Vec::with_capacity(head.result_len),
        cap: head.result_len,
    };
    out.put(head.header)?;
    for (tag, old) in (1..=SECTIONS).zip(x.sections) {
        if r.u8("section tag")? != tag {
            return Err(DeltaError::BadValue {
                what: "section tag",
            });
        }
        out.put(&[tag])?;
        match r.u8("section kind")? {
            SAME => section(&mut out, old)?,
            WHOLE => {
                let len = r.len32("section length")?;
                section(&mut out, r.take(len, "section")?)?;
            }
            PATCHED if tag == SECTION_REVOCATION => apply_patch(&mut out, old, &mut r)?,
            _ => {
                return Err(DeltaError::BadValue {
                    what: "section kind",
                })
            }
        }
    }
    match r.u8("trailer flag")? {
        0 => {}
        1 => out.put(r.take(TRAILER_LEN, "trailer")?)?,
        _ => {
            return Err(DeltaError::BadValue {
                what: "trailer flag",
            })
        }
    }
    if !r.0.is_empty() {
        return Err(DeltaError::TrailingBytes);
    }
    if out.bytes.len() != head.result_len || sha256(&out.bytes) != head.result {
        return Err(DeltaError::Mismatch);
    }
    Ok(out.bytes)
}

/// Writes a section's length and payload.
fn section(out: &mut Out, payload: &[u8]) -> Result<(), DeltaError> {
    let len = u32::try_from(payload.len()).map_err(|_| DeltaError::Mismatch)?;
    out.put(&len.to_le_bytes())?;
    out.put(payload)
}

/// Writes the revocation section: the base's keys, less those removed, plus those added.
fn apply_patch(out: &mut Out, old: &[u8], r: &mut Reader<'_>) -> Result<(), DeltaError> {
    let (_, old_lists) = revocation(old)?;
    let on_stale = r.u8("on stale")?;
    let mut changes: [(&[u8], &[u8]); LISTS] = [(&[], &[]); LISTS];
    let mut len: usize = 1;
    for (change, base) in changes.iter_mut().zip(old_lists) {
        let removed = r.keys("removed keys")?;
        let added = r.keys("added keys")?;
        *change = (removed, added);
        let n = (base.len() / 8)
            .checked_sub(removed.len() / 8)
            .and_then(|n| n.checked_add(added.len() / 8))
            .ok_or(DeltaError::BadKeys {
                what: "removed keys",
            })?;
        len = n
            .checked_mul(8)
            .and_then(|b| b.checked_add(4))
            .and_then(|b| b.checked_add(len))
            .ok_or(DeltaError::Mismatch)?;
    }
    section_len(out, len)?;
    out.put(&[on_stale])?;
    for ((removed, added), base) in changes.iter().zip(old_lists) {
        let n = (base.len() / 8)
            .saturating_sub(removed.len() / 8)
            .saturating_add(added.len() / 8);
        out.put(
            &u32::try_from(n)
                .map_err(|_| DeltaError::Mismatch)?
                .to_le_bytes(),
        )?;
        merge(out, base, removed, added)?;
    }
    Ok(())
}

fn section_len(out: &mut Out, len: usize) -> Result<(), DeltaError> {
    let len = u32::try_from(len).map_err(|_| DeltaError::Mismatch)?;
    out.put(&len.to_le_bytes())
}

/// Writes `base` less `removed` plus `added`, ascending. Every removed key must be in the
/// base, no added key may be, and both must be strictly ascending.
fn merge(out: &mut Out, base: &[u8], removed: &[u8], added: &[u8]) -> Result<(), DeltaError> {
    let bad = |what| DeltaError::BadKeys { what };
    ascending(removed)
        .then_some(())
        .ok_or(bad("removed keys"))?;
    ascending(added).then_some(()).ok_or(bad("added keys"))?;
    let mut removed = keys(removed).peekable();
    let mut added = keys(added).peekable();
    for key in keys(base) {
        while let Some(a) = added.next_if(|a| *a < key) {
            out.put(&a.to_le_bytes())?;
        }
        if added.peek() == Some(&key) {
            return Err(bad("added keys"));
        }
        if removed.peek() == Some(&key) {
            removed.next();
            continue;
        }
        if removed.peek().is_some_and(|r| *r < key) {
            return Err(bad("removed keys"));
        }
        out.put(&key.to_le_bytes())?;
    }
    if removed.next().is_some() {
        return Err(bad("removed keys"));
    }
    for a in added {
        out.put(&a.to_le_bytes())?;
    }
    Ok(())
}

fn ascending(list: &[u8]) -> bool {
    keys(list).zip(keys(list).skip(1)).all(|(a, b)| a < b)
}

/// The result being built, refusing to grow past the length the delta announced.
struct Out {
    bytes: Vec<u8>,
    cap: usize,
}

impl Out {
    fn put(&mut self, b: &[u8]) -> Result<(), DeltaError> {
        if b.len() > self.cap.saturating_sub(self.bytes.len()) {
            return Err(DeltaError::Mismatch);
        }
        self.bytes.extend_from_slice(b);
        Ok(())
    }
}

/// Bounded reads over the delta (or a base's layout).
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DeltaError> {
        if n > self.0.len() {
            return Err(DeltaError::Truncated { what });
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DeltaError> {
        let (first, rest) = self.0.split_first().ok_or(DeltaError::Truncated { what })?;
        self.0 = rest;
        Ok(*first)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DeltaError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn len32(&mut self, what: &'static str) -> Result<usize, DeltaError> {
        let n = u32::from_le_bytes(self.array(what)?);
        usize::try_from(n).map_err(|_| DeltaError::Truncated { what })
    }

    /// A `u32` count then that many 8-byte keys; the count is checked against the bytes
    /// left before anything is read.
    fn keys(&mut self, what: &'static str) -> Result<&'a [u8], DeltaError> {
        let n = self.len32(what)?;
        let len = n.checked_mul(8).ok_or(DeltaError::Truncated { what })?;
        self.take(len, what)
    }

    fn header(&mut self) -> Result<Head<'a>, DeltaError> {
        if self.take(4, "magic")? != DELTA_MAGIC {
            return Err(DeltaError::BadMagic);
        }
        let version = u16::from_le_bytes(self.array("version")?);
        if version != DELTA_VERSION {
            return Err(DeltaError::UnsupportedVersion(version));
        }
        if self.array::<2>("flags")? != [0, 0] {
            return Err(DeltaError::BadValue { what: "flags" });
        }
        Ok(Head {
            base: self.array("base digest")?,
            result: self.array("result digest")?,
            result_len: self.len32("result length")?,
            header: self.take(HEADER_LEN, "header")?,
        })
    }
}
