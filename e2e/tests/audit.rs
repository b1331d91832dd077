//! Audit mode, set by `certgate emit envoy --mode audit` or by the policy's own
//! `mode: audit`: every connection gets through, the would-be denials are recorded and
//! counted as `audit_would_deny`.

use crate::common::{emit, enforce_table, run, runtime, verdict};
use certgate_e2e::{Case, Client, EmitEnvoy, Expect, Listener, Scenario, TlsPin, Wire};

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
    });
}
