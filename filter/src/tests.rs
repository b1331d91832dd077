//! The filter glue driven natively through the fake host: configuration, both front
//! ends, server-first polling, audit records, counters and the certificate cache.

use std::rc::Rc;

use base64::Engine as _;
use proxy_wasm::types::Action;
use ruleset::{Action as Act, AuditLog, Constraints, Mode, Pattern, Revocation, Rule, Table};

use crate::connections::Phase;
use crate::host::fake::FakeHost;
use crate::host::Level;
use crate::root::{Kind, Root, HTTP_ROOT_ID};

const WEB: &str = "spiffe://example.org/ns/prod/sa/web";
const EVIL: &str = "spiffe://example.org/ns/prod/sa/evil";

fn table(mode: Mode, audit_log: AuditLog) -> Table {
    let mut t = Table {
        policy_names: vec!["frontend".into()],
        policy_digest: [0xab; 32],
        issued_at_ms: ISSUED_MS,
        expires_at_ms: None,
        signer: None,
        mode,
        default_action: Act::Deny,
        audit_log,
        constraints: Constraints {
            trust_domains: vec!["example.org".into()],
            ..Constraints::default()
        },
        revocation: Revocation::default(),
        rules: vec![Rule {
            name: "allow-web".into(),
            policy: 0,
            action: Act::Allow,
            principals: vec![Pattern::parse(WEB).unwrap()],
            not_principals: vec![],
            ports: vec![],
            sni: vec![],
            source_cidrs: vec![],
        }],
    };
    t.normalize();
    t
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn config_json(table: &Table, extra: &str) -> String {
    let bytes = ruleset::encode(table).unwrap();
    format!(r#"{{"table":"{}"{extra}}}"#, b64(&bytes))
}

/// A self-signed leaf with one URI SAN, as PEM.
fn cert_pem(spiffe: &str) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![rcgen::SanType::URI(spiffe.try_into().unwrap())];
    params.self_signed(&key).unwrap().pem()
}

struct Env {
    host: Rc<FakeHost>,
    root: Root,
}

fn env_with(config: &str, root_id: &str) -> (Env, bool) {
    let host = Rc::new(FakeHost::default());
    *host.config.borrow_mut() = Some(config.as_bytes().to_vec());
    host.set(0, "plugin_root_id", root_id);
    host.now.set(WALL_START);
    host.mono.set(1_000_000_000);
    let mut root = Root::new(host.clone());
    let ok = root.configure(config.len());
    (Env { host, root }, ok)
}

fn env(config: &str) -> Env {
    let (env, ok) = env_with(config, "certgate");
    assert!(ok, "configure failed: {:?}", env.host.logs.borrow());
    env
}

impl Env {
    /// Attributes of a completed mTLS handshake on context `ctx`.
    fn connection(&self, ctx: u32, pem: Option<&str>, digest: &str) {
        let h = &self.host;
        if let Some(pem) = pem {
            h.set(ctx, "connection.peer_certificate", pem);
            h.set(ctx, "connection.sha256_peer_certificate_digest", digest);
        }
        h.set(ctx, "connection.tls_version", "TLSv1.3");
        h.set(ctx, "connection.mtls", vec![u8::from(pem.is_some())]);
        h.set(ctx, "connection.id", u64::from(ctx).to_le_bytes().to_vec());
        h.set(ctx, "destination.port", 8443u64.to_le_bytes().to_vec());
        h.set(ctx, "source.address", "10.1.2.3:40000");
        h.set(ctx, "source.port", 40000u64.to_le_bytes().to_vec());
        h.set(ctx, "destination.address", "10.0.0.1:8443");
    }

    fn enter(&self, ctx: u32) {
        self.host.current.set(ctx);
    }
}

#[test]
fn allowed_peer_passes_and_is_counted() {
    let e = env(&config_json(&table(Mode::Enforce, AuditLog::Deny), ""));
    e.connection(2, Some(&cert_pem(WEB)), "AA");
    let mut f = e.root.network_filter(2);
    e.enter(2);
    assert_eq!(f.new_connection(), Action::Continue);
    assert_eq!(f.downstream_data(), Action::Continue);
    assert_eq!(f.downstream_data(), Action::Continue);
    assert!(e.host.closed.borrow().is_empty());
    assert_eq!(e.host.counter("certgate.allowed"), 1);
    assert_eq!(e.host.counter("certgate.reason.allow_rule"), 1);
    assert_eq!(e.host.counter("certgate.denied"), 0);
    // audit.log deny: no record for an allow, and no log line at all
    assert_eq!(e.host.audit(2), None);
    assert!(e.host.logged(Level::Warn).is_empty());
    assert!(e
        .host
        .logged(Level::Info)
        .iter()
        .all(|l| l.contains("configured")));
}

#[test]
fn denied_peer_is_closed_before_any_byte_passes() {
    let e = env(&config_json(&table(Mode::Enforce, AuditLog::Deny), ""));
    e.connection(2, Some(&cert_pem(EVIL)), "BB");
    let mut f = e.root.network_filter(2);
    e.enter(2);
    assert_eq!(f.new_connection(), Action::Continue);
    assert_eq!(f.downstream_data(), Action::Pause);
    assert_eq!(*e.host.closed.borrow(), vec![2]);
    assert_eq!(f.phase(), Phase::Denied);
    // later bytes stay paused and are not decided again
    assert_eq!(f.downstream_data(), Action::Pause);
    assert_eq!(e.host.counter("certgate.denied"), 1);
    assert_eq!(e.host.counter("certgate.reason.default_deny"), 1);

    let record = e.host.audit(2).expect("audit record");
    let parsed = crate::json::parse(&record).unwrap();
    let crate::json::Value::Object(fields) = parsed else {
        panic!()
    };
    let get = |k: &str| {
        fields
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("missing {k} in {record}"))
    };
    use crate::json::Value::{Number, String as S};
    assert_eq!(get("event.outcome"), S("failure".into()));
    assert_eq!(get("event.action"), S("deny".into()));
    assert_eq!(get("event.reason"), S("default_deny".into()));
    assert_eq!(get("certgate.spiffe_id"), S(EVIL.into()));
    assert_eq!(get("certgate.mode"), S("enforce".into()));
    assert_eq!(get("certgate.policy_digest"), S("ab".repeat(32)));
    assert_eq!(get("tls.version"), S("1.3".into()));
    assert_eq!(get("source.ip"), S("10.1.2.3".into()));
    assert_eq!(get("destination.port"), Number("8443".into()));
    assert!(matches!(get("tls.client.x509.serial_number"), S(s) if !s.is_empty()));
    assert!(matches!(get("certgate.decision_id"), S(s) if !s.is_empty()));
    // the same JSON goes to the Envoy log at warn
    assert_eq!(e.host.logged(Level::Warn), vec![record.clone()]);
}

