//! `make bench-envoy`: Envoy CPU per new mTLS connection and connections/s for no filter,
//! a no-op wasm filter, native RBAC (list and exact-match map) and certgate (warm
//! cache, cold cache, audit record on every connection), plus HTTP requests/s on
//! kept-alive connections, in interleaved rounds against one Envoy pinned to one core,
//! with the load generator on the other. Prints markdown tables and the goals; with
//! `--out DIR` also writes DIR/envoy.md and DIR/envoy.png. With `--profile S`, the
//! wasm cases then run again in interleaved rounds of S seconds under `perf`, which
//! tells the filter's share of Envoy's CPU (wasm code and the host calls it makes)
//! from the rest.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use certgate_bench::envoy::{self, Envoy, Listener, Terminal};
use certgate_bench::load::{self, Protocol, Tally};
use certgate_bench::pki::{self, Pki};
use certgate_bench::profile::{self, Split};
use certgate_bench::report::{self, CaseResult, Goal, Sample};
use certgate_bench::tables::{self, RuleKind};
use clap::Parser;
use rustls::ClientConfig;

/// Identities in every policy (certgate rules, RBAC principals, RBAC map keys).
const IDENTITIES: usize = 1_000;
/// Revoked serials in certgate's table.
const REVOKED: usize = 1_000_000;
/// Distinct client certificates of the warm pool (well under the filter's cache size).
const WARM_CERTS: usize = 64;
/// Distinct client certificates of the cold pool: 16 times the filter's 1,024-entry
/// first-in first-out cache, so cycling through them never finds one cached.
const COLD_CERTS: usize = 16_384;
/// The filter's `certCacheSize` in every certgate case.
const FILTER_MAX_BYTES: u64 = 409_600;

/// Envoy CPU per mTLS connection and connections/s: certgate against no filter, a no-op
/// wasm filter and native RBAC, in interleaved rounds on pinned cores.
#[derive(Debug, Parser)]
#[command(
    name = "bench-envoy",
    about = "Envoy CPU per new mTLS connection and connections/s: certgate against no filter, \
             a no-op wasm filter and native RBAC, in interleaved rounds",
    long_about = "Envoy CPU per new mTLS connection and connections/s for no filter, a no-op \
                  wasm filter, native RBAC (list and exact-match map) and certgate (warm cache, \
                  cold cache, audit record on every connection), plus HTTP requests/s on \
                  kept-alive connections, in interleaved rounds against one Envoy pinned to one \
                  core, with the load generator on the other. Prints markdown tables and the \
                  goals. `make bench-envoy` builds what it needs and runs it.",
    after_help = "Cases (--only): a no filter, w no-op wasm filter, wd no-op wasm filter reading \
the cert digest, r1 RBAC principals list, r2 RBAC matcher map, c certgate warm, d certgate cold \
cache, e certgate with an audit record on every connection; HTTP: h0 no filter, hw no-op wasm \
HTTP filter, hc certgate HTTP filter, hn certgate network filter before the HCM.

Examples:
  bench-envoy --out docs/bench --pid-file target/bench-envoy.pid --profile 1.5
  bench-envoy --rounds 1 --seconds 1 --only a,c --profile 0
  CERTGATE_BENCH_KEEP=1 bench-envoy --rounds 0 --profile 2 --only c

Environment: CERTGATE_ENVOY, CERTGATE_FILTER_WASM and CERTGATE_NOOP_WASM are the defaults of \
--envoy, --filter and --noop (the Makefile sets them); CERTGATE_BENCH_KEEP=1 keeps the scratch \
directory (bootstrap, logs, a client certificate and key) and prints where it is.

Exit codes: 0 the benchmark ran (the goals are reported, not enforced), 1 it failed (Envoy, the \
load or the profile), 2 usage (a bad flag, or a missing Envoy or module)."
)]
struct Cli {
    /// The Envoy binary [default: $CERTGATE_ENVOY, else `envoy` in the working directory]
    #[arg(long, value_name = "PATH")]
    envoy: Option<PathBuf>,
    /// certgate's filter module [default: $CERTGATE_FILTER_WASM]
    #[arg(long, value_name = "WASM")]
    filter: Option<PathBuf>,
    /// The no-op filter module of cases w and wd [default: $CERTGATE_NOOP_WASM]
    #[arg(long, value_name = "WASM")]
    noop: Option<PathBuf>,
    /// Interleaved rounds of every selected case (0 only with --profile: profile only)
    #[arg(long, value_name = "N", default_value_t = 5)]
    rounds: usize,
    /// Seconds each case runs in a round
    #[arg(long, value_name = "S", default_value_t = 3.0)]
    seconds: f64,
    /// Seconds of load before each measured phase
    #[arg(long, value_name = "S", default_value_t = 0.5)]
    warmup: f64,
    /// Concurrent TLS clients of the connection cases
    #[arg(long, value_name = "N", default_value_t = 16)]
    concurrency: usize,
    /// Concurrent kept-alive clients of the HTTP cases
    #[arg(long, value_name = "N", default_value_t = 8)]
    http_concurrency: usize,
    /// Also write DIR/envoy.md (the tables) and DIR/envoy.png (the chart)
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Write Envoy's pid here while it runs, so a caller can kill it if this harness dies
    #[arg(long, value_name = "PATH")]
    pid_file: Option<PathBuf>,
    /// The core Envoy is pinned to
    #[arg(long, value_name = "N", default_value_t = 0)]
    envoy_cpu: usize,
    /// The core the load generator is pinned to
    #[arg(long, value_name = "N", default_value_t = 1)]
    client_cpu: usize,
    /// Case keys to run, comma-separated (all when absent), e.g. for profiling one case
    #[arg(long, value_name = "KEY,KEY", value_delimiter = ',')]
    only: Vec<String>,
    /// Nice level of Envoy and the harness (negative = higher priority; needs root)
    #[arg(long, value_name = "N", default_value_t = -10, allow_negative_numbers = true)]
    nice: i32,
    /// After the rounds, run the wasm cases in --profile-rounds interleaved rounds of S
    /// seconds under `perf record` and report the filter's share of Envoy's CPU (needs
    /// perf; 0: no profile)
    #[arg(long, value_name = "S", default_value_t = 0.0)]
    profile: f64,
    /// Rounds of profiled phases
    #[arg(long, value_name = "N", default_value_t = 10)]
    profile_rounds: usize,
}

