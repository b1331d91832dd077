//! Matrix cases as data: which leaf connects how, and what must follow on the wire, in
//! the access-log audit record and in `/stats`. [`check_case`] runs one case against a
//! running Envoy and returns a report, or every mismatch with the Envoy log tail and the
//! client's view.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::backend::{Backend, BANNER};
use crate::certgate::Certgate;
use crate::client::{
    http_request, openssl_exchange, parse_http, rustls_config, rustls_exchange, rustls_http_get,
    Exchange, TlsPin, Want,
};
use crate::envoy::Envoy;
use crate::pki::Pki;
use crate::run::{audit_records, counter_deltas, wait_for_log};

/// Which client presents the certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// tokio-rustls (ring).
    Rustls(TlsPin),
    /// `openssl s_client`.
    Openssl(TlsPin),
}

/// What the listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// Client sends a line, the echo backend returns it.
    Echo,
    /// Client sends nothing; the banner backend speaks first.
    Banner,
    /// One HTTP GET; 200 from the backend or 403 from the filter.
    Http,
}

/// What must happen.
#[derive(Debug, Clone)]
pub struct Expect {
    /// The connection (or request) gets through.
    pub admitted: bool,
    /// `event.action` in the audit record: what the policy decided.
    pub action: &'static str,
    /// `event.reason`.
    pub reason: &'static str,
    /// `rule.name`, when a rule decided.
    pub rule: Option<&'static str>,
    /// Whether the record names the leaf's SPIFFE ID (`certgate.spiffe_id`).
    pub identity: bool,
    /// Whether an audit record is expected at all (`audit.log`).
    pub record: bool,
    /// Whether the record names the leaf's serial number; a proxy without
    /// `connection.peer_certificate` gives none, and the record must then have none.
    pub serial: bool,
}

impl Expect {
    /// Allowed by `rule`.
    pub fn allow(rule: &'static str) -> Expect {
        Expect {
            admitted: true,
            action: "allow",
            reason: "allow_rule",
            rule: Some(rule),
            identity: true,
            record: true,
            serial: true,
        }
    }

    /// Denied with `reason`, no rule.
    pub fn deny(reason: &'static str) -> Expect {
        Expect {
            admitted: false,
            action: "deny",
            reason,
            rule: None,
            identity: true,
            record: true,
            serial: true,
        }
    }

    /// Denied by deny rule `rule`.
    pub fn deny_rule(rule: &'static str) -> Expect {
        Expect {
            rule: Some(rule),
            ..Expect::deny("deny_rule")
        }
    }

    /// The record carries no SPIFFE ID (none could be established).
    pub fn without_identity(mut self) -> Expect {
        self.identity = false;
        self
    }

    /// The certificate came from a proxy that vouches for its identity and digest only
    /// (Envoy before 1.38): the record has no serial number.
    pub fn without_serial(mut self) -> Expect {
        self.serial = false;
        self
    }

    /// Audit mode: the same decision, but the connection gets through.
    pub fn audited(mut self) -> Expect {
        self.admitted = true;
        self
    }

    /// The counters this decision must move by one: outcome, reason and the labelled
    /// decision counter.
    pub fn counters(&self, audit_mode: bool) -> BTreeMap<String, u64> {
        let outcome = match (self.action, audit_mode) {
            ("allow", _) => "allowed",
            (_, false) => "denied",
            (_, true) => "audit_would_deny",
        };
        let mode = if audit_mode { "audit" } else { "enforce" };
        BTreeMap::from([
            (outcome.to_string(), 1),
            (format!("reason.{}", self.reason), 1),
            (
                format!(
                    "decisions{{action={},mode={mode},reason={}}}",
                    self.action, self.reason
                ),
                1,
            ),
        ])
    }
}

/// One row of the matrix.
#[derive(Debug, Clone)]
pub struct Case {
    /// What the row proves.
    pub name: &'static str,
    /// The leaf the client presents.
    pub leaf: &'static str,
    /// The client.
    pub client: Client,
    /// What must follow.
    pub expect: Expect,
}

