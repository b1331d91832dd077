//! Micro benchmarks of the decision engine (`make bench-micro`): evaluate() over rule
//! and revocation-set sizes, table decode, certificate parse, and the 1,000,000-serial
//! revocation figures (size per entry, decode, lookup, compile from a CRL) printed
//! against their goals as met/missed.
//!
//! Criterion runs short (0.5 s warm-up, 2 s measurement per benchmark) so the whole
//! file finishes in about two minutes on a 2-core machine; pass criterion's own flags
//! after `--` for longer runs.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use certgate_bench::pki::{self, Pki};
use certgate_bench::tables::{self, RuleKind};
use criterion::{BatchSize, Criterion, Throughput};
use ruleset::{CertFacts, Engine, Peer, PeerCert, TlsVersion};

/// Revoked serials in the large table (issue 5's scale).
const MILLION: usize = 1_000_000;
/// Peers cycled through in the lookup benchmarks, so lookups do not all hit one path
/// of the search structure in cache.
const LOOKUP_PEERS: usize = 4096;

struct Setup {
    pki: Pki,
    facts: CertFacts,
    ecdsa_der: Vec<u8>,
    ecdsa_pem: Vec<u8>,
    rsa_der: Option<Vec<u8>>,
}

fn peer_with(facts: &CertFacts, identity: &str, serial: &[u8]) -> Peer {
    let mut f = facts.clone();
    f.uri_sans = vec![identity.to_string()];
    f.serial = ruleset::cert::normalize_serial(serial);
    Peer {
        cert: PeerCert::Parsed(std::sync::Arc::new(f)),
        tls_version: Some(TlsVersion::V1_3),
        port: Some(8443),
        sni: None,
        source_ip: Some(std::net::IpAddr::from([127, 0, 0, 1])),
    }
}

