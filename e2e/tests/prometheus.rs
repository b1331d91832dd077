//! A real Prometheus (Debian `prometheus`, `make prometheus`) scrapes a real Envoy running
//! the filter (`/stats/prometheus`, with the tag extractors `certgate emit stats` prints)
//! and `certgate serve` (`/metrics`), loads the alerting rules of deploy/monitoring/, and
//! answers the labelled queries and every query of the Grafana dashboard there.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use certgate_e2e::envoy::http_get;
use certgate_e2e::feed::{feed_policy, with_feed, SignedFeed, FEED_CLUSTER};
use certgate_e2e::tools::repo_root;
use certgate_e2e::{Case, EmitEnvoy, Expect, Listener, Scenario, Wire};
use serde_json::{json, Value};

use crate::common::{emit, run, runtime, verdict};

/// How long a query may take to show what the scenario did: Prometheus scrapes every
/// second, but the machine may be loaded.
const PROMETHEUS_DEADLINE: Duration = Duration::from_secs(120);

/// What the dashboard's Grafana variables stand for in the test.
const RATE_INTERVAL: &str = "1m";

/// A running Prometheus; killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus scraping Envoy's admin and the feed server every second, with
    /// the alerting rules loaded, and waits until it is ready.
    fn start(dir: &Path, envoy_admin: SocketAddr, feed: SocketAddr) -> Result<Prometheus> {
        let rules = repo_root().join("deploy/monitoring/certgate-alerts.yaml");
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: [{rules:?}]\n\
             scrape_configs:\n\
             - job_name: envoy\n  metrics_path: /stats/prometheus\n  \
               static_configs: [{{targets: [\"{envoy_admin}\"]}}]\n\
             - job_name: certgate-feed\n  metrics_path: /metrics\n  \
               static_configs: [{{targets: [\"{feed}\"]}}]\n"
        );
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        // A free port: bound, read, released (Prometheus has no port-0 readback).
        let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let bin = std::env::var("CERTGATE_PROMETHEUS").unwrap_or_else(|_| "prometheus".into());
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {bin} (install it with `make prometheus`)"))?;
        let me = Prometheus { child, addr };
        let until = Instant::now() + PROMETHEUS_DEADLINE;
        while !matches!(http_get(addr, "/-/ready"), Ok((200, _))) {
            if Instant::now() > until {
                bail!(
                    "Prometheus not ready at {addr}:\n{}",
                    std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(me)
    }

    /// An instant query through the HTTP API: its result vector. A query Prometheus
    /// refuses (bad syntax, unknown function) is an error.
    fn query(&self, expr: &str) -> Result<Vec<Value>> {
        let (status, body) = http_get(self.addr, &format!("/api/v1/query?query={}", encode(expr)))?;
        let v: Value = serde_json::from_str(&body).with_context(|| format!("{status}: {body}"))?;
        if status != 200 || v["status"] != "success" {
            bail!("query `{expr}` refused ({status}): {body}");
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// Queries `expr` until `ok` holds for its result; panics with the last result at
    /// the deadline.
    fn wait_for(&self, expr: &str, ok: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let until = Instant::now() + PROMETHEUS_DEADLINE;
        loop {
            let result = self.query(expr).unwrap_or_else(|e| panic!("{e:#}"));
            if ok(&result) {
                return result;
            }
            assert!(
                Instant::now() < until,
                "`{expr}` never held; last result: {result:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Percent-encodes a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of a one-sample result.
fn value(result: &[Value]) -> Option<f64> {
    match result {
        [one] => one["value"][1].as_str()?.parse().ok(),
        _ => None,
    }
}

/// What the scenario leaves in each dashboard panel: data, or (where it has no such
/// event) a valid query with an empty result.
fn panel_expectations() -> BTreeMap<&'static str, bool> {
    BTreeMap::from([
        ("Decisions per second by action", true),
        ("Denials per second by reason (enforce)", true),
        // Enforce mode only: nothing would-deny.
        ("Audit mode: would deny, by reason", false),
        ("Rule decisions per second by policy", true),
        ("Revoked certificate attempts (since proxy start)", true),
        // The feed answers: nothing is stale.
        ("Refused as stale (stale_revocation)", false),
        ("Feed: updates, errors and refusals (filter)", true),
        ("Table in force: age", true),
        // The policy sets no expiry: the gauge is 0, which the panel leaves out.
        ("Table in force: time to expiry", false),
        ("Feed server: requests per second by status", true),
        ("Feed server: table served, age", true),
        ("Feed server: tables refused by reason", true),
    ])
}

#[test]
fn prometheus_scrapes_labelled_decisions_and_runs_every_dashboard_query() {
    let run = run();
    let feed_dir = run.subdir("prometheus-feed").expect("feed dir");
    let feed = SignedFeed::start(
        &run,
        &feed_dir,
        "payments.yaml",
        // `web` is revoked: its attempts are the revoked-certificate events.
        &feed_policy(&run, "payments", true),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let filter = with_feed(
        emit(
            &run,
            &feed.v1,
            EmitEnvoy {
                extra: vec!["--plugin-name".into(), "edge".into()],
                ..EmitEnvoy::default()
            },
        ),
        json!({"cluster": FEED_CLUSTER, "path": "/table.cgt", "interval": "1s",
               "maxStale": "10m", "timeout": "2s", "publicKeys": [feed.public]}),
    )
    .expect("feed option");
    // The feed's policy records denials only (audit.log deny).
    let allow = [Case::new(
        "checkout gets through",
        "checkout",
        Expect {
            record: false,
            ..Expect::allow("mesh")
        },
    )];
    let deny = [Case::new(
        "an unknown identity is closed",
        "stranger",
        Expect::deny("default_deny"),
    )];
    let revoked = [Case::new(
        "a revoked certificate is closed",
        "web",
        Expect::deny("revoked_serial"),
    )];

    runtime().block_on(async {
        let s = Scenario::start_with_clusters(
            &run,
            "prometheus",
            vec![Listener::new("tcp", filter, Wire::Echo)],
            vec![feed.server.cluster()],
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
        let dir = run.subdir("prometheus").expect("dir");
        let prom = Prometheus::start(&dir, s.envoy.admin, feed.server.addr)
            .unwrap_or_else(|e| panic!("{e:#}"));
        for job in ["envoy", "certgate-feed"] {
            prom.wait_for(&format!("up{{job=\"{job}\"}} == 1"), |r| r.len() == 1);
        }

        // One allowed and one denied connection through Envoy.
        verdict(&s.target("tcp"), &run, &allow).await;
        verdict(&s.target("tcp"), &run, &deny).await;
        let denied = r#"certgate_decisions_total{plugin="edge",action="deny",reason="default_deny",mode="enforce",policy=""}"#;
        let allowed = r#"certgate_decisions_total{plugin="edge",action="allow",reason="allow_rule",mode="enforce",policy="payments"}"#;
        prom.wait_for(denied, |r| value(r) == Some(1.0));
        prom.wait_for(allowed, |r| value(r) == Some(1.0));
        // A revoked certificate: counted by reason, and the alert for it fires in the
        // real Prometheus (the series is new, which the rule must not miss).
        verdict(&s.target("tcp"), &run, &revoked).await;
        prom.wait_for(
            r#"certgate_decisions_total{plugin="edge",action="deny",reason="revoked_serial",mode="enforce",policy=""}"#,
            |r| value(r) == Some(1.0),
        );
        prom.wait_for(
            r#"ALERTS{alertname="CertgateRevokedCertificateAttempt",alertstate="firing",plugin="edge",reason="revoked_serial",mode="enforce"}"#,
            |r| r.len() == 1,
        );

        // Tag extraction left one metric name: no label is stuck in a name.
        let names = prom
            .query(r#"count by (__name__) ({__name__=~".*decisions_total.*"})"#)
            .unwrap_or_else(|e| panic!("{e:#}"));
        let names: Vec<&str> = names
            .iter()
            .filter_map(|r| r["metric"]["__name__"].as_str())
            .collect();
        assert_eq!(names, ["certgate_decisions_total"]);

        // A second denial: the series increases, and by reason.
        verdict(&s.target("tcp"), &run, &deny).await;
        prom.wait_for(denied, |r| value(r) == Some(2.0));
        prom.wait_for(
            r#"sum by (reason) (increase(certgate_decisions_total{action="deny"}[1m])) > 0"#,
            // revoked_serial's series appeared at 1 and has not grown: no increase.
            |r| r.len() == 1 && r[0]["metric"]["reason"] == "default_deny",
        );
        let allows = prom
            .query(r#"sum(certgate_decisions_total{action="allow"})"#)
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(value(&allows), Some(1.0), "no second allow was counted");

        // The feed's labelled counters and the table gauges: the filter enforces the
        // table the feed server serves.
        let refusals = prom
            .query(r#"certgate_feed_refusals_total{plugin="edge"}"#)
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(refusals.len(), 7, "{refusals:?}");
        assert!(refusals.iter().all(|r| r["value"][1] == "0"), "{refusals:?}");
        prom.wait_for(
            r#"certgate_table_issued_timestamp_seconds{plugin="edge"} - on() floor(certgate_feed_table_issued_timestamp_seconds)"#,
            |r| value(r) == Some(0.0),
        );

        // The alerting rules loaded and evaluate without error.
        let (status, body) = http_get(prom.addr, "/api/v1/rules").expect("rules");
        assert_eq!(status, 200, "{body}");
        let rules: Value = serde_json::from_str(&body).expect("rules JSON");
        let group = &rules["data"]["groups"][0];
        assert_eq!(group["name"], "certgate", "{body}");
        let rules = group["rules"].as_array().expect("rules");
        assert_eq!(rules.len(), 7, "{body}");
        for rule in rules {
            assert_ne!(rule["health"], "err", "{rule}");
        }
        let firing = prom
            .query(r#"ALERTS{alertstate="firing"}"#)
            .unwrap_or_else(|e| panic!("{e:#}"));
        let names: Vec<&str> = firing
            .iter()
            .filter_map(|a| a["metric"]["alertname"].as_str())
            .collect();
        assert_eq!(
            names,
            ["CertgateRevokedCertificateAttempt"],
            "only the revoked certificate fires: {firing:?}"
        );

        // Every query of the dashboard: valid, and with data where the scenario made
        // some (data queries are waited for: rates need two scrapes).
        let path = repo_root().join("deploy/monitoring/certgate-dashboard.json");
        let dashboard: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard"))
                .expect("dashboard JSON");
        let expect = panel_expectations();
        let panels = dashboard["panels"].as_array().expect("panels");
        let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
        assert_eq!(
            titles.len(),
            expect.len(),
            "every panel is listed in panel_expectations: {titles:?}"
        );
        for panel in panels {
            let title = panel["title"].as_str().expect("title");
            let has_data = *expect
                .get(title)
                .unwrap_or_else(|| panic!("panel `{title}` is not in panel_expectations"));
            for target in panel["targets"].as_array().expect("targets") {
                let expr = target["expr"]
                    .as_str()
                    .expect("expr")
                    .replace("$__rate_interval", RATE_INTERVAL)
                    .replace("$plugin", ".*");
                if has_data {
                    prom.wait_for(&expr, |r| !r.is_empty());
                } else {
                    let result = prom.query(&expr).unwrap_or_else(|e| panic!("{title}: {e:#}"));
                    assert!(result.is_empty(), "{title}: `{expr}` has data: {result:?}");
                }
            }
        }
    });
}
