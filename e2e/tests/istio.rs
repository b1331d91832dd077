//! The Istio shape: the `pluginConfig` of `certgate emit istio`'s WasmPlugin, handed to
//! Envoy the way istiod does it (the object as JSON in a StringValue, plugin name
//! `<namespace>.<name>`, root id from `pluginName`, no vm_id, fail closed), through a
//! subset of the matrix.

use crate::common::{enforce_table, run, runtime, verdict};
use certgate_e2e::{Case, Client, Expect, Listener, Scenario, TlsPin, Wire};
use serde_json::{json, Value};

/// What Istio's control plane makes of a WasmPlugin of type NETWORK.
fn as_istio_would(plugin: &Value, wasm: &std::path::Path) -> Value {
    let spec = &plugin["spec"];
    assert_eq!(spec["type"], "NETWORK", "WasmPlugin type: {plugin}");
    assert_eq!(spec["phase"], "AUTHN", "WasmPlugin phase: {plugin}");
    assert_eq!(
        spec["failStrategy"], "FAIL_CLOSE",
        "WasmPlugin failStrategy: {plugin}"
    );
    let namespace = plugin["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default");
    let name = plugin["metadata"]["name"].as_str().unwrap_or_default();
    // Istio serialises the pluginConfig Struct to JSON and wraps it in a StringValue.
    let config = serde_json::to_string(&spec["pluginConfig"]).unwrap_or_default();
    // As istiod builds it: plugin name `<namespace>.<name>`, root id `pluginName`, no
    // vm_id (Envoy keys the VM by the code), the resource version in the VM's
    // environment, FAIL_CLOSE as `failure_policy: FAIL_CLOSED`.
    json!({
        "name": "envoy.filters.network.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm",
            "config": {
                "name": format!("{namespace}.{name}"),
                "root_id": spec["pluginName"],
                "vm_config": {
                    "runtime": "envoy.wasm.runtime.v8",
                    // istio-agent fetches `url` and hands Envoy a local file.
                    "code": {"local": {"filename": wasm}},
                    "environment_variables": {"key_values": {
                        "ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION": "1"
                    }}
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": config
                },
                "failure_policy": "FAIL_CLOSED"
            }
        }
    })
}

#[test]
fn istio_plugin_config_enforces_a_matrix_subset() {
    let run = run();
    let table = enforce_table(&run);
    let url = format!("file://{}", run.tools.filter_wasm.display());
    let text = run
        .certgate
        .emit_istio(&table, "certgate", &url)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let plugin: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("emit istio --format json printed non-JSON ({e}):\n{text}"));
    let filter = as_istio_would(&plugin, &run.tools.filter_wasm);
    let cases = [
        Case::new(
            "allowed identity",
            "web",
            Expect::allow("frontend-and-checkout"),
        ),
        Case::new("unknown identity", "stranger", Expect::deny("default_deny")),
        Case::new(
            "deny rule beats allow",
            "legacy",
            Expect::deny_rule("no-legacy"),
        ),
        Case::new("revoked serial", "revoked", Expect::deny("revoked_serial")),
        Case::new("RSA 1024", "rsa1024", Expect::deny("weak_rsa_key"))
            .with(Client::Openssl(TlsPin::Any)),
        Case::new("TLS 1.2", "web", Expect::deny("tls_version_too_low"))
            .with(Client::Rustls(TlsPin::Tls12)),
    ];
    runtime().block_on(async {
        let s = Scenario::start(
            &run,
            "istio",
            vec![Listener::new("istio", filter, Wire::Echo)],
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
        verdict(
            &s.target("istio").with_eval(&run.certgate, &table),
            &run,
            &cases,
        )
        .await;
    });
}
