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
    /// Refused because the revocation data is stale: true of this moment, not of the
    /// connection, so the HTTP front end must not remember it (a recovered feed, which
    /// a `304` confirms without a new table generation, must let the next request in).
    pub stale: bool,
}

/// The two clocks, read together for one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clocks {
    /// Wall clock, Unix nanoseconds (what a table's expiry is written in).
    pub wall: u64,
    /// Monotonic nanoseconds (intervals: polls, `maxStale`, time since install).
    pub mono: u64,
}

impl Clocks {
    pub fn read(host: &dyn Host) -> Clocks {
        Clocks {
            wall: host.now_nanos(),
            mono: host.monotonic_nanos(),
        }
    }
}

const NANOS_PER_MILLI: u64 = 1_000_000;

/// A table's expiry, with the clocks at install so a wall clock stepped back cannot
/// hide it: past it when the wall clock says so, or when more monotonic time has gone
/// by since install than the wall clock then said was left.
#[derive(Debug, Clone, Copy)]
struct Expiry {
    at_ms: u64,
    installed: Clocks,
}

impl Expiry {
    fn passed(&self, now: Clocks) -> bool {
        let left_at_install_ms = self
            .at_ms
            .saturating_sub(self.installed.wall / NANOS_PER_MILLI);
        now.wall / NANOS_PER_MILLI >= self.at_ms
            || now.mono.saturating_sub(self.installed.mono)
                >= left_at_install_ms.saturating_mul(NANOS_PER_MILLI)
    }
}

/// The settings a fed table may not loosen, as the table has them (before the
/// configuration's overrides).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Strictness {
    pub mode: Mode,
    pub default_action: Action,
    pub on_stale: OnStale,
    pub audit_log: AuditLog,
}

impl Strictness {
    fn of(t: &Table) -> Strictness {
        Strictness {
            mode: t.mode,
            default_action: t.default_action,
            on_stale: t.revocation.on_stale(),
            audit_log: t.audit_log,
        }
    }

    /// What `new` loosens compared with `self`, by setting name.
    fn loosened_by(&self, new: &Strictness) -> Vec<&'static str> {
        let records = |l: AuditLog| match l {
            AuditLog::All => 2u8,
            AuditLog::Deny => 1,
            AuditLog::None => 0,
        };
        let mut out = Vec::new();
        if self.mode == Mode::Enforce && new.mode == Mode::Audit {
            out.push("mode enforce -> audit");
        }
        if self.default_action == Action::Deny && new.default_action == Action::Allow {
            out.push("defaultAction deny -> allow");
        }
        if self.on_stale == OnStale::Deny && new.on_stale == OnStale::Keep {
            out.push("onStale deny -> keep");
        }
        if records(new.audit_log) < records(self.audit_log) {
            out.push("audit.log records fewer decisions");
        }
        out
    }
}

/// Why a fed table was refused; each kind has its own counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Signature(String),
    Invalid(String),
    Lineage(String),
    Expired(String),
    Rollback(String),
    Loosening(String),
}

impl Refusal {
    /// A short stable name, for "log once per distinct reason".
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::Signature(_) => "signature",
            Refusal::Invalid(_) => "invalid",
            Refusal::Lineage(_) => "lineage",
            Refusal::Expired(_) => "expired",
            Refusal::Rollback(_) => "rollback",
            Refusal::Loosening(_) => "loosening",
        }
    }

    pub fn counter(&self, m: &Metrics) -> Option<u32> {
        match self {
            Refusal::Signature(_) => m.feed_rejected_signature,
            Refusal::Invalid(_) => m.feed_rejected_invalid,
            Refusal::Lineage(_) => m.feed_rejected_lineage,
            Refusal::Expired(_) => m.feed_rejected_expired,
            Refusal::Rollback(_) => m.feed_rejected_rollback,
            Refusal::Loosening(_) => m.feed_rejected_loosening,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Signature(m)
            | Refusal::Invalid(m)
            | Refusal::Lineage(m)
            | Refusal::Expired(m)
            | Refusal::Rollback(m)
            | Refusal::Loosening(m) => f.write_str(m),
        }
    }
}

/// What a good fed table did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    /// A newer table is in force.
    New,
    /// The table in force itself (same issue time and digest): a confirmation.
    Unchanged,
}

/// How fed tables are judged: the feed's trust settings.
#[derive(Debug, Clone)]
struct Trust {
    public_keys: Vec<[u8; 32]>,
    lineage: Option<Vec<String>>,
    allow_unsigned: bool,
    allow_loosening: bool,
}

