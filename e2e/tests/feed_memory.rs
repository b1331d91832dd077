//! What a table from the live feed costs the filter's VM under the real Envoy: the
//! measurement behind `MAX_FEED_BYTES` (filter/src/feed.rs, docs/revocation.md). The feed
//! delivers tables of one and five million revoked serials; each VM's wasm linear memory
//! is read from Envoy's `/proc/<pid>/smaps` once the table is in force.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use certgate_e2e::client::{rustls_config, rustls_exchange};
use certgate_e2e::feed::{sign, with_feed, FeedServer, SignedFeed, FEED_CLUSTER};
use certgate_e2e::{EmitEnvoy, Listener, Scenario, TlsPin, Want, Wire};
use serde_json::json;

use crate::common::{emit, run, runtime};

/// How long a large table may take to reach the filter on a loaded machine (compiled,
/// served, fetched over the feed cluster, validated and swapped in).
const TABLE_IN_FORCE_WITHIN: Duration = Duration::from_secs(120);

const POLICY: &str = "apiVersion: certgate.dev/v1alpha1\nkind: MeshTLSPolicy\n\
metadata: {name: e2e-feed-memory}\nspec:\n  defaultAction: deny\n  rules:\n    \
- name: mesh\n      action: allow\n      principals: [\"spiffe://cluster.local/ns/frontend/sa/web\"]\n";

#[test]
fn feed_table_memory_under_envoy() {
    let run = run();
    // Fed tables are signed; the filter pins the key.
    let dir = run.subdir("feed-memory-v1").expect("dir");
    let SignedFeed {
        key,
        public,
        v1,
        server,
    } = SignedFeed::start(&run, &dir, "feed.yaml", POLICY).unwrap_or_else(|e| panic!("{e:#}"));
    let feed_addr = server.addr;
    let filter = with_feed(
        emit(&run, &v1, EmitEnvoy::default()),
        json!({"cluster": FEED_CLUSTER, "path": "/table.cgt", "interval": "1s",
               "maxStale": "600s", "timeout": "60s", "publicKeys": [public]}),
    )
    .expect("feed option");
    let web = rustls_config(&run.pki, run.pki.leaf("web"), TlsPin::Any).expect("web");
    let base = ruleset::decode(&std::fs::read(&v1).expect("v1")).expect("decode v1");
    let mut server = Some(server);

    runtime().block_on(async {
        let s = Scenario::start_with_clusters(
            &run,
            "feed-memory",
            vec![Listener::new("tcp", filter, Wire::Echo)],
            vec![server.as_ref().expect("server").cluster()],
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
        let addr = s.envoy.addr("tcp");
        let ping = b"ping\n";
        let ex = rustls_exchange(addr, web.clone(), ping, Want::Bytes(ping.len())).await;
        assert!(ex.got(ping), "web refused under v1: {}", ex.summary());
        let idle = s.envoy.wasm_memories().expect("smaps");
        println!("wasm memories with the inline table: {idle:?} bytes");
        assert!(!idle.is_empty(), "no wasm memory found in smaps");

        let mut previous_max = *idle.iter().max().expect("a VM");
        for millions in [1u32, 5] {
            if millions == 5 {
                // Envoy's async HTTP client resets a call whose response body passes
                // `http.async_response_buffer_limit` (32 MiB by default): a 40 MB table
                // never reaches the filter until the runtime key is raised.
                let errors = feed_errors(&s.envoy);
                let big = big_table(&base, millions, &key);
                serve(&mut server, &run, &big, feed_addr, "5m-default");
                let seen = Instant::now();
                while feed_errors(&s.envoy) < errors + 3 {
                    assert!(
                        seen.elapsed() < TABLE_IN_FORCE_WITHIN,
                        "no failed poll:\n{}",
                        s.envoy.log_tail(30)
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                assert!(!s.envoy.log_tail(200).contains("5000000 revoked serials"));
                assert!(s
                    .envoy
                    .log_tail(20)
                    .contains("no response (reset or timeout)"));
                let (status, body) = s
                    .envoy
                    .admin_post(&format!(
                        "/runtime_modify?http.async_response_buffer_limit={}",
                        128 << 20
                    ))
                    .expect("runtime_modify");
                assert_eq!(status, 200, "{body}");
            }
            let bytes = big_table(&base, millions, &key);
            serve(
                &mut server,
                &run,
                &bytes,
                feed_addr,
                &format!("{millions}m"),
            );
            let started = Instant::now();
            let want = format!("{} revoked serials", millions * 1_000_000);
            while !s.envoy.log_tail(200).contains(&want) {
                assert!(
                    started.elapsed() < TABLE_IN_FORCE_WITHIN,
                    "{millions}M table not in force:\n{}",
                    s.envoy.log_tail(30)
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let ex = rustls_exchange(addr, web.clone(), ping, Want::Bytes(ping.len())).await;
            assert!(
                ex.got(ping),
                "web refused under the big table: {}",
                ex.summary()
            );
            let memories = s.envoy.wasm_memories().expect("smaps");
            let max = *memories.iter().max().expect("a VM");
            println!(
                "MEASURED {millions}M serials: table {} bytes, in force after {:?}, \
                 wasm memories {memories:?} bytes, largest {:.1} MiB, \
                 {:.2} bytes of VM memory per table byte over the previous table's VM",
                bytes.len(),
                started.elapsed(),
                max as f64 / f64::from(1 << 20),
                (max.saturating_sub(previous_max)) as f64 / bytes.len() as f64,
            );
            // The model the feed's limit rests on: a VM holds the new table and, from the
            // swap, the old one (wasm memory never shrinks), and little else.
            assert!(
                max <= previous_max + bytes.len() as u64 + (2 << 20),
                "{millions}M: {max} bytes of VM memory, more than the previous {previous_max} \
                 plus the {} table bytes and 2 MiB",
                bytes.len()
            );
            previous_max = max;
        }
    });
}

/// `base` with `millions` million revoked serials, issued after it and after every
/// smaller one, encoded and signed with `key`.
fn big_table(base: &ruleset::Table, millions: u32, key: &std::path::Path) -> Vec<u8> {
    let mut table = base.clone();
    for i in 0..millions * 1_000_000 {
        let serial = [
            0x7f,
            (i >> 24) as u8,
            (i >> 16) as u8,
            (i >> 8) as u8,
            i as u8,
        ];
        table.revocation.add_serial(Some(0x5eed), &serial);
    }
    table.normalize();
    table.issued_at_ms += u64::from(millions);
    sign(ruleset::encode(&table).expect("encode"), key).expect("sign")
}

/// Replaces the feed server by one serving `bytes` at the same address.
fn serve(
    server: &mut Option<FeedServer>,
    run: &certgate_e2e::Run,
    bytes: &[u8],
    addr: SocketAddr,
    name: &str,
) {
    let dir = run.subdir(&format!("feed-memory-{name}")).expect("dir");
    std::fs::write(dir.join("big.cgt"), bytes).expect("write");
    drop(server.take());
    *server = Some(FeedServer::start(&run.tools.certgate, &dir, addr).expect("serve again"));
}

fn feed_errors(envoy: &certgate_e2e::Envoy) -> u64 {
    envoy
        .certgate_stats()
        .unwrap_or_default()
        .get("wasmcustom.certgate.feed_errors")
        .copied()
        .unwrap_or(0)
}
