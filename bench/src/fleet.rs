//! The fleet simulation's pollers (`bench-fleet`): each holds one kept-alive HTTP/1.1
//! connection to the feed and only the ETag of the table it holds, and polls either as a
//! filter with `feed.longPoll` and deltas does (`Prefer: wait=N`, `A-IM: certgate-delta`,
//! `X-Certgate-Poller`) or as a plain poller (a `GET` with `If-None-Match` every period,
//! whole tables). A poller has converged when it holds the newer table: a `226` delta
//! applied with `ruleset::delta::apply` to the table it held, or a `200` body, whose SHA-256
//! equals the answer's `ETag`, as the filter checks it.
//!
//! One copy of each table's bytes is shared by all pollers ([`Tables`]). Checking is
//! memoised, so 10,000 pollers do not each rebuild an 8 MB table on a client that shares
//! two cores with the server: the first delta of a (base, delta bytes) pair is applied and
//! its result's SHA-256 compared with the ETag; a poller receiving the byte-identical
//! delta for the same base and ETag is checked by comparing its bytes with the verified
//! one. A whole table is compared byte for byte, as it streams in, with a copy whose
//! SHA-256 was checked against that ETag. Any other answer is applied or hashed itself.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Longest response head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Largest table a delta may rebuild (the filter's default table limit is far below).
const MAX_TABLE: usize = 256 * 1024 * 1024;
/// Pause before a poller whose poll failed tries again on a new connection.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// How long a plain poller waits for a whole answer: it never gives up on a table still
/// streaming in (starting over would only add bytes); the phase's own deadline stops it.
const PLAIN_ANSWER_TIMEOUT: Duration = Duration::from_secs(3_600);
/// Read size of a poller (10,000 of them hold one buffer each).
const CHUNK: usize = 16 * 1024;

/// A delta's base ETag and result ETag.
type EtagPair = (String, String);

/// The tables the pollers know, by ETag, and the deltas already checked.
#[derive(Debug, Default)]
pub struct Tables {
    /// Verified tables: ETag -> bytes (one shared copy each).
    full: std::sync::Mutex<HashMap<String, Arc<[u8]>>>,
    /// Checked deltas: (base ETag, result ETag) -> the delta's bytes.
    deltas: Mutex<HashMap<EtagPair, Arc<[u8]>>>,
}

impl Tables {
    /// Adds `bytes`, checked: their ETag (quoted SHA-256) is returned.
    pub fn add(&self, bytes: Arc<[u8]>) -> String {
        let etag = ruleset::delta::etag(&bytes);
        if let Ok(mut m) = self.full.lock() {
            m.insert(etag.clone(), bytes);
        }
        etag
    }

    /// The verified table of `etag`.
    pub fn get(&self, etag: &str) -> Option<Arc<[u8]>> {
        self.full.lock().ok()?.get(etag).cloned()
    }

    /// Checks that `delta`, applied to the table of `base`, gives the table of `etag`.
    async fn check_delta(&self, base: &str, etag: &str, delta: &[u8]) -> Result<()> {
        let key = (base.to_string(), etag.to_string());
        let mut memo = self.deltas.lock().await;
        if let Some(known) = memo.get(&key) {
            if **known == *delta {
                return Ok(());
            }
        }
        let base_bytes = self
            .get(base)
            .with_context(|| format!("no table {base} to apply a delta to"))?;
        let result = ruleset::delta::apply(&base_bytes, delta, MAX_TABLE)
            .map_err(|e| anyhow::anyhow!("delta refused: {}", e.reason()))?;
        let got = ruleset::delta::etag(&result);
        if got != etag {
            bail!("delta result {got} is not the ETag {etag}");
        }
        if self.get(etag).is_none() {
            self.add(result.into());
        }
        memo.insert(key, delta.into());
        Ok(())
    }
}

/// How a poller polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `Prefer: wait=N` and `A-IM: certgate-delta`, polling again as soon as an answer
    /// comes (a held poll that ends in `304` after N seconds).
    LongPollDelta {
        /// N of `Prefer: wait=N`.
        wait: Duration,
    },
    /// A `GET` with `If-None-Match` every `period` (ticks spread over the period by the
    /// caller's `first`), whole tables.
    Plain {
        /// Time between polls.
        period: Duration,
    },
}

