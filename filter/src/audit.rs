//! The audit record: one compact JSON object per decision, named after the Elastic
//! Common Schema where a field exists there, under `certgate.` where it does not.
//!
//! It is set as filter state (`wasm.certgate.audit`) for the access log to print, and
//! deny decisions also go to the Envoy log at warn. docs/filter.md lists the fields.

use ruleset::{Action, AuditLog, Decision, Mode, Peer, PeerCert};

use crate::json::ObjectWriter;

/// Filter state property the record is stored under; Envoy prefixes it with `wasm.`.
pub const FILTER_STATE_KEY: &str = "certgate.audit";

/// Whether `audit.log` asks for a record of this decision.
pub fn wanted(log: AuditLog, decision: &Decision<'_>) -> bool {
    match log {
        AuditLog::All => true,
        AuditLog::Deny => decision.action == Action::Deny,
        AuditLog::None => false,
    }
}

/// What identifies the decision beyond the engine's answer.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Lowercase hex SHA-256 of the policy sources.
    pub policy_digest: &'a str,
    /// Unique id of this decision, also sent to HTTP clients that are refused.
    pub decision_id: &'a str,
}

/// The record for `decision` about `peer`.
pub fn record(decision: &Decision<'_>, peer: &Peer, ctx: Context<'_>) -> String {
    finish(head(decision, &peer.cert), peer, decision.mode, ctx)
}

/// The record's members that follow from the decision and the certificate alone: the
/// same for every connection that presents this certificate while the table decides on
/// the certificate alone, so the filter builds them once per certificate.
pub fn head(decision: &Decision<'_>, cert: &PeerCert) -> ObjectWriter {
    let admitted = decision.admits();
    let mut w = ObjectWriter::new();
    w.str("event.kind", "event")
        .str("event.category", "network")
        .str("event.type", if admitted { "allowed" } else { "denied" })
        .str("event.action", decision.action.as_str())
        .str(
            "event.outcome",
            if admitted { "success" } else { "failure" },
        )
        .str("event.reason", decision.reason.code())
        .opt_str("rule.name", decision.rule)
        .opt_str("rule.ruleset", decision.policy)
        .opt_str("certgate.spiffe_id", decision.identity);
    match cert {
        PeerCert::Parsed(facts) => {
            w.str(
                "tls.client.x509.serial_number",
                &ruleset::cert::serial_hex(&facts.serial),
            )
            .str("tls.client.x509.issuer.distinguished_name", &facts.issuer)
            .str("tls.client.x509.subject.distinguished_name", &facts.subject)
            .str_array(
                "tls.client.x509.alternative_names",
                facts.uri_sans.iter().map(String::as_str),
            )
            .str(
                "tls.client.hash.sha256",
                &ruleset::cert::hex_upper(&facts.sha256),
            );
        }
        PeerCert::Unparsable(why) => {
            w.str("error.message", why);
        }
        // What a proxy without `connection.peer_certificate` gave: no serial or issuer.
        PeerCert::Vouched(v) => {
            w.opt_str(
                "tls.client.x509.subject.distinguished_name",
                v.subject.as_deref(),
            )
            .str_array(
                "tls.client.x509.alternative_names",
                v.first_uri_san.as_deref().into_iter(),
            );
            if let Some(sha256) = &v.sha256 {
                w.str("tls.client.hash.sha256", &ruleset::cert::hex_upper(sha256));
            }
        }
        PeerCert::Missing | PeerCert::Assumed { .. } => {}
    }
    w
}

/// Completes a record begun by [`head`] with the connection's attributes, the
/// decision's `mode` and `ctx`.
pub fn finish(mut w: ObjectWriter, peer: &Peer, mode: Mode, ctx: Context<'_>) -> String {
    if let Some(v) = peer.tls_version {
        w.str("tls.version_protocol", "tls")
            .str("tls.version", v.as_str());
    }
    w.opt_str("tls.client.server_name", peer.sni.as_deref());
    if let Some(ip) = peer.source_ip {
        w.ip("source.ip", ip);
    }
    if let Some(port) = peer.port {
        w.uint("destination.port", u64::from(port));
    }
    w.str("certgate.policy_digest", ctx.policy_digest)
        .str(
            "certgate.mode",
            match mode {
                Mode::Enforce => "enforce",
                Mode::Audit => "audit",
            },
        )
        .str("certgate.decision_id", ctx.decision_id);
    w.finish()
}
