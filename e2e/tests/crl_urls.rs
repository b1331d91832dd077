//! A CRL named by URL reaches a real Envoy through `certgate serve --policies`, without
//! anyone running `certgate compile`: the CRL at a local HTTP server is replaced by one
//! revoking one more serial (signed by the run's intermediate CA, which the policy names
//! in `crlIssuers`); the feed fetches, verifies, compiles, signs and publishes it, the
//! filter swaps it in, and the newly revoked client is refused while the others pass.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use certgate_e2e::client::rustls_config;
use certgate_e2e::feed::{with_feed, FeedServer, FEED_CLUSTER};
use certgate_e2e::{EmitEnvoy, Listener, Run, Scenario, TlsPin, Wire};
use serde_json::json;

use crate::common::{admitted, emit, run, runtime};

/// From replacing the CRL to Envoy refusing the newly revoked client: a `--crl-refresh`
/// of 1 s, the feed's 100 ms scan, the filter's 1 s poll, with room for a loaded machine.
const PROPAGATION_LIMIT: Duration = Duration::from_secs(30);

/// Serves the bytes in `crl` at any path, `connection: close`.
fn crl_server(crl: Arc<Mutex<Vec<u8>>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { continue };
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match s.read(&mut b) {
                    Ok(1) => head.push(b[0]),
                    _ => break,
                }
            }
            let body = crl.lock().expect("crl").clone();
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            )
            .and_then(|()| s.write_all(&body));
        }
    });
    addr
}

fn intermediate_crl(run: &Run, revoked: &[&str], age: time::Duration, number: u8) -> Vec<u8> {
    run.pki
        .intermediate_crl(revoked, age, number)
        .unwrap_or_else(|e| panic!("{e:#}"))
}

#[test]
fn a_crl_replaced_at_its_url_reaches_envoy_through_the_feed() {
    let run = run();
    let crl = Arc::new(Mutex::new(intermediate_crl(
        &run,
        &[],
        time::Duration::minutes(5),
        1,
    )));
    let crl_addr = crl_server(Arc::clone(&crl));
    let key = run.dir.path().join("signing.key");
    let public = run.certgate.keygen(&key).expect("keygen");
    let intermediate = run
        .pki
        .intermediate_pem
        .file_name()
        .and_then(|n| n.to_str())
        .expect("intermediate file name");
    let (web, checkout) = (run.pki.leaf("web"), run.pki.leaf("checkout"));
    let policy = format!(
        "apiVersion: certgate.dev/v1alpha1\nkind: MeshTLSPolicy\nmetadata: {{name: e2e-crl-urls}}\nspec:\n  \
         defaultAction: deny\n  revocation:\n    onStale: deny\n    crlIssuers: [{intermediate}]\n    \
         crlUrls: [http://{crl_addr}/intermediate.crl]\n  rules:\n    \
         - name: mesh\n      action: allow\n      principals: [\"{}\", \"{}\"]\n",
        web.spiffe_id(),
        checkout.spiffe_id()
    );
    // The first table, for the filter's configuration (compile fetches the URL too).
    let v1 = run
        .compile_text_with(
            "crl-urls.yaml",
            &policy,
            &["--sign-key", key.to_str().expect("key")],
        )
        .expect("compile v1");
    let tables = run.subdir("crl-url-tables").expect("tables dir");
    let policy_file = run.pki.dir.join("crl-urls.yaml");
    let server = FeedServer::start_with(
        &run.tools.certgate,
        &tables,
        SocketAddr::from(([127, 0, 0, 1], 0)),
        &[
            "--policies",
            policy_file.to_str().expect("policy path"),
            "--sign-key",
            key.to_str().expect("key"),
            "--crl-refresh",
            "1",
        ],
    )
    .expect("certgate serve");
    let filter = with_feed(
        emit(&run, &v1, EmitEnvoy::default()),
        json!({"cluster": FEED_CLUSTER, "path": "/table.cgt", "interval": "1s",
               "maxStale": "60s", "timeout": "2s", "publicKeys": [public]}),
    )
    .expect("feed option");
    let web_tls = rustls_config(&run.pki, web, TlsPin::Any).expect("web");
    let checkout_tls = rustls_config(&run.pki, checkout, TlsPin::Any).expect("checkout");

    runtime().block_on(async {
        let s = Scenario::start_with_clusters(
            &run,
            "crl-urls",
            vec![Listener::new("tcp", filter, Wire::Echo)],
            vec![server.cluster()],
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
        let addr = s.envoy.addr("tcp");
        assert!(
            admitted(addr, &web_tls).await,
            "web refused before its revocation"
        );
        assert!(admitted(addr, &checkout_tls).await, "checkout refused");

        // The CA publishes a CRL revoking web; nobody runs `certgate compile`.
        *crl.lock().expect("crl") = intermediate_crl(&run, &["web"], time::Duration::minutes(1), 2);
        let placed = Instant::now();
        let mut refused = false;
        while placed.elapsed() < PROPAGATION_LIMIT {
            if !admitted(addr, &web_tls).await {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!("web refused {:?} after the CRL changed", placed.elapsed());
        assert!(refused, "web still admitted:\n{}", s.envoy.log_tail(40));
        assert!(!admitted(addr, &web_tls).await, "web admitted again");
        assert!(
            admitted(addr, &checkout_tls).await,
            "checkout refused after the new CRL"
        );
        assert!(s.envoy.certgate_counter("reason.revoked_serial") >= 1);
        assert!(s.envoy.certgate_counter("feed_updates") >= 1);
    });
    server.stop();
}
