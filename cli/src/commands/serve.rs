//! `certgate serve`: the live table feed. Parses the arguments and runs the feed server
//! (the `certgate-server` crate), which serves the newest valid compiled table in a
//! directory with a strong ETag and enforces the connection limits set here.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use std::collections::HashMap;
use std::time::Instant;

use certgate_server::{Config, Limits, Server, Source};

use super::crl_fetch::{next_due, Failure, Fetcher, FetchingLoader, UrlState, RETRY_AFTER_FAILURE};

use super::DiagFormat;

use super::EXIT_OK;

#[derive(Debug, clap::Args)]
#[command(
    about = "Serve the newest compiled table in DIR over HTTP (the filter's live feed)",
    after_help = "Serves the `*.cgt` file in DIR with the newest issue time (the time `certgate compile` \
stamps into the table, not the file's modification time) at PATH with a strong ETag (the quoted \
SHA-256 of the bytes); `If-None-Match` gets 304, HEAD the headers only. DIR is re-scanned every \
--poll-ms; a table that does not decode is skipped with a logged reason, and a table is served \
only if it is strictly newer than the one served before, so copying an old table into DIR never \
rolls the feed back. Symbolic links are followed while they stay inside DIR (ConfigMap and Secret \
volumes); a link that leaves DIR is skipped. Every file skipped is logged once, with why. Tables \
are served as they are; the filter verifies their signature.\n\n\
Other endpoints: GET /healthz answers 200 while a valid, unexpired table is served, else 503 with \
the reason (readiness); GET /livez answers 200 while the process runs (liveness); GET /metrics \
gives the counters in Prometheus text format (certgate_feed_*); GET /status tells which table \
each poller holds (JSON: the newest table, pollers by table, pollers behind).\n\n\
Long-poll: a poll of PATH whose If-None-Match names the table served and that sends `Prefer: \
wait=N` (N at most 60) is held until a newer table is served (200) or N seconds pass (304, with \
`Preference-Applied: wait=N`); held polls are not cut by --header-timeout-ms and are answered \
at once on shutdown; while any is held, DIR is re-scanned every 100 ms (or --poll-ms if shorter).\n\n\
Deltas: a poll with `A-IM: certgate-delta` whose If-None-Match names one of the last \
--delta-history tables served gets 226 IM Used with only what changed (the revocation keys \
added and removed, any other changed section whole; headers IM, Delta-Base, ETag), when that \
is at most half the table; otherwise the table (200) or 304 as without it. The poller rebuilds \
the table byte for byte and verifies its signature as a fetched one's.\n\n\
Limits: at most --max-connections connections are served at once (one more is accepted and closed \
at once); a request head must arrive whole within --header-timeout-ms of the connection's start \
or of the previous response (this also closes idle keep-alive connections); a response the \
client does not read for --write-timeout-ms drops the connection. A failed accept (e.g. out of \
file descriptors) is logged and retried after a back-off. SIGTERM or SIGINT: stop accepting, \
finish requests in flight, exit within --shutdown-grace-ms.\n\n\
With --policies, tables compiled from POLICIES (at start, and whenever a file under it \
changes; signed with --sign-key) compete with DIR's files under the same rules; a change that \
does not compile is logged with its diagnostics and the table served stays. CRLs the policies \
name by URL (`revocation.crlUrls`) are fetched at start, then before each CRL's nextUpdate or every \
--crl-refresh seconds, whichever is sooner, with If-None-Match/If-Modified-Since (a 304 changes \
nothing); a CRL that fails to fetch (status, size over --crl-max-bytes, --crl-timeout-ms) or to \
verify against `crlIssuers`, or is older than the last good copy, is logged and counted \
(certgate_feed_crl_fetch_failures_total{reason}) and the last good copy stays (kept across \
restarts in --crl-cache).\n\n\
Examples:\n  certgate serve tables/ --listen 127.0.0.1:8080\n  \
certgate serve tables/ --policies policies/ --sign-key signing.key\n  \
certgate serve tables/ --policies policies/ --crl-refresh 300 --crl-cache crl-cache/\n  \
certgate compile policies/ -o tables/payments.cgt   # picked up within --poll-ms\n  \
curl -s http://127.0.0.1:8080/metrics | grep certgate_feed_table\n\n\
Exit codes: 0 after a shutdown (signal, or standard input closed with --exit-on-stdin-close); \
2 when DIR, --path, --listen, --sign-key, --crl-ca or --crl-cache is unusable."
)]
pub struct Args {
    /// Directory holding compiled tables (`*.cgt`; hidden files are ignored).
    pub dir: PathBuf,
    /// Address to listen on (loopback by default; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Request path of the table (not /healthz, /livez, /metrics or /status).
    #[arg(long, default_value = "/table.cgt")]
    pub path: String,
    /// How often DIR is re-scanned, in milliseconds.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub poll_ms: u64,
    /// Connections served at once; one more is accepted and closed at once.
    #[arg(long, default_value_t = certgate_server::DEFAULT_MAX_CONNECTIONS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub max_connections: usize,
    /// Deadline for a whole request head, in milliseconds, from the connection's start or
    /// the previous response (also the keep-alive idle timeout).
    #[arg(long, default_value_t = millis(certgate_server::DEFAULT_HEADER_TIMEOUT), value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub header_timeout_ms: u64,
    /// How long a response may wait for the client to read, in milliseconds, before the
    /// connection is dropped.
    #[arg(long, default_value_t = millis(certgate_server::DEFAULT_WRITE_TIMEOUT), value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub write_timeout_ms: u64,
    /// Requests served on one connection before the server closes it.
    #[arg(long, default_value_t = certgate_server::DEFAULT_MAX_REQUESTS_PER_CONNECTION, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_requests_per_connection: u32,
    /// How long a shutdown waits for requests in flight, in milliseconds.
    #[arg(long, default_value_t = millis(certgate_server::DEFAULT_SHUTDOWN_GRACE), value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub shutdown_grace_ms: u64,
    /// Earlier tables kept to answer a poller holding one of them with a delta to the
    /// newest (`226 IM Used`, RFC 3229); 0 turns deltas off.
    #[arg(long, value_name = "N", default_value_t = certgate_server::delta::DEFAULT_DELTA_HISTORY, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=certgate_server::delta::MAX_DELTA_HISTORY as u64))]
    pub delta_history: usize,
    /// Also serve tables compiled from the policies in this directory (or file), recompiled
    /// whenever a file under it changes (CRL and revocation files included).
    #[arg(long, value_name = "POLICIES")]
    pub policies: Option<PathBuf>,
    /// Sign the tables compiled from --policies with this Ed25519 private key (`certgate keygen`).
    #[arg(long, value_name = "KEY", requires = "policies")]
    pub sign_key: Option<PathBuf>,
    /// Refuse to serve a compilation of --policies that has warnings.
    #[arg(long, requires = "policies")]
    pub deny_warnings: bool,
    /// Fetch each CRL named by URL (`revocation.crlUrls`) at least this often, in seconds;
    /// it is fetched anyway before its nextUpdate.
    #[arg(long, value_name = "SECONDS", requires = "policies", value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub crl_refresh: Option<u64>,
    #[command(flatten)]
    pub crl: super::crl_fetch::CrlArgs,
    /// Exit when standard input reaches end of file (for supervisors and tests that hold a pipe).
    #[arg(long)]
    pub exit_on_stdin_close: bool,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let config = Config {
        dir: args.dir.clone(),
        listen: args.listen,
        path: args.path.clone(),
        poll: Duration::from_millis(args.poll_ms),
        limits: Limits {
            max_connections: args.max_connections,
            header_timeout: Duration::from_millis(args.header_timeout_ms),
            write_timeout: Duration::from_millis(args.write_timeout_ms),
            max_requests_per_connection: args.max_requests_per_connection,
            shutdown_grace: Duration::from_millis(args.shutdown_grace_ms),
        },
        delta_history: args.delta_history,
    };
    let source = match &args.policies {
        None => None,
        Some(dir) => {
            // Read first: a missing key is a usage error, not a failed compilation.
            let key = args
                .sign_key
                .as_deref()
                .map(super::keygen::read_private)
                .transpose()?;
            let source: Box<dyn Source> = Box::new(Policies {
                dir: dir.clone(),
                key,
                deny_warnings: args.deny_warnings,
                seen: None,
                last_issued_ms: 0,
                fetcher: Fetcher::new(&args.crl)?,
                urls: HashMap::new(),
                refresh: args.crl_refresh.map(Duration::from_secs),
                failed: Vec::new(),
            });
            Some(source)
        }
    };
    let server = Server::bind_with_source(config, source)?;
    let local = server.local_addr()?;
    // The address line is what scripts and tests wait for (port 0 resolves here).
    eprintln!(
        "listening on http://{local}{} (tables from `{}`)",
        args.path,
        args.dir.display()
    );
    if args.exit_on_stdin_close {
        let shutdown = server.shutdown_handle();
        std::thread::Builder::new()
            .name("certgate-stdin".into())
            .spawn(move || {
                let mut sink = [0u8; 256];
                let mut stdin = std::io::stdin();
                while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
                eprintln!("standard input closed: exiting");
                shutdown.trigger();
            })?;
    }
    server.run()?;
    Ok(EXIT_OK)
}

