//! `certgate drill`: a revocation drill. Publishes a table that revokes a canary
//! certificate (one no workload uses), waits until the feed's pollers hold that table
//! (`certgate serve`'s `/status`), reports how long propagation took, and optionally
//! proves the canary is refused by connecting with it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{DiagFormat, Format, EXIT_FINDINGS, EXIT_OK};

/// How often `/status` is read while waiting.
const STATUS_EVERY: Duration = Duration::from_millis(100);
/// Connect and read deadline of one `/status` request and of the target check.
const IO_DEADLINE: Duration = Duration::from_secs(5);
/// Most pollers still behind printed by name.
const BEHIND_SHOWN: usize = 20;

/// Run a revocation drill.
#[derive(Debug, clap::Args)]
#[command(
    about = "Run a revocation drill: revoke a canary certificate through the feed and measure how fast every proxy enforces it",
    after_help = "The drill compiles the policies (as `certgate compile` does), adds the canary certificate to \
the table's revoked certificates, signs it with --sign-key and writes it to --output in the directory \
`certgate serve` publishes. It then reads the server's --status (`/status`) until the server serves that \
table and every poller it tracks holds it (at least --min-pollers of them), or --timeout passes. Propagation \
per poller is the time from when the server started serving the table to the poller's first poll naming \
it (both on the server's clock). The canary stays revoked: use a certificate no workload uses.\n\n\
With --target the drill also connects to HOST:PORT over TLS with the canary (--canary-key, verifying the \
server with --target-ca): the connection must be admitted before the table is published (otherwise a \
refusal proves nothing) and refused (closed without an answer) after convergence.\n\n\
Exit codes: 0 converged (and, with --target, the canary refused); 1 not converged within --timeout, \
the canary still admitted, or refused already before the drill; 2 usage or I/O error (policies that do \
not compile, unreadable files, an unreachable --status).\n\n\
Examples:\n  certgate drill policies/ -o tables/payments.cgt --sign-key signing.key \\\n    \
--canary-cert drill/canary.pem --status http://certgate-feed:8080/status\n  \
certgate drill policies/ -o tables/payments.cgt --sign-key signing.key --canary-cert drill/canary.pem \\\n    \
--status http://127.0.0.1:8080/status --timeout 30s --min-pollers 20 \\\n    \
--target payments.example:8443 --canary-key drill/canary.key --target-ca ca.pem --format json"
)]
pub struct Args {
    /// Policy files, or directories of `*.yaml`/`*.yml` files (as for `certgate compile`)
    #[arg(required = true, value_name = "FILE_OR_DIR")]
    pub inputs: Vec<PathBuf>,
    /// The table to write, in the directory `certgate serve` publishes
    #[arg(short, long, value_name = "OUT.cgt")]
    pub output: PathBuf,
    /// Sign the table with this Ed25519 private key (the one the filters pin)
    #[arg(long, value_name = "KEY")]
    pub sign_key: Option<PathBuf>,
    /// The canary certificate (PEM): revoked by the drill
    #[arg(long, value_name = "PEM")]
    pub canary_cert: PathBuf,
    /// The feed server's status URL (`http://HOST:PORT/status`)
    #[arg(long, value_name = "URL")]
    pub status: String,
    /// How long to wait for convergence (`500ms`, `30s`, `5m`)
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    pub timeout: String,
    /// Pollers that must hold the table for convergence
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub min_pollers: u64,
    /// Also connect to this TLS address with the canary and check it is refused
    #[arg(long, value_name = "HOST:PORT", requires_all = ["canary_key", "target_ca"])]
    pub target: Option<String>,
    /// The canary's private key (PEM), for --target
    #[arg(long, value_name = "PEM")]
    pub canary_key: Option<PathBuf>,
    /// CA certificate(s) (PEM) that verify the --target server
    #[arg(long, value_name = "PEM")]
    pub target_ca: Option<PathBuf>,
    /// TLS server name for --target (default: its host)
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    /// `human` text or versioned `json`
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<u8> {
    let timeout = Duration::from_millis(
        filter_config::config::parse_duration("--timeout", &args.timeout).map_err(|_| {
            anyhow::anyhow!(
                "`--timeout {}` must be a duration like `30s` or `5m`",
                args.timeout
            )
        })?,
    );
    let status_url = StatusUrl::parse(&args.status)?;
    let key = args
        .sign_key
        .as_deref()
        .map(super::keygen::read_private)
        .transpose()?;
    let canary_pem = std::fs::read(&args.canary_cert)
        .with_context(|| format!("cannot read `{}`", args.canary_cert.display()))?;
    let canary = ruleset::cert::parse_pem_or_der(&canary_pem)
        .map_err(|e| anyhow::anyhow!("`{}`: {e}", args.canary_cert.display()))?
        .into_iter()
        .next()
        .with_context(|| format!("`{}` holds no certificate", args.canary_cert.display()))?;
    let target = match &args.target {
        Some(t) => Some(Target::new(t, &args, &canary_pem)?),
        None => None,
    };
    // The server must answer before anything is published.
    status_url.get().context("cannot read the feed's status")?;

    let mut verdict = Verdict::default();
    if let Some(t) = &target {
        verdict.admitted_before = Some(t.admitted()?);
    }

    let mut c = super::compile_paths(&args.inputs)?;
    if let Some(names) = c.table.as_ref().map(|t| t.policy_names.clone()) {
        let issued = super::compile::issue_time(None, &args.output, &names)?;
        c.stamp(issued)
            .map_err(|e| anyhow::anyhow!("the table cannot be encoded: {e}"))?;
    }
    let mut table = match (&c.table, c.failed(false)) {
        (Some(t), false) => t.clone(),
        _ => {
            super::report(&c, DiagFormat::Human, false);
            bail!("the policies do not compile; nothing was published");
        }
    };
    table.revocation.add_certificate(&canary.tbs_sha256());
    table.normalize();
    let mut bytes =
        ruleset::encode(&table).map_err(|e| anyhow::anyhow!("the table cannot be encoded: {e}"))?;
    if let Some(kp) = &key {
        super::keygen::sign(&mut bytes, kp);
    }
    let etag = format!("\"{}\"", ruleset::cert::hex_lower(&Sha256::digest(&bytes)));
    let published = Instant::now();
    super::compile::write_atomically(&args.output, &bytes)?;
    if args.format == Format::Human {
        eprintln!(
            "published {} (issued at {} ms, etag {etag}), revoking the canary `{}` (serial {})",
            args.output.display(),
            table.issued_at_ms,
            canary.subject,
            ruleset::cert::serial_hex(&canary.serial),
        );
    }

    let deadline = published + timeout;
    let mut last = Value::Null;
    let converged = loop {
        match status_url.get() {
            Ok(s) => last = s,
            Err(e) if Instant::now() >= deadline => {
                return Err(e.context("cannot read the feed's status"))
            }
            Err(_) => {}
        }
        if is_converged(&last, &etag, args.min_pollers) {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        std::thread::sleep(STATUS_EVERY);
    };
    verdict.converged = converged;
    verdict.waited = published.elapsed();
    let report = Report::from_status(&last, &etag);

    if let (Some(t), true) = (&target, converged) {
        verdict.admitted_after = Some(t.admitted()?);
    }
    let code = verdict.exit_code();
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "version": 1,
                "table": {"path": args.output, "etag": etag, "issued_at_ms": table.issued_at_ms},
                "canary": {"subject": canary.subject, "serial": ruleset::cert::serial_hex(&canary.serial)},
                "converged": converged,
                "waited_ms": millis(verdict.waited),
                "served_after_ms": report.served_after_ms,
                "pollers": {"newest": report.propagation_ms.len(), "behind": report.behind},
                "propagation_ms": {
                    "p50": percentile(&report.propagation_ms, 50),
                    "p99": percentile(&report.propagation_ms, 99),
                    "max": report.propagation_ms.last(),
                },
                "target": args.target.as_ref().map(|t| json!({
                    "address": t,
                    "admitted_before": verdict.admitted_before,
                    "admitted_after": verdict.admitted_after,
                })),
                "ok": code == EXIT_OK,
            }))?
        ),
        Format::Human => print!("{}", human(&args, &verdict, &report)),
    }
    Ok(code)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Nearest-rank percentile of sorted `v`.
