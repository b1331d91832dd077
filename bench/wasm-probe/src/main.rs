//! Times what the filter does for a client certificate it has not seen, piece by piece,
//! built for wasm32-wasip1 with the filter's `wasm-release` profile and run under V8
//! (node's WASI, Liftoff off as in Envoy): `make bench-wasm-probe`. Envoy's own profile
//! cannot split the wasm share by function; this can, on the same compiler and engine.
//!
//! Arguments: a PEM leaf (as Envoy's `connection.peer_certificate` gives it; `leaf.pem`
//! is an ECDSA P-256 client certificate with one SPIFFE ID, like the Envoy benchmark's)
//! and the number of iterations. Rows are µs per call: the best of five rounds of calls
//! in a loop, and for "cold caches" the median of single calls after the CPU caches
//! were flushed, which is closer to Envoy, where TLS handshakes run between two calls.

use std::cell::{Cell, RefCell};
use std::hint::black_box;
use std::time::Instant;

use base64::Engine as _;
use certgate_filter::cache::CertCache;
use certgate_filter::config::Config;
use certgate_filter::host::{Host, Level};
use certgate_filter::peer::{gather, Needs};
use certgate_filter::shared::Shared;
use ruleset::{cert, AuditLog};
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509CertificateParser;
use x509_parser::nom::Parser as _;

/// A host that answers the certificate attributes and, for audit records, the
/// connection's, with the values Envoy gives in the benchmark.
#[derive(Debug)]
struct ProbeHost {
    digest: RefCell<String>,
    pem: Vec<u8>,
}

impl Host for ProbeHost {
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        match path {
            ["connection", "sha256_peer_certificate_digest"] => {
                Some(self.digest.borrow().as_bytes().to_vec())
            }
            ["connection", "peer_certificate"] => Some(self.pem.clone()),
            ["connection", "tls_version"] => Some(b"TLSv1.3".to_vec()),
            ["connection", "requested_server_name"] => {
                Some(b"checkout.prod.svc.cluster.local".to_vec())
            }
            ["connection", "id"] => Some(31u64.to_le_bytes().to_vec()),
            ["destination", "port"] => Some(8443u64.to_le_bytes().to_vec()),
            ["source", "address"] => Some(b"10.1.2.3:40000".to_vec()),
            _ => None,
        }
    }
    fn set_property(&self, _: &[&str], _: &[u8]) {}
    fn log(&self, _: Level, _: &str) {}
    fn log_enabled(&self, _: Level) -> bool {
        false
    }
    fn define_counter(&self, _: &str) -> Option<u32> {
        None
    }
    fn increment_counter(&self, _: u32) {}
    fn define_gauge(&self, _: &str) -> Option<u32> {
        None
    }
    fn set_gauge(&self, _: u32, _: u64) {}
    fn close_downstream(&self) {}
    fn resume_downstream(&self) {}
    fn enter_context(&self, _: u32) -> bool {
        false
    }
    fn send_http_response(&self, _: u32, _: &[(&str, &str)], _: &[u8]) {}
    fn reset_http_stream(&self) {}
    fn plugin_configuration(&self, _: usize, _: usize) -> Option<Vec<u8>> {
        None
    }
    fn now_nanos(&self) -> u64 {
        1_780_000_000_000_000_000
    }
    fn monotonic_nanos(&self) -> u64 {
        1_000_000_000
    }
    fn set_tick_period_millis(&self, _: u64) {}
    fn dispatch_http_call(&self, _: &str, _: &[(&str, &str)], _: u64) -> Option<u32> {
        None
    }
    fn http_call_response_header(&self, _: &str) -> Option<Vec<u8>> {
        None
    }
    fn http_call_response_body(&self, _: usize) -> Option<Vec<u8>> {
        None
    }
}

/// Prints the best of five rounds of `n / 5` calls, after `n / 10` warm-up calls.
fn time<T>(name: &str, n: u32, mut f: impl FnMut() -> T) {
    let round = (n / 5).max(1);
    for _ in 0..n / 10 {
        black_box(f());
    }
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..round {
            black_box(f());
        }
        best = best.min(start.elapsed().as_secs_f64() * 1e6 / f64::from(round));
    }
    println!("{name:<40} {best:8.2} µs");
}

