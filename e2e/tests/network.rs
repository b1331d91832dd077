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
        verdict(
            &s.target("tcp").with_eval(&run.certgate, &table),
            &run,
            &enforce_cases(),
        )
        .await;
    });
}
