//! Choosing the table to serve: the directory scan. Runs on its own thread (blocking file
//! I/O never stalls a connection) and publishes into [`Current`], which requests read.
//!
//! The rules: the `*.cgt` file with the newest issue time wins, ties broken by name; a
//! table is served only if it is strictly newer than the one served before (copying an old
//! table in never rolls the feed back); a file that does not decode is never served. Every
//! file skipped is logged once per change of its content or of the reason, with why.
//! Symbolic links are followed while they stay inside the directory (how Kubernetes
//! ConfigMap and Secret volumes look: `table.cgt -> ..data/table.cgt`, `..data ->
//! ..2026_...`); a link that leaves it is skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::metrics::{Metrics, Refusal};
use crate::served::Served;

/// Produces tables besides the directory's files: `certgate serve --policies` compiles
/// policies when they change. The server knows nothing of how; what it produces competes
/// with the directory's files under the same rules (decoded completely, served only if
/// strictly newer than the table served).
pub trait Source: Send {
    /// What the log calls it (e.g. the policy directory).
    fn name(&self) -> String;
    /// Called at every scan, on the scanner's thread: a new table, `None` when nothing
    /// changed since the last call, or why producing one failed (logged; the table served
    /// stays).
    fn poll(&mut self) -> Option<Result<Vec<u8>, String>>;
    /// The CRL fetches that failed since the last call, by reason (a short snake_case
    /// word), counted in `certgate_feed_crl_fetch_failures_total{reason}`; the source logs
    /// them itself.
    fn crl_fetch_failures(&mut self) -> Vec<&'static str> {
        Vec::new()
    }
}

/// The slot the scanner writes and requests read.
pub type Current = Arc<RwLock<Option<Served>>>;

/// What a file looked like when it was last read, so an unchanged file is not re-read.
/// The resolved target is part of it: a ConfigMap update swaps the `..data` link, and the
/// new target may have the same size and time as the old one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    target: PathBuf,
    modified: SystemTime,
    len: u64,
}

/// Why a file in the directory is not a candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Skip {
    reason: Refusal,
    why: String,
}

/// The scanner's memory between scans.
#[derive(Debug)]
pub struct Scanner {
    dir: PathBuf,
    /// Per candidate file: its stamp and either its issue time or why it is refused.
    files: BTreeMap<PathBuf, (Stamp, Result<u64, Skip>)>,
    /// Per file that is not even a candidate: the reason last logged.
    ignored: BTreeMap<PathBuf, Skip>,
    served_issued_ms: Option<u64>,
    metrics: Arc<Metrics>,
    source: Option<Box<dyn Source>>,
    /// How many earlier tables a delta may start from (`--delta-history`).
    delta_history: usize,
}

impl std::fmt::Debug for dyn Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Source({})", self.name())
    }
}

impl Scanner {
    /// A scanner of `dir` that has seen nothing yet.
    pub fn new(dir: PathBuf, metrics: Arc<Metrics>, source: Option<Box<dyn Source>>) -> Scanner {
        Scanner {
            dir,
            files: BTreeMap::new(),
            ignored: BTreeMap::new(),
            served_issued_ms: None,
            metrics,
            source,
            delta_history: crate::delta::DEFAULT_DELTA_HISTORY,
        }
    }

    /// Keeps `keep` earlier tables for deltas (0: no deltas).
    pub fn with_delta_history(mut self, keep: usize) -> Scanner {
        self.delta_history = keep;
        self
    }

    /// Re-scans the directory and, when a strictly newer valid table is there, publishes it.
    pub fn scan(&mut self, current: &RwLock<Option<Served>>) {
        self.scan_dir(current);
        self.poll_source(current);
    }

