//! Delta updates (RFC 3229, instance manipulation `certgate-delta`): the tables served
//! before the current one, and the delta from each of them to it, computed once, on the
//! first request that needs it. A poller that holds one of them and asks for a delta
//! gets `226 IM Used` and the delta instead of the whole table (see `http.rs`); the
//! format is in `ruleset/FORMAT.md` ("Delta").
//!
//! Below `served` (each served table carries its [`Deltas`]); it knows nothing of
//! requests or counters.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use ruleset::delta::IM_NAME;

/// Default of `--delta-history`: how many earlier tables a delta can start from.
pub const DEFAULT_DELTA_HISTORY: usize = 8;
/// Largest `--delta-history` accepted (each earlier table is held in memory).
pub const MAX_DELTA_HISTORY: usize = 64;

/// Whether a delta of `delta` bytes is worth sending instead of a table of `table`
/// bytes: at most half of it. A poller applying a delta holds the table in force, the
/// delta and the rebuilt table at once (a full fetch: the table in force and the fetched
/// one), so a delta nearly as large as the table would cost it almost a table's worth of
/// memory more than the table itself (measured under Envoy, e2e
/// `feed_delta_memory_under_envoy`).
pub fn worth_sending(delta: usize, table: usize) -> bool {
    delta <= table / 2
}

/// An earlier table and the delta from it to the table that carries this history.
#[derive(Debug)]
struct Base {
    etag: String,
    bytes: Bytes,
    /// `None` inside: no delta is worth sending (more than half the table, or the
    /// bytes are not laid out as a table).
    delta: OnceLock<Option<Bytes>>,
}

/// The earlier tables a served table can be reached from by a delta, newest first.
/// Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct Deltas {
    bases: Arc<Vec<Base>>,
}

impl Deltas {
    /// The history of a table published after `previous` (its ETag, bytes and own
    /// history): `previous` and the newest of its bases, at most `keep` in all.
    pub fn after(previous: Option<(&str, &Bytes, &Deltas)>, keep: usize) -> Deltas {
        let Some((etag, bytes, earlier)) = previous else {
            return Deltas::default();
        };
        let bases = std::iter::once((etag.to_string(), bytes.clone()))
            .chain(
                earlier
                    .bases
                    .iter()
                    .map(|b| (b.etag.clone(), b.bytes.clone())),
            )
            .take(keep)
            .map(|(etag, bytes)| Base {
                etag,
                bytes,
                delta: OnceLock::new(),
            })
            .collect();
        Deltas {
            bases: Arc::new(bases),
        }
    }

    /// How many earlier tables are kept.
    pub fn len(&self) -> usize {
        self.bases.len()
    }

    /// Whether no earlier table is kept.
    pub fn is_empty(&self) -> bool {
        self.bases.is_empty()
    }

    /// The first ETag of `candidates` (the request's `If-None-Match` values) that names a
    /// kept table, with the delta from it to `target`, when that delta is at most half
    /// of `target` ([`worth_sending`]). The delta is computed on the first call for its base and kept.
    pub fn for_request<'a>(
        &self,
        candidates: impl IntoIterator<Item = &'a str>,
        target: &Bytes,
    ) -> Option<(String, Bytes)> {
        for candidate in candidates {
            let candidate = candidate.strip_prefix("W/").unwrap_or(candidate);
            let Some(base) = self.bases.iter().find(|b| b.etag == candidate) else {
                continue;
            };
            let delta = base.delta.get_or_init(|| {
                ruleset::delta::diff(&base.bytes, target)
                    .ok()
                    .filter(|d| worth_sending(d.len(), target.len()))
                    .map(Bytes::from)
            });
            return delta.clone().map(|d| (base.etag.clone(), d));
        }
        None
    }
}

/// Whether an `A-IM` header value asks for `certgate-delta` (a comma-separated list of
/// instance manipulations, each possibly with parameters such as `;q=0.5`; `q=0` refuses).
pub fn accepts_delta(a_im: &str) -> bool {
    a_im.split(',').any(|item| {
        let mut parts = item.split(';').map(str::trim);
        let name = parts.next().unwrap_or("");
        name.eq_ignore_ascii_case(IM_NAME)
            && !parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_im_lists_are_read_like_accept() {
        assert!(accepts_delta("certgate-delta"));
        assert!(accepts_delta("vcdiff, Certgate-Delta;q=0.5"));
        assert!(!accepts_delta("vcdiff"));
        assert!(!accepts_delta("certgate-delta;q=0"));
        assert!(!accepts_delta("certgate-deltas"));
        assert!(!accepts_delta(""));
    }

    #[test]
    fn a_delta_is_sent_only_when_at_most_half_the_table() {
        assert!(worth_sending(300, 8_000_000));
        assert!(worth_sending(50, 100));
        assert!(!worth_sending(51, 100));
        assert!(!worth_sending(7_999_000, 8_000_000));
    }

    #[test]
    fn the_history_keeps_the_newest_tables_only() {
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        let mut d = Deltas::default();
        let tables = ["\"1\"", "\"2\"", "\"3\"", "\"4\""];
        for etag in tables {
            d = Deltas::after(Some((etag, &b("x"), &d)), 2);
        }
        let kept: Vec<&str> = d.bases.iter().map(|b| b.etag.as_str()).collect();
        assert_eq!(kept, ["\"4\"", "\"3\""]);
        assert_eq!(Deltas::after(Some(("\"1\"", &b("x"), &d)), 0).len(), 0);
    }
}
