//! The Envoy under test: one bootstrap with a listener per benchmark case (so every
//! case runs in the same process, with the same certificates, and rounds interleave
//! without restarts), the process pinned to one core, and what the harness reads from
//! it: admin counters, CPU time from `/proc/<pid>/stat`, wasm memory from `smaps`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::pki::Pki;

/// Filter-state key of certgate's audit record (the filter sets `certgate.audit`;
/// Envoy prefixes properties set by wasm with `wasm.`).
pub const AUDIT_FILTER_STATE: &str = "wasm.certgate.audit";

/// TLS 1.3 only, client certificate required, session resumption off (every
/// connection pays a full handshake, as the issue asks).
pub fn downstream_tls(pki: &Pki) -> Value {
    json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": true,
            "disable_stateless_session_resumption": true,
            "disable_stateful_session_resumption": true,
            "common_tls_context": {
                "tls_params": {
                    "tls_minimum_protocol_version": "TLSv1_3",
                    "tls_maximum_protocol_version": "TLSv1_3"
                },
                "tls_certificates": [{
                    "certificate_chain": {"inline_string": pki.server_cert_pem},
                    "private_key": {"inline_string": pki.server_key_pem}
                }],
                "validation_context": {"trusted_ca": {"inline_string": pki.ca_pem()}}
            }
        }
    })
}

/// A proxy-wasm plugin entry; `http` selects the HTTP filter type. `root_id` selects
/// certgate's front end (`certgate` network, `certgate-http` HTTP; docs/filter.md).
pub fn wasm_filter(
    http: bool,
    vm_id: &str,
    root_id: &str,
    wasm: &Path,
    configuration: &str,
) -> Value {
    let (name, ty) = if http {
        (
            "envoy.filters.http.wasm",
            "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        )
    } else {
        (
            "envoy.filters.network.wasm",
            "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm",
        )
    };
    json!({
        "name": name,
        "typed_config": {
            "@type": ty,
            "config": {
                "name": vm_id,
                "root_id": root_id,
                "vm_config": {
                    "vm_id": vm_id,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": wasm}}
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": configuration
                },
                "fail_open": false
            }
        }
    })
}

/// certgate's filter configuration (the JSON in the StringValue).
pub fn certgate_config(table_b64: &str, audit_log: &str) -> String {
    json!({
        "table": table_b64,
        "mode": "enforce",
        "audit": {"log": audit_log},
        "serverFirst": false,
        "certCacheSize": 1024,
        "logAllDecisions": false
    })
    .to_string()
}

/// Native RBAC (case r1): one policy whose principals are the identities, a list
/// Envoy walks in order.
pub fn rbac_principal_list(identities: &[String]) -> Value {
    let principals: Vec<Value> = identities
        .iter()
        .map(|id| json!({"authenticated": {"principal_name": {"exact": id}}}))
        .collect();
    json!({
        "name": "envoy.filters.network.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
            "stat_prefix": "r1.",
            "rules": {
                "action": "ALLOW",
                "policies": {"identities": {"permissions": [{"any": true}], "principals": principals}}
            }
        }
    })
}

/// Native RBAC (case r2): the identities as an exact-match map over the URI SAN, a hash
/// lookup (Envoy's fastest form of the same policy).
pub fn rbac_matcher_tree(identities: &[String]) -> Value {
    let action = |name: &str, action: &str| {
        json!({"action": {"name": name, "typed_config": {
            "@type": "type.googleapis.com/envoy.config.rbac.v3.Action",
            "name": name, "action": action
        }}})
    };
    let map: serde_json::Map<String, Value> = identities
        .iter()
        .map(|id| (id.clone(), action("allow", "ALLOW")))
        .collect();
    json!({
        "name": "envoy.filters.network.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
            "stat_prefix": "r2.",
            "matcher": {
                "matcher_tree": {
                    "input": {"name": "uri_san", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.matching.common_inputs.ssl.v3.UriSanInput"
                    }},
                    "exact_match_map": {"map": map}
                },
                "on_no_match": action("deny", "DENY")
            }
        }
    })
}

/// What a listener does after its filter (if any).
#[derive(Debug, Clone)]
pub enum Terminal {
    /// tcp_proxy to the backend cluster, with an access log.
    TcpProxy,
    /// HTTP connection manager answering 200 itself (no upstream), with the filter
    /// (if any) as an HTTP filter.
    Http,
    /// The same HTTP connection manager, with the filter (if any) as a NETWORK filter
    /// before it: it decides once per connection, and requests never reach it.
    HttpBehindNetworkFilter,
}

