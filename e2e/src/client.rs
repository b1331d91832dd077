//! TLS clients that present a workload certificate to Envoy and report what they saw:
//! a Rust client (tokio-rustls with ring) for most cases, and the openssl CLI where
//! rustls cannot go (RSA keys below 2048 bits, which ring refuses to sign with).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::pki::{Leaf, Pki, SERVER_NAME};

/// How long a client waits for the server's next move.
pub const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// Which TLS versions the client offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPin {
    /// TLS 1.2 and 1.3 (the server picks 1.3).
    Any,
    /// TLS 1.2 only.
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// How a client's exchange ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The client got all it was waiting for and closed.
    Satisfied,
    /// The server closed the connection (EOF or close_notify).
    Closed,
    /// The connection failed after the handshake (reset, TLS alert).
    Error(String),
    /// Nothing more arrived within [`READ_TIMEOUT`].
    Timeout,
    /// The TLS handshake failed.
    Handshake(String),
    /// The TCP connection failed.
    Connect(String),
}

/// What the client saw.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The client's local port (matches the access log's downstream address).
    pub local_port: Option<u16>,
    /// The TLS version negotiated, as the client saw it.
    pub tls_version: Option<String>,
    /// Every byte received.
    pub received: Vec<u8>,
    /// How it ended.
    pub end: End,
    /// Which client ran.
    pub client: &'static str,
}

impl Exchange {
    /// Whether the connection was refused: no byte received and the connection ended by
    /// the server (closed, reset, alert or a failed handshake).
    pub fn denied(&self) -> bool {
        self.received.is_empty()
            && matches!(
                self.end,
                End::Closed | End::Error(_) | End::Handshake(_) | End::Connect(_)
            )
    }

    /// Whether the client received what it waited for.
    pub fn got(&self, want: &[u8]) -> bool {
        self.end == End::Satisfied && self.received.starts_with(want)
    }

    /// A one-line description for reports.
    pub fn summary(&self) -> String {
        let data = String::from_utf8_lossy(&self.received);
        let data = data.trim_end();
        let end = match &self.end {
            End::Satisfied => "data through".to_string(),
            End::Closed => "closed by server".to_string(),
            End::Error(e) => format!("connection error: {e}"),
            End::Timeout => "timed out waiting".to_string(),
            End::Handshake(e) => format!("handshake failed: {e}"),
            End::Connect(e) => format!("connect failed: {e}"),
        };
        format!(
            "[{}] {end}; tls={}; local_port={}; received {} bytes{}",
            self.client,
            self.tls_version.as_deref().unwrap_or("-"),
            self.local_port.map_or("-".into(), |p| p.to_string()),
            self.received.len(),
            if data.is_empty() {
                String::new()
            } else {
                format!(": {data:?}")
            }
        )
    }
}

/// A rustls client configuration presenting `leaf`, trusting the test root.
pub fn rustls_config(pki: &Pki, leaf: &Leaf, pin: TlsPin) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&pki.root_pem)? {
        roots.add(cert?)?;
    }
    let chain = CertificateDer::pem_file_iter(&leaf.chain_pem)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(&leaf.key_pem)?;
    let versions: &[&rustls::SupportedProtocolVersion] = match pin {
        TlsPin::Any => rustls::ALL_VERSIONS,
        TlsPin::Tls12 => &[&rustls::version::TLS12],
        TlsPin::Tls13 => &[&rustls::version::TLS13],
    };
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .with_context(|| format!("loading client key `{}`", leaf.spec.name))?;
    Ok(Arc::new(config))
}

