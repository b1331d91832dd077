//! `make bench-feed`: the live table feed under a fleet's load. Starts `certgate serve`
//! (the real binary) on loopback over a directory holding a realistic table, and N
//! pollers that behave like a fleet's proxy workers (one kept-alive HTTP/1.1 connection
//! each, one `If-None-Match` poll per second, spread evenly over the second). For each N:
//! poll latency p50/p99, server CPU (user + system over the measured window, % of one core),
//! peak RSS and failed polls. Then the attack case: idle connections held open and request
//! heads trickled a byte at a time while legitimate pollers run. Every phase runs again
//! against nginx serving the same table as a static file with `etag on`, the baseline a
//! user would reach for, and the report gives certgate's figures beside nginx's and as
//! ratios. Prints markdown tables and the goals; with `--out DIR` also writes
//! DIR/feed.md.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use certgate_bench::feedserver::{self, Kind, NginxSettings, Server, TABLE_PATH};
use certgate_bench::poll::{self, AttackTally, PollTally, Schedule};
use certgate_bench::procstat;
use certgate_bench::tables::{self, RuleKind};
use clap::Parser;
use rustix::process::{Resource, Rlimit};
use tokio::time::Instant;

/// certgate serve's worker threads; nginx gets as many worker processes unless
/// `--nginx-workers` says otherwise.
const SERVER_THREADS: usize = certgate_server::WORKER_THREADS;
/// certgate serve's default `--max-connections`, raised only when a phase needs more.
const CERTGATE_DEFAULT_MAX_CONNECTIONS: usize = certgate_server::DEFAULT_MAX_CONNECTIONS;
/// Connections above a phase's clients that the servers allow (the harness's own probes,
/// a poller reconnecting while its old connection is still being torn down).
const CONNECTION_HEADROOM: usize = 1_000;
/// File descriptors a process needs besides its connections (binaries, logs, epoll,
/// the table, the runtime's pipes).
const FD_OVERHEAD: usize = 256;
/// Time between the attack's start and the first legitimate poll, so the idle
/// connections are all held before the measured pollers begin.
const ATTACK_LEAD: Duration = Duration::from_secs(2);
/// Keep-alive idle and request-head deadline of both servers (certgate's default
/// `--header-timeout-ms`; nginx is configured to match).
const HEADER_TIMEOUT: Duration = certgate_server::DEFAULT_HEADER_TIMEOUT;
/// Requests per connection of both servers (certgate's default
/// `--max-requests-per-connection`; nginx is configured to match).
const MAX_REQUESTS: u32 = certgate_server::DEFAULT_MAX_REQUESTS_PER_CONNECTION;
/// Issue 15's goals for 10,000 pollers.
const GOAL_POLLERS: usize = 10_000;
const GOAL_P99_MS: f64 = 50.0;
const GOAL_RSS_BYTES: u64 = 200 * 1_000_000;

/// The live table feed (`certgate serve`) under a fleet's keep-alive pollers and an
/// idle-connection attack, beside nginx serving the same table.
#[derive(Debug, Parser)]
#[command(
    name = "bench-feed",
    about = "The live table feed under a fleet's load: `certgate serve` beside nginx, with N \
             keep-alive pollers and an idle-connection attack",
    long_about = "Starts `certgate serve` (the real binary) on loopback over a directory holding a \
                  table of --rules rules and --serials revoked serials, and N pollers that poll \
                  as a fleet's proxy workers do: one kept-alive HTTP/1.1 connection each, a GET \
                  with If-None-Match every --period-ms, spread evenly over the period. For each N \
                  of --pollers: poll latency p50/p99/max (first byte written to last byte read), \
                  server CPU (user + system over the measured window, % of one core), peak RSS \
                  (VmHWM) and failed polls. Then the attack case: --idle connections opened and \
                  never written to, --slow clients trickling request heads, both reconnecting \
                  whenever the server drops them, while --attack-pollers legitimate pollers run. \
                  Every phase runs again against nginx serving the same file with `etag on`, in \
                  the same run; the report gives certgate's figures beside nginx's and as ratios, \
                  and the goals of issue 15 as met or missed. `make bench-feed` builds what it \
                  needs and runs it.",
    after_help = "Each phase starts a fresh server (so its peak RSS is its own), fetches the table \
once to learn its ETag (the pollers start in a fleet's steady state, where every proxy holds the \
table and gets 304), runs --warmup seconds, then measures --seconds. The harness raises its soft \
file-descriptor limit to the hard limit (the servers inherit it); a phase that needs more \
descriptors than the hard limit allows is skipped and reported as such. certgate serve gets \
--max-connections only when a phase needs more than its default of 10,000.

