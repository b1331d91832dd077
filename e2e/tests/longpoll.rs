//! Long-poll through a real Envoy: with `feed.longPoll` (set by `certgate emit envoy
//! --feed-long-poll`) and a 30 s `interval`, a revocation `certgate compile` writes into
//! the feed directory is enforced within a second (the held poll is answered the moment
//! `certgate serve` notices the file), and the open connection of the revoked
//! certificate is closed; the held poll is answered with a delta (`226 IM Used`), which
//! the filter rebuilds into the signed table. Then `certgate drill` revokes a canary through the same feed,
//! reports that every poller (each of Envoy's VMs: the worker's and the main thread's) converged, and that the canary, admitted
//! before, is refused.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use certgate_e2e::client::rustls_config;
use certgate_e2e::feed::{feed_policy, SignedFeed, FEED_CLUSTER};
use certgate_e2e::pki::INTERMEDIATE_DN;
use certgate_e2e::{EmitEnvoy, Listener, Scenario, TlsPin, Wire};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::common::{admitted, echoes, emit, run, runtime};

/// The regular interval: far longer than the enforcement deadline, so only the long poll
/// can meet it.
const INTERVAL: &str = "30s";
/// How long a poll is held.
const LONG_POLL: &str = "30s";
/// The acceptance deadline: from `certgate compile` writing the table to a new
/// connection with the revoked certificate being refused.
const ENFORCED_WITHIN: Duration = Duration::from_secs(1);
/// How long the filter's workers may take to hold their first long poll after Envoy
/// starts (a first fetch, then the held poll), generous for a loaded machine.
const FIRST_HOLD: Duration = Duration::from_secs(20);
/// `certgate drill --timeout`.
const DRILL_TIMEOUT: &str = "30s";

