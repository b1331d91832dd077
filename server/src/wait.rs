//! Long-poll (RFC 7240 `Prefer: wait=N`): a poll whose `If-None-Match` names the table
//! served is held until a newer table is served or N seconds pass, so a revocation
//! reaches every poller as soon as the scan notices it instead of at its next interval.
//!
//! Every held poll waits on one [`Tables`] watch: the scanner bumps it after it publishes
//! a table, which wakes all of them at once (no per-poller timer wheel to walk). A held
//! poll costs its connection (bounded by the connection limit, like any other) and one
//! timer; it is not a request head being read, so the header timeout does not apply, and
//! [`Tables::stop`] answers all of them at once when the server shuts down.

use std::time::Duration;

use hyper::header::HeaderMap;
use tokio::sync::watch;

/// The longest wait a poll may ask for; longer requests are held this long (and
/// `Preference-Applied` says so).
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// The request header asking to be held (RFC 7240).
pub const PREFER: &str = "prefer";
/// The response header saying how long the server held the poll at most.
pub const PREFERENCE_APPLIED: &str = "preference-applied";

/// The wait a request asks for with `Prefer: wait=N`, capped at [`MAX_WAIT`]; `None` when
/// it asks for none (absent, malformed or zero: the poll is answered at once).
pub fn preferred_wait(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get_all(PREFER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        // RFC 7240: preferences are separated by `,`, their parameters by `;`.
        .flat_map(|v| v.split(','))
        .filter_map(|pref| {
            let token = pref.split(';').next()?.trim();
            let (name, value) = token.split_once('=')?;
            if !name.trim().eq_ignore_ascii_case("wait") {
                return None;
            }
            let secs: u64 = value.trim().trim_matches('"').parse().ok()?;
            Some(Duration::from_secs(secs).min(MAX_WAIT))
        })
        .next()
        .filter(|d| !d.is_zero())
}

/// Why a held poll ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woken {
    /// A table was published since the poll was held.
    Published,
    /// The wait asked for passed.
    TimedOut,
    /// The server is shutting down.
    Stopping,
}

/// The wake-up board of held polls: a generation bumped at every published table, and a
/// stop flag set at shutdown.
#[derive(Debug)]
pub struct Tables {
    generation: watch::Sender<u64>,
    stopping: watch::Sender<bool>,
}

impl Default for Tables {
    fn default() -> Tables {
        Tables {
            generation: watch::Sender::new(0),
            stopping: watch::Sender::new(false),
        }
    }
}

/// A poll's view of the board, taken before it looked at the table served so that a
/// table published in between still wakes it.
#[derive(Debug)]
pub struct Ticket {
    generation: watch::Receiver<u64>,
    stopping: watch::Receiver<bool>,
}

impl Tables {
    /// Wakes every held poll: a new table is served.
    pub fn published(&self) {
        // `send_modify` updates the value even when no poll is held (`send` would not).
        self.generation.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Answers every held poll, and every poll held from now on, at once.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Call before reading the table served.
    pub fn ticket(&self) -> Ticket {
        let mut generation = self.generation.subscribe();
        generation.borrow_and_update();
        Ticket {
            generation,
            stopping: self.stopping.subscribe(),
        }
    }

    /// Held polls waiting now (for `/status`).
    pub fn held(&self) -> usize {
        self.generation.receiver_count()
    }
}

impl Ticket {
    /// Waits until a table is published after the ticket was taken, `wait` passes or the
    /// server stops.
    pub async fn hold(&mut self, wait: Duration) -> Woken {
        if *self.stopping.borrow_and_update() {
            return Woken::Stopping;
        }
        tokio::select! {
            changed = self.generation.changed() => match changed {
                Ok(()) => Woken::Published,
                // The board is gone: the server is going away.
                Err(_) => Woken::Stopping,
            },
            () = tokio::time::sleep(wait) => Woken::TimedOut,
            _ = self.stopping.wait_for(|s| *s) => Woken::Stopping,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;
    use std::sync::Arc;

    fn prefer(values: &[&str]) -> Option<Duration> {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(PREFER, HeaderValue::from_str(v).unwrap());
        }
        preferred_wait(&h)
    }

    #[test]
    fn prefer_wait_is_parsed_and_capped() {
        assert_eq!(prefer(&["wait=10"]), Some(Duration::from_secs(10)));
        assert_eq!(prefer(&["WAIT = 5"]), Some(Duration::from_secs(5)));
        assert_eq!(
            prefer(&["respond-async, wait=7"]),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            prefer(&["return=minimal", "wait=3"]),
            Some(Duration::from_secs(3))
        );
        assert_eq!(prefer(&["wait=3600"]), Some(MAX_WAIT));
        assert_eq!(prefer(&["wait=99999999999999999999999"]), None);
        for none in [
            "",
            "wait",
            "wait=",
            "wait=-1",
            "wait=1.5",
            "wait=0",
            "waiting=3",
        ] {
            assert_eq!(prefer(&[none]), None, "{none}");
        }
        assert_eq!(prefer(&[]), None);
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    #[test]
    fn a_published_table_wakes_every_held_poll_at_once() {
        runtime().block_on(async {
            let tables = Arc::new(Tables::default());
            let mut handles = Vec::new();
            for _ in 0..100 {
                let mut ticket = tables.ticket();
                handles.push(tokio::spawn(async move {
                    ticket.hold(Duration::from_secs(30)).await
                }));
            }
            tokio::task::yield_now().await;
            assert_eq!(tables.held(), 100);
            let before = tokio::time::Instant::now();
            tables.published();
            for h in handles {
                assert_eq!(h.await.unwrap(), Woken::Published);
            }
            // Woken by the table, not by the clock.
            assert!(before.elapsed() < Duration::from_secs(29));
            assert_eq!(tables.held(), 0);
        });
    }

    #[test]
    fn a_table_published_before_the_hold_still_wakes_it() {
        runtime().block_on(async {
            let tables = Tables::default();
            let mut ticket = tables.ticket();
            // Published between the ticket and the hold (while the poll read the table).
            tables.published();
            assert_eq!(ticket.hold(MAX_WAIT).await, Woken::Published);
        });
    }

    #[test]
    fn the_wait_ends_a_held_poll_and_shutdown_ends_them_all() {
        runtime().block_on(async {
            let tables = Tables::default();
            let start = tokio::time::Instant::now();
            assert_eq!(
                tables.ticket().hold(Duration::from_millis(50)).await,
                Woken::TimedOut
            );
            assert!(start.elapsed() >= Duration::from_millis(50));
            let tables = Arc::new(tables);
            let mut ticket = tables.ticket();
            let held = tokio::spawn(async move { ticket.hold(MAX_WAIT).await });
            tokio::task::yield_now().await;
            let stopped_at = tokio::time::Instant::now();
            tables.stop();
            assert_eq!(held.await.unwrap(), Woken::Stopping);
            assert!(stopped_at.elapsed() < Duration::from_secs(59));
            // A poll arriving during shutdown is not held at all.
            assert_eq!(tables.ticket().hold(MAX_WAIT).await, Woken::Stopping);
        });
    }
}