/// The settings of a run: the command line, checked, with the parts under test as absolute
/// paths (Envoy resolves relative paths from its own working directory).
#[derive(Debug)]
struct Args {
    envoy: PathBuf,
    filter: PathBuf,
    noop: PathBuf,
    rounds: usize,
    seconds: f64,
    warmup: f64,
    concurrency: usize,
    http_concurrency: usize,
    out: Option<PathBuf>,
    pid_file: Option<PathBuf>,
    envoy_cpu: usize,
    client_cpu: usize,
    /// Case keys to run (all when empty).
    only: Vec<String>,
    nice: i32,
    profile: f64,
    profile_rounds: usize,
}

/// Checks what clap cannot (the parts exist, numbers in range, case keys known) and
/// resolves the parts' defaults from the environment.
fn check_args(cli: Cli) -> Result<Args> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let pick = |flag: Option<PathBuf>, var: &str, default: Option<PathBuf>| {
        flag.or_else(|| env(var)).or(default).unwrap_or_default()
    };
    let mut a = Args {
        envoy: pick(cli.envoy, "CERTGATE_ENVOY", Some(PathBuf::from("envoy"))),
        filter: pick(cli.filter, "CERTGATE_FILTER_WASM", None),
        noop: pick(cli.noop, "CERTGATE_NOOP_WASM", None),
        rounds: cli.rounds,
        seconds: cli.seconds,
        warmup: cli.warmup,
        concurrency: cli.concurrency,
        http_concurrency: cli.http_concurrency,
        out: cli.out,
        pid_file: cli.pid_file,
        envoy_cpu: cli.envoy_cpu,
        client_cpu: cli.client_cpu,
        only: cli.only,
        nice: cli.nice,
        profile: cli.profile,
        profile_rounds: cli.profile_rounds,
    };
    for (what, p) in [
        ("--envoy", &mut a.envoy),
        ("--filter", &mut a.filter),
        ("--noop", &mut a.noop),
    ] {
        if !p.is_file() {
            bail!(
                "{what} `{}` is not a file (build it first: `make envoy filter noop-filter`)",
                p.display()
            );
        }
        *p = std::fs::canonicalize(&p)?;
    }
    anyhow::ensure!(
        (a.rounds >= 1 || a.profile > 0.0)
            && a.seconds > 0.0
            && a.warmup >= 0.0
            && a.profile >= 0.0
            && a.profile_rounds >= 1,
        "--seconds and --profile-rounds must be positive, --warmup and --profile not \
         negative, and --rounds 0 only with --profile"
    );
    if let Some(k) = a
        .only
        .iter()
        .find(|k| !CASES.iter().any(|c| c.key == k.as_str()))
    {
        bail!("--only: no case `{k}` (see --help for the case keys)");
    }
    Ok(a)
}

/// A benchmark case: a listener and the client pool that drives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pool {
    Warm,
    Cold,
}

#[derive(Debug)]
struct Case {
    key: &'static str,
    label: &'static str,
    http: bool,
    pool: Pool,
    /// Whether a certificate outside the 1,000 identities must be refused.
    enforces: bool,
    /// Whether its filter is a wasm module (profiled with `--profile`).
    wasm: bool,
    /// HTTP case whose filter is a NETWORK filter before the connection manager.
    network_on_http: bool,
}