/// `GET path` on the feed server, the body as text.
fn feed_get(addr: SocketAddr, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the feed");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: feed\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("feed answer");
    raw.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// Serials revoked in every table besides web's (no test certificate has them): a fleet's
/// table is never tiny, and the server sends a delta only when it is at most half the
/// table, so a one-serial revocation travels as a delta here as it would in the field.
const FILLER_SERIALS: u32 = 200;

/// [`feed_policy`] with [`FILLER_SERIALS`] more revoked serials.
fn fleet_policy(run: &certgate_e2e::Run, name: &str, revoke_web: bool) -> String {
    let filler: Vec<String> = (0..FILLER_SERIALS)
        .map(|i| format!("{{serial: \"7E{i:06X}\", issuer: \"{INTERMEDIATE_DN}\"}}"))
        .collect();
    let policy = feed_policy(run, name, revoke_web);
    if revoke_web {
        policy.replacen(
            "    serials: [",
            &format!("    serials: [{}, ", filler.join(", ")),
            1,
        )
    } else {
        policy.replacen(
            "  rules:\n",
            &format!("    serials: [{}]\n  rules:\n", filler.join(", ")),
            1,
        )
    }
}

fn metric(addr: SocketAddr, sample: &str) -> f64 {
    feed_get(addr, "/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn long_poll_enforces_a_compiled_revocation_within_a_second_and_drill_converges() {
    let run = run();
    let feed_dir = run.subdir("feed-tables").expect("feed dir");
    let SignedFeed {
        key,
        public,
        v1,
        server,
    } = SignedFeed::start(
        &run,
        &feed_dir,
        "longpoll.yaml",
        &fleet_policy(&run, "e2e-longpoll", false),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let key_path = key.to_str().expect("key path").to_owned();
    let feed = server.addr;
    let filter = emit(
        &run,
        &v1,
        EmitEnvoy {
            extra: [
                "--feed-cluster",
                FEED_CLUSTER,
                "--feed-interval",
                INTERVAL,
                "--feed-long-poll",
                LONG_POLL,
                "--feed-max-stale",
                "5m",
                "--feed-timeout",
                "5s",
                "--feed-public-key",
                &public,
            ]
            .iter()
            .map(|f| f.to_string())
            .collect(),
            ..EmitEnvoy::default()
        },
    );
    let web = rustls_config(&run.pki, run.pki.leaf("web"), TlsPin::Any).expect("web");
    let checkout =
        rustls_config(&run.pki, run.pki.leaf("checkout"), TlsPin::Any).expect("checkout");

    runtime().block_on(async {
        let s = Scenario::start_with_clusters(
            &run,
            "longpoll",
            vec![Listener::new("tcp", filter, Wire::Echo)],
            vec![server.cluster()],
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
        let addr = s.envoy.addr("tcp");
        let envoy = &s.envoy;
        assert!(admitted(addr, &web).await && admitted(addr, &checkout).await);

        // Every worker holds a long poll for v1.
        let start = Instant::now();
        while metric(feed, "certgate_feed_polls_held") < 1.0
            || metric(feed, "certgate_feed_pollers{table=\"behind\"}") > 0.0
        {
            assert!(
                start.elapsed() < FIRST_HOLD,
                "no held poll:\n{}",
                feed_get(feed, "/status")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!("polls held: {}", feed_get(feed, "/status"));

        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = ServerName::try_from(certgate_e2e::pki::SERVER_NAME).expect("server name");
        let mut web_open = TlsConnector::from(Arc::clone(&web))
            .connect(name, tcp)
            .await
            .expect("handshake");
        assert!(
            echoes(&mut web_open).await,
            "web's open connection refused at start"
        );

        // Revoke web: `certgate compile` writes the table straight into the feed directory.
        let policy = run.pki.dir.join("longpoll.yaml");
        std::fs::write(&policy, fleet_policy(&run, "e2e-longpoll", true)).expect("policy");
        let compiled = Instant::now();
        run.certgate
            .compile_with(
                &[&policy],
                &feed_dir.join("v2.cgt"),
                &["--sign-key", &key_path],
            )
            .expect("compile v2");
        let mut refused_after = None;
        while compiled.elapsed() < ENFORCED_WITHIN * 10 {
            if !admitted(addr, &web).await {
                refused_after = Some(compiled.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!("revocation enforced on new connections {refused_after:?} after compile");
        let took =
            refused_after.unwrap_or_else(|| panic!("web still admitted:\n{}", envoy.log_tail(30)));
        assert!(
            took <= ENFORCED_WITHIN,
            "enforced only after {took:?} (long-poll should beat the {INTERVAL} interval by far)"
        );
        assert!(admitted(addr, &checkout).await, "checkout refused after v2");
        assert!(
            !echoes(&mut web_open).await,
            "web's open connection survived the revocation"
        );
        assert!(envoy.certgate_counter("closed_on_update") >= 1);
        // The held poll was answered with the change only: a delta (`226 IM Used`), which
        // the filter rebuilt into the signed table it enforces.
        assert!(
            metric(feed, "certgate_feed_requests_total{code=\"226\"}") >= 1.0,
            "no delta was served:\n{}",
            feed_get(feed, "/metrics")
        );
        // The feed was polled by long polls, not by the interval: no poll failed.
        assert_eq!(
            envoy.certgate_counter("feed_errors"),
            0,
            "{:?}",
            envoy.certgate_stats()
        );

        // The drill: revoke checkout (the canary here: admitted until now) on top of v2.
        let canary = run.pki.leaf("checkout");
        let out = std::process::Command::new(&run.tools.certgate)
            .arg("drill")
            .arg(&policy)
            .arg("-o")
            .arg(feed_dir.join("v2.cgt"))
            .args(["--sign-key", &key_path])
            .arg("--canary-cert")
            .arg(&canary.chain_pem)
            .arg("--canary-key")
            .arg(&canary.key_pem)
            .args(["--status", &format!("http://{feed}/status")])
            .args(["--timeout", DRILL_TIMEOUT])
            .args(["--target", &addr.to_string()])
            .arg("--target-ca")
            .arg(&run.pki.root_pem)
            .args(["--server-name", certgate_e2e::pki::SERVER_NAME])
            .args(["--format", "json"])
            .output()
            .expect("certgate drill");
        let stdout = String::from_utf8_lossy(&out.stdout);
        println!("drill: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(
            out.status.code(),
            Some(0),
            "drill failed:\n{}",
            envoy.log_tail(30)
        );
        let report: serde_json::Value = serde_json::from_str(&stdout).expect("drill JSON");
        assert_eq!(report["converged"], true);
        assert!(report["pollers"]["newest"].as_u64().unwrap_or(0) >= 1);
        assert_eq!(
            report["pollers"]["behind"].as_array().map(Vec::len),
            Some(0)
        );
        assert!(report["propagation_ms"]["max"].as_u64().is_some());
        assert_eq!(report["target"]["admitted_before"], true);
        assert_eq!(report["target"]["admitted_after"], false);
        // Its verdict is the filter's: checkout is refused, as revoked.
        assert!(
            !admitted(addr, &checkout).await,
            "the canary is still admitted"
        );
        assert!(envoy.certgate_counter("reason.revoked_certificate") >= 1);
    });
    drop(server);
}
