//! A corrupt table, a truncated table, bad configuration and a plugin that crashes its VM
//! never let a connection through: Envoy either refuses to start or closes the connection.

use crate::common::{emit, enforce_table, run, runtime};
use base64::Engine as _;
use certgate_e2e::client::{
    rustls_config, rustls_config_anonymous, rustls_exchange, rustls_http_session, Want,
};
use certgate_e2e::run::{audit_records, counter_deltas, wait_for_log};
use certgate_e2e::{EmitEnvoy, Listener, Run, Scenario, TlsPin, Wire};
use serde_json::{json, Value};

/// The filter entry with its configuration JSON replaced by `config`.
fn with_configuration(entry: &Value, config: &str) -> Value {
    let mut e = entry.clone();
    e["typed_config"]["config"]["configuration"]["value"] = json!(config);
    e
}

/// The filter's configuration object as emitted.
fn configuration(entry: &Value) -> Value {
    let text = entry["typed_config"]["config"]["configuration"]["value"]
        .as_str()
        .unwrap_or_else(|| panic!("emitted entry has no StringValue configuration: {entry}"));
    serde_json::from_str(text).unwrap_or_else(|e| panic!("configuration is not JSON: {e}"))
}

/// Starts Envoy with `filter`; returns how it failed closed, or panics if an allowed
/// client's bytes came back.
async fn fails_closed(run: &Run, name: &str, filter: Value) -> String {
    let started = Scenario::start(run, name, vec![Listener::new("tcp", filter, Wire::Echo)]).await;
    let s = match started {
        Err(e) => {
            let text = format!("{e:#}");
            assert!(
                text.contains("wasm") || text.contains("Wasm"),
                "`{name}`: Envoy refused to start, but not because of the plugin:\n{text}"
            );
            return "Envoy refused the configuration at startup".into();
        }
        Ok(s) => s,
    };
    let leaf = run.pki.leaf("web");
    let cfg = rustls_config(&run.pki, leaf, TlsPin::Any).unwrap_or_else(|e| panic!("{e:#}"));
    let mut seen = Vec::new();
    // Twice: the first connection may be the one that takes a broken VM down.
    for _ in 0..2 {
        let msg = b"must not come back\n";
        let ex = rustls_exchange(
            s.envoy.addr("tcp"),
            cfg.clone(),
            msg,
            Want::Bytes(msg.len()),
        )
        .await;
        assert!(
            ex.received.is_empty(),
            "`{name}`: an allowed client got bytes through a broken filter: {}\n--- envoy log ---\n{}",
            ex.summary(),
            s.envoy.log_tail(30)
        );
        seen.push(ex.summary());
    }
    format!("Envoy started; connections closed: {}", seen.join(" / "))
}

#[test]
fn broken_tables_and_configuration_fail_closed() {
    let run = run();
    let table = enforce_table(&run);
    let entry = emit(&run, &table, EmitEnvoy::default());
    let good = configuration(&entry);
    let b64 = base64::engine::general_purpose::STANDARD;
    let bytes = b64
        .decode(good["table"].as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("emitted table is not base64: {e}"));
    let with_table = |t: &[u8]| {
        let mut c = good.clone();
        c["table"] = json!(b64.encode(t));
        with_configuration(&entry, &c.to_string())
    };
    let mut corrupt = bytes.clone();
    let mid = corrupt.len() / 2;
    if let Some(b) = corrupt.get_mut(mid) {
        *b ^= 0x5A;
    }
    let mut corrupt_large = large_table(&bytes, &[]);
    let late = corrupt_large.len() - 100;
    if let Some(b) = corrupt_large.get_mut(late) {
        *b ^= 0x01;
    }
    let mut wrong_root = entry.clone();
    wrong_root["typed_config"]["config"]["root_id"] = json!("certgate-http");
    let cases: Vec<(&str, Value)> = vec![
        ("corrupt table (one byte flipped)", with_table(&corrupt)),
        (
            "truncated table",
            with_table(bytes.get(..bytes.len() / 2).unwrap_or_default()),
        ),
        (
            "corrupt large table (a bit flipped in its last 64 KB read)",
            with_table(&corrupt_large),
        ),
        ("empty table", with_table(b"")),
        ("table not base64", {
            let mut c = good.clone();
            c["table"] = json!("%%% not base64 %%%");
            with_configuration(&entry, &c.to_string())
        }),
        (
            "configuration not JSON",
            with_configuration(&entry, "{table:"),
        ),
        (
            "configuration without a table",
            with_configuration(&entry, "{}"),
        ),
        ("unknown configuration key", {
            let mut c = good.clone();
            c["tabel"] = json!("x");
            with_configuration(&entry, &c.to_string())
        }),
        ("unknown mode", {
            let mut c = good.clone();
            c["mode"] = json!("permissive");
            with_configuration(&entry, &c.to_string())
        }),
        ("network plugin under the HTTP root id", wrong_root),
    ];
    runtime().block_on(async {
        for (i, (name, filter)) in cases.into_iter().enumerate() {
            let how = fails_closed(&run, &format!("fail-closed-{i}"), filter).await;
            println!("ok   {name}: {how}");
        }
    });
}

