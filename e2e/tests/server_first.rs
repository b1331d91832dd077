//! Server-speaks-first backends: with `--server-first` the filter decides before
//! tcp_proxy opens the upstream connection, so a denied client receives zero banner
//! bytes and the banner server counts zero connections from it.

use crate::common::{emit, enforce_table, run, runtime, verdict};
use certgate_e2e::{Case, EmitEnvoy, Expect, Listener, Scenario, Wire};

#[test]
fn server_first_denied_clients_never_reach_the_backend() {
    let run = run();
    let table = enforce_table(&run);
    let filter = emit(
        &run,
        &table,
        EmitEnvoy {
            server_first: true,
            ..EmitEnvoy::default()
        },
    );
    let cases = [
        Case::new(
            "allowed identity receives the banner",
            "web",
            Expect::allow("frontend-and-checkout"),
        ),
        Case::new(
            "unknown identity: no banner byte, no backend connection",
            "stranger",
            Expect::deny("default_deny"),
        ),
        Case::new(
            "deny rule: no banner byte, no backend connection",
            "legacy",
            Expect::deny_rule("no-legacy"),
        ),
        Case::new(
            "revoked: no banner byte, no backend connection",
            "revoked",
            Expect::deny("revoked_serial"),
        ),
        Case::new(
            "TLS 1.2: no banner byte, no backend connection",
            "web",
            Expect::deny("tls_version_too_low"),
        )
        .with(certgate_e2e::Client::Rustls(certgate_e2e::TlsPin::Tls12)),
        Case::new(
            "allowed again after denials",
            "checkout",
            Expect::allow("frontend-and-checkout"),
        ),
    ];
    runtime().block_on(async {
        let mut listener = Listener::new("first", filter, Wire::Banner);
        // tcp_proxy disables downstream reads until its upstream connects, which would
        // stall the TLS handshake of a paused connection; with early data allowed it
        // reads on (ARCHITECTURE.md, "Server-first protocols").
        listener.tcp_proxy_extra = serde_json::json!({"max_early_data_bytes": 0});
        let s = Scenario::start(&run, "server-first", vec![listener])
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        verdict(
            &s.target("first").with_eval(&run.certgate, &table),
            &run,
            &cases,
        )
        .await;
    });
}
