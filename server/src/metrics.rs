//! The feed's counters and gauges, and their Prometheus text exposition (`GET /metrics`).
//! Lock-free atomics: every request and every byte written updates them.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::served::Served;

/// Why a file in the directory was not served (the `reason` label of
/// `certgate_feed_tables_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// It could not be read (permissions, a dangling link, an I/O error).
    Unreadable,
    /// It did not decode as a table (half-written, corrupt, unknown version).
    Undecodable,
    /// It is not newer than the table served (a rollback attempt or a stale copy).
    Older,
    /// A symbolic link that leaves the served directory.
    OutsideDir,
    /// Not a candidate at all: not named `*.cgt`, or not a regular file.
    NotATable,
    /// The [`crate::scan::Source`] failed to produce a table (e.g. policies that do not compile).
    SourceFailed,
}

impl Refusal {
    const ALL: [Refusal; 6] = [
        Refusal::Unreadable,
        Refusal::Undecodable,
        Refusal::Older,
        Refusal::OutsideDir,
        Refusal::NotATable,
        Refusal::SourceFailed,
    ];

    fn label(self) -> &'static str {
        match self {
            Refusal::Unreadable => "unreadable",
            Refusal::Undecodable => "undecodable",
            Refusal::Older => "older",
            Refusal::OutsideDir => "outside_dir",
            Refusal::NotATable => "not_a_table",
            Refusal::SourceFailed => "source_failed",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Why a connection ended early (the `reason` label of
/// `certgate_feed_connections_closed_early_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EarlyClose {
    /// More connections were open than `max_connections`: closed right after accept.
    Limit,
    /// The request head did not arrive in time (also: idle past the keep-alive timeout).
    HeaderTimeout,
    /// The client stopped reading a response.
    WriteTimeout,
    /// A malformed request or another I/O error.
    Error,
    /// Still open when the shutdown grace period ended.
    Shutdown,
}

impl EarlyClose {
    const ALL: [EarlyClose; 5] = [
        EarlyClose::Limit,
        EarlyClose::HeaderTimeout,
        EarlyClose::WriteTimeout,
        EarlyClose::Error,
        EarlyClose::Shutdown,
    ];

    fn label(self) -> &'static str {
        match self {
            EarlyClose::Limit => "limit",
            EarlyClose::HeaderTimeout => "header_timeout",
            EarlyClose::WriteTimeout => "write_timeout",
            EarlyClose::Error => "error",
            EarlyClose::Shutdown => "shutdown",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The status codes the feed answers with; anything else is counted as `other`.
const CODES: [u16; 7] = [200, 226, 304, 404, 405, 503, 0];

/// Every counter and gauge of one server.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: [AtomicU64; CODES.len()],
    sent_bytes: AtomicU64,
    open_connections: AtomicU64,
    connections: AtomicU64,
    closed_early: [AtomicU64; EarlyClose::ALL.len()],
    accept_errors: AtomicU64,
    tables_refused: [AtomicU64; Refusal::ALL.len()],
    tables_published: AtomicU64,
    /// Of the table served: issue time and expiry in ms (0: none), and its size.
    issued_ms: AtomicU64,
    expires_ms: AtomicU64,
    table_bytes: AtomicU64,
    /// Deltas served (`226`) and the bytes they saved against the whole table.
    deltas_served: AtomicU64,
    delta_saved_bytes: AtomicU64,
    /// CRL fetches of the source that failed, by reason (labels come from the source).
    crl_fetch_failures: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

impl Metrics {
    /// Counts one response by status code.
    pub fn request(&self, code: u16) {
        let i = CODES
            .iter()
            .position(|c| *c == code)
            .unwrap_or(CODES.len().saturating_sub(1));
        if let Some(c) = self.requests.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A delta was served instead of the table, `saved` bytes smaller.
    pub fn delta_served(&self, saved: usize) {
        self.deltas_served.fetch_add(1, Ordering::Relaxed);
        self.delta_saved_bytes
            .fetch_add(u64::try_from(saved).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Counts bytes written to clients.
    pub fn sent(&self, n: usize) {
        self.sent_bytes
            .fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// A connection was accepted and is being served.
    pub fn opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.open_connections.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection counted by [`Metrics::opened`] ended.
    pub fn closed(&self) {
        self.open_connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Connections open now.
    pub fn open_now(&self) -> u64 {
        self.open_connections.load(Ordering::Relaxed)
    }

    /// A connection ended early, for `why`.
    pub fn closed_early(&self, why: EarlyClose) {
        if let Some(c) = self.closed_early.get(why.index()) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `accept` failed (e.g. out of file descriptors).
    pub fn accept_error(&self) {
        self.accept_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A CRL fetch of the source failed, for `reason`.
    pub fn crl_fetch_failed(&self, reason: &'static str) {
        if let Ok(mut m) = self.crl_fetch_failures.lock() {
            let n = m.entry(reason).or_insert(0);
            *n = n.saturating_add(1);
        }
    }

    /// A table was refused, for `why`.
    pub fn table_refused(&self, why: Refusal) {
        if let Some(c) = self.tables_refused.get(why.index()) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A new table is served.
    pub fn table_published(&self, served: &Served) {
        self.tables_published.fetch_add(1, Ordering::Relaxed);
        self.issued_ms.store(served.issued_at_ms, Ordering::Relaxed);
        self.expires_ms
            .store(served.expires_at_ms.unwrap_or(0), Ordering::Relaxed);
        self.table_bytes.store(
            u64::try_from(served.bytes.len()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let seconds = |ms: u64| format!("{}.{:03}", ms / 1000, ms % 1000);
        let issued = load(&self.issued_ms);
        let expires = load(&self.expires_ms);
        family(
            "certgate_feed_table_issued_timestamp_seconds",
            "gauge",
            "Issue time of the table served, in Unix seconds (absent before the first table).",
            &if load(&self.tables_published) > 0 {
                vec![(String::new(), seconds(issued))]
            } else {
                vec![]
            },
        );
        family(
            "certgate_feed_table_expiry_timestamp_seconds",
            "gauge",
            "Expiry of the table served, in Unix seconds (absent when it has none).",
            &if expires > 0 {
                vec![(String::new(), seconds(expires))]
            } else {
                vec![]
            },
        );
        family(
            "certgate_feed_table_size_bytes",
            "gauge",
            "Size of the table served.",
            &[(String::new(), load(&self.table_bytes).to_string())],
        );
        family(
            "certgate_feed_tables_published_total",
            "counter",
            "Tables served since start (each newer than the one before).",
            &[(String::new(), load(&self.tables_published).to_string())],
        );
        let refused: Vec<(String, String)> = Refusal::ALL
            .iter()
            .zip(&self.tables_refused)
            .map(|(r, c)| (format!("{{reason=\"{}\"}}", r.label()), load(c).to_string()))
            .collect();
        family(
            "certgate_feed_tables_refused_total",
            "counter",
            "Files in the directory refused, by reason (each counted once per change).",
            &refused,
        );
        let crl: Vec<(String, String)> = self
            .crl_fetch_failures
            .lock()
            .map(|m| {
                m.iter()
                    .map(|(r, n)| (format!("{{reason=\"{r}\"}}"), n.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        family(
            "certgate_feed_crl_fetch_failures_total",
            "counter",
            "CRLs named by URL that failed to fetch or verify, by reason (the last good copy stays).",
            &crl,
        );
        let requests: Vec<(String, String)> = CODES
            .iter()
            .zip(&self.requests)
            .map(|(code, c)| {
                let code = if *code == 0 {
                    "other".to_string()
                } else {
                    code.to_string()
                };
                (format!("{{code=\"{code}\"}}"), load(c).to_string())
            })
            .collect();
        family(
            "certgate_feed_requests_total",
            "counter",
            "Requests answered, by status code.",
            &requests,
        );
        family(
            "certgate_feed_sent_bytes_total",
            "counter",
            "Bytes written to clients (heads and bodies).",
            &[(String::new(), load(&self.sent_bytes).to_string())],
        );
        family(
            "certgate_feed_deltas_served_total",
            "counter",
            "Deltas served (226 IM Used) instead of the whole table.",
            &[(String::new(), load(&self.deltas_served).to_string())],
        );
        family(
            "certgate_feed_delta_saved_bytes_total",
            "counter",
            "Bytes the deltas served saved against sending the whole table.",
            &[(String::new(), load(&self.delta_saved_bytes).to_string())],
        );
        family(
            "certgate_feed_open_connections",
            "gauge",
            "Client connections open now.",
            &[(String::new(), load(&self.open_connections).to_string())],
        );
        family(
            "certgate_feed_connections_total",
            "counter",
            "Client connections accepted and served.",
            &[(String::new(), load(&self.connections).to_string())],
        );
        let early: Vec<(String, String)> = EarlyClose::ALL
            .iter()
            .zip(&self.closed_early)
            .map(|(r, c)| (format!("{{reason=\"{}\"}}", r.label()), load(c).to_string()))
            .collect();
        family(
            "certgate_feed_connections_closed_early_total",
            "counter",
            "Connections closed by the server before the client was done, by reason.",
            &early,
        );
        family(
            "certgate_feed_accept_errors_total",
            "counter",
            "Failed accepts (e.g. out of file descriptors); each is followed by a back-off.",
            &[(String::new(), load(&self.accept_errors).to_string())],
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_type_and_help() {
        let m = Metrics::default();
        m.request(200);
        m.request(304);
        m.request(304);
        m.request(418);
        m.sent(10);
        m.table_refused(Refusal::Older);
        m.table_published(&Served {
            bytes: bytes::Bytes::from_static(b"abc"),
            etag: "\"x\"".into(),
            issued_at_ms: 1_700_000_000_123,
            expires_at_ms: Some(1_700_000_100_000),
            deltas: Default::default(),
        });
        let text = m.render();
        for line in [
            "certgate_feed_requests_total{code=\"304\"} 2",
            "certgate_feed_requests_total{code=\"other\"} 1",
            "certgate_feed_sent_bytes_total 10",
            "certgate_feed_tables_refused_total{reason=\"older\"} 1",
            "certgate_feed_table_issued_timestamp_seconds 1700000000.123",
            "certgate_feed_table_expiry_timestamp_seconds 1700000100.000",
            "certgate_feed_table_size_bytes 3",
            "# TYPE certgate_feed_open_connections gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }

    #[test]
    fn crl_fetch_failures_are_counted_by_the_reason_the_source_gives() {
        let m = Metrics::default();
        assert!(m
            .render()
            .contains("# TYPE certgate_feed_crl_fetch_failures_total counter"));
        m.crl_fetch_failed("verify");
        m.crl_fetch_failed("verify");
        m.crl_fetch_failed("timeout");
        let text = m.render();
        assert!(
            text.contains("certgate_feed_crl_fetch_failures_total{reason=\"verify\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("certgate_feed_crl_fetch_failures_total{reason=\"timeout\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn no_issue_time_before_the_first_table() {
        let text = Metrics::default().render();
        assert!(!text
            .lines()
            .any(|l| l.starts_with("certgate_feed_table_issued_timestamp_seconds ")));
    }
}
