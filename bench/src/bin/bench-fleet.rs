//! `make bench-fleet`: the fleet simulation of issue 16. N simulated pollers (tokio tasks
//! on kept-alive connections, not Envoys) hold a table of about a million revoked serials,
//! compiled by the real `certgate compile` from a policy with a CRL, and long-poll the
//! real `certgate serve` (`Prefer: wait=N`, `A-IM: certgate-delta`, `X-Certgate-Poller`).
//! Then one serial is revoked with `certgate compile` writing into the served directory,
//! and from the moment the new table file lands the harness measures how long each poller
//! takes to hold it (delta applied and checked against the ETag, see
//! `certgate_bench::fleet`), the bytes the pollers read (and the server's own count from
//! `/metrics`), and the server's CPU and peak RSS. In the same run, the baseline: the same
//! revocation reaching pollers that poll every few seconds with `If-None-Match` and
//! download whole tables. Prints a markdown table and the goals; with `--out DIR`
//! also writes DIR/fleet.md.

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use certgate_bench::feedserver::{self, Server, TABLE_PATH};
use certgate_bench::fleet::{self, Mode, Outcome, Shared, Tables};
use certgate_bench::pki::Pki;
use certgate_bench::{poll, procstat, tables};
use clap::Parser;
use rustix::process::{Resource, Rlimit};
use tokio::time::Instant;

/// Issue 16's goals.
const GOAL_POLLERS: usize = 10_000;
const GOAL_P99_MS: f64 = 1_000.0;
const GOAL_BYTES_PER_POLLER: f64 = 1_000.0;
/// Connections above the pollers that the server allows (the harness's `/metrics`
/// reads, a poller reconnecting while its old connection is being torn down).
const CONNECTION_HEADROOM: usize = 1_000;
/// File descriptors a process needs besides its connections.
const FD_OVERHEAD: usize = 256;
/// How long the pollers may take to connect and be held (or, plain, to poll once) before
/// the revocation; generous for a loaded 2-core machine.
const SETUP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long `certgate compile` may take to write the revoking table.
const COMPILE_TIMEOUT: Duration = Duration::from_secs(300);
/// How often the harness looks for the new table file (its landing time is at most this
/// late) and for convergence.
const WATCH_EVERY: Duration = Duration::from_millis(1);
/// The serial the simulation revokes (not among the CRL's random serials: their first
/// byte is below 0x80 and this one is 15 bytes).
const REVOKED_SERIAL: &str = "7f:ee:dd:cc:bb:aa:99:88:77:66:55:44:33:22:11";

/// The fleet simulation: N long-polling pollers with deltas against `certgate serve`,
/// one serial revoked with `certgate compile`, beside plain polling with full downloads.
#[derive(Debug, Parser)]
#[command(
    name = "bench-fleet",
    about = "The fleet simulation: N pollers long-polling `certgate serve` with deltas, one serial \
             revoked with `certgate compile`, convergence time and bytes beside plain polling",
    long_about = "Compiles a signed table from a policy whose CRL revokes --serials serials (the \
                  real `certgate compile`), serves it with the real `certgate serve` on loopback \
                  and starts --pollers simulated pollers (tokio tasks, one kept-alive HTTP/1.1 \
                  connection each; they share one copy of the table's bytes and each keeps only \
                  its ETag) that long-poll as the filter does with `feed.longPoll` and deltas: \
                  `If-None-Match`, `Prefer: wait=--wait`, `A-IM: certgate-delta` and \
                  `X-Certgate-Poller`. Once the server holds every poll, one serial is added to \
                  the policy and `certgate compile` writes the new table into the served \
                  directory. From the moment the file lands: the time until each poller holds \
                  the new table (a 226 delta applied with ruleset::delta::apply, or a 200 body, \
                  whose SHA-256 must equal the answer's ETag) as p50/p99/max; the response bytes \
                  the pollers read in total and per poller, beside the server's own \
                  certgate_feed_sent_bytes_total; the server's CPU (user + system) and peak RSS. \
                  Then the baseline in the same run: a fresh server on the first table, \
                  --baseline-pollers pollers polling every --period seconds with If-None-Match \
                  and no A-IM or Prefer (whole tables), and the same revocation compiled again. \
                  The report gives both and the goals of issue 16 as met or not met.",
    after_help = "Convergence is measured from the moment the revoking table file appears in the \
served directory (its inode changes: `certgate compile` renames a complete file into place), so \
the compile's own time is reported apart. The server scans its directory every --scan-ms; that \
interval is part of the convergence time. A poller that does not hold the new table --timeout \
seconds after it landed counts as not converged. Checking is memoised: the first delta of each \
(base, delta) pair is applied and its result hashed; a poller receiving the byte-identical delta \
is checked by comparing bytes, and a whole table is compared byte for byte with the checked copy \
(so two shared cores go to the server, not to 10,000 rebuilds of an 8 MB table). The harness \
raises its soft file-descriptor limit to the hard limit (the server inherits it) and refuses to \
start when the pollers need more.

