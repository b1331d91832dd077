//! Fleet convergence: which table each poller holds, so an operator (and `certgate drill`)
//! can tell how many proxies enforce the newest table and since when.
//!
//! A poller is named by the `X-Certgate-Poller` header the filter sends
//! (`<plugin>/<worker>`), or else by its client address and port; a request that sends
//! neither that header nor `If-None-Match` is a one-off fetch, not tracked. What it holds is the
//! `If-None-Match` of its poll: a poller that names the table served holds the newest
//! table. Entries expire [`POLLER_TTL`] after their last poll (longer than the longest
//! long-poll, so a held poller never looks gone), and the map holds at most
//! [`MAX_POLLERS`]: beyond, new pollers are counted as untracked, never stored, so a
//! client inventing names cannot grow the server's memory.
//!
//! `GET /status` answers JSON (see docs/revocation.md); `/metrics` adds the gauges of
//! [`Pollers::render_metrics`].

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderMap, HeaderValue, CACHE_CONTROL, CONTENT_TYPE, IF_NONE_MATCH};
use hyper::{Response, StatusCode};

use crate::served::Served;

/// The request header naming a poller.
pub const POLLER_HEADER: &str = "x-certgate-poller";
/// Longest poller name kept; a longer (or non-printable) header falls back to the address.
pub const MAX_POLLER_ID: usize = 128;
/// Longest ETag kept per poller (ours are 66 bytes); longer ones are cut.
pub const MAX_ETAG: usize = 80;
/// A poller not heard from for this long is forgotten: three times the longest wait
/// ([`crate::wait::MAX_WAIT`]), so a held poll and a failed one or two do not drop it.
pub const POLLER_TTL: Duration = Duration::from_secs(180);
/// Most pollers tracked at once (a fleet of 50,000 pods with two workers each).
pub const MAX_POLLERS: usize = 100_000;
/// Most pollers `/status` lists one by one (pollers behind first); the counts cover all.
pub const MAX_LISTED: usize = 10_000;

#[derive(Debug, Clone)]
struct Entry {
    /// The table it holds (its `If-None-Match`), `None` when it named none.
    etag: Option<String>,
    /// Since when it holds that table, Unix ms (first poll naming it).
    since_ms: u64,
    last_ms: u64,
}

#[derive(Debug, Clone)]
struct Newest {
    etag: String,
    issued_at_ms: u64,
    /// When the server started serving it, Unix ms.
    since_ms: u64,
}

#[derive(Debug, Default)]
struct Inner {
    pollers: HashMap<String, Entry>,
    newest: Option<Newest>,
    untracked: u64,
    /// When a full map was last swept for expired entries: at most once a second, so a
    /// flood of new names does not cost a sweep of the whole map each.
    swept_full_ms: Option<u64>,
}

/// The pollers seen recently and the newest table, shared by every connection.
#[derive(Debug, Default)]
pub struct Pollers(Mutex<Inner>);

/// Whether a request of the table is a poller's: it names itself or the table it holds.
/// A one-off fetch (`curl` of the table) is neither, and is not tracked: it would count
/// as a poller behind for [`POLLER_TTL`] and hold a drill's convergence up.
pub fn is_poller(headers: &HeaderMap) -> bool {
    headers.contains_key(POLLER_HEADER) || headers.contains_key(IF_NONE_MATCH)
}

/// The poller's name: its header, or its address.
pub fn poller_id(headers: &HeaderMap, peer: SocketAddr) -> String {
    headers
        .get(POLLER_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|id| {
            !id.is_empty() && id.len() <= MAX_POLLER_ID && id.bytes().all(|b| b.is_ascii_graphic())
        })
        .map_or_else(|| peer.to_string(), str::to_owned)
}

/// The table a poll says it holds: the served ETag when its `If-None-Match` names it
/// (weak comparison, like the `304` decision), else the first ETag it names.
pub fn held_etag(headers: &HeaderMap, served: Option<&Served>) -> Option<String> {
    let candidates: Vec<&str> = headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|c| {
            let c = c.trim();
            c.strip_prefix("W/").unwrap_or(c)
        })
        .filter(|c| !c.is_empty() && *c != "*")
        .collect();
    if let Some(served) = served {
        if candidates.iter().any(|c| *c == served.etag) {
            return Some(served.etag.clone());
        }
    }
    candidates.first().map(|c| {
        let mut end = c.len().min(MAX_ETAG);
        while !c.is_char_boundary(end) {
            end = end.saturating_sub(1);
        }
        c.get(..end).unwrap_or_default().to_owned()
    })
}