impl Setup {
    fn new() -> Result<Setup> {
        let pki = Pki::new()?;
        let ecdsa_der = pki.client_cert(&tables::identity(0), &pki::client_serial(1))?;
        let facts = ruleset::cert::parse_der(&ecdsa_der).map_err(|e| anyhow::anyhow!("{e}"))?;
        anyhow::ensure!(
            facts.issuer_id == tables::ca_issuer_id()?,
            "issuer id of the client certificate differs from the one of `{}`",
            tables::CA_DN
        );
        let ecdsa_pem = pem(&ecdsa_der).into_bytes();
        let dir = std::env::temp_dir().join(format!("certgate-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let rsa_der = match pki::rsa_leaf_der(&dir, &tables::identity(0)) {
            Ok(d) => Some(d),
            Err(e) => {
                eprintln!("skipping the RSA parse benchmark: {e:#}");
                None
            }
        };
        let _ = std::fs::remove_dir_all(&dir);
        Ok(Setup {
            pki,
            facts,
            ecdsa_der,
            ecdsa_pem,
            rsa_der,
        })
    }
}

fn pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn engine(rules: usize, kind: RuleKind, revoked: usize, extra: &[Vec<u8>]) -> Result<Engine> {
    let t = tables::table(tables::rules(rules, kind)?, revoked, extra)?;
    Ok(Engine::new(t))
}

fn bench_evaluate(c: &mut Criterion, s: &Setup) -> Result<()> {
    let mut g = c.benchmark_group("evaluate");
    g.throughput(Throughput::Elements(1));
    for kind in [RuleKind::Exact, RuleKind::Pattern] {
        for n in [10, 1_000, 10_000] {
            let e = engine(n, kind, 0, &[])?;
            // The rule in the middle: no index may win by luck of order.
            let peer = peer_with(&s.facts, &kind.identity(n / 2), &pki::client_serial(1));
            anyhow::ensure!(e.evaluate(&peer).admits(), "{kind:?}/{n}: peer not allowed");
            g.bench_function(format!("{}-rules/{n}/revoked-0", kind.name()), |b| {
                b.iter(|| black_box(e.evaluate(black_box(&peer)).action))
            });
        }
    }
    for revoked in [10_000, MILLION] {
        let e = engine(1_000, RuleKind::Exact, revoked, &[])?;
        let peers: Vec<Peer> = (0..LOOKUP_PEERS as u64)
            .map(|i| peer_with(&s.facts, &tables::identity(500), &pki::client_serial(i)))
            .collect();
        anyhow::ensure!(peers.iter().all(|p| e.evaluate(p).admits()));
        let mut i = 0usize;
        g.bench_function(format!("exact-rules/1000/revoked-{revoked}"), |b| {
            b.iter(|| {
                i = (i + 1) % LOOKUP_PEERS;
                black_box(e.evaluate(black_box(&peers[i])).action)
            })
        });
    }
    g.finish();
    Ok(())
}

/// Revoked peers: evaluate() returns right after the revocation lookup, so this is the
/// lookup's cost plus the (small) fixed part of evaluate before it.
fn revoked_peers(s: &Setup, n: usize) -> Vec<Peer> {
    tables::random_serials(MILLION, 0x5EED)
        .step_by(MILLION / n)
        .take(n)
        .map(|serial| peer_with(&s.facts, &tables::identity(500), &serial))
        .collect()
}

fn bench_revocation(c: &mut Criterion, s: &Setup, e: &Engine) {
    let peers = revoked_peers(s, LOOKUP_PEERS);
    let mut g = c.benchmark_group("revocation");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("revoked-peer/1M", |b| {
        b.iter(|| {
            i = (i + 1) % LOOKUP_PEERS;
            black_box(e.evaluate(black_box(&peers[i])).reason)
        })
    });
    g.finish();
}

fn bench_decode(c: &mut Criterion, big: &[u8]) -> Result<()> {
    let rules_1k = ruleset::encode(&tables::table(
        tables::rules(1_000, RuleKind::Exact)?,
        0,
        &[],
    )?)?;
    let mut g = c.benchmark_group("decode");
    g.bench_function("1000-rules", |b| {
        b.iter(|| black_box(Engine::from_bytes(black_box(&rules_1k)).is_ok()))
    });
    g.sample_size(10);
    g.bench_function("1000-rules+1M-serials", |b| {
        b.iter_batched(
            || (),
            |()| black_box(Engine::from_bytes(black_box(big)).is_ok()),
            BatchSize::PerIteration,
        )
    });
    g.finish();
    Ok(())
}

fn bench_parse(c: &mut Criterion, s: &Setup) {
    let mut g = c.benchmark_group("parse");
    g.bench_function("ecdsa-p256/der", |b| {
        b.iter(|| black_box(ruleset::cert::parse_der(black_box(&s.ecdsa_der)).is_ok()))
    });
    g.bench_function("ecdsa-p256/pem-as-envoy-gives-it", |b| {
        b.iter(|| black_box(ruleset::cert::peer_cert_from_pem(black_box(&s.ecdsa_pem))))
    });
    // The filter's cold path: Envoy's `sha256_peer_certificate_digest` is the fingerprint.
    let sha256 = match ruleset::cert::peer_cert_from_pem(&s.ecdsa_pem) {
        ruleset::PeerCert::Parsed(facts) => facts.sha256,
        _ => [0; 32],
    };
    g.bench_function("ecdsa-p256/pem-with-envoys-digest", |b| {
        b.iter(|| {
            black_box(ruleset::cert::peer_cert_from_pem_with_sha256(
                black_box(&s.ecdsa_pem),
                Some(sha256),
            ))
        })
    });
    if let Some(rsa) = &s.rsa_der {
        g.bench_function("rsa-2048/der", |b| {
            b.iter(|| black_box(ruleset::cert::parse_der(black_box(rsa)).is_ok()))
        });
    }
    g.finish();
}

/// Median of `runs` timings of `f`.
fn median_of<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    let mut v: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed()
        })
        .collect();
    v.sort();
    v[v.len() / 2]
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

/// The policy the compile benchmark compiles: 1,000 identity rules and one CRL.
fn bench_policy() -> String {
    let mut p = String::from(
        "apiVersion: certgate.dev/v1alpha1\nkind: MeshTLSPolicy\nmetadata:\n  name: bench\n\
         spec:\n  defaultAction: deny\n  revocation:\n    crls: [bench.crl]\n  rules:\n",
    );
    for i in 0..1_000 {
        p.push_str(&format!(
            "    - name: allow-{i}\n      action: allow\n      principals: [\"{}\"]\n",
            tables::identity(i)
        ));
    }
    p
}

struct MemLoader(Vec<u8>);

impl certgate_compiler::Loader for MemLoader {
    fn load(&self, _policy: &certgate_compiler::Input, _path: &str) -> Result<Vec<u8>, String> {
        Ok(self.0.clone())
    }
}

