//! `envoy --mode validate` accepts bootstraps built around every entry `certgate emit
//! envoy` prints (network, server-first, audit, HTTP).

use crate::common::{emit, enforce_table, run};
use certgate_e2e::envoy::{bootstrap, cluster, validate, ListenerKind, ListenerSpec};
use certgate_e2e::EmitEnvoy;
use serde_json::json;

#[test]
fn emitted_entries_pass_envoy_validate() {
    let run = run();
    let table = enforce_table(&run);
    let dir = run.subdir("validate").unwrap_or_else(|e| panic!("{e}"));
    let tcp = |name: &str, opts: EmitEnvoy, extra| ListenerSpec {
        name: name.into(),
        client_cert_optional: false,
        kind: ListenerKind::Tcp {
            filter: Some(emit(&run, &table, opts)),
            cluster: "backend".into(),
            tcp_proxy_extra: extra,
        },
    };
    let listeners = vec![
        tcp("network", EmitEnvoy::default(), json!({})),
        tcp(
            "server-first",
            EmitEnvoy {
                server_first: true,
                ..EmitEnvoy::default()
            },
            json!({"max_early_data_bytes": 0}),
        ),
        tcp(
            "audit",
            EmitEnvoy {
                audit: true,
                ..EmitEnvoy::default()
            },
            json!({}),
        ),
        ListenerSpec {
            name: "http".into(),
            client_cert_optional: false,
            kind: ListenerKind::Http {
                filter: Some(emit(
                    &run,
                    &table,
                    EmitEnvoy {
                        http: true,
                        ..EmitEnvoy::default()
                    },
                )),
                cluster: "backend".into(),
            },
        },
    ];
    let cfg = bootstrap(
        &run.pki,
        &listeners,
        vec![cluster("backend", 9)],
        &dir.join("access.log"),
    );
    validate(&run.tools.envoy, &dir, &cfg).unwrap_or_else(|e| panic!("{e:#}"));
}