/// `table` with 100,000 more revoked serials (of an issuer no test leaf has): about
/// 1.1 MB of base64, which the filter reads from Envoy in many chunks. The
/// certificates with these tbsCertificate SHA-256s are revoked too.
fn large_table(table: &[u8], certificates: &[[u8; 32]]) -> Vec<u8> {
    let mut t = ruleset::decode(table).unwrap_or_else(|e| panic!("emitted table: {e}"));
    for c in certificates {
        t.revocation.add_certificate(c);
    }
    for i in 0..100_000u32 {
        t.revocation
            .add_serial(Some(0x5eed_5eed), &(i | 0x8000_0000).to_be_bytes());
    }
    t.normalize();
    ruleset::encode(&t).unwrap_or_else(|e| panic!("encode: {e}"))
}

#[test]
fn a_large_inline_table_is_read_whole_and_enforced() {
    let run = run();
    let table = enforce_table(&run);
    let entry = emit(&run, &table, EmitEnvoy::default());
    let mut config = configuration(&entry);
    let b64 = base64::engine::general_purpose::STANDARD;
    let bytes = b64
        .decode(config["table"].as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("emitted table is not base64: {e}"));
    // checkout's certificate is revoked by what its CA signed (its tbsCertificate).
    let checkout_pem = std::fs::read(&run.pki.leaf("checkout").chain_pem)
        .unwrap_or_else(|e| panic!("checkout chain: {e}"));
    let checkout = ruleset::cert::parse_pem_or_der(&checkout_pem)
        .unwrap_or_else(|e| panic!("checkout chain: {e}"));
    config["table"] = json!(b64.encode(large_table(&bytes, &[checkout[0].tbs_sha256()])));
    let text = config.to_string();
    assert!(text.len() > 1_000_000, "{} bytes", text.len());
    runtime().block_on(async {
        let s = Scenario::start(
            &run,
            "large-inline-table",
            vec![Listener::new(
                "tcp",
                with_configuration(&entry, &text),
                Wire::Echo,
            )],
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
        let before = s.envoy.certgate_stats().unwrap_or_default();
        for (leaf, admitted) in [("web", true), ("revoked", false), ("checkout", false)] {
            let cfg = rustls_config(&run.pki, run.pki.leaf(leaf), TlsPin::Any)
                .unwrap_or_else(|e| panic!("{e:#}"));
            let msg = b"large table\n";
            let ex = rustls_exchange(s.envoy.addr("tcp"), cfg, msg, Want::Bytes(msg.len())).await;
            assert_eq!(
                ex.received == msg,
                admitted,
                "{leaf}: {}\n{}",
                ex.summary(),
                s.envoy.log_tail(20)
            );
            println!(
                "ok   {leaf} with a {} byte configuration: {}",
                text.len(),
                ex.summary()
            );
        }
        let deltas = counter_deltas(&before, &s.envoy.certgate_stats().unwrap_or_default());
        for reason in ["reason.revoked_serial", "reason.revoked_certificate"] {
            assert_eq!(deltas.get(reason), Some(&1), "counters {deltas:?}");
        }
    });
}

#[test]
fn no_client_certificate_is_refused_even_when_envoy_lets_it_in() {
    let run = run();
    let table = enforce_table(&run);
    let network = emit(&run, &table, EmitEnvoy::default());
    let http = emit(
        &run,
        &table,
        EmitEnvoy {
            http: true,
            ..EmitEnvoy::default()
        },
    );
    runtime().block_on(async {
        let mut tcp = Listener::new("tcp", network, Wire::Echo);
        tcp.client_cert_optional = true;
        let mut web = Listener::new("http", http, Wire::Http);
        web.client_cert_optional = true;
        let s = Scenario::start(&run, "no-client-cert", vec![tcp, web])
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        let anon = rustls_config_anonymous(&run.pki).unwrap_or_else(|e| panic!("{e:#}"));

        let before = s.envoy.certgate_stats().unwrap_or_default();
        let from = s.envoy.access_records().len();
        let msg = b"anonymous\n";
        let ex = rustls_exchange(
            s.envoy.addr("tcp"),
            anon.clone(),
            msg,
            Want::Bytes(msg.len()),
        )
        .await;
        let records = wait_for_log(&s.envoy, from, Some(&ex));
        let audit = audit_records(&records, from);
        let deltas = counter_deltas(&before, &s.envoy.certgate_stats().unwrap_or_default());
        let tail = s.envoy.log_tail(20);
        assert!(
            ex.denied(),
            "network: a client without a certificate got through: {}\n{tail}",
            ex.summary()
        );
        assert_eq!(
            s.backends.get("tcp").map(|b| b.received_bytes()),
            Some(0),
            "network: bytes of a client without a certificate reached the backend"
        );
        assert_eq!(
            audit.first().and_then(|a| a["event.reason"].as_str()),
            Some("no_peer_cert"),
            "network: audit record {audit:?}\n{tail}"
        );
        assert_eq!(
            deltas.get("reason.no_peer_cert"),
            Some(&1),
            "network: counters {deltas:?}"
        );
        assert_eq!(
            deltas.get("denied"),
            Some(&1),
            "network: counters {deltas:?}"
        );
        println!("ok   network, no client certificate: {}", ex.summary());

        let statuses = rustls_http_session(s.envoy.addr("http"), anon, 1).await;
        assert_eq!(
            statuses,
            vec![Some(403)],
            "http: a client without a certificate\n{}",
            s.envoy.log_tail(20)
        );
        println!("ok   http, no client certificate: {statuses:?}");
    });
}
