//! The live revocation feed through a real Envoy, without a restart: `certgate serve`
//! delivers a newer signed table, the filter swaps it in, closes an open connection the
//! new table revokes and leaves the others alone; a corrupt table is refused; with the
//! feed gone the last good table keeps deciding until `maxStale`, then `onStale: deny`
//! refuses new connections; a million-entry table delivered by the feed is enforced.
//! And the adversary's tables: forged (another key), unsigned, older and of another
//! lineage are each refused and counted with enforcement unchanged, and a table past its
//! expiry refuses new connections although the feed keeps serving it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use certgate_e2e::client::rustls_config;
use certgate_e2e::feed::{
    feed_policy, sign, with_feed, FeedServer, FixedFeed, SignedFeed, FEED_CLUSTER,
};
use certgate_e2e::{EmitEnvoy, Listener, Run, Scenario, TlsPin, Want, Wire};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::common::{admitted, echoes, emit, run, runtime, within};

const INTERVAL: Duration = Duration::from_secs(1);
const MAX_STALE: Duration = Duration::from_secs(4);
/// How long a refused table may take to be fetched and counted: a few polls, generous
/// for a loaded machine.
const REFUSAL_LIMIT: Duration = Duration::from_secs(10);
/// `maxAge` of the expiring table, and how long after it the refusal may take to show.
const MAX_AGE_SECS: u64 = 8;
const EXPIRY_SLACK: Duration = Duration::from_secs(5);

fn policy(run: &Run, revoke_web: bool) -> String {
    feed_policy(run, "e2e-feed", revoke_web)
}

/// `certgate emit envoy` flags for a feed from `FEED_CLUSTER` polled every second (2 s
/// timeout), stale after `max_stale`, its tables signed by `public`.
fn feed_flags(max_stale: &str, public: &str) -> Vec<String> {
    [
        "--feed-cluster",
        FEED_CLUSTER,
        "--feed-interval",
        "1s",
        "--feed-max-stale",
        max_stale,
        "--feed-timeout",
        "2s",
        "--feed-public-key",
        public,
    ]
    .iter()
    .map(|f| f.to_string())
    .collect()
}

/// A connection that stays open: handshake and one echoed ping.
async fn open(addr: SocketAddr, config: &Arc<ClientConfig>) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(certgate_e2e::pki::SERVER_NAME).expect("server name");
    let mut tls = TlsConnector::from(Arc::clone(config))
        .connect(name, tcp)
        .await
        .expect("handshake");
    assert!(
        echoes(&mut tls).await,
        "long-lived connection refused at start"
    );
    tls
}

/// One keep-alive HTTP/1.1 request on `tls`: the status and whether the server closed
/// the connection right after the response.
async fn http_request(tls: &mut TlsStream<TcpStream>) -> (Option<u16>, bool) {
    let req = format!(
        "GET / HTTP/1.1\r\nhost: {}\r\nconnection: keep-alive\r\n\r\n",
        certgate_e2e::pki::SERVER_NAME
    );
    if tls.write_all(req.as_bytes()).await.is_err() {
        return (None, true);
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !Want::HttpResponse.complete(&got) {
        match tokio::time::timeout(Duration::from_secs(2), tls.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => return (None, true),
        }
    }
    let status = String::from_utf8_lossy(&got)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok());
    let closed = matches!(
        tokio::time::timeout(Duration::from_millis(500), tls.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    );
    (status, closed)
}

/// A TLS connection that has not sent anything yet.
async fn connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(certgate_e2e::pki::SERVER_NAME).expect("server name");
    TlsConnector::from(Arc::clone(config))
        .connect(name, tcp)
        .await
        .expect("handshake")
}