/// The 1M-serial figures of issue 5, timed with plain loops, as a markdown table.
fn revocation_goals(s: &Setup, e: &Engine, big: &[u8]) -> Result<String> {
    let small = ruleset::encode(&tables::table(
        tables::rules(1_000, RuleKind::Exact)?,
        0,
        &[],
    )?)?;
    let per_entry = (big.len() - small.len()) as f64 / MILLION as f64;
    let decode = median_of(5, || Engine::from_bytes(big).is_ok());
    let peers = revoked_peers(s, 100_000);
    let lookup = median_of(5, || {
        peers
            .iter()
            .filter(|p| e.evaluate(p).reason == ruleset::Reason::RevokedSerial)
            .count()
    });
    anyhow::ensure!(
        peers
            .iter()
            .all(|p| e.evaluate(p).reason == ruleset::Reason::RevokedSerial),
        "a revoked peer was not denied as revoked"
    );
    let lookup_ns = lookup.as_nanos() as f64 / peers.len() as f64;
    // The lookup alone, as the engine calls it: 100,000 revoked (hits) and 100,000
    // random other serials (misses) of the same issuer, in a fixed shuffled order.
    let issuer = tables::ca_issuer_id()?;
    let revocation = &e.table().revocation;
    let hits: Vec<Vec<u8>> = tables::random_serials(MILLION, 0x5EED)
        .step_by(10)
        .map(|s| s.to_vec())
        .collect();
    let misses: Vec<Vec<u8>> = tables::random_serials(hits.len(), 0xD1CE)
        .map(|s| s.to_vec())
        .collect();
    let per_lookup = |serials: &[Vec<u8>]| {
        let t = median_of(5, || {
            serials
                .iter()
                .filter(|s| revocation.is_serial_revoked(issuer, black_box(s)))
                .count()
        });
        t.as_nanos() as f64 / serials.len() as f64
    };
    anyhow::ensure!(
        hits.iter().all(|s| revocation.is_serial_revoked(issuer, s))
            && !misses
                .iter()
                .any(|s| revocation.is_serial_revoked(issuer, s)),
        "revocation lookups disagree with the revoked set"
    );
    let (hit_ns, miss_ns_direct) = (per_lookup(&hits), per_lookup(&misses));
    // Misses, the common case: the same valid peers against the same rules with and
    // without the 1M serials; the difference is what the revocation check costs them.
    let valid: Vec<Peer> = (0..100_000u64)
        .map(|i| peer_with(&s.facts, &tables::identity(500), &pki::client_serial(i)))
        .collect();
    let empty = engine(1_000, RuleKind::Exact, 0, &[])?;
    let time_all = |e: &Engine| {
        median_of(5, || {
            valid.iter().filter(|p| e.evaluate(p).admits()).count()
        })
    };
    let miss_ns =
        (time_all(e).as_nanos() as f64 - time_all(&empty).as_nanos() as f64) / valid.len() as f64;

    eprintln!("generating a CRL with {MILLION} entries for the compile benchmark...");
    let crl = s.pki.crl_der(tables::random_serials(MILLION, 0x5EED))?;
    let policy = bench_policy();
    let now = OffsetNow::secs();
    let mut compiled = None;
    let compile = median_of(3, || {
        let c = certgate_compiler::compile(
            vec![certgate_compiler::Input::new("bench.yaml", policy.as_str())],
            &MemLoader(crl.clone()),
            &certgate_compiler::Options { now },
        );
        compiled = Some(c.bytes.is_some());
        if let Some(d) = c.diagnostics.iter().find(|d| d.is_error()) {
            eprintln!("compile error: {d:?}");
        }
    });
    let compiled = compiled.unwrap_or(false);

    let mut out = String::new();
    let mut line = |l: String| {
        out.push_str(&l);
        out.push('\n');
    };
    line("| figure | measured | goal | |".into());
    line("|---|---|---|---|".into());
    line(format!(
        "| table size per revoked serial | {per_entry:.2} bytes ({:.1} MB for 1M) | at most 8 bytes | {} |",
        big.len() as f64 / 1e6,
        verdict(per_entry <= 8.0)
    ));
    line(format!(
        "| decode at VM start (native, 1M serials + 1,000 rules) | {:.1} ms | under 100 ms | {} |",
        decode.as_secs_f64() * 1e3,
        verdict(decode < Duration::from_millis(100))
    ));
    line(format!(
        "| one lookup, native (`is_serial_revoked`, 100k revoked / 100k other serials) | {hit_ns:.0} ns hit, {miss_ns_direct:.0} ns miss | under 200 ns | {} |",
        verdict(hit_ns.max(miss_ns_direct) < 200.0)
    ));
    line(format!(
        "| for context: evaluate() of a revoked peer (returns at the revocation step) | {lookup_ns:.0} ns | | |"
    ));
    line(format!(
        "| for context: evaluate() of a valid peer, 1M serials minus none | {miss_ns:+.0} ns | | |"
    ));
    line(format!(
        "| compile from a 1M-entry CRL ({:.1} MB DER) + 1,000 rules | {} | under 2 s | {} |",
        crl.len() as f64 / 1e6,
        if compiled {
            format!("{:.2} s", compile.as_secs_f64())
        } else {
            "failed".to_string()
        },
        verdict(compiled && compile < Duration::from_secs(2))
    ));
    Ok(out)
}

