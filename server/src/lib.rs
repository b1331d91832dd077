//! certgate's live table feed: serves the newest valid compiled table in a directory over
//! HTTP/1.1 (hyper on tokio) to the filters that poll it, with a strong ETag so a poll
//! whose table did not change gets `304`.
//!
//! Every proxy with `onStale: deny` depends on this server, so no client may take it
//! down. The limits (all in [`Limits`], each a flag of `certgate serve`):
//! - at most [`Limits::max_connections`] connections are served at once; one more is
//!   accepted and closed at once (no task, no buffer for it);
//! - a request head must arrive whole within [`Limits::header_timeout`] of the connection
//!   opening or of the previous response (so the same deadline closes idle keep-alive
//!   connections and cuts heads trickled a byte at a time);
//! - a response write that cannot make progress for [`Limits::write_timeout`] ends the
//!   connection (a client that never reads a large table is dropped);
//! - a connection is closed after [`Limits::max_requests_per_connection`] requests;
//! - a failed `accept` (out of file descriptors, `EMFILE`) is logged, counted and followed
//!   by a back-off, never fatal;
//! - on SIGTERM or SIGINT the server stops accepting, lets requests in flight finish and
//!   closes idle connections, waiting at most [`Limits::shutdown_grace`].
//!
//! A poll may ask to be held until a newer table is served (`Prefer: wait=N`, see
//! [`wait`]); the server records which table each poller holds ([`status`], `/status`).
//!
//! The server knows nothing of policies: it serves what is in the directory (see
//! [`scan`] for which table wins), so it depends on `ruleset` only.

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hyper::header::{HeaderValue, CONNECTION};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::{Notify, Semaphore};

pub mod delta;
pub mod http;
pub mod io;
pub mod metrics;
pub mod scan;
pub mod served;
pub mod status;
pub mod wait;

pub use metrics::Metrics;
pub use scan::{Current, Source};
pub use served::Served;

/// Default of [`Limits::max_connections`]: a fleet's proxy workers each keep one
/// connection; 10,000 file descriptors and ~10 KB of buffers each.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default of [`Limits::header_timeout`].
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`Limits::write_timeout`].
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of [`Limits::max_requests_per_connection`].
pub const DEFAULT_MAX_REQUESTS_PER_CONNECTION: u32 = 10_000;
/// Default of [`Limits::shutdown_grace`].
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Longest request head accepted (request line and headers); hyper answers `431` beyond.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header fields accepted in one request.
pub const MAX_HEADERS: usize = 64;
/// Pause after a failed `accept` before the next one: the error (mostly `EMFILE`) does
/// not clear by retrying in a tight loop, and the loop would burn a core.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// A recurring condition (failed accepts, connections over the limit) is logged at most
/// once per this interval, with the count since the last line.
pub const LOG_INTERVAL: Duration = Duration::from_secs(1);
/// Connections the kernel queues before `accept` (std's `bind` uses 128): a fleet's
/// pollers reconnecting at once after a restart must not be refused while the server
/// catches up. The kernel caps it at `net.core.somaxconn`.
pub const LISTEN_BACKLOG: i32 = 4096;
/// The directory scan's period while long polls are held, when `--poll-ms` is longer:
/// a held poll waits for exactly the table a scan would find, and a scan of unchanged
/// files costs one `stat` each (no inotify, which misses ConfigMap link swaps).
pub const QUICK_RESCAN: Duration = Duration::from_millis(100);
/// Worker threads of the runtime: the feed answers mostly `304`s, two cores suffice.
pub const WORKER_THREADS: usize = 2;

/// The limits a server enforces. [`Limits::default`] holds the `DEFAULT_*` constants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; beyond, a new connection is accepted and closed.
    pub max_connections: usize,
    /// Deadline for a whole request head, from the connection's start or the previous
    /// response; the keep-alive idle timeout too.
    pub header_timeout: Duration,
    /// How long a response write may make no progress before the connection is dropped.
    pub write_timeout: Duration,
    /// Requests on one connection before the server closes it (`connection: close`).
    pub max_requests_per_connection: u32,
    /// How long shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            max_requests_per_connection: DEFAULT_MAX_REQUESTS_PER_CONNECTION,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

