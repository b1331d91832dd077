//! The live table feed: the root context polls `certgate serve` through an Envoy
//! cluster (`dispatch_http_call` with `If-None-Match`), and hands every new table to
//! [`Shared::install`], which judges it (signature, lineage, expiry, rollback,
//! loosening) and swaps it in. Polls and their deadlines run on the monotonic clock.
//!
//! Revocation sets of millions of entries cannot ride in a WasmPlugin's `pluginConfig`
//! (etcd caps a Kubernetes object near 1.5 MB), so this is how they reach Istio proxies.
//! Every worker VM polls on its own: its table is its own copy anyway.
//!
//! Regular polls come every `interval`, less a jitter of up to [`JITTER_DIVISOR`]th of it
//! drawn per poll from a seed fixed per worker, so the workers of a fleet configured at the
//! same moment drift apart instead of reaching the server together. With `longPoll` each
//! poll asks to be held (`Prefer: wait=N`, RFC 7240) until a newer table is served; its
//! call timeout is `timeout` above N, and the next poll follows its answer at the next tick
//! (at most [`LONG_POLL_TICK_MILLIS`] later: a response callback may have left the
//! effective context on a connection it closed, so calls are only made from the tick). A long
//! poll that fails, is refused, or was not held by the server waits the regular interval
//! instead: never a hot loop. Every poll names its worker (`X-Certgate-Poller`) so the
//! server can tell which table each one holds.

use std::cell::{Cell, RefCell};

use crate::config::FeedConfig;
use crate::host::{Host, Level};
use crate::metrics::Metrics;
use crate::shared::Shared;
use crate::table::Installed;

/// Largest table accepted from the feed (the format's own limits are checked again by
/// the decoder): 64 MiB, about 8 million revoked serials.
///
/// Set from the VM memory measured under Envoy 1.40 (e2e `feed_table_memory_under_envoy`):
/// a VM holding a 1M-serial table (8,000,189 bytes) grew to 7.8 MiB of wasm memory, and
/// then took a 5M-serial table (40,000,189 bytes) at 47.0 MiB: a fed table costs its own
/// size (1.02-1.03 bytes per table byte), and while it is validated the table in force is
/// still held, and wasm memory never shrinks. So one VM can reach twice this limit,
/// 128 MiB, and an Envoy holds one VM per worker plus one on the main thread. Envoy's
/// own async HTTP client resets responses above `http.async_response_buffer_limit`
/// (32 MiB by default), so tables above 32 MiB also need that runtime key raised.
pub const MAX_FEED_BYTES: usize = 64 << 20;

/// The jitter of a regular poll is below `interval / JITTER_DIVISOR` (10 %).
pub const JITTER_DIVISOR: u64 = 10;
/// A long poll answered `304` sooner than this after it was sent was not held (a server
/// without long-poll, or one shutting down): the next poll waits the regular interval.
pub const MIN_HELD_MILLIS: u64 = 1_000;
/// The root context's tick period while long-polling: how soon the next long poll
/// follows an answer.
pub const LONG_POLL_TICK_MILLIS: u64 = 100;
/// The header naming the poller to the feed server.
pub const POLLER_HEADER: &str = "x-certgate-poller";

/// SplitMix64: a well-mixed 64-bit value from `x` (jitter and poller names only; nothing
/// here needs to be unpredictable).
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The wait before the `n`th regular poll of the worker seeded `seed`: `interval_ms` less
/// a jitter below `interval_ms / JITTER_DIVISOR`, so a poll never comes later than the
/// configured interval.
pub fn jittered_millis(interval_ms: u64, seed: u64, n: u64) -> u64 {
    let span = interval_ms / JITTER_DIVISOR;
    let jitter = mix(seed ^ mix(n)).checked_rem(span).unwrap_or(0);
    interval_ms.saturating_sub(jitter)
}

/// What a feed answer allows next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Poll again at once (long-poll: the answer was held, or brought a new table).
    Now,
    /// Wait the regular interval.
    Interval,
}

