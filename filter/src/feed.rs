//! The live table feed: the root context polls `certgate serve` through an Envoy
//! cluster (`dispatch_http_call` with `If-None-Match`), and hands every new table to
//! [`Shared::install`], which validates it and swaps it in.
//!
//! Revocation sets of millions of entries cannot ride in a WasmPlugin's `pluginConfig`
//! (etcd caps a Kubernetes object near 1.5 MB), so this is how they reach Istio proxies.
//! Every worker VM polls on its own: its table is its own copy anyway.

use std::cell::{Cell, RefCell};

use crate::config::FeedConfig;
use crate::decide::Shared;
use crate::host::{Host, Level};
use crate::metrics::Metrics;

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

/// Poll state of one root context.
#[derive(Debug)]
pub struct Feed {
    config: FeedConfig,
    /// The ETag of the table in force, sent as `If-None-Match`.
    etag: RefCell<Option<String>>,
    /// The call in flight and when it was sent.
    in_flight: Cell<Option<(u32, u64)>>,
    next_poll_nanos: Cell<u64>,
    /// Whether the stale state was already logged (once per episode).
    stale_logged: Cell<bool>,
}

impl Feed {
    pub fn new(config: FeedConfig) -> Feed {
        Feed {
            config,
            etag: RefCell::new(None),
            in_flight: Cell::new(None),
            next_poll_nanos: Cell::new(0),
            stale_logged: Cell::new(false),
        }
    }

    /// The root context's tick period when only the feed needs ticks.
    pub fn tick_millis(&self) -> u64 {
        self.config.interval_millis
    }

    fn millis(ms: u64) -> u64 {
        ms.saturating_mul(1_000_000)
    }

    /// From the tick: polls when the interval has passed and no call is in flight.
    pub fn tick(&self, host: &dyn Host, shared: &Shared) {
        let now = host.now_nanos();
        self.log_staleness(host, shared, now);
        if let Some((_, sent)) = self.in_flight.get() {
            // Envoy always answers (at worst with its timeout); this only guards
            // against a lost callback wedging the feed forever.
            let limit = Self::millis(self.config.timeout_millis.saturating_add(1_000));
            if now.saturating_sub(sent) <= limit {
                return;
            }
            self.in_flight.set(None);
            self.fail(host, shared, "no answer");
        }
        if now < self.next_poll_nanos.get() {
            return;
        }
        self.next_poll_nanos
            .set(now.saturating_add(Self::millis(self.config.interval_millis)));
        let etag = self.etag.borrow().clone();
        let mut headers = vec![
            (":method", "GET"),
            (":path", self.config.path.as_str()),
            (":authority", self.config.authority.as_str()),
        ];
        if let Some(etag) = etag.as_deref() {
            headers.push(("if-none-match", etag));
        }
        match host.dispatch_http_call(&self.config.cluster, &headers, self.config.timeout_millis) {
            Some(token) => self.in_flight.set(Some((token, now))),
            None => self.fail(
                host,
                shared,
                "the host refused the call (is the cluster defined?)",
            ),
        }
    }

    fn log_staleness(&self, host: &dyn Host, shared: &Shared, now: u64) {
        let stale = shared.is_stale(now);
        if stale && !self.stale_logged.get() {
            let keep = shared
                .active()
                .is_some_and(|a| a.engine.table().revocation.on_stale() == ruleset::OnStale::Keep);
            host.log(
                Level::Warn,
                if keep {
                    "feed: no good table within maxStale; onStale keep: enforcing the last good table"
                } else {
                    "feed: no good table within maxStale; onStale deny: refusing new connections (stale_revocation)"
                },
            );
        }
        self.stale_logged.set(stale);
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
        match self.in_flight.get() {
            Some((t, _)) if t == token => self.in_flight.set(None),
            // A call already given up on: ignore it.
            _ => return,
        }
        // A failed call (reset) arrives without headers, and Envoy then answers a header
        // read with BadArgument, which proxy-wasm turns into a panic: do not read.
        let outcome = if num_headers == 0 {
            Err("no response (reset or timeout)".to_owned())
        } else {
            self.accept(host, shared, body_size)
        };
        if let Err(why) = outcome {
            self.fail(host, shared, &why);
        }
    }

    fn accept(&self, host: &dyn Host, shared: &Shared, body_size: usize) -> Result<(), String> {
        let status = host
            .http_call_response_header(":status")
            .ok_or("no response (timeout or connection failure)")?;
        match status.as_slice() {
            b"304" => {
                shared.confirm(host.now_nanos());
                Ok(())
            }
            b"200" => {
                if body_size > MAX_FEED_BYTES {
                    return Err(format!("table of {body_size} bytes is too large"));
                }
                let body = host.http_call_response_body(body_size).unwrap_or_default();
                shared
                    .install(host, body)
                    .map_err(|e| format!("table refused: {e}"))?;
                *self.etag.borrow_mut() = host
                    .http_call_response_header("etag")
                    .and_then(|e| String::from_utf8(e).ok())
                    .filter(|e| !e.is_empty());
                Ok(())
            }
            other => Err(format!("status {}", String::from_utf8_lossy(other))),
        }
    }
}