/// A rustls client configuration that presents no certificate.
pub fn rustls_config_anonymous(pki: &Pki) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&pki.root_pem)? {
        roots.add(cert?)?;
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(rustls::ALL_VERSIONS)?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Connects with rustls, sends `send` (may be empty: server-speaks-first), then reads
/// until `want` is complete, the server closed, or [`READ_TIMEOUT`].
pub async fn rustls_exchange(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    send: &[u8],
    want: Want,
) -> Exchange {
    let mut ex = Exchange {
        local_port: None,
        tls_version: None,
        received: Vec::new(),
        end: End::Timeout,
        client: "rustls",
    };
    let tcp = match tokio::time::timeout(READ_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            ex.end = End::Connect(e.to_string());
            return ex;
        }
        Err(_) => {
            ex.end = End::Connect("timed out".into());
            return ex;
        }
    };
    ex.local_port = tcp.local_addr().ok().map(|a| a.port());
    let name = match ServerName::try_from(SERVER_NAME) {
        Ok(n) => n,
        Err(e) => {
            ex.end = End::Handshake(e.to_string());
            return ex;
        }
    };
    let connector = TlsConnector::from(config);
    let mut tls = match tokio::time::timeout(READ_TIMEOUT, connector.connect(name, tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            ex.end = End::Handshake(e.to_string());
            return ex;
        }
        Err(_) => {
            ex.end = End::Handshake("timed out".into());
            return ex;
        }
    };
    ex.tls_version = tls.get_ref().1.protocol_version().map(|v| format!("{v:?}"));
    if !send.is_empty() {
        if let Err(e) = async {
            tls.write_all(send).await?;
            tls.flush().await
        }
        .await
        {
            ex.end = End::Error(e.to_string());
            return ex;
        }
    }
    let mut buf = vec![0u8; 16 * 1024];
    ex.end = loop {
        if want.complete(&ex.received) {
            break End::Satisfied;
        }
        match tokio::time::timeout(READ_TIMEOUT, tls.read(&mut buf)).await {
            Err(_) => break End::Timeout,
            Ok(Ok(0)) => break End::Closed,
            Ok(Ok(n)) => ex
                .received
                .extend_from_slice(buf.get(..n).unwrap_or_default()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break End::Closed,
            Ok(Err(e)) => break End::Error(e.to_string()),
        }
    };
    if ex.end == End::Satisfied {
        let _ = tokio::time::timeout(Duration::from_secs(1), tls.shutdown()).await;
    }
    ex
}

/// When a client has what it waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// At least this many bytes.
    Bytes(usize),
    /// One complete HTTP/1.1 response (headers and `content-length` body); reading on
    /// until the server closes would wait out Envoy's delayed-close timeout.
    HttpResponse,
}

impl Want {
    /// Whether `received` completes the exchange.
    pub fn complete(self, received: &[u8]) -> bool {
        match self {
            Want::Bytes(n) => n > 0 && received.len() >= n,
            Want::HttpResponse => {
                let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") else {
                    return false;
                };
                let head = String::from_utf8_lossy(received.get(..end).unwrap_or_default())
                    .to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                received.len() >= end + 4 + len
            }
        }
    }
}

/// What an HTTP client saw.
#[derive(Debug, Clone)]
pub struct HttpExchange {
    /// The transport-level view.
    pub exchange: Exchange,
    /// The response status, if a response arrived.
    pub status: Option<u16>,
    /// Response headers, lowercased names.
    pub headers: Vec<(String, String)>,
    /// The response body.
    pub body: String,
}

/// The request the HTTP clients send.
pub fn http_request() -> String {
    format!("GET / HTTP/1.1\r\nhost: {SERVER_NAME}\r\nconnection: close\r\n\r\n")
}

/// One HTTP/1.1 `GET /` over rustls.
pub async fn rustls_http_get(addr: SocketAddr, config: Arc<ClientConfig>) -> HttpExchange {
    let ex = rustls_exchange(addr, config, http_request().as_bytes(), Want::HttpResponse).await;
    parse_http(ex)
}