#[test]
fn audit_mode_lets_a_deny_through_and_records_it() {
    let e = env(&config_json(
        &table(Mode::Enforce, AuditLog::Deny),
        r#","mode":"audit""#,
    ));
    e.connection(2, Some(&cert_pem(EVIL)), "CC");
    let mut f = e.root.network_filter(2);
    e.enter(2);
    f.new_connection();
    assert_eq!(f.downstream_data(), Action::Continue);
    assert!(e.host.closed.borrow().is_empty());
    assert_eq!(e.host.counter("certgate.audit_would_deny"), 1);
    assert_eq!(e.host.counter("certgate.denied"), 0);
    let record = e.host.audit(2).unwrap();
    assert!(record.contains(r#""certgate.mode":"audit""#), "{record}");
    assert!(record.contains(r#""event.outcome":"success""#), "{record}");
    assert!(record.contains(r#""event.action":"deny""#), "{record}");
}

#[test]
fn table_audit_mode_and_log_override() {
    let e = env(&config_json(
        &table(Mode::Audit, AuditLog::All),
        r#","audit":{"log":"none"}"#,
    ));
    e.connection(2, Some(&cert_pem(EVIL)), "CD");
    let mut f = e.root.network_filter(2);
    e.enter(2);
    f.new_connection();
    assert_eq!(f.downstream_data(), Action::Continue);
    assert_eq!(e.host.audit(2), None, "audit.log none records nothing");
    assert!(e.host.logged(Level::Warn).is_empty());
}

#[test]
fn missing_certificate_is_denied_with_its_own_reason() {
    let e = env(&config_json(&table(Mode::Enforce, AuditLog::All), ""));
    e.connection(2, None, "");
    let mut f = e.root.network_filter(2);
    e.enter(2);
    f.new_connection();
    assert_eq!(f.downstream_data(), Action::Pause);
    assert_eq!(*e.host.closed.borrow(), vec![2]);
    assert_eq!(e.host.counter("certgate.reason.no_peer_cert"), 1);
    assert!(e
        .host
        .audit(2)
        .unwrap()
        .contains(r#""event.reason":"no_peer_cert""#));
}

#[test]
fn garbage_pem_is_denied_as_bad_certificate() {
    let e = env(&config_json(&table(Mode::Enforce, AuditLog::All), ""));
    let garbage = "-----BEGIN CERTIFICATE-----\nAAAAAAAA\n-----END CERTIFICATE-----\n";
    e.connection(2, Some(garbage), "DD");
    let mut f = e.root.network_filter(2);
    e.enter(2);
    f.new_connection();
    assert_eq!(f.downstream_data(), Action::Pause);
    assert_eq!(e.host.counter("certgate.reason.bad_peer_cert"), 1);
    let record = e.host.audit(2).unwrap();
    assert!(
        record.contains(r#""event.reason":"bad_peer_cert""#),
        "{record}"
    );
    assert!(record.contains(r#""error.message""#), "{record}");
}

#[test]
fn a_large_configuration_is_read_in_chunks_and_its_table_enforced() {
    let revoked_pem = cert_pem(WEB);
    let facts = ruleset::cert::parse_pem_or_der(revoked_pem.as_bytes()).unwrap();
    let mut t = table(Mode::Enforce, AuditLog::None);
    t.revocation.add_certificate(&facts[0].tbs_sha256());
    for i in 0..30_000u32 {
        t.revocation.add_serial(Some(7), &i.to_be_bytes());
    }
    t.normalize();
    // The table is not the last key, and is followed by more configuration.
    let config = config_json(&t, r#","certCacheSize":8"#);
    assert!(config.len() > 4 * crate::config::READ_CHUNK);
    let e = env(&config);
    let reads = e.host.config_reads.get();
    assert_eq!(reads, config.len() / crate::config::READ_CHUNK + 1);

    e.connection(2, Some(&revoked_pem), "REVOKED");
    e.connection(3, Some(&cert_pem(WEB)), "FRESH");
    for ctx in [2, 3] {
        let mut f = e.root.network_filter(ctx);
        e.enter(ctx);
        f.new_connection();
        f.downstream_data();
    }
    assert_eq!(*e.host.closed.borrow(), vec![2]);
    assert_eq!(e.host.counter("certgate.reason.revoked_certificate"), 1);
    assert_eq!(e.host.counter("certgate.allowed"), 1);
}

#[test]
fn a_table_key_written_with_escapes_is_still_read() {
    let bytes = ruleset::encode(&table(Mode::Enforce, AuditLog::None)).unwrap();
    let e = env(&format!(r#"{{"t\u0061ble":"{}"}}"#, b64(&bytes)));
    e.connection(2, Some(&cert_pem(EVIL)), "EVIL");
    let mut f = e.root.network_filter(2);
    e.enter(2);
    f.new_connection();
    f.downstream_data();
    assert_eq!(*e.host.closed.borrow(), vec![2]);
}

#[test]
fn cache_hit_does_not_read_the_certificate_again() {
    let e = env(&config_json(&table(Mode::Enforce, AuditLog::None), ""));
    let pem = cert_pem(WEB);
    for ctx in [2, 3, 4] {
        e.connection(ctx, Some(&pem), "SAME-DIGEST");
        let mut f = e.root.network_filter(ctx);
        e.enter(ctx);
        f.new_connection();
        assert_eq!(f.downstream_data(), Action::Continue);
    }
    assert_eq!(e.host.reads_of("connection.peer_certificate"), 1);
    assert_eq!(e.host.counter("certgate.allowed"), 3);
}

/// [`table`] with `minVersion: TLSv1.3` and its allow rule limited to port 8443: a table
/// that decides with connection attributes.
fn port_and_min_tls_table() -> Table {
    let mut t = table(Mode::Enforce, AuditLog::None);
    t.constraints.min_tls = Some(ruleset::TlsVersion::V1_3);
    t.rules[0].ports = vec![ruleset::PortRange {
        start: 8443,
        end: 8443,
    }];
    t
}

/// Connects `pem` on `ctx` (already described by `Env::connection`) through its first
/// data, and returns the filter's action.
fn first_data(e: &Env, ctx: u32) -> Action {
    let mut f = e.root.network_filter(ctx);
    e.enter(ctx);
    f.new_connection();
    f.downstream_data()
}

/// The record the engine's own evaluation gives for `pem` with the attributes
/// `Env::connection` set on `ctx`, under `decision_id`: what the filter must write
/// whether it evaluated or remembered the decision.
fn fresh_record(e: &Env, ctx: u32, pem: &str, decision_id: &str) -> String {
    let active = e.root.shared().unwrap().table.active().unwrap();
    let host = &e.host;
    let text = |path: &str| host.get(ctx, path).map(|v| String::from_utf8(v).unwrap());
    let peer = ruleset::Peer {
        cert: ruleset::cert::peer_cert_from_pem(pem.as_bytes()),
        tls_version: text("connection.tls_version").and_then(|v| ruleset::TlsVersion::parse(&v)),
        port: host
            .get(ctx, "destination.port")
            .map(|v| u16::try_from(u64::from_le_bytes(v.try_into().unwrap())).unwrap()),
        sni: text("connection.requested_server_name"),
        source_ip: text("source.address").map(|a| a.parse::<std::net::SocketAddr>().unwrap().ip()),
    };
    crate::audit::record(
        &active.engine.evaluate(&peer),
        &peer,
        crate::audit::Context {
            policy_digest: &active.policy_digest,
            decision_id,
            now_nanos: host.now.get(),
            source_port: host
                .get(ctx, "source.port")
                .map(|v| u16::try_from(u64::from_le_bytes(v.try_into().unwrap())).unwrap()),
            destination_ip: text("destination.address")
                .map(|a| a.parse::<std::net::SocketAddr>().unwrap().ip()),
        },
    )
}

fn decision_id_of(record: &str) -> &str {
    let start = record.find(r#""certgate.decision_id":""#).unwrap() + 24;
    let len = record[start..].find('"').unwrap();
    &record[start..start + len]
}

#[test]
fn a_certificate_seen_again_gets_the_decision_and_record_evaluation_gives() {
    // Once a certificate is known, a table that decides on the certificate alone
    // answers from the decision remembered with it: the same action, counters and
    // record, byte for byte, as evaluating afresh, with each connection's own
    // attributes and decision id.
    let revoked = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![rcgen::SanType::URI(WEB.try_into().unwrap())];
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x0c, 0xab]));
    let revoked_pem = params.self_signed(&revoked).unwrap().pem();
    let revoked_issuer = match ruleset::cert::peer_cert_from_pem(revoked_pem.as_bytes()) {
        ruleset::PeerCert::Parsed(facts) => facts.issuer_id,
        other => panic!("{other:?}"),
    };
    let cases = [
        (Mode::Enforce, cert_pem(WEB), Action::Continue, "allow_rule"),
        (Mode::Enforce, cert_pem(EVIL), Action::Pause, "default_deny"),
        (
            Mode::Audit,
            cert_pem(EVIL),
            Action::Continue,
            "default_deny",
        ),
        (Mode::Enforce, revoked_pem, Action::Pause, "revoked_serial"),
        (
            Mode::Enforce,
            cert_pem("spiffe://elsewhere.org/sa/web"),
            Action::Pause,
            "untrusted_domain",
        ),
    ];
    for (mode, pem, action, reason) in cases {
        let mut t = table(mode, AuditLog::All);
        t.revocation.add_serial(Some(revoked_issuer), &[0x0c, 0xab]);
        t.normalize();
        let e = env(&config_json(&t, ""));
        for ctx in [2, 3, 4] {
            e.connection(ctx, Some(&pem), "SAME-DIGEST");
        }
        e.host.set(3, "source.address", "10.9.8.7:50000");
        e.host
            .set(4, "connection.requested_server_name", "api.example.org");
        for ctx in [2, 3, 4] {
            assert_eq!(first_data(&e, ctx), action, "{reason}, connection {ctx}");
            let record = e.host.audit(ctx).unwrap();
            assert_eq!(
                record,
                fresh_record(&e, ctx, &pem, decision_id_of(&record)),
                "{reason}, connection {ctx}"
            );
        }
        assert_eq!(e.host.reads_of("connection.peer_certificate"), 1);
        assert_eq!(e.host.counter(&format!("certgate.reason.{reason}")), 3);
        assert!(e
            .host
            .audit(3)
            .unwrap()
            .contains(r#""source.ip":"10.9.8.7""#));
        assert!(e.host.audit(4).unwrap().contains("api.example.org"));
    }
}

#[test]
fn a_table_that_decides_on_the_connection_decides_every_connection() {
    // A port condition and a minimum TLS version: one certificate, three connections,
    // three decisions.
    let e = env(&config_json(&port_and_min_tls_table(), ""));
    let pem = cert_pem(WEB);
    for ctx in [2, 3, 4] {
        e.connection(ctx, Some(&pem), "SAME-DIGEST");
    }
    e.host
        .set(3, "destination.port", 9000u64.to_le_bytes().to_vec());
    e.host.set(4, "connection.tls_version", "TLSv1.2");
    assert_eq!(first_data(&e, 2), Action::Continue);
    assert_eq!(first_data(&e, 3), Action::Pause);
    assert_eq!(first_data(&e, 4), Action::Pause);
    assert_eq!(e.host.reads_of("connection.peer_certificate"), 1);
    assert_eq!(e.host.counter("certgate.reason.allow_rule"), 1);
    assert_eq!(e.host.counter("certgate.reason.default_deny"), 1);
    assert_eq!(e.host.counter("certgate.reason.tls_version_too_low"), 1);
}

#[test]
fn an_admitted_unrecorded_connection_formats_no_decision_id() {
    // The warm path: nothing reads `connection.id` or builds an id nobody sees.
    let e = env(&config_json(&table(Mode::Enforce, AuditLog::Deny), ""));
    let pem = cert_pem(WEB);
    e.connection(2, Some(&pem), "DIGEST-A");
    let mut f = e.root.network_filter(2);
    e.enter(2);
    f.new_connection();
    assert_eq!(f.downstream_data(), Action::Continue);
    assert_eq!(e.host.reads_of("connection.id"), 0);
    assert_eq!(e.host.audit(2), None);
    // The table has no minVersion and no port, SNI or source condition: none of those
    // attributes is read to decide.
    for attr in [
        "connection.tls_version",
        "destination.port",
        "connection.requested_server_name",
        "source.address",
    ] {
        assert_eq!(e.host.reads_of(attr), 0, "{attr}");
    }
    // A refusal gets an id, and its record still shows every attribute.
    e.connection(3, None, "");
    let mut f = e.root.network_filter(3);
    e.enter(3);
    f.new_connection();
    assert_eq!(f.downstream_data(), Action::Pause);
    assert_eq!(e.host.reads_of("connection.id"), 1);
    let record = e.host.audit(3).unwrap();
    assert!(record.contains("certgate.decision_id"), "{record}");
    assert!(record.contains(r#""source.ip":"10.1.2.3""#), "{record}");
    assert!(record.contains(r#""tls.version":"1.3""#), "{record}");
}

#[test]
fn attributes_a_table_decides_with_are_read() {
    let e = env(&config_json(&port_and_min_tls_table(), ""));
    e.connection(2, Some(&cert_pem(WEB)), "DIGEST-B");
    let mut f = e.root.network_filter(2);
    e.enter(2);
    f.new_connection();
    assert_eq!(f.downstream_data(), Action::Continue);
    assert_eq!(e.host.reads_of("connection.tls_version"), 1);
    assert_eq!(e.host.reads_of("destination.port"), 1);
    assert_eq!(e.host.reads_of("source.address"), 0);
}

#[test]
fn cache_size_zero_reads_every_time() {
    let e = env(&config_json(
        &table(Mode::Enforce, AuditLog::None),
        r#","certCacheSize":0"#,
    ));
    let pem = cert_pem(WEB);
    for ctx in [2, 3] {
        e.connection(ctx, Some(&pem), "SAME-DIGEST");
        let mut f = e.root.network_filter(ctx);
        e.enter(ctx);
        f.new_connection();
        f.downstream_data();
    }
    assert_eq!(e.host.reads_of("connection.peer_certificate"), 2);
}

#[test]
fn every_counter_is_defined_at_configure() {
    let e = env(&config_json(&table(Mode::Enforce, AuditLog::Deny), ""));
    let counters = e.host.counters.borrow();
    for name in [
        "certgate.allowed",
        "certgate.denied",
        "certgate.audit_would_deny",
    ] {
        assert_eq!(counters.get(name), Some(&0), "{name}");
    }
    for r in ruleset::Reason::ALL {
        assert_eq!(
            counters.get(&format!("certgate.reason.{}", r.code())),
            Some(&0)
        );
    }
    for name in [
        "certgate.feed_updates",
        "certgate.feed_errors",
        "certgate.feed_rejected_signature",
        "certgate.feed_rejected_rollback",
        "certgate.feed_rejected_lineage",
        "certgate.feed_rejected_loosening",
        "certgate.feed_rejected_expired",
        "certgate.feed_rejected_invalid",
        "certgate.feed_rejected_delta",
        "certgate.closed_on_update",
    ] {
        assert_eq!(counters.get(name), Some(&0), "{name}");
    }
    // The labelled feed counters (updates, errors, closed, seven refusal reasons); the
    // labelled decision counters come when a decision has their labels.
    let labelled = counters
        .keys()
        .filter(|n| n.starts_with("plugin=.="))
        .count();
    assert_eq!(labelled, 10);
    assert_eq!(counters.len(), 13 + ruleset::Reason::ALL.len() + labelled);
}

/// `certgate_decisions_total` with its labels in the name, as Envoy's tag extraction
/// reads them (filter-config/src/stats.rs): one counter per label set met.
#[test]
fn decisions_are_counted_with_their_labels() {
    let e = env(&config_json(&table(Mode::Enforce, AuditLog::Deny), ""));
    for (ctx, name, digest) in [(2, WEB, "AA"), (3, EVIL, "BB"), (4, WEB, "AA")] {
        e.connection(ctx, Some(&cert_pem(name)), digest);
        let mut f = e.root.network_filter(ctx);
        e.enter(ctx);
        f.new_connection();
        f.downstream_data();
    }
    let allow = "plugin=.=certgate;.;action=.=allow;.;reason=.=allow_rule;.;mode=.=enforce;.;policy=.=frontend;.;certgate_decisions_total";
    let deny = "plugin=.=certgate;.;action=.=deny;.;reason=.=default_deny;.;mode=.=enforce;.;policy=.=;.;certgate_decisions_total";
    assert_eq!(e.host.counter(allow), 2);
    assert_eq!(e.host.counter(deny), 1);
    let defined = e
        .host
        .counters
        .borrow()
        .keys()
        .filter(|n| n.ends_with(";.;certgate_decisions_total"))
        .count();
    assert_eq!(defined, 2, "only the label sets met are defined");
    assert_eq!(
        e.host
            .labelled("certgate_decisions_total", &[("action", "deny")]),
        1
    );
}

#[test]
fn audit_mode_is_a_label_and_the_plugin_name_tells_two_plugins_apart() {
    let host = Rc::new(FakeHost::default());
    let config = config_json(&table(Mode::Audit, AuditLog::Deny), "");
    *host.config.borrow_mut() = Some(config.as_bytes().to_vec());
    host.set(0, "plugin_root_id", "certgate");
    host.set(0, "plugin_name", "payments gw");
    host.now.set(WALL_START);
    host.mono.set(1_000_000_000);
    let mut root = Root::new(host.clone());
    assert!(root.configure(config.len()));
    let e = Env { host, root };
    e.connection(2, Some(&cert_pem(EVIL)), "BB");
    let mut f = e.root.network_filter(2);
    e.enter(2);
    f.new_connection();
    f.downstream_data();
    // The space cannot end up in a label: it becomes `_`.
    assert_eq!(
        e.host.counter("plugin=.=payments_gw;.;action=.=deny;.;reason=.=default_deny;.;mode=.=audit;.;policy=.=;.;certgate_decisions_total"),
        1
    );
    assert_eq!(
        e.host
            .counter("plugin=.=payments_gw;.;certgate_feed_errors_total"),
        0
    );
}

#[test]
fn the_policy_label_is_capped() {
    use crate::metrics::{Metrics, MAX_POLICY_LABELS, OTHER_POLICY};
    let host = FakeHost::default();
    let metrics = Metrics::define(&host);
    let names: Vec<String> = (0..MAX_POLICY_LABELS + 8)
        .map(|i| format!("p{i}"))
        .collect();
    for name in names.iter().chain(names.iter()) {
        let decision = ruleset::Decision {
            action: Act::Deny,
            reason: ruleset::Reason::DenyRule,
            rule: Some("r"),
            policy: Some(name),
            mode: Mode::Enforce,
            identity: None,
        };
        metrics.count(&host, &decision);
    }
    let counters = host.counters.borrow();
    let series: Vec<_> = counters
        .iter()
        .filter(|(n, _)| n.ends_with(";.;certgate_decisions_total"))
        .collect();
    assert_eq!(series.len(), MAX_POLICY_LABELS + 1);
    let other = format!("policy=.={OTHER_POLICY};.;");
    let (_, count) = series.iter().find(|(n, _)| n.contains(&other)).unwrap();
    assert_eq!(**count, 16, "8 names past the cap, twice each");
    assert_eq!(
        host.labelled("certgate_decisions_total", &[("policy", "p0")]),
        2
    );
}

#[test]
fn the_table_gauges_show_issue_and_expiry() {
    let mut t = table(Mode::Enforce, AuditLog::Deny);
    t.expires_at_ms = Some(ISSUED_MS + 86_400_000);
    let e = env(&config_json(&t, ""));
    let gauges = e.host.gauges.borrow();
    assert_eq!(
        gauges.get("plugin=.=certgate;.;certgate_table_issued_timestamp_seconds"),
        Some(&(ISSUED_MS / 1000))
    );
    assert_eq!(
        gauges.get("plugin=.=certgate;.;certgate_table_expiry_timestamp_seconds"),
        Some(&(ISSUED_MS / 1000 + 86_400))
    );
}

#[test]
fn bad_configurations_fail_closed_with_one_error_line() {
    let good = table(Mode::Enforce, AuditLog::Deny);
    let bytes = ruleset::encode(&good).unwrap();
    let mut corrupt = bytes.clone();
    if let Some(b) = corrupt.get_mut(bytes.len() / 2) {
        *b ^= 0xff;
    }
    let truncated = &bytes[..bytes.len() - 3];
    let cases = [
        ("not json".to_owned(), "not valid JSON"),
        (
            r#"{"table":"AA==","bogus":true}"#.to_owned(),
            "unknown key `bogus`",
        ),
        (r#"{"table":"%%%"}"#.to_owned(), "not standard base64"),
        (r#"{"table":"AA==","mode":1}"#.to_owned(), "`mode` must be"),
        (
            format!(r#"{{"table":"{}"}}"#, b64(&corrupt)),
            "not a valid certgate table",
        ),
        (
            format!(r#"{{"table":"{}"}}"#, b64(truncated)),
            "not a valid certgate table",
        ),
        (
            r#"{"table":"AAAA"}"#.to_owned(),
            "not a valid certgate table",
        ),
    ];
    for (config, want) in cases {
        let (e, ok) = env_with(&config, "certgate");
        assert!(!ok, "{config} configured");
        let errors = e.host.logged(Level::Error);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains(want), "{config}: {}", errors[0]);
        // and if Envoy created a connection anyway, it is closed
        let mut f = e.root.network_filter(2);
        e.connection(2, Some("x"), "EE");
        e.enter(2);
        assert_eq!(f.new_connection(), Action::Pause);
        assert_eq!(*e.host.closed.borrow(), vec![2]);
    }
}

#[test]
fn missing_configuration_fails_closed() {
    let host = Rc::new(FakeHost::default());
    let mut root = Root::new(host.clone());
    assert!(!root.configure(0));
    assert!(host.logged(Level::Error)[0].contains("no plugin configuration"));
}

#[test]
fn http_denies_with_generic_403_once_per_connection() {
    let (e, ok) = env_with(
        &config_json(&table(Mode::Enforce, AuditLog::Deny), ""),
        HTTP_ROOT_ID,
    );
    assert!(ok);
    assert_eq!(e.root.kind(), Kind::Http);
    e.connection(7, Some(&cert_pem(EVIL)), "FF");
    for request in 0..3 {
        let mut f = e.root.http_filter();
        e.enter(7);
        assert_eq!(f.request_headers(), Action::Pause, "request {request}");
    }
    let responses = e.host.responses.borrow();
    assert_eq!(responses.len(), 3);
    let r = &responses[0];
    assert_eq!(r.status, 403);
    let body = String::from_utf8(r.body.clone()).unwrap();
    let id = r
        .headers
        .iter()
        .find(|(k, _)| k == "x-certgate-decision-id")
        .map(|(_, v)| v.clone())
        .unwrap();
    assert!(!id.is_empty());
    for leak in [
        "default_deny",
        "evil",
        "frontend",
        "allow-web",
        "example.org",
    ] {
        assert!(!body.contains(leak), "body leaks {leak}: {body}");
        for (k, v) in &r.headers {
            assert!(
                !v.contains(leak) && !k.contains(leak),
                "header leaks {leak}"
            );
        }
    }
    // one decision per connection: counted once, same id every time
    assert_eq!(e.host.counter("certgate.denied"), 1);
    assert!(responses.iter().all(|x| x
        .headers
        .contains(&("x-certgate-decision-id".to_owned(), id.clone()))));
    assert!(e.host.audit(7).unwrap().contains(&id));
}

#[test]
fn http_allows_and_decides_per_connection() {
    let (e, _) = env_with(
        &config_json(&table(Mode::Enforce, AuditLog::All), ""),
        HTTP_ROOT_ID,
    );
    e.connection(7, Some(&cert_pem(WEB)), "A1");
    e.connection(8, Some(&cert_pem(EVIL)), "A2");
    for ctx in [7, 8, 7, 8] {
        let mut f = e.root.http_filter();
        e.enter(ctx);
        let want = if ctx == 7 {
            Action::Continue
        } else {
            Action::Pause
        };
        assert_eq!(f.request_headers(), want);
    }
    assert_eq!(e.host.counter("certgate.allowed"), 1);
    assert_eq!(e.host.counter("certgate.denied"), 1);
}

#[test]
fn server_first_waits_for_the_handshake_then_decides_from_the_tick() {
    let e = env(&config_json(
        &table(Mode::Enforce, AuditLog::Deny),
        r#","serverFirst":true"#,
    ));
    assert_eq!(e.host.tick_millis.get(), Some(crate::root::TICK_MILLIS));

    // two connections paused before their handshakes complete
    e.host.set(2, "connection.mtls", vec![0]);
    e.host.set(3, "connection.mtls", vec![0]);
    let mut allowed = e.root.network_filter(2);
    let mut denied = e.root.network_filter(3);
    e.enter(2);
    assert_eq!(allowed.new_connection(), Action::Pause);
    e.enter(3);
    assert_eq!(denied.new_connection(), Action::Pause);

    e.enter(0);
    e.root.tick();
    assert!(e.host.resumed.borrow().is_empty() && e.host.closed.borrow().is_empty());
    assert_eq!(
        e.host.reads_of("connection.tls_version"),
        0,
        "read before the handshake"
    );

    e.connection(2, Some(&cert_pem(WEB)), "S1");
    e.connection(3, Some(&cert_pem(EVIL)), "S2");
    e.enter(0);
    e.root.tick();
    assert_eq!(*e.host.resumed.borrow(), vec![2]);
    assert_eq!(*e.host.closed.borrow(), vec![3]);
    assert_eq!(allowed.phase(), Phase::Admitted);
    assert_eq!(denied.phase(), Phase::Denied);
    assert!(
        e.host.audit(3).is_some(),
        "record set on the entered context"
    );

    // data after the tick's decision is not decided again
    e.enter(2);
    assert_eq!(allowed.downstream_data(), Action::Continue);
    assert_eq!(e.host.counter("certgate.allowed"), 1);
    e.enter(0);
    e.root.tick();
    assert_eq!(e.host.resumed.borrow().len(), 1);
}

#[test]
fn server_first_data_before_the_tick_decides_at_once() {
    let e = env(&config_json(
        &table(Mode::Enforce, AuditLog::Deny),
        r#","serverFirst":true"#,
    ));
    e.connection(2, Some(&cert_pem(EVIL)), "S3");
    let mut f = e.root.network_filter(2);
    e.enter(2);
    assert_eq!(f.new_connection(), Action::Pause);
    assert_eq!(f.downstream_data(), Action::Pause);
    assert_eq!(*e.host.closed.borrow(), vec![2]);
    e.enter(0);
    e.root.tick();
    assert_eq!(e.host.closed.borrow().len(), 1, "not closed twice");
}

#[test]
fn server_first_gives_up_waiting_and_fails_closed() {
    let e = env(&config_json(
        &table(Mode::Enforce, AuditLog::Deny),
        r#","serverFirst":true"#,
    ));
    e.host.set(2, "connection.mtls", vec![0]);
    let mut f = e.root.network_filter(2);
    e.enter(2);
    f.new_connection();
    // The deadline runs on the monotonic clock: stepping the wall clock changes nothing.
    e.host.now.set(0);
    e.enter(0);
    e.root.tick();
    assert!(e.host.closed.borrow().is_empty());
    e.host
        .mono
        .set(1_000_000_000 + crate::root::SERVER_FIRST_TIMEOUT_NANOS + 1);
    e.enter(0);
    e.root.tick();
    assert_eq!(*e.host.closed.borrow(), vec![2]);
    assert_eq!(e.host.counter("certgate.reason.no_peer_cert"), 1);
}

#[test]
fn server_first_forgets_closed_connections() {
    let e = env(&config_json(
        &table(Mode::Enforce, AuditLog::Deny),
        r#","serverFirst":true"#,
    ));
    e.host.set(2, "connection.mtls", vec![0]);
    let mut f = e.root.network_filter(2);
    e.enter(2);
    f.new_connection();
    f.done();
    e.host.props.borrow_mut().remove(&2);
    e.enter(0);
    e.root.tick();
    assert!(e.host.closed.borrow().is_empty());
    assert_eq!(e.host.counter("certgate.denied"), 0);
}

#[test]
fn decisions_go_to_the_debug_log_only_when_debug_is_on() {
    let config = config_json(&table(Mode::Enforce, AuditLog::None), "");
    for (level, want) in [(Level::Info, 0), (Level::Debug, 1)] {
        let host = Rc::new(FakeHost::default());
        host.log_level.set(Some(level));
        *host.config.borrow_mut() = Some(config.as_bytes().to_vec());
        let mut root = Root::new(host.clone());
        assert!(root.configure(config.len()));
        let e = Env { host, root };
        e.connection(2, Some(&cert_pem(EVIL)), "G1");
        assert_eq!(first_data(&e, 2), Action::Pause);
        assert_eq!(e.host.logged(Level::Debug).len(), want, "{level:?}");
        assert!(
            e.host.logged(Level::Warn).is_empty(),
            "audit.log none: no warn"
        );
        assert_eq!(e.host.audit(2), None);
    }
}

#[test]
fn the_log_level_is_read_at_each_tick_not_at_each_decision() {
    let e = env(&config_json(&table(Mode::Enforce, AuditLog::None), ""));
    assert_eq!(
        e.host.tick_millis.get(),
        Some(crate::root::LOG_LEVEL_TICK_MILLIS)
    );
    let pem = cert_pem(EVIL);
    e.connection(2, Some(&pem), "G2");
    e.host.log_level.set(Some(Level::Debug));
    // Raised after configure: the next decision does not ask Envoy again...
    assert_eq!(first_data(&e, 2), Action::Pause);
    assert!(e.host.logged(Level::Debug).is_empty());
    // ...the next tick does, and decisions after it are logged.
    e.enter(0);
    e.root.tick();
    e.connection(3, Some(&pem), "G2");
    assert_eq!(first_data(&e, 3), Action::Pause);
    assert_eq!(e.host.logged(Level::Debug).len(), 1);
    e.host.log_level.set(Some(Level::Info));
    e.enter(0);
    e.root.tick();
    e.connection(4, Some(&pem), "G2");
    assert_eq!(first_data(&e, 4), Action::Pause);
    assert_eq!(e.host.logged(Level::Debug).len(), 1);
}

#[test]
fn log_all_decisions_logs_once_per_decision() {
    let e = env(&config_json(
        &table(Mode::Enforce, AuditLog::Deny),
        r#","logAllDecisions":true"#,
    ));
    e.connection(2, Some(&cert_pem(EVIL)), "L2");
    let mut f = e.root.network_filter(2);
    e.enter(2);
    f.new_connection();
    f.downstream_data();
    assert_eq!(e.host.logged(Level::Warn).len(), 1);
    assert_eq!(
        e.host.logged(Level::Info).len(),
        1,
        "only the configured line"
    );
}

#[test]
fn log_all_decisions_logs_allows_at_info() {
    let e = env(&config_json(
        &table(Mode::Enforce, AuditLog::None),
        r#","logAllDecisions":true"#,
    ));
    e.connection(2, Some(&cert_pem(WEB)), "L1");
    let mut f = e.root.network_filter(2);
    e.enter(2);
    f.new_connection();
    f.downstream_data();
    let info = e.host.logged(Level::Info);
    assert!(
        info.iter()
            .any(|l| l.contains(r#""event.reason":"allow_rule""#)),
        "{info:?}"
    );
    assert_eq!(e.host.audit(2), None);
}

// ---- live feed ----

const SECOND: u64 = 1_000_000_000;
/// The wall clock at configure: 2026-01-01T00:00:00Z.
const WALL_START: u64 = 1_767_225_600 * SECOND;
/// Issue time of [`table`] (a day before [`WALL_START`]).
const ISSUED_MS: u64 = 1_767_139_200_000;

/// The feed's signing key, and a forger's.
fn key(seed: u8) -> ed25519_compact::KeyPair {
    ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([seed; 32]))
}
const SIGNER: u8 = 1;
const FORGER: u8 = 2;

fn feed_json(extra: &str) -> String {
    format!(
        r#","feed":{{"cluster":"certgate-feed","path":"/table.cgt","interval":"1s","maxStale":"20s","publicKeys":["{}"]{extra}}}"#,
        ruleset::signature::key_id(&key(SIGNER).pk)
    )
}

fn feed() -> String {
    feed_json("")
}

/// `t` encoded and signed with key `seed`.
fn signed_by(t: &Table, seed: u8) -> Vec<u8> {
    let kp = key(seed);
    let mut bytes = ruleset::encode(t).unwrap();
    let sig = kp.sk.sign(ruleset::signature::message(&bytes), None);
    ruleset::signature::append_trailer(&mut bytes, &kp.pk, &sig);
    bytes
}

fn signed(t: &Table) -> Vec<u8> {
    signed_by(t, SIGNER)
}

/// The same lineage as [`table`], issued a second later, without the allow rule: every
/// peer is denied.
fn deny_all() -> Table {
    let mut t = table(Mode::Enforce, AuditLog::Deny);
    t.rules.clear();
    t.policy_digest = [0xcd; 32];
    t.issued_at_ms = ISSUED_MS + 1000;
    t
}

impl Env {
    /// Advances both clocks to `nanos` after configure and runs the root tick.
    fn tick_at(&self, nanos: u64) {
        self.host.now.set(WALL_START + nanos);
        self.host.mono.set(nanos);
        self.enter(0);
        self.root.tick();
    }

    /// Delivers the answer to the latest feed call.
    fn answer(&mut self, status: &str, etag: Option<&str>, body: &[u8]) {
        let token = self.host.calls.borrow().len() as u32;
        let mut headers = vec![(":status".to_string(), status.as_bytes().to_vec())];
        if let Some(etag) = etag {
            headers.push(("etag".to_string(), etag.as_bytes().to_vec()));
        }
        let headers_len = headers.len();
        *self.host.response_headers.borrow_mut() = headers;
        *self.host.response_body.borrow_mut() = Some(body.to_vec());
        self.enter(0);
        self.root.http_call_response(token, headers_len, body.len());
    }

    /// A network connection from `spiffe` on `ctx`, through its first data.
    fn admit_network(&self, ctx: u32, spiffe: &str) -> (crate::network::NetworkFilter, Action) {
        self.connection(ctx, Some(&cert_pem(spiffe)), &format!("D{ctx}"));
        let mut f = self.root.network_filter(ctx);
        self.enter(ctx);
        f.new_connection();
        let a = f.downstream_data();
        (f, a)
    }

    /// The headers of the `n`th feed call (from 0).
    fn call_headers(&self, n: usize) -> Vec<(String, String)> {
        self.host.calls.borrow()[n].1.clone()
    }
}

#[test]
fn feed_swaps_in_a_new_table_and_closes_open_connections_it_denies() {
    let mut e = env(&config_json(&table(Mode::Enforce, AuditLog::Deny), &feed()));
    assert_eq!(e.host.tick_millis.get(), Some(1000));
    let (mut open, a) = e.admit_network(2, WEB);
    assert_eq!(a, Action::Continue);
    assert_eq!(e.root.shared().unwrap().connections.live_count(), 1);

    e.tick_at(2 * SECOND);
    {
        let calls = e.host.calls.borrow();
        let (cluster, headers, timeout) = &calls[0];
        assert_eq!(cluster, "certgate-feed");
        assert_eq!(*timeout, 5000);
        assert!(headers.contains(&(":path".into(), "/table.cgt".into())));
        assert!(headers.contains(&(":authority".into(), "certgate-feed".into())));
        assert!(!headers.iter().any(|(k, _)| k == "if-none-match"));
    }
    e.answer("200", Some("\"v2\""), &signed(&deny_all()));
    assert_eq!(e.host.counter("certgate.feed_updates"), 1);
    assert_eq!(e.host.counter("certgate.closed_on_update"), 1);
    assert_eq!(*e.host.closed.borrow(), vec![2]);
    assert_eq!(open.phase(), Phase::Denied);
    e.enter(2);
    assert_eq!(open.downstream_data(), Action::Pause);
    assert_eq!(e.root.shared().unwrap().connections.live_count(), 0);

    // new connections are decided by the new table
    let (_, a) = e.admit_network(3, WEB);
    assert_eq!(a, Action::Pause);
    assert_eq!(e.host.counter("certgate.reason.default_deny"), 1);

    // the next poll carries the ETag; a 304 changes nothing
    e.tick_at(3 * SECOND + 1);
    assert!(e
        .call_headers(1)
        .contains(&("if-none-match".into(), "\"v2\"".into())));
    e.answer("304", None, b"");
    assert_eq!(e.host.counter("certgate.feed_updates"), 1);
    assert_eq!(e.host.counter("certgate.feed_errors"), 0);
}

#[test]
fn a_newer_table_is_not_answered_from_memory() {
    let mut e = env(&config_json(&table(Mode::Enforce, AuditLog::Deny), &feed()));
    let pem = cert_pem(WEB);
    e.connection(2, Some(&pem), "SAME-DIGEST");
    assert_eq!(first_data(&e, 2), Action::Continue);
    e.tick_at(2 * SECOND);
    e.answer("200", Some("\"v2\""), &signed(&deny_all()));
    assert_eq!(e.host.counter("certgate.feed_updates"), 1);
    // The same certificate again, known to the cache: the new table decides.
    e.connection(3, Some(&pem), "SAME-DIGEST");
    assert_eq!(first_data(&e, 3), Action::Pause);
    assert_eq!(e.host.reads_of("connection.peer_certificate"), 1);
    assert_eq!(e.host.counter("certgate.reason.default_deny"), 1);
}

/// Every way an adversary (or a mistake) can offer a table: each refused, counted by
/// its reason, logged once per reason, and the table in force keeps deciding.
#[test]
fn fed_tables_are_refused_unless_signed_newer_same_lineage_fresh_and_no_looser() {
    let mut e = env(&config_json(&table(Mode::Enforce, AuditLog::Deny), &feed()));
    let (_open, _) = e.admit_network(2, WEB);

    let newer = |f: &dyn Fn(&mut Table)| {
        let mut t = table(Mode::Enforce, AuditLog::Deny);
        t.issued_at_ms = ISSUED_MS + 5000;
        t.rules.clear(); // were it accepted, WEB would be denied
        f(&mut t);
        t
    };
    let mut corrupt = signed(&newer(&|_| {}));
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0xff;
    let older = newer(&|t| t.issued_at_ms = ISSUED_MS - 1);
    // Another policy version issued at the same time as the table in force.
    let same_time = newer(&|t| {
        t.issued_at_ms = ISSUED_MS;
        t.policy_digest = [0xee; 32];
    });
    let other_lineage = newer(&|t| t.policy_names = vec!["other".into()]);
    let expired = newer(&|t| t.expires_at_ms = Some(1_767_225_600_000));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // a forger's key, on the loosest table there is
        (
            "signature",
            signed_by(
                &newer(&|t| {
                    t.mode = Mode::Audit;
                    t.default_action = Act::Allow;
                    t.audit_log = AuditLog::None;
                    t.revocation.set_on_stale(ruleset::OnStale::Keep);
                }),
                FORGER,
            ),
        ),
        ("signature", ruleset::encode(&newer(&|_| {})).unwrap()),
        ("signature", corrupt),
        ("signature", Vec::new()),
        ("rollback", signed(&older)),
        ("rollback", signed(&same_time)),
        ("lineage", signed(&other_lineage)),
        ("expired", signed(&expired)),
        ("loosening", signed(&newer(&|t| t.mode = Mode::Audit))),
        (
            "loosening",
            signed(&newer(&|t| t.default_action = Act::Allow)),
        ),
        (
            "loosening",
            signed(&newer(&|t| {
                t.revocation.set_on_stale(ruleset::OnStale::Keep)
            })),
        ),
        (
            "loosening",
            signed(&newer(&|t| t.audit_log = AuditLog::None)),
        ),
    ];
    let mut want = std::collections::BTreeMap::<&str, u64>::new();
    for (i, (kind, body)) in cases.iter().enumerate() {
        e.tick_at((i as u64 + 2) * SECOND);
        e.answer("200", Some("\"x\""), body);
        *want.entry(kind).or_default() += 1;
        for k in [
            "signature",
            "rollback",
            "lineage",
            "expired",
            "loosening",
            "invalid",
        ] {
            assert_eq!(
                e.host.counter(&format!("certgate.feed_rejected_{k}")),
                want.get(k).copied().unwrap_or(0),
                "after case {i} ({kind}): {k}"
            );
            assert_eq!(
                e.host.counter(&format!(
                    "plugin=.=certgate;.;reason=.={k};.;certgate_feed_refusals_total"
                )),
                want.get(k).copied().unwrap_or(0),
                "labelled, after case {i} ({kind}): {k}"
            );
        }
    }
    assert_eq!(e.host.counter("certgate.feed_updates"), 0);
    assert_eq!(e.host.counter("certgate.feed_errors"), 0);
    // No refused table's ETag was kept: the polls still name nothing.
    assert!(!e
        .call_headers(cases.len() - 1)
        .iter()
        .any(|(k, _)| k == "if-none-match"));
    assert!(e.host.closed.borrow().is_empty());
    // The last table again, twice: counted each time, logged once.
    for i in 0..2 {
        e.tick_at((cases.len() as u64 + 2 + i) * SECOND);
        e.answer("200", Some("\"x\""), &cases[cases.len() - 1].1);
    }
    assert_eq!(e.host.counter("certgate.feed_rejected_loosening"), 6);
    let warns = e.host.logged(Level::Warn);
    let refusals: Vec<_> = warns.iter().filter(|l| l.contains("refused (")).collect();
    // One line per distinct reason (each case's differs from the one before it).
    assert_eq!(refusals.len(), cases.len(), "{refusals:#?}");
    for (line, want) in [
        (0, "not pinned"),
        (1, "not signed"),
        (2, "does not verify"),
        (4, "not newer"),
        (6, "another lineage"),
        (7, "expired at"),
        (8, "mode enforce -> audit"),
        (9, "defaultAction deny -> allow"),
        (10, "onStale deny -> keep"),
        (11, "audit.log records fewer"),
    ] {
        assert!(refusals[line].contains(want), "{line}: {}", refusals[line]);
    }
    // still the first table: web is allowed
    let (_, a) = e.admit_network(3, WEB);
    assert_eq!(a, Action::Continue);

    // A key pinned for rotation signs too; loosening is accepted when configured.
    let config = format!(
        r#"{{"table":"{}","feed":{{"cluster":"c","path":"/t","interval":"1s","maxStale":"10s","allowLoosening":true,"publicKeys":["{}","{}"]}}}}"#,
        b64(&ruleset::encode(&table(Mode::Enforce, AuditLog::Deny)).unwrap()),
        ruleset::signature::key_id(&key(SIGNER).pk),
        ruleset::signature::key_id(&key(3).pk),
    );
    let mut e = env(&config);
    e.tick_at(2 * SECOND);
    e.answer(
        "200",
        Some("\"r\""),
        &signed_by(&newer(&|t| t.mode = Mode::Audit), 3),
    );
    assert_eq!(e.host.counter("certgate.feed_updates"), 1);
    assert!(e.root.shared().unwrap().table.audit_mode());
}

#[test]
fn unsigned_tables_only_with_allow_unsigned() {
    let config = format!(
        r#"{{"table":"{}","feed":{{"cluster":"c","path":"/t","interval":"1s","maxStale":"10s","allowUnsigned":true}}}}"#,
        b64(&ruleset::encode(&table(Mode::Enforce, AuditLog::Deny)).unwrap()),
    );
    let mut e = env(&config);
    e.tick_at(2 * SECOND);
    e.answer("200", Some("\"u\""), &ruleset::encode(&deny_all()).unwrap());
    assert_eq!(e.host.counter("certgate.feed_updates"), 1);
    // Still older tables are refused.
    e.tick_at(3 * SECOND);
    e.answer(
        "200",
        Some("\"o\""),
        &ruleset::encode(&table(Mode::Enforce, AuditLog::Deny)).unwrap(),
    );
    assert_eq!(e.host.counter("certgate.feed_rejected_rollback"), 1);
}

#[test]
fn feed_lineage_is_required_without_an_inline_table_and_must_match_one() {
    let feed_only = format!("{{{}}}", &feed()[1..]);
    let (e, ok) = env_with(&feed_only, "certgate");
    assert!(!ok);
    assert!(e.host.logged(Level::Error)[0].contains("feed.lineage"));
    let (e, ok) = env_with(
        &config_json(
            &table(Mode::Enforce, AuditLog::Deny),
            &feed_json(r#","lineage":["other"]"#),
        ),
        "certgate",
    );
    assert!(!ok);
    assert!(e.host.logged(Level::Error)[0].contains("feed.lineage"));
    // A feed without keys needs allowUnsigned.
    let (e, ok) = env_with(
        &config_json(
            &table(Mode::Enforce, AuditLog::Deny),
            r#","feed":{"cluster":"c","path":"/t","interval":"1s","maxStale":"10s"}"#,
        ),
        "certgate",
    );
    assert!(!ok);
    assert!(e.host.logged(Level::Error)[0].contains("feed.publicKeys"));
}

#[test]
fn feed_errors_are_transport_failures() {
    let mut e = env(&config_json(&table(Mode::Enforce, AuditLog::Deny), &feed()));
    e.tick_at(2 * SECOND);
    e.answer("503", None, b"");
    // a failed call (reset) arrives without headers, which must not be read
    e.tick_at(3 * SECOND);
    e.host.response_headers.borrow_mut().clear();
    e.enter(0);
    e.root.http_call_response(2, 0, 0);
    // a call the host refuses
    e.host.refuse_calls.set(true);
    e.tick_at(4 * SECOND);
    assert_eq!(e.host.counter("certgate.feed_errors"), 3);
    let warns = e.host.logged(Level::Warn).join("\n");
    assert!(warns.contains("status 503"), "{warns}");
}

#[test]
fn past_max_stale_the_tables_on_stale_decides() {
    // onStale deny (the default): new connections are refused, open ones stay
    let mut e = env(&config_json(&table(Mode::Enforce, AuditLog::Deny), &feed()));
    let (_, a) = e.admit_network(2, WEB);
    assert_eq!(a, Action::Continue);
    // The same table from the feed: a confirmation, and its ETag is kept.
    e.tick_at(2 * SECOND);
    e.answer(
        "200",
        Some("\"v1\""),
        &signed(&table(Mode::Enforce, AuditLog::Deny)),
    );
    assert_eq!(e.host.counter("certgate.feed_updates"), 0);
    assert_eq!(e.host.counter("certgate.feed_rejected_rollback"), 0);
    e.tick_at(23 * SECOND);
    assert!(e
        .host
        .logged(Level::Warn)
        .iter()
        .any(|l| l.contains("onStale deny")));
    let (_, a) = e.admit_network(3, WEB);
    assert_eq!(a, Action::Pause);
    assert_eq!(e.host.counter("certgate.reason.stale_revocation"), 1);
    assert_eq!(*e.host.closed.borrow(), vec![3]);
    // a 304 to the poll that named the table makes it fresh again
    assert!(e
        .call_headers(1)
        .contains(&("if-none-match".into(), "\"v1\"".into())));
    e.answer("304", None, b"");
    let (_, a) = e.admit_network(4, WEB);
    assert_eq!(a, Action::Continue);

    // onStale keep: the last good table goes on deciding
    let mut keep = table(Mode::Enforce, AuditLog::Deny);
    keep.revocation.set_on_stale(ruleset::OnStale::Keep);
    let e = env(&config_json(&keep, &feed()));
    e.tick_at(60 * SECOND);
    let (_, a) = e.admit_network(2, WEB);
    assert_eq!(a, Action::Continue);
    assert_eq!(e.host.counter("certgate.reason.stale_revocation"), 0);
}

/// Regression: a `304` confirmed the table even for a poll that sent no ETag, so a
/// server answering 304 to everything kept any table fresh forever.
#[test]
fn a_304_to_a_poll_without_etag_confirms_nothing() {
    let mut e = env(&config_json(&table(Mode::Enforce, AuditLog::Deny), &feed()));
    for i in 2..=23 {
        e.tick_at(i * SECOND);
        assert!(!e
            .call_headers(e.host.calls.borrow().len() - 1)
            .iter()
            .any(|(k, _)| k == "if-none-match"));
        e.answer("304", None, b"");
    }
    assert_eq!(e.host.counter("certgate.feed_errors"), 22);
    let (_, a) = e.admit_network(2, WEB);
    assert_eq!(a, Action::Pause);
    assert_eq!(e.host.counter("certgate.reason.stale_revocation"), 1);
}

/// Regression: polls and staleness ran on the wall clock, so stepping it back stopped
/// polling and hid staleness.
#[test]
fn stepping_the_wall_clock_neither_stops_polls_nor_hides_or_fakes_staleness() {
    let mut e = env(&config_json(&table(Mode::Enforce, AuditLog::Deny), &feed()));
    // Back by a day, while monotonic time goes on: polls continue every second.
    for i in 2..=5u64 {
        e.host.now.set(WALL_START - 86_400 * SECOND);
        e.host.mono.set(i * SECOND);
        e.enter(0);
        e.root.tick();
        assert_eq!(e.host.calls.borrow().len() as u64, i - 1, "poll at {i}s");
        e.answer("503", None, b"");
    }
    // 21 s without a confirmation: stale, whatever the wall clock says.
    e.host.mono.set(22 * SECOND);
    let (_, a) = e.admit_network(2, WEB);
    assert_eq!(a, Action::Pause);
    assert_eq!(e.host.counter("certgate.reason.stale_revocation"), 1);

    // Forward by a year, monotonic time within maxStale: not stale.
    let e = env(&config_json(&table(Mode::Enforce, AuditLog::Deny), &feed()));
    e.host.now.set(WALL_START + 365 * 86_400 * SECOND);
    e.host.mono.set(5 * SECOND);
    let (_, a) = e.admit_network(2, WEB);
    assert_eq!(a, Action::Continue);
}

/// A table past its expiry is stale, inline or fed, and stepping the wall clock back
/// does not hide it.
#[test]
fn past_its_expiry_a_table_is_stale_whatever_the_wall_clock_says() {
    // Expires an hour after configure; no feed at all.
    let mut t = table(Mode::Enforce, AuditLog::Deny);
    t.expires_at_ms = Some(WALL_START / 1_000_000 + 3_600_000);
    let e = env(&config_json(&t, ""));
    let (_, a) = e.admit_network(2, WEB);
    assert_eq!(a, Action::Continue);
    // Wall clock past the expiry.
    e.host.now.set(WALL_START + 3_601 * SECOND);
    let (_, a) = e.admit_network(3, WEB);
    assert_eq!(a, Action::Pause);
    assert_eq!(e.host.counter("certgate.reason.stale_revocation"), 1);
    e.enter(0);
    e.root.tick();
    assert!(e
        .host
        .logged(Level::Warn)
        .iter()
        .any(|l| l.contains("past its expiry")));
    // Stepped back an hour: the monotonic time since configure still says expired.
    e.host.now.set(WALL_START);
    e.host.mono.set(1_000_000_000 + 3_601 * SECOND);
    let (_, a) = e.admit_network(4, WEB);
    assert_eq!(a, Action::Pause);
    assert_eq!(e.host.counter("certgate.reason.stale_revocation"), 2);

    // An inline table expired before configure, onStale keep: it decides on.
    let mut keep = t.clone();
    keep.expires_at_ms = Some(WALL_START / 1_000_000 - 1);
    keep.revocation.set_on_stale(ruleset::OnStale::Keep);
    let e = env(&config_json(&keep, ""));
    let (_, a) = e.admit_network(2, WEB);
    assert_eq!(a, Action::Continue);
    // ... and with onStale deny it refuses at once.
    keep.revocation.set_on_stale(ruleset::OnStale::Deny);
    let e = env(&config_json(&keep, ""));
    let (_, a) = e.admit_network(2, WEB);
    assert_eq!(a, Action::Pause);
}

#[test]
fn feed_without_an_initial_table_denies_until_the_first_fetch() {
    let feed_only = format!("{{{}}}", &feed_json(r#","lineage":["frontend"]"#)[1..]);
    let mut e = env(&feed_only);
    let (_, a) = e.admit_network(2, WEB);
    assert_eq!(a, Action::Pause);
    assert_eq!(e.host.counter("certgate.reason.stale_revocation"), 1);
    // The first fetch is held to the configured lineage and key too.
    e.tick_at(2 * SECOND);
    let mut other = table(Mode::Enforce, AuditLog::Deny);
    other.policy_names = vec!["other".into()];
    e.answer("200", Some("\"o\""), &signed(&other));
    assert_eq!(e.host.counter("certgate.feed_rejected_lineage"), 1);
    e.tick_at(3 * SECOND);
    e.answer(
        "200",
        Some("\"f\""),
        &signed_by(&table(Mode::Enforce, AuditLog::Deny), FORGER),
    );
    assert_eq!(e.host.counter("certgate.feed_rejected_signature"), 1);
    let (_, a) = e.admit_network(3, WEB);
    assert_eq!(a, Action::Pause);
    e.tick_at(4 * SECOND);
    e.answer(
        "200",
        Some("\"v1\""),
        &signed(&table(Mode::Enforce, AuditLog::Deny)),
    );
    let (_, a) = e.admit_network(4, WEB);
    assert_eq!(a, Action::Continue);
}

#[test]
fn http_connection_denied_by_a_new_table_is_reset() {
    let (mut e, ok) = env_with(
        &config_json(&table(Mode::Enforce, AuditLog::Deny), &feed()),
        HTTP_ROOT_ID,
    );
    assert!(ok);
    e.connection(7, Some(&cert_pem(WEB)), "A1");
    let mut f = e.root.http_filter();
    e.enter(7);
    assert_eq!(f.request_headers(), Action::Continue);
    e.tick_at(2 * SECOND);
    e.answer("200", None, &signed(&deny_all()));
    e.enter(7);
    assert_eq!(f.request_headers(), Action::Pause);
    assert!(e.host.responses.borrow().is_empty());
    assert_eq!(*e.host.resets.borrow(), vec![7]);
    // later requests of that connection: the ordinary 403
    e.enter(7);
    assert_eq!(f.request_headers(), Action::Pause);
    assert_eq!(e.host.responses.borrow()[0].status, 403);
    assert_eq!(e.host.counter("certgate.closed_on_update"), 1);
}

/// Regression: a keep-alive connection refused as `stale_revocation` stayed refused
/// after the feed recovered, because the verdict was remembered per table generation
/// and a `304` does not change the generation.
#[test]
fn http_stale_verdicts_are_not_remembered() {
    let (mut e, ok) = env_with(
        &config_json(&table(Mode::Enforce, AuditLog::Deny), &feed()),
        HTTP_ROOT_ID,
    );
    assert!(ok);
    e.tick_at(2 * SECOND);
    e.answer(
        "200",
        Some("\"v1\""),
        &signed(&table(Mode::Enforce, AuditLog::Deny)),
    );
    e.tick_at(23 * SECOND);
    e.connection(7, Some(&cert_pem(WEB)), "A1");
    let mut f = e.root.http_filter();
    e.enter(7);
    assert_eq!(f.request_headers(), Action::Pause);
    assert_eq!(e.host.responses.borrow()[0].status, 403);
    assert_eq!(e.host.counter("certgate.reason.stale_revocation"), 1);
    // The feed recovers: a 304 to the poll that named the table in force.
    e.answer("304", None, b"");
    e.enter(7);
    assert_eq!(f.request_headers(), Action::Continue);
    assert_eq!(e.host.responses.borrow().len(), 1);
    assert_eq!(e.host.counter("certgate.allowed"), 1);
}

/// Envoy 1.36/1.37: a verified certificate's digest, first URI SAN and subject, but no
/// `connection.peer_certificate`.
fn connection_without_pem(e: &Env, ctx: u32, spiffe: &str, digest: &str) {
    e.connection(ctx, None, "");
    let h = &e.host;
    h.set(ctx, "connection.mtls", vec![1u8]);
    h.set(ctx, "connection.sha256_peer_certificate_digest", digest);
    h.set(ctx, "connection.uri_san_peer_certificate", spiffe);
    h.set(ctx, "connection.subject_peer_certificate", "CN=web");
}

fn no_pem_warnings(e: &Env) -> Vec<String> {
    e.host
        .logged(Level::Warn)
        .into_iter()
        .filter(|l| l.contains("does not provide connection.peer_certificate"))
        .collect()
}

#[test]
fn without_the_pem_attribute_an_identity_table_decides_by_identity_and_says_so_once() {
    let e = env(&config_json(&table(Mode::Enforce, AuditLog::All), ""));
    connection_without_pem(&e, 2, WEB, &"ab".repeat(32));
    connection_without_pem(&e, 3, EVIL, &"cd".repeat(32));
    assert_eq!(first_data(&e, 2), Action::Continue);
    assert_eq!(first_data(&e, 3), Action::Pause);
    assert_eq!(e.host.counter("certgate.reason.allow_rule"), 1);
    assert_eq!(e.host.counter("certgate.reason.default_deny"), 1);
    assert_eq!(e.host.counter("certgate.reason.no_peer_cert"), 0);
    let record = e.host.audit(2).unwrap();
    assert!(
        record.contains(&format!(r#""certgate.spiffe_id":"{WEB}""#)),
        "{record}"
    );
    assert!(record.contains(&"AB".repeat(32)), "{record}");
    let told = no_pem_warnings(&e);
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(
        told[0].contains("1.38") && told[0].contains("decides with"),
        "{told:?}"
    );
}

#[test]
fn without_the_pem_attribute_a_certificate_table_denies_as_unavailable_and_says_so_once() {
    let mut t = table(Mode::Enforce, AuditLog::Deny);
    t.revocation.add_serial(None, &[9, 9]);
    t.normalize();
    let e = env(&config_json(&t, ""));
    for ctx in [2, 3] {
        connection_without_pem(&e, ctx, WEB, &format!("{ctx:02x}").repeat(32));
        assert_eq!(first_data(&e, ctx), Action::Pause);
    }
    assert_eq!(
        e.host
            .counter("certgate.reason.peer_certificate_unavailable"),
        2
    );
    assert_eq!(e.host.counter("certgate.reason.no_peer_cert"), 0);
    let record = e.host.audit(3).unwrap();
    assert!(
        record.contains(r#""event.reason":"peer_certificate_unavailable""#),
        "{record}"
    );
    let told = no_pem_warnings(&e);
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(
        told[0].contains("1.38") && told[0].contains("peer_certificate_unavailable"),
        "{told:?}"
    );
    // A connection without any certificate is still `no_peer_cert`.
    e.connection(4, None, "");
    assert_eq!(first_data(&e, 4), Action::Pause);
    assert_eq!(e.host.counter("certgate.reason.no_peer_cert"), 1);
}

// ---- long-poll and jitter ----

impl Env {
    /// Delivers the answer to the latest feed call at monotonic `nanos`, with `headers`.
    fn answer_at(&mut self, nanos: u64, status: &str, headers: &[(&str, &str)], body: &[u8]) {
        self.host.mono.set(nanos);
        self.host.now.set(WALL_START + nanos);
        let token = self.host.calls.borrow().len() as u32;
        let mut all = vec![(":status".to_string(), status.as_bytes().to_vec())];
        all.extend(
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())),
        );
        let n = all.len();
        *self.host.response_headers.borrow_mut() = all;
        *self.host.response_body.borrow_mut() = Some(body.to_vec());
        self.enter(0);
        self.root.http_call_response(token, n, body.len());
    }

    fn header_of(&self, call: usize, name: &str) -> Option<String> {
        self.call_headers(call)
            .into_iter()
            .find_map(|(k, v)| (k == name).then_some(v))
    }

    fn call_count(&self) -> usize {
        self.host.calls.borrow().len()
    }
}

fn long_poll_feed() -> String {
    feed_json(r#","longPoll":"30s","maxStale":"2m""#).replace(r#""maxStale":"20s","#, "")
}

#[test]
fn a_long_poll_is_held_by_the_server_and_followed_by_the_next_at_once() {
    let mut e = env(&config_json(
        &table(Mode::Enforce, AuditLog::Deny),
        &long_poll_feed(),
    ));
    e.tick_at(2 * SECOND);
    assert_eq!(e.call_count(), 1);
    // The first poll names no table: nothing to hold it for.
    assert_eq!(e.header_of(0, "prefer"), None);
    // The call's timeout is above the wait.
    assert_eq!(e.host.calls.borrow()[0].2, 35_000);
    let poller = e.header_of(0, "x-certgate-poller").expect("poller header");
    assert!(poller.starts_with("certgate/"), "{poller}");
    e.answer_at(
        2 * SECOND,
        "200",
        &[("etag", "\"v1\"")],
        &signed(&table(Mode::Enforce, AuditLog::Deny)),
    );
    // Followed at the next tick (every 100 ms), naming the table and asking to be held.
    assert_eq!(e.host.tick_millis.get(), Some(100));
    assert_eq!(e.call_count(), 1);
    e.tick_at(2 * SECOND + 100_000_000);
    assert_eq!(e.call_count(), 2);
    assert_eq!(e.header_of(1, "if-none-match").as_deref(), Some("\"v1\""));
    assert_eq!(e.header_of(1, "prefer").as_deref(), Some("wait=30"));
    assert_eq!(e.header_of(1, "x-certgate-poller"), Some(poller.clone()));
    // Held 30 s, then 304: confirmed, and the next poll at once.
    e.answer_at(
        32 * SECOND,
        "304",
        &[("preference-applied", "wait=30")],
        b"",
    );
    e.tick_at(32 * SECOND + 100_000_000);
    assert_eq!(e.call_count(), 3);
    assert_eq!(e.host.counter("certgate.feed_errors"), 0);
    // A newer table while held: installed and followed at once with its ETag.
    let (_open, _) = e.admit_network(2, WEB);
    e.answer_at(
        33 * SECOND,
        "200",
        &[("etag", "\"v2\"")],
        &signed(&deny_all()),
    );
    assert_eq!(e.host.counter("certgate.feed_updates"), 1);
    assert_eq!(*e.host.closed.borrow(), vec![2]);
    e.tick_at(33 * SECOND + 100_000_000);
    assert_eq!(e.call_count(), 4);
    assert_eq!(e.header_of(3, "if-none-match").as_deref(), Some("\"v2\""));
    // No tick polls while the long poll is in flight, well past the interval.
    e.tick_at(50 * SECOND);
    assert_eq!(e.call_count(), 4);
}

#[test]
fn a_long_poll_that_fails_is_refused_or_not_held_backs_off_to_the_interval() {
    let mut e = env(&config_json(
        &table(Mode::Enforce, AuditLog::Deny),
        &long_poll_feed(),
    ));
    e.tick_at(2 * SECOND);
    e.answer_at(
        2 * SECOND,
        "200",
        &[("etag", "\"v1\"")],
        &signed(&table(Mode::Enforce, AuditLog::Deny)),
    );
    e.tick_at(2 * SECOND + 100_000_000);
    assert_eq!(e.call_count(), 2);
    // A server without long-poll answers 304 at once: no hot loop.
    e.answer_at(2 * SECOND + 101_000_000, "304", &[], b"");
    assert_eq!(e.call_count(), 2);
    e.tick_at(2 * SECOND + 900_000_000);
    assert_eq!(e.call_count(), 2);
    e.tick_at(3 * SECOND + 100_000_000);
    assert_eq!(e.call_count(), 3);
    // A failed long poll (reset) waits the interval too.
    e.answer_at(4 * SECOND, "503", &[], b"");
    assert_eq!(e.host.counter("certgate.feed_errors"), 1);
    assert_eq!(e.call_count(), 3);
    e.tick_at(5 * SECOND);
    assert_eq!(e.call_count(), 4);
    // A refused (forged) table would come straight back: the interval again.
    e.answer_at(
        5 * SECOND,
        "200",
        &[("etag", "\"forged\"")],
        &signed_by(&deny_all(), FORGER),
    );
    assert_eq!(e.host.counter("certgate.feed_rejected_signature"), 1);
    assert_eq!(e.call_count(), 4);
    e.tick_at(6 * SECOND + 1);
    assert_eq!(e.call_count(), 5);
    assert_eq!(e.header_of(4, "if-none-match").as_deref(), Some("\"v1\""));
}

#[test]
fn regular_polls_are_jittered_per_worker_and_never_later_than_the_interval() {
    // Two workers configured a moment apart poll at different times, each within the
    // interval; one worker's schedule is the same in every run.
    let schedule = |configured_at: u64| {
        let cfg = config_json(
            &table(Mode::Enforce, AuditLog::Deny),
            &feed_json(r#","interval":"10s""#).replace(r#""interval":"1s","#, ""),
        );
        let host = Rc::new(FakeHost::default());
        *host.config.borrow_mut() = Some(cfg.as_bytes().to_vec());
        host.set(0, "plugin_root_id", "certgate");
        host.now.set(WALL_START + configured_at);
        host.mono.set(configured_at);
        let mut root = Root::new(host.clone());
        assert!(root.configure(cfg.len()));
        let e = Env { host, root };
        // Step 10 ms at a time for a minute; note when each poll went out.
        let mut sent = Vec::new();
        let mut t = configured_at;
        while t < configured_at + 60 * SECOND {
            t += 10_000_000;
            let before = e.call_count();
            e.host.mono.set(t);
            e.host.now.set(WALL_START + t);
            e.enter(0);
            e.root.tick();
            if e.call_count() > before {
                sent.push(t - configured_at);
                let mut e2 = Env {
                    host: e.host.clone(),
                    root: Root::new(e.host.clone()),
                };
                let _ = &mut e2;
                // Answer with a failure so the next poll is a regular one.
                *e.host.response_headers.borrow_mut() = vec![(":status".into(), b"503".to_vec())];
                e.root.http_call_response(e.call_count() as u32, 1, 0);
            }
        }
        (sent, e.header_of(0, "x-certgate-poller").unwrap())
    };
    let (a, name_a) = schedule(1_000_000_000);
    let (a_again, name_a_again) = schedule(1_000_000_000);
    let (b, name_b) = schedule(1_000_123_457);
    assert_eq!((&a, &name_a), (&a_again, &name_a_again));
    assert_ne!(name_a, name_b);
    assert_ne!(a, b);
    for s in [&a, &b] {
        assert!(s.len() >= 6, "{s:?}");
        for w in s.windows(2) {
            let gap = w[1] - w[0];
            // At most the interval (plus one 10 ms step), at least 90 % of it.
            assert!(
                (9 * SECOND..=10 * SECOND + 10_000_000).contains(&gap),
                "{gap}"
            );
        }
    }
}

// ---- deltas from the feed ----

/// A table of [`table`]'s lineage issued `n` seconds after it, revoking `serials`
/// serials (enough that a delta is smaller than the table).
fn revoking(n: u64, serials: u32) -> Table {
    let mut t = table(Mode::Enforce, AuditLog::Deny);
    t.issued_at_ms = ISSUED_MS + n * 1000;
    t.policy_digest = [n as u8; 32];
    for s in 0..serials {
        t.revocation.add_serial(Some(7), &s.to_be_bytes());
    }
    t.revocation.normalize();
    t
}

impl Env {
    /// Delivers a `226 IM Used` with `delta`, naming `base` and `etag`.
    fn answer_delta(&mut self, base: &str, etag: &str, delta: &[u8]) {
        let token = self.host.calls.borrow().len() as u32;
        let headers: Vec<(String, Vec<u8>)> = [
            (":status", "226"),
            ("im", "certgate-delta"),
            ("delta-base", base),
            ("etag", etag),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
        let n = headers.len();
        *self.host.response_headers.borrow_mut() = headers;
        *self.host.response_body.borrow_mut() = Some(delta.to_vec());
        self.enter(0);
        self.root.http_call_response(token, n, delta.len());
    }

    fn asked_delta(&self, call: usize) -> bool {
        self.call_headers(call)
            .contains(&("a-im".into(), "certgate-delta".into()))
    }

    fn serials_in_force(&self) -> usize {
        let shared = self.root.shared().unwrap();
        let active = shared.table.active().unwrap();
        active.engine.table().revocation.serial_count()
    }
}

/// The feed without an inline table: the first table comes whole, later ones as deltas
/// applied to the bytes of the table in force, judged like fetched tables.
fn fed_env() -> Env {
    let feed_only = format!("{{{}}}", &feed_json(r#","lineage":["frontend"]"#)[1..]);
    env(&feed_only)
}

#[test]
fn a_delta_is_applied_to_the_table_in_force_and_installed_like_a_fetched_table() {
    use ruleset::delta::{diff, etag};
    let mut e = fed_env();
    let x = signed(&revoking(1, 1000));
    e.tick_at(2 * SECOND);
    assert!(!e.asked_delta(0), "nothing to apply a delta to yet");
    e.answer("200", Some(&etag(&x)), &x);
    assert_eq!(e.host.counter("certgate.feed_updates"), 1);

    e.tick_at(3 * SECOND + 1);
    assert!(e.asked_delta(1));
    assert!(e
        .call_headers(1)
        .contains(&("if-none-match".into(), etag(&x))));
    let y = signed(&revoking(2, 1001));
    let d = diff(&x, &y).unwrap();
    assert!(d.len() < 400);
    e.answer_delta(&etag(&x), &etag(&y), &d);
    assert_eq!(e.host.counter("certgate.feed_updates"), 2);
    assert_eq!(e.serials_in_force(), 1001);
    assert_eq!(e.host.counter("certgate.feed_rejected_delta"), 0);
    // The next poll names the rebuilt table and asks for a delta again.
    e.tick_at(4 * SECOND + 2);
    assert!(e.asked_delta(2));
    assert!(e
        .call_headers(2)
        .contains(&("if-none-match".into(), etag(&y))));
}

#[test]
fn corrupt_or_misdirected_deltas_are_refused_and_the_whole_table_fetched_next() {
    use ruleset::delta::{diff, etag};
    let mut e = fed_env();
    let x = signed(&revoking(1, 1000));
    e.tick_at(2 * SECOND);
    e.answer("200", Some(&etag(&x)), &x);
    let y = signed(&revoking(2, 1001));
    let good = diff(&x, &y).unwrap();
    let mut poll = 1;
    let mut at = 3 * SECOND;
    let mut next = |e: &mut Env| {
        e.tick_at(at);
        at += SECOND + 1;
        poll += 1;
        poll - 1
    };
    // Each bad delta: refused and counted, the table in force stays, the next poll asks
    // for the whole table, and a good full answer turns deltas on again.
    let mut corrupt = good.clone();
    let last = corrupt.len() - 120;
    corrupt[last] ^= 1;
    let other_base = diff(&signed(&revoking(1, 999)), &y).unwrap();
    let mut truncated = good.clone();
    truncated.truncate(good.len() - 1);
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        ("corrupt", corrupt, etag(&y)),
        ("another base", other_base, etag(&y)),
        ("truncated", truncated, etag(&y)),
        ("wrong etag", good.clone(), etag(&x)),
        ("garbage", b"not a delta".to_vec(), etag(&y)),
    ];
    for (i, (what, delta, tag)) in cases.into_iter().enumerate() {
        let call = next(&mut e);
        assert!(e.asked_delta(call), "{what}");
        e.answer_delta(&etag(&x), &tag, &delta);
        assert_eq!(
            e.host.counter("certgate.feed_rejected_delta"),
            i as u64 + 1,
            "{what}"
        );
        assert_eq!(e.serials_in_force(), 1000, "{what}");
        assert_eq!(e.host.counter("certgate.feed_updates"), 1, "{what}");
        let call = next(&mut e);
        assert!(
            !e.asked_delta(call),
            "{what}: the next poll fetches the whole table"
        );
        assert!(e
            .call_headers(call)
            .contains(&("if-none-match".into(), etag(&x))));
        // The server still has only x's successor; pretend it answers 304 (x is current):
        // a confirmation, and deltas stay off until a table is fetched whole.
        e.answer("304", None, b"");
        let call = next(&mut e);
        assert!(!e.asked_delta(call), "{what}");
        e.answer("200", Some(&etag(&x)), &x);
        // The table in force again, same bytes: deltas may start from it.
    }
    let call = next(&mut e);
    assert!(e.asked_delta(call));
    e.answer_delta(&etag(&x), &etag(&y), &good);
    assert_eq!(e.serials_in_force(), 1001);
    assert_eq!(e.host.counter("certgate.feed_errors"), 0);
    let warns = e.host.logged(Level::Warn).join("\n");
    assert!(
        warns.contains("delta from certgate-feed/table.cgt refused"),
        "{warns}"
    );
    // Each refusal says why.
    for why in [
        "the delta is for another base table",
        "truncated delta",
        "not the table its ETag names",
    ] {
        assert!(warns.contains(why), "{why} in {warns}");
    }
}

/// Someone between the feed and the proxy turns a delta into one that rebuilds a table
/// of their own (the revocation withdrawn): it applies, but the result is judged like a
/// fetched table and its signature fails.
#[test]
fn a_delta_to_a_forged_table_is_refused_by_its_signature() {
    use ruleset::delta::{diff, etag};
    let mut e = fed_env();
    let x = signed(&revoking(1, 1000));
    e.tick_at(2 * SECOND);
    e.answer("200", Some(&etag(&x)), &x);
    let forged = signed_by(&revoking(2, 10), FORGER);
    e.tick_at(3 * SECOND + 1);
    e.answer_delta(&etag(&x), &etag(&forged), &diff(&x, &forged).unwrap());
    assert_eq!(e.host.counter("certgate.feed_rejected_signature"), 1);
    assert_eq!(e.host.counter("certgate.feed_rejected_delta"), 0);
    assert_eq!(e.serials_in_force(), 1000);
    e.tick_at(4 * SECOND + 2);
    assert!(
        !e.asked_delta(2),
        "after a refused table the next poll is a full fetch"
    );
}

#[test]
fn no_delta_is_asked_for_when_turned_off_or_unasked_for() {
    use ruleset::delta::{diff, etag};
    let feed_only = format!(
        "{{{}}}",
        &feed_json(r#","lineage":["frontend"],"deltas":false"#)[1..]
    );
    let mut e = env(&feed_only);
    let x = signed(&revoking(1, 1000));
    e.tick_at(2 * SECOND);
    e.answer("200", Some(&etag(&x)), &x);
    e.tick_at(3 * SECOND + 1);
    assert!(!e.asked_delta(1));
    // A 226 to a poll that asked for none is a failed poll, not a table.
    let y = signed(&revoking(2, 1001));
    e.answer_delta(&etag(&x), &etag(&y), &diff(&x, &y).unwrap());
    assert_eq!(e.host.counter("certgate.feed_errors"), 1);
    assert_eq!(e.serials_in_force(), 1000);

    // An inline table confirmed by the feed in other bytes (signed there, unsigned
    // inline): a delta from the feed's bytes would not apply to these, so none is asked.
    let mut e = env(&config_json(&table(Mode::Enforce, AuditLog::Deny), &feed()));
    let served = signed(&table(Mode::Enforce, AuditLog::Deny));
    e.tick_at(2 * SECOND);
    e.answer("200", Some(&etag(&served)), &served);
    e.tick_at(3 * SECOND + 1);
    assert!(!e.asked_delta(1));
}

#[test]
fn records_carry_the_ecs_fields_and_every_kind_of_san_bounded() {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![
        rcgen::SanType::URI(WEB.try_into().unwrap()),
        rcgen::SanType::DnsName("web.example.org".try_into().unwrap()),
        rcgen::SanType::Rfc822Name("ops@example.org".try_into().unwrap()),
        rcgen::SanType::IpAddress("192.0.2.7".parse().unwrap()),
        rcgen::SanType::IpAddress("2001:db8::7".parse().unwrap()),
    ];
    let many = {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = (0..40)
            .map(|i| rcgen::SanType::DnsName(format!("n{i}.example.org").try_into().unwrap()))
            .collect();
        p.subject_alt_names.push(rcgen::SanType::DnsName(
            format!("{}.example.org", "a".repeat(1100))
                .try_into()
                .unwrap(),
        ));
        p.self_signed(&key).unwrap().pem()
    };
    let e = env(&config_json(&table(Mode::Enforce, AuditLog::All), ""));
    // 2026-12-06T06:30:42.123Z
    e.host.now.set(1_796_538_642_123_456_789);
    e.connection(2, Some(&params.self_signed(&key).unwrap().pem()), "AA");
    e.connection(3, Some(&many), "BB");
    assert_eq!(first_data(&e, 2), Action::Continue);
    assert_eq!(first_data(&e, 3), Action::Pause);
    let record = e.host.audit(2).unwrap();
    crate::json::parse(&record).unwrap();
    for want in [
        r#""@timestamp":"2026-12-06T06:30:42.123Z""#,
        r#""ecs.version":"9.3.0""#,
        r#""network.transport":"tcp""#,
        r#""source.port":40000"#,
        r#""destination.ip":"10.0.0.1""#,
        r#""destination.port":8443"#,
    ] {
        assert!(record.contains(want), "{want} not in {record}");
    }
    let sans = format!(
        r#""tls.client.x509.alternative_names":["{WEB}","web.example.org","ops@example.org","192.0.2.7","2001:db8::7"]"#
    );
    {
        assert!(record.contains(&sans), "{sans} not in {record}");
    }
    let id = decision_id_of(&record);
    assert!(
        record.contains(&format!(r#""event.id":"{id}""#)),
        "{record}"
    );
    // 41 names, one too long for a keyword: 16 kept, 25 counted.
    let bounded = e.host.audit(3).unwrap();
    assert!(
        bounded.contains(r#""certgate.alternative_names_omitted":25"#),
        "{bounded}"
    );
    assert!(bounded.contains("n15.example.org") && !bounded.contains("n16.example.org"));
    assert!(bounded.len() < 4096, "{}", bounded.len());
}
