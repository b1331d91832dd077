//! Audit mode, set by `certgate emit envoy --mode audit` or by the policy's own
//! `mode: audit`: every connection gets through, the would-be denials are recorded and
//! counted as `audit_would_deny`. Every access-log line of the run, and every decision
//! record in them, conforms to the pinned Elastic Common Schema.

use crate::common::{emit, enforce_table, run, runtime, verdict};
use certgate_e2e::run::DECISION_FIELD;
use certgate_e2e::{Case, Client, EmitEnvoy, Expect, Listener, Scenario, TlsPin, Wire};
use serde_json::{json, Value};

#[test]
fn audit_mode_lets_everything_through_and_records_would_deny() {
    let run = run();
    let table = enforce_table(&run);
    let filter = emit(
        &run,
        &table,
        EmitEnvoy {
            audit: true,
            ..EmitEnvoy::default()
        },
    );
    let cases = [
        Case::new(
            "allowed stays allowed",
            "web",
            Expect::allow("frontend-and-checkout"),
        ),
        Case::new(
            "unknown identity passes, recorded",
            "stranger",
            Expect::deny("default_deny").audited(),
        ),
        Case::new(
            "deny rule passes, recorded",
            "legacy",
            Expect::deny_rule("no-legacy").audited(),
        ),
        Case::new(
            "revoked passes, recorded",
            "revoked",
            Expect::deny("revoked_serial").audited(),
        ),
        Case::new(
            "RSA 1024 passes, recorded",
            "rsa1024",
            Expect::deny("weak_rsa_key").audited(),
        )
        .with(Client::Openssl(TlsPin::Any)),
        Case::new(
            "TLS 1.2 passes, recorded",
            "web",
            Expect::deny("tls_version_too_low").audited(),
        )
        .with(Client::Rustls(TlsPin::Tls12)),
    ];
    runtime().block_on(async {
        let mut listener = Listener::new("audit", filter, Wire::Echo);
        listener.audit_mode = true;
        // The same policy staged the way a rollout would: `mode: audit` in the YAML.
        let text = std::fs::read_to_string(
            certgate_e2e::tools::repo_root().join("e2e/policies/enforce.yaml"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(text.contains("mode: enforce"), "enforce.yaml lost its mode");
        let staged_table = run
            .compile_text("staged.yaml", &text.replace("mode: enforce", "mode: audit"))
            .unwrap_or_else(|e| panic!("{e:#}"));
        let mut staged = Listener::new(
            "staged",
            emit(&run, &staged_table, EmitEnvoy::default()),
            Wire::Echo,
        );
        staged.audit_mode = true;
        let s = Scenario::start(&run, "audit", vec![listener, staged])
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        verdict(
            &s.target("audit").with_eval(&run.certgate, &table),
            &run,
            &cases,
        )
        .await;
        verdict(
            &s.target("staged").with_eval(&run.certgate, &staged_table),
            &run,
            &cases,
        )
        .await;
        // The whole trail of the run against ECS: the access-log lines and the filter's
        // records in them (the checker parses `certgate.decision` as a record too).
        let lines = s.envoy.access_records();
        let decisions: Vec<Value> = lines
            .iter()
            .filter_map(|l| serde_json::from_str(l.get(DECISION_FIELD)?.as_str()?).ok())
            .collect();
        assert!(
            decisions.len() >= 2 * cases.len(),
            "{} decision records for {} connections",
            decisions.len(),
            2 * cases.len()
        );
        for d in &decisions {
            assert_eq!(d["event.id"], d["certgate.decision_id"], "{d}");
            for field in [
                "@timestamp",
                "source.port",
                "destination.ip",
                "network.transport",
            ] {
                assert!(d.get(field).is_some(), "{field} missing: {d}");
            }
        }
        let summary = certgate_e2e::ecs::check(&lines).unwrap_or_else(|e| panic!("{e:#}"));
        println!("{summary}");
    });
}

/// The negative control of the ECS check: the records the real run wrote pass it (see
/// above); these, each wrong in one way, must not.
#[test]
fn the_ecs_check_refuses_wrong_types_unknown_fields_and_missing_required_ones() {
    let good = json!({
        "@timestamp": "2026-12-06T06:30:42.123Z",
        "ecs.version": "9.3.0",
        "event.kind": "event",
        "event.category": "network",
        "event.type": "denied",
        "source.port": 40000,
        "source.ip": "10.1.2.3",
        "tls.client.x509.alternative_names": ["spiffe://example.org/a", "a.example.org"],
        "certgate.anything": {"goes": true}
    });
    certgate_e2e::ecs::check(std::slice::from_ref(&good)).unwrap_or_else(|e| panic!("{e:#}"));
    let with = |k: &str, v: Value| {
        let mut r = good.clone();
        r[k] = v;
        r
    };
    let without = |k: &str| {
        let mut r = good.clone();
        r.as_object_mut().unwrap().remove(k);
        r
    };
    let cases = [
        (
            with("source.port", json!("40000")),
            "source.port: a long must be an integer",
        ),
        (
            with("source.ip", json!("10.1.2")),
            "source.ip: an ip must be",
        ),
        (with("verdict", json!("deny")), "verdict: not an ECS field"),
        (
            with("event.kind", json!("decision")),
            "event.kind: 'decision' is not one of",
        ),
        (
            with("event.type", json!("creation")),
            "event.type: 'creation' is not a type",
        ),
        (
            with("@timestamp", json!("06:30")),
            "@timestamp: a date must be RFC 3339",
        ),
        (
            with("ecs.version", json!("8.11.0")),
            "ecs.version: '8.11.0', but the pinned",
        ),
        (
            with("source.port", json!([1, 2])),
            "source.port: ECS does not make this field an array",
        ),
        (
            without("ecs.version"),
            "ecs.version: required by ECS, missing",
        ),
        (
            with(DECISION_FIELD, json!("{\"tls.client.x509.issuer\":1}")),
            "certgate.decision tls.client.x509.issuer: not an ECS field",
        ),
    ];
    for (record, want) in cases {
        match certgate_e2e::ecs::check(std::slice::from_ref(&record)) {
            Ok(s) => panic!("passed ({s}): {record}"),
            Err(e) => assert!(format!("{e:#}").contains(want), "{want} not in: {e:#}"),
        }
    }
}