/// Prints the median of 1,000 single calls, each after writing 8 MiB of other memory.
fn time_cold<T>(name: &str, mut f: impl FnMut() -> T) {
    let mut other = vec![0u8; 8 << 20];
    let mut times = Vec::with_capacity(1000);
    for round in 0..1000u32 {
        for b in other.iter_mut().step_by(64) {
            *b = b.wrapping_add(round.to_le_bytes()[0]);
        }
        black_box(&other);
        let start = Instant::now();
        black_box(f());
        times.push(start.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    let median = times.get(times.len() / 2).copied().unwrap_or(f64::NAN);
    println!("{name:<40} {median:8.2} µs");
}

/// Per-VM state with case (c)'s rules and 100,000 revoked serials, allowing the leaf
/// in `pem`, writing an audit record for `audit_log`'s decisions.
fn warm_shared(pem: &[u8], host: &ProbeHost, audit_log: AuditLog) -> Result<Shared, String> {
    use ruleset::{Action, Constraints, Mode, Pattern, Revocation, Rule, Table};
    let facts = cert::parse_pem_or_der(pem).map_err(|e| e.to_string())?;
    let id = facts
        .first()
        .and_then(|f| f.uri_sans.first())
        .cloned()
        .ok_or("the probe's leaf has no URI SAN")?;
    let rule = |name: String, principal: &str| -> Result<Rule, String> {
        Ok(Rule {
            name,
            policy: 0,
            action: Action::Allow,
            principals: vec![Pattern::parse(principal).map_err(|e| e.to_string())?],
            not_principals: vec![],
            ports: vec![],
            sni: vec![],
            source_cidrs: vec![],
        })
    };
    let mut rules = vec![rule("allow-probe".into(), &id)?];
    for i in 0..999 {
        rules.push(rule(
            format!("allow-{i}"),
            &format!("spiffe://example.org/ns/bench/sa/workload-{i}"),
        )?);
    }
    let mut revocation = Revocation::default();
    let mut x = 0x5eed_u64;
    for _ in 0..100_000 {
        // xorshift: random 16-byte serials of one issuer.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let serial: Vec<u8> = x
            .to_be_bytes()
            .iter()
            .chain(&x.to_le_bytes())
            .copied()
            .collect();
        revocation.add_serial(Some(0x1234_5678), &serial);
    }
    let mut table = Table {
        policy_names: vec!["probe".into()],
        policy_digest: [7; 32],
        issued_at_ms: 0,
        expires_at_ms: None,
        signer: None,
        mode: Mode::Enforce,
        default_action: Action::Deny,
        audit_log,
        constraints: Constraints::default(),
        revocation,
        rules,
    };
    table.normalize();
    let config = Config {
        table: ruleset::encode(&table).map_err(|e| e.to_string())?,
        mode: None,
        audit_log: None,
        server_first: false,
        cert_cache_size: 1024,
        log_all_decisions: false,
        feed: None,
    };
    Shared::new(config, host).map_err(|e| e.to_string())
}

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: wasm-probe LEAF.pem [ITERATIONS]")?;
    let n: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let pem = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
    let der = cert::pem_blocks(&pem)
        .map_err(|e| e.to_string())?
        .into_iter()
        .next()
        .ok_or("no PEM block")?
        .der;
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).map_err(|e| e.to_string())?;
    let sha256: [u8; 32] = Sha256::digest(&der).into();
    let b64: Vec<u8> = std::str::from_utf8(&pem)
        .map_err(|e| e.to_string())?
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .flat_map(str::bytes)
        .collect();

    println!("pieces");
    time("  PEM blocks (base64 included)", n, || {
        cert::pem_blocks(&pem)
    });
    time("  base64 decode alone", n, || {
        base64::engine::general_purpose::STANDARD.decode(&b64)
    });
    time("  x509 parse, every extension", n, || {
        x509_parser::parse_x509_certificate(&der).is_ok()
    });
    time("  x509 parse, extensions undecoded", n, || {
        X509CertificateParser::new()
            .with_deep_parse_extensions(false)
            .parse(&der)
            .is_ok()
    });
    time("  SHA-256 of the DER (Envoy has it)", n, || {
        Sha256::digest(&der)
    });
    time("  issuer + subject display form", n, || {
        (
            ruleset::dn::format_name(parsed.issuer()),
            ruleset::dn::format_name(parsed.subject()),
        )
    });
    time("  issuer id", n, || {
        ruleset::dn::issuer_id_of(parsed.issuer())
    });
    let hex = cert::hex_lower(&sha256);
    time("  Envoy's hex digest to bytes", n, || {
        cert::parse_fingerprint(&hex)
    });

    println!("whole");
    time("  parse_der (hashes the DER)", n, || cert::parse_der(&der));
    time("  parse_der_with_sha256", n, || {
        cert::parse_der_with_sha256(&der, sha256)
    });
    time("  peer_cert_from_pem", n, || cert::peer_cert_from_pem(&pem));
    time("  peer_cert_from_pem_with_sha256", n, || {
        cert::peer_cert_from_pem_with_sha256(&pem, Some(sha256))
    });

    // Digests never seen before, one per call, so every gather misses the cache.
    let digests: Vec<String> = (0..u64::from(n) * 2)
        .map(|i| format!("{:064x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
        .collect();
    let next = Cell::new(0usize);
    let fresh = || {
        let i = next.get();
        next.set(i.wrapping_add(1) % digests.len());
        digests.get(i).cloned().unwrap_or_default()
    };
    let host = ProbeHost {
        digest: RefCell::new(String::new()),
        pem: pem.clone(),
    };
    let needs = Needs::NONE;
    let certs = RefCell::new(CertCache::new(1024));
    println!("filter");
    time("  gather, new certificate (cache miss)", n, || {
        *host.digest.borrow_mut() = fresh();
        gather(&host, &certs, needs)
    });
    time("  gather, known certificate (cache hit)", n, || {
        gather(&host, &certs, needs)
    });

    // The whole warm decision of case (c): 1,000 exact-identity rules (this leaf's among
    // them) and revoked serials, the certificate already cached. 100,000 serials, not
    // (c)'s million: node 20 segfaults on exit after a wasm memory that large, and a
    // lookup reads one directory bucket either way.
    let shared = warm_shared(&pem, &host, AuditLog::Deny)?;
    let audited = warm_shared(&pem, &host, AuditLog::All)?;
    *host.digest.borrow_mut() = hex.clone();
    for s in [&shared, &audited] {
        if !s.decide_peer(&host).0.admit {
            return Err("the probe's leaf is not admitted by the probe's table".into());
        }
    }
    time("  decide, known certificate (as (c))", n, || {
        shared.decide_peer(&host)
    });
    let active = shared.table.active().ok_or("no table")?;
    let peer = shared.decide_peer(&host).1;
    time("    evaluate (the decision it remembers)", n, || {
        active.engine.evaluate(&peer).admits()
    });
    time("  decide with an audit record (as (e))", n, || {
        audited.decide_peer(&host)
    });
    // The record built whole, as for a certificate seen for the first time.
    let mut full = peer.clone();
    certgate_filter::peer::complete(&host, &mut full, Needs::ALL);
    let decision = active.engine.evaluate(&full);
    time("    audit record built whole", n, || {
        certgate_filter::audit::record(
            &decision,
            &full,
            certgate_filter::audit::Context {
                policy_digest: &active.policy_digest,
                decision_id: "18bc1d2e3f4a5b6c-1f-2a",
                now_nanos: 1_796_538_642_123_456_789,
                source_port: Some(40000),
                destination_ip: Some(std::net::IpAddr::from([10, 0, 0, 1])),
            },
        )
    });

    println!("cold caches");
    time_cold("  peer_cert_from_pem_with_sha256", || {
        cert::peer_cert_from_pem_with_sha256(&pem, Some(sha256))
    });
    time_cold("  gather, new certificate (cache miss)", || {
        *host.digest.borrow_mut() = fresh();
        gather(&host, &certs, needs)
    });
    time_cold("  gather, known certificate (cache hit)", || {
        gather(&host, &certs, needs)
    });
    *host.digest.borrow_mut() = hex.clone();
    time_cold("  decide, known certificate (as (c))", || {
        shared.decide_peer(&host)
    });
    time_cold("    evaluate (the decision it remembers)", || {
        active.engine.evaluate(&peer).admits()
    });
    time_cold("  decide with an audit record (as (e))", || {
        audited.decide_peer(&host)
    });
    Ok(())
}
