//! One decision for one connection: gather the peer, evaluate, count, record, log.
//! Shared by the network and the HTTP front ends so both act the same.
//!
//! [`Shared`] is the per-VM state the root context builds in `on_configure` and hands
//! to every stream context through an `Rc`; it holds the table in force, which a live
//! feed may replace (see `feed.rs`), and the open connections a newer table may close.

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use ruleset::{Action, AuditLog, Decision, Engine, Mode, OnStale, Peer, PeerCert, Reason, Table};

use crate::audit;
use crate::cache::CertCache;
use crate::config::{Config, ConfigError};
use crate::host::{Host, Level};
use crate::json;
use crate::metrics::Metrics;
use crate::peer;

/// HTTP verdicts remembered per connection id, newest first; an evicted connection is
/// decided again. Searched linearly: a few microseconds at most, and a map would cost
/// the module several kilobytes of hash table code.
const HTTP_VERDICTS: usize = 1024;

/// A connection waiting in `serverFirst` mode for its handshake to complete.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The stream context's view of its own state; the tick writes the outcome here.
    pub phase: Rc<Cell<Phase>>,
    /// When the connection was paused (host nanoseconds).
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

/// What the front end must do, and the id it may show to a refused client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Let the connection (request) through.
    pub admit: bool,
    /// Unique decision id (also in the audit record and the warn log line); empty for
    /// an admitted connection without a record, where nothing would show it.
    pub decision_id: String,
    /// The audit record, when `audit.log` asked for one.
    pub record: Option<String>,
    /// HTTP: a newer table denies a connection an older one admitted; close it.
    pub close: bool,
}

/// The table being enforced, swapped as a whole when the feed delivers a newer one.
#[derive(Debug)]
pub struct Active {
    pub engine: Engine,
    pub policy_digest: String,
    /// The connection attributes this table decides with.
    pub needs: peer::Needs,
}

/// The decision for one certificate under one table generation, kept in the
/// certificate's cache entry. Only made while the table decides on the certificate
/// alone (its [`peer::Needs`] are none): then every connection that presents the
/// certificate gets this decision, and a warm connection skips evaluation (the
/// revocation lookups and the rule index) and rebuilds none of the record's
/// certificate members.
#[derive(Debug)]
pub struct Memo {
    generation: u64,
    action: Action,
    reason: Reason,
    mode: Mode,
    rule: Option<Box<str>>,
    policy: Option<Box<str>>,
    identity: Option<Box<str>>,
    /// [`audit::head`] of the decision, built at the first record that needs it.
    record_head: OnceCell<String>,
}

impl Memo {
    fn new(generation: u64, decision: &Decision<'_>) -> Memo {
        Memo {
            generation,
            action: decision.action,
            reason: decision.reason,
            mode: decision.mode,
            rule: decision.rule.map(Box::from),
            policy: decision.policy.map(Box::from),
            identity: decision.identity.map(Box::from),
            record_head: OnceCell::new(),
        }
    }

    /// The table generation this decision holds for.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn decision(&self) -> Decision<'_> {
        Decision {
            action: self.action,
            reason: self.reason,
            rule: self.rule.as_deref(),
            policy: self.policy.as_deref(),
            mode: self.mode,
            identity: self.identity.as_deref(),
        }
    }
}

/// An admitted network connection, kept so a newer table can close it.
#[derive(Debug)]
pub struct Live {
    pub phase: Rc<Cell<Phase>>,
    pub peer: Peer,
}

/// Per-VM state: the table, the options and the caches.
#[derive(Debug)]
pub struct Shared {
    /// `None` only with a feed and no inline table, until the first good fetch.
    active: RefCell<Option<Rc<Active>>>,
    mode_override: Option<Mode>,
    audit_override: Option<AuditLog>,
    pub server_first: bool,
    pub log_all: bool,
    /// Whether Envoy logs this plugin's debug lines, as of the last tick.
    debug_log: Cell<bool>,
    pub metrics: Metrics,
    pub certs: RefCell<CertCache>,
    /// Connections paused in `on_new_connection` (serverFirst), by context id. Only
    /// connections inside their TLS handshake are here, so a list is enough.
    pub pending: RefCell<Vec<(u32, Pending)>>,
    /// Admitted network connections by context id (only with a feed: nothing else
    /// changes the table while a connection is open).
    live: RefCell<Vec<(u32, Rc<Live>)>>,
    /// HTTP: one decision per connection and table generation, by `connection.id`,
    /// newest first.
    http_verdicts: RefCell<VecDeque<(u64, u64, Rc<Verdict>)>>,
    decisions: Cell<u64>,
    /// Bumped at every swap.
    generation: Cell<u64>,
    /// With a feed: when a good table was last confirmed, and how long that holds.
    last_good_nanos: Cell<u64>,
    max_stale_nanos: Option<u64>,
    /// Whether the proxy's lack of `connection.peer_certificate` was logged (once per VM).
    told_no_pem: Cell<bool>,
}

