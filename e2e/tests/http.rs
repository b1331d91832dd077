//! The HTTP variant (`envoy.filters.http.wasm` before the router): 200 from the backend
//! for allowed peers, a generic 403 with a decision id for denied ones.

use crate::common::{emit, enforce_table, run, runtime, verdict};
use certgate_e2e::client::{rustls_config, rustls_http_session};
use certgate_e2e::run::counter_deltas;
use certgate_e2e::{Case, Client, EmitEnvoy, Expect, Listener, Scenario, TlsPin, Wire};

#[test]
fn http_filter_answers_403_or_200() {
    let run = run();
    let table = enforce_table(&run);
    let filter = emit(
        &run,
        &table,
        EmitEnvoy {
            http: true,
            ..EmitEnvoy::default()
        },
    );
    // The module picks its HTTP front end by root id (docs/filter.md); under any other
    // root id proxy-wasm panics at the first request and every request gets a 503.
    assert_eq!(
        filter["typed_config"]["config"]["root_id"], "certgate-http",
        "`certgate emit envoy --http` must print root_id `certgate-http`, the filter's HTTP \
         root id; with another the VM panics (`invalid context_id`) at the first request"
    );
    let cases = [
        Case::new(
            "allowed identity: 200",
            "web",
            Expect::allow("frontend-and-checkout"),
        ),
        Case::new(
            "unknown identity: 403",
            "stranger",
            Expect::deny("default_deny"),
        ),
        Case::new(
            "deny rule beats allow rule: 403",
            "legacy",
            Expect::deny_rule("no-legacy"),
        ),
        Case::new("revoked: 403", "revoked", Expect::deny("revoked_serial")),
        Case::new("RSA 1024: 403", "rsa1024", Expect::deny("weak_rsa_key"))
            .with(Client::Openssl(TlsPin::Any)),
        Case::new(
            "lifetime too long: 403",
            "longlived",
            Expect::deny("lifetime_too_long"),
        ),
        Case::new(
            "foreign trust domain: 403",
            "foreign",
            Expect::deny("untrusted_domain"),
        ),
        Case::new("TLS 1.2: 403", "web", Expect::deny("tls_version_too_low"))
            .with(Client::Rustls(TlsPin::Tls12)),
        Case::new(
            "TLS 1.3: 200",
            "checkout",
            Expect::allow("frontend-and-checkout"),
        )
        .with(Client::Rustls(TlsPin::Tls13)),
    ];
    runtime().block_on(async {
        let s = Scenario::start(
            &run,
            "http",
            vec![Listener::new("http", filter, Wire::Http)],
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
        verdict(
            &s.target("http").with_eval(&run.certgate, &table),
            &run,
            &cases,
        )
        .await;

        // One decision per connection: three requests on one connection share it, and the
        // counters move once.
        let target = s.target("http");
        for (leaf, want, counter) in [("web", 200, "allowed"), ("stranger", 403, "denied")] {
            let before = s.envoy.certgate_stats().unwrap_or_default();
            let cfg = rustls_config(&run.pki, run.pki.leaf(leaf), TlsPin::Any)
                .unwrap_or_else(|e| panic!("{e:#}"));
            let statuses = rustls_http_session(target.envoy.addr("http"), cfg, 3).await;
            let after = s.envoy.certgate_stats().unwrap_or_default();
            let deltas = counter_deltas(&before, &after);
            assert_eq!(
                statuses,
                vec![Some(want); 3],
                "`{leaf}`: three requests on one connection\n--- envoy log ---\n{}",
                s.envoy.log_tail(20)
            );
            assert_eq!(
                deltas.get(counter),
                Some(&1),
                "`{leaf}`: one decision per connection, counters moved by {deltas:?}"
            );
        }
    });
}