fn ttl_ms() -> u64 {
    u64::try_from(POLLER_TTL.as_millis()).unwrap_or(u64::MAX)
}

impl Pollers {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means a panic elsewhere mid-update; the counts stay usable.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The server started serving `served` at `now_ms`.
    pub fn table_served(&self, served: &Served, now_ms: u64) {
        let mut inner = self.lock();
        if inner.newest.as_ref().is_some_and(|n| n.etag == served.etag) {
            return;
        }
        inner.newest = Some(Newest {
            etag: served.etag.clone(),
            issued_at_ms: served.issued_at_ms,
            since_ms: now_ms,
        });
    }

    /// A poll from `id` holding `etag` arrived at `now_ms`.
    pub fn polled(&self, id: String, etag: Option<String>, now_ms: u64) {
        let mut inner = self.lock();
        if let Some(entry) = inner.pollers.get_mut(&id) {
            if entry.etag != etag {
                entry.etag = etag;
                entry.since_ms = now_ms;
            }
            entry.last_ms = now_ms;
            return;
        }
        if inner.pollers.len() >= MAX_POLLERS
            && inner
                .swept_full_ms
                .is_none_or(|t| now_ms.saturating_sub(t) >= 1_000)
        {
            inner.swept_full_ms = Some(now_ms);
            expire(&mut inner, now_ms);
        }
        if inner.pollers.len() >= MAX_POLLERS {
            inner.untracked = inner.untracked.saturating_add(1);
            return;
        }
        inner.pollers.insert(
            id,
            Entry {
                etag,
                since_ms: now_ms,
                last_ms: now_ms,
            },
        );
    }

    /// `/status`: the newest table, the pollers by table, and the pollers one by one.
    pub fn status_json(&self, now_ms: u64, held: usize) -> String {
        let mut inner = self.lock();
        expire(&mut inner, now_ms);
        let newest_etag = inner.newest.as_ref().map(|n| n.etag.clone());
        let is_newest = |e: &Entry| e.etag.is_some() && e.etag == newest_etag;
        let mut by_table: HashMap<Option<&str>, u64> = HashMap::new();
        for e in inner.pollers.values() {
            let n = by_table.entry(e.etag.as_deref()).or_default();
            *n = n.saturating_add(1);
        }
        let mut tables: Vec<_> = by_table.into_iter().collect();
        tables.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let on_newest = inner.pollers.values().filter(|e| is_newest(e)).count();
        let mut list: Vec<(&String, &Entry)> = inner.pollers.iter().collect();
        // Behind first (the ones an operator looks for), then by name, so the cut at
        // MAX_LISTED keeps them.
        list.sort_by(|a, b| is_newest(a.1).cmp(&is_newest(b.1)).then(a.0.cmp(b.0)));
        let truncated = list.len() > MAX_LISTED;
        list.truncate(MAX_LISTED);
        let json = serde_json::json!({
            "now_ms": now_ms,
            "newest": inner.newest.as_ref().map(|n| serde_json::json!({
                "etag": n.etag,
                "issued_at_ms": n.issued_at_ms,
                "served_since_ms": n.since_ms,
                "age_ms": now_ms.saturating_sub(n.since_ms),
            })),
            "poller_ttl_ms": ttl_ms(),
            "pollers": {
                "total": inner.pollers.len(),
                "newest": on_newest,
                "behind": inner.pollers.len().saturating_sub(on_newest),
                "held_now": held,
                "untracked": inner.untracked,
            },
            "tables": tables.iter().map(|(etag, n)| serde_json::json!({
                "etag": etag,
                "newest": etag.is_some() && etag.map(str::to_owned) == newest_etag,
                "pollers": n,
            })).collect::<Vec<_>>(),
            "list": list.iter().map(|(id, e)| serde_json::json!({
                "poller": id,
                "etag": e.etag,
                "newest": is_newest(e),
                "since_ms": e.since_ms,
                "last_poll_ms": e.last_ms,
            })).collect::<Vec<_>>(),
            "truncated": truncated,
        });
        let mut out = json.to_string();
        out.push('\n');
        out
    }

