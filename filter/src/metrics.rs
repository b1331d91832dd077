//! Counters with stable names, defined once per VM.
//!
//! Envoy shows them in `/stats` under these names and in `/stats/prometheus` with the
//! dots turned into underscores (`certgate_allowed`); see docs/filter.md.

use ruleset::{Action, Decision, Mode, Reason};

use crate::host::Host;

pub const ALLOWED: &str = "certgate.allowed";
pub const DENIED: &str = "certgate.denied";
pub const AUDIT_WOULD_DENY: &str = "certgate.audit_would_deny";
/// Tables the live feed delivered and the filter swapped in.
pub const FEED_UPDATES: &str = "certgate.feed_updates";
/// Feed polls that failed (no answer, bad status, invalid table, other lineage).
pub const FEED_ERRORS: &str = "certgate.feed_errors";
/// Open connections closed because a newer table denies them.
pub const CLOSED_ON_UPDATE: &str = "certgate.closed_on_update";
/// Prefix of the per-reason counters: `certgate.reason.<code>`.
pub const REASON_PREFIX: &str = "certgate.reason.";

/// Counter ids; `None` where the host refused a definition (then nothing is counted).
#[derive(Debug, Clone)]
pub struct Metrics {
    allowed: Option<u32>,
    denied: Option<u32>,
    audit_would_deny: Option<u32>,
    pub feed_updates: Option<u32>,
    pub feed_errors: Option<u32>,
    pub closed_on_update: Option<u32>,
    reasons: Vec<(Reason, Option<u32>)>,
}

impl Metrics {
    /// Defines every counter, one per deny and allow reason included, so dashboards see
    /// zeros instead of missing series.
    pub fn define(host: &dyn Host) -> Self {
        Metrics {
            allowed: host.define_counter(ALLOWED),
            denied: host.define_counter(DENIED),
            audit_would_deny: host.define_counter(AUDIT_WOULD_DENY),
            feed_updates: host.define_counter(FEED_UPDATES),
            feed_errors: host.define_counter(FEED_ERRORS),
            closed_on_update: host.define_counter(CLOSED_ON_UPDATE),
            reasons: Reason::ALL
                .iter()
                .map(|r| {
                    (
                        *r,
                        host.define_counter(&format!("{REASON_PREFIX}{}", r.code())),
                    )
                })
                .collect(),
        }
    }

    /// Adds one to a counter, if the host defined it.
    pub fn bump(host: &dyn Host, id: Option<u32>) {
        if let Some(id) = id {
            host.increment_counter(id);
        }
    }

    /// Counts one decision: `allowed` for policy allows, `denied` for connections
    /// rejected, `audit_would_deny` for denies let through in audit mode.
    pub fn count(&self, host: &dyn Host, decision: &Decision<'_>) {
        let outcome = match (decision.action, decision.mode) {
            (Action::Allow, _) => self.allowed,
            (Action::Deny, Mode::Enforce) => self.denied,
            (Action::Deny, Mode::Audit) => self.audit_would_deny,
        };
        let reason = self
            .reasons
            .iter()
            .find(|(r, _)| *r == decision.reason)
            .and_then(|(_, id)| *id);
        for id in [outcome, reason].into_iter().flatten() {
            host.increment_counter(id);
        }
    }
}