/// One listener of the bootstrap.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Name; the harness finds the port by it.
    pub name: String,
    /// The network or HTTP filter under test, if any.
    pub filter: Option<Value>,
    /// What follows it.
    pub terminal: Terminal,
}

fn access_log(path: &Path) -> Value {
    json!({
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": path,
            "log_format": {"json_format": {
                "start": "%START_TIME%",
                "downstream": "%DOWNSTREAM_REMOTE_ADDRESS%",
                "peer_uri_san": "%DOWNSTREAM_PEER_URI_SAN%",
                "bytes_sent": "%BYTES_SENT%",
                "audit": format!("%FILTER_STATE({AUDIT_FILTER_STATE}:PLAIN)%")
            }}
        }
    })
}

/// The bootstrap: admin and listeners on 127.0.0.1 port 0 (Envoy picks free ports),
/// one STATIC cluster `backend` at `backend`.
pub fn bootstrap(
    pki: &Pki,
    listeners: &[Listener],
    backend: SocketAddr,
    access_log_path: &Path,
) -> Value {
    let listeners: Vec<Value> = listeners
        .iter()
        .map(|l| {
            let filters: Vec<Value> = match l.terminal {
                Terminal::TcpProxy => {
                    let mut f: Vec<Value> = l.filter.iter().cloned().collect();
                    f.push(json!({"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                        "stat_prefix": l.name,
                        "cluster": "backend",
                        // Every case logs the same line; only (e) has an audit record in it.
                        "access_log": [access_log(access_log_path)]
                    }}));
                    f
                }
                Terminal::Http | Terminal::HttpBehindNetworkFilter => {
                    let http_filter = matches!(l.terminal, Terminal::Http);
                    let mut http_filters: Vec<Value> =
                        l.filter.iter().filter(|_| http_filter).cloned().collect();
                    http_filters.push(json!({"name": "envoy.filters.http.router", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                    }}));
                    let mut f: Vec<Value> =
                        l.filter.iter().filter(|_| !http_filter).cloned().collect();
                    f.push(json!({"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": l.name,
                        "codec_type": "HTTP1",
                        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{
                            "match": {"prefix": "/"},
                            "direct_response": {"status": 200, "body": {"inline_string": "ok"}}
                        }]}]},
                        "http_filters": http_filters
                    }}));
                    f
                }
            };
            json!({
                "name": l.name,
                // Listeners bound to port 0 would otherwise all count under
                // `listener.127.0.0.1_0.`.
                "stat_prefix": l.name,
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": filters, "transport_socket": downstream_tls(pki)}]
            })
        })
        .collect();
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": listeners,
            "clusters": [{
                "name": "backend",
                "type": "STATIC",
                "connect_timeout": "2s",
                "load_assignment": {"cluster_name": "backend", "endpoints": [{"lb_endpoints": [{
                    "endpoint": {"address": {"socket_address": {
                        "address": "127.0.0.1", "port_value": backend.port()
                    }}}
                }]}]}
            }]
        }
    })
}

/// A running Envoy. Dropping it kills the process (and `make` kills it by the pid file
/// if the harness itself is killed).
#[derive(Debug)]
pub struct Envoy {
    child: Option<Child>,
    /// Process id.
    pub pid: u32,
    /// Admin API address.
    pub admin: SocketAddr,
    /// Listener name -> address.
    pub listeners: BTreeMap<String, SocketAddr>,
    /// Envoy's own log.
    pub log_path: PathBuf,
    pid_file: Option<PathBuf>,
}

pub use certgate_e2e::envoy::tail;