Examples:
  bench-feed --certgate target/release/certgate --out docs/bench --pid-file target/bench-feed.pid
  bench-feed --certgate target/release/certgate --pollers 1000 --seconds 5 --warmup 2 --attack-pollers 0
  bench-feed --certgate target/release/certgate --no-nginx --pollers 10000 --idle 0 --slow 0

Environment: CERTGATE_BIN and CERTGATE_NGINX are the defaults of --certgate and --nginx (the \
Makefile sets CERTGATE_NGINX; `make bench-feed` passes the release build as --certgate).

Exit codes: 0 the benchmark ran (the goals are reported, not enforced; skipped phases are \
reported), 1 it failed (a server did not start or did not serve the table), 2 usage (a bad flag, \
or a missing binary)."
)]
struct Cli {
    /// The certgate binary, a release build [default: $CERTGATE_BIN]
    #[arg(long, value_name = "PATH")]
    certgate: Option<PathBuf>,
    /// The nginx binary [default: $CERTGATE_NGINX, else /usr/sbin/nginx]
    #[arg(long, value_name = "PATH")]
    nginx: Option<PathBuf>,
    /// Measure certgate only (no baseline, so no ratios)
    #[arg(long)]
    no_nginx: bool,
    /// Poller counts of the steady phases, comma-separated
    #[arg(long, value_name = "N,N", value_delimiter = ',', default_values_t = [1_000usize, 5_000, 10_000])]
    pollers: Vec<usize>,
    /// Measured seconds of each phase
    #[arg(long, value_name = "S", default_value_t = 20.0)]
    seconds: f64,
    /// Seconds of polling before each measured window
    #[arg(long, value_name = "S", default_value_t = 5.0)]
    warmup: f64,
    /// Milliseconds between two polls of one poller
    #[arg(long, value_name = "MS", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    period_ms: u64,
    /// Legitimate pollers of the attack phase (0: no attack phase)
    #[arg(long, value_name = "N", default_value_t = 1_000)]
    attack_pollers: usize,
    /// Idle connections the attack holds (opened, never written to)
    #[arg(long, value_name = "N", default_value_t = 2_000)]
    idle: usize,
    /// Slow clients of the attack, each trickling a request head
    #[arg(long, value_name = "N", default_value_t = 200)]
    slow: usize,
    /// Milliseconds between two bytes of a slow client's head
    #[arg(long, value_name = "MS", default_value_t = 250, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    trickle_ms: u64,
    /// Revoked serials in the table
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    serials: usize,
    /// Exact-identity allow rules in the table
    #[arg(long, value_name = "N", default_value_t = 1_000)]
    rules: usize,
    /// Worker threads of the harness's runtime
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    client_threads: u64,
    /// nginx worker processes [default: certgate serve's worker threads]
    #[arg(long, value_name = "N", default_value_t = SERVER_THREADS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=64))]
    nginx_workers: usize,
    /// Also write DIR/feed.md (the tables)
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Write the running server's pid here, so a caller can kill it if this harness dies
    #[arg(long, value_name = "PATH")]
    pid_file: Option<PathBuf>,
}

/// What one phase is.
#[derive(Debug, Clone, Copy)]
struct PhaseSpec {
    kind: Kind,
    pollers: usize,
    idle: usize,
    slow: usize,
}

impl PhaseSpec {
    fn attack(&self) -> bool {
        self.idle + self.slow > 0
    }
    fn clients(&self) -> usize {
        self.pollers + self.idle + self.slow
    }
}

/// What one phase measured.
#[derive(Debug)]
struct Phase {
    spec: PhaseSpec,
    /// Why it did not run, if it did not.
    skipped: Option<String>,
    polls: PollTally,
    /// Polls the schedule asked for in the window.
    scheduled: u64,
    server_cpu: f64,
    harness_cpu: f64,
    rss: u64,
    idle_held: (i64, i64),
    idle_opened: u64,
    idle_closed: u64,
    slow_opened: u64,
    slow_cut: u64,
    slow_completed: u64,
    attack_connect_failed: u64,
    log_lines: usize,
}

impl Phase {
    fn skipped(spec: PhaseSpec, why: String) -> Phase {
        Phase {
            spec,
            skipped: Some(why),
            polls: PollTally::default(),
            scheduled: 0,
            server_cpu: 0.0,
            harness_cpu: 0.0,
            rss: 0,
            idle_held: (0, 0),
            idle_opened: 0,
            idle_closed: 0,
            slow_opened: 0,
            slow_cut: 0,
            slow_completed: 0,
            attack_connect_failed: 0,
            log_lines: 0,
        }
    }

    /// The latency at quantile `q` (0..=1), in milliseconds.
    fn latency_ms(&self, q: f64) -> f64 {
        percentile(&self.polls.latencies_us, q) / 1000.0
    }

    /// Every poll the schedule asked for was sent and answered 200 or 304.
    fn all_answered(&self) -> bool {
        self.skipped.is_none()
            && self.polls.failures() == 0
            && self.polls.late == 0
            && self.polls.answered == self.polls.sent
            && self.polls.sent > 0
    }
}

