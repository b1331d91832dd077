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
/// Feed polls that failed in transport (no answer, bad status, refused call).
pub const FEED_ERRORS: &str = "certgate.feed_errors";
/// Fed tables refused for their signature: unsigned without `allowUnsigned`, signed by
/// a key that is not pinned, or a signature that does not verify.
pub const FEED_REJECTED_SIGNATURE: &str = "certgate.feed_rejected_signature";
/// Fed tables not issued strictly after the table in force (rollback or replay).
pub const FEED_REJECTED_ROLLBACK: &str = "certgate.feed_rejected_rollback";
/// Fed tables of other policies than the configured lineage.
pub const FEED_REJECTED_LINEAGE: &str = "certgate.feed_rejected_lineage";
/// Fed tables that loosen mode, defaultAction, onStale or audit.log.
pub const FEED_REJECTED_LOOSENING: &str = "certgate.feed_rejected_loosening";
/// Fed tables already past their expiry.
pub const FEED_REJECTED_EXPIRED: &str = "certgate.feed_rejected_expired";
/// Fed tables that do not decode.
pub const FEED_REJECTED_INVALID: &str = "certgate.feed_rejected_invalid";
/// Deltas (`226 IM Used`) refused: corrupt, for another base, or not rebuilding the
/// table their ETag names (the filter then fetches the whole table).
pub const FEED_REJECTED_DELTA: &str = "certgate.feed_rejected_delta";
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
    pub feed_rejected_signature: Option<u32>,
    pub feed_rejected_rollback: Option<u32>,
    pub feed_rejected_lineage: Option<u32>,
    pub feed_rejected_loosening: Option<u32>,
    pub feed_rejected_expired: Option<u32>,
    pub feed_rejected_invalid: Option<u32>,
    pub feed_rejected_delta: Option<u32>,
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
            feed_rejected_signature: host.define_counter(FEED_REJECTED_SIGNATURE),
            feed_rejected_rollback: host.define_counter(FEED_REJECTED_ROLLBACK),
            feed_rejected_lineage: host.define_counter(FEED_REJECTED_LINEAGE),
            feed_rejected_loosening: host.define_counter(FEED_REJECTED_LOOSENING),
            feed_rejected_expired: host.define_counter(FEED_REJECTED_EXPIRED),
            feed_rejected_invalid: host.define_counter(FEED_REJECTED_INVALID),
            feed_rejected_delta: host.define_counter(FEED_REJECTED_DELTA),
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