/// What to serve, where.
#[derive(Debug, Clone)]
pub struct Config {
    /// The directory of compiled tables (`*.cgt`).
    pub dir: PathBuf,
    /// The address to listen on (port 0 picks a free one).
    pub listen: SocketAddr,
    /// The request path of the table (starts with `/`; not one of [`http::RESERVED_PATHS`]).
    pub path: String,
    /// How often the directory is re-scanned.
    pub poll: Duration,
    /// The limits enforced.
    pub limits: Limits,
    /// How many earlier tables a poller may get a delta from (`--delta-history`; 0: none).
    pub delta_history: usize,
}

/// Why a server could not start or run.
#[derive(Debug)]
pub enum Error {
    /// The configuration is unusable.
    Config(String),
    /// Binding the address failed.
    Listen(SocketAddr, std::io::Error),
    /// The runtime or a thread could not be created.
    Start(std::io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(why) => f.write_str(why),
            // The I/O error is the source: reporters print the chain.
            Error::Listen(addr, _) => write!(f, "cannot listen on {addr}"),
            Error::Start(_) => f.write_str("cannot start the server"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Config(_) => None,
            Error::Listen(_, e) | Error::Start(e) => Some(e),
        }
    }
}

/// Ends a running server gracefully when triggered (from any thread, before or after
/// [`Server::run`] started).
#[derive(Debug, Clone, Default)]
pub struct Shutdown(Arc<Notify>);

impl Shutdown {
    /// Starts the graceful shutdown.
    pub fn trigger(&self) {
        // `notify_one` keeps a permit when nobody waits yet, so a trigger is never lost.
        self.0.notify_one();
    }
}

/// A bound server that has scanned its directory once and not yet accepted anyone.
#[derive(Debug)]
pub struct Server {
    listener: std::net::TcpListener,
    config: Config,
    current: Current,
    scanner: scan::Scanner,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
    tables: Arc<wait::Tables>,
    pollers: Arc<status::Pollers>,
}

impl Server {
    /// Checks `config`, binds its address and scans the directory once.
    pub fn bind(config: Config) -> Result<Server, Error> {
        Server::bind_with_source(config, None)
    }

    /// [`Server::bind`], with tables also produced by `source` (polled at every scan,
    /// the first time before this returns).
    pub fn bind_with_source(
        config: Config,
        source: Option<Box<dyn Source>>,
    ) -> Result<Server, Error> {
        if !config.path.starts_with('/') {
            return Err(Error::Config(format!(
                "--path must start with `/`, found `{}`",
                config.path
            )));
        }
        if http::RESERVED_PATHS.contains(&config.path.as_str()) {
            return Err(Error::Config(format!(
                "--path `{}` is taken by the server's own endpoint",
                config.path
            )));
        }
        if !config.dir.is_dir() {
            return Err(Error::Config(format!(
                "`{}` is not a directory",
                config.dir.display()
            )));
        }
        if config.limits.max_connections == 0 || config.limits.max_requests_per_connection == 0 {
            return Err(Error::Config(
                "the connection and request limits must be at least 1".into(),
            ));
        }
        let listener = listen(config.listen).map_err(|e| Error::Listen(config.listen, e))?;
        let metrics = Arc::new(Metrics::default());
        let current: Current = Arc::new(RwLock::new(None));
        if config.delta_history > delta::MAX_DELTA_HISTORY {
            return Err(Error::Config(format!(
                "--delta-history {} is above the limit of {}",
                config.delta_history,
                delta::MAX_DELTA_HISTORY
            )));
        }
        let mut scanner = scan::Scanner::new(config.dir.clone(), Arc::clone(&metrics), source)
            .with_delta_history(config.delta_history);
        scanner.scan(&current);
        let pollers = Arc::new(status::Pollers::default());
        if let Some(served) = current.read().ok().and_then(|s| s.clone()) {
            pollers.table_served(&served, now_ms());
        }
        Ok(Server {
            listener,
            config,
            current,
            scanner,
            metrics,
            shutdown: Shutdown::default(),
            tables: Arc::new(wait::Tables::default()),
            pollers,
        })
    }