/// The value at quantile `q` of `sorted` (nearest rank); NaN when empty.
fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64
}

/// The run's settings, checked.
#[derive(Debug)]
struct Args {
    certgate: PathBuf,
    nginx: Option<PathBuf>,
    pollers: Vec<usize>,
    seconds: f64,
    warmup: f64,
    period: Duration,
    attack_pollers: usize,
    idle: usize,
    slow: usize,
    trickle: Duration,
    serials: usize,
    rules: usize,
    client_threads: usize,
    nginx_workers: usize,
    out: Option<PathBuf>,
    pid_file: Option<PathBuf>,
}

fn check_args(cli: Cli) -> Result<Args> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let certgate = cli
        .certgate
        .or_else(|| env("CERTGATE_BIN"))
        .context("no certgate binary: pass --certgate (a release build: `cargo build --release -p certgate-cli`)")?;
    if !certgate.is_file() {
        bail!(
            "--certgate `{}` is not a file (build it: `cargo build --release -p certgate-cli`)",
            certgate.display()
        );
    }
    let nginx = if cli.no_nginx {
        None
    } else {
        let n = cli
            .nginx
            .or_else(|| env("CERTGATE_NGINX"))
            .unwrap_or_else(|| PathBuf::from("/usr/sbin/nginx"));
        if !n.is_file() {
            bail!(
                "--nginx `{}` is not a file (install Debian's nginx: `make nginx`; or pass --no-nginx)",
                n.display()
            );
        }
        Some(n)
    };
    anyhow::ensure!(
        cli.seconds > 0.0 && cli.warmup >= 0.0,
        "--seconds must be positive and --warmup not negative"
    );
    anyhow::ensure!(
        cli.pollers.iter().all(|&n| n > 0),
        "--pollers: every count must be positive"
    );
    Ok(Args {
        certgate: std::fs::canonicalize(&certgate)?,
        nginx: nginx.map(std::fs::canonicalize).transpose()?,
        pollers: cli.pollers,
        seconds: cli.seconds,
        warmup: cli.warmup,
        period: Duration::from_millis(cli.period_ms),
        attack_pollers: cli.attack_pollers,
        idle: cli.idle,
        slow: cli.slow,
        trickle: Duration::from_millis(cli.trickle_ms),
        serials: cli.serials,
        rules: cli.rules,
        client_threads: usize::try_from(cli.client_threads).unwrap_or(2),
        nginx_workers: cli.nginx_workers,
        out: cli.out,
        pid_file: cli.pid_file,
    })
}

/// The soft and hard limits on open files after raising the soft one to the hard one.
fn raise_fd_limit() -> (u64, u64) {
    let current = rustix::process::getrlimit(Resource::Nofile);
    let hard = current.maximum;
    if current.current != hard {
        let _ = rustix::process::setrlimit(
            Resource::Nofile,
            Rlimit {
                current: hard,
                maximum: hard,
            },
        );
    }
    let now = rustix::process::getrlimit(Resource::Nofile);
    // `None` is unlimited.
    (
        now.current.unwrap_or(u64::MAX),
        now.maximum.unwrap_or(u64::MAX),
    )
}

/// The certgate `--max-connections` a phase of `clients` needs (the default unless more).
fn max_connections(clients: usize) -> usize {
    CERTGATE_DEFAULT_MAX_CONNECTIONS.max(clients + CONNECTION_HEADROOM)
}

/// The compiled table both servers serve: `rules` exact-identity allow rules and
/// `serials` revoked serials (the benchmarks' synthetic tables), issued now.
fn table_bytes(rules: usize, serials: usize) -> Result<Vec<u8>> {
    let mut t = tables::table(tables::rules(rules, RuleKind::Exact)?, serials, &[])?;
    t.issued_at_ms = u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(u64::MAX);
    Ok(ruleset::encode(&t)?)
}

struct Run<'a> {
    args: &'a Args,
    scratch: &'a Path,
    table: &'a [u8],
    fd_soft: u64,
}