const CASES: &[Case] = &[
    Case {
        key: "a",
        label: "no filter",
        http: false,
        pool: Pool::Warm,
        enforces: false,
        wasm: false,
        network_on_http: false,
    },
    Case {
        key: "w",
        label: "no-op wasm filter",
        http: false,
        pool: Pool::Warm,
        enforces: false,
        wasm: true,
        network_on_http: false,
    },
    Case {
        key: "wd",
        label: "no-op wasm filter reading the cert digest",
        http: false,
        pool: Pool::Warm,
        enforces: false,
        wasm: true,
        network_on_http: false,
    },
    Case {
        key: "r1",
        label: "RBAC, 1,000 principals list",
        http: false,
        pool: Pool::Warm,
        enforces: true,
        wasm: false,
        network_on_http: false,
    },
    Case {
        key: "r2",
        label: "RBAC, 1,000-entry matcher map",
        http: false,
        pool: Pool::Warm,
        enforces: true,
        wasm: false,
        network_on_http: false,
    },
    Case {
        key: "c",
        label: "certgate, 1,000 rules + 1M revoked, warm",
        http: false,
        pool: Pool::Warm,
        enforces: true,
        wasm: true,
        network_on_http: false,
    },
    Case {
        key: "d",
        label: "certgate as (c), cold cache",
        http: false,
        pool: Pool::Cold,
        enforces: true,
        wasm: true,
        network_on_http: false,
    },
    Case {
        key: "e",
        label: "certgate as (c), audit record every conn",
        http: false,
        pool: Pool::Warm,
        enforces: true,
        wasm: true,
        network_on_http: false,
    },
    Case {
        key: "h0",
        label: "no filter",
        http: true,
        pool: Pool::Warm,
        enforces: false,
        wasm: false,
        network_on_http: false,
    },
    Case {
        key: "hw",
        label: "no-op wasm HTTP filter",
        http: true,
        pool: Pool::Warm,
        enforces: false,
        wasm: true,
        network_on_http: false,
    },
    Case {
        key: "hc",
        label: "certgate HTTP filter as (c)",
        http: true,
        pool: Pool::Warm,
        enforces: true,
        wasm: true,
        network_on_http: false,
    },
    // What Istio builds for a NETWORK WasmPlugin on an HTTP port: the filter decides once per
    // connection, before the connection manager, and no request calls into wasm. Not
    // profiled: the profile's per-request baselines are HTTP filters.
    Case {
        key: "hn",
        label: "certgate network filter before the HCM",
        http: true,
        pool: Pool::Warm,
        enforces: true,
        wasm: false,
        network_on_http: true,
    },
];

fn listeners(args: &Args, table_b64: &str, identities: &[String]) -> Vec<Listener> {
    let enforce = envoy::certgate_config(table_b64, "deny");
    let audit_all = envoy::certgate_config(table_b64, "all");
    CASES
        .iter()
        .map(|c| {
            // One VM per certgate plugin (distinct vm_id), so each holds one table and
            // its memory can be read on its own.
            let vm = format!("certgate-{}", c.key);
            let filter = match c.key {
                "a" | "h0" => None,
                "w" => Some(envoy::wasm_filter(false, "noop", "noop", &args.noop, "{}")),
                // Its own VM: a root id serves one plugin per VM.
                "wd" => Some(envoy::wasm_filter(
                    false,
                    "noop-read",
                    "noop",
                    &args.noop,
                    "read connection.sha256_peer_certificate_digest",
                )),
                "hw" => Some(envoy::wasm_filter(
                    true,
                    "noop",
                    "noop-http",
                    &args.noop,
                    "{}",
                )),
                "r1" => Some(envoy::rbac_principal_list(identities)),
                "r2" => Some(envoy::rbac_matcher_tree(identities)),
                "e" => Some(envoy::wasm_filter(
                    false,
                    &vm,
                    "certgate",
                    &args.filter,
                    &audit_all,
                )),
                _ => Some(envoy::wasm_filter(
                    c.http && !c.network_on_http,
                    &vm,
                    if c.http && !c.network_on_http {
                        "certgate-http"
                    } else {
                        "certgate"
                    },
                    &args.filter,
                    &enforce,
                )),
            };
            Listener {
                name: c.key.to_string(),
                filter,
                terminal: if c.network_on_http {
                    Terminal::HttpBehindNetworkFilter
                } else if c.http {
                    Terminal::Http
                } else {
                    Terminal::TcpProxy
                },
            }
        })
        .collect()
}

/// The counter that counts one unit of work of a case: TLS handshakes on its listener,
/// or HTTP requests on its connection manager.
fn unit_counter(envoy: &Envoy, case: &Case) -> Result<String> {
    Ok(if case.http {
        format!("http.{}.downstream_rq_total", case.key)
    } else {
        envoy.addr(case.key)?;
        format!("listener.{}.ssl.handshake", case.key)
    })
}

async fn units(envoy: &Envoy, name: &str) -> Result<u64> {
    let all = envoy.counters("handshake%7Cdownstream_rq_total").await?;
    all.get(name).copied().with_context(|| {
        format!(
            "no counter `{name}` in /stats (have: {:?})",
            all.keys().collect::<Vec<_>>()
        )
    })
}

