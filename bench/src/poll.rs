//! The feed load test's clients (tokio): pollers that behave like a fleet's proxy workers
//! (one kept-alive HTTP/1.1 connection each, one `GET` with `If-None-Match` per period,
//! spread evenly over the period rather than in lockstep), and the attackers of the
//! idle-connection case (connections opened and never written to, and request heads
//! trickled a byte at a time), each of which reconnects as soon as the server drops it, so
//! the attack is held for the whole phase.
//!
//! The HTTP client is minimal on purpose: it writes one request, reads exactly one
//! response (head parsed by `httparse`, body by `Content-Length`) and times it from the
//! first byte written to the last byte read, with no pool or task of its own in between.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, MissedTickBehavior};

/// A poll not answered within this time counts as failed (and its connection is dropped).
/// Far above any goal, so only a server that stopped answering reaches it.
pub const POLL_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest response head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Pause of an attacker whose connect failed, before it tries again.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

/// What one poll got: the status and whether the server will close the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body bytes read.
    pub body: usize,
    /// The server said `Connection: close` (or answered HTTP/1.0).
    pub close: bool,
}

/// One kept-alive connection to the feed.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Connects to `addr` (Nagle off, as HTTP clients do).
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(1024),
        })
    }

    /// Writes `request` and reads its whole response.
    pub async fn exchange(&mut self, request: &[u8]) -> Result<Answer> {
        self.stream.write_all(request).await?;
        self.buf.clear();
        let mut chunk = [0u8; 4096];
        loop {
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("connection closed before a whole response head");
            }
            self.buf.extend_from_slice(&chunk[..n]);
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut head = httparse::Response::new(&mut headers);
            match head.parse(&self.buf)? {
                httparse::Status::Partial => {
                    if self.buf.len() > MAX_HEAD {
                        bail!("response head longer than {MAX_HEAD} bytes");
                    }
                }
                httparse::Status::Complete(head_len) => {
                    let status = head.code.unwrap_or(0);
                    let mut length = 0usize;
                    let mut close = head.version == Some(0);
                    for h in head.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            length = std::str::from_utf8(h.value)?
                                .trim()
                                .parse()
                                .context("bad Content-Length")?;
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            bail!("chunked responses are not expected from a static table");
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            close |= std::str::from_utf8(h.value)
                                .is_ok_and(|v| v.to_ascii_lowercase().contains("close"));
                        }
                    }
                    // 304 and HEAD carry no body whatever Content-Length says.
                    if status == 304 || status == 204 || (100..200).contains(&status) {
                        length = 0;
                    }
                    let have = self.buf.len() - head_len;
                    if have > length {
                        bail!("{} bytes after the response", have - length);
                    }
                    let mut left = length - have;
                    while left > 0 {
                        let want = left.min(chunk.len());
                        let n = self.stream.read(&mut chunk[..want]).await?;
                        if n == 0 {
                            bail!("connection closed with {left} body bytes to come");
                        }
                        left -= n;
                    }
                    return Ok(Answer {
                        status,
                        body: length,
                        close,
                    });
                }
            }
        }
    }
}