/// The first Envoy release with `connection.peer_certificate`, which full checks need.
pub const FULL_CHECKS_SINCE: &str = "1.38";

impl Shared {
    /// Builds the per-VM state from validated configuration, defining the counters.
    pub fn new(mut config: Config, host: &dyn Host) -> Result<Shared, ConfigError> {
        let mut shared = Shared {
            active: RefCell::new(None),
            mode_override: config.mode,
            audit_override: config.audit_log,
            server_first: config.server_first,
            log_all: config.log_all_decisions,
            debug_log: Cell::new(host.log_enabled(Level::Debug)),
            metrics: Metrics::define(host),
            certs: RefCell::new(CertCache::new(config.cert_cache_size)),
            pending: RefCell::new(Vec::new()),
            live: RefCell::new(Vec::new()),
            http_verdicts: RefCell::new(VecDeque::new()),
            decisions: Cell::new(0),
            generation: Cell::new(0),
            last_good_nanos: Cell::new(host.now_nanos()),
            max_stale_nanos: config
                .feed
                .as_ref()
                .map(|f| f.max_stale_millis.saturating_mul(1_000_000)),
            told_no_pem: Cell::new(false),
        };
        if config.feed.is_none() || !config.table.is_empty() {
            // The table keeps the configuration's decoded bytes: no second copy.
            let table = ruleset::decode_owned(std::mem::take(&mut config.table))
                .map_err(|e| ConfigError::BadTable(e.to_string()))?;
            shared.active = RefCell::new(Some(Rc::new(shared.activate(table))));
        }
        Ok(shared)
    }

    fn activate(&self, mut table: Table) -> Active {
        if let Some(mode) = self.mode_override {
            table.mode = mode;
        }
        if let Some(log) = self.audit_override {
            table.audit_log = log;
        }
        Active {
            policy_digest: ruleset::cert::hex_lower(&table.policy_digest),
            needs: peer::Needs::of(&table),
            engine: Engine::new(table),
        }
    }

    /// The table in force (`None`: a feed that has not delivered yet).
    pub fn active(&self) -> Option<Rc<Active>> {
        self.active.borrow().clone()
    }

    /// Reads Envoy's log level for this plugin (from the root context's tick).
    pub fn read_log_level(&self, host: &dyn Host) {
        self.debug_log.set(host.log_enabled(Level::Debug));
    }

    /// Whether the feed has gone without a good fetch for longer than `maxStale`.
    pub fn is_stale(&self, now: u64) -> bool {
        self.max_stale_nanos
            .is_some_and(|max| now.saturating_sub(self.last_good_nanos.get()) > max)
    }

    /// The feed confirmed the table in force (`304 Not Modified`).
    pub fn confirm(&self, now: u64) {
        self.last_good_nanos.set(now);
    }

    /// Validates a table the feed delivered (magic, version, checksum, same policy
    /// lineage) and swaps it in for every new decision, then closes open connections
    /// the new table denies. On error nothing changes.
    pub fn install(&self, host: &dyn Host, bytes: Vec<u8>) -> Result<(), String> {
        let table = ruleset::decode_owned(bytes).map_err(|e| e.to_string())?;
        if let Some(current) = self.active() {
            let names = &current.engine.table().policy_names;
            // Lineage: the same policies, so a feed for another service's table (or a
            // misrouted one) can never replace this one.
            if *names != table.policy_names {
                return Err(format!(
                    "table is for policies [{}], not [{}] (another lineage)",
                    table.policy_names.join(", "),
                    names.join(", ")
                ));
            }
        }
        let active = Rc::new(self.activate(table));
        host.log(
            Level::Info,
            &format!(
                "feed: new table in force (policy {}, {} revoked serials)",
                active.policy_digest,
                active.engine.table().revocation.serial_count()
            ),
        );
        *self.active.borrow_mut() = Some(Rc::clone(&active));
        self.generation.set(self.generation.get().wrapping_add(1));
        self.confirm(host.now_nanos());
        Metrics::bump(host, self.metrics.feed_updates);
        self.close_denied(host, &active);
        Ok(())
    }