fn percentile(v: &[u64], p: usize) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    let rank = (v.len() * p).div_ceil(100).max(1);
    v.get(rank - 1).copied()
}

/// The server serves `etag` and every tracked poller holds it (at least `min` of them).
fn is_converged(status: &Value, etag: &str, min: u64) -> bool {
    status["newest"]["etag"].as_str() == Some(etag)
        && status["pollers"]["behind"].as_u64() == Some(0)
        && status["pollers"]["newest"].as_u64().unwrap_or(0) >= min
}

/// What the last `/status` says about the drill's table.
#[derive(Debug, Default)]
struct Report {
    /// Per poller holding the table: ms from the server serving it to the poller's
    /// first poll naming it, sorted.
    propagation_ms: Vec<u64>,
    /// Pollers not holding it: (name, the ETag they hold).
    behind: Vec<(String, String)>,
    /// From the table's issue time to the server serving it (the scan noticing the
    /// file); `None` when the server does not serve the drill's table.
    served_after_ms: Option<u64>,
}

impl Report {
    fn from_status(status: &Value, etag: &str) -> Report {
        let mut r = Report::default();
        let serves = status["newest"]["etag"].as_str() == Some(etag);
        let since = status["newest"]["served_since_ms"].as_u64().unwrap_or(0);
        if serves {
            let issued = status["newest"]["issued_at_ms"].as_u64().unwrap_or(since);
            r.served_after_ms = Some(since.saturating_sub(issued));
        }
        for p in status["list"].as_array().into_iter().flatten() {
            let name = p["poller"].as_str().unwrap_or("?").to_owned();
            if serves && p["etag"].as_str() == Some(etag) {
                let at = p["since_ms"].as_u64().unwrap_or(since);
                r.propagation_ms.push(at.saturating_sub(since));
            } else {
                let held = p["etag"].as_str().unwrap_or("none").to_owned();
                r.behind.push((name, held));
            }
        }
        r.propagation_ms.sort_unstable();
        r
    }
}