    /// Offers what the source produced, if anything.
    fn poll_source(&mut self, current: &RwLock<Option<Served>>) {
        let Some(source) = self.source.as_mut() else {
            return;
        };
        let produced = source.poll();
        for reason in source.crl_fetch_failures() {
            self.metrics.crl_fetch_failed(reason);
        }
        let Some(produced) = produced else {
            return;
        };
        let name = source.name();
        let bytes = match produced {
            Ok(bytes) => bytes,
            Err(why) => {
                eprintln!("skipping the table from {name}: {why}; the table served stays");
                self.metrics.table_refused(Refusal::SourceFailed);
                return;
            }
        };
        let table = match ruleset::decode(&bytes) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("skipping the table from {name}: not a valid table ({e})");
                self.metrics.table_refused(Refusal::Undecodable);
                return;
            }
        };
        if let Some(served) = self.served_issued_ms {
            if table.issued_at_ms <= served {
                eprintln!(
                    "skipping the table from {name}: issued {} ms, not newer than the table served (issued {served} ms)",
                    table.issued_at_ms
                );
                self.metrics.table_refused(Refusal::Older);
                return;
            }
        }
        self.publish(current, &format!("the table from {name}"), bytes, &table);
    }

    fn scan_dir(&mut self, current: &RwLock<Option<Served>>) {
        let root = match std::fs::canonicalize(&self.dir) {
            Ok(root) => root,
            Err(e) => {
                let skip = Skip {
                    reason: Refusal::Unreadable,
                    why: format!("cannot read the directory: {e}"),
                };
                self.note_ignored(self.dir.clone(), skip);
                return;
            }
        };
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) => {
                let skip = Skip {
                    reason: Refusal::Unreadable,
                    why: format!("cannot read the directory: {e}"),
                };
                self.note_ignored(self.dir.clone(), skip);
                return;
            }
        };
        self.ignored.remove(&self.dir);
        let mut present = BTreeSet::new();
        let mut ignored_now = BTreeSet::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                // Hidden: editors' temporary files, and a ConfigMap volume's `..data`
                // links, whose files are reached through the visible links instead.
                continue;
            }
            if !name.ends_with(".cgt") {
                ignored_now.insert(path.clone());
                self.note_ignored(
                    path,
                    Skip {
                        reason: Refusal::NotATable,
                        why: "not named `*.cgt`".into(),
                    },
                );
                continue;
            }
            let stamp = match stamp(&root, &path) {
                Ok(stamp) => stamp,
                Err(skip) => {
                    ignored_now.insert(path.clone());
                    self.note_ignored(path, skip);
                    continue;
                }
            };
            present.insert(path.clone());
            if self.files.get(&path).is_some_and(|(s, _)| *s == stamp) {
                continue;
            }
            let verdict = match std::fs::read(&stamp.target) {
                // Not remembered with its stamp: a read can fail for a while (out of file
                // descriptors) and succeed on a later scan with the file unchanged.
                Err(e) => {
                    ignored_now.insert(path.clone());
                    present.remove(&path);
                    self.note_ignored(
                        path,
                        Skip {
                            reason: Refusal::Unreadable,
                            why: format!("cannot read it: {e}"),
                        },
                    );
                    continue;
                }
                Ok(bytes) => ruleset::decode(&bytes)
                    .map(|t| t.issued_at_ms)
                    .map_err(|e| Skip {
                        reason: Refusal::Undecodable,
                        why: format!("not a valid table ({e})"),
                    }),
            };
            match (&verdict, self.served_issued_ms) {
                (Err(skip), _) => self.refuse(&path, skip),
                (Ok(i), Some(served)) if *i < served => self.refuse(
                    &path,
                    &Skip {
                        reason: Refusal::Older,
                        why: format!(
                            "issued {i} ms, older than the table served (issued {served} ms)"
                        ),
                    },
                ),
                _ => {}
            }
            self.files.insert(path, (stamp, verdict));
        }
        self.files.retain(|p, _| present.contains(p));
        self.ignored
            .retain(|p, _| ignored_now.contains(p) || p == &self.dir);
        self.publish_newest(current);
    }

    fn publish_newest(&mut self, current: &RwLock<Option<Served>>) {
        // Newest by issue time; ties by name, so the choice does not depend on directory order.
        let Some((path, issued)) = self
            .files
            .iter()
            .filter_map(|(p, (_, v))| v.as_ref().ok().map(|i| (p.clone(), *i)))
            .max_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)))
        else {
            return;
        };
        if self.served_issued_ms.is_some_and(|s| issued <= s) {
            return;
        }
        let Some(target) = self.files.get(&path).map(|(s, _)| s.target.clone()) else {
            return;
        };
        let name = path.display().to_string();
        // Read again: the bytes served are the ones decoded now, not an earlier version.
        let bytes = match std::fs::read(&target) {
            Ok(b) => b,
            Err(e) => {
                self.files.remove(&path);
                self.note_ignored(
                    path,
                    Skip {
                        reason: Refusal::Unreadable,
                        why: format!("cannot read it: {e}"),
                    },
                );
                return;
            }
        };
        let table = match ruleset::decode(&bytes) {
            Ok(t) if t.issued_at_ms == issued => t,
            Ok(_) | Err(_) => {
                // Changed between the scan and now: the next scan sees the new version.
                self.files.remove(&path);
                return;
            }
        };
        if let Some(old) = self.served_issued_ms {
            let stale: Vec<(PathBuf, u64)> = self
                .files
                .iter()
                .filter_map(|(p, (_, v))| v.as_ref().ok().map(|i| (p.clone(), *i)))
                .filter(|(p, i)| *i <= old && p != &path)
                .collect();
            for (p, i) in stale {
                self.refuse(
                    &p,
                    &Skip {
                        reason: Refusal::Older,
                        why: format!("issued {i} ms, not newer than the table served before"),
                    },
                );
            }
        }
        self.publish(current, &format!("`{name}`"), bytes, &table);
    }

    /// Serves `bytes` (decoded as `table`) from now on.
    fn publish(
        &mut self,
        current: &RwLock<Option<Served>>,
        name: &str,
        bytes: Vec<u8>,
        table: &ruleset::Table,
    ) {
        let etag = format!("\"{}\"", hex_lower(Sha256::digest(&bytes).as_slice()));
        eprintln!(
            "serving {name}: {} bytes, issued {} ms, {}, {} rules, {} revoked serials, {}, etag {etag}",
            bytes.len(),
            table.issued_at_ms,
            table
                .expires_at_ms
                .map_or("no expiry".to_string(), |e| format!("expires {e} ms")),
            table.rules.len(),
            table.revocation.serial_count(),
            table
                .signer
                .as_ref()
                .map_or("unsigned".to_string(), |k| format!(
                    "signed by {}",
                    ruleset::signature::key_id(k)
                )),
        );
        let deltas = match current.read() {
            Ok(slot) => crate::delta::Deltas::after(
                slot.as_ref()
                    .map(|s| (s.etag.as_str(), &s.bytes, &s.deltas)),
                self.delta_history,
            ),
            Err(_) => crate::delta::Deltas::default(),
        };
        let served = Served {
            bytes: Bytes::from(bytes),
            etag,
            issued_at_ms: table.issued_at_ms,
            expires_at_ms: table.expires_at_ms,
            deltas,
        };
        self.metrics.table_published(&served);
        if let Ok(mut slot) = current.write() {
            *slot = Some(served);
            self.served_issued_ms = Some(table.issued_at_ms);
        }
    }

    /// Logs and counts a candidate table refused.
    fn refuse(&self, path: &Path, skip: &Skip) {
        eprintln!("skipping `{}`: {}", path.display(), skip.why);
        self.metrics.table_refused(skip.reason);
    }

    /// Logs and counts a file that is not a candidate, once per reason.
    fn note_ignored(&mut self, path: PathBuf, skip: Skip) {
        if self.ignored.get(&path) == Some(&skip) {
            return;
        }
        self.refuse(&path, &skip);
        self.ignored.insert(path, skip);
    }
}

/// Resolves `path` (following links) and checks that it stays inside `root` and is a file.
fn stamp(root: &Path, path: &Path) -> Result<Stamp, Skip> {
    let target = std::fs::canonicalize(path).map_err(|e| Skip {
        reason: Refusal::Unreadable,
        why: format!("cannot resolve it: {e}"),
    })?;
    if !target.starts_with(root) {
        return Err(Skip {
            reason: Refusal::OutsideDir,
            why: format!(
                "a link to `{}`, outside the served directory",
                target.display()
            ),
        });
    }
    let meta = std::fs::metadata(&target).map_err(|e| Skip {
        reason: Refusal::Unreadable,
        why: format!("cannot read its metadata: {e}"),
    })?;
    if !meta.is_file() {
        return Err(Skip {
            reason: Refusal::NotATable,
            why: "not a regular file".into(),
        });
    }
    let modified = meta.modified().map_err(|e| Skip {
        reason: Refusal::Unreadable,
        why: format!("no modification time: {e}"),
    })?;
    Ok(Stamp {
        target,
        modified,
        len: meta.len(),
    })
}

fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len().saturating_mul(2));
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_and_complete() {
        assert_eq!(hex_lower(&[0x00, 0xab, 0x7f]), "00ab7f");
    }
}
