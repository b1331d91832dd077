//! The network filter (`envoy.filters.network.wasm` before tcp_proxy) in enforce mode:
//! the whole matrix over an echo backend.

use crate::common::{emit, enforce_cases, enforce_table, run, runtime, verdict};
use certgate_e2e::{EmitEnvoy, Listener, Scenario, Wire};

#[test]
fn network_filter_enforces_the_matrix() {
    let run = run();
    let table = enforce_table(&run);
    let filter = emit(&run, &table, EmitEnvoy::default());
    runtime().block_on(async {
        let s = Scenario::start(
            &run,
            "network",
            vec![Listener::new("tcp", filter, Wire::Echo)],
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
        let cases = enforce_cases();
        verdict(
            &s.target("tcp").with_eval(&run.certgate, &table),
            &run,
            &cases,
        )
        .await;
        // The same counters on the Prometheus endpoint (namespace and prefix stripped).
        let (status, text) = s
            .envoy
            .admin_get("/stats/prometheus")
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(status, 200, "/stats/prometheus: {text}");
        let value = |name: &str| {
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .find(|l| l.split([' ', '{']).next() == Some(name))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<u64>().ok())
        };
        let allowed = cases.iter().filter(|c| c.expect.admitted).count() as u64;
        let denied = cases.len() as u64 - allowed;
        assert_eq!(
            value("certgate_allowed"),
            Some(allowed),
            "Prometheus:\n{text}"
        );
        assert_eq!(
            value("certgate_denied"),
            Some(denied),
            "Prometheus:\n{text}"
        );
        assert_eq!(
            value("certgate_reason_default_deny"),
            Some(1),
            "Prometheus:\n{text}"
        );
    });
}