/// `n` HTTP/1.1 requests, one after the other, on one connection: the status of each
/// (`None` once the connection failed or closed).
pub async fn rustls_http_session(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    n: usize,
) -> Vec<Option<u16>> {
    let mut statuses = Vec::new();
    let Ok(Ok(tcp)) = tokio::time::timeout(READ_TIMEOUT, TcpStream::connect(addr)).await else {
        return vec![None; n];
    };
    let Ok(name) = ServerName::try_from(SERVER_NAME) else {
        return vec![None; n];
    };
    let Ok(Ok(mut tls)) =
        tokio::time::timeout(READ_TIMEOUT, TlsConnector::from(config).connect(name, tcp)).await
    else {
        return vec![None; n];
    };
    let mut buf = vec![0u8; 16 * 1024];
    for i in 0..n {
        let last = i + 1 == n;
        let req = format!(
            "GET /{i} HTTP/1.1\r\nhost: {SERVER_NAME}\r\nconnection: {}\r\n\r\n",
            if last { "close" } else { "keep-alive" }
        );
        if tls.write_all(req.as_bytes()).await.is_err() {
            statuses.push(None);
            continue;
        }
        let mut got = Vec::new();
        while !Want::HttpResponse.complete(&got) {
            match tokio::time::timeout(READ_TIMEOUT, tls.read(&mut buf)).await {
                Ok(Ok(k)) if k > 0 => got.extend_from_slice(buf.get(..k).unwrap_or_default()),
                _ => break,
            }
        }
        statuses.push(
            String::from_utf8_lossy(&got)
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok()),
        );
    }
    statuses
}

/// Splits a client's bytes into an HTTP response.
pub fn parse_http(ex: Exchange) -> HttpExchange {
    let text = String::from_utf8_lossy(&ex.received).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok());
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    HttpExchange {
        exchange: ex,
        status,
        headers,
        body: body.to_string(),
    }
}

/// The same exchange through `openssl s_client` (blocking).
pub fn openssl_exchange(
    addr: SocketAddr,
    pki: &Pki,
    leaf: &Leaf,
    pin: TlsPin,
    send: &[u8],
    want: Want,
) -> Exchange {
    let mut ex = Exchange {
        local_port: None,
        tls_version: None,
        received: Vec::new(),
        end: End::Timeout,
        client: "openssl s_client",
    };
    let mut cmd = Command::new("openssl");
    cmd.arg("s_client")
        .args(["-connect", &addr.to_string(), "-servername", SERVER_NAME])
        .arg("-CAfile")
        .arg(&pki.root_pem)
        .arg("-cert")
        .arg(&leaf.chain_pem)
        .arg("-cert_chain")
        .arg(&pki.intermediate_pem)
        .arg("-key")
        .arg(&leaf.key_pem)
        .args(["-verify_return_error", "-quiet"])
        // The distribution's default security level refuses RSA keys below 2048 bits
        // for our own certificate; the point of this client is to present one.
        .args(["-cipher", "DEFAULT@SECLEVEL=0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match pin {
        TlsPin::Any => {}
        TlsPin::Tls12 => {
            cmd.arg("-tls1_2");
        }
        TlsPin::Tls13 => {
            cmd.arg("-tls1_3");
        }
    }
    ex.tls_version = match pin {
        TlsPin::Any => None,
        TlsPin::Tls12 => Some("TLSv1_2".into()),
        TlsPin::Tls13 => Some("TLSv1_3".into()),
    };
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            ex.end = End::Connect(format!("cannot run openssl: {e}"));
            return ex;
        }
    };
    // Kept open until the end: the exchange is over when we say so, not at stdin EOF.
    let mut stdin = child.stdin.take();
    if let Some(stdin) = stdin.as_mut() {
        let _ = stdin.write_all(send);
        let _ = stdin.flush();
    }
    let (tx, rx) = mpsc::channel::<Option<Vec<u8>>>();
    let stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let Some(mut out) = stdout else { return };
        let mut buf = [0u8; 4096];
        loop {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.send(None);
                    return;
                }
                Ok(n) => {
                    let _ = tx.send(Some(buf.get(..n).unwrap_or_default().to_vec()));
                }
            }
        }
    });
    let deadline = Instant::now() + READ_TIMEOUT;
    ex.end = loop {
        if want.complete(&ex.received) {
            break End::Satisfied;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Some(bytes)) => ex.received.extend_from_slice(&bytes),
            Ok(None) => break End::Closed,
            Err(_) => break End::Timeout,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    drop(stdin);
    let _ = reader.join();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    if ex.end == End::Closed && ex.received.is_empty() {
        let err: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("error") || l.contains("alert"))
            .collect();
        if !err.is_empty() {
            ex.end = End::Error(err.join(" | "));
        }
    }
    ex
}
