//! `make demo`: compiles the demo policy, starts an echo backend and Envoy with the
//! certgate filter, runs allowed, denied, revoked and weak-key clients against it, prints
//! what each saw and what certgate recorded, and stops everything it started. The whole
//! access log (ECS JSON, one line per connection, as `certgate emit access-log`
//! configures it) is kept in `target/demo/access.log` (under `CARGO_TARGET_DIR` when set).

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use certgate_e2e::matrix::{mismatches, observe};
use certgate_e2e::tools::{build_dir, repo_root};
use certgate_e2e::{Case, Client, EmitEnvoy, Expect, Listener, Run, Scenario, TlsPin, Wire};

fn main() -> ExitCode {
    match demo() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("demo failed: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn step(t0: Instant, what: &str) {
    println!("[{:>5.1}s] {what}", t0.elapsed().as_secs_f64());
}

fn demo() -> Result<bool> {
    let t0 = Instant::now();
    let run = Run::new()?;
    step(
        t0,
        "issued a root CA, an intermediate, SPIFFE workload certificates and a CRL",
    );

    let policy = repo_root().join("policies/demo.yaml");
    let table = run.compile_file(&policy)?;
    step(t0, "compiled policies/demo.yaml with `certgate compile`");
    let filter = run
        .certgate
        .emit_envoy(&table, &run.tools.filter_wasm, &EmitEnvoy::default())?;
    step(
        t0,
        "generated the Envoy filter entry with `certgate emit envoy`",
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let ok = rt.block_on(async {
        let scenario = Scenario::start(
            &run,
            "demo",
            vec![Listener::new("payments", filter, Wire::Echo)],
        )
        .await?;
        let target = scenario.target("payments");
        step(
            t0,
            &format!(
                "Envoy {} is up: mTLS listener on {}, echo backend on {}",
                "1.40",
                target.envoy.addr("payments"),
                target.backend.addr
            ),
        );

        let cases = [
            Case::new(
                "frontend web",
                "web",
                Expect::allow("frontend-and-checkout"),
            ),
            Case::new("unknown workload", "stranger", Expect::deny("default_deny")),
            Case::new("legacy workload", "legacy", Expect::deny_rule("no-legacy")),
            Case::new(
                "revoked certificate",
                "revoked",
                Expect::deny("revoked_serial"),
            ),
            Case::new("RSA 1024 key", "rsa1024", Expect::deny("weak_rsa_key"))
                .with(Client::Openssl(TlsPin::Any)),
            Case::new("TLS 1.2 client", "web", Expect::deny("tls_version_too_low"))
                .with(Client::Rustls(TlsPin::Tls12)),
        ];
        println!();
        let header = ["client", "SPIFFE ID", "on wire", "decision", "reason", "rule"];
        println!(
            "{:<20} {:<38} {:<10} {:<8} {:<20} {}",
            header[0], header[1], header[2], header[3], header[4], header[5]
        );
        println!("{}", "-".repeat(120));
        let mut records = Vec::new();
        let mut all_as_expected = true;
        for case in &cases {
            let seen = observe(&target, &run.pki, case).await;
            if !mismatches(&target, &run.pki, case, &seen).is_empty() {
                all_as_expected = false;
            }
            let leaf = run.pki.leaf(case.leaf);
            let audit = seen.audit.clone().unwrap_or_default();
            let field = |k: &str| audit[k].as_str().unwrap_or("-").to_string();
            let wire = if seen
                .exchange
                .got(format!("ping from {}\n", case.leaf).as_bytes())
            {
                "echoed"
            } else if seen.exchange.denied() {
                "closed"
            } else {
                "???"
            };
            println!(
                "{:<20} {:<38} {:<10} {:<8} {:<20} {}",
                case.name,
                leaf.spiffe_id().trim_start_matches("spiffe://"),
                wire,
                field("event.action"),
                field("event.reason"),
                field("rule.name"),
            );
            // The record's identifying fields; the access log line holds all of them.
            let mut compact = serde_json::Map::new();
            for k in [
                "event.outcome",
                "event.reason",
                "rule.name",
                "certgate.spiffe_id",
                "tls.client.x509.serial_number",
                "tls.version",
                "source.ip",
                "certgate.decision_id",
            ] {
                if let Some(v) = audit.get(k) {
                    compact.insert(k.to_string(), v.clone());
                }
            }
            records.push(serde_json::Value::Object(compact));
        }
        println!();
        println!("audit records from the access log (`certgate.decision`, the filter's record), main fields:");
        for r in &records {
            println!("  {r}");
        }
        println!();
        println!("counters in Envoy's /stats:");
        for (name, value) in target.envoy.certgate_stats()? {
            if value > 0 {
                println!("  {name}: {value}");
            }
        }
        println!();
        let access_log = scenario.envoy.access_log_path.clone();
        drop(scenario);
        step(t0, "stopped Envoy and the backend");
        // After Envoy stopped, so every line it buffered is in the file.
        let kept = build_dir().join("demo");
        std::fs::create_dir_all(&kept)?;
        let kept = kept.join("access.log");
        std::fs::copy(&access_log, &kept)?;
        let lines = std::fs::read_to_string(&kept)?.lines().count();
        println!(
            "the full access log ({lines} ECS JSON lines, one per connection and logger when it closed) is in {}",
            kept.display()
        );
        anyhow::Ok(all_as_expected)
    })?;
    if ok {
        println!("every client got the outcome the policy promises");
    } else {
        println!("SOME OUTCOMES DIFFER FROM THE POLICY: run `make e2e` for details");
    }
    Ok(ok)
}