#[derive(Debug, Default)]
struct Verdict {
    converged: bool,
    waited: Duration,
    admitted_before: Option<bool>,
    admitted_after: Option<bool>,
}

impl Verdict {
    fn exit_code(&self) -> u8 {
        let target_ok = matches!(
            (self.admitted_before, self.admitted_after),
            (None, _) | (Some(true), Some(false))
        );
        if self.converged && target_ok {
            EXIT_OK
        } else {
            EXIT_FINDINGS
        }
    }
}

fn human(args: &Args, v: &Verdict, r: &Report) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let ms = |x: Option<u64>| x.map_or_else(|| "-".to_owned(), |x| format!("{x} ms"));
    if v.converged {
        let _ = writeln!(
            o,
            "converged after {} ms: {} pollers hold the table; propagation p50 {}, p99 {}, max {}",
            millis(v.waited),
            r.propagation_ms.len(),
            ms(percentile(&r.propagation_ms, 50)),
            ms(percentile(&r.propagation_ms, 99)),
            ms(r.propagation_ms.last().copied()),
        );
    } else {
        let _ = writeln!(
            o,
            "not converged within {}: {} pollers hold the table, {} behind{}",
            args.timeout,
            r.propagation_ms.len(),
            r.behind.len(),
            if r.served_after_ms.is_none() {
                " (the server does not serve it: is --output in its directory, and signed as it expects?)"
            } else {
                ""
            }
        );
    }
    for (name, held) in r.behind.iter().take(BEHIND_SHOWN) {
        let _ = writeln!(o, "  behind: {name} holds {held}");
    }
    if r.behind.len() > BEHIND_SHOWN {
        let _ = writeln!(o, "  ... and {} more", r.behind.len() - BEHIND_SHOWN);
    }
    if let Some(target) = &args.target {
        let line = match (v.admitted_before, v.admitted_after) {
            (Some(false), _) => {
                "the canary was refused already before the drill: the check proves nothing"
                    .to_owned()
            }
            (Some(true), Some(false)) => {
                "the canary was admitted before the drill and is refused now".to_owned()
            }
            (Some(true), Some(true)) => "the canary is still ADMITTED".to_owned(),
            _ => "not checked (not converged)".to_owned(),
        };
        let _ = writeln!(o, "target {target}: {line}");
    }
    o
}

