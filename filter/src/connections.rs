//! The open connections the filter keeps track of, and closing them: network
//! connections paused for their handshake (`serverFirst`), admitted network connections
//! a newer fed table may close, and the verdicts remembered per HTTP connection.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use ruleset::{Engine, Peer};

use crate::host::{Host, Level};
use crate::metrics::Metrics;
use crate::peer;
use crate::verdict::Verdict;

/// HTTP verdicts remembered per connection id, newest first; an evicted connection is
/// decided again. Searched linearly: a few microseconds at most, and a map would cost
/// the module several kilobytes of hash table code.
const HTTP_VERDICTS: usize = 1024;

/// A connection waiting in `serverFirst` mode for its handshake to complete.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The stream context's view of its own state; the tick writes the outcome here.
    pub phase: Rc<Cell<Phase>>,
    /// When the connection was paused (monotonic nanoseconds).
    pub since_nanos: u64,
}

/// Where a network connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not decided yet.
    Waiting,
    /// Let through.
    Admitted,
    /// Closed.
    Denied,
}

/// An admitted network connection, kept so a newer table can close it.
#[derive(Debug)]
pub struct Live {
    pub phase: Rc<Cell<Phase>>,
    pub peer: Peer,
}

/// The registries of open connections of one VM.
#[derive(Debug)]
pub struct Connections {
    /// Whether admitted network connections are kept (only with a feed: nothing else
    /// changes the table while a connection is open).
    keep_live: bool,
    /// Connections paused in `on_new_connection` (serverFirst), by context id. Only
    /// connections inside their TLS handshake are here, so a list is enough.
    pending: RefCell<Vec<(u32, Pending)>>,
    /// Admitted network connections by context id.
    live: RefCell<Vec<(u32, Rc<Live>)>>,
    /// HTTP: one decision per connection and table generation, by `connection.id`,
    /// newest first.
    http_verdicts: RefCell<VecDeque<(u64, u64, Rc<Verdict>)>>,
}

impl Connections {
    /// Empty registries; `keep_live` when a feed may replace the table.
    pub fn new(keep_live: bool) -> Connections {
        Connections {
            keep_live,
            pending: RefCell::new(Vec::new()),
            live: RefCell::new(Vec::new()),
            http_verdicts: RefCell::new(VecDeque::new()),
        }
    }

    /// Remembers an admitted network connection (only with a feed).
    pub fn add_live(&self, context_id: u32, phase: Rc<Cell<Phase>>, peer: Peer) {
        if self.keep_live {
            self.live
                .borrow_mut()
                .push((context_id, Rc::new(Live { phase, peer })));
        }
    }

    /// Forgets a network connection.
    pub fn remove_live(&self, context_id: u32) {
        self.live.borrow_mut().retain(|(id, _)| *id != context_id);
    }

    /// Number of remembered open connections.
    pub fn live_count(&self) -> usize {
        self.live.borrow().len()
    }

    /// Starts polling `context_id` (serverFirst).
    pub fn add_pending(&self, context_id: u32, pending: Pending) {
        let mut list = self.pending.borrow_mut();
        list.retain(|(id, _)| *id != context_id);
        list.push((context_id, pending));
    }

    /// Stops polling `context_id`.
    pub fn remove_pending(&self, context_id: u32) {
        self.pending
            .borrow_mut()
            .retain(|(id, _)| *id != context_id);
    }

    /// The connections being polled, as a copy: deciding one changes the list.
    pub fn pending(&self) -> Vec<(u32, Pending)> {
        self.pending.borrow().clone()
    }

    /// Re-evaluates every admitted network connection with `engine` (a new table) and
    /// closes those it denies. HTTP connections are re-decided at their next request.
    pub fn close_denied(&self, host: &dyn Host, engine: &Engine, metrics: &Metrics) {
        let live: Vec<(u32, Rc<Live>)> = self.live.borrow().clone();
        for (id, conn) in live {
            let decision = engine.evaluate(&conn.peer);
            if conn.phase.get() != Phase::Admitted || decision.admits() {
                continue;
            }
            conn.phase.set(Phase::Denied);
            self.remove_live(id);
            Metrics::bump(host, metrics.closed_on_update);
            host.log(
                Level::Warn,
                &format!(
                    "closing open connection (context {id}, {}): the new table decides {}",
                    decision.identity.unwrap_or("no identity"),
                    decision.reason.code()
                ),
            );
            // From a root callback: act on the stream context (gone: nothing to close).
            if host.enter_context(id) {
                host.close_downstream();
            }
        }
    }

    /// The HTTP verdict for the current connection under table `generation`: the one
    /// remembered for it, or the one `decide` makes now (then remembered). Returns the
    /// verdict and whether it was decided just now.
    pub fn http_verdict(
        &self,
        host: &dyn Host,
        generation: u64,
        metrics: &Metrics,
        decide: impl FnOnce() -> Verdict,
    ) -> (Rc<Verdict>, bool) {
        let connection = peer::int_property(host, peer::CONNECTION_ID);
        let mut was_admitted = false;
        if let Some(id) = connection {
            let verdicts = self.http_verdicts.borrow();
            if let Some((_, g, v)) = verdicts.iter().find(|(c, _, _)| *c == id) {
                if *g == generation {
                    return (Rc::clone(v), false);
                }
                was_admitted = v.admit;
            }
        }
        let verdict = Rc::new(decide());
        if let Some(id) = connection {
            let mut verdicts = self.http_verdicts.borrow_mut();
            verdicts.retain(|(c, _, _)| *c != id);
            // A stale verdict holds for this request only: the next one is decided
            // again (a recovered feed confirms without a new generation).
            if !verdict.stale {
                verdicts.truncate(HTTP_VERDICTS.saturating_sub(1));
                verdicts.push_front((id, generation, Rc::clone(&verdict)));
            }
        }
        if was_admitted && !verdict.admit {
            // A newer table denies a connection an older one let in: this request
            // closes it (later ones, if any, get the ordinary refusal).
            Metrics::bump(host, metrics.closed_on_update);
            let mut closing = (*verdict).clone();
            closing.close = true;
            return (Rc::new(closing), true);
        }
        (verdict, true)
    }
}