impl Case {
    /// A case with the rustls client offering TLS 1.2 and 1.3.
    pub fn new(name: &'static str, leaf: &'static str, expect: Expect) -> Case {
        Case {
            name,
            leaf,
            client: Client::Rustls(TlsPin::Any),
            expect,
        }
    }

    /// The same case with another client.
    pub fn with(mut self, client: Client) -> Case {
        self.client = client;
        self
    }
}

/// Where a case runs.
#[derive(Debug)]
pub struct Target<'a> {
    /// The Envoy.
    pub envoy: &'a Envoy,
    /// The listener's name.
    pub listener: &'a str,
    /// What it speaks.
    pub wire: Wire,
    /// The backend behind it (its accept count is checked).
    pub backend: &'a Backend,
    /// Whether the filter runs in audit mode.
    pub audit_mode: bool,
    /// Whether a denied client must cause no upstream connection.
    pub no_upstream_on_deny: bool,
    /// When set, every decision is compared with `certgate eval` on the same table and
    /// certificate (one engine, two hosts: they must agree).
    pub eval: Option<(&'a Certgate, &'a Path)>,
}

impl<'a> Target<'a> {
    /// Also compare each decision with `certgate eval --table table`.
    pub fn with_eval(mut self, certgate: &'a Certgate, table: &'a Path) -> Target<'a> {
        self.eval = Some((certgate, table));
        self
    }
}

/// What a case observed, for reports and the demo's table.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The client's view.
    pub exchange: Exchange,
    /// The HTTP status, for HTTP listeners.
    pub http_status: Option<u16>,
    /// The HTTP response headers and body, for HTTP listeners.
    pub http_response: Option<(Vec<(String, String)>, String)>,
    /// The audit record (deduplicated: listener and proxy loggers both print it).
    pub audit: Option<Value>,
    /// Counter deltas.
    pub counters: BTreeMap<String, u64>,
    /// Backend connections the case caused.
    pub upstream_connections: usize,
    /// Bytes the backend received during the case.
    pub upstream_bytes: usize,
}

impl Observed {
    /// A one-line summary of the client's view.
    pub fn client_view(&self) -> String {
        match self.http_status {
            Some(s) => format!("HTTP {s}; {}", self.exchange.summary()),
            None => self.exchange.summary(),
        }
    }
}

/// Runs the case's client once against `target`.
pub async fn observe(target: &Target<'_>, pki: &Pki, case: &Case) -> Observed {
    let leaf = pki.leaf(case.leaf);
    let addr = target.envoy.addr(target.listener);
    let before_stats = target.envoy.certgate_stats().unwrap_or_default();
    let before_log = target.envoy.access_records().len();
    let before_accepts = target.backend.accepted();
    let before_bytes = target.backend.received_bytes();
    let line = format!("ping from {}\n", case.leaf);
    let request = http_request();
    let (send, want): (&[u8], Want) = match target.wire {
        Wire::Echo => (line.as_bytes(), Want::Bytes(line.len())),
        Wire::Banner => (b"", Want::Bytes(BANNER.len())),
        Wire::Http => (request.as_bytes(), Want::HttpResponse),
    };
    let mut http_status = None;
    let mut http_response = None;
    let exchange = match (case.client, target.wire) {
        (Client::Rustls(pin), Wire::Http) => match rustls_config(pki, leaf, pin) {
            Ok(cfg) => {
                let r = rustls_http_get(addr, cfg).await;
                http_status = r.status;
                http_response = Some((r.headers, r.body));
                r.exchange
            }
            Err(e) => client_setup_error(e),
        },
        (Client::Rustls(pin), _) => match rustls_config(pki, leaf, pin) {
            Ok(cfg) => rustls_exchange(addr, cfg, send, want).await,
            Err(e) => client_setup_error(e),
        },
        (Client::Openssl(pin), wire) => {
            let ex = openssl_exchange(addr, pki, leaf, pin, send, want);
            if wire == Wire::Http {
                let r = parse_http(ex);
                http_status = r.status;
                http_response = Some((r.headers, r.body));
                r.exchange
            } else {
                ex
            }
        }
    };
    let records = wait_for_log(target.envoy, before_log, Some(&exchange));
    let mut audits = audit_records(&records, before_log);
    if let Some(port) = exchange.local_port {
        let suffix = format!(":{port}");
        audits.retain(|a| {
            a["_log"][crate::run::SOURCE_ADDRESS_FIELD]
                .as_str()
                .is_none_or(|d| d.ends_with(&suffix))
        });
    }
    let mut seen = std::collections::BTreeSet::new();
    audits.retain(|a| seen.insert(a["certgate.decision_id"].to_string()));
    let after_stats = target.envoy.certgate_stats().unwrap_or_default();
    Observed {
        exchange,
        http_status,
        http_response,
        audit: audits.into_iter().next(),
        counters: counter_deltas(&before_stats, &after_stats),
        upstream_connections: target.backend.accepted().saturating_sub(before_accepts),
        upstream_bytes: target.backend.received_bytes().saturating_sub(before_bytes),
    }
}