impl Run<'_> {
    fn start(&self, spec: &PhaseSpec, n: usize) -> Result<Server> {
        let server = match spec.kind {
            Kind::Certgate => {
                let dir = self.scratch.join(format!("certgate-{n}"));
                std::fs::create_dir_all(&dir)?;
                std::fs::write(dir.join("table.cgt"), self.table)?;
                let log = self.scratch.join(format!("certgate-{n}.log"));
                feedserver::certgate(
                    &self.args.certgate,
                    &dir,
                    max_connections(spec.clients()),
                    &log,
                )?
            }
            Kind::Nginx => {
                let Some(bin) = &self.args.nginx else {
                    bail!("no nginx");
                };
                let dir = self.scratch.join(format!("nginx-{n}"));
                std::fs::create_dir_all(&dir)?;
                let settings = NginxSettings {
                    workers: self.args.nginx_workers,
                    connections: max_connections(spec.clients()),
                    header_timeout: HEADER_TIMEOUT,
                    max_requests: MAX_REQUESTS,
                };
                feedserver::nginx(bin, &dir, self.table, self.fd_soft, &settings)?
            }
        };
        if let Some(p) = &self.args.pid_file {
            let pids: Vec<String> = server.pids().iter().map(u32::to_string).collect();
            std::fs::write(p, pids.join(" "))?;
        }
        Ok(server)
    }

    async fn phase(&self, spec: PhaseSpec, n: usize) -> Result<Phase> {
        let needed = (spec.clients() + FD_OVERHEAD) as u64;
        if needed > self.fd_soft {
            let why = format!(
                "needs about {needed} file descriptors; the limit is {} (raise the hard limit: \
                 `ulimit -Hn`, or `nofile` in limits.conf)",
                self.fd_soft
            );
            eprintln!(
                "bench-feed: {} with {} pollers skipped: {why}",
                spec.kind.name(),
                spec.pollers
            );
            return Ok(Phase::skipped(spec, why));
        }
        let server = self.start(&spec, n)?;
        let addr = server.addr;
        // The pollers start where a fleet is most of the time: every proxy holds the table.
        let (status, etag, length) = poll::fetch(addr, TABLE_PATH, "")
            .await
            .with_context(|| format!("{}: fetching the table", spec.kind.name()))?;
        let etag = match (status, etag) {
            (200, Some(e)) if length == self.table.len() => e,
            (s, e) => bail!(
                "{}: the table fetch got status {s}, ETag {e:?}, {length} bytes (want 200, an ETag, {} bytes):\n{}",
                spec.kind.name(),
                self.table.len(),
                server.log_tail()
            ),
        };
        let (status, _, _) = poll::fetch(addr, TABLE_PATH, &etag).await?;
        anyhow::ensure!(
            status == 304,
            "{}: a poll with If-None-Match {etag} got {status}, not 304",
            spec.kind.name()
        );
        let pids = server.pids();

        let args = self.args;
        let begin = Instant::now() + Duration::from_millis(100);
        let pollers_start = if spec.attack() {
            begin + ATTACK_LEAD
        } else {
            begin
        };
        let window_start = pollers_start + Duration::from_secs_f64(args.warmup);
        let end = window_start + Duration::from_secs_f64(args.seconds);

        let attack = Arc::new(AttackTally::default());
        let mut attackers = Vec::new();
        if spec.idle > 0 {
            for _ in 0..spec.idle {
                attackers.push(tokio::spawn(poll::idle(addr, end, attack.clone())));
            }
        }
        if spec.slow > 0 {
            // Long enough that no trickled head is whole before the server's deadline.
            let head_len = usize::try_from(
                (HEADER_TIMEOUT.as_millis() * 3 / args.trickle.as_millis().max(1)).max(64),
            )
            .unwrap_or(4096)
            .min(8 * 1024);
            let head: Arc<[u8]> = poll::long_head(addr, TABLE_PATH, head_len).into();
            for i in 0..spec.slow {
                let start = poll::offset(begin, args.trickle, i, spec.slow);
                let (head, tally, trickle) = (head.clone(), attack.clone(), args.trickle);
                attackers.push(tokio::spawn(async move {
                    tokio::time::sleep_until(start).await;
                    poll::slow(addr, head, trickle, end, tally).await;
                }));
            }
        }
        let request: Arc<[u8]> = poll::request(addr, TABLE_PATH, &etag).into();
        let mut pollers = Vec::with_capacity(spec.pollers);
        let mut scheduled = 0u64;
        for i in 0..spec.pollers {
            let first = poll::offset(pollers_start, args.period, i, spec.pollers);
            let schedule = Schedule {
                first,
                period: args.period,
                window_start,
                end,
            };
            scheduled += ticks_in(&schedule);
            pollers.push(tokio::spawn(poll::poller(addr, request.clone(), schedule)));
        }

        tokio::time::sleep_until(window_start).await;
        let me = std::process::id();
        let (cpu0, me0) = (procstat::cpu_time_all(&pids), procstat::cpu_time(me)?);
        let mut held = (i64::MAX, i64::MIN);
        while Instant::now() + Duration::from_secs(1) < end {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let open = attack.idle_open.load(Ordering::Relaxed);
            held = (held.0.min(open), held.1.max(open));
        }
        tokio::time::sleep_until(end).await;
        let (cpu1, me1) = (procstat::cpu_time_all(&pids), procstat::cpu_time(me)?);
        let window = Duration::from_secs_f64(args.seconds).as_secs_f64();

        let mut polls = PollTally::default();
        for p in pollers {
            polls.merge(p.await?);
        }
        polls.latencies_us.sort_unstable();
        for a in attackers {
            a.await?;
        }
        let rss = procstat::peak_rss_all(&pids);
        let log_lines = server.log_lines();
        drop(server);
        if let Some(p) = &args.pid_file {
            let _ = std::fs::remove_file(p);
        }
        if held.0 > held.1 {
            held = (0, 0);
        }
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        Ok(Phase {
            spec,
            skipped: None,
            polls,
            scheduled,
            server_cpu: (cpu1.saturating_sub(cpu0)).as_secs_f64() / window * 100.0,
            harness_cpu: (me1.saturating_sub(me0)).as_secs_f64() / window * 100.0,
            rss,
            idle_held: held,
            idle_opened: load(&attack.idle_opened),
            idle_closed: load(&attack.idle_closed_by_server),
            slow_opened: load(&attack.slow_opened),
            slow_cut: load(&attack.slow_cut),
            slow_completed: load(&attack.slow_completed),
            attack_connect_failed: load(&attack.connect_failed),
            log_lines,
        })
    }
}