    /// The `/status` response.
    pub fn respond(&self, now_ms: u64, held: usize) -> Response<Full<Bytes>> {
        let mut r = Response::new(Full::new(Bytes::from(self.status_json(now_ms, held))));
        *r.status_mut() = StatusCode::OK;
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        r
    }

    /// The convergence gauges in the Prometheus text format (appended to `/metrics`).
    pub fn render_metrics(&self, now_ms: u64, held: usize) -> String {
        let mut inner = self.lock();
        expire(&mut inner, now_ms);
        let newest = inner.newest.as_ref().map(|n| n.etag.clone());
        let on_newest = inner
            .pollers
            .values()
            .filter(|e| e.etag.is_some() && e.etag == newest)
            .count();
        let behind = inner.pollers.len().saturating_sub(on_newest);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP certgate_feed_pollers Pollers heard from within the last {} s, by whether they hold the newest table.\n# TYPE certgate_feed_pollers gauge\ncertgate_feed_pollers{{table=\"newest\"}} {on_newest}\ncertgate_feed_pollers{{table=\"behind\"}} {behind}",
            POLLER_TTL.as_secs()
        );
        let _ = writeln!(
            out,
            "# HELP certgate_feed_pollers_untracked_total Polls from new pollers not tracked because the poller map was full.\n# TYPE certgate_feed_pollers_untracked_total counter\ncertgate_feed_pollers_untracked_total {}",
            inner.untracked
        );
        let _ = writeln!(
            out,
            "# HELP certgate_feed_polls_held Long polls held now, waiting for a newer table.\n# TYPE certgate_feed_polls_held gauge\ncertgate_feed_polls_held {held}"
        );
        let _ = writeln!(
            out,
            "# HELP certgate_feed_newest_table_age_seconds How long the newest table has been served (absent before the first table).\n# TYPE certgate_feed_newest_table_age_seconds gauge"
        );
        if let Some(n) = inner.newest.as_ref() {
            let age = now_ms.saturating_sub(n.since_ms);
            let _ = writeln!(
                out,
                "certgate_feed_newest_table_age_seconds {}.{:03}",
                age / 1000,
                age % 1000
            );
        }
        out
    }
}