    /// The address bound (with the port chosen when the configuration said 0).
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.listener.local_addr().map_err(Error::Start)
    }

    /// A handle that ends [`Server::run`] gracefully.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// The server's counters (shared; they keep counting while it runs).
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Serves until SIGTERM, SIGINT or the [`Shutdown`] handle, then shuts down
    /// gracefully. Blocks the calling thread.
    pub fn run(self) -> Result<(), Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKER_THREADS)
            .thread_name("certgate-serve")
            .enable_all()
            .build()
            .map_err(Error::Start)?;
        let Server {
            listener,
            config,
            current,
            mut scanner,
            metrics,
            shutdown,
            tables,
            pollers,
        } = self;
        // The scanner's blocking file I/O runs on a thread of its own, started now, so
        // it never waits for a runtime thread that resource exhaustion could deny.
        let stop_scanning = Arc::new(AtomicBool::new(false));
        let scanning = {
            let current = Arc::clone(&current);
            let stop = Arc::clone(&stop_scanning);
            let poll = config.poll;
            let tables = Arc::clone(&tables);
            let pollers = Arc::clone(&pollers);
            std::thread::Builder::new()
                .name("certgate-scan".into())
                .spawn(move || {
                    let etag = |c: &Current| c.read().ok().and_then(|s| s.clone());
                    let mut scanned = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        // Wakes every QUICK_RESCAN so a poll held meanwhile is seen.
                        std::thread::sleep(poll.min(QUICK_RESCAN));
                        if tables.held() == 0 && scanned.elapsed() < poll {
                            continue;
                        }
                        scanned = Instant::now();
                        let before = etag(&current).map(|s| s.etag);
                        scanner.scan(&current);
                        if let Some(now) =
                            etag(&current).filter(|s| Some(&s.etag) != before.as_ref())
                        {
                            pollers.table_served(&now, now_ms());
                            // Wakes every held long poll at once.
                            tables.published();
                        }
                    }
                })
                .map_err(Error::Start)?
        };
        let shared = Shared {
            current,
            metrics,
            tables,
            pollers,
        };
        let result = runtime.block_on(serve(listener, config, shared, shutdown));
        stop_scanning.store(true, Ordering::Relaxed);
        // Tasks still running past the grace period are dropped with the runtime.
        runtime.shutdown_background();
        drop(scanning);
        result
    }
}

/// A non-blocking listening socket on `addr` with [`LISTEN_BACKLOG`].
fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // A restarted server binds again at once, though connections of the old one linger.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Logs a recurring condition at most once per [`LOG_INTERVAL`], with how often it
/// happened since the last line.
#[derive(Debug)]
struct Throttled {
    what: &'static str,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttled {
    fn new(what: &'static str) -> Throttled {
        Throttled {
            what,
            last: None,
            suppressed: 0,
        }
    }

    fn log(&mut self, detail: &dyn fmt::Display) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < LOG_INTERVAL)
        {
            self.suppressed = self.suppressed.saturating_add(1);
            return;
        }
        if self.suppressed > 0 {
            eprintln!(
                "{}: {detail} (and {} more since the last report)",
                self.what, self.suppressed
            );
        } else {
            eprintln!("{}: {detail}", self.what);
        }
        self.last = Some(now);
        self.suppressed = 0;
    }
}

/// What every connection shares.
#[derive(Debug, Clone)]
struct Shared {
    current: Current,
    metrics: Arc<Metrics>,
    tables: Arc<wait::Tables>,
    pollers: Arc<status::Pollers>,
}

impl Shared {
    fn served(&self) -> Option<Served> {
        self.current.read().ok().and_then(|s| s.clone())
    }

    /// The answer to one request: the routes of [`http::respond`], `/status` and the
    /// convergence gauges of `/metrics`, and long polls of the table held until a newer
    /// table is served, their wait passes or the server stops.
    async fn answer<B>(
        &self,
        request: Request<B>,
        path: &str,
        peer: SocketAddr,
    ) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
        let readable = request.method() == Method::GET || request.method() == Method::HEAD;
        match request.uri().path() {
            "/status" if readable => {
                return self.pollers.respond(now_ms(), self.tables.held());
            }
            "/metrics" if readable => {
                let mut body = self.metrics.render();
                body.push_str(&self.pollers.render_metrics(now_ms(), self.tables.held()));
                return http::metrics_text(body);
            }
            p if p != path || !readable => {
                return http::respond(
                    &request,
                    self.served().as_ref(),
                    path,
                    now_ms(),
                    &self.metrics,
                );
            }
            _ => {}
        }
        // Taken before the table is read: a table published from here on wakes the poll.
        let mut ticket = self.tables.ticket();
        let served = self.served();
        if status::is_poller(request.headers()) {
            self.pollers.polled(
                status::poller_id(request.headers(), peer),
                status::held_etag(request.headers(), served.as_ref()),
                now_ms(),
            );
        }
        let mut response = http::respond(&request, served.as_ref(), path, now_ms(), &self.metrics);
        let Some(wait) = wait::preferred_wait(request.headers()) else {
            return response;
        };
        let deadline = tokio::time::Instant::now() + wait;
        while response.status() == StatusCode::NOT_MODIFIED {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            match ticket.hold(left).await {
                wait::Woken::Published => {
                    ticket = self.tables.ticket();
                    let served = self.served();
                    response =
                        http::respond(&request, served.as_ref(), path, now_ms(), &self.metrics);
                }
                wait::Woken::TimedOut | wait::Woken::Stopping => break,
            }
        }
        if let Ok(applied) = HeaderValue::from_str(&format!("wait={}", wait.as_secs())) {
            response
                .headers_mut()
                .insert(wait::PREFERENCE_APPLIED, applied);
        }
        response
    }
}