/// Poll state of one root context.
#[derive(Debug)]
pub struct Feed {
    config: FeedConfig,
    /// Fixed per worker: draws its jitter and names it to the server.
    seed: u64,
    /// `X-Certgate-Poller`: `<plugin>/<worker>`.
    poller: String,
    /// Regular polls sent, drawing each one's jitter.
    polls: Cell<u64>,
    /// The ETag of the table in force, sent as `If-None-Match`.
    etag: RefCell<Option<String>>,
    /// The call in flight: its token, when it was sent (monotonic) and whether it
    /// carried an ETag (only then does a `304` confirm anything).
    in_flight: Cell<Option<(u32, u64, bool)>>,
    next_poll_nanos: Cell<Option<u64>>,
    /// Why the last fed table was refused: each distinct reason is logged once per
    /// episode (until a good fetch), not at every poll that brings the table back.
    refused: RefCell<Option<String>>,
    /// Whether the bytes of the table in force are those its ETag names, so a delta
    /// from that ETag applies to them (`delta.rs`); cleared by a refused delta, so the
    /// next poll fetches the whole table.
    delta_base: Cell<bool>,
    /// Whether the call in flight asked for a delta (`A-IM`).
    asked_delta: Cell<bool>,
}

impl Feed {
    /// `seed` is fixed per worker VM (the root derives it from its context id and the
    /// time it was configured); `plugin` names the plugin to the server.
    pub fn new(config: FeedConfig, seed: u64, plugin: &str) -> Feed {
        let seed = mix(seed);
        Feed {
            poller: format!("{plugin}/{:016x}", seed),
            seed,
            polls: Cell::new(0),
            config,
            etag: RefCell::new(None),
            in_flight: Cell::new(None),
            next_poll_nanos: Cell::new(None),
            refused: RefCell::new(None),
            delta_base: Cell::new(false),
            asked_delta: Cell::new(false),
        }
    }

    /// The root context's tick period when only the feed needs ticks.
    pub fn tick_millis(&self) -> u64 {
        if self.config.long_poll_millis.is_some() {
            self.config.interval_millis.min(LONG_POLL_TICK_MILLIS)
        } else {
            self.config.interval_millis
        }
    }

    fn millis(ms: u64) -> u64 {
        ms.saturating_mul(1_000_000)
    }

    /// The timeout of one call: `timeout`, above the wait of a long poll.
    pub fn call_timeout_millis(&self) -> u64 {
        self.config
            .timeout_millis
            .saturating_add(self.config.long_poll_millis.unwrap_or(0))
    }

    /// The poller name sent to the server.
    pub fn poller(&self) -> &str {
        &self.poller
    }

    /// Schedules the next poll after the regular (jittered) interval from `now`.
    fn schedule_interval(&self, now: u64) {
        let n = self.polls.get();
        self.polls.set(n.wrapping_add(1));
        let wait = jittered_millis(self.config.interval_millis, self.seed, n);
        self.next_poll_nanos
            .set(Some(now.saturating_add(Self::millis(wait))));
    }

    /// From the tick: polls when the interval has passed and no call is in flight.
    pub fn tick(&self, host: &dyn Host, shared: &Shared) {
        let now = host.monotonic_nanos();
        if let Some((_, sent, _)) = self.in_flight.get() {
            // Envoy always answers (at worst with its timeout); this only guards
            // against a lost callback wedging the feed forever.
            let limit = Self::millis(self.call_timeout_millis().saturating_add(1_000));
            if now.saturating_sub(sent) <= limit {
                return;
            }
            self.in_flight.set(None);
            self.fail(host, shared, "no answer");
        }
        if self.next_poll_nanos.get().is_some_and(|next| now < next) {
            return;
        }
        self.poll(host, shared, now);
    }

