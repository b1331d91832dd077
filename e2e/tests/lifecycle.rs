//! The connection lifecycle in the access log `certgate emit access-log` configures:
//! one ECS line per connection when it closes, for the clients Envoy refuses in the
//! handshake (an expired certificate, one from another CA) and for those the filter
//! decides (a denied and an allowed one), with the handshake failure, the decision
//! record, and the duration and bytes. Every line conforms to the pinned ECS.

use std::time::{Duration, Instant};

use crate::common::{emit, enforce_table, run, runtime};
use certgate_e2e::client::{rustls_config, rustls_exchange};
use certgate_e2e::pki::{Leaf, LeafKey, LeafSpec};
use certgate_e2e::run::{DECISION_FIELD, SOURCE_ADDRESS_FIELD};
use certgate_e2e::{EmitEnvoy, Exchange, Listener, Scenario, Want, Wire};
use serde_json::Value;

/// How long Envoy may take to write a closed connection's line on a loaded machine.
const LOG_LINE_DEADLINE: Duration = Duration::from_secs(20);

/// A leaf for `spiffe://cluster.local/ns/frontend/sa/web` issued by a CA of its own,
/// which Envoy does not trust.
fn untrusted_leaf(dir: &std::path::Path) -> Leaf {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "another CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    let id = certgate_e2e::pki::spiffe("ns/frontend/sa/web");
    p.subject_alt_names = vec![rcgen::SanType::URI(id.as_str().try_into().unwrap())];
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.signed_by(&key, &ca).unwrap();
    let chain_pem = dir.join("untrusted.pem");
    let key_pem = dir.join("untrusted.key");
    // The leaf alone: its issuer is nowhere Envoy looks.
    std::fs::write(&chain_pem, cert.pem()).unwrap();
    std::fs::write(&key_pem, key.serialize_pem()).unwrap();
    Leaf {
        spec: LeafSpec {
            name: "untrusted",
            uris: vec![id],
            key: LeafKey::EcdsaP256,
            lifetime: time::Duration::days(1),
            serial: 1,
        },
        chain_pem,
        key_pem,
    }
}