/// `http://HOST:PORT/PATH`, read with a plain HTTP/1.1 GET.
#[derive(Debug)]
struct StatusUrl {
    authority: String,
    path: String,
}

impl StatusUrl {
    fn parse(url: &str) -> anyhow::Result<StatusUrl> {
        let rest = url.strip_prefix("http://").with_context(|| {
            format!("`--status {url}` must be an `http://HOST:PORT/status` URL")
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/status"),
        };
        if authority.is_empty() {
            bail!("`--status {url}` names no host");
        }
        let authority = if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(StatusUrl {
            authority,
            path: path.to_owned(),
        })
    }

    fn get(&self) -> anyhow::Result<Value> {
        let addr = resolve(&self.authority)?;
        let mut s = TcpStream::connect_timeout(&addr, IO_DEADLINE)
            .with_context(|| format!("cannot connect to {}", self.authority))?;
        s.set_read_timeout(Some(IO_DEADLINE))?;
        s.set_write_timeout(Some(IO_DEADLINE))?;
        write!(
            s,
            "GET {} HTTP/1.1\r\nhost: {}\r\naccept: application/json\r\nconnection: close\r\n\r\n",
            self.path, self.authority
        )?;
        let mut raw = Vec::new();
        s.take(64 << 20).read_to_end(&mut raw)?;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .context("no HTTP response")?;
        let head = String::from_utf8_lossy(&raw[..split]);
        let status = head.split_whitespace().nth(1).unwrap_or("");
        if status != "200" {
            bail!("{} answered `{status}`", self.path);
        }
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            bail!(
                "{} answered in chunks, which the drill does not read",
                self.path
            );
        }
        serde_json::from_slice(&raw[split + 4..])
            .with_context(|| format!("{} did not answer JSON", self.path))
    }
}

fn resolve(authority: &str) -> anyhow::Result<SocketAddr> {
    authority
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve `{authority}`"))?
        .next()
        .with_context(|| format!("`{authority}` resolves to no address"))
}

/// The TLS endpoint the canary is tried against.
struct Target {
    addr: SocketAddr,
    name: rustls::pki_types::ServerName<'static>,
    config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Target({})", self.addr)
    }
}

impl Target {
    fn new(target: &str, args: &Args, canary_pem: &[u8]) -> anyhow::Result<Target> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
        let addr = resolve(target)?;
        let host = target.rsplit_once(':').map_or(target, |(h, _)| h);
        let name = args.server_name.clone().unwrap_or_else(|| host.to_owned());
        let name = ServerName::try_from(name.clone())
            .map_err(|_| anyhow::anyhow!("`{name}` is not a TLS server name"))?;
        let read = |p: &Option<PathBuf>, flag: &str| -> anyhow::Result<(PathBuf, Vec<u8>)> {
            let p = p
                .clone()
                .with_context(|| format!("--target needs {flag}"))?;
            let b = std::fs::read(&p).with_context(|| format!("cannot read `{}`", p.display()))?;
            Ok((p, b))
        };
        let (ca_path, ca) = read(&args.target_ca, "--target-ca")?;
        let (key_path, key) = read(&args.canary_key, "--canary-key")?;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&ca) {
            let c = c.with_context(|| format!("`{}` is not PEM", ca_path.display()))?;
            roots
                .add(c)
                .with_context(|| format!("`{}`: unusable CA certificate", ca_path.display()))?;
        }
        if roots.is_empty() {
            bail!("`{}` holds no certificate", ca_path.display());
        }
        let chain = CertificateDer::pem_slice_iter(canary_pem)
            .collect::<Result<Vec<_>, _>>()
            .context("the canary certificate for --target must be PEM")?;
        let key = PrivateKeyDer::from_pem_slice(&key)
            .with_context(|| format!("`{}` is not a PEM private key", key_path.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .context("the canary certificate and key do not match")?;
        Ok(Target {
            addr,
            name,
            config: Arc::new(config),
        })
    }

    /// Connects with the canary and sends a line: admitted when any byte comes back or
    /// the connection stays open, refused when it is closed without an answer.
    fn admitted(&self) -> anyhow::Result<bool> {
        let tcp = TcpStream::connect_timeout(&self.addr, IO_DEADLINE)
            .with_context(|| format!("cannot connect to {}", self.addr))?;
        tcp.set_read_timeout(Some(IO_DEADLINE))?;
        tcp.set_write_timeout(Some(IO_DEADLINE))?;
        let conn = rustls::ClientConnection::new(Arc::clone(&self.config), self.name.clone())?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        if let Err(e) = tls
            .write_all(b"GET / HTTP/1.0\r\n\r\n")
            .and_then(|()| tls.flush())
        {
            return refused_or(e);
        }
        let mut buf = [0u8; 1];
        match tls.read(&mut buf) {
            Ok(0) => Ok(false),
            Ok(_) => Ok(true),
            // Still open after the deadline: nobody closed it.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(true)
            }
            Err(e) => refused_or(e),
        }
    }
}