    /// Re-evaluates every admitted network connection against `active` and closes
    /// those it denies. HTTP connections are re-decided at their next request.
    fn close_denied(&self, host: &dyn Host, active: &Active) {
        let live: Vec<(u32, Rc<Live>)> = self.live.borrow().clone();
        for (id, conn) in live {
            let decision = active.engine.evaluate(&conn.peer);
            if conn.phase.get() != Phase::Admitted || decision.admits() {
                continue;
            }
            conn.phase.set(Phase::Denied);
            self.remove_live(id);
            Metrics::bump(host, self.metrics.closed_on_update);
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

    /// The one log line at the first connection whose certificate the proxy verified
    /// but did not hand over: which attribute is missing, the release that has it, and
    /// what this table does without it.
    fn tell_no_pem(&self, host: &dyn Host, active: Option<&Active>) {
        let consequence = match active {
            Some(a) if a.engine.decides_without_certificate() => {
                "this table needs only the identity, so certgate decides with \
                 connection.uri_san_peer_certificate (first URI SAN only), \
                 connection.sha256_peer_certificate_digest and \
                 connection.subject_peer_certificate"
            }
            _ => {
                "this table needs the certificate (revocation by serial, key, \
                 signature or lifetime rules), so connections with a certificate are \
                 denied as peer_certificate_unavailable"
            }
        };
        host.log(
            Level::Warn,
            &format!(
                "this proxy does not provide connection.peer_certificate (Envoy \
                 {FULL_CHECKS_SINCE} or later does; full certificate checks need it): \
                 {consequence}"
            ),
        );
    }

    /// Decides for the connection of the current (or entered) context.
    pub fn decide(&self, host: &dyn Host) -> Verdict {
        self.decide_peer(host).0
    }

    /// [`Shared::decide`], also returning the peer it decided for.
    pub fn decide_peer(&self, host: &dyn Host) -> (Verdict, Peer) {
        let active = self.active();
        // With a feed, admitted connections are kept and re-decided by later tables,
        // which may look at other attributes: read them all then.
        let needs = match active.as_deref() {
            Some(a) if self.max_stale_nanos.is_none() && !self.log_all => a.needs,
            _ => peer::Needs::ALL,
        };
        let (peer, known) = peer::gather(host, &self.certs, needs);
        if matches!(peer.cert, PeerCert::Vouched(_)) && !self.told_no_pem.replace(true) {
            self.tell_no_pem(host, active.as_deref());
        }
        // The clock is a host call too: read it when the feed's staleness needs it.
        let stale_now = self.max_stale_nanos.map(|_| host.now_nanos());
        let in_force = active.as_deref().filter(|a| {
            !stale_now.is_some_and(|now| self.is_stale(now))
                || a.engine.table().revocation.on_stale() == OnStale::Keep
        });
        let memo = match (in_force, &known) {
            (Some(a), Some(known)) if a.needs == peer::Needs::NONE => {
                let generation = self.generation.get();
                Some(known.memo(generation, || {
                    Memo::new(generation, &a.engine.evaluate(&peer))
                }))
            }
            _ => None,
        };
        let decision = match (&memo, in_force) {
            (Some(memo), _) => memo.decision(),
            (None, Some(a)) => a.engine.evaluate(&peer),
            (None, None) => Decision {
                action: Action::Deny,
                reason: Reason::StaleRevocation,
                rule: None,
                policy: None,
                mode: active
                    .as_deref()
                    .map_or(self.mode_override.unwrap_or(Mode::Enforce), |a| {
                        a.engine.table().mode
                    }),
                identity: None,
            },
        };
        let admit = decision.admits();
        self.metrics.count(host, &decision);

        let audit_log = active
            .as_deref()
            .map_or(self.audit_override.unwrap_or(AuditLog::Deny), |a| {
                a.engine.table().audit_log
            });
        let wanted = audit::wanted(audit_log, &decision);
        // Deny records go to the Envoy log at warn; every other decision at info with
        // `logAllDecisions`, else at debug (built only when debug is on: it costs; the
        // level is read at each tick, not here, which would be a host call per decision).
        let log_level = if wanted && decision.action == Action::Deny {
            Some(Level::Warn)
        } else if self.log_all {
            Some(Level::Info)
        } else if self.debug_log.get() {
            Some(Level::Debug)
        } else {
            None
        };
        // The decision id names a record and a refusal (the HTTP 403 carries it); an
        // admitted connection without a record needs none, so the connection id is not
        // read and nothing is formatted on that, the most common, path.
        let decision_id = if wanted || log_level.is_some() || !admit {
            let seq = self.decisions.get().wrapping_add(1);
            self.decisions.set(seq);
            let connection = peer::int_property(host, peer::CONNECTION_ID).unwrap_or(0);
            let now = stale_now.unwrap_or_else(|| host.now_nanos());
            // Time first so ids sort by time across workers; the connection id and a
            // per-VM sequence keep them unique within one Envoy process.
            decision_id(now, connection, seq)
        } else {
            String::new()
        };
        let text = (wanted || log_level.is_some()).then(|| {
            // The record shows every connection attribute, not only those decided with.
            let mut full = peer.clone();
            peer::complete(host, &mut full, peer::Needs::ALL);
            let ctx = audit::Context {
                policy_digest: active.as_deref().map_or("", |a| &a.policy_digest),
                decision_id: &decision_id,
            };
            let head = match &memo {
                Some(memo) => json::ObjectWriter::resume(
                    memo.record_head
                        .get_or_init(|| audit::head(&decision, &peer.cert).unfinished()),
                ),
                None => audit::head(&decision, &peer.cert),
            };
            audit::finish(head, &full, decision.mode, ctx)
        });
        if let Some(text) = &text {
            if wanted {
                host.set_property(&[audit::FILTER_STATE_KEY], text.as_bytes());
            }
            if let Some(level) = log_level {
                host.log(level, text);
            }
        }
        let verdict = Verdict {
            admit,
            decision_id,
            record: text.filter(|_| wanted),
            close: false,
        };
        (verdict, peer)
    }

    /// The HTTP verdict for `connection`, deciding once per connection and table.
    /// Returns the verdict and whether it was decided just now.
    pub fn http_verdict(&self, host: &dyn Host) -> (Rc<Verdict>, bool) {
        let connection = peer::int_property(host, peer::CONNECTION_ID);
        let generation = self.generation.get();
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
        let verdict = Rc::new(self.decide(host));
        if let Some(id) = connection {
            let mut verdicts = self.http_verdicts.borrow_mut();
            verdicts.retain(|(c, _, _)| *c != id);
            verdicts.truncate(HTTP_VERDICTS.saturating_sub(1));
            verdicts.push_front((id, generation, Rc::clone(&verdict)));
        }
        if was_admitted && !verdict.admit {
            // A newer table denies a connection an older one let in: this request
            // closes it (later ones, if any, get the ordinary refusal).
            Metrics::bump(host, self.metrics.closed_on_update);
            let mut closing = (*verdict).clone();
            closing.close = true;
            return (Rc::new(closing), true);
        }
        (verdict, true)
    }

    /// Remembers an admitted network connection (only with a feed).
    pub fn add_live(&self, context_id: u32, phase: Rc<Cell<Phase>>, peer: Peer) {
        if self.max_stale_nanos.is_some() {
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

    /// Whether the table (after overrides) is in audit mode.
    pub fn audit_mode(&self) -> bool {
        self.active()
            .map_or(self.mode_override, |a| Some(a.engine.table().mode))
            == Some(Mode::Audit)
    }
}

/// `{now:x}-{connection:x}-{seq:x}`, without the formatting machinery (slow in wasm).
fn decision_id(now: u64, connection: u64, seq: u64) -> String {
    let mut id = String::with_capacity(50);
    for (i, n) in [now, connection, seq].into_iter().enumerate() {
        if i > 0 {
            id.push('-');
        }
        crate::json::push_hex(&mut id, n);
    }
    id
}

#[cfg(test)]
mod decision_id_tests {
    #[test]
    fn decision_ids_are_lowercase_hex_triples() {
        for (now, connection, seq) in [
            (0, 0, 0),
            (0x18bc_1d2e_3f4a_5b6c, 31, 42),
            (u64::MAX, 1, 0x10),
        ] {
            assert_eq!(
                super::decision_id(now, connection, seq),
                format!("{now:x}-{connection:x}-{seq:x}")
            );
        }
    }
}