Examples:
  bench-fleet --certgate target/release/certgate --out docs/bench --pid-file target/bench-fleet.pid
  bench-fleet --certgate target/release/certgate --pollers 1000 --serials 100000 --baseline-pollers 200
  bench-fleet --certgate target/release/certgate --pollers 10000 --no-baseline

Environment: CERTGATE_BIN is the default of --certgate (`make bench-fleet` passes the release \
build).

Exit codes: 0 the simulation ran (goals are reported, not enforced), 1 it failed (the server \
did not start, the pollers were not all held in time, `certgate compile` failed), 2 usage (a bad \
flag, a missing binary, too few file descriptors)."
)]
struct Cli {
    /// The certgate binary, a release build [default: $CERTGATE_BIN]
    #[arg(long, value_name = "PATH")]
    certgate: Option<PathBuf>,
    /// Long-polling pollers
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=200_000))]
    pollers: usize,
    /// Plain pollers of the baseline [default: --pollers]
    #[arg(long, value_name = "N", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=200_000))]
    baseline_pollers: Option<usize>,
    /// Skip the baseline (plain polling with full downloads)
    #[arg(long)]
    no_baseline: bool,
    /// Revoked serials in the table (the CRL's entries)
    #[arg(long, value_name = "N", default_value_t = 1_000_000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=5_000_000))]
    serials: usize,
    /// N of `Prefer: wait=N`, in seconds (the server caps it at 60)
    #[arg(long, value_name = "S", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=60))]
    wait: u64,
    /// The baseline's polling period, in seconds
    #[arg(long, value_name = "S", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    period: u64,
    /// The server's directory scan interval (`certgate serve --poll-ms`), in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    scan_ms: u64,
    /// Seconds after the new table landed by which a poller must hold it
    #[arg(long, value_name = "S", default_value_t = 90, value_parser = clap::value_parser!(u64).range(1..=600))]
    timeout: u64,
    /// Worker threads of the pollers' runtime
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=64))]
    client_threads: usize,
    /// Also write the report to DIR/fleet.md
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Write the server's pid here while it runs (so a wrapper can kill it)
    #[arg(long, value_name = "PATH")]
    pid_file: Option<PathBuf>,
}

/// What one phase measured.
#[derive(Debug)]
struct Phase {
    name: &'static str,
    how: String,
    pollers: usize,
    converged: usize,
    /// Convergence times after landing, ms, sorted.
    times_ms: Vec<f64>,
    bytes_after: u64,
    server_bytes: Option<u64>,
    answers: [u64; 4],
    failures: u64,
    first_failure: Option<String>,
    compile: Duration,
    /// From the compile's start to the last convergence (or the timeout).
    window: Duration,
    cpu: Duration,
    peak_rss: u64,
    table_len: usize,
    new_len: usize,
    timeout: Duration,
}

impl Phase {
    fn q(&self, q: f64) -> f64 {
        fleet::percentile(&self.times_ms, q)
    }
    fn per_poller(&self) -> f64 {
        self.bytes_after as f64 / self.pollers.max(1) as f64
    }
}

/// The scratch directory: the CRL, the policy, the signing key and the first table.
struct Setup {
    bin: PathBuf,
    dir: tempfile::TempDir,
    policy_dir: PathBuf,
    key: PathBuf,
    base: Arc<[u8]>,
}

