//! The audit record: one compact JSON object per decision, named after the Elastic
//! Common Schema where a field exists there, under `certgate.` where it does not.
//!
//! It is set as filter state (`wasm.certgate.audit`) for the access log to print, and
//! deny decisions also go to the Envoy log at warn. docs/filter.md lists the fields.

use std::net::IpAddr;

use ruleset::{Action, AuditLog, CertFacts, Decision, Mode, Peer, PeerCert};

use crate::json::ObjectWriter;

/// The ECS version the records conform to, checked against that release's
/// `ecs_flat.yml` by the e2e suite (e2e/ecs/ecs_flat.yml).
pub const ECS_VERSION: &str = "9.3.0";

/// At most this many subject alternative names go into a record, so that a
/// certificate stuffed with names cannot make records of any size; the rest are counted
/// in `certgate.alternative_names_omitted`.
pub const MAX_RECORD_SANS: usize = 16;

/// Longer names are left out of a record (and counted as omitted): ECS indexes
/// keywords up to 1,024 characters.
pub const MAX_RECORD_SAN_LEN: usize = 1024;

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
    /// Wall clock at the decision, nanoseconds since the Unix epoch (`@timestamp`).
    pub now_nanos: u64,
    /// `source.port`, read only when a record is written.
    pub source_port: Option<u16>,
    /// `destination.address`'s IP, read only when a record is written.
    pub destination_ip: Option<IpAddr>,
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
    w.str("ecs.version", ECS_VERSION)
        .str("event.kind", "event")
        .str("event.module", "certgate")
        .str("event.dataset", "certgate.audit")
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
            .str("tls.client.x509.subject.distinguished_name", &facts.subject);
            alternative_names(&mut w, facts);
            w.str(
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

/// Every SAN of the certificate (URI, DNS, then email and IP addresses), bounded by
/// [`MAX_RECORD_SANS`] and [`MAX_RECORD_SAN_LEN`].
fn alternative_names(w: &mut ObjectWriter, facts: &CertFacts) {
    let all = || {
        facts
            .uri_sans
            .iter()
            .chain(&facts.dns_sans)
            .chain(&facts.other_sans)
            .map(String::as_str)
    };
    let kept = || {
        all()
            .filter(|n| n.len() <= MAX_RECORD_SAN_LEN)
            .take(MAX_RECORD_SANS)
    };
    w.str_array("tls.client.x509.alternative_names", kept());
    let omitted = all().count().saturating_sub(kept().count());
    if omitted > 0 {
        w.uint(
            "certgate.alternative_names_omitted",
            u64::try_from(omitted).unwrap_or(u64::MAX),
        );
    }
}

/// Completes a record begun by [`head`] with the connection's attributes, the
/// decision's `mode` and `ctx`.
pub fn finish(mut w: ObjectWriter, peer: &Peer, mode: Mode, ctx: Context<'_>) -> String {
    let mut stamp = String::with_capacity(24);
    push_timestamp(&mut stamp, ctx.now_nanos);
    w.str("@timestamp", &stamp)
        .str("event.id", ctx.decision_id)
        .str("network.transport", "tcp");
    if let Some(ip) = peer.source_ip {
        w.str("network.type", if ip.is_ipv6() { "ipv6" } else { "ipv4" });
    }
    if let Some(v) = peer.tls_version {
        w.str("tls.version_protocol", "tls")
            .str("tls.version", v.as_str());
    }
    w.opt_str("tls.client.server_name", peer.sni.as_deref());
    if let Some(ip) = peer.source_ip {
        w.ip("source.ip", ip);
    }
    if let Some(port) = ctx.source_port {
        w.uint("source.port", u64::from(port));
    }
    if let Some(ip) = ctx.destination_ip {
        w.ip("destination.ip", ip);
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

/// Appends `nanos` since the Unix epoch as RFC 3339 UTC with milliseconds
/// (`2026-12-06T06:30:42.123Z`), without the formatting machinery (slow in wasm).
pub fn push_timestamp(out: &mut String, nanos: u64) {
    let millis = nanos.checked_div(1_000_000).unwrap_or(0);
    let secs = millis.checked_div(1000).unwrap_or(0);
    let days = secs.checked_div(86_400).unwrap_or(0);
    let of_day = secs.checked_rem(86_400).unwrap_or(0);
    let (year, month, day) = civil_from_days(days);
    let two = |out: &mut String, n: u64| push_padded(out, n, 2);
    push_padded(out, year, 4);
    out.push('-');
    two(out, month);
    out.push('-');
    two(out, day);
    out.push('T');
    two(out, of_day.checked_div(3600).unwrap_or(0));
    out.push(':');
    two(
        out,
        of_day
            .checked_rem(3600)
            .unwrap_or(0)
            .checked_div(60)
            .unwrap_or(0),
    );
    out.push(':');
    two(out, of_day.checked_rem(60).unwrap_or(0));
    out.push('.');
    push_padded(out, millis.checked_rem(1000).unwrap_or(0), 3);
    out.push('Z');
}

/// `n` in decimal, zero-padded to `width` digits (more if it needs them).
fn push_padded(out: &mut String, n: u64, width: u32) {
    let mut digits = [b'0'; 20];
    let mut at = digits.len();
    let mut rest = n;
    let mut written = 0u32;
    while at > 0 && (rest > 0 || written < width) {
        at = at.saturating_sub(1);
        if let Some(d) = digits.get_mut(at) {
            // The remainder is below 10, so the cast and the addition stay in range.
            *d = b'0'.saturating_add(u8::try_from(rest.checked_rem(10).unwrap_or(0)).unwrap_or(0));
        }
        rest = rest.checked_div(10).unwrap_or(0);
        written = written.saturating_add(1);
    }
    for d in digits.get(at..).unwrap_or_default() {
        out.push(char::from(*d));
    }
}

/// The proleptic Gregorian date of `days` since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days.saturating_add(719_468);
    let era = z.checked_div(146_097).unwrap_or(0);
    let doe = z.saturating_sub(era.saturating_mul(146_097));
    let yoe = doe
        .saturating_sub(doe.checked_div(1460).unwrap_or(0))
        .saturating_add(doe.checked_div(36_524).unwrap_or(0))
        .saturating_sub(doe.checked_div(146_096).unwrap_or(0))
        .checked_div(365)
        .unwrap_or(0);
    let doy = doe.saturating_sub(
        yoe.saturating_mul(365)
            .saturating_add(yoe.checked_div(4).unwrap_or(0))
            .saturating_sub(yoe.checked_div(100).unwrap_or(0)),
    );
    let mp = doy
        .saturating_mul(5)
        .saturating_add(2)
        .checked_div(153)
        .unwrap_or(0);
    let day = doy
        .saturating_sub(
            mp.saturating_mul(153)
                .saturating_add(2)
                .checked_div(5)
                .unwrap_or(0),
        )
        .saturating_add(1);
    let month = if mp < 10 {
        mp.saturating_add(3)
    } else {
        mp.saturating_sub(9)
    };
    let year = yoe
        .saturating_add(era.saturating_mul(400))
        .saturating_add(u64::from(month <= 2));
    (year, month, day)
}

#[cfg(test)]
mod timestamp_tests {
    fn stamp(nanos: u64) -> String {
        let mut s = String::new();
        super::push_timestamp(&mut s, nanos);
        s
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        let ms = 1_000_000u64;
        for (millis, want) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (951_868_799_999, "2000-02-29T23:59:59.999Z"),
            (1_700_000_000_123, "2023-11-14T22:13:20.123Z"),
            (1_798_761_599_000, "2026-12-31T23:59:59.000Z"),
            (4_107_542_400_000, "2100-03-01T00:00:00.000Z"),
        ] {
            assert_eq!(stamp(millis * ms), want, "{millis}");
        }
        // Nanoseconds below a millisecond are cut, not rounded.
        assert_eq!(stamp(999_999), "1970-01-01T00:00:00.000Z");
        // The largest time the host can give still formats (year 2554).
        assert_eq!(stamp(u64::MAX), "2554-07-21T23:34:33.709Z");
    }
}