/// The line the `site` logger wrote for the connection `ex` made, once it is there.
fn line_of(s: &Scenario, site: &str, ex: &Exchange) -> Value {
    let port = ex
        .local_port
        .unwrap_or_else(|| panic!("no local port: {ex:?}"));
    let suffix = format!(":{port}");
    let deadline = Instant::now() + LOG_LINE_DEADLINE;
    loop {
        let found = s.envoy.access_records().into_iter().find(|l| {
            l["certgate.log_source"] == format!("life/{site}").as_str()
                && l[SOURCE_ADDRESS_FIELD]
                    .as_str()
                    .is_some_and(|a| a.ends_with(&suffix))
        });
        if let Some(l) = found {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "no access-log line for port {port} within {LOG_LINE_DEADLINE:?}:\n{:#?}",
            s.envoy.access_records()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn decision(line: &Value) -> Option<Value> {
    serde_json::from_str(line.get(DECISION_FIELD)?.as_str()?).ok()
}

#[test]
fn the_access_log_records_handshake_failures_decisions_and_closes_as_ecs() {
    let run = run();
    let table = enforce_table(&run);
    let filter = emit(&run, &table, EmitEnvoy::default());
    let untrusted = untrusted_leaf(&run.subdir("untrusted").unwrap());
    runtime().block_on(async {
        let s = Scenario::start(
            &run,
            "lifecycle",
            vec![Listener::new("life", filter, Wire::Echo)],
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
        let addr = s.envoy.addr("life");
        let ping = b"ping from the lifecycle test\n";
        let mut lines = Vec::new();
        for (what, leaf) in [
            ("expired", run.pki.leaf("expired")),
            ("untrusted", &untrusted),
            ("denied", run.pki.leaf("stranger")),
            ("allowed", run.pki.leaf("web")),
        ] {
            let cfg = rustls_config(&run.pki, leaf, certgate_e2e::TlsPin::Any)
                .unwrap_or_else(|e| panic!("{e:#}"));
            let ex = rustls_exchange(addr, cfg, ping, Want::Bytes(ping.len())).await;
            // The listener's logger and tcp_proxy's both see every connection.
            for site in ["listener", "tcp_proxy"] {
                let line = line_of(&s, site, &ex);
                println!("{what} ({site}): {}", serde_json::to_string(&line).unwrap());
                lines.push((what, ex.clone(), line));
            }
        }
        for (what, ex, line) in &lines {
            assert_eq!(line["event.type"], "end", "{what}: {line}");
            assert_eq!(line["event.action"], "connection-closed", "{what}: {line}");
            assert!(line["certgate.duration_ms"].is_u64(), "{what}: {line}");
            assert!(line["source.port"].is_u64(), "{what}: {line}");
            let failure = line["error.message"].as_str();
            let record = decision(line);
            match *what {
                "expired" | "untrusted" => {
                    // Refused in the handshake: the filter never decided.
                    let failure = failure.unwrap_or_else(|| panic!("{what}: {line}"));
                    assert!(
                        failure.contains("CERTIFICATE_VERIFY_FAILED"),
                        "{what}: {failure}"
                    );
                    // Envoy writes BoringSSL's reason with `_` for spaces.
                    let detail = if *what == "expired" {
                        "certificate_has_expired"
                    } else {
                        "unable_to_get_local_issuer_certificate"
                    };
                    assert!(failure.contains(detail), "{what}: {failure}");
                    assert!(record.is_none(), "{what}: {line}");
                    assert_eq!(
                        line["destination.bytes"].as_u64(),
                        Some(0),
                        "{what}: {line}"
                    );
                }
                "denied" | "allowed" => {
                    assert!(failure.is_none(), "{what}: {line}");
                    let record = record.unwrap_or_else(|| panic!("{what}: no decision: {line}"));
                    let outcome = if *what == "denied" {
                        "failure"
                    } else {
                        "success"
                    };
                    assert_eq!(record["event.outcome"], outcome, "{what}: {record}");
                    assert_eq!(record["source.port"], line["source.port"], "{what}");
                    assert_eq!(
                        line["tls.client.x509.serial_number"]
                            .as_str()
                            .map(str::to_lowercase),
                        record["tls.client.x509.serial_number"]
                            .as_str()
                            .map(str::to_lowercase),
                        "{what}"
                    );
                    let echoed = line["destination.bytes"].as_u64().unwrap_or(0);
                    if *what == "allowed" {
                        assert_eq!(ex.received, ping, "{what}: {ex:?}");
                        assert!(
                            line["source.bytes"].as_u64() >= Some(ping.len() as u64)
                                && echoed >= ping.len() as u64,
                            "{what}: bytes in and out: {line}"
                        );
                    } else {
                        assert_eq!(echoed, 0, "{what}: a denied client got data: {line}");
                    }
                }
                _ => unreachable!(),
            }
        }
        let all = s.envoy.access_records();
        let summary = certgate_e2e::ecs::check(&all).unwrap_or_else(|e| panic!("{e:#}"));
        println!("{summary}");
    });
}

/// The Istio recipe (docs/istio-access-log.yaml): both objects validate against the CRDs
/// pinned from istio/api, and the EnvoyFilter carries exactly the logger the CLI prints.
#[test]
fn the_istio_recipe_validates_and_carries_the_emitted_logger() {
    let root = certgate_e2e::tools::repo_root();
    let python = std::env::var_os("CERTGATE_PYTHON")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| panic!("CERTGATE_PYTHON is not set: run `make venv` (or `make e2e`)"));
    let text = std::fs::read_to_string(root.join("docs/istio-access-log.yaml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // One JSON file per document, through the venv's PyYAML.
    let split = std::process::Command::new(&python)
        .args([
            "-c",
            "import json,sys,yaml\n\
             for i,d in enumerate(yaml.safe_load_all(open(sys.argv[1]))):\n    \
             json.dump(d, open(f'{sys.argv[2]}/{i}.json','w'))",
        ])
        .arg(root.join("docs/istio-access-log.yaml"))
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(split.status.success(), "{split:?}");
    let doc = |i: usize| -> Value {
        serde_json::from_slice(&std::fs::read(dir.path().join(format!("{i}.json"))).unwrap())
            .unwrap()
    };
    let fixtures = root.join("compiler/tests/fixtures/istio");
    for (i, kind, crd) in [
        (0, "EnvoyFilter", "envoyfilter-crd.yaml"),
        (1, "Telemetry", "telemetry-crd.yaml"),
    ] {
        assert_eq!(doc(i)["kind"], kind, "{text}");
        let out = std::process::Command::new(&python)
            .arg(root.join("scripts/validate-crd.py"))
            .arg(fixtures.join(crd))
            .arg(dir.path().join(format!("{i}.json")))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{kind} does not validate: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let run = run();
    let emitted = std::process::Command::new(&run.tools.certgate)
        .args(["emit", "access-log", "--format", "json"])
        .output()
        .unwrap();
    assert!(emitted.status.success(), "{emitted:?}");
    let emitted: Value = serde_json::from_slice(&emitted.stdout).unwrap();
    let patch = &doc(0)["spec"]["configPatches"][0];
    assert_eq!(patch["match"]["context"], "SIDECAR_INBOUND");
    assert_eq!(
        patch["patch"]["value"]["access_log"][0], emitted,
        "the recipe's logger is not what `certgate emit access-log` prints"
    );
}