/// One measured phase of `seconds` of `case`, and its measured window (wall clock).
async fn phase(
    envoy: &Envoy,
    case: &Case,
    config: &Arc<ClientConfig>,
    args: &Args,
    seconds: f64,
) -> Result<(Sample, (SystemTime, SystemTime))> {
    let addr = envoy.addr(case.key)?;
    let counter = unit_counter(envoy, case)?;
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let (protocol, concurrency) = if case.http {
        (Protocol::Http, args.http_concurrency)
    } else {
        (Protocol::Tcp, args.concurrency)
    };
    let tasks = load::spawn_load(
        protocol,
        addr,
        Arc::clone(config),
        concurrency,
        Arc::clone(&stop),
        Arc::clone(&tally),
    );
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    let me = std::process::id();
    let client0 = envoy::process_cpu(me)?;
    let from = SystemTime::now();
    let (cpu0, n0, t0, e0) = (
        envoy.cpu()?,
        units(envoy, &counter).await?,
        Instant::now(),
        tally.errors.load(Ordering::Relaxed),
    );
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    let (cpu1, n1, t1, e1) = (
        envoy.cpu()?,
        units(envoy, &counter).await?,
        Instant::now(),
        tally.errors.load(Ordering::Relaxed),
    );
    let to = SystemTime::now();
    let client = (envoy::process_cpu(me)? - client0).as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let n = n1.saturating_sub(n0);
    if n == 0 {
        let first = tally.first_error.lock().ok().and_then(|f| f.clone());
        bail!(
            "case ({}) completed nothing; first client error: {first:?}",
            case.key
        );
    }
    let cpu = (cpu1 - cpu0).as_secs_f64();
    let wall = (t1 - t0).as_secs_f64();
    let sample = Sample {
        cpu_us: cpu * 1e6 / n as f64,
        units: n,
        rate: n as f64 / wall,
        util: cpu / wall,
        client_util: client / wall,
        errors: e1 - e0,
        first_error: tally.first_error.lock().ok().and_then(|f| f.clone()),
    };
    Ok((sample, (from, to)))
}

/// The order of the cases (`0..n`) in `round`: reversed every other round, so that no
/// case always follows the same neighbour.
fn round_order(round: usize, n: usize) -> Vec<usize> {
    if round % 2 == 1 {
        (0..n).collect()
    } else {
        (0..n).rev().collect()
    }
}

/// Whether `--only` (empty: every case) selects `case`.
fn selected(args: &Args, case: &Case) -> bool {
    args.only.is_empty() || args.only.iter().any(|k| k == case.key)
}

/// A case's profiled phases, one per profile round.
#[derive(Debug)]
struct Profiled {
    case: &'static Case,
    rounds: Vec<(Sample, Split)>,
}

/// A profiled figure: pooled over every round, with the range of the rounds' own values.
#[derive(Debug, Clone, Copy)]
struct Pooled {
    all: f64,
    min: f64,
    max: f64,
}

impl Pooled {
    fn new(all: f64, rounds: &[f64]) -> Pooled {
        let range = report::stat(rounds.iter().copied());
        Pooled {
            all,
            min: range.min,
            max: range.max,
        }
    }

    fn cell(&self) -> String {
        format!("{:.1} ({:.1}–{:.1})", self.all, self.min, self.max)
    }

    fn signed(&self) -> String {
        format!("{:+.1} ({:+.1} to {:+.1})", self.all, self.min, self.max)
    }
}

/// Envoy CPU µs per unit in wasm code and in host calls made from wasm, for `split`
/// of a phase that cost `cpu_us` per unit.
fn shares_us(split: &Split, cpu_us: f64) -> (f64, f64) {
    (split.wasm_share() * cpu_us, split.host_share() * cpu_us)
}

impl Profiled {
    /// Per round: µs per unit in wasm code, in host calls from wasm, and both.
    fn per_round(&self) -> Vec<(f64, f64, f64)> {
        self.rounds
            .iter()
            .map(|(sample, split)| {
                let (wasm, host) = shares_us(split, sample.cpu_us);
                (wasm, host, wasm + host)
            })
            .collect()
    }

    /// Every round's samples and units together: the shares of all samples, times
    /// Envoy's CPU over all units. Each phase has only a few thousand samples, so this
    /// counts far more of them than any one round.
    fn pooled(&self) -> (f64, f64, f64) {
        let mut split = Split::default();
        for (_, s) in &self.rounds {
            split.samples += s.samples;
            split.wasm += s.wasm;
            split.host_from_wasm += s.host_from_wasm;
        }
        let (wasm, host) = shares_us(&split, self.cpu_us());
        (wasm, host, wasm + host)
    }

    /// Envoy's CPU µs per unit over every round's units.
    fn cpu_us(&self) -> f64 {
        let units: u64 = self.rounds.iter().map(|(s, _)| s.units).sum();
        let cpu: f64 = self
            .rounds
            .iter()
            .map(|(s, _)| s.cpu_us * s.units as f64)
            .sum();
        if units == 0 {
            0.0
        } else {
            cpu / units as f64
        }
    }

    fn filter_us(&self) -> Pooled {
        let rounds: Vec<f64> = self.per_round().into_iter().map(|r| r.2).collect();
        Pooled::new(self.pooled().2, &rounds)
    }

    /// This case's filter µs minus `base`'s: pooled, and the range of the per-round
    /// differences (the phases of a round ran seconds apart).
    fn over(&self, base: &Profiled) -> Pooled {
        let rounds: Vec<f64> = self
            .per_round()
            .into_iter()
            .zip(base.per_round())
            .map(|((_, _, x), (_, _, b))| x - b)
            .collect();
        Pooled::new(self.pooled().2 - base.pooled().2, &rounds)
    }
}

