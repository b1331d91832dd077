//! The live revocation feed for the `feed` scenario: `certgate serve` on a directory of
//! tables (killed on drop, and exiting by itself when the test process dies because its
//! stdin pipe closes), a stand-in feed that answers every request with given bytes (to
//! deliver corrupt, forged, old or foreign tables), the Envoy cluster that reaches
//! either, and signing of tables built in memory.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::envoy::cluster;
use crate::pki::INTERMEDIATE_DN;
use crate::run::Run;

/// Name of the Envoy cluster the filter's `feed.cluster` names.
pub const FEED_CLUSTER: &str = "certgate-feed";

/// The policy the feed scenarios serve, as `metadata.name` `name`: allow `web` and
/// `checkout`, deny the rest; revoke `web` when asked; a stale table denies.
pub fn feed_policy(run: &Run, name: &str, revoke_web: bool) -> String {
    let web = run.pki.leaf("web");
    let checkout = run.pki.leaf("checkout");
    let serials = if revoke_web {
        format!(
            "    serials: [{{serial: \"{}\", issuer: \"{INTERMEDIATE_DN}\"}}]\n",
            web.serial_hex()
        )
    } else {
        String::new()
    };
    format!(
        "apiVersion: certgate.dev/v1alpha1\nkind: MeshTLSPolicy\nmetadata: {{name: {name}}}\nspec:\n  \
         defaultAction: deny\n  revocation:\n    onStale: deny\n{serials}  rules:\n    \
         - name: mesh\n      action: allow\n      principals: [\"{}\", \"{}\"]\n",
        web.spiffe_id(),
        checkout.spiffe_id()
    )
}

/// A feed of signed tables as the scenarios set it up: a fresh signing key, the first
/// table compiled from a policy and signed with it, and `certgate serve` serving that
/// table from a directory, on a free local port.
#[derive(Debug)]
pub struct SignedFeed {
    /// The signing key's file, to sign later tables with.
    pub key: PathBuf,
    /// The public key the filter pins (`feed.publicKeys`).
    pub public: String,
    /// The first table, also served as `v1.cgt`.
    pub v1: PathBuf,
    /// The running server.
    pub server: FeedServer,
}

impl SignedFeed {
    /// Generates the key, compiles `policy` (as `file`) signed with it, copies the table
    /// to `dir/v1.cgt` and serves `dir`.
    pub fn start(run: &Run, dir: &Path, file: &str, policy: &str) -> Result<SignedFeed> {
        let key = run.dir.path().join("signing.key");
        let public = run.certgate.keygen(&key).context("keygen")?;
        let v1 = run
            .compile_text_with(
                file,
                policy,
                &["--sign-key", key.to_str().context("key path")?],
            )
            .context("compile v1")?;
        std::fs::copy(&v1, dir.join("v1.cgt")).context("copy v1")?;
        let server = FeedServer::start(
            &run.tools.certgate,
            dir,
            SocketAddr::from(([127, 0, 0, 1], 0)),
        )
        .context("certgate serve")?;
        Ok(SignedFeed {
            key,
            public,
            v1,
            server,
        })
    }
}

/// A running `certgate serve`.
#[derive(Debug)]
pub struct FeedServer {
    child: Child,
    // Held open: closing it makes the server exit (`--exit-on-stdin-close`).
    _stdin: Option<ChildStdin>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl FeedServer {
    /// Starts `certgate serve dir --listen listen` and waits for its address line.
    pub fn start(certgate: &Path, dir: &Path, listen: SocketAddr) -> Result<FeedServer> {
        FeedServer::start_with(certgate, dir, listen, &[])
    }

    /// [`FeedServer::start`] with more flags (e.g. `--policies`).
    pub fn start_with(
        certgate: &Path,
        dir: &Path,
        listen: SocketAddr,
        extra: &[&str],
    ) -> Result<FeedServer> {
        let mut child = Command::new(certgate)
            .arg("serve")
            .arg(dir)
            .args(["--listen", &listen.to_string(), "--poll-ms", "100"])
            .args(extra)
            .arg("--exit-on-stdin-close")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {} serve", certgate.display()))?;
        let stdin = child.stdin.take();
        let stderr = child.stderr.take().context("no stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let Some(line) = lines.next() else {
                let _ = child.kill();
                bail!("certgate serve exited before listening");
            };
            let line = line?;
            if let Some(rest) = line.strip_prefix("listening on http://") {
                let addr = rest.split('/').next().unwrap_or_default();
                break addr
                    .parse()
                    .with_context(|| format!("address in {line:?}"))?;
            }
        };
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                eprintln!("[certgate serve] {line}");
            }
        });
        Ok(FeedServer {
            child,
            _stdin: stdin,
            addr,
        })
    }

    /// The Envoy cluster that reaches this server.
    pub fn cluster(&self) -> Value {
        cluster(FEED_CLUSTER, self.addr.port())
    }

    /// Stops the server now.
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for FeedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stand-in feed that answers every request with `200` and the same bytes.
#[derive(Debug)]
pub struct FixedFeed {
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
    body: Arc<Mutex<Vec<u8>>>,
}

impl FixedFeed {
    /// Listens on `addr` (the port a [`FeedServer`] just left, or port 0) and serves
    /// `body`.
    pub fn start(addr: SocketAddr, body: Vec<u8>) -> Result<FixedFeed> {
        let listener = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let body = Arc::new(Mutex::new(body));
        let served = Arc::clone(&body);
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let Ok((mut s, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let body = served.lock().map(|b| b.clone()).unwrap_or_default();
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\netag: \"fixed\"\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes());
                let _ = s.write_all(&body);
            }
        });
        Ok(FixedFeed { stop, addr, body })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `body` from the next request on.
    pub fn serve(&self, body: Vec<u8>) {
        if let Ok(mut b) = self.body.lock() {
            *b = body;
        }
    }

    /// The Envoy cluster that reaches this server.
    pub fn cluster(&self) -> Value {
        cluster(FEED_CLUSTER, self.addr.port())
    }
}

impl Drop for FixedFeed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Adds `feed` to the plugin configuration of an emitted filter entry (the JSON inside
/// the `StringValue`).
pub fn with_feed(mut filter: Value, feed: Value) -> Result<Value> {
    let value = &mut filter["typed_config"]["config"]["configuration"]["value"];
    let text = value
        .as_str()
        .context("filter entry has no configuration value")?;
    let mut config: Value = serde_json::from_str(text)?;
    config["feed"] = feed;
    *value = json!(config.to_string());
    Ok(filter)
}

/// Signs table bytes (unsigned, as `ruleset::encode` writes them) with the private key
/// `certgate keygen` wrote to `key`: the same trailer `certgate compile --sign-key` adds.
pub fn sign(mut bytes: Vec<u8>, key: &Path) -> Result<Vec<u8>> {
    let pem = std::fs::read_to_string(key).with_context(|| format!("reading {}", key.display()))?;
    let kp = ed25519_compact::KeyPair::from_pem(&pem)
        .map_err(|e| anyhow::anyhow!("{}: not an Ed25519 private key ({e:?})", key.display()))?;
    let sig = kp.sk.sign(ruleset::signature::message(&bytes), None);
    ruleset::signature::append_trailer(&mut bytes, &kp.pk, &sig);
    Ok(bytes)
}