/// Ticks of `s` that fall in its measured window.
fn ticks_in(s: &Schedule) -> u64 {
    let period = s.period.as_nanos().max(1);
    let count_before = |t: Instant| -> u128 {
        // Ticks at first + k·period strictly before t.
        if t <= s.first {
            0
        } else {
            (t - s.first).as_nanos().div_ceil(period)
        }
    };
    u64::try_from(count_before(s.end) - count_before(s.window_start)).unwrap_or(u64::MAX)
}

fn print_phase(p: &Phase) {
    if let Some(why) = &p.skipped {
        eprintln!("  skipped: {why}");
        return;
    }
    eprintln!(
        "  {} polls answered of {} sent ({} scheduled), p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; \
         server CPU {:.1}% of a core, peak RSS {:.1} MB; failed {:?} (warm-up {}), late {}, \
         reconnects {}; harness CPU {:.0}%{}",
        p.polls.answered,
        p.polls.sent,
        p.scheduled,
        p.latency_ms(0.5),
        p.latency_ms(0.99),
        p.latency_ms(1.0),
        p.server_cpu,
        p.rss as f64 / 1e6,
        p.polls.failed,
        p.polls.warmup_failed,
        p.polls.late,
        p.polls.reconnects,
        p.harness_cpu,
        p.polls
            .first_failure
            .as_deref()
            .map(|f| format!("; first failure: {f}"))
            .unwrap_or_default()
    );
    if p.spec.attack() {
        eprintln!(
            "  attack: idle held {}–{}, opened {}, closed by the server {}; slow opened {}, cut {}, \
             whole {}; attacker connects failed {}",
            p.idle_held.0,
            p.idle_held.1,
            p.idle_opened,
            p.idle_closed,
            p.slow_opened,
            p.slow_cut,
            p.slow_completed,
            p.attack_connect_failed
        );
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

fn ms(x: f64) -> String {
    if x.is_nan() {
        "–".into()
    } else if x < 10.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.1}")
    }
}