/// What one poller did.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// When it held the newer table (`None`: not by the deadline).
    pub converged_at: Option<Instant>,
    /// Response bytes (heads and bodies) read after the revocation began, counted as they
    /// arrive (a response cut off counts what was read of it).
    pub bytes_after: u64,
    /// Response bytes read in all.
    pub bytes_total: u64,
    /// Answers: 200, 226, 304, other.
    pub answers: [u64; 4],
    /// Polls that failed (connection broken, timeout, bad answer) and the first reason.
    pub failures: u64,
    /// The first failure.
    pub first_failure: Option<String>,
}

/// A response read by [`read_response`].
struct Response {
    status: u16,
    etag: Option<String>,
    /// Body bytes, unless streamed against a known table.
    body: Vec<u8>,
    /// The body matched the known table of its ETag as it streamed.
    matched_known: bool,
    close: bool,
}

/// Reads one response. A `200` whose ETag names a table in `tables` is compared with it
/// as it streams in rather than kept.
async fn read_response(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    shared: &Shared,
    out: &mut Outcome,
) -> Result<Response> {
    let tables = &shared.tables;
    buf.clear();
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let n = stream.read(&mut chunk).await?;
        out.count(n, &shared.revoking);
        if n == 0 {
            bail!("connection closed before a whole response head");
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut head = httparse::Response::new(&mut headers);
        let head_len = match head.parse(buf)? {
            httparse::Status::Partial => {
                if buf.len() > MAX_HEAD {
                    bail!("response head longer than {MAX_HEAD} bytes");
                }
                continue;
            }
            httparse::Status::Complete(l) => l,
        };
        let status = head.code.unwrap_or(0);
        let mut length = 0usize;
        let mut etag = None;
        let mut close = head.version == Some(0);
        for h in head.headers.iter() {
            let v = std::str::from_utf8(h.value).unwrap_or("");
            if h.name.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().context("bad Content-Length")?;
            } else if h.name.eq_ignore_ascii_case("etag") {
                etag = Some(v.trim().to_string());
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                bail!("chunked responses are not expected from the feed");
            } else if h.name.eq_ignore_ascii_case("connection") {
                close |= v.to_ascii_lowercase().contains("close");
            }
        }
        if status == 304 || status == 204 || (100..200).contains(&status) {
            length = 0;
        }
        let known = match (status, &etag) {
            (200, Some(e)) => tables.get(e),
            _ => None,
        };
        let mut body = buf.split_off(head_len);
        if body.len() > length {
            bail!("{} bytes after the response", body.len() - length);
        }
        let mut matched = known.as_ref().map(|k| k.len() == length);
        if let (Some(k), Some(m)) = (&known, matched.as_mut()) {
            *m &= k.get(..body.len()).is_some_and(|p| p == body.as_slice());
        }
        let mut have = body.len();
        while have < length {
            let want = (length - have).min(chunk.len());
            let n = stream.read(&mut chunk[..want]).await?;
            out.count(n, &shared.revoking);
            if n == 0 {
                bail!(
                    "connection closed with {} body bytes to come",
                    length - have
                );
            }
            match (&known, matched.as_mut()) {
                (Some(k), Some(m)) => {
                    *m &= k.get(have..have + n).is_some_and(|p| p == &chunk[..n]);
                }
                _ => body.extend_from_slice(&chunk[..n]),
            }
            have += n;
        }
        if known.is_some() {
            body.clear();
        }
        return Ok(Response {
            status,
            etag,
            body,
            matched_known: matched == Some(true),
            close,
        });
    }
}