/// `--policies`: compiles the policies when a file under them changed.
struct Policies {
    dir: PathBuf,
    key: Option<ed25519_compact::KeyPair>,
    deny_warnings: bool,
    /// The files (path, size, modification time) at the last compilation.
    seen: Option<Vec<(PathBuf, u64, std::time::SystemTime)>>,
    /// The issue time of the last table compiled: the next is later even if the clock
    /// stepped back, so the server never refuses it as a rollback.
    last_issued_ms: u64,
    /// Fetches the CRLs named by URL.
    fetcher: Fetcher,
    /// Each CRL URL's last good copy and when it is fetched next.
    urls: HashMap<String, UrlState>,
    /// `--crl-refresh`.
    refresh: Option<Duration>,
    /// Fetch failures not yet counted by the server.
    failed: Vec<&'static str>,
}

impl Source for Policies {
    fn name(&self) -> String {
        format!("the policies in `{}`", self.dir.display())
    }

    fn poll(&mut self) -> Option<Result<Vec<u8>, String>> {
        let files = match listing(&self.dir) {
            Ok(files) => files,
            Err(e) => return Some(Err(format!("cannot read them: {e}"))),
        };
        let now = Instant::now();
        let due = self.urls.values().any(|u| u.due.is_some_and(|d| d <= now));
        let changed = self.seen.as_ref() != Some(&files);
        if !changed && !due {
            return None;
        }
        self.seen = Some(files);
        self.compile(changed)
    }