/// What `install` judges by without a feed configuration: no key, no lineage, nothing
/// allowed (install is only reached with a feed).
static NO_TRUST: Trust = Trust {
    public_keys: Vec::new(),
    lineage: None,
    allow_unsigned: false,
    allow_loosening: false,
};

/// The table being enforced, swapped as a whole when the feed delivers a newer one.
#[derive(Debug)]
pub struct Active {
    pub engine: Engine,
    pub policy_digest: String,
    /// The connection attributes this table decides with.
    pub needs: peer::Needs,
    /// The table's own settings, before overrides (what a fed table may not loosen).
    pub strictness: Strictness,
    expiry: Option<Expiry>,
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
    /// With a feed: when (monotonic) a good table was last confirmed, and how long
    /// that holds.
    last_good_mono: Cell<u64>,
    max_stale_nanos: Option<u64>,
    /// Whether the proxy's lack of `connection.peer_certificate` was logged (once per VM).
    told_no_pem: Cell<bool>,
    /// With a feed: what a fed table must satisfy.
    trust: Option<Trust>,
    /// Whether the stale state was already logged (once per episode).
    stale_logged: Cell<bool>,
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
            last_good_mono: Cell::new(host.monotonic_nanos()),
            max_stale_nanos: config
                .feed
                .as_ref()
                .map(|f| f.max_stale_millis.saturating_mul(NANOS_PER_MILLI)),
            trust: config.feed.as_ref().map(|f| Trust {
                public_keys: f.public_keys.clone(),
                lineage: f.lineage.clone(),
                allow_unsigned: f.allow_unsigned,
                allow_loosening: f.allow_loosening,
            }),
            stale_logged: Cell::new(false),
            told_no_pem: Cell::new(false),
        };
        if config.feed.is_none() || !config.table.is_empty() {
            // The table keeps the configuration's decoded bytes: no second copy.
            let table = ruleset::decode_owned(std::mem::take(&mut config.table))
                .map_err(|e| ConfigError::BadTable(e.to_string()))?;
            if let Some(lineage) = shared.trust.as_ref().and_then(|t| t.lineage.as_ref()) {
                if *lineage != table.policy_names {
                    return Err(ConfigError::BadValue {
                        key: "feed.lineage",
                        value: format!(
                            "[{}] (the inline table is for [{}])",
                            lineage.join(", "),
                            table.policy_names.join(", ")
                        ),
                    });
                }
            }
            // An inline table is trusted as configuration is, and it may be expired
            // already: then it is stale from the start (onStale decides).
            shared.active = RefCell::new(Some(Rc::new(shared.activate(table, Clocks::read(host)))));
        }
        Ok(shared)
    }

    fn activate(&self, mut table: Table, now: Clocks) -> Active {
        let strictness = Strictness::of(&table);
        let expiry = table.expires_at_ms.map(|at_ms| Expiry {
            at_ms,
            installed: now,
        });
        if let Some(mode) = self.mode_override {
            table.mode = mode;
        }
        if let Some(log) = self.audit_override {
            table.audit_log = log;
        }
        Active {
            strictness,
            expiry,
            policy_digest: ruleset::cert::hex_lower(&table.policy_digest),
            needs: table.inputs(),
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

    /// Whether the clocks must be read at each decision: only when something can make
    /// the table stale (a feed's `maxStale`, a table's expiry).
    fn can_go_stale(&self, active: Option<&Active>) -> bool {
        self.max_stale_nanos.is_some() || active.is_some_and(|a| a.expiry.is_some())
    }

    /// Whether the revocation data is stale: `active` (the table in force) is past its
    /// expiry, or the feed has gone without a confirmed fetch for longer than `maxStale`.
    fn is_stale(&self, active: Option<&Active>, now: Clocks) -> bool {
        let unconfirmed = self
            .max_stale_nanos
            .is_some_and(|max| now.mono.saturating_sub(self.last_good_mono.get()) > max);
        unconfirmed || active.and_then(|a| a.expiry).is_some_and(|e| e.passed(now))
    }

    /// From the tick: logs once when the revocation data goes stale (and again after
    /// it was fresh in between).
    pub fn log_staleness(&self, host: &dyn Host) {
        let active = self.active();
        if !self.can_go_stale(active.as_deref()) {
            return;
        }
        let stale = self.is_stale(active.as_deref(), Clocks::read(host));
        if stale && !self.stale_logged.get() {
            let keep = active
                .as_deref()
                .is_some_and(|a| a.engine.table().revocation.on_stale() == OnStale::Keep);
            host.log(
                Level::Warn,
                if keep {
                    "revocation data is stale (the table is past its expiry, or the feed confirmed no table within maxStale); onStale keep: enforcing the last good table"
                } else {
                    "revocation data is stale (the table is past its expiry, or the feed confirmed no table within maxStale); onStale deny: refusing new connections (stale_revocation)"
                },
            );
        }
        self.stale_logged.set(stale);
    }

    /// The feed confirmed the table in force (a `304` to a poll that sent its ETag, or
    /// the same table again), at monotonic time `mono`.
    pub fn confirm(&self, mono: u64) {
        self.last_good_mono.set(mono);
    }

    /// Judges a table the feed delivered and, if it passes, swaps it in for every new
    /// decision, then closes open connections the new table denies. In order: its
    /// signature under a pinned key (before anything else of it is parsed), that it
    /// decodes, its lineage, its expiry, that it is strictly newer than the table in
    /// force, and that it loosens nothing. On refusal nothing changes.
    pub fn install(&self, host: &dyn Host, bytes: Vec<u8>) -> Result<Installed, Refusal> {
        use ruleset::signature::{self, SignatureError};
        let now = Clocks::read(host);
        let trust = self.trust.as_ref().unwrap_or(&NO_TRUST);
        // No pinned keys is only configurable with `allowUnsigned`.
        if !trust.public_keys.is_empty() {
            match signature::verify(&bytes, &trust.public_keys) {
                Ok(_) => {}
                Err(SignatureError::Unsigned) if trust.allow_unsigned => {}
                Err(SignatureError::Malformed(e)) => return Err(Refusal::Invalid(e.to_string())),
                Err(e) => return Err(Refusal::Signature(e.to_string())),
            }
        }
        let table = ruleset::decode_owned(bytes).map_err(|e| Refusal::Invalid(e.to_string()))?;
        let current = self.active();
        let lineage = trust
            .lineage
            .as_ref()
            .or(current.as_ref().map(|c| &c.engine.table().policy_names));
        if let Some(names) = lineage {
            // Lineage: the same policies, so a feed for another service's table (or a
            // misrouted one) can never replace this one.
            if *names != table.policy_names {
                return Err(Refusal::Lineage(format!(
                    "table is for policies [{}], not [{}] (another lineage)",
                    table.policy_names.join(", "),
                    names.join(", ")
                )));
            }
        }
        if let Some(at_ms) = table.expires_at_ms {
            if (Expiry {
                at_ms,
                installed: now,
            })
            .passed(now)
            {
                return Err(Refusal::Expired(format!(
                    "table expired at {at_ms} ms (Unix), now is {} ms",
                    now.wall / NANOS_PER_MILLI
                )));
            }
        }
        if let Some(c) = &current {
            let t = c.engine.table();
            // The table in force again (the inline table as the feed serves it, signed;
            // or a fetch without ETag): a confirmation. Its signature was verified, and
            // the compiler never issues two tables of one lineage at the same time.
            if table.issued_at_ms == t.issued_at_ms && table.policy_digest == t.policy_digest {
                return Ok(Installed::Unchanged);
            }
            if table.issued_at_ms <= t.issued_at_ms {
                return Err(Refusal::Rollback(format!(
                    "table issued at {} ms is not newer than the table in force (issued at {} ms)",
                    table.issued_at_ms, t.issued_at_ms
                )));
            }
            let loosened = c.strictness.loosened_by(&Strictness::of(&table));
            if !loosened.is_empty() && !trust.allow_loosening {
                return Err(Refusal::Loosening(format!(
                    "table loosens {} (set `feed.allowLoosening` to accept that)",
                    loosened.join(", ")
                )));
            }
        }
        let active = Rc::new(self.activate(table, now));
        host.log(
            Level::Info,
            &format!(
                "feed: new table in force (policy {}, issued at {} ms, {} revoked serials)",
                active.policy_digest,
                active.engine.table().issued_at_ms,
                active.engine.table().revocation.serial_count()
            ),
        );
        *self.active.borrow_mut() = Some(Rc::clone(&active));
        self.generation.set(self.generation.get().wrapping_add(1));
        self.confirm(now.mono);
        Metrics::bump(host, self.metrics.feed_updates);
        self.close_denied(host, &active);
        Ok(Installed::New)
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
                "this table needs the certificate (revocation entries, or key, \
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
        // The clocks are host calls too: read them when staleness needs them.
        let clocks = self
            .can_go_stale(active.as_deref())
            .then(|| Clocks::read(host));
        let in_force = active.as_deref().filter(|a| {
            !clocks.is_some_and(|now| self.is_stale(Some(a), now))
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
            (None, None) => Decision::stale(
                active.as_deref().map(|a| a.engine.table()),
                self.mode_override,
            ),
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
            let now = clocks.map_or_else(|| host.now_nanos(), |c| c.wall);
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
            stale: decision.reason == Reason::StaleRevocation,
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
