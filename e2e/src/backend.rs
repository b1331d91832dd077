//! In-process upstreams Envoy proxies to: an echo server, a server-speaks-first banner
//! server and a tiny HTTP server. Each counts the connections it accepted, so a test can
//! prove a denied client never caused an upstream connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The first bytes the banner server sends on every connection.
pub const BANNER: &[u8] = b"220 certgate-e2e banner ready\r\n";
/// The body the HTTP backend answers with.
pub const HTTP_BODY: &str = "hello from the backend\n";

/// What the backend does with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// Echo every byte back.
    Echo,
    /// Send [`BANNER`] first, then echo.
    Banner,
    /// Answer every HTTP/1.1 request with 200 and [`HTTP_BODY`].
    Http,
}

/// A running backend; aborted when dropped.
#[derive(Debug)]
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    received: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Backend {
    /// Starts a backend on a free loopback port (needs a tokio runtime).
    pub async fn start(kind: BackendKind) -> std::io::Result<Backend> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let accepted = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(AtomicUsize::new(0));
        let (count, bytes) = (accepted.clone(), received.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let bytes = bytes.clone();
                tokio::spawn(async move {
                    let _ = serve(kind, &mut sock, &bytes).await;
                });
            }
        });
        Ok(Backend {
            addr,
            accepted,
            received,
            task,
        })
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Bytes received from all connections so far.
    pub fn received_bytes(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    kind: BackendKind,
    sock: &mut tokio::net::TcpStream,
    received: &AtomicUsize,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    match kind {
        BackendKind::Echo | BackendKind::Banner => {
            if kind == BackendKind::Banner {
                sock.write_all(BANNER).await?;
            }
            loop {
                let n = sock.read(&mut buf).await?;
                if n == 0 {
                    return Ok(());
                }
                received.fetch_add(n, Ordering::SeqCst);
                sock.write_all(buf.get(..n).unwrap_or_default()).await?;
            }
        }
        BackendKind::Http => {
            let mut pending: Vec<u8> = Vec::new();
            loop {
                while let Some(end) = find(&pending, b"\r\n\r\n") {
                    pending.drain(..end + 4);
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{}",
                        HTTP_BODY.len(),
                        HTTP_BODY
                    );
                    sock.write_all(resp.as_bytes()).await?;
                }
                let n = sock.read(&mut buf).await?;
                if n == 0 {
                    return Ok(());
                }
                received.fetch_add(n, Ordering::SeqCst);
                pending.extend_from_slice(buf.get(..n).unwrap_or_default());
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