    fn crl_fetch_failures(&mut self) -> Vec<&'static str> {
        std::mem::take(&mut self.failed)
    }
}

impl Policies {
    /// One compilation with the CRL URLs fetched as they are due: fetched copies that do
    /// not verify (or are older than the last good copy) are dropped, counted and logged,
    /// and the policies compiled again with the last good copies, so a table is only ever
    /// compiled from a complete, verified set. `None` when nothing changed: the files are
    /// the same and every URL answered `304` (or sent the same bytes).
    fn compile(&mut self, files_changed: bool) -> Option<Result<Vec<u8>, String>> {
        let inputs = match super::read_inputs(std::slice::from_ref(&self.dir)) {
            Ok(i) => i,
            Err(e) => return Some(Err(format!("{e:#}"))),
        };
        let mut c = self.compile_once(inputs.clone(), true);
        let bad = self.refused_candidates(&c);
        if !bad.is_empty() {
            let retry = Instant::now() + self.retry();
            for (url, kind, why) in bad {
                eprintln!(
                    "CRL `{url}`: the copy fetched is refused ({why}); the last good copy stays"
                );
                self.failed.push(kind.label());
                if let Some(u) = self.urls.get_mut(&url) {
                    u.candidate = None;
                    u.due = Some(retry);
                }
            }
            c = self.compile_once(inputs, false);
        }
        // A copy byte for byte the same as the last good one changes nothing.
        // (Its validators are kept, so the next request can be answered 304.)
        for u in self.urls.values_mut() {
            if let (Some(c), Some(g)) = (&u.candidate, &mut u.good) {
                if c.bytes == g.bytes {
                    g.etag.clone_from(&c.etag);
                    g.last_modified.clone_from(&c.last_modified);
                    u.candidate = None;
                }
            }
        }
        self.forget_refused_copies(&c);
        let fresh = self.urls.values().any(|u| u.candidate.is_some());
        self.schedule(&c);
        if !files_changed && !fresh && c.error_count() == 0 {
            return None;
        }
        let out = self.publish(c);
        let promote = out.is_ok();
        for (url, u) in &mut self.urls {
            if let Some(copy) = u.candidate.take().filter(|_| promote) {
                if let Err(e) = self.fetcher.store(url, &copy) {
                    eprintln!("CRL `{url}`: cannot store it in --crl-cache: {e}");
                }
                u.good = Some(copy);
            }
        }
        Some(out)
    }

    fn retry(&self) -> Duration {
        self.refresh
            .map_or(RETRY_AFTER_FAILURE, |r| r.min(RETRY_AFTER_FAILURE))
    }

    fn compile_once(
        &mut self,
        inputs: Vec<certgate_compiler::Input>,
        fetch: bool,
    ) -> certgate_compiler::Compilation {
        let loader = FetchingLoader {
            files: &super::FsLoader,
            fetcher: &self.fetcher,
            urls: std::cell::RefCell::new(&mut self.urls),
            fetch,
            failures: std::cell::RefCell::new(Vec::new()),
            refresh: self.refresh,
        };
        let c = certgate_compiler::compile(
            inputs,
            &loader,
            &certgate_compiler::Options { now: super::now() },
        );
        for (url, kind, why) in loader.failures.into_inner() {
            eprintln!("CRL `{url}`: cannot fetch it ({why}); the last good copy stays");
            self.failed.push(kind.label());
        }
        c
    }