fn ratio(a: f64, b: f64) -> String {
    if a.is_nan() || b.is_nan() || b == 0.0 {
        "–".into()
    } else {
        format!("{:.2}×", a / b)
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

fn failed_cell(p: &Phase) -> String {
    let [c, b, t, s] = p.polls.failed;
    let mut cell = format!("{} ({c}/{b}/{t}/{s})", p.polls.failures());
    if p.polls.warmup_failed > 0 {
        cell.push_str(&format!(", warm-up {}", p.polls.warmup_failed));
    }
    if p.polls.late > 0 {
        cell.push_str(&format!(", {} late", p.polls.late));
    }
    cell
}

fn markdown(phases: &[Phase], header: &str) -> String {
    let mut out = format!("{header}\n\n");
    out.push_str(
        "| pollers | server | polls answered / sent (scheduled) | p50 ms | p99 ms | max ms | server CPU, % of one core | peak RSS MB | failed polls (connect/broken/timeout/status) | harness CPU |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    let steady: Vec<&Phase> = phases.iter().filter(|p| !p.spec.attack()).collect();
    for n in unique(steady.iter().map(|p| p.spec.pollers)) {
        let rows: Vec<&&Phase> = steady.iter().filter(|p| p.spec.pollers == n).collect();
        for p in &rows {
            out.push_str(&row(p, &thousands(n as u64)));
        }
        if let (Some(c), Some(x)) = (find(&rows, Kind::Certgate), find(&rows, Kind::Nginx)) {
            out.push_str(&ratio_row(c, x));
        }
    }
    let attack: Vec<&Phase> = phases.iter().filter(|p| p.spec.attack()).collect();
    if !attack.is_empty() {
        out.push_str(
            "\n| attack | server | every legitimate poll answered | polls answered / sent (scheduled) | p50 ms | p99 ms | max ms | idle connections held (min–max) | idle closed by the server | slow heads cut / sent whole | server CPU, % of one core | peak RSS MB | failed polls (connect/broken/timeout/status) |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for p in &attack {
            let what = format!(
                "{} idle + {} slow, {} pollers",
                thousands(p.spec.idle as u64),
                thousands(p.spec.slow as u64),
                thousands(p.spec.pollers as u64)
            );
            if let Some(why) = &p.skipped {
                out.push_str(&format!(
                    "| {what} | {} | skipped: {why} |||||||||||\n",
                    p.spec.kind.name()
                ));
                continue;
            }
            out.push_str(&format!(
                "| {what} | {} | {} | {} / {} ({}) | {} | {} | {} | {}–{} | {} | {} / {} | {:.1} | {:.1} | {} |\n",
                p.spec.kind.name(),
                if p.all_answered() { "yes" } else { "**no**" },
                thousands(p.polls.answered),
                thousands(p.polls.sent),
                thousands(p.scheduled),
                ms(p.latency_ms(0.5)),
                ms(p.latency_ms(0.99)),
                ms(p.latency_ms(1.0)),
                thousands(u64::try_from(p.idle_held.0).unwrap_or(0)),
                thousands(u64::try_from(p.idle_held.1).unwrap_or(0)),
                thousands(p.idle_closed),
                thousands(p.slow_cut),
                thousands(p.slow_completed),
                p.server_cpu,
                p.rss as f64 / 1e6,
                failed_cell(p),
            ));
        }
        let rows: Vec<&&Phase> = attack.iter().collect();
        if let (Some(c), Some(x)) = (find(&rows, Kind::Certgate), find(&rows, Kind::Nginx)) {
            if c.skipped.is_none() && x.skipped.is_none() {
                out.push_str(&format!(
                    "| | certgate ÷ nginx | | | {} | {} | {} | | | | {} | {} | |\n",
                    ratio(c.latency_ms(0.5), x.latency_ms(0.5)),
                    ratio(c.latency_ms(0.99), x.latency_ms(0.99)),
                    ratio(c.latency_ms(1.0), x.latency_ms(1.0)),
                    ratio(c.server_cpu, x.server_cpu),
                    ratio(c.rss as f64, x.rss as f64),
                ));
            }
        }
    }
    out.push_str("\n| goal (issue 15) | measured | target | |\n|---|---|---|---|\n");
    for (what, measured, target, met) in goals(phases) {
        let verdict = match met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not measured",
        };
        out.push_str(&format!("| {what} | {measured} | {target} | {verdict} |\n"));
    }
    out
}

fn unique(xs: impl Iterator<Item = usize>) -> Vec<usize> {
    let mut v: Vec<usize> = Vec::new();
    for x in xs {
        if !v.contains(&x) {
            v.push(x);
        }
    }
    v
}

fn find<'a>(rows: &[&&'a Phase], kind: Kind) -> Option<&'a Phase> {
    rows.iter().find(|p| p.spec.kind == kind).map(|p| **p)
}

fn row(p: &Phase, pollers: &str) -> String {
    if let Some(why) = &p.skipped {
        return format!(
            "| {pollers} | {} | skipped: {why} ||||||||\n",
            p.spec.kind.name()
        );
    }
    format!(
        "| {pollers} | {} | {} / {} ({}) | {} | {} | {} | {:.1} | {:.1} | {} | {:.0}% |\n",
        p.spec.kind.name(),
        thousands(p.polls.answered),
        thousands(p.polls.sent),
        thousands(p.scheduled),
        ms(p.latency_ms(0.5)),
        ms(p.latency_ms(0.99)),
        ms(p.latency_ms(1.0)),
        p.server_cpu,
        p.rss as f64 / 1e6,
        failed_cell(p),
        p.harness_cpu,
    )
}

fn ratio_row(c: &Phase, x: &Phase) -> String {
    if c.skipped.is_some() || x.skipped.is_some() {
        return String::new();
    }
    format!(
        "| | certgate ÷ nginx | | {} | {} | {} | {} | {} | | |\n",
        ratio(c.latency_ms(0.5), x.latency_ms(0.5)),
        ratio(c.latency_ms(0.99), x.latency_ms(0.99)),
        ratio(c.latency_ms(1.0), x.latency_ms(1.0)),
        ratio(c.server_cpu, x.server_cpu),
        ratio(c.rss as f64, x.rss as f64),
    )
}

type GoalRow = (String, String, String, Option<bool>);