/// The request a poller of `mode` sends, holding `etag`.
pub fn request(addr: SocketAddr, path: &str, etag: &str, id: &str, mode: Mode) -> Vec<u8> {
    let mut r = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: certgate-bench-fleet\r\nIf-None-Match: {etag}\r\nX-Certgate-Poller: {id}\r\n"
    );
    if let Mode::LongPollDelta { wait } = mode {
        r.push_str(&format!(
            "Prefer: wait={}\r\nA-IM: {}\r\n",
            wait.as_secs(),
            ruleset::delta::IM_NAME
        ));
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// Shared state of a phase.
#[derive(Debug)]
pub struct Shared {
    /// The feed.
    pub addr: SocketAddr,
    /// Its table path.
    pub path: String,
    /// The tables known and checked.
    pub tables: Tables,
    /// The revocation began (compile started): bytes count from here on.
    pub revoking: AtomicBool,
    /// Pollers that have sent their first poll.
    pub started: AtomicU64,
    /// Pollers that hold a newer table than the one they started with.
    pub converged: AtomicU64,
}

/// One poller: holds `etag` and polls until it holds another table whose SHA-256
/// matches its ETag, or until `stop` turns true.
pub async fn poller(
    shared: Arc<Shared>,
    id: String,
    etag: String,
    mode: Mode,
    first: Instant,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Outcome {
    let mut out = Outcome::default();
    tokio::select! {
        () = poll_until_converged(&shared, &id, etag, mode, first, &mut out) => {}
        _ = stop.wait_for(|s| *s) => {}
    }
    out
}

async fn poll_until_converged(
    shared: &Shared,
    id: &str,
    mut etag: String,
    mode: Mode,
    first: Instant,
    out: &mut Outcome,
) {
    let start_etag = etag.clone();
    let mut conn: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(1024);
    let mut next = first;
    let mut counted = false;
    let answer_timeout = match mode {
        Mode::LongPollDelta { wait } => wait + Duration::from_secs(10),
        Mode::Plain { .. } => PLAIN_ANSWER_TIMEOUT,
    };
    loop {
        if let Mode::Plain { period } = mode {
            tokio::time::sleep_until(next).await;
            next += period;
        }
        let stream = match conn.as_mut() {
            Some(s) => s,
            None => match TcpStream::connect(shared.addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    conn.insert(s)
                }
                Err(e) => {
                    fail(out, format!("connect: {e}"));
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            },
        };
        let req = request(shared.addr, &shared.path, &etag, id, mode);
        if let Err(e) = stream.write_all(&req).await {
            fail(out, format!("write: {e}"));
            conn = None;
            continue;
        }
        if !counted {
            counted = true;
            shared.started.fetch_add(1, Ordering::Relaxed);
        }
        let read =
            tokio::time::timeout(answer_timeout, read_response(stream, &mut buf, shared, out))
                .await;
        let r = match read {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                fail(out, format!("poll: {e:#}"));
                conn = None;
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
            Err(_) => {
                fail(out, "poll: no answer in time".into());
                conn = None;
                continue;
            }
        };
        if r.close {
            conn = None;
        }
        let new_etag = r.etag.clone().unwrap_or_default();
        match r.status {
            304 => out.answers[2] += 1,
            200 | 226 => {
                out.answers[usize::from(r.status == 226)] += 1;
                let checked = if r.status == 226 {
                    shared.tables.check_delta(&etag, &new_etag, &r.body).await
                } else if r.matched_known {
                    Ok(())
                } else if ruleset::delta::etag(&r.body) == new_etag {
                    shared.tables.add(r.body.into());
                    Ok(())
                } else {
                    Err(anyhow::anyhow!("body does not hash to its ETag {new_etag}"))
                };
                match checked {
                    Ok(()) => {
                        etag = new_etag;
                        if etag != start_etag {
                            out.converged_at = Some(Instant::now());
                            shared.converged.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                    Err(e) => fail(out, format!("{e:#}")),
                }
            }
            s => {
                out.answers[3] += 1;
                fail(out, format!("status {s}"));
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

impl Outcome {
    fn count(&mut self, n: usize, revoking: &AtomicBool) {
        self.bytes_total += n as u64;
        if revoking.load(Ordering::Acquire) {
            self.bytes_after += n as u64;
        }
    }
}

fn fail(out: &mut Outcome, what: String) {
    out.failures += 1;
    if out.first_failure.is_none() {
        out.first_failure = Some(what);
    }
}

/// Nearest-rank percentile of sorted values (NaN when empty).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_poll_requests_ask_for_deltas_and_a_wait() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let lp = request(
            addr,
            "/t",
            "\"ab\"",
            "p1",
            Mode::LongPollDelta {
                wait: Duration::from_secs(30),
            },
        );
        let lp = String::from_utf8(lp).unwrap();
        for want in [
            "If-None-Match: \"ab\"\r\n",
            "X-Certgate-Poller: p1\r\n",
            "Prefer: wait=30\r\n",
            "A-IM: certgate-delta\r\n",
        ] {
            assert!(lp.contains(want), "{lp}");
        }
        let plain = request(
            addr,
            "/t",
            "\"ab\"",
            "p1",
            Mode::Plain {
                period: Duration::from_secs(5),
            },
        );
        let plain = String::from_utf8(plain).unwrap();
        assert!(
            !plain.contains("Prefer") && !plain.contains("A-IM"),
            "{plain}"
        );
        assert!(plain.ends_with("\r\n\r\n"));
    }

    #[test]
    fn nearest_rank() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.5), 2.0);
        assert_eq!(percentile(&v, 0.99), 4.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    /// A server that answers a whole table whose bytes do not hash to its ETag, then the
    /// right one: the poller refuses the first and converges on the second.
    #[tokio::test(flavor = "current_thread")]
    async fn a_body_that_does_not_match_its_etag_is_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let good: Vec<u8> = b"the newer table".to_vec();
        let good_etag = ruleset::delta::etag(&good);
        let g = good.clone();
        let e = good_etag.clone();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut b = [0u8; 2048];
            for body in [b"forged table!!!".to_vec(), g] {
                let _ = s.read(&mut b).await.unwrap();
                let head = format!(
                    "HTTP/1.1 200 OK\r\nETag: {e}\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                s.write_all(head.as_bytes()).await.unwrap();
                s.write_all(&body).await.unwrap();
            }
        });
        let shared = Arc::new(Shared {
            addr,
            path: "/t".into(),
            tables: Tables::default(),
            revoking: AtomicBool::new(true),
            started: AtomicU64::new(0),
            converged: AtomicU64::new(0),
        });
        let (_stop, stop) = tokio::sync::watch::channel(false);
        let out = tokio::time::timeout(
            Duration::from_secs(5),
            poller(
                shared.clone(),
                "p".into(),
                "\"old\"".into(),
                Mode::Plain {
                    period: Duration::from_millis(10),
                },
                Instant::now(),
                stop,
            ),
        )
        .await
        .unwrap();
        assert!(out.converged_at.is_some());
        assert_eq!(out.failures, 1);
        assert!(out.first_failure.unwrap().contains("does not hash"));
        assert_eq!(out.answers[0], 2);
        assert_eq!(shared.converged.load(Ordering::Relaxed), 1);
        assert_eq!(shared.tables.get(&good_etag).as_deref(), Some(&good[..]));
    }

    /// A `226` whose delta was tampered with (one byte of the added key flipped) is
    /// refused; the genuine delta that follows converges the poller, and a second poller
    /// receiving the same delta is checked against the memo, not trusted blindly.
    #[tokio::test(flavor = "current_thread")]
    async fn a_tampered_delta_is_refused_and_the_genuine_one_converges() {
        let rules = crate::tables::rules(3, crate::tables::RuleKind::Exact).unwrap();
        let old = ruleset::encode(&crate::tables::table(rules.clone(), 50, &[]).unwrap()).unwrap();
        let new =
            ruleset::encode(&crate::tables::table(rules, 50, &[vec![0x7f; 15]]).unwrap()).unwrap();
        let delta = ruleset::delta::diff(&old, &new).unwrap();
        let mut forged = delta.clone();
        let last = forged.len() - 1;
        forged[last] ^= 0x01;
        let (old_etag, new_etag) = (ruleset::delta::etag(&old), ruleset::delta::etag(&new));

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let e = new_etag.clone();
        tokio::spawn(async move {
            for bodies in [vec![forged, delta.clone()], vec![delta]] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut b = [0u8; 2048];
                for body in bodies {
                    let n = s.read(&mut b).await.unwrap();
                    assert!(String::from_utf8_lossy(&b[..n]).contains("A-IM: certgate-delta\r\n"));
                    let head = format!(
                        "HTTP/1.1 226 IM Used\r\nETag: {e}\r\nIM: certgate-delta\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    s.write_all(head.as_bytes()).await.unwrap();
                    s.write_all(&body).await.unwrap();
                }
            }
        });
        let shared = Arc::new(Shared {
            addr,
            path: "/t".into(),
            tables: Tables::default(),
            revoking: AtomicBool::new(true),
            started: AtomicU64::new(0),
            converged: AtomicU64::new(0),
        });
        assert_eq!(shared.tables.add(old.into()), old_etag);
        let mode = Mode::LongPollDelta {
            wait: Duration::from_secs(1),
        };
        for (id, failures) in [("a", 1), ("b", 0)] {
            let (_stop, stop) = tokio::sync::watch::channel(false);
            let out = tokio::time::timeout(
                Duration::from_secs(5),
                poller(
                    shared.clone(),
                    id.into(),
                    old_etag.clone(),
                    mode,
                    Instant::now(),
                    stop,
                ),
            )
            .await
            .unwrap();
            assert!(out.converged_at.is_some(), "{id}: {:?}", out.first_failure);
            assert_eq!(out.failures, failures, "{id}: {:?}", out.first_failure);
            assert_eq!(out.answers[1], 1 + failures);
        }
        assert_eq!(shared.converged.load(Ordering::Relaxed), 2);
        assert_eq!(shared.tables.get(&new_etag).as_deref(), Some(&new[..]));
    }
}