fn expire(inner: &mut Inner, now_ms: u64) {
    let ttl = ttl_ms();
    inner
        .pollers
        .retain(|_, e| now_ms.saturating_sub(e.last_ms) < ttl);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(etag: &str) -> Served {
        Served {
            bytes: Bytes::new(),
            etag: etag.into(),
            issued_at_ms: 7,
            expires_at_ms: None,
            deltas: Default::default(),
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn status(p: &Pollers, now: u64) -> serde_json::Value {
        serde_json::from_str(&p.status_json(now, 0)).unwrap()
    }

    #[test]
    fn pollers_are_named_by_header_or_address() {
        let peer: SocketAddr = "10.0.0.1:4000".parse().unwrap();
        assert_eq!(poller_id(&headers(&[(POLLER_HEADER, "p/3")]), peer), "p/3");
        assert_eq!(poller_id(&headers(&[]), peer), "10.0.0.1:4000");
        // Names that are empty, too long or not printable fall back to the address.
        let long = "x".repeat(MAX_POLLER_ID + 1);
        for bad in ["", "a b", long.as_str()] {
            assert_eq!(
                poller_id(&headers(&[(POLLER_HEADER, bad)]), peer),
                "10.0.0.1:4000",
                "{bad}"
            );
        }
    }

    #[test]
    fn a_one_off_fetch_is_no_poller() {
        assert!(!is_poller(&headers(&[])));
        assert!(is_poller(&headers(&[(POLLER_HEADER, "p/1")])));
        assert!(is_poller(&headers(&[(IF_NONE_MATCH.as_str(), "\"a\"")])));
    }

    #[test]
    fn held_etag_follows_if_none_match() {
        let s = served("\"new\"");
        assert_eq!(held_etag(&headers(&[]), Some(&s)), None);
        assert_eq!(
            held_etag(&headers(&[(IF_NONE_MATCH.as_str(), "W/\"new\"")]), Some(&s)).as_deref(),
            Some("\"new\"")
        );
        assert_eq!(
            held_etag(
                &headers(&[(IF_NONE_MATCH.as_str(), "\"old\", \"new\"")]),
                Some(&s)
            )
            .as_deref(),
            Some("\"new\"")
        );
        assert_eq!(
            held_etag(&headers(&[(IF_NONE_MATCH.as_str(), "\"old\"")]), Some(&s)).as_deref(),
            Some("\"old\"")
        );
        // `*` names no table; an oversized ETag is cut.
        assert_eq!(
            held_etag(&headers(&[(IF_NONE_MATCH.as_str(), "*")]), Some(&s)),
            None
        );
        let long = format!("\"{}\"", "a".repeat(500));
        assert_eq!(
            held_etag(&headers(&[(IF_NONE_MATCH.as_str(), &long)]), None)
                .unwrap()
                .len(),
            MAX_ETAG
        );
    }

    #[test]
    fn status_counts_pollers_by_table_and_lists_the_ones_behind_first() {
        let p = Pollers::default();
        p.table_served(&served("\"a\""), 1_000);
        p.polled("w/1".into(), Some("\"a\"".into()), 1_100);
        p.polled("w/2".into(), Some("\"a\"".into()), 1_100);
        p.table_served(&served("\"b\""), 2_000);
        p.polled("w/1".into(), Some("\"b\"".into()), 2_300);
        p.polled("w/3".into(), None, 2_400);
        let s = status(&p, 3_000);
        assert_eq!(s["newest"]["etag"], "\"b\"");
        assert_eq!(s["newest"]["served_since_ms"], 2_000);
        assert_eq!(s["newest"]["age_ms"], 1_000);
        assert_eq!(s["pollers"]["total"], 3);
        assert_eq!(s["pollers"]["newest"], 1);
        assert_eq!(s["pollers"]["behind"], 2);
        let list = s["list"].as_array().unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(list[0]["poller"], "w/2");
        assert_eq!(list[0]["etag"], "\"a\"");
        assert_eq!(list[1]["poller"], "w/3");
        assert!(list[1]["etag"].is_null());
        assert_eq!(list[2]["poller"], "w/1");
        assert_eq!(list[2]["newest"], true);
        assert_eq!(list[2]["since_ms"], 2_300);
        let m = p.render_metrics(3_000, 4);
        assert!(
            m.contains("certgate_feed_pollers{table=\"newest\"} 1\n"),
            "{m}"
        );
        assert!(
            m.contains("certgate_feed_pollers{table=\"behind\"} 2\n"),
            "{m}"
        );
        assert!(
            m.contains("certgate_feed_newest_table_age_seconds 1.000\n"),
            "{m}"
        );
        assert!(m.contains("certgate_feed_polls_held 4\n"), "{m}");
    }

    #[test]
    fn a_poller_keeps_its_since_until_its_table_changes() {
        let p = Pollers::default();
        p.table_served(&served("\"a\""), 0);
        p.polled("w".into(), Some("\"a\"".into()), 10);
        p.polled("w".into(), Some("\"a\"".into()), 500);
        let s = status(&p, 600);
        assert_eq!(s["list"][0]["since_ms"], 10);
        assert_eq!(s["list"][0]["last_poll_ms"], 500);
    }

    #[test]
    fn pollers_expire_and_the_map_is_bounded() {
        let p = Pollers::default();
        let ttl = ttl_ms();
        p.polled("old".into(), None, 0);
        assert_eq!(status(&p, ttl - 1)["pollers"]["total"], 1);
        assert_eq!(status(&p, ttl)["pollers"]["total"], 0);
        // An attacker inventing names fills the map, and no further.
        for i in 0..MAX_POLLERS + 10 {
            p.polled(format!("fake/{i}"), None, ttl);
        }
        let s = status(&p, ttl);
        assert_eq!(s["pollers"]["total"], MAX_POLLERS);
        assert_eq!(s["pollers"]["untracked"], 10);
        assert_eq!(s["list"].as_array().unwrap().len(), MAX_LISTED);
        assert_eq!(s["truncated"], true);
        // Once they expire, real pollers are tracked again.
        p.polled("real".into(), None, 2 * ttl);
        assert_eq!(status(&p, 2 * ttl)["pollers"]["total"], 1);
    }
}
