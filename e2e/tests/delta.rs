//! Deltas through a real Envoy (RFC 3229, `A-IM: certgate-delta`): a revocation compiled
//! by `certgate compile` into the directory `certgate serve` feeds reaches Envoy as a
//! `226 IM Used` delta (the server's `/metrics` counts it), is enforced on new
//! connections and closes an open one. Then a feed that tampers with its deltas: the
//! corrupt delta is refused and counted (`feed_rejected_delta`), the filter fetches the
//! whole table next and converges on it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use certgate_e2e::client::rustls_config;
use certgate_e2e::feed::{SignedFeed, FEED_CLUSTER};
use certgate_e2e::pki::INTERMEDIATE_DN;
use certgate_e2e::{EmitEnvoy, Listener, Run, Scenario, TlsPin, Wire};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;

use crate::common::{admitted, emit, run, runtime, within, PING};

/// How long a new table may take to be enforced: a few 1 s polls, generous for a loaded
/// machine.
const CONVERGE: Duration = Duration::from_secs(10);
/// Revoked serials of another CA in every table, so the table is a few kilobytes and a
/// one-serial delta is much smaller.
const BACKGROUND_SERIALS: u32 = 300;

/// Allow `web` and `checkout`; revoke `revoked` (leaf names) and the background serials.
fn policy(run: &Run, revoked: &[&str]) -> String {
    let mut serials: Vec<String> = (0..BACKGROUND_SERIALS)
        .map(|i| format!("{{serial: \"7E{i:06X}\", issuer: \"CN=Elsewhere CA,O=Example\"}}"))
        .collect();
    for leaf in revoked {
        serials.push(format!(
            "{{serial: \"{}\", issuer: \"{INTERMEDIATE_DN}\"}}",
            run.pki.leaf(leaf).serial_hex()
        ));
    }
    format!(
        "apiVersion: certgate.dev/v1alpha1\nkind: MeshTLSPolicy\nmetadata: {{name: e2e-delta}}\nspec:\n  \
         defaultAction: deny\n  revocation:\n    onStale: deny\n    serials: [{}]\n  rules:\n    \
         - name: mesh\n      action: allow\n      principals: [\"{}\", \"{}\"]\n",
        serials.join(", "),
        run.pki.leaf("web").spiffe_id(),
        run.pki.leaf("checkout").spiffe_id()
    )
}

/// One sample of the feed server's `/metrics`.
fn feed_metric(addr: SocketAddr, sample: &str) -> f64 {
    let mut s = TcpStream::connect(addr).expect("connect to the feed");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nhost: feed\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read /metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {sample} in\n{text}"))
        .parse()
        .unwrap()
}

/// A stand-in feed that plays a tampering middlebox: a poll asking for a delta gets a
/// `226` whose delta has one byte flipped (headers as the real server sends them); a
/// poll without `A-IM` gets the whole table (or `304` when it holds it).
struct TamperingFeed {
    stop: Arc<AtomicBool>,
    delta_polls: Arc<AtomicU64>,
    full_polls: Arc<AtomicU64>,
}

impl TamperingFeed {
    fn start(addr: SocketAddr, base: Vec<u8>, newest: Vec<u8>) -> TamperingFeed {
        let listener = TcpListener::bind(addr).expect("bind the tampering feed");
        listener.set_nonblocking(true).unwrap();
        let mut delta = ruleset::delta::diff(&base, &newest).expect("diff");
        let mid = delta.len() / 2;
        delta[mid] ^= 0x40;
        let (base_tag, tag) = (ruleset::delta::etag(&base), ruleset::delta::etag(&newest));
        let stop = Arc::new(AtomicBool::new(false));
        let delta_polls = Arc::new(AtomicU64::new(0));
        let full_polls = Arc::new(AtomicU64::new(0));
        let (flag, deltas, fulls) = (
            Arc::clone(&stop),
            Arc::clone(&delta_polls),
            Arc::clone(&full_polls),
        );
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let Ok((mut s, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                        _ => break,
                    }
                }
                let head = String::from_utf8_lossy(&head).to_lowercase();
                let (status, extra, body): (&str, String, &[u8]) =
                    if head.contains("a-im: certgate-delta") {
                        deltas.fetch_add(1, Ordering::Relaxed);
                        (
                            "226 IM Used",
                            format!("im: certgate-delta\r\ndelta-base: {base_tag}\r\n"),
                            &delta,
                        )
                    } else if head.contains(&format!("if-none-match: {tag}")) {
                        ("304 Not Modified", String::new(), b"")
                    } else {
                        fulls.fetch_add(1, Ordering::Relaxed);
                        ("200 OK", String::new(), &newest)
                    };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\netag: {tag}\r\n{extra}connection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(body);
            }
        });
        TamperingFeed {
            stop,
            delta_polls,
            full_polls,
        }
    }
}