const POLICY_HEAD: &str = "# Generated by bench-fleet.
apiVersion: certgate.dev/v1alpha1
kind: MeshTLSPolicy
metadata:
  name: fleet
spec:
  defaultAction: deny
  peerCertificate:
    trustDomains: [bench.certgate.test]
  revocation:
    crls: [fleet.crl.der]
    crlIssuers: [ca.pem]
";
const POLICY_RULES: &str = "  rules:
    - name: fleet-clients
      action: allow
      principals: [spiffe://bench.certgate.test/ns/team0/sa/svc0]
";

fn policy(revoke_one: bool) -> String {
    let mut p = POLICY_HEAD.to_string();
    if revoke_one {
        p.push_str(&format!(
            "    serials:\n      - serial: \"{REVOKED_SERIAL}\"\n        issuer: \"{}\"\n",
            tables::CA_DN
        ));
    }
    p.push_str(POLICY_RULES);
    p
}

fn certgate(bin: &Path, args: &[&std::ffi::OsStr]) -> Result<()> {
    let out = Command::new(bin)
        .args(args)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "certgate {:?} failed ({}):\n{}",
            args,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn setup(bin: PathBuf, serials: usize) -> Result<Setup> {
    let dir = tempfile::Builder::new().prefix("bench-fleet").tempdir()?;
    let policy_dir = dir.path().join("policy");
    std::fs::create_dir_all(&policy_dir)?;
    let pki = Pki::new()?;
    let crl = pki.crl_der(tables::random_serials(serials, 0x5EED))?;
    std::fs::write(policy_dir.join("fleet.crl.der"), &crl)?;
    std::fs::write(policy_dir.join("ca.pem"), pki.ca_pem())?;
    std::fs::write(policy_dir.join("fleet.yaml"), policy(false))?;
    let key = dir.path().join("signing.key");
    certgate(&bin, &["keygen".as_ref(), "-o".as_ref(), key.as_os_str()])?;
    let first = dir.path().join("first.cgt");
    certgate(
        &bin,
        &[
            "compile".as_ref(),
            policy_dir.as_os_str(),
            "-o".as_ref(),
            first.as_os_str(),
            "--sign-key".as_ref(),
            key.as_os_str(),
        ],
    )?;
    let base: Arc<[u8]> = std::fs::read(&first)?.into();
    Ok(Setup {
        bin,
        dir,
        policy_dir,
        key,
        base,
    })
}

/// `GET path` on a new connection, the whole body (`/metrics`).
fn get_text(addr: SocketAddr, path: &str) -> Result<String> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

/// The value of the unlabelled metric `name` (or of `name{label}`).
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Raises the soft limit on open files to the hard one; the soft limit after.
fn raise_fd_limit() -> u64 {
    let current = rustix::process::getrlimit(Resource::Nofile);
    let _ = rustix::process::setrlimit(
        Resource::Nofile,
        Rlimit {
            current: current.maximum,
            maximum: current.maximum,
        },
    );
    rustix::process::getrlimit(Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
}

/// Waits until `file`'s inode differs from `ino`: the moment a rename put a new file there.
fn watch_landing(
    file: PathBuf,
    ino: u64,
    give_up: std::time::Instant,
) -> Option<std::time::Instant> {
    use std::os::unix::fs::MetadataExt as _;
    while std::time::Instant::now() < give_up {
        if let Ok(m) = std::fs::metadata(&file) {
            if m.ino() != ino {
                return Some(std::time::Instant::now());
            }
        }
        std::thread::sleep(WATCH_EVERY);
    }
    None
}

struct Run {
    setup: Setup,
    cli: Cli,
}

impl Run {
    async fn phase(&self, name: &'static str, mode: Mode, n: usize) -> Result<Phase> {
        let s = &self.setup;
        let served = s.dir.path().join(format!("{name}-served"));
        std::fs::create_dir_all(&served)?;
        let table = served.join("table.cgt");
        std::fs::write(&table, &s.base)?;
        let log = s.dir.path().join(format!("{name}-serve.log"));
        let server: Server = feedserver::certgate_with(
            &s.bin,
            &served,
            n + CONNECTION_HEADROOM,
            &log,
            &["--poll-ms".into(), self.cli.scan_ms.to_string()],
        )?;
        if let Some(p) = &self.cli.pid_file {
            std::fs::write(p, server.pid().to_string())?;
        }
        let addr = server.addr;
        // The server must serve the first table before the pollers start.
        let (status, etag, _) = poll::fetch(addr, TABLE_PATH, "").await?;
        let base_etag = Tables::default().add(s.base.clone());
        if status != 200 || etag.as_deref() != Some(base_etag.as_str()) {
            bail!("{name}: the server answers {status} {etag:?}, not the first table {base_etag}");
        }
        let shared = Arc::new(Shared {
            addr,
            path: TABLE_PATH.into(),
            tables: Tables::default(),
            revoking: AtomicBool::new(false),
            started: AtomicU64::new(0),
            converged: AtomicU64::new(0),
        });
        shared.tables.add(s.base.clone());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let start = Instant::now();
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let first = match mode {
                Mode::LongPollDelta { .. } => start,
                Mode::Plain { period } => poll::offset(start, period, i, n),
            };
            handles.push(tokio::spawn(fleet::poller(
                shared.clone(),
                format!("{name}-{i}"),
                base_etag.clone(),
                mode,
                first,
                stop_rx.clone(),
            )));
        }
        // Steady state: every long-poll held by the server; every plain poller has polled
        // once (and holds the first table, so it got 304).
        let setup_deadline = Instant::now() + SETUP_TIMEOUT;
        loop {
            let started = shared.started.load(Ordering::Relaxed) as usize;
            let ready = match mode {
                Mode::LongPollDelta { .. } => {
                    started == n
                        && get_text(addr, "/metrics")
                            .ok()
                            .and_then(|m| metric(&m, "certgate_feed_polls_held"))
                            .is_some_and(|h| h as usize >= n)
                }
                Mode::Plain { period } => started == n && start.elapsed() > period,
            };
            if ready {
                break;
            }
            if Instant::now() > setup_deadline {
                let _ = stop_tx.send(true);
                bail!(
                    "{name}: only {started} of {n} pollers started (and were held) within {SETUP_TIMEOUT:?}:\n{}",
                    server.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let before = get_text(addr, "/metrics")?;
        let cpu0 = procstat::cpu_time(server.pid())?;
        shared.revoking.store(true, Ordering::Release);
        let began = Instant::now();

        // The revocation: one serial more in the policy, compiled into the served directory.
        std::fs::write(s.policy_dir.join("fleet.yaml"), policy(true))?;
        let ino = {
            use std::os::unix::fs::MetadataExt as _;
            std::fs::metadata(&table)?.ino()
        };
        let give_up = std::time::Instant::now() + COMPILE_TIMEOUT;
        let watcher = std::thread::spawn({
            let table = table.clone();
            move || watch_landing(table, ino, give_up)
        });
        let compile = {
            let bin = s.bin.clone();
            let args: Vec<std::ffi::OsString> = vec![
                "compile".into(),
                s.policy_dir.clone().into(),
                "-o".into(),
                table.clone().into(),
                "--sign-key".into(),
                s.key.clone().into(),
            ];
            tokio::task::spawn_blocking(move || {
                let a: Vec<&std::ffi::OsStr> = args.iter().map(|x| x.as_os_str()).collect();
                certgate(&bin, &a)
            })
        };
        let compiled = compile.await?;
        let compile_took = began.elapsed();
        // Back to the first policy for the next phase.
        std::fs::write(s.policy_dir.join("fleet.yaml"), policy(false))?;
        if let Err(e) = compiled {
            let _ = stop_tx.send(true);
            return Err(e);
        }
        let landed = watcher
            .join()
            .map_err(|_| anyhow::anyhow!("the watcher panicked"))?
            .context("the compiled table never landed")?;
        let landed = Instant::from_std(landed);
        let new_len = std::fs::metadata(&table)?.len() as usize;

        let deadline = landed + Duration::from_secs(self.cli.timeout);
        while (shared.converged.load(Ordering::Relaxed) as usize) < n && Instant::now() < deadline {
            tokio::time::sleep(WATCH_EVERY).await;
        }
        let window = began.elapsed();
        let cpu1 = procstat::cpu_time(server.pid())?;
        let after = get_text(addr, "/metrics")?;
        let peak_rss = procstat::peak_rss(server.pid())?;
        let _ = stop_tx.send(true);
        let mut outcomes: Vec<Outcome> = Vec::with_capacity(n);
        for h in handles {
            outcomes.push(h.await?);
        }
        drop(server);

        let mut times_ms: Vec<f64> = outcomes
            .iter()
            .filter_map(|o| o.converged_at)
            .map(|t| t.saturating_duration_since(landed).as_secs_f64() * 1e3)
            .collect();
        times_ms.sort_by(f64::total_cmp);
        let mut answers = [0u64; 4];
        for o in &outcomes {
            for (a, b) in answers.iter_mut().zip(o.answers) {
                *a += b;
            }
        }
        let server_bytes = match (
            metric(&before, "certgate_feed_sent_bytes_total"),
            metric(&after, "certgate_feed_sent_bytes_total"),
        ) {
            (Some(b), Some(a)) => Some((a - b).max(0.0) as u64),
            _ => None,
        };
        let how = match mode {
            Mode::LongPollDelta { wait } => format!(
                "long-poll (`Prefer: wait={}`) + deltas (`A-IM: certgate-delta`)",
                wait.as_secs()
            ),
            Mode::Plain { period } => {
                format!("plain polling every {} s, full downloads", period.as_secs())
            }
        };
        Ok(Phase {
            name,
            how,
            pollers: n,
            converged: times_ms.len(),
            times_ms,
            bytes_after: outcomes.iter().map(|o| o.bytes_after).sum(),
            server_bytes,
            answers,
            failures: outcomes.iter().map(|o| o.failures).sum(),
            first_failure: outcomes.iter().find_map(|o| o.first_failure.clone()),
            compile: compile_took,
            window,
            cpu: cpu1.saturating_sub(cpu0),
            peak_rss,
            table_len: s.base.len(),
            new_len,
            timeout: Duration::from_secs(self.cli.timeout),
        })
    }
}

fn ms(x: f64) -> String {
    if x.is_nan() {
        "–".into()
    } else if x < 10.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.0}")
    }
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn mb(b: f64) -> String {
    if b >= 1e9 {
        format!("{:.1} GB", b / 1e9)
    } else {
        format!("{:.1} MB", b / 1e6)
    }
}

fn bytes(b: f64) -> String {
    if b >= 1e6 {
        mb(b)
    } else {
        format!("{} B", thousands(b.round() as u64))
    }
}

fn utc_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn machine() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = info
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = info.lines().filter(|l| l.starts_with("processor")).count();
    format!("{cores} × {cpu}")
}

fn row(p: &Phase) -> String {
    let server = p.server_bytes.map_or("–".into(), |b| bytes(b as f64));
    format!(
        "| {} | {} | {} of {} | {} | {} | {} | {} | {} | {} | {:.2} s ({:.0} % of one core over {:.1} s) | {} |",
        p.name,
        p.how,
        thousands(p.converged as u64),
        thousands(p.pollers as u64),
        ms(p.q(0.5)),
        ms(p.q(0.99)),
        ms(p.times_ms.last().copied().unwrap_or(f64::NAN)),
        bytes(p.bytes_after as f64),
        bytes(p.per_poller()),
        server,
        p.cpu.as_secs_f64(),
        100.0 * p.cpu.as_secs_f64() / p.window.as_secs_f64().max(1e-9),
        p.window.as_secs_f64(),
        mb(p.peak_rss as f64),
    )
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "not met"
    }
}

fn markdown(phases: &[Phase], header: &str) -> String {
    let mut md = String::from("# Fleet simulation\n\n");
    md.push_str(header);
    md.push_str("\n| phase | how | converged | p50 ms | p99 ms | max ms | bytes read (pollers) | per poller | sent (server's /metrics) | server CPU | server peak RSS |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for p in phases {
        md.push_str(&row(p));
        md.push('\n');
    }
    md.push_str("\nAnswers and failures: ");
    let parts: Vec<String> = phases
        .iter()
        .map(|p| {
            format!(
                "{}: {} × 200, {} × 226, {} × 304, {} other; {} failed polls{}; the compile took {:.2} s, table {} → {} bytes",
                p.name,
                p.answers[0],
                p.answers[1],
                p.answers[2],
                p.answers[3],
                p.failures,
                p.first_failure
                    .as_ref()
                    .map_or(String::new(), |f| format!(" (first: {f})")),
                p.compile.as_secs_f64(),
                thousands(p.table_len as u64),
                thousands(p.new_len as u64),
            )
        })
        .collect();
    md.push_str(&parts.join(". "));
    md.push_str(".\n");
    for p in phases.iter().filter(|p| p.converged < p.pollers) {
        md.push_str(&format!(
            "\n{}: {} of {} pollers did not hold the new table {} s after it landed (`--timeout`); \
their bytes above are what they had read by then. All {} pollers downloading the whole new \
table once would read {} × {} B = {} (arithmetic, not measured).\n",
            p.name,
            thousands((p.pollers - p.converged) as u64),
            thousands(p.pollers as u64),
            p.timeout.as_secs(),
            thousands(p.pollers as u64),
            thousands(p.pollers as u64),
            thousands(p.new_len as u64),
            mb(p.pollers as f64 * p.new_len as f64),
        ));
    }
    md.push_str("\n## Goals (issue 16)\n\n| goal | measured | |\n|---|---|---|\n");
    if let Some(lp) = phases.iter().find(|p| p.name == "long-poll") {
        let all = lp.converged == lp.pollers;
        md.push_str(&format!(
            "| {} pollers converged within {} ms (p99) of the table landing | {} pollers, {} converged, p99 {} ms | {} |\n",
            thousands(GOAL_POLLERS as u64),
            GOAL_P99_MS,
            thousands(lp.pollers as u64),
            thousands(lp.converged as u64),
            ms(lp.q(0.99)),
            if lp.pollers < GOAL_POLLERS {
                "not met (fewer pollers than the goal)"
            } else {
                met(all && lp.q(0.99) <= GOAL_P99_MS)
            }
        ));
        md.push_str(&format!(
            "| at most {} B per poller for a one-serial revocation | {} per poller | {} |\n",
            GOAL_BYTES_PER_POLLER,
            bytes(lp.per_poller()),
            met(all && lp.per_poller() <= GOAL_BYTES_PER_POLLER)
        ));
        if let Some(b) = phases.iter().find(|p| p.name == "baseline") {
            md.push_str(&format!(
                "| the full-download baseline's bytes beside it | {} per poller ({} in all), {:.0}× the delta's | reported |\n",
                bytes(b.per_poller()),
                bytes(b.bytes_after as f64),
                b.per_poller() / lp.per_poller().max(1.0)
            ));
        }
    }
    md
}

async fn run(cli: Cli) -> Result<()> {
    let began = Instant::now();
    let bin = cli.certgate.clone().context("no certgate binary")?;
    let fd_soft = raise_fd_limit();
    let most = cli.pollers.max(cli.baseline_pollers.unwrap_or(cli.pollers));
    // Each process (the pollers' and the server, which inherits the limit) holds one end
    // of every connection.
    if fd_soft < (most + CONNECTION_HEADROOM + FD_OVERHEAD) as u64 {
        eprintln!(
            "bench-fleet: {most} pollers need about {} open files per process but the limit is {fd_soft} (raise `ulimit -Hn`)",
            most + CONNECTION_HEADROOM + FD_OVERHEAD
        );
        std::process::exit(2);
    }
    let load_before = procstat::load_average();
    eprintln!(
        "bench-fleet: compiling a table of {} revoked serials",
        thousands(cli.serials as u64)
    );
    let setup = tokio::task::spawn_blocking({
        let serials = cli.serials;
        move || setup(bin, serials)
    })
    .await??;
    let run = Run { setup, cli };
    let mut phases = Vec::new();
    let wait = Duration::from_secs(run.cli.wait);
    eprintln!(
        "bench-fleet: long-poll + deltas, {} pollers",
        run.cli.pollers
    );
    phases.push(
        run.phase("long-poll", Mode::LongPollDelta { wait }, run.cli.pollers)
            .await?,
    );
    if !run.cli.no_baseline {
        let n = run.cli.baseline_pollers.unwrap_or(run.cli.pollers);
        let period = Duration::from_secs(run.cli.period);
        eprintln!("bench-fleet: baseline, {n} plain pollers every {period:?}");
        phases.push(run.phase("baseline", Mode::Plain { period }, n).await?);
    }
    let header = format!(
        "Run {} on {}; load average {} before, {} after; {:.0} s in all. One signed table \
compiled by `certgate compile` from a policy whose CRL revokes {} serials ({} bytes), served by \
`certgate serve --poll-ms {}` (release build) on loopback; then one serial added to the policy \
and compiled again into the served directory. Convergence is timed from the moment the new file \
landed; a poller holds the new table once a 226 delta applied to its table, or a 200 body, \
hashes to the answer's ETag (checks memoised, see `bench-fleet --help`). Bytes are the response \
bytes (heads and bodies) the pollers read from the compile's start until they converged; CPU is \
the server's user + system time over the same window. Pollers: {} tokio tasks on {} threads, one \
kept-alive connection each, in the same process; server and pollers share the machine. Made by \
`{}`.\n",
        utc_now(),
        machine(),
        load_before,
        procstat::load_average(),
        began.elapsed().as_secs_f64(),
        thousands(run.cli.serials as u64),
        thousands(run.setup.base.len() as u64),
        run.cli.scan_ms,
        thousands(run.cli.pollers as u64),
        run.cli.client_threads,
        command_line(),
    );
    let md = markdown(&phases, &header);
    println!("{md}");
    if let Some(out) = &run.cli.out {
        std::fs::create_dir_all(out)?;
        std::fs::write(out.join("fleet.md"), &md)?;
        eprintln!("bench-fleet: wrote {}", out.join("fleet.md").display());
    }
    Ok(())
}

/// The command line that made the report, without this machine's paths.
fn command_line() -> String {
    let mut parts = vec!["bench-fleet".to_string()];
    let mut skip = false;
    for a in std::env::args().skip(1) {
        if skip {
            skip = false;
            continue;
        }
        if ["--certgate", "--out", "--pid-file"].contains(&a.as_str()) {
            skip = true;
            continue;
        }
        if a.starts_with("--certgate=") || a.starts_with("--out=") || a.starts_with("--pid-file=") {
            continue;
        }
        parts.push(a);
    }
    parts.join(" ")
}

fn main() {
    let mut cli = Cli::parse();
    if cli.certgate.is_none() {
        cli.certgate = std::env::var_os("CERTGATE_BIN").map(PathBuf::from);
    }
    match &cli.certgate {
        Some(b) if b.is_file() => {}
        Some(b) => {
            eprintln!("bench-fleet: no certgate binary at {}", b.display());
            std::process::exit(2);
        }
        None => {
            eprintln!("bench-fleet: name the certgate binary with --certgate or CERTGATE_BIN");
            std::process::exit(2);
        }
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.client_threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench-fleet: {e}");
            std::process::exit(2);
        }
    };
    // The server lives inside `run`'s future: finishing, failing or being interrupted all
    // drop it, and dropping it stops it.
    let result = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = run(cli) => r,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
            _ = term.recv() => bail!("terminated"),
        }
    });
    if let Err(e) = result {
        eprintln!("bench-fleet: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_read_by_name() {
        let m = "# HELP x\ncertgate_feed_sent_bytes_total 1234\ncertgate_feed_polls_held 7\n";
        assert_eq!(metric(m, "certgate_feed_sent_bytes_total"), Some(1234.0));
        assert_eq!(metric(m, "certgate_feed_polls_held"), Some(7.0));
        assert_eq!(metric(m, "certgate_feed_polls"), None);
    }

    #[test]
    fn the_revoking_policy_differs_by_one_serial() {
        let a = policy(false);
        let b = policy(true);
        assert!(!a.contains(REVOKED_SERIAL));
        assert!(b.contains(REVOKED_SERIAL) && b.contains(tables::CA_DN));
        assert_eq!(b.lines().count(), a.lines().count() + 3);
    }

    #[test]
    fn help_is_complete() {
        use clap::CommandFactory as _;
        let help = Cli::command().render_long_help().to_string();
        for want in [
            "Examples:",
            "Exit codes:",
            "--pollers",
            "--baseline-pollers",
            "--wait",
        ] {
            assert!(help.contains(want), "{want}");
        }
    }
}