struct OffsetNow;

impl OffsetNow {
    fn secs() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    }
}

fn run() -> Result<()> {
    let s = Setup::new().context("benchmark setup")?;
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .configure_from_args();
    eprintln!("building the 1,000-rule, 1,000,000-serial table...");
    let big_table = tables::table(tables::rules(1_000, RuleKind::Exact)?, MILLION, &[])?;
    let big = ruleset::encode(&big_table)?;
    // As the filter holds it: decoded from its bytes, the keys read where they lie.
    let big_engine = Engine::new(ruleset::decode_owned(big.clone())?);

    bench_evaluate(&mut c, &s)?;
    bench_revocation(&mut c, &s, &big_engine);
    bench_decode(&mut c, &big)?;
    bench_parse(&mut c, &s);
    c.final_summary();
    let goals = revocation_goals(&s, &big_engine, &big)?;
    println!("\n## Revocation at 1,000,000 serials (issue 5 goals)\n\n{goals}");
    if let Some(dir) = std::env::var_os("CERTGATE_BENCH_DOCS") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir)?;
        let md = format!(
            "Measured {} on {}.\n\n{}\n{goals}",
            utc_now(),
            machine(),
            criterion_table()
        );
        std::fs::write(dir.join("micro.md"), md)?;
        eprintln!("bench-micro: wrote {}", dir.join("micro.md").display());
    }
    Ok(())
}

/// Every benchmark this file defines, as criterion names its result directory.
const IDS: &[&str] = &[
    "evaluate/exact-rules_10_revoked-0",
    "evaluate/exact-rules_1000_revoked-0",
    "evaluate/exact-rules_10000_revoked-0",
    "evaluate/pattern-rules_10_revoked-0",
    "evaluate/pattern-rules_1000_revoked-0",
    "evaluate/pattern-rules_10000_revoked-0",
    "evaluate/exact-rules_1000_revoked-10000",
    "evaluate/exact-rules_1000_revoked-1000000",
    "revocation/revoked-peer_1M",
    "decode/1000-rules",
    "decode/1000-rules+1M-serials",
    "parse/ecdsa-p256_der",
    "parse/ecdsa-p256_pem-as-envoy-gives-it",
    "parse/ecdsa-p256_pem-with-envoys-digest",
    "parse/rsa-2048_der",
];

/// The medians criterion saved for this run's benchmarks (target/criterion), as markdown.
fn criterion_table() -> String {
    let Some(target) = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.ancestors().nth(3)?.to_path_buf()))
    else {
        return String::new();
    };
    let mut out = String::from("| benchmark | median | 95% interval |\n|---|---|---|\n");
    for id in IDS {
        let path = target.join("criterion").join(id).join("new/estimates.json");
        let Ok(v) = std::fs::read_to_string(&path)
            .map_err(anyhow::Error::from)
            .and_then(|t| Ok(serde_json::from_str::<serde_json::Value>(&t)?))
        else {
            continue;
        };
        let m = &v["median"];
        let ns = |x: &serde_json::Value| x.as_f64().unwrap_or(f64::NAN);
        out.push_str(&format!(
            "| {} | {} | {} – {} |\n",
            id.replace('_', "/"),
            human(ns(&m["point_estimate"])),
            human(ns(&m["confidence_interval"]["lower_bound"])),
            human(ns(&m["confidence_interval"]["upper_bound"]))
        ));
    }
    out
}

fn human(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn machine() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = info
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map_or("unknown CPU", |v| v.trim_start_matches([' ', '\t', ':']));
    let cores = info.lines().filter(|l| l.starts_with("processor")).count();
    format!("{cores} × {cpu}")
}

fn utc_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn main() {
    if let Err(e) = run() {
        eprintln!("bench-micro: {e:#}");
        std::process::exit(1);
    }
}