    /// Sends a poll now (from the tick); the next one waits the interval unless its
    /// answer allows sooner.
    fn poll(&self, host: &dyn Host, shared: &Shared, now: u64) {
        self.schedule_interval(now);
        let etag = self.etag.borrow().clone();
        let wait = self
            .config
            .long_poll_millis
            .map(|ms| format!("wait={}", ms / 1_000));
        let mut headers = vec![
            (":method", "GET"),
            (":path", self.config.path.as_str()),
            (":authority", self.config.authority.as_str()),
            (POLLER_HEADER, self.poller.as_str()),
        ];
        if let Some(etag) = etag.as_deref() {
            headers.push(("if-none-match", etag));
            // Only a poll that names its table can be held: without one the server
            // answers with the table at once anyway.
            if let Some(wait) = wait.as_deref() {
                headers.push(("prefer", wait));
            }
        }
        let ask_delta = self.config.deltas && etag.is_some() && self.delta_base.get();
        if ask_delta {
            headers.push(("a-im", ruleset::delta::IM_NAME));
        }
        self.asked_delta.set(ask_delta);
        match host.dispatch_http_call(&self.config.cluster, &headers, self.call_timeout_millis()) {
            Some(token) => self.in_flight.set(Some((token, now, etag.is_some()))),
            None => self.fail(
                host,
                shared,
                "the host refused the call (is the cluster defined?)",
            ),
        }
    }

    fn fail(&self, host: &dyn Host, shared: &Shared, why: &str) {
        Metrics::bump(host, shared.metrics.feed_errors);
        host.log(
            Level::Warn,
            &format!(
                "feed: poll of {}{} failed: {why}; keeping the last good table",
                self.config.cluster, self.config.path
            ),
        );
    }

    /// An HTTP call response for `token` (the root context's `on_http_call_response`).
    pub fn response(
        &self,
        host: &dyn Host,
        shared: &Shared,
        token: u32,
        num_headers: usize,
        body_size: usize,
    ) {
        let (sent_at, sent_etag) = match self.in_flight.get() {
            Some((t, sent_at, sent_etag)) if t == token => {
                self.in_flight.set(None);
                (sent_at, sent_etag)
            }
            // A call already given up on: ignore it.
            _ => return,
        };
        // A failed call (reset) arrives without headers, and Envoy then answers a header
        // read with BadArgument, which proxy-wasm turns into a panic: do not read.
        let outcome = if num_headers == 0 {
            Err("no response (reset or timeout)".to_owned())
        } else {
            self.accept(host, shared, body_size, sent_etag)
        };
        match outcome {
            Ok(Next::Now) if self.config.long_poll_millis.is_some() => {
                let now = host.monotonic_nanos();
                // A `304` the server did not hold would make the next poll a hot loop.
                let held = now.saturating_sub(sent_at) >= Self::millis(MIN_HELD_MILLIS)
                    && host
                        .http_call_response_header("preference-applied")
                        .is_some();
                if held || !is_not_modified(host) {
                    self.next_poll_nanos.set(Some(now));
                }
            }
            Ok(_) => {}
            // The interval scheduled when the poll was sent stands: a failed long poll
            // backs off like a regular one.
            Err(why) => self.fail(host, shared, &why),
        }
    }

