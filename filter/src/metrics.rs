//! Counters and gauges, defined once per VM (the labelled decision counters lazily,
//! one per label set met).
//!
//! Two kinds of names (docs/filter.md lists them):
//! - labelled: `certgate_decisions_total` with `plugin`, `action`, `reason`, `mode`,
//!   `policy`; the feed's `certgate_feed_*_total` and the table's gauges with `plugin`
//!   (and `reason` for refusals). The labels travel in the stat name as Istio writes
//!   them (`reason=.=default_deny;.;`, see `filter-config/src/stats.rs`) and become
//!   Prometheus labels through Envoy's tag extraction (`certgate emit stats`, or Istio's
//!   `extraStatTags`). The plugin label is the plugin's name (`plugin_name`, else its
//!   root id), so two certgate plugins in one proxy count apart.
//! - the earlier unlabelled names (`certgate.allowed`, `certgate.reason.<code>`, ...),
//!   kept so existing dashboards and checks go on working; Envoy shows them in
//!   `/stats/prometheus` with the dots turned into underscores (`certgate_allowed`).

use std::cell::RefCell;

use filter_config::stats::{labelled, MAX_VALUE_BYTES};
use ruleset::{Action, Decision, Mode, Reason, Table};

use crate::host::Host;

/// The labelled decision counter.
pub const DECISIONS_TOTAL: &str = "certgate_decisions_total";
/// Tables the feed delivered and the filter swapped in, labelled `plugin`.
pub const FEED_UPDATES_TOTAL: &str = "certgate_feed_updates_total";
/// Feed polls that failed in transport, labelled `plugin`.
pub const FEED_ERRORS_TOTAL: &str = "certgate_feed_errors_total";
/// Fed tables refused, labelled `plugin` and `reason` (signature, rollback, lineage,
/// loosening, expired, invalid).
pub const FEED_REFUSALS_TOTAL: &str = "certgate_feed_refusals_total";
/// Open connections closed because a newer table denies them, labelled `plugin`.
pub const CLOSED_ON_UPDATE_TOTAL: &str = "certgate_closed_on_update_total";
/// Gauge: when the table in force was issued (Unix seconds), labelled `plugin`.
pub const TABLE_ISSUED: &str = "certgate_table_issued_timestamp_seconds";
/// Gauge: when the table in force expires (Unix seconds; 0 when it never does).
pub const TABLE_EXPIRES: &str = "certgate_table_expiry_timestamp_seconds";
/// Distinct `policy` label values per VM; decisions of further policies are counted
/// under [`OTHER_POLICY`], so a table of many policies cannot grow the stats without bound.
pub const MAX_POLICY_LABELS: usize = 32;
/// The `policy` label of decisions beyond [`MAX_POLICY_LABELS`].
pub const OTHER_POLICY: &str = "_other";

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

/// One event's two counters: its unlabelled name and its labelled one.
#[derive(Debug, Clone, Copy)]
pub struct Pair(Option<u32>, Option<u32>);

/// Counter ids; `None` where the host refused a definition (then nothing is counted).
#[derive(Debug, Clone)]
pub struct Metrics {
    allowed: Option<u32>,
    denied: Option<u32>,
    audit_would_deny: Option<u32>,
    pub feed_updates: Pair,
    pub feed_errors: Pair,
    pub feed_rejected_signature: Pair,
    pub feed_rejected_rollback: Pair,
    pub feed_rejected_lineage: Pair,
    pub feed_rejected_loosening: Pair,
    pub feed_rejected_expired: Pair,
    pub feed_rejected_invalid: Pair,
    pub feed_rejected_delta: Pair,
    pub closed_on_update: Pair,
    reasons: Vec<(Reason, Option<u32>)>,
    /// The `plugin` label's value.
    plugin: String,
    /// Labelled decision counters defined so far, by label set.
    decisions: RefCell<Vec<(LabelSet, Option<u32>)>>,
    /// Distinct policy names given a label so far.
    policies: RefCell<Vec<String>>,
    table_issued: Option<u32>,
    table_expires: Option<u32>,
}

/// One label set of `certgate_decisions_total`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LabelSet {
    action: Action,
    reason: Reason,
    mode: Mode,
    policy: String,
}

/// Defines a counter that carries the plugin label and the other labels given.
fn define(host: &dyn Host, plugin: &str, name: &str, tags: &[(&str, &str)]) -> Option<u32> {
    let mut all = vec![("plugin", plugin)];
    all.extend_from_slice(tags);
    host.define_counter(&labelled(name, &all))
}

/// Adds one to each counter that the host defined.
fn bump_all(host: &dyn Host, ids: &[Option<u32>]) {
    for id in ids.iter().flatten() {
        host.increment_counter(*id);
    }
}