/// The profile table: per case, Envoy's CPU per unit in the profiled windows and the
/// filter's share of it, with the difference to the no-op filters.
fn profile_markdown(profiles: &[Profiled]) -> String {
    let find = |k: &str| profiles.iter().find(|p| p.case.key == k);
    let mut out = String::from(
        "| case | Envoy CPU µs per conn (HTTP: per request) | in wasm code, µs | in host calls from wasm, µs | filter µs (wasm + host calls) | over the no-op filter | over (wd) |\n|---|---|---|---|---|---|---|\n",
    );
    for p in profiles {
        let rounds = p.per_round();
        let (wasm, host, _) = p.pooled();
        let cpu_rounds: Vec<f64> = p.rounds.iter().map(|(s, _)| s.cpu_us).collect();
        let over = |base: Option<&Profiled>| match base {
            Some(b) if b.case.key != p.case.key => p.over(b).signed(),
            _ => "–".to_string(),
        };
        out.push_str(&format!(
            "| ({}) {} | {} | {} | {} | {} | {} | {} |\n",
            p.case.key,
            p.case.label,
            Pooled::new(p.cpu_us(), &cpu_rounds).cell(),
            Pooled::new(wasm, &rounds.iter().map(|r| r.0).collect::<Vec<_>>()).cell(),
            Pooled::new(host, &rounds.iter().map(|r| r.1).collect::<Vec<_>>()).cell(),
            p.filter_us().cell(),
            over(find(if p.case.http { "hw" } else { "w" })),
            over(if p.case.http { None } else { find("wd") }),
        ));
    }
    out
}

/// Pins every thread of this process to `cpu` (the load generator's core).
fn pin_self(cpu: usize) -> Result<()> {
    let out = Command::new("taskset")
        .args([
            "-a",
            "-p",
            "-c",
            &cpu.to_string(),
            &std::process::id().to_string(),
        ])
        .output()
        .context("running taskset")?;
    anyhow::ensure!(
        out.status.success(),
        "taskset failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    // Not available_parallelism: this process is pinned to one core.
    let cores = std::fs::read_to_string("/proc/cpuinfo").map_or(0, |t| {
        t.lines().filter(|l| l.starts_with("processor")).count()
    });
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")
                    .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            })
        })
        .map_or(String::new(), |kb| {
            format!(", {:.0} GiB", kb as f64 / 1048576.0)
        });
    format!("{cores} × {cpu}{mem}")
}

fn envoy_version(envoy: &Path) -> String {
    Command::new(envoy)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| {
            let after = s.split_once("version:")?.1;
            Some(
                after
                    .split_whitespace()
                    .next()?
                    .split('/')
                    .nth(1)?
                    .to_string(),
            )
        })
        .unwrap_or_else(|| "unknown".into())
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn utc_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

async fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    // Declared first, so it outlives Envoy (dropped with `run`'s other locals) and is
    // removed last; CERTGATE_BENCH_KEEP=1 keeps the bootstrap, logs and a client
    // certificate (client.pem, client.key) for debugging.
    let mut dir = tempfile::Builder::new()
        .prefix("certgate-bench-envoy-")
        .tempdir()
        .context("creating the scratch directory")?;
    if std::env::var_os("CERTGATE_BENCH_KEEP").is_some() {
        dir.disable_cleanup(true);
        eprintln!("bench-envoy: keeping {}", dir.path().display());
    }

    eprintln!(
        "bench-envoy: certificates, table ({IDENTITIES} rules, {REVOKED} revoked serials)..."
    );
    let pki = Pki::new()?;
    let identities: Vec<String> = (0..IDENTITIES).map(tables::identity).collect();
    let key = pki.client_key_der();
    let warm: Vec<Vec<u8>> = (0..WARM_CERTS)
        .map(|i| {
            pki.client_cert(
                &identities[(i * 15) % IDENTITIES],
                &pki::client_serial(i as u64),
            )
        })
        .collect::<Result<_>>()?;
    let cold: Vec<Vec<u8>> = (0..COLD_CERTS)
        .map(|i| {
            pki.client_cert(
                &identities[i % IDENTITIES],
                &pki::client_serial(1_000_000 + i as u64),
            )
        })
        .collect::<Result<_>>()?;
    let stranger = pki.client_cert(
        &format!("spiffe://{}/ns/other/sa/stranger", tables::TRUST_DOMAIN),
        &pki::client_serial(999_999),
    )?;
    let warm_cfg = load::client_config(&warm, &key)?;
    if std::env::var_os("CERTGATE_BENCH_KEEP").is_some() {
        std::fs::write(dir.path().join("client.pem"), pem("CERTIFICATE", &warm[0]))?;
        std::fs::write(dir.path().join("client.key"), pem("PRIVATE KEY", &key))?;
    }
    let cold_cfg = load::client_config(&cold, &key)?;
    let stranger_cfg = load::client_config(&[stranger], &key)?;

    let table = tables::table(tables::rules(IDENTITIES, RuleKind::Exact)?, REVOKED, &[])?;
    let table_bytes = ruleset::encode(&table)?;
    let table_b64 = base64::engine::general_purpose::STANDARD.encode(&table_bytes);

    let (backend, backend_task) = load::start_backend().await?;
    let bootstrap = envoy::bootstrap(
        &pki,
        &listeners(&args, &table_b64, &identities),
        backend,
        &dir.path().join("access.log"),
    );
    eprintln!(
        "bench-envoy: starting Envoy ({} on core {}, load on core {})...",
        envoy_version(&args.envoy),
        args.envoy_cpu,
        args.client_cpu
    );
    let t = Instant::now();
    let mut envoy = Envoy::start(
        &args.envoy,
        dir.path(),
        &bootstrap,
        args.envoy_cpu,
        args.nice,
        args.pid_file.as_deref(),
    )
    .await?;
    let startup = t.elapsed();
    let wasm_kb = envoy.wasm_memories_kb()?;
    let rss_kb = envoy.rss_kb()?;

    // Every filter must really enforce: the benchmark identities pass, a stranger does not
    // (HTTP: a 200 for one, a close or a 403 for the other).
    for case in CASES {
        let addr = envoy.addr(case.key)?;
        let probe = |cfg: &Arc<ClientConfig>| {
            let connector = tokio_rustls::TlsConnector::from(Arc::clone(cfg));
            async move {
                if case.http {
                    load::one_request(&connector, addr).await
                } else {
                    load::one_connection(&connector, addr).await
                }
            }
        };
        let pass = probe(&warm_cfg).await?;
        let stranger = probe(&stranger_cfg).await.unwrap_or(false);
        anyhow::ensure!(
            pass,
            "case ({}) refused an allowed identity:\n{}",
            case.key,
            envoy::tail(&envoy.log_path, 20)
        );
        anyhow::ensure!(
            stranger != case.enforces,
            "case ({}) {} a stranger",
            case.key,
            if stranger { "let through" } else { "refused" }
        );
    }

    let config_of = |case: &Case| match case.pool {
        Pool::Warm => &warm_cfg,
        Pool::Cold => &cold_cfg,
    };
    let mut results: Vec<CaseResult> = CASES
        .iter()
        .map(|c| CaseResult {
            key: c.key,
            label: c.label,
            samples: Vec::new(),
        })
        .collect();
    for round in 1..=args.rounds {
        for i in round_order(round, CASES.len()) {
            let (case, result) = (&CASES[i], &mut results[i]);
            if !selected(&args, case) {
                continue;
            }
            let (s, _) = phase(&envoy, case, config_of(case), &args, args.seconds).await?;
            if s.errors > 0 {
                eprintln!(
                    "  ({}) first client error: {}",
                    case.key,
                    s.first_error.as_deref().unwrap_or("?")
                );
            }
            eprintln!(
                "round {round}/{} ({:>2}) {:<44} {:>7.1} µs/{}  {:>7.0}/s  core {:>3.0}%  client {:>3.0}%  errors {}",
                args.rounds, case.key, case.label, s.cpu_us, if case.http { "req " } else { "conn" }, s.rate, s.util * 100.0, s.client_util * 100.0, s.errors
            );
            result.samples.push(s);
        }
    }
    results.retain(|r| !r.samples.is_empty());

    let mut profiles = Vec::new();
    let perf_missing = (args.profile > 0.0).then(profile::unavailable).flatten();
    if let Some(why) = &perf_missing {
        eprintln!("bench-envoy: no profile: {why}");
    }
    if args.profile > 0.0 && perf_missing.is_none() {
        profiles = CASES
            .iter()
            .filter(|c| c.wasm && selected(&args, c))
            .map(|case| Profiled {
                case,
                rounds: Vec::new(),
            })
            .collect();
        // One recording over every profiled phase; samples are told apart by time.
        let recording = profile::Recording::start(envoy.pid, &dir.path().join("profile.perf"))?;
        let mut windows = Vec::new();
        for round in 1..=args.profile_rounds {
            for i in round_order(round, profiles.len()) {
                let case = profiles[i].case;
                let (sample, window) =
                    phase(&envoy, case, config_of(case), &args, args.profile).await?;
                windows.push((i, sample, window));
            }
            eprintln!("profile: round {round}/{} done", args.profile_rounds);
        }
        let samples = tokio::task::spawn_blocking(move || recording.stop()).await??;
        for (i, sample, (from, to)) in windows {
            let split = profile::split_between(&samples, from, to);
            let p = &mut profiles[i];
            eprintln!(
                "profile ({:>2}) {:<44} {:>7.1} µs/{}  wasm {:>5.2}%  host calls from wasm {:>5.2}%  ({} samples)",
                p.case.key,
                p.case.label,
                sample.cpu_us,
                if p.case.http { "req " } else { "conn" },
                split.wasm_share() * 100.0,
                split.host_share() * 100.0,
                split.samples
            );
            p.rounds.push((sample, split));
        }
    }
    let stats = envoy.counters("certgate").await?;
    let denied: u64 = stats
        .iter()
        .filter(|(k, _)| k.ends_with("certgate.denied"))
        .map(|(_, v)| v)
        .sum();
    let allowed: u64 = stats
        .iter()
        .filter(|(k, _)| k.ends_with("certgate.allowed"))
        .map(|(_, v)| v)
        .sum();
    let wasm_kb_after = envoy.wasm_memories_kb()?;
    envoy.kill();
    backend_task.abort();

    let mut goals = goals(&results, &args, table_bytes.len(), &wasm_kb_after);
    goals.extend(profile_goals(&profiles));
    let total = started.elapsed();
    let mut md = String::new();
    md.push_str(&format!(
        "Measured {} on {}; Envoy {} (`--concurrency 1`, pinned to core {}), load generator on core {}, both at nice {}; \
{} interleaved rounds of {:.0} s (after {:.1} s warm-up) per case; {} connections in flight \
(HTTP: {} kept-alive connections). Envoy started in {:.1} s with {} certgate plugins \
(table {:.1} MB, {} rules, {} revoked serials); RSS {:.0} MB; wasm memories (MB, each VM on \
each thread): {}. certgate counted {allowed} allowed, {denied} denied (the stranger probes). \
Run took {:.0} s.\n\n",
        utc_now(),
        machine(),
        envoy_version(&args.envoy),
        args.envoy_cpu,
        args.client_cpu,
        args.nice,
        args.rounds,
        args.seconds,
        args.warmup,
        args.concurrency,
        args.http_concurrency,
        startup.as_secs_f64(),
        CASES.iter().filter(|c| matches!(c.key, "c" | "d" | "e" | "hc" | "hn")).count(),
        table_bytes.len() as f64 / 1e6,
        IDENTITIES,
        REVOKED,
        rss_kb as f64 / 1024.0,
        wasm_kb.iter().map(|kb| format!("{:.1}", *kb as f64 / 1024.0)).collect::<Vec<_>>().join(", "),
        total.as_secs_f64()
    ));
    md.push_str(&report::markdown(&results, &goals));
    if !profiles.is_empty() {
        md.push_str(&format!(
            "\nProfile: the wasm cases again, {} interleaved rounds of {} s, Envoy sampled by \
`perf record -g -F {}` over each measured window (`wasm code`: samples whose innermost frame is \
V8-generated code; `host calls from wasm`: samples in Envoy, libc or the kernel with wasm code \
further out on the stack, i.e. the proxy-wasm calls the filter makes; µs = share × that phase's \
Envoy CPU per unit; each figure pools every round's samples and units, with the range of the \
rounds' own values, differences paired by round, in parentheses).\n\n",
            args.profile_rounds,
            args.profile,
            profile::FREQUENCY
        ));
        md.push_str(&profile_markdown(&profiles));
    }
    println!("\n{md}");
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out)?;
        std::fs::write(out.join("envoy.md"), &md)?;
        certgate_bench::chart::draw(
            &out.join("envoy.png"),
            &format!(
                "certgate vs native RBAC, Envoy {} on one core",
                envoy_version(&args.envoy)
            ),
            &results,
        )?;
        eprintln!(
            "bench-envoy: wrote {} and envoy.png",
            out.join("envoy.md").display()
        );
    }
    Ok(())
}

