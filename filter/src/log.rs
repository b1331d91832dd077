//! What goes to the Envoy log about decisions, and at which level: denials with a
//! record at warn, every decision at info with `logAllDecisions`, else at debug when
//! Envoy logs this plugin's debug lines; and the one line about a proxy that does not
//! hand over the peer certificate.

use std::cell::Cell;

use ruleset::Action;

use crate::host::{Host, Level};

/// The first Envoy release with `connection.peer_certificate`, which full checks need.
pub const FULL_CHECKS_SINCE: &str = "1.38";

/// The logging settings and state of one VM.
#[derive(Debug)]
pub struct Logging {
    /// `logAllDecisions`: every decision at info.
    pub log_all: bool,
    /// Whether Envoy logs this plugin's debug lines, as of the last tick.
    debug_log: Cell<bool>,
    /// Whether the proxy's lack of `connection.peer_certificate` was logged (once per VM).
    told_no_pem: Cell<bool>,
}

impl Logging {
    /// The settings of the configuration, with Envoy's log level as it is now.
    pub fn new(log_all: bool, host: &dyn Host) -> Logging {
        Logging {
            log_all,
            debug_log: Cell::new(host.log_enabled(Level::Debug)),
            told_no_pem: Cell::new(false),
        }
    }

    /// Reads Envoy's log level for this plugin (from the root context's tick).
    pub fn read_level(&self, host: &dyn Host) {
        self.debug_log.set(host.log_enabled(Level::Debug));
    }

    /// The level a decision is logged at (`None`: not logged), given whether it gets
    /// an audit record. The level is read at each tick, not here, which would be a host
    /// call per decision.
    pub fn level(&self, recorded: bool, action: Action) -> Option<Level> {
        if recorded && action == Action::Deny {
            Some(Level::Warn)
        } else if self.log_all {
            Some(Level::Info)
        } else if self.debug_log.get() {
            Some(Level::Debug)
        } else {
            None
        }
    }

    /// The one log line at the first connection whose certificate the proxy verified
    /// but did not hand over: which attribute is missing, the release that has it, and
    /// what the table in force does without it (`identity_only`: whether it needs only
    /// the identity, asked only then). Later calls log nothing.
    pub fn tell_no_pem_once(&self, host: &dyn Host, identity_only: impl FnOnce() -> bool) {
        if self.told_no_pem.replace(true) {
            return;
        }
        let consequence = if identity_only() {
            "this table needs only the identity, so certgate decides with \
             connection.uri_san_peer_certificate (first URI SAN only), \
             connection.sha256_peer_certificate_digest and \
             connection.subject_peer_certificate"
        } else {
            "this table needs the certificate (revocation entries, or key, \
             signature or lifetime rules), so connections with a certificate are \
             denied as peer_certificate_unavailable"
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
}