fn goals(phases: &[Phase]) -> Vec<GoalRow> {
    let measured = |kind: Kind, attack: bool, pollers: usize| {
        phases.iter().find(|p| {
            p.spec.kind == kind
                && p.spec.attack() == attack
                && p.spec.pollers == pollers
                && p.skipped.is_none()
        })
    };
    let nginx_note = |x: Option<&Phase>, f: &dyn Fn(&Phase) -> String| {
        x.map(|x| format!("; nginx {}", f(x))).unwrap_or_default()
    };
    let mut goals = Vec::new();
    let c = measured(Kind::Certgate, false, GOAL_POLLERS);
    let x = measured(Kind::Nginx, false, GOAL_POLLERS);
    goals.push(match c {
        Some(c) => (
            "10,000 pollers at one poll per second each, p99".to_string(),
            format!(
                "p99 {} ms; {} of {} scheduled polls answered, {} failed, {} late{}",
                ms(c.latency_ms(0.99)),
                thousands(c.polls.answered),
                thousands(c.scheduled),
                c.polls.failures(),
                c.polls.late,
                nginx_note(x, &|x| format!(
                    "p99 {} ms, {} answered",
                    ms(x.latency_ms(0.99)),
                    thousands(x.polls.answered)
                ))
            ),
            "p99 < 50 ms, every poll answered".to_string(),
            Some(c.latency_ms(0.99) < GOAL_P99_MS && c.all_answered()),
        ),
        None => (
            "10,000 pollers at one poll per second each, p99".into(),
            "not run".into(),
            "p99 < 50 ms, every poll answered".into(),
            None,
        ),
    });
    goals.push(match c {
        Some(c) => (
            "10,000 pollers, server peak RSS".to_string(),
            format!(
                "{:.1} MB{}",
                c.rss as f64 / 1e6,
                nginx_note(x, &|x| format!(
                    "{:.1} MB (master and workers)",
                    x.rss as f64 / 1e6
                ))
            ),
            "< 200 MB".to_string(),
            Some(c.rss < GOAL_RSS_BYTES),
        ),
        None => (
            "10,000 pollers, server peak RSS".into(),
            "not run".into(),
            "< 200 MB".into(),
            None,
        ),
    });
    let attacked = phases
        .iter()
        .find(|p| p.spec.kind == Kind::Certgate && p.spec.attack() && p.skipped.is_none());
    let xa = phases
        .iter()
        .find(|p| p.spec.kind == Kind::Nginx && p.spec.attack() && p.skipped.is_none());
    goals.push(match attacked {
        Some(c) => (
            format!(
                "no refused legitimate poll while {} idle connections are held",
                thousands(c.spec.idle as u64)
            ),
            format!(
                "{} of {} polls failed, {} late (p99 {} ms){}",
                c.polls.failures(),
                thousands(c.polls.sent),
                c.polls.late,
                ms(c.latency_ms(0.99)),
                nginx_note(xa, &|x| format!(
                    "{} failed, {} late (p99 {} ms)",
                    x.polls.failures(),
                    x.polls.late,
                    ms(x.latency_ms(0.99))
                ))
            ),
            "none refused".to_string(),
            Some(c.all_answered()),
        ),
        None => (
            "no refused legitimate poll under the idle-connection attack".into(),
            "not run".into(),
            "none refused".into(),
            None,
        ),
    });
    goals
}