/// Each goal compares two cases round by round (their phases ran seconds apart) and takes
/// the median over rounds: slow drifts in the machine's load cancel.
fn paired(x: &CaseResult, base: &CaseResult, f: &dyn Fn(&Sample, &Sample) -> f64) -> report::Stat {
    report::stat(x.samples.iter().zip(&base.samples).map(|(x, b)| f(x, b)))
}

/// Rates compare per-core capacity (1 / CPU per unit): on two shared cores the load
/// generator cannot always keep Envoy's core saturated, and then measured rates follow the
/// client. The measured ratio is shown next to it.
fn rate_goal(what: &str, x: &CaseResult, base: &CaseResult, min: f64) -> Goal {
    let cap = paired(x, base, &|x, b| b.cpu_us / x.cpu_us);
    let measured = paired(x, base, &|x, b| x.rate / b.rate);
    Goal {
        what: what.into(),
        measured: format!(
            "{:.2}× ({:.2}–{:.2}; measured rate {:.2}×)",
            cap.median, cap.min, cap.max, measured.median
        ),
        goal: format!("at least {min}×"),
        met: Some(cap.median >= min),
    }
}

/// The HTTP goals: they need only their own cases (`--only h0,hn` checks one).
fn http_goals(results: &[CaseResult]) -> Vec<Goal> {
    let find = |k: &str| results.iter().find(|r| r.key == k);
    let mut goals = Vec::new();
    if let (Some(h0), Some(hc)) = (find("h0"), find("hc")) {
        goals.push(rate_goal(
            "HTTP kept-alive requests/s vs no filter",
            hc,
            h0,
            0.97,
        ));
    }
    if let (Some(hw), Some(hc)) = (find("hw"), find("hc")) {
        goals.push(rate_goal(
            "(for reference) HTTP certgate vs no-op wasm HTTP filter",
            hc,
            hw,
            0.97,
        ));
    }
    if let (Some(h0), Some(hn)) = (find("h0"), find("hn")) {
        goals.push(rate_goal(
            "(hn) HTTP kept-alive requests/s, certgate as a network filter before the HCM, vs no filter",
            hn,
            h0,
            0.97,
        ));
    }
    goals
}