fn client_setup_error(e: anyhow::Error) -> Exchange {
    Exchange {
        local_port: None,
        tls_version: None,
        received: Vec::new(),
        end: crate::client::End::Connect(format!("client setup: {e:#}")),
        client: "rustls",
    }
}

/// Compares what happened with what must; returns every mismatch.
pub fn mismatches(target: &Target<'_>, pki: &Pki, case: &Case, seen: &Observed) -> Vec<String> {
    let leaf = pki.leaf(case.leaf);
    let e = &case.expect;
    let mut bad = Vec::new();
    // The client's view.
    match target.wire {
        Wire::Http => {
            let want = if e.admitted { 200 } else { 403 };
            if seen.http_status != Some(want) {
                bad.push(format!(
                    "client: want HTTP {want}, saw {}",
                    seen.client_view()
                ));
            }
            if let (false, Some((headers, body))) = (e.admitted, &seen.http_response) {
                // The refusal names the decision for support, never the reason.
                let id = headers
                    .iter()
                    .find(|(k, _)| k == "x-certgate-decision-id")
                    .map(|(_, v)| v.as_str());
                let recorded = seen
                    .audit
                    .as_ref()
                    .and_then(|a| a["certgate.decision_id"].as_str());
                if id.is_none() || id != recorded {
                    bad.push(format!(
                        "client: 403 decision id {id:?} differs from the audit record's {recorded:?}"
                    ));
                }
                if body.contains(e.reason) || e.rule.is_some_and(|r| body.contains(r)) {
                    bad.push(format!("client: 403 body leaks the reason: {body:?}"));
                }
            }
        }
        Wire::Echo | Wire::Banner => {
            let want: Vec<u8> = match target.wire {
                Wire::Banner => BANNER.to_vec(),
                _ => format!("ping from {}\n", case.leaf).into_bytes(),
            };
            if e.admitted && !seen.exchange.got(&want) {
                bad.push(format!(
                    "client: want data through, saw {}",
                    seen.client_view()
                ));
            }
            if !e.admitted && !seen.exchange.denied() {
                bad.push(format!(
                    "client: want the connection closed with no byte, saw {}",
                    seen.client_view()
                ));
            }
        }
    }
    if !e.admitted && seen.upstream_bytes != 0 {
        bad.push(format!(
            "backend: want no byte from a denied client, it received {}",
            seen.upstream_bytes
        ));
    }
    if !e.admitted && target.no_upstream_on_deny && seen.upstream_connections != 0 {
        bad.push(format!(
            "backend: want no upstream connection from a denied client, saw {}",
            seen.upstream_connections
        ));
    }
    // The audit record.
    match (&seen.audit, e.record) {
        (None, true) => bad.push("audit: no record in the access log".into()),
        (Some(a), false) => bad.push(format!("audit: unexpected record {a}")),
        (None, false) => {}
        (Some(a), true) => {
            let field = |k: &str| a.get(k).and_then(Value::as_str).map(str::to_owned);
            let mut want = vec![
                ("event.action", Some(e.action.to_string())),
                ("event.reason", Some(e.reason.to_string())),
                (
                    "event.outcome",
                    Some(if e.admitted { "success" } else { "failure" }.to_string()),
                ),
                ("rule.name", e.rule.map(str::to_string)),
                (
                    "tls.client.x509.serial_number",
                    e.serial.then(|| leaf.serial_hex()),
                ),
                (
                    "certgate.mode",
                    Some(
                        if target.audit_mode {
                            "audit"
                        } else {
                            "enforce"
                        }
                        .to_string(),
                    ),
                ),
            ];
            if e.identity {
                want.push(("certgate.spiffe_id", Some(leaf.spiffe_id().to_string())));
            }
            for (k, v) in want {
                let got = field(k);
                let equal = match (&got, &v) {
                    (Some(g), Some(w)) => g.eq_ignore_ascii_case(w),
                    (None, None) => true,
                    _ => false,
                };
                if !equal {
                    bad.push(format!("audit: `{k}` want {v:?}, got {got:?}"));
                }
            }
            for k in ["certgate.policy_digest", "source.ip", "tls.version"] {
                if field(k).is_none() {
                    bad.push(format!("audit: `{k}` missing"));
                }
            }
        }
    }
    // The CLI's decision for the same certificate, TLS version, port and source.
    if let (Some((certgate, table)), Some(a)) = (target.eval, &seen.audit) {
        let tls = a["tls.version"].as_str();
        let port = a["destination.port"].as_u64().map(|p| p.to_string());
        match certgate.eval_cert(table, &leaf.chain_pem, tls, port.as_deref()) {
            Err(err) => bad.push(format!("certgate eval failed: {err:#}")),
            Ok(cli) => {
                for (cli_key, audit_key) in [
                    ("action", "event.action"),
                    ("reason", "event.reason"),
                    ("rule", "rule.name"),
                ] {
                    let c = cli[cli_key].as_str();
                    let f = a[audit_key].as_str();
                    if c != f {
                        bad.push(format!(
                            "differential: `certgate eval` says {cli_key}={c:?}, the filter {audit_key}={f:?}"
                        ));
                    }
                }
            }
        }
    }
    // The counters.
    let want = e.counters(target.audit_mode);
    if seen.counters != want {
        bad.push(format!(
            "stats: want counter deltas {want:?}, got {:?}",
            seen.counters
        ));
    }
    bad
}