impl Metrics {
    /// Defines every unlabelled counter (one per reason included), the labelled feed
    /// counters and the table gauges, so dashboards see zeros instead of missing series;
    /// the labelled decision counters are defined when their label set is first met.
    pub fn define(host: &dyn Host) -> Self {
        let text = |path: &str| {
            host.property(&[path])
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|s| !s.is_empty())
        };
        let plugin = text("plugin_name")
            .or_else(|| text("plugin_root_id"))
            .unwrap_or_else(|| "certgate".to_owned());
        let plugin = plugin.as_str();
        let refusal = |kind: &str, old: &str| {
            let labelled = define(host, plugin, FEED_REFUSALS_TOTAL, &[("reason", kind)]);
            Pair(host.define_counter(old), labelled)
        };
        let gauge = |name: &str| host.define_gauge(&labelled(name, &[("plugin", plugin)]));
        Metrics {
            allowed: host.define_counter(ALLOWED),
            denied: host.define_counter(DENIED),
            audit_would_deny: host.define_counter(AUDIT_WOULD_DENY),
            feed_updates: Pair(
                host.define_counter(FEED_UPDATES),
                define(host, plugin, FEED_UPDATES_TOTAL, &[]),
            ),
            feed_errors: Pair(
                host.define_counter(FEED_ERRORS),
                define(host, plugin, FEED_ERRORS_TOTAL, &[]),
            ),
            feed_rejected_signature: refusal("signature", FEED_REJECTED_SIGNATURE),
            feed_rejected_rollback: refusal("rollback", FEED_REJECTED_ROLLBACK),
            feed_rejected_lineage: refusal("lineage", FEED_REJECTED_LINEAGE),
            feed_rejected_loosening: refusal("loosening", FEED_REJECTED_LOOSENING),
            feed_rejected_expired: refusal("expired", FEED_REJECTED_EXPIRED),
            feed_rejected_invalid: refusal("invalid", FEED_REJECTED_INVALID),
            feed_rejected_delta: refusal("delta", FEED_REJECTED_DELTA),
            closed_on_update: Pair(
                host.define_counter(CLOSED_ON_UPDATE),
                define(host, plugin, CLOSED_ON_UPDATE_TOTAL, &[]),
            ),
            table_issued: gauge(TABLE_ISSUED),
            table_expires: gauge(TABLE_EXPIRES),
            plugin: plugin.to_owned(),
            decisions: RefCell::new(Vec::new()),
            policies: RefCell::new(Vec::new()),
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

    /// Adds one to an event's counters, those the host defined.
    pub fn bump(host: &dyn Host, ids: Pair) {
        bump_all(host, &[ids.0, ids.1]);
    }

    /// Sets the table gauges to the table now in force.
    pub fn table_in_force(&self, host: &dyn Host, table: &Table) {
        let seconds = |ms: u64| ms.checked_div(1000).unwrap_or(0);
        if let Some(id) = self.table_issued {
            host.set_gauge(id, seconds(table.issued_at_ms));
        }
        if let Some(id) = self.table_expires {
            host.set_gauge(id, table.expires_at_ms.map_or(0, seconds));
        }
    }

    /// The labelled decision counter of `decision`'s label set, defined when first met.
    /// A label set already met is found without allocating.
    fn decision_counter(&self, host: &dyn Host, decision: &Decision<'_>) -> Option<u32> {
        let policy = decision.policy.unwrap_or("");
        let policy = policy
            .char_indices()
            .nth(MAX_VALUE_BYTES)
            .and_then(|(end, _)| policy.get(..end))
            .unwrap_or(policy);
        let find = |policy: &str| {
            self.decisions
                .borrow()
                .iter()
                .find(|(k, _)| {
                    k.action == decision.action
                        && k.reason == decision.reason
                        && k.mode == decision.mode
                        && k.policy == policy
                })
                .map(|(_, id)| *id)
        };
        if let Some(id) = find(policy) {
            return id;
        }
        // A policy past the cap is counted as `_other`.
        let label = self.policy_label(policy);
        if let Some(id) = find(&label) {
            return id;
        }
        let id = define(
            host,
            &self.plugin,
            DECISIONS_TOTAL,
            &[
                ("action", action_label(decision.action)),
                ("reason", decision.reason.code()),
                ("mode", mode_label(decision.mode)),
                ("policy", &label),
            ],
        );
        self.decisions.borrow_mut().push((
            LabelSet {
                action: decision.action,
                reason: decision.reason,
                mode: decision.mode,
                policy: label,
            },
            id,
        ));
        id
    }

    /// The `policy` label for a policy name (already cut to [`MAX_VALUE_BYTES`]): the
    /// name for the first [`MAX_POLICY_LABELS`] names met, else [`OTHER_POLICY`].
    fn policy_label(&self, policy: &str) -> String {
        if policy.is_empty() {
            return String::new();
        }
        let mut seen = self.policies.borrow_mut();
        if seen.iter().any(|p| p == policy) {
            return policy.to_owned();
        }
        if seen.len() < MAX_POLICY_LABELS {
            seen.push(policy.to_owned());
            return policy.to_owned();
        }
        OTHER_POLICY.to_owned()
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
        let labelled = self.decision_counter(host, decision);
        bump_all(host, &[outcome, reason, labelled]);
    }
}

/// The `action` label.
pub fn action_label(action: Action) -> &'static str {
    match action {
        Action::Allow => "allow",
        Action::Deny => "deny",
    }
}

/// The `mode` label.
pub fn mode_label(mode: Mode) -> &'static str {
    match mode {
        Mode::Enforce => "enforce",
        Mode::Audit => "audit",
    }
}