impl Envoy {
    /// Starts `envoy` on `bootstrap` in `dir`, pinned to `cpu` at nice level `priority`,
    /// and waits until every listener is bound. Writes the pid to `pid_file` while it runs.
    pub async fn start(
        envoy: &Path,
        dir: &Path,
        bootstrap: &Value,
        cpu: usize,
        priority: i32,
        pid_file: Option<&Path>,
    ) -> Result<Envoy> {
        let config = dir.join("envoy.json");
        let log_path = dir.join("envoy.log");
        let admin_path = dir.join("admin.txt");
        std::fs::write(&config, serde_json::to_vec(bootstrap)?)?;
        // `nice` and `taskset` exec in turn, so the child's pid is Envoy's. A raised
        // priority (root only; otherwise nice keeps the default) keeps other jobs on a
        // shared machine from stealing the measured core.
        let child = Command::new("nice")
            .args([
                "-n",
                &priority.to_string(),
                "taskset",
                "-c",
                &cpu.to_string(),
            ])
            .arg(envoy)
            .arg("-c")
            .arg(&config)
            .args(["--concurrency", "1", "--use-dynamic-base-id"])
            .args(["-l", "warn"])
            .arg("--admin-address-path")
            .arg(&admin_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log_path)?))
            .spawn()
            .with_context(|| format!("starting taskset {}", envoy.display()))?;
        let pid = child.id();
        if let Some(p) = pid_file {
            std::fs::write(p, format!("{pid}\n"))?;
        }
        let mut me = Envoy {
            child: Some(child),
            pid,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            listeners: BTreeMap::new(),
            log_path,
            pid_file: pid_file.map(Path::to_path_buf),
        };
        let want = bootstrap["static_resources"]["listeners"]
            .as_array()
            .map_or(0, Vec::len);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = me.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!(
                    "envoy exited during startup ({status}):\n{}",
                    tail(&me.log_path, 30)
                );
            }
            if Instant::now() > deadline {
                bail!("envoy not ready after 120 s:\n{}", tail(&me.log_path, 30));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            if me.admin.port() == 0 {
                match std::fs::read_to_string(&admin_path)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                {
                    Some(a) => me.admin = a,
                    None => continue,
                }
            }
            let Ok((200, _)) = me.get("/ready").await else {
                continue;
            };
            let Ok((200, body)) = me.get("/listeners?format=json").await else {
                continue;
            };
            let v: Value = serde_json::from_str(&body)?;
            let mut ls = BTreeMap::new();
            for l in v["listener_statuses"].as_array().into_iter().flatten() {
                let port = l["local_address"]["socket_address"]["port_value"].as_u64();
                if let (Some(name), Some(port)) = (l["name"].as_str(), port) {
                    ls.insert(
                        name.to_string(),
                        SocketAddr::from(([127, 0, 0, 1], u16::try_from(port)?)),
                    );
                }
            }
            if ls.len() == want {
                me.listeners = ls;
                return Ok(me);
            }
        }
    }

    /// The address of listener `name`.
    pub fn addr(&self, name: &str) -> Result<SocketAddr> {
        self.listeners
            .get(name)
            .copied()
            .with_context(|| format!("no listener `{name}`"))
    }

    /// An admin GET: status and body.
    pub async fn get(&self, path: &str) -> Result<(u16, String)> {
        admin_get(self.admin, path).await
    }

    /// Counters whose name matches the admin `filter` regex.
    pub async fn counters(&self, filter: &str) -> Result<BTreeMap<String, u64>> {
        let (status, body) = self
            .get(&format!("/stats?format=json&filter={filter}"))
            .await?;
        if status != 200 {
            bail!("admin /stats answered {status}");
        }
        let v: Value = serde_json::from_str(&body)?;
        Ok(v["stats"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| Some((s["name"].as_str()?.to_string(), s["value"].as_u64()?)))
            .collect())
    }

    /// CPU time (user + system, all threads) used so far.
    pub fn cpu(&self) -> Result<Duration> {
        process_cpu(self.pid)
    }

    /// Resident kilobytes of each wasm linear memory in the process (the e2e harness's
    /// reading of `smaps`, so both measure the same thing).
    pub fn wasm_memories_kb(&self) -> Result<Vec<u64>> {
        certgate_e2e::envoy::wasm_memories_kb(self.pid)
    }

    /// Resident set size of the whole process, in kilobytes.
    pub fn rss_kb(&self) -> Result<u64> {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        text.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .context("no VmRSS")
    }

    /// Stops Envoy now.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(p) = self.pid_file.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Clock ticks per second of `/proc/<pid>/stat` times.
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// utime + stime of a process (every thread, including exited ones).
pub fn process_cpu(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may contain spaces:
    // state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11).context("no utime")?.parse::<u64>()?
        + f.get(12).context("no stime")?.parse::<u64>()?;
    Ok(Duration::from_nanos(ticks * 1_000_000_000 / clock_ticks()))
}

/// A minimal HTTP/1.1 GET for the admin API (chunked bodies decoded).
pub async fn admin_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut s = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .context("admin connect timed out")??;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .context("admin read timed out")??;
    certgate_e2e::envoy::parse_response(&buf)
}