    fn accept(
        &self,
        host: &dyn Host,
        shared: &Shared,
        body_size: usize,
        sent_etag: bool,
    ) -> Result<Next, String> {
        let status = host
            .http_call_response_header(":status")
            .ok_or("no response (timeout or connection failure)")?;
        match status.as_slice() {
            // A `304` says "what you named is current"; to a poll that named nothing it
            // confirms nothing (a broken or hostile server must not keep a table fresh).
            b"304" if sent_etag => {
                shared.table.confirm(host.monotonic_nanos());
                *self.refused.borrow_mut() = None;
                Ok(Next::Now)
            }
            b"304" => {
                Err("304 Not Modified to a poll that sent no ETag (not a confirmation)".into())
            }
            b"200" => {
                if body_size > MAX_FEED_BYTES {
                    return Err(format!("table of {body_size} bytes is too large"));
                }
                let body = host.http_call_response_body(body_size).unwrap_or_default();
                Ok(self.take(host, shared, body))
            }
            b"226" if self.asked_delta.get() => {
                let etag = self.etag.borrow().clone().unwrap_or_default();
                match crate::delta::rebuild(host, shared, body_size, &etag, MAX_FEED_BYTES) {
                    Ok(bytes) => Ok(self.take(host, shared, bytes)),
                    Err(why) => {
                        // Fail closed: the table in force stays; the next poll asks for
                        // the whole table (it cannot be a delta again).
                        self.delta_base.set(false);
                        Metrics::bump(host, shared.metrics.feed_rejected_delta);
                        host.log(
                            Level::Warn,
                            &format!(
                                "feed: delta from {}{} refused: {why}; keeping the table in force, fetching the whole table next",
                                self.config.cluster, self.config.path
                            ),
                        );
                        Ok(Next::Now)
                    }
                }
            }
            other => Err(format!("status {}", String::from_utf8_lossy(other))),
        }
    }

    /// Hands a fetched (or rebuilt) table to the install path, keeps its ETag if it is
    /// good, and says when to poll next.
    fn take(&self, host: &dyn Host, shared: &Shared, body: Vec<u8>) -> Next {
        // After a confirmation the table in force may be other bytes (an inline table
        // signed differently): deltas only from bytes that are the ETag's.
        let same_bytes = shared
            .table
            .active()
            .is_some_and(|a| a.engine.table().revocation.table_bytes() == Some(body.as_slice()));
        match shared.install(host, body) {
            Ok(outcome) => {
                self.delta_base.set(outcome == Installed::New || same_bytes);
                if outcome == Installed::Unchanged {
                    shared.table.confirm(host.monotonic_nanos());
                }
                *self.refused.borrow_mut() = None;
                *self.etag.borrow_mut() = host
                    .http_call_response_header("etag")
                    .and_then(|e| String::from_utf8(e).ok())
                    .filter(|e| !e.is_empty());
                // Without an ETag the next poll cannot be held: it would bring the table
                // straight back.
                if self.etag.borrow().is_some() {
                    Next::Now
                } else {
                    Next::Interval
                }
            }
            Err(refusal) => {
                // Not a transport failure: counted by why, logged once per reason until a
                // good fetch; the ETag stays that of the table in force, so the refused
                // table keeps coming back (and counted), whole: a refused table may have
                // come from a delta.
                self.delta_base.set(false);
                Metrics::bump(host, refusal.counter(&shared.metrics));
                let why = refusal.to_string();
                if self.refused.borrow().as_deref() != Some(why.as_str()) {
                    host.log(
                        Level::Warn,
                        &format!(
                            "feed: table from {}{} refused ({}): {refusal}; keeping the table in force",
                            self.config.cluster,
                            self.config.path,
                            refusal.kind()
                        ),
                    );
                    *self.refused.borrow_mut() = Some(why);
                }
                // The refused table would come straight back: wait the interval.
                Next::Interval
            }
        }
    }
}

/// Whether the response being read is a `304`.
fn is_not_modified(host: &dyn Host) -> bool {
    host.http_call_response_header(":status")
        .is_some_and(|s| s.as_slice() == b"304")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_is_below_a_tenth_never_later_and_spreads_workers() {
        let interval = 5_000;
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..200u64 {
            let first = jittered_millis(interval, mix(seed), 0);
            assert!((4_501..=5_000).contains(&first), "{first}");
            // Deterministic per worker and poll.
            assert_eq!(first, jittered_millis(interval, mix(seed), 0));
            seen.insert(first);
            for n in 1..20 {
                let w = jittered_millis(interval, mix(seed), n);
                assert!((4_501..=5_000).contains(&w), "{w}");
            }
        }
        // 200 workers configured together land on many distinct first polls.
        assert!(seen.len() > 150, "{}", seen.len());
        // Too short an interval to jitter: the interval itself.
        assert_eq!(jittered_millis(9, 1, 1), 9);
    }
}