async fn serve(
    listener: std::net::TcpListener,
    config: Config,
    shared: Shared,
    shutdown: Shutdown,
) -> Result<(), Error> {
    let metrics = Arc::clone(&shared.metrics);
    let listener = tokio::net::TcpListener::from_std(listener).map_err(Error::Start)?;
    let limits = config.limits.clone();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let path: Arc<str> = Arc::from(config.path.as_str());
    let mut accept_errors = Throttled::new("accept failed, backing off");
    let mut over_limit = Throttled::new("connection limit reached, closing new connections");
    let stop = shutdown.0.notified();
    tokio::pin!(stop);
    let signals = signals();
    tokio::pin!(signals);
    loop {
        let accepted = tokio::select! {
            () = &mut stop => { eprintln!("shutdown requested"); break; }
            why = &mut signals => { eprintln!("{why}: shutting down"); break; }
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                metrics.accept_error();
                accept_errors.log(&e);
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            metrics.closed_early(metrics::EarlyClose::Limit);
            over_limit.log(&format_args!("{} open", limits.max_connections));
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        metrics.opened();
        let io = TokioIo::new(io::Guarded::new(
            stream,
            limits.write_timeout,
            Arc::clone(&metrics),
        ));
        let service = {
            let shared = shared.clone();
            let path = Arc::clone(&path);
            let requests = Arc::new(AtomicU32::new(0));
            let max_requests = limits.max_requests_per_connection;
            service_fn(move |request| {
                let shared = shared.clone();
                let path = Arc::clone(&path);
                let requests = Arc::clone(&requests);
                async move {
                    let mut response = shared.answer(request, &path, peer).await;
                    shared.metrics.request(response.status().as_u16());
                    if requests.fetch_add(1, Ordering::Relaxed).saturating_add(1) >= max_requests {
                        response
                            .headers_mut()
                            .insert(CONNECTION, HeaderValue::from_static("close"));
                    }
                    Ok::<_, Infallible>(response)
                }
            })
        };
        let connection = graceful.watch(builder.serve_connection(io, service));
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                metrics.closed_early(classify(&e));
            }
            metrics.closed();
            drop(permit);
        });
    }
    drop(listener);
    // Held long polls answer now (`304`), so they do not hold the shutdown up.
    shared.tables.stop();
    let open = metrics.open_now();
    eprintln!(
        "stopped accepting; waiting up to {} ms for {open} open connections",
        limits.shutdown_grace.as_millis()
    );
    tokio::select! {
        () = graceful.shutdown() => eprintln!("all connections closed"),
        () = tokio::time::sleep(limits.shutdown_grace) => {
            let left = metrics.open_now();
            for _ in 0..left {
                metrics.closed_early(metrics::EarlyClose::Shutdown);
            }
            eprintln!("grace period over: dropping {left} connections");
        }
    }
    Ok(())
}

/// Why a connection ended with an error.
fn classify(e: &hyper::Error) -> metrics::EarlyClose {
    if e.is_timeout() {
        return metrics::EarlyClose::HeaderTimeout;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.downcast_ref::<io::WriteTimedOut>().is_some()
            || s.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.is::<io::WriteTimedOut>())
        {
            return metrics::EarlyClose::WriteTimeout;
        }
        source = s.source();
    }
    metrics::EarlyClose::Error
}

/// Resolves with the name of the first SIGTERM or SIGINT; never, if the handlers
/// cannot be installed (the default action, ending the process, then stays).
async fn signals() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("cannot handle SIGTERM/SIGINT ({e}): they end the process at once");
            std::future::pending().await
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
