//! The table in force: the one the configuration brought or the live feed delivered
//! last, its replacement by a newer fed table (judged by the feed's trust settings:
//! signature, lineage, expiry, rollback, loosening), the overrides the configuration
//! puts on every table, and whether its revocation data is stale.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use ruleset::{Action, AuditLog, Engine, Mode, OnStale, Table};

use crate::config::{Config, ConfigError};
use crate::host::{Host, Level};
use crate::metrics::{Metrics, Pair};
use crate::peer;

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

    pub fn counter(&self, m: &Metrics) -> Pair {
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

/// The table in force and what governs its replacement and staleness.
#[derive(Debug)]
pub struct Tables {
    /// `None` only with a feed and no inline table, until the first good fetch.
    active: RefCell<Option<Rc<Active>>>,
    mode_override: Option<Mode>,
    audit_override: Option<AuditLog>,
    /// Bumped at every swap.
    generation: Cell<u64>,
    /// With a feed: when (monotonic) a good table was last confirmed, and how long
    /// that holds.
    last_good_mono: Cell<u64>,
    max_stale_nanos: Option<u64>,
    /// With a feed: what a fed table must satisfy.
    trust: Option<Trust>,
    /// Whether the stale state was already logged (once per episode).
    stale_logged: Cell<bool>,
}

impl Tables {
    /// The table of `config` (decoded and put in force, unless a feed is to bring the
    /// first one) and the feed's trust settings. Takes the table bytes out of `config`.
    pub fn new(config: &mut Config, host: &dyn Host) -> Result<Tables, ConfigError> {
        let mut tables = Tables {
            active: RefCell::new(None),
            mode_override: config.mode,
            audit_override: config.audit_log,
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
        };
        if config.feed.is_none() || !config.table.is_empty() {
            // The table keeps the configuration's decoded bytes: no second copy.
            let table = ruleset::decode_owned(std::mem::take(&mut config.table))
                .map_err(|e| ConfigError::BadTable(e.to_string()))?;
            if let Some(lineage) = tables.trust.as_ref().and_then(|t| t.lineage.as_ref()) {
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
            tables.active = RefCell::new(Some(Rc::new(tables.activate(table, Clocks::read(host)))));
        }
        Ok(tables)
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

    /// The generation of the table in force, bumped at every swap.
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    /// Whether a live feed may replace the table (then open connections are kept to be
    /// decided again, and a decision reads every attribute a later table may need).
    pub fn fed(&self) -> bool {
        self.max_stale_nanos.is_some()
    }

    /// The mode the configuration imposes, if any (over the table's own).
    pub fn mode_override(&self) -> Option<Mode> {
        self.mode_override
    }

    /// The mode decisions are made in: the table's (after overrides), or without a
    /// table the configured override, else enforce.
    pub fn mode(&self, active: Option<&Active>) -> Mode {
        active.map_or(self.mode_override.unwrap_or(Mode::Enforce), |a| {
            a.engine.table().mode
        })
    }

    /// Which decisions get a record: the table's (after overrides), or without a table
    /// the configured override, else denials.
    pub fn audit_log(&self, active: Option<&Active>) -> AuditLog {
        active.map_or(self.audit_override.unwrap_or(AuditLog::Deny), |a| {
            a.engine.table().audit_log
        })
    }

    /// Whether the table (after overrides) is in audit mode.
    pub fn audit_mode(&self) -> bool {
        self.active()
            .map_or(self.mode_override, |a| Some(a.engine.table().mode))
            == Some(Mode::Audit)
    }

    /// Whether the clocks must be read at each decision: only when something can make
    /// the table stale (a feed's `maxStale`, a table's expiry).
    pub fn can_go_stale(&self, active: Option<&Active>) -> bool {
        self.max_stale_nanos.is_some() || active.is_some_and(|a| a.expiry.is_some())
    }

    /// Whether the revocation data is stale: `active` (the table in force) is past its
    /// expiry, or the feed has gone without a confirmed fetch for longer than `maxStale`.
    pub fn is_stale(&self, active: Option<&Active>, now: Clocks) -> bool {
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
    /// decision (closing the open connections it denies is the caller's part,
    /// `Shared::install`). In order: its
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
        Ok(Installed::New)
    }
}