async fn run(args: Args) -> Result<()> {
    let started = std::time::Instant::now();
    let (fd_soft, fd_hard) = raise_fd_limit();
    eprintln!("bench-feed: file descriptors: soft limit {fd_soft}, hard limit {fd_hard}");
    let scratch = tempfile::Builder::new()
        .prefix("certgate-bench-feed-")
        .tempdir()
        .context("creating the scratch directory")?;
    // nginx runs as `nobody` when this runs as root: it must get through to its own directory.
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o755))?;
    }
    let table = table_bytes(args.rules, args.serials)?;
    eprintln!(
        "bench-feed: table of {} bytes ({} rules, {} revoked serials)",
        table.len(),
        args.rules,
        args.serials
    );
    let load_before = procstat::load_average();
    let kinds: Vec<Kind> = if args.nginx.is_some() {
        vec![Kind::Certgate, Kind::Nginx]
    } else {
        vec![Kind::Certgate]
    };
    let mut specs = Vec::new();
    for &n in &args.pollers {
        for &kind in &kinds {
            specs.push(PhaseSpec {
                kind,
                pollers: n,
                idle: 0,
                slow: 0,
            });
        }
    }
    if args.attack_pollers > 0 {
        for &kind in &kinds {
            specs.push(PhaseSpec {
                kind,
                pollers: args.attack_pollers,
                idle: args.idle,
                slow: args.slow,
            });
        }
    }
    let run = Run {
        args: &args,
        scratch: scratch.path(),
        table: &table,
        fd_soft,
    };
    let mut phases = Vec::new();
    for (i, spec) in specs.into_iter().enumerate() {
        eprintln!(
            "bench-feed: {} with {} pollers{}",
            spec.kind.name(),
            spec.pollers,
            if spec.attack() {
                format!(", {} idle and {} slow connections", spec.idle, spec.slow)
            } else {
                String::new()
            }
        );
        let p = run.phase(spec, i).await?;
        print_phase(&p);
        phases.push(p);
    }
    let load_after = procstat::load_average();
    let max_conns: Vec<usize> = phases
        .iter()
        .filter(|p| p.spec.kind == Kind::Certgate && p.skipped.is_none())
        .map(|p| max_connections(p.spec.clients()))
        .filter(|&m| m != CERTGATE_DEFAULT_MAX_CONNECTIONS)
        .collect();
    let certgate_logs: usize = phases
        .iter()
        .filter(|p| p.spec.kind == Kind::Certgate)
        .map(|p| p.log_lines)
        .sum();
    let nginx = match &args.nginx {
        Some(bin) => format!(
            "nginx {} ({} worker processes, `etag on`, `sendfile on`, no access log, keep-alive \
             and request-head timeouts {} s and {} requests per connection as certgate's defaults, \
             run as {})",
            feedserver::nginx_version(bin).unwrap_or_else(|| "unknown".into()),
            args.nginx_workers,
            HEADER_TIMEOUT.as_secs(),
            thousands(u64::from(MAX_REQUESTS)),
            if rustix::process::geteuid().is_root() {
                "`nobody`"
            } else {
                "the invoking user"
            }
        ),
        None => "no nginx baseline (--no-nginx)".into(),
    };
    let header = format!(
        "Measured {} on {}; load average {} at the start and {} at the end (the machine is shared: \
         other builds and tests ran during the run). Table: {} bytes ({} rules, {} revoked serials), \
         the same file for both servers. `certgate serve` (release build, {} worker threads, limits \
         at their defaults{}; {} lines in its logs over the run) beside {}. Each poller holds one \
         kept-alive HTTP/1.1 connection and sends `GET` with `If-None-Match` (the table's ETag) \
         every {} ms, the pollers' first polls spread evenly over the first period; {} s warm-up, \
         then {} s measured. Latency: from a request's first byte written to its response's last \
         byte read. A failed poll: the connection could not be opened, broke before a whole answer, \
         gave none within {} s, or a status other than 200/304. The harness runs on a {}-thread \
         tokio runtime, unpinned, on the same cores as the server (its CPU is in the last column); \
         file descriptors: soft limit {}, hard limit {}. In the attack, idle connections are opened \
         and never written to and slow clients send a request head one byte every {} ms; both open \
         a new connection whenever the server drops one. Run took {:.0} s.",
        utc_now(),
        machine(),
        load_before,
        load_after,
        table.len(),
        thousands(args.rules as u64),
        thousands(args.serials as u64),
        SERVER_THREADS,
        if max_conns.is_empty() {
            String::new()
        } else {
            format!(
                " except `--max-connections {}` (the default, {}, would leave no room for a poller reconnecting while the server still holds its old connection)",
                max_conns.iter().max().copied().unwrap_or_default(),
                thousands(CERTGATE_DEFAULT_MAX_CONNECTIONS as u64)
            )
        },
        certgate_logs,
        nginx,
        args.period.as_millis(),
        args.warmup,
        args.seconds,
        poll::POLL_TIMEOUT.as_secs(),
        args.client_threads,
        fd_soft,
        fd_hard,
        args.trickle.as_millis(),
        started.elapsed().as_secs_f64()
    );
    let md = markdown(&phases, &header);
    println!("{md}");
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out)?;
        std::fs::write(out.join("feed.md"), &md)?;
        eprintln!("bench-feed: wrote {}", out.join("feed.md").display());
    }
    Ok(())
}

fn main() {
    let args = match check_args(Cli::parse()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench-feed: {e:#}");
            std::process::exit(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench-feed: {e}");
            std::process::exit(2);
        }
    };
    // The servers live inside `run`'s future: finishing, failing or being interrupted all
    // drop them, and dropping one stops it.
    let result = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = run(args) => r,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
            _ = term.recv() => bail!("terminated"),
        }
    });
    if let Err(e) = result {
        eprintln!("bench-feed: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn ticks_in_the_window_count_each_poller_once_per_period() {
        let t = Instant::now();
        let s = Schedule {
            first: t + Duration::from_millis(300),
            period: Duration::from_secs(1),
            window_start: t + Duration::from_secs(5),
            end: t + Duration::from_secs(25),
        };
        // Ticks at 5.3, 6.3, ..., 24.3: twenty of them.
        assert_eq!(ticks_in(&s), 20);
    }

    #[test]
    fn max_connections_rises_only_above_the_default() {
        assert_eq!(max_connections(3_200), CERTGATE_DEFAULT_MAX_CONNECTIONS);
        assert_eq!(max_connections(10_000), 11_000);
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(123_456_789), "123,456,789");
    }
}