#[test]
fn feed_revokes_open_and_new_connections_without_restart() {
    let started = Instant::now();
    let run = run();
    let feed_dir = run.subdir("feed-tables").expect("feed dir");
    let SignedFeed {
        key,
        public,
        v1,
        server,
    } = SignedFeed::start(&run, &feed_dir, "feed.yaml", &policy(&run, false))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let signed = ["--sign-key", key.to_str().expect("key path")];
    let feed_addr = server.addr;
    let filter = with_feed(
        emit(&run, &v1, EmitEnvoy::default()),
        json!({"cluster": FEED_CLUSTER, "path": "/table.cgt", "interval": "1s",
               "maxStale": "4s", "timeout": "2s", "publicKeys": [public]}),
    )
    .expect("feed option");
    // The HTTP listener's entry comes straight from `certgate emit envoy --feed-*`.
    let http_filter = emit(
        &run,
        &v1,
        EmitEnvoy {
            http: true,
            extra: feed_flags("4s", &public),
            ..EmitEnvoy::default()
        },
    );
    let web = rustls_config(&run.pki, run.pki.leaf("web"), TlsPin::Any).expect("web");
    let checkout =
        rustls_config(&run.pki, run.pki.leaf("checkout"), TlsPin::Any).expect("checkout");

    runtime().block_on(async {
        let s = Scenario::start_with_clusters(
            &run,
            "feed",
            vec![
                Listener::new("tcp", filter, Wire::Echo),
                Listener::new("http", http_filter, Wire::Http),
            ],
            vec![server.cluster()],
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
        let addr = s.envoy.addr("tcp");
        let envoy = &s.envoy;
        println!("envoy up after {:?}", started.elapsed());

        // v1: both identities in; two long-lived connections.
        assert!(admitted(addr, &web).await && admitted(addr, &checkout).await);
        let mut web_open = open(addr, &web).await;
        let mut checkout_open = open(addr, &checkout).await;
        let http_addr = s.envoy.addr("http");
        let mut web_http = connect(http_addr, &web).await;
        assert_eq!(http_request(&mut web_http).await, (Some(200), false));

        // Revoke web's serial: compile v2 straight into the feed directory.
        let v2 = run
            .compile_text_with("feed.yaml", &policy(&run, true), &signed)
            .expect("compile v2");
        let placed = Instant::now();
        std::fs::copy(&v2, feed_dir.join("v2.cgt")).expect("place v2");
        let took = within(INTERVAL + Duration::from_secs(1), async || {
            !admitted(addr, &web).await
        })
        .await;
        println!("revocation enforced on new connections after {took:?}");
        assert!(
            took.is_some(),
            "web still admitted {:?} after placing v2:\n{}",
            placed.elapsed(),
            envoy.log_tail(30)
        );
        assert!(!admitted(addr, &web).await, "web admitted again");
        assert!(admitted(addr, &checkout).await, "checkout refused after v2");
        assert!(envoy.certgate_counter("reason.revoked_serial") >= 1);
        // The long-lived web connection was closed; checkout's still echoes.
        assert!(
            !echoes(&mut web_open).await,
            "open web connection survived v2"
        );
        assert!(
            echoes(&mut checkout_open).await,
            "open checkout connection was closed"
        );
        assert!(
            envoy.certgate_counter("closed_on_update") >= 1,
            "{:?}",
            envoy.certgate_stats()
        );
        assert!(envoy.certgate_counter("feed_updates") >= 1);
        // HTTP: the next request of the open web connection is refused by resetting the
        // stream, which closes the HTTP/1.1 connection (Envoy 1.40 sends a wasm local
        // reply only after the callback returns, so the reset wins over a 403).
        let (status, closed) = http_request(&mut web_http).await;
        println!("open HTTP connection after v2: response {status:?}, closed {closed}");
        assert_eq!(status, None, "the revoked request got a response");
        assert!(closed, "HTTP connection left open after the refusal");
        // A new HTTP connection with web gets the ordinary 403.
        let mut fresh = connect(http_addr, &web).await;
        assert_eq!(http_request(&mut fresh).await.0, Some(403));
        assert!(
            envoy.log_tail(200).contains("closing open connection"),
            "{}",
            envoy.log_tail(30)
        );
        println!(
            "open connection closed; {:?} since placing v2",
            placed.elapsed()
        );

        // A corrupt newest file in the directory is never served.
        std::fs::write(feed_dir.join("v3.cgt"), b"CGT\x01 not a table").expect("v3");
        tokio::time::sleep(INTERVAL + Duration::from_millis(300)).await;
        assert!(!admitted(addr, &web).await && admitted(addr, &checkout).await);

        // A feed that serves a corrupt table (v2 with one byte flipped): its signature
        // no longer verifies; refused, counted, nothing changes.
        let errors = envoy.certgate_counter("feed_errors");
        let rejected = envoy.certgate_counter("feed_rejected_signature");
        let updates = envoy.certgate_counter("feed_updates");
        server.stop();
        let mut corrupt = std::fs::read(&v2).expect("v2 bytes");
        let mid = corrupt.len() / 2;
        corrupt[mid] ^= 0xff;
        let bad = FixedFeed::start(feed_addr, corrupt).expect("fixed feed");
        let last_good = Instant::now();
        let refused = within(INTERVAL * 3, async || {
            envoy.certgate_counter("feed_rejected_signature") > rejected
        })
        .await;
        assert!(
            refused.is_some(),
            "corrupt table not counted:\n{}",
            envoy.log_tail(30)
        );
        assert_eq!(envoy.certgate_counter("feed_updates"), updates);
        assert!(!admitted(addr, &web).await && admitted(addr, &checkout).await);
        assert!(
            envoy.log_tail(200).contains("does not verify"),
            "{}",
            envoy.log_tail(30)
        );

        // The feed goes away: the last good table holds until maxStale, then onStale deny.
        drop(bad);
        tokio::time::sleep(
            MAX_STALE.saturating_sub(last_good.elapsed()) + Duration::from_millis(500),
        )
        .await;
        let stale_from = envoy.certgate_counter("reason.stale_revocation");
        assert!(
            !admitted(addr, &checkout).await,
            "checkout admitted past maxStale"
        );
        assert!(envoy.certgate_counter("reason.stale_revocation") > stale_from);
        assert!(envoy.certgate_counter("feed_errors") > errors);
        println!("stale after {:?} without a good fetch", last_good.elapsed());

        // The feed comes back with a million revoked serials (web's among them).
        let mut table = ruleset::decode(&std::fs::read(&v2).expect("v2")).expect("decode v2");
        let built = Instant::now();
        for i in 0u32..1_000_000 {
            let serial = [0x7f, (i >> 16) as u8, (i >> 8) as u8, i as u8, 0x11];
            table.revocation.add_serial(Some(0x5eed), &serial);
        }
        table.normalize();
        // Issued after v2, and signed with the feed's key like every fed table.
        table.issued_at_ms += 1;
        let big = sign(ruleset::encode(&table).expect("encode 1M"), &key).expect("sign 1M");
        println!(
            "1M-entry table: {} bytes, built in {:?}",
            big.len(),
            built.elapsed()
        );
        let big_dir = run.subdir("feed-big").expect("big dir");
        std::fs::write(big_dir.join("big.cgt"), &big).expect("write big");
        let _server = FeedServer::start(&run.tools.certgate, &big_dir, feed_addr)
            .expect("certgate serve again");
        let back = within(Duration::from_secs(6), async || {
            admitted(addr, &checkout).await
        })
        .await;
        println!("1M-entry table in force after {back:?}");
        assert!(
            back.is_some(),
            "checkout still refused:\n{}",
            envoy.log_tail(30)
        );
        assert!(
            !admitted(addr, &web).await,
            "web admitted under the 1M table"
        );
        assert!(
            envoy.log_tail(100).contains("1000001 revoked serials"),
            "{}",
            envoy.log_tail(30)
        );
    });
    println!("feed scenario took {:?}", started.elapsed());
}

#[test]
fn feed_refuses_forged_unsigned_older_and_foreign_tables_and_expires_tables() {
    let started = Instant::now();
    let run = run();
    let key = run.dir.path().join("signing.key");
    let public = run.certgate.keygen(&key).expect("keygen");
    let forger = run.dir.path().join("forger.key");
    run.certgate.keygen(&forger).expect("keygen forger");
    let signed = ["--sign-key", key.to_str().expect("key path")];
    let revoking = policy(&run, true);
    // Compiled first, so issued before v1: web revoked.
    let older = run
        .compile_text_with("older.yaml", &revoking, &signed)
        .expect("compile older");
    let v1 = run
        .compile_text_with("feed.yaml", &policy(&run, false), &signed)
        .expect("compile v1");
    // Issued after v1, each revoking web were it accepted.
    let forged = run
        .compile_text_with(
            "forged.yaml",
            &revoking,
            &["--sign-key", forger.to_str().expect("forger path")],
        )
        .expect("compile forged");
    let unsigned = run
        .compile_text_with("unsigned.yaml", &revoking, &[])
        .expect("compile unsigned");
    let foreign = run
        .compile_text_with(
            "foreign.yaml",
            &revoking.replace("name: e2e-feed", "name: other-service"),
            &signed,
        )
        .expect("compile foreign");

    let fixed = FixedFeed::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        std::fs::read(&v1).expect("v1 bytes"),
    )
    .expect("fixed feed");
    let filter = emit(
        &run,
        &v1,
        EmitEnvoy {
            extra: feed_flags("1m", &public),
            ..EmitEnvoy::default()
        },
    );
    let web = rustls_config(&run.pki, run.pki.leaf("web"), TlsPin::Any).expect("web");
    let checkout =
        rustls_config(&run.pki, run.pki.leaf("checkout"), TlsPin::Any).expect("checkout");

    runtime().block_on(async {
        let s = Scenario::start_with_clusters(
            &run,
            "feed-trust",
            vec![Listener::new("tcp", filter, Wire::Echo)],
            vec![fixed.cluster()],
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
        let addr = s.envoy.addr("tcp");
        let envoy = &s.envoy;
        assert!(admitted(addr, &web).await && admitted(addr, &checkout).await);

        for (what, table, rejected) in [
            (
                "a forged table (another key)",
                &forged,
                "feed_rejected_signature",
            ),
            ("an unsigned table", &unsigned, "feed_rejected_signature"),
            ("an older table", &older, "feed_rejected_rollback"),
            (
                "a table of another lineage",
                &foreign,
                "feed_rejected_lineage",
            ),
        ] {
            let before = envoy.certgate_counter(rejected);
            fixed.serve(std::fs::read(table).expect("table bytes"));
            let took = within(REFUSAL_LIMIT, async || {
                envoy.certgate_counter(rejected) > before
            })
            .await;
            println!("{what}: refused after {took:?}");
            assert!(
                took.is_some(),
                "{what} not counted in {rejected}:\n{}",
                envoy.log_tail(30)
            );
            assert_eq!(
                envoy.certgate_counter("feed_updates"),
                0,
                "{what} was swapped in"
            );
            assert!(
                admitted(addr, &web).await && admitted(addr, &checkout).await,
                "enforcement changed after {what}"
            );
        }
        let log = envoy.log_tail(300);
        for want in ["not pinned", "not signed", "not newer", "another lineage"] {
            assert!(
                log.contains(want),
                "no `{want}` in:\n{}",
                envoy.log_tail(40)
            );
        }

        // A table that expires MAX_AGE_SECS after its issue: accepted while current,
        // then stale although the feed keeps serving it (onStale deny).
        let expiring = run
            .compile_text_with(
                "feed.yaml",
                &policy(&run, false).replace(
                    "onStale: deny\n",
                    &format!("onStale: deny\n    maxAge: {MAX_AGE_SECS}s\n"),
                ),
                &signed,
            )
            .expect("compile expiring");
        let issued = Instant::now();
        fixed.serve(std::fs::read(&expiring).expect("expiring bytes"));
        let took = within(REFUSAL_LIMIT, async || {
            envoy.certgate_counter("feed_updates") >= 1
        })
        .await;
        assert!(
            took.is_some(),
            "expiring table not taken:\n{}",
            envoy.log_tail(30)
        );
        assert!(
            issued.elapsed() < Duration::from_secs(MAX_AGE_SECS),
            "the machine is too slow to see the table before it expires"
        );
        assert!(
            admitted(addr, &checkout).await,
            "checkout refused before expiry"
        );
        let stale_from = envoy.certgate_counter("reason.stale_revocation");
        let remaining = Duration::from_secs(MAX_AGE_SECS).saturating_sub(issued.elapsed());
        let refused = within(remaining + EXPIRY_SLACK, async || {
            !admitted(addr, &checkout).await
        })
        .await;
        println!(
            "expired table refused new connections after {:?}",
            issued.elapsed()
        );
        assert!(
            refused.is_some(),
            "checkout still admitted past the expiry:\n{}",
            envoy.log_tail(30)
        );
        assert!(envoy.certgate_counter("reason.stale_revocation") > stale_from);
        // The warning comes from the root context's next tick (once a second).
        let logged = within(INTERVAL * 3, async || {
            envoy.log_tail(200).contains("past its expiry")
        })
        .await;
        assert!(logged.is_some(), "{}", envoy.log_tail(30));
    });
    println!("feed trust scenario took {:?}", started.elapsed());
}
