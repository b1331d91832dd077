//! The decision remembered for one certificate under one table generation, kept in the
//! certificate's cache entry (`cache.rs`) and made by the decision pipeline
//! (`decide.rs`). It sits below both so that neither imports the other.

use std::cell::OnceCell;

use ruleset::{Action, Decision, Mode, Reason};

/// The decision for one certificate under one table generation. Only made while the
/// table decides on the certificate alone (the attributes it needs are none): then
/// every connection that presents the certificate gets this decision, and a warm
/// connection skips evaluation (the revocation lookups and the rule index) and rebuilds
/// none of the record's certificate members.
#[derive(Debug)]
pub struct Memo {
    generation: u64,
    action: Action,
    reason: Reason,
    mode: Mode,
    rule: Option<Box<str>>,
    policy: Option<Box<str>>,
    identity: Option<Box<str>>,
    /// The audit record's head for this decision (`audit::head`, unfinished), built at
    /// the first record that needs it.
    record_head: OnceCell<String>,
}

impl Memo {
    /// Remembers `decision`, made under table `generation`.
    pub fn new(generation: u64, decision: &Decision<'_>) -> Memo {
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

    /// The remembered decision.
    pub fn decision(&self) -> Decision<'_> {
        Decision {
            action: self.action,
            reason: self.reason,
            rule: self.rule.as_deref(),
            policy: self.policy.as_deref(),
            mode: self.mode,
            identity: self.identity.as_deref(),
        }
    }

    /// The record's head for this decision (unfinished JSON), built by `make` once.
    pub fn record_head(&self, make: impl FnOnce() -> String) -> &str {
        self.record_head.get_or_init(make)
    }
}