impl Drop for TamperingFeed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn compile(run: &Run, revoked: &[&str], key: &Path) -> Vec<u8> {
    let path = run
        .compile_text_with(
            "delta.yaml",
            &policy(run, revoked),
            &["--sign-key", key.to_str().expect("key path")],
        )
        .expect("compile");
    std::fs::read(path).expect("read the table")
}

#[test]
fn feed_delivers_revocations_as_deltas_and_refuses_a_tampered_delta() {
    let started = Instant::now();
    let run = run();
    let feed_dir = run.subdir("delta-tables").expect("feed dir");
    let SignedFeed {
        key,
        public,
        v1,
        server,
    } = SignedFeed::start(&run, &feed_dir, "delta.yaml", &policy(&run, &[]))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let feed_addr = server.addr;
    // The filter entry straight from `certgate emit envoy --feed-*` (deltas are on by
    // default).
    let flags: Vec<String> = [
        "--feed-cluster",
        FEED_CLUSTER,
        "--feed-interval",
        "1s",
        "--feed-max-stale",
        "30s",
        "--feed-timeout",
        "2s",
        "--feed-public-key",
        &public,
    ]
    .iter()
    .map(|f| f.to_string())
    .collect();
    let filter = emit(
        &run,
        &v1,
        EmitEnvoy {
            extra: flags,
            ..EmitEnvoy::default()
        },
    );
    let web = rustls_config(&run.pki, run.pki.leaf("web"), TlsPin::Any).expect("web");
    let checkout =
        rustls_config(&run.pki, run.pki.leaf("checkout"), TlsPin::Any).expect("checkout");

    runtime().block_on(async {
        let s = Scenario::start_with_clusters(
            &run,
            "delta",
            vec![Listener::new("tcp", filter, Wire::Echo)],
            vec![server.cluster()],
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
        let addr = s.envoy.addr("tcp");
        let envoy = &s.envoy;
        assert!(admitted(addr, &web).await && admitted(addr, &checkout).await);
        // An open connection with web's certificate.
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let name = ServerName::try_from(certgate_e2e::pki::SERVER_NAME).expect("name");
        let mut web_open = TlsConnector::from(Arc::clone(&web))
            .connect(name, tcp)
            .await
            .expect("handshake");
        web_open.write_all(PING).await.expect("ping");
        let mut buf = [0u8; 16];
        let n = web_open.read(&mut buf).await.expect("echo");
        assert_eq!(&buf[..n], PING);
        // Let every worker confirm v1 (its first poll fetches it whole).
        tokio::time::sleep(Duration::from_secs(2)).await;

        // Revoke web: `certgate compile` into the served directory.
        let v1_bytes = std::fs::read(feed_dir.join("v1.cgt")).expect("v1");
        let v2 = compile(&run, &["web"], &key);
        std::fs::write(feed_dir.join("v2.cgt"), &v2).expect("place v2");
        let took = within(CONVERGE, async || !admitted(addr, &web).await).await;
        println!("revocation enforced after {took:?}");
        assert!(
            took.is_some(),
            "web still admitted:\n{}",
            envoy.log_tail(30)
        );
        assert!(admitted(addr, &checkout).await, "checkout refused after v2");
        let closed = matches!(
            tokio::time::timeout(Duration::from_secs(5), web_open.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        );
        assert!(closed, "the open web connection survived the revocation");
        let deltas = feed_metric(feed_addr, "certgate_feed_requests_total{code=\"226\"}");
        let saved = feed_metric(feed_addr, "certgate_feed_delta_saved_bytes_total");
        println!(
            "v1 {} bytes, v2 {} bytes, delta {} bytes; 226 answers: {deltas}, bytes saved: {saved}",
            v1_bytes.len(),
            v2.len(),
            ruleset::delta::diff(&v1_bytes, &v2).expect("diff").len()
        );
        assert!(deltas >= 1.0, "no 226 from the feed");
        assert!(saved > 0.0);
        assert_eq!(envoy.certgate_counter("feed_rejected_delta"), 0);
        assert!(envoy.certgate_counter("feed_updates") >= 1);

        // A tampering feed on the same address: checkout revoked too in v3, its delta
        // corrupted on the way.
        server.stop();
        let v3 = compile(&run, &["web", "checkout"], &key);
        let updates = envoy.certgate_counter("feed_updates");
        let tamper = TamperingFeed::start(feed_addr, v2.clone(), v3);
        let took = within(CONVERGE, async || !admitted(addr, &checkout).await).await;
        println!(
            "after a tampered delta, converged in {took:?}: {} delta polls, {} full polls, {} deltas refused",
            tamper.delta_polls.load(Ordering::Relaxed),
            tamper.full_polls.load(Ordering::Relaxed),
            envoy.certgate_counter("feed_rejected_delta")
        );
        assert!(
            took.is_some(),
            "checkout still admitted:\n{}",
            envoy.log_tail(30)
        );
        assert!(tamper.delta_polls.load(Ordering::Relaxed) >= 1);
        assert!(
            tamper.full_polls.load(Ordering::Relaxed) >= 1,
            "no full fetch"
        );
        assert!(envoy.certgate_counter("feed_rejected_delta") >= 1);
        assert!(envoy.certgate_counter("feed_updates") > updates);
        assert!(
            envoy.log_tail(300).contains("delta from"),
            "{}",
            envoy.log_tail(30)
        );
        assert!(!admitted(addr, &web).await, "web admitted under v3");
        drop(tamper);
    });
    println!("delta scenario took {:?}", started.elapsed());
}

/// How long a million-serial table may take to reach the filter on a loaded machine.
const BIG_TABLE_IN_FORCE_WITHIN: Duration = Duration::from_secs(120);

/// `base` with a million revoked serials plus `extra` more, issued `step` ms after it,
/// signed with `key`.
fn million_plus(base: &ruleset::Table, extra: u32, step: u64, key: &Path) -> Vec<u8> {
    let mut table = base.clone();
    for i in 0..1_000_000 + extra {
        let serial = [0x7f, (i >> 16) as u8, (i >> 8) as u8, i as u8, 0x11];
        table.revocation.add_serial(Some(0x5eed), &serial);
    }
    table.normalize();
    table.issued_at_ms += step;
    certgate_e2e::feed::sign(ruleset::encode(&table).expect("encode"), key).expect("sign")
}

/// What applying deltas costs the VM under the real Envoy: a million-serial table comes
/// whole, then two one-serial revocations come as deltas (the server's `/metrics` counts
/// the `226`s); each VM's wasm memory is read from Envoy's smaps after each. A delta
/// needs the table in force (its bytes, kept anyway) and the rebuilt table at once, as a
/// full fetch needs the table in force and the fetched one: no more.
#[test]
fn feed_delta_memory_under_envoy() {
    let run = run();
    let dir = run.subdir("delta-memory-tables").expect("dir");
    let SignedFeed {
        key,
        public,
        v1,
        server,
    } = SignedFeed::start(&run, &dir, "delta-memory.yaml", &policy(&run, &[]))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let feed_addr = server.addr;
    let filter = certgate_e2e::feed::with_feed(
        emit(&run, &v1, EmitEnvoy::default()),
        serde_json::json!({"cluster": FEED_CLUSTER, "path": "/table.cgt", "interval": "1s",
               "maxStale": "600s", "timeout": "60s", "publicKeys": [public]}),
    )
    .expect("feed option");
    let web = rustls_config(&run.pki, run.pki.leaf("web"), TlsPin::Any).expect("web");
    let base = ruleset::decode(&std::fs::read(&v1).expect("v1")).expect("decode v1");

    runtime().block_on(async {
        let s = Scenario::start_with_clusters(
            &run,
            "delta-memory",
            vec![Listener::new("tcp", filter, Wire::Echo)],
            vec![server.cluster()],
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
        let addr = s.envoy.addr("tcp");
        assert!(admitted(addr, &web).await, "web refused under v1");
        let mut previous = *s
            .envoy
            .wasm_memories()
            .expect("smaps")
            .iter()
            .max()
            .expect("a VM");
        println!("wasm memory with the small table: {previous} bytes");
        for (extra, how) in [(0u32, "whole"), (1, "delta"), (2, "delta")] {
            let bytes = million_plus(&base, extra, u64::from(extra) + 1, &key);
            let deltas_before = feed_metric(feed_addr, "certgate_feed_deltas_served_total");
            std::fs::write(dir.join(format!("m{extra}.cgt")), &bytes).expect("place");
            let started = Instant::now();
            let want = format!("{} revoked serials", 1_000_000 + extra + BACKGROUND_SERIALS);
            while !s.envoy.log_tail(200).contains(&want) {
                assert!(
                    started.elapsed() < BIG_TABLE_IN_FORCE_WITHIN,
                    "{want}: not in force:\n{}",
                    s.envoy.log_tail(30)
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            assert!(admitted(addr, &web).await, "web refused under {want}");
            let deltas =
                feed_metric(feed_addr, "certgate_feed_deltas_served_total") - deltas_before;
            let max = *s
                .envoy
                .wasm_memories()
                .expect("smaps")
                .iter()
                .max()
                .expect("a VM");
            println!(
                "MEASURED {want} ({how}): table {} bytes, in force after {:?}, {deltas} deltas \
                 served, largest VM {:.1} MiB, grew {:.2} bytes per table byte",
                bytes.len(),
                started.elapsed(),
                max as f64 / f64::from(1 << 20),
                max.saturating_sub(previous) as f64 / bytes.len() as f64
            );
            if how == "delta" {
                assert!(deltas >= 1.0, "{want} did not come as a delta");
            }
            // At most the table in force and the new one, and 2 MiB.
            assert!(
                max <= previous + bytes.len() as u64 + (2 << 20),
                "{want}: {max} bytes of VM memory, more than {previous} plus the table and 2 MiB"
            );
            previous = max;
        }
    });
}
