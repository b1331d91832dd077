//! Shared by the scenario modules: a run, a runtime, the matrix rows, and a verdict that
//! prints every case's line and fails with all mismatches at once.

use certgate_e2e::client::rustls_exchange;
use certgate_e2e::matrix::run_cases;
use certgate_e2e::Want;
use certgate_e2e::{Case, Client, EmitEnvoy, Expect, Run, Target, TlsPin};
use rustls::ClientConfig;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A run with every tool, or a failure that says how to build the missing ones.
pub fn run() -> Run {
    Run::new().unwrap_or_else(|e| panic!("{e:#}"))
}

/// A multi-threaded runtime: backends keep serving while a test thread blocks.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("tokio runtime: {e}"))
}

/// Compiles the matrix policy for this run.
pub fn enforce_table(run: &Run) -> PathBuf {
    run.compile_policy("enforce.yaml")
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// `certgate emit envoy` for `table`.
pub fn emit(run: &Run, table: &std::path::Path, opts: EmitEnvoy) -> Value {
    run.certgate
        .emit_envoy(table, &run.tools.filter_wasm, &opts)
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Runs `cases` on `target`, prints one line each, panics with every mismatch.
pub async fn verdict(target: &Target<'_>, run: &Run, cases: &[Case]) {
    let (report, failure) = run_cases(target, &run.pki, cases).await;
    for line in &report {
        println!("{line}");
    }
    if let Some(f) = failure {
        panic!("{f}");
    }
}

/// The enforce-mode matrix (network and server-first listeners).
pub fn enforce_cases() -> Vec<Case> {
    vec![
        Case::new(
            "allowed identity gets data through",
            "web",
            Expect::allow("frontend-and-checkout"),
        ),
        Case::new(
            "pattern identity (ns/checkout/sa/*) gets through",
            "checkout",
            Expect::allow("frontend-and-checkout"),
        ),
        Case::new(
            "unknown identity is closed",
            "stranger",
            Expect::deny("default_deny"),
        ),
        Case::new(
            "deny rule beats allow rule",
            "legacy",
            Expect::deny_rule("no-legacy"),
        ),
        Case::new(
            "revoked serial (from the CRL) is closed",
            "revoked",
            Expect::deny("revoked_serial"),
        ),
        Case::new(
            "RSA 2048 is allowed",
            "rsa2048",
            Expect::allow("frontend-and-checkout"),
        ),
        Case::new(
            "RSA 1024 is closed",
            "rsa1024",
            Expect::deny("weak_rsa_key"),
        )
        .with(Client::Openssl(TlsPin::Any)),
        Case::new(
            "Ed25519 is allowed",
            "ed25519",
            Expect::allow("frontend-and-checkout"),
        ),
        Case::new(
            "lifetime above maxLifetime is closed",
            "longlived",
            Expect::deny("lifetime_too_long"),
        ),
        Case::new(
            "SHA-1 signed leaf is closed",
            "sha1",
            Expect::deny("forbidden_signature"),
        ),
        Case::new(
            "two SPIFFE IDs are closed",
            "twouri",
            Expect::deny("multiple_spiffe_ids").without_identity(),
        ),
        Case::new(
            "trust domain outside the policy is closed",
            "foreign",
            Expect::deny("untrusted_domain"),
        ),
        Case::new(
            "TLS 1.2 is closed under minVersion 1.3",
            "web",
            Expect::deny("tls_version_too_low"),
        )
        .with(Client::Rustls(TlsPin::Tls12)),
        Case::new(
            "TLS 1.3 passes under minVersion 1.3",
            "web",
            Expect::allow("frontend-and-checkout"),
        )
        .with(Client::Rustls(TlsPin::Tls13)),
        Case::new(
            "TLS 1.2 via openssl s_client is closed",
            "checkout",
            Expect::deny("tls_version_too_low"),
        )
        .with(Client::Openssl(TlsPin::Tls12)),
        Case::new(
            "TLS 1.3 via openssl s_client passes",
            "checkout",
            Expect::allow("frontend-and-checkout"),
        )
        .with(Client::Openssl(TlsPin::Tls13)),
    ]
}

/// What the echo backends get and send back.
pub const PING: &[u8] = b"ping\n";

/// Whether a TLS client with `config` gets its ping echoed through `addr` (admitted), or
/// not (refused).
pub async fn admitted(addr: SocketAddr, config: &Arc<ClientConfig>) -> bool {
    rustls_exchange(addr, Arc::clone(config), PING, Want::Bytes(PING.len()))
        .await
        .got(PING)
}

/// Whether an open connection still echoes a ping within 2 s (a closed one does not).
pub async fn echoes(tls: &mut TlsStream<TcpStream>) -> bool {
    if tls.write_all(PING).await.is_err() || tls.flush().await.is_err() {
        return false;
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while got.len() < PING.len() {
        match tokio::time::timeout(Duration::from_secs(2), tls.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => return false,
        }
    }
    got == PING
}

/// How long `check` took to hold, polled every 50 ms, or `None` if it did not within `limit`.
pub async fn within(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() <= limit {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}