/// `GET path` with `If-None-Match: etag` (none when empty), as a feed poller sends it.
pub fn request(addr: SocketAddr, path: &str, etag: &str) -> Vec<u8> {
    let mut r =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: certgate-bench-feed\r\n");
    if !etag.is_empty() {
        r.push_str(&format!("If-None-Match: {etag}\r\n"));
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// Fetches `path` once on a fresh connection: the status and the `ETag` header.
pub async fn fetch(
    addr: SocketAddr,
    path: &str,
    etag: &str,
) -> Result<(u16, Option<String>, usize)> {
    let mut conn = Conn::connect(addr).await?;
    conn.stream.write_all(&request(addr, path, etag)).await?;
    // Framed here rather than by `exchange`: this needs the ETag, which `Answer` does not
    // carry, and reads a whole table.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let deadline = Instant::now() + POLL_TIMEOUT;
    loop {
        let n = tokio::time::timeout_at(deadline, conn.stream.read(&mut chunk))
            .await
            .context("no answer in time")??;
        if n == 0 {
            bail!("connection closed before a whole response");
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut head = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head_len) = head.parse(&buf)? {
            let status = head.code.unwrap_or(0);
            let header = |name: &str| {
                head.headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .and_then(|h| std::str::from_utf8(h.value).ok())
                    .map(str::to_string)
            };
            let etag = header("etag");
            let length: usize = match (status, header("content-length")) {
                (304, _) | (_, None) => 0,
                (_, Some(l)) => l.trim().parse().context("bad Content-Length")?,
            };
            while buf.len() < head_len + length {
                let n = tokio::time::timeout_at(deadline, conn.stream.read(&mut chunk))
                    .await
                    .context("no whole body in time")??;
                if n == 0 {
                    bail!("connection closed in the body");
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok((status, etag, length));
        }
    }
}

/// Why a poll failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection could not be opened (refused, reset, or no answer to the SYN).
    Connect,
    /// The connection broke or closed before a whole response.
    Broken,
    /// No whole response within [`POLL_TIMEOUT`].
    Timeout,
    /// A status other than 200 or 304.
    Status,
}

/// What one poller saw, in the measured window and before it.
#[derive(Debug, Default, Clone)]
pub struct PollTally {
    /// Latency of every answered poll of the window, in microseconds.
    pub latencies_us: Vec<u32>,
    /// Polls begun in the window (a failed connect counts as a poll begun).
    pub sent: u64,
    /// Polls of the window answered 200 or 304.
    pub answered: u64,
    /// Of those, answered 304.
    pub not_modified: u64,
    /// Failures in the window, by kind: connect, broken, timeout, status.
    pub failed: [u64; 4],
    /// Failures before the window (warm-up).
    pub warmup_failed: u64,
    /// Connections opened after the first (the server closed one, or one failed).
    pub reconnects: u64,
    /// Ticks skipped because the poll before was still running.
    pub late: u64,
    /// The first failure, for the report.
    pub first_failure: Option<String>,
}

impl PollTally {
    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: PollTally) {
        self.latencies_us.extend(other.latencies_us);
        self.sent += other.sent;
        self.answered += other.answered;
        self.not_modified += other.not_modified;
        for (a, b) in self.failed.iter_mut().zip(other.failed) {
            *a += b;
        }
        self.warmup_failed += other.warmup_failed;
        self.reconnects += other.reconnects;
        self.late += other.late;
        if self.first_failure.is_none() {
            self.first_failure = other.first_failure;
        }
    }

    /// Failed polls of the window.
    pub fn failures(&self) -> u64 {
        self.failed.iter().sum()
    }

    fn fail(&mut self, in_window: bool, kind: Failure, what: String) {
        if in_window {
            self.failed[kind as usize] += 1;
        } else {
            self.warmup_failed += 1;
        }
        if self.first_failure.is_none() {
            self.first_failure = Some(what);
        }
    }
}

/// When a poller polls.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Its first poll.
    pub first: Instant,
    /// Time between polls.
    pub period: Duration,
    /// Polls begun from here on are measured.
    pub window_start: Instant,
    /// No poll begins from here on.
    pub end: Instant,
}

/// The first poll of poller `i` of `n`: spread evenly over one period from `start`.
pub fn offset(start: Instant, period: Duration, i: usize, n: usize) -> Instant {
    let n = n.max(1) as u128;
    let nanos = period.as_nanos() * (i as u128 % n) / n;
    start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// One poller: polls `addr` on `schedule` over one kept-alive connection, reconnecting
/// when the server closes it or a poll fails.
pub async fn poller(addr: SocketAddr, request: Arc<[u8]>, schedule: Schedule) -> PollTally {
    let mut tally = PollTally::default();
    let mut ticks = tokio::time::interval_at(schedule.first, schedule.period);
    // A poll still running at its next tick skips that tick (counted as late), as a proxy
    // whose fetch is in flight does not start another.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut conn: Option<Conn> = None;
    let mut opened = 0u64;
    let mut next_expected = schedule.first;
    loop {
        let tick = ticks.tick().await;
        if tick >= schedule.end {
            break;
        }
        if tick > next_expected {
            let skipped = (tick - next_expected).as_nanos() / schedule.period.as_nanos().max(1);
            if tick >= schedule.window_start {
                tally.late += u64::try_from(skipped).unwrap_or(u64::MAX);
            }
        }
        next_expected = tick + schedule.period;
        let in_window = tick >= schedule.window_start;
        if in_window {
            tally.sent += 1;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match tokio::time::timeout(POLL_TIMEOUT, Conn::connect(addr)).await {
                Ok(Ok(c)) => {
                    if opened > 0 {
                        tally.reconnects += 1;
                    }
                    opened += 1;
                    conn.insert(c)
                }
                Ok(Err(e)) => {
                    tally.fail(in_window, Failure::Connect, format!("connect: {e}"));
                    continue;
                }
                Err(_) => {
                    tally.fail(in_window, Failure::Connect, "connect: timed out".into());
                    continue;
                }
            },
        };
        let began = Instant::now();
        let outcome = tokio::time::timeout(POLL_TIMEOUT, c.exchange(&request)).await;
        let took = began.elapsed();
        match outcome {
            Ok(Ok(a)) if a.status == 200 || a.status == 304 => {
                if in_window {
                    tally.answered += 1;
                    tally.not_modified += u64::from(a.status == 304);
                    tally
                        .latencies_us
                        .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
                }
                if a.close {
                    conn = None;
                }
            }
            Ok(Ok(a)) => {
                tally.fail(in_window, Failure::Status, format!("status {}", a.status));
                if a.close {
                    conn = None;
                }
            }
            Ok(Err(e)) => {
                tally.fail(in_window, Failure::Broken, format!("poll: {e:#}"));
                conn = None;
            }
            Err(_) => {
                tally.fail(
                    in_window,
                    Failure::Timeout,
                    format!("poll: no answer in {POLL_TIMEOUT:?}"),
                );
                conn = None;
            }
        }
    }
    tally
}

/// What the attackers did and what the server did to them.
#[derive(Debug, Default)]
pub struct AttackTally {
    /// Idle connections open now.
    pub idle_open: AtomicI64,
    /// Idle connections opened in all.
    pub idle_opened: AtomicU64,
    /// Idle connections the server closed.
    pub idle_closed_by_server: AtomicU64,
    /// Slow connections opened in all.
    pub slow_opened: AtomicU64,
    /// Slow heads the server cut off (closed or answered before the head was whole).
    pub slow_cut: AtomicU64,
    /// Slow heads sent whole (the server waited for all of it).
    pub slow_completed: AtomicU64,
    /// Attacker connects that failed.
    pub connect_failed: AtomicU64,
}

/// An attacker that opens a connection and never writes to it, until `end`; when the
/// server closes it, it opens another.
pub async fn idle(addr: SocketAddr, end: Instant, tally: Arc<AttackTally>) {
    let mut sink = [0u8; 512];
    while Instant::now() < end {
        let mut stream = match tokio::time::timeout_at(end, TcpStream::connect(addr)).await {
            Err(_) => return,
            Ok(Ok(s)) => s,
            Ok(Err(_)) => {
                tally.connect_failed.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(RECONNECT_PAUSE).await;
                continue;
            }
        };
        tally.idle_opened.fetch_add(1, Ordering::Relaxed);
        tally.idle_open.fetch_add(1, Ordering::Relaxed);
        let closed = loop {
            tokio::select! {
                r = stream.read(&mut sink) => match r {
                    // A server may say something (a 408) before closing: read on.
                    Ok(n) if n > 0 => continue,
                    _ => break true,
                },
                () = tokio::time::sleep_until(end) => break false,
            }
        };
        tally.idle_open.fetch_sub(1, Ordering::Relaxed);
        if closed {
            tally.idle_closed_by_server.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// An attacker that sends a request head one byte every `trickle`, until `end`; when the
/// server cuts it off, it starts over on a new connection.
pub async fn slow(
    addr: SocketAddr,
    head: Arc<[u8]>,
    trickle: Duration,
    end: Instant,
    tally: Arc<AttackTally>,
) {
    let mut sink = [0u8; 512];
    while Instant::now() < end {
        let stream = match tokio::time::timeout_at(end, TcpStream::connect(addr)).await {
            Err(_) => return,
            Ok(Ok(s)) => s,
            Ok(Err(_)) => {
                tally.connect_failed.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(RECONNECT_PAUSE).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tally.slow_opened.fetch_add(1, Ordering::Relaxed);
        let (mut rd, mut wr) = stream.into_split();
        let mut sent = 0usize;
        let cut = 'conn: loop {
            if sent == head.len() {
                tally.slow_completed.fetch_add(1, Ordering::Relaxed);
                break 'conn false;
            }
            if wr.write_all(&head[sent..sent + 1]).await.is_err() {
                break 'conn true;
            }
            sent += 1;
            tokio::select! {
                // Anything back before the head is whole (a 408, or a close) means the
                // server gave up on it.
                _ = rd.read(&mut sink) => break 'conn true,
                () = tokio::time::sleep(trickle) => {}
                () = tokio::time::sleep_until(end) => return,
            }
        };
        if cut {
            tally.slow_cut.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A request head of about `len` bytes (a long `User-Agent`), for the slow attackers.
pub fn long_head(addr: SocketAddr, path: &str, len: usize) -> Vec<u8> {
    let base = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: \r\n\r\n");
    let pad = "x".repeat(len.saturating_sub(base.len()));
    format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: {pad}\r\n\r\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pollers_are_spread_over_the_period() {
        let start = Instant::now();
        let p = Duration::from_secs(1);
        assert_eq!(offset(start, p, 0, 4), start);
        assert_eq!(offset(start, p, 2, 4), start + Duration::from_millis(500));
        assert_eq!(offset(start, p, 3, 4), start + Duration::from_millis(750));
    }

    #[test]
    fn long_head_has_the_asked_length() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let h = long_head(addr, "/table.cgt", 300);
        assert_eq!(h.len(), 300);
        assert!(h.ends_with(b"\r\n\r\n"));
    }

    /// Nothing listens: every poll of the window fails as a connect failure, none is
    /// counted answered, and those before the window count as warm-up failures.
    #[tokio::test(flavor = "current_thread")]
    async fn a_poller_counts_refused_connections_as_failed_polls() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let start = Instant::now();
        let period = Duration::from_millis(100);
        let schedule = Schedule {
            first: start,
            period,
            window_start: start + period * 2,
            end: start + period * 7,
        };
        let t = poller(addr, request(addr, "/t", "\"x\"").into(), schedule).await;
        // A loaded machine may skip a tick (counted late), never lose one.
        assert_eq!(t.sent + t.late, 5);
        assert!(t.sent >= 1);
        assert_eq!(t.answered, 0);
        assert_eq!(t.failed[Failure::Connect as usize], t.sent);
        assert_eq!(t.failures(), t.sent);
        assert!((1..=2).contains(&t.warmup_failed));
        assert!(t.first_failure.unwrap().starts_with("connect"));
    }

    /// A server that answers a 304, then a 200 with a body and `Connection: close`:
    /// the client reads both whole and sees the close.
    #[tokio::test(flavor = "current_thread")]
    async fn exchange_reads_whole_responses() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).await.unwrap();
            assert!(buf[..n].windows(14).any(|w| w == b"If-None-Match:"));
            s.write_all(b"HTTP/1.1 304 Not Modified\r\nETag: \"a\"\r\nContent-Length: 9\r\n\r\n")
                .await
                .unwrap();
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            s.write_all(&[7u8; 5000]).await.unwrap();
        });
        let mut c = Conn::connect(addr).await.unwrap();
        let req = request(addr, "/table.cgt", "\"a\"");
        let a = c.exchange(&req).await.unwrap();
        assert_eq!((a.status, a.body, a.close), (304, 0, false));
        let b = c.exchange(&req).await.unwrap();
        assert_eq!((b.status, b.body, b.close), (200, 5000, true));
        server.await.unwrap();
        // The server is gone: the next poll fails rather than hanging or passing.
        assert!(c.exchange(&req).await.is_err());
    }
}