/// Runs `cases` in order against `target`; returns the report lines and, if any case
/// failed, the full failure text (with the Envoy log tail).
pub async fn run_cases(
    target: &Target<'_>,
    pki: &Pki,
    cases: &[Case],
) -> (Vec<String>, Option<String>) {
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for case in cases {
        let seen = observe(target, pki, case).await;
        let bad = mismatches(target, pki, case, &seen);
        let status = if bad.is_empty() { "ok  " } else { "FAIL" };
        report.push(format!(
            "{status} [{}] {} ({}): {}; backend saw {} connection(s), {} byte(s)",
            target.listener,
            case.name,
            case.leaf,
            seen.client_view(),
            seen.upstream_connections,
            seen.upstream_bytes
        ));
        if !bad.is_empty() {
            failures.push(format!(
                "case `{}` (leaf `{}`, {:?}) on listener `{}`:\n  {}\n  client view: {}\n  audit record: {}\n  counters: {:?}",
                case.name,
                case.leaf,
                case.client,
                target.listener,
                bad.join("\n  "),
                seen.client_view(),
                seen.audit
                    .as_ref()
                    .map_or("none".into(), |a| {
                        let mut a = a.clone();
                        if let Some(o) = a.as_object_mut() {
                            o.remove("_log");
                        }
                        a.to_string()
                    }),
                seen.counters
            ));
        }
    }
    let failure = (!failures.is_empty()).then(|| {
        format!(
            "{} of {} cases failed:\n\n{}\n\n--- envoy log (tail) ---\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n\n"),
            target.envoy.log_tail(40)
        )
    });
    (report, failure)
}
