//! Without the filter, Envoy's own mTLS accepts every test leaf: so when a case with the
//! filter is refused, the filter refused it, not the handshake. The one exception is the
//! `expired` leaf, which Envoy must refuse in the handshake (the lifecycle test logs it).

use certgate_e2e::client::{openssl_exchange, rustls_config, rustls_exchange, Want};
use certgate_e2e::envoy::{bootstrap, cluster};
use certgate_e2e::{Backend, BackendKind, Envoy, ListenerKind, ListenerSpec, Run, TlsPin};
use serde_json::json;

#[test]
fn envoy_alone_accepts_every_test_leaf() {
    let run = Run::envoy_only().unwrap_or_else(|e| panic!("{e:#}"));
    let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        let echo = Backend::start(BackendKind::Echo)
            .await
            .expect("echo backend");
        let dir = run.subdir("baseline").expect("dir");
        let cfg = bootstrap(
            &run.pki,
            &[ListenerSpec {
                name: "plain".into(),
                client_cert_optional: false,
                kind: ListenerKind::Tcp {
                    filter: None,
                    cluster: "echo".into(),
                    tcp_proxy_extra: json!({}),
                },
            }],
            vec![cluster("echo", echo.port())],
            &dir.join("access.log"),
        );
        let envoy = Envoy::start(&run.tools.envoy, &dir, &cfg).unwrap_or_else(|e| panic!("{e}"));
        let addr = envoy.addr("plain");
        let mut failures = Vec::new();
        for leaf in &run.pki.leaves {
            let msg = format!("hello from {}\n", leaf.spec.name);
            let ex = match rustls_config(&run.pki, leaf, TlsPin::Any) {
                Ok(cfg) => rustls_exchange(addr, cfg, msg.as_bytes(), Want::Bytes(msg.len())).await,
                Err(_) => openssl_exchange(
                    addr,
                    &run.pki,
                    leaf,
                    TlsPin::Any,
                    msg.as_bytes(),
                    Want::Bytes(msg.len()),
                ),
            };
            println!("{:<10} {}", leaf.spec.name, ex.summary());
            let refused = !ex.got(msg.as_bytes());
            if refused != (leaf.spec.name == "expired") {
                failures.push(format!("{}: {}", leaf.spec.name, ex.summary()));
            }
        }
        if !failures.is_empty() {
            panic!(
                "Envoy alone refused valid leaves or accepted the expired one:\n{}\n--- envoy log ---\n{}",
                failures.join("\n"),
                envoy.log_tail(30)
            );
        }
    });
}