fn goals(results: &[CaseResult], args: &Args, table_len: usize, wasm_kb: &[u64]) -> Vec<Goal> {
    let find = |k: &str| results.iter().find(|r| r.key == k);
    let mut goals = Vec::new();
    let (Some(w), Some(c), Some(r1), Some(r2), Some(a), Some(d), Some(e)) = (
        find("w"),
        find("c"),
        find("r1"),
        find("r2"),
        find("a"),
        find("d"),
        find("e"),
    ) else {
        return http_goals(results);
    };
    let extra = paired(c, w, &|x, b| x.cpu_us - b.cpu_us);
    goals.push(Goal {
        what: "(c) Envoy CPU per connection over (w), per round".into(),
        measured: format!(
            "{:+.1} µs ({:+.1} to {:+.1})",
            extra.median, extra.min, extra.max
        ),
        goal: "at most +5 µs".into(),
        met: Some(extra.median <= 5.0),
    });
    goals.push(rate_goal(
        "(c) conn/s vs (r2) RBAC matcher map",
        c,
        r2,
        0.95,
    ));
    goals.push(rate_goal(
        "(c) conn/s vs (r1) RBAC principal list",
        c,
        r1,
        2.0,
    ));
    goals.push(rate_goal(
        "(d) cold cache conn/s vs (a) no filter",
        d,
        a,
        0.85,
    ));
    goals.push(rate_goal("(e) audit every conn, conn/s vs (c)", e, c, 0.97));
    goals.extend(http_goals(results));
    let size = std::fs::metadata(&args.filter).map(|m| m.len()).ok();
    goals.push(Goal {
        what: "release module size".into(),
        measured: size.map_or("?".into(), |s| {
            format!("{:.0} KB ({s} bytes)", s as f64 / 1024.0)
        }),
        goal: format!("under {} KB", FILTER_MAX_BYTES / 1024),
        met: size.map(|s| s < FILTER_MAX_BYTES),
    });
    let biggest = wasm_kb.iter().copied().max();
    let limit_kb = (table_len as u64 + (2 << 20)) / 1024;
    goals.push(Goal {
        what: "VM memory (largest wasm linear memory, resident)".into(),
        measured: biggest.map_or("?".into(), |kb| format!("{:.1} MB", kb as f64 / 1024.0)),
        goal: format!("at most table + 2 MB = {:.1} MB", limit_kb as f64 / 1024.0),
        met: biggest.map(|kb| kb <= limit_kb),
    });
    goals
}

/// The goals the profile decides: the filter's own cost does not depend on how fast the
/// virtual CPU happens to run the TLS handshake in that phase.
fn profile_goals(profiles: &[Profiled]) -> Vec<Goal> {
    let find = |k: &str| profiles.iter().find(|p| p.case.key == k);
    let mut goals = Vec::new();
    if let (Some(w), Some(c)) = (find("w"), find("c")) {
        let extra = c.over(w);
        let wd = find("wd").map_or(String::new(), |wd| {
            format!(
                "; of which reading the certificate digest (the host's floor, (wd) over (w)) {} \
                 and certgate's own work ((c) over (wd)) {}",
                wd.over(w).signed(),
                c.over(wd).signed()
            )
        });
        goals.push(Goal {
            what: "(c) filter CPU per connection over (w), by profile".into(),
            measured: format!("{} µs{wd}", extra.signed()),
            goal: "at most +5 µs".into(),
            met: Some(extra.all <= 5.0),
        });
    }
    if let (Some(c), Some(e)) = (find("c"), find("e")) {
        // The record's cost by profile against (c)'s whole connection.
        let record = e.over(c);
        let c_cpu = c.cpu_us();
        let ratio = c_cpu / (c_cpu + record.all);
        goals.push(Goal {
            what: "(e) audit every conn vs (c), by profile".into(),
            measured: format!(
                "{ratio:.3}× (the record {} µs per connection on (c)'s {c_cpu:.1} µs)",
                record.signed()
            ),
            goal: "at least 0.97×".into(),
            met: Some(ratio >= 0.97),
        });
    }
    goals
}

fn main() {
    let args = match check_args(Cli::parse()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench-envoy: {e:#}");
            std::process::exit(2);
        }
    };
    if let Err(e) = pin_self(args.client_cpu) {
        eprintln!("bench-envoy: not pinned to core {}: {e:#}", args.client_cpu);
    }
    // The load generator gets the same priority as Envoy (a single-threaded runtime, so
    // renicing this thread covers it).
    let reniced = Command::new("renice")
        .args([
            "-n",
            &args.nice.to_string(),
            "-p",
            &std::process::id().to_string(),
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if !reniced {
        eprintln!(
            "bench-envoy: could not set nice {} (not root?); measuring at the default priority",
            args.nice
        );
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench-envoy: {e}");
            std::process::exit(2);
        }
    };
    // Envoy lives inside `run`'s future: finishing, failing or being interrupted all drop
    // it, and dropping it kills the process.
    let result = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = run(args) => r,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
            _ = term.recv() => bail!("terminated"),
        }
    });
    if let Err(e) = result {
        eprintln!("bench-envoy: {e:#}");
        std::process::exit(1);
    }
}
