//! The load generator (tokio + rustls with the ring provider) and the backend.
//!
//! TLS 1.3, session resumption off, one short request per connection, a client
//! certificate on every connection. Certificates rotate through a pool: a small pool
//! keeps certgate's per-VM certificate cache warm, a pool larger than that cache (which
//! evicts first-in first-out) makes every connection present a certificate the filter
//! has not parsed recently (cold).
//!
//! The client does not verify Envoy's certificate: the harness measures Envoy, and the
//! saved signature check lets one client core drive one Envoy core harder. Envoy does
//! verify every client certificate, as in production.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

/// What the backend answers to each connection's request.
pub const REPLY: &[u8] = b"ok\n";

/// Hands out the next certificate of the pool on every handshake.
#[derive(Debug)]
struct Rotating {
    certs: Vec<Arc<CertifiedKey>>,
    next: AtomicUsize,
}

impl ResolvesClientCert for Rotating {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.certs.get(i % self.certs.len()).cloned()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Accepts any server certificate (see the module comment for why).
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS 1.3 client configuration presenting the certificates of `certs` in turn, all
/// with the private key `key_pkcs8`.
pub fn client_config(certs: &[Vec<u8>], key_pkcs8: &[u8]) -> Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8.to_vec()));
    let signer = provider
        .key_provider
        .load_private_key(key)
        .context("loading the client key")?;
    anyhow::ensure!(!certs.is_empty(), "no client certificates");
    let certs = certs
        .iter()
        .map(|c| {
            Arc::new(CertifiedKey::new(
                vec![CertificateDer::from(c.clone())],
                Arc::clone(&signer),
            ))
        })
        .collect();
    let mut config = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_client_cert_resolver(Arc::new(Rotating {
            certs,
            next: AtomicUsize::new(0),
        }));
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// Successes and failures of a load run, shared by its tasks.
#[derive(Debug, Default)]
pub struct Tally {
    /// Completed connections (TCP) or requests (HTTP).
    pub ok: AtomicU64,
    /// Failed ones.
    pub errors: AtomicU64,
    /// The first failure, for the report.
    pub first_error: Mutex<Option<String>>,
}

impl Tally {
    fn fail(&self, e: &anyhow::Error) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert_with(|| format!("{e:#}"));
        }
    }
}

fn server_name() -> Result<ServerName<'static>> {
    Ok(ServerName::try_from(crate::pki::SERVER_NAME)?)
}

/// One connection with one request: handshake, `ping`, read the backend's reply.
/// `Ok(false)` when the connection was closed without a reply (a deny).
pub async fn one_connection(connector: &TlsConnector, addr: SocketAddr) -> Result<bool> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let mut tls = connector.connect(server_name()?, tcp).await?;
    tls.write_all(b"ping\n").await?;
    let mut buf = [0u8; 16];
    let mut got = 0;
    while got < REPLY.len() {
        match tls.read(&mut buf[got..]).await {
            Ok(0) => return Ok(false),
            Ok(n) => got += n,
            // A deny is a close, which may surface as a reset or a TLS alert.
            Err(_) if got == 0 => return Ok(false),
            Err(e) => return Err(e.into()),
        }
    }
    if &buf[..REPLY.len()] != REPLY {
        bail!("unexpected reply {:?}", &buf[..got]);
    }
    Ok(true)
}

/// Which load a run drives.
#[derive(Debug, Clone, Copy)]
pub enum Protocol {
    /// Closed loops of [`one_connection`].
    Tcp,
    /// Kept-alive HTTP/1.1 connections, each sending requests back to back; a connection
    /// that fails is replaced.
    Http,
}

/// What one task of a load run works with: its own connector, and the run's stop flag
/// and tally.
struct Worker {
    addr: SocketAddr,
    connector: TlsConnector,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
}

/// Runs `concurrency` tasks of `protocol`'s load until `stop`. Each task runs rounds back
/// to back and counts a round that fails as one failure; a round counts its own
/// successes, since an HTTP round makes many requests and each must show in the tally
/// as it completes.
pub fn spawn_load(
    protocol: Protocol,
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    concurrency: usize,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..concurrency)
        .map(|_| {
            let worker = Worker {
                addr,
                connector: TlsConnector::from(Arc::clone(&config)),
                stop: Arc::clone(&stop),
                tally: Arc::clone(&tally),
            };
            tokio::spawn(async move {
                while !worker.stop.load(Ordering::Relaxed) {
                    let round = match protocol {
                        Protocol::Tcp => tcp_round(&worker).await,
                        Protocol::Http => http_round(&worker).await,
                    };
                    if let Err(e) = round {
                        worker.tally.fail(&e);
                    }
                }
            })
        })
        .collect()
}

/// One connection; a deny or a connection that hangs counts as a failure.
async fn tcp_round(w: &Worker) -> Result<()> {
    match tokio::time::timeout(Duration::from_secs(5), one_connection(&w.connector, w.addr)).await {
        Ok(Ok(true)) => {
            w.tally.ok.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Ok(Ok(false)) => bail!("connection denied"),
        Ok(Err(e)) => Err(e),
        Err(_) => bail!("connection timed out"),
    }
}

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n";

/// Reads one HTTP/1.1 response with a Content-Length body; leftover bytes stay in `buf`.
async fn read_response<S: AsyncReadExt + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> Result<u16> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end])?;
            let status: u16 = head
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .context("malformed status line")?;
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            let total = end + 4 + len;
            while buf.len() < total {
                let mut chunk = [0u8; 4096];
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    bail!("connection closed mid-response");
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..total);
            return Ok(status);
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed before a response");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// One HTTP request on a new connection: `true` for a `200`, `false` when the connection
/// is refused (closed, reset, or a non-200 answer such as the HTTP filter's `403`).
pub async fn one_request(connector: &TlsConnector, addr: SocketAddr) -> Result<bool> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let Ok(mut tls) = connector.connect(server_name()?, tcp).await else {
        return Ok(false);
    };
    if tls.write_all(REQUEST).await.is_err() {
        return Ok(false);
    }
    let mut buf = Vec::new();
    // A deny by a network filter is a close before any response.
    Ok(matches!(read_response(&mut tls, &mut buf).await, Ok(200)))
}

/// One kept-alive connection, counting each request as it completes, until `stop` or
/// the first failure.
async fn http_round(w: &Worker) -> Result<()> {
    let tcp = TcpStream::connect(w.addr).await?;
    tcp.set_nodelay(true)?;
    let mut tls = w.connector.connect(server_name()?, tcp).await?;
    let mut buf = Vec::new();
    while !w.stop.load(Ordering::Relaxed) {
        tls.write_all(REQUEST).await?;
        let status = read_response(&mut tls, &mut buf).await?;
        if status != 200 {
            bail!("HTTP status {status}");
        }
        w.tally.ok.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// The upstream of the TCP cases: reads the request line, answers [`REPLY`], closes.
pub async fn start_backend() -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = s.set_nodelay(true);
                let mut buf = [0u8; 64];
                if let Ok(n) = s.read(&mut buf).await {
                    if n > 0 {
                        let _ = s.write_all(REPLY).await;
                    }
                }
            });
        }
    });
    Ok((addr, task))
}