    /// The fetched copies the compilation refused (an error at the URL's entry), and the
    /// ones older than the last good copy (a replayed CRL, validly signed but stale).
    fn refused_candidates(
        &self,
        c: &certgate_compiler::Compilation,
    ) -> Vec<(String, Failure, String)> {
        let mut out = Vec::new();
        for p in &c.policies {
            for r in &p.spec.crl_urls {
                let url = &r.path.value;
                let Some(u) = self.urls.get(url) else {
                    continue;
                };
                let Some(cand) = &u.candidate else { continue };
                if out.iter().any(|(o, _, _)| o == url) {
                    continue;
                }
                if let Some(d) = c
                    .diagnostics
                    .iter()
                    .find(|d| d.is_error() && d.span == Some(r.path.span))
                {
                    out.push((url.clone(), Failure::Verify, d.message.clone()));
                    continue;
                }
                let this = |b: &[u8]| certgate_compiler::crl::parse(b).ok().map(|i| i.this_update);
                if let (Some(new), Some(old)) = (
                    this(&cand.bytes),
                    u.good.as_ref().and_then(|g| this(&g.bytes)),
                ) {
                    if new < old {
                        out.push((
                            url.clone(),
                            Failure::Rollback,
                            "its thisUpdate is older than the last good copy's".into(),
                        ));
                    }
                }
            }
        }
        out
    }

    /// A last good copy the compilation refuses (a `--crl-cache` file changed on disk) is
    /// forgotten, with its validators, so the next fetch is unconditional and cannot be
    /// answered `304` for it; until then the compilation fails and the table served stays.
    fn forget_refused_copies(&mut self, c: &certgate_compiler::Compilation) {
        for p in &c.policies {
            for r in &p.spec.crl_urls {
                let Some(u) = self.urls.get_mut(&r.path.value) else {
                    continue;
                };
                if u.candidate.is_some() || u.good.is_none() {
                    continue;
                }
                if c.diagnostics
                    .iter()
                    .any(|d| d.is_error() && d.span == Some(r.path.span))
                {
                    eprintln!(
                        "CRL `{}`: the last good copy is refused now; it is fetched again without validators",
                        r.path.value
                    );
                    u.good = None;
                    u.due = Some(Instant::now());
                }
            }
        }
    }

    /// When each URL is fetched next: by its CRL's nextUpdate or `--crl-refresh`.
    fn schedule(&mut self, c: &certgate_compiler::Compilation) {
        let now = super::now();
        for p in &c.policies {
            for r in &p.spec.crl_urls {
                if let Some(u) = self.urls.get_mut(&r.path.value) {
                    if u.due.is_none() {
                        let next = r.crl.as_ref().and_then(|i| i.next_update);
                        u.due = Some(next_due(next, self.refresh, now));
                    }
                }
            }
        }
        let retry = Instant::now() + self.retry();
        for u in self.urls.values_mut() {
            if u.due.is_none() {
                u.due = Some(retry);
            }
        }
    }

    fn publish(&mut self, mut c: certgate_compiler::Compilation) -> Result<Vec<u8>, String> {
        if c.table.is_some() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            let issued = now.max(self.last_issued_ms.saturating_add(1));
            c.stamp(issued)
                .map_err(|e| format!("the table cannot be encoded: {e}"))?;
        }
        // Diagnostics (errors and warnings) go to the log, as `certgate compile` shows them.
        super::report(&c, DiagFormat::Human, self.deny_warnings);
        let mut bytes = match (&c.bytes, c.failed(self.deny_warnings)) {
            (Some(b), false) => b.clone(),
            _ => return Err("they do not compile (diagnostics above)".into()),
        };
        if let Some(kp) = &self.key {
            super::keygen::sign(&mut bytes, kp);
        }
        if let Some(t) = &c.table {
            self.last_issued_ms = t.issued_at_ms;
        }
        Ok(bytes)
    }
}

/// Every file under `path` (recursively; `path` itself if it is a file), with its size and
/// modification time, sorted: a change to any of them changes the listing.
fn listing(path: &std::path::Path) -> std::io::Result<Vec<(PathBuf, u64, std::time::SystemTime)>> {
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::metadata(&p)?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&p)? {
                stack.push(entry?.path());
            }
        } else {
            out.push((p, meta.len(), meta.modified()?));
        }
    }
    out.sort();
    Ok(out)
}