/// A connection closed or reset under the canary is a refusal; a TLS alert means the
/// handshake itself failed (the canary is not trusted by the target), which proves nothing.
fn refused_or(e: std::io::Error) -> anyhow::Result<bool> {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) {
        bail!("the TLS handshake with the canary failed ({e}): is the canary issued by the CA the target trusts?");
    }
    if matches!(
        e.kind(),
        BrokenPipe | ConnectionAborted | ConnectionReset | UnexpectedEof
    ) {
        return Ok(false);
    }
    Err(anyhow::Error::new(e).context("the target check failed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50), Some(50));
        assert_eq!(percentile(&v, 99), Some(99));
        assert_eq!(percentile(&[7], 99), Some(7));
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn convergence_needs_the_table_no_poller_behind_and_enough_pollers() {
        let s = |etag: &str, newest: u64, behind: u64| json!({"newest": {"etag": etag}, "pollers": {"newest": newest, "behind": behind}});
        assert!(is_converged(&s("\"t\"", 2, 0), "\"t\"", 1));
        assert!(!is_converged(&s("\"t\"", 2, 1), "\"t\"", 1));
        assert!(!is_converged(&s("\"old\"", 2, 0), "\"t\"", 1));
        assert!(!is_converged(&s("\"t\"", 0, 0), "\"t\"", 1));
        assert!(!is_converged(&Value::Null, "\"t\"", 0));
    }

    #[test]
    fn report_measures_from_when_the_server_served_the_table() {
        let status = json!({
            "newest": {"etag": "\"t\"", "issued_at_ms": 900, "served_since_ms": 1_000},
            "list": [
                {"poller": "a", "etag": "\"t\"", "since_ms": 1_040},
                {"poller": "b", "etag": "\"t\"", "since_ms": 1_010},
                {"poller": "c", "etag": "\"old\"", "since_ms": 10},
            ],
        });
        let r = Report::from_status(&status, "\"t\"");
        assert_eq!(r.propagation_ms, vec![10, 40]);
        assert_eq!(r.behind, vec![("c".to_owned(), "\"old\"".to_owned())]);
        assert_eq!(r.served_after_ms, Some(100));
    }

    #[test]
    fn status_urls() {
        let u = StatusUrl::parse("http://127.0.0.1:8080/status").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.path.as_str()),
            ("127.0.0.1:8080", "/status")
        );
        let u = StatusUrl::parse("http://feed").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.path.as_str()),
            ("feed:80", "/status")
        );
        assert!(StatusUrl::parse("https://feed/status").is_err());
        assert!(StatusUrl::parse("http:///status").is_err());
    }

    #[test]
    fn a_canary_must_be_admitted_before_and_refused_after() {
        let v = |before, after| Verdict {
            converged: true,
            waited: Duration::ZERO,
            admitted_before: before,
            admitted_after: after,
        };
        assert_eq!(v(None, None).exit_code(), EXIT_OK);
        assert_eq!(v(Some(true), Some(false)).exit_code(), EXIT_OK);
        assert_eq!(v(Some(true), Some(true)).exit_code(), EXIT_FINDINGS);
        assert_eq!(v(Some(false), Some(false)).exit_code(), EXIT_FINDINGS);
        let not = Verdict {
            converged: false,
            ..v(None, None)
        };
        assert_eq!(not.exit_code(), EXIT_FINDINGS);
    }
}
