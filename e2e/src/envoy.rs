//! A real Envoy per scenario: a bootstrap generated for the test (listeners with
//! mTLS and the filter entry that `certgate emit` printed, spliced in verbatim), the
//! process started on free ports, waited for, queried through its admin API, and
//! killed when dropped.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::pki::Pki;

/// The filter-state key the filter's audit record is read from in access logs.
pub const AUDIT_FILTER_STATE: &str = "wasm.certgate.audit";

/// Where an access logger sits, as `certgate emit access-log --site` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogSite {
    Listener,
    TcpProxy,
    Http,
}

impl LogSite {
    fn flag(self) -> &'static str {
        match self {
            LogSite::Listener => "listener",
            LogSite::TcpProxy => "tcp-proxy",
            LogSite::Http => "http",
        }
    }
}

/// The access logger `certgate emit access-log --site <site>` prints (ECS JSON, one
/// line per connection or HTTP request), asked of the CLI once per site and process so
/// the suite runs the configuration users are given, writing to `path`, its
/// `certgate.log_source` naming `source` (listener and site).
pub fn access_log(path: &Path, site: LogSite, source: &str) -> Value {
    static EMITTED: std::sync::Mutex<BTreeMap<LogSite, Value>> =
        std::sync::Mutex::new(BTreeMap::new());
    let mut emitted = EMITTED.lock().unwrap_or_else(|e| e.into_inner());
    let entry = emitted.entry(site).or_insert_with(|| {
        emitted_access_log(site).unwrap_or_else(|e| panic!("certgate emit access-log: {e:#}"))
    });
    let mut entry = entry.clone();
    entry["typed_config"]["path"] = json!(path);
    entry["typed_config"]["log_format"]["json_format"]["certgate.log_source"] = json!(source);
    entry
}

fn emitted_access_log(site: LogSite) -> Result<Value> {
    let tools = crate::tools::Tools::locate()?;
    let out = Command::new(&tools.certgate)
        .args([
            "emit",
            "access-log",
            "--format",
            "json",
            "--site",
            site.flag(),
        ])
        .output()
        .with_context(|| format!("running {}", tools.certgate.display()))?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The `DownstreamTlsContext` every test listener uses: Envoy's certificate, client
/// certificates verified against the test root and required (unless `optional`, to
/// prove the filter refuses what a misconfigured Envoy would let in).
pub fn downstream_tls(pki: &Pki, optional: bool) -> Value {
    json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": !optional,
            "common_tls_context": {
                "tls_params": {
                    "tls_minimum_protocol_version": "TLSv1_2",
                    "tls_maximum_protocol_version": "TLSv1_3",
                    // BoringSSL's defaults leave Ed25519 out of the algorithms it
                    // accepts from clients; list it so Ed25519 workloads can connect.
                    "signature_algorithms": [
                        "ecdsa_secp256r1_sha256", "ecdsa_secp384r1_sha384",
                        "rsa_pss_rsae_sha256", "rsa_pss_rsae_sha384", "rsa_pss_rsae_sha512",
                        "rsa_pkcs1_sha256", "rsa_pkcs1_sha384", "rsa_pkcs1_sha512",
                        "ed25519"
                    ]
                },
                "tls_certificates": [{
                    "certificate_chain": {"filename": pki.server_chain_pem},
                    "private_key": {"filename": pki.server_key_pem}
                }],
                "validation_context": {"trusted_ca": {"filename": pki.root_pem}}
            }
        }
    })
}

/// What one listener of the test Envoy does.
#[derive(Debug, Clone)]
pub enum ListenerKind {
    /// Network filters (the filter entry, if any), then tcp_proxy to `cluster`.
    /// `tcp_proxy_extra` is merged into the TcpProxy config (server-first settings).
    Tcp {
        /// The filter entry from `certgate emit envoy`, or `None` for a plain proxy.
        filter: Option<Value>,
        /// Upstream cluster name.
        cluster: String,
        /// Extra TcpProxy fields.
        tcp_proxy_extra: Value,
    },
    /// HTTP connection manager with the HTTP filter entry (if any), then the router.
    Http {
        /// The HTTP filter entry from `certgate emit envoy --http`.
        filter: Option<Value>,
        /// Upstream cluster name.
        cluster: String,
    },
}

/// One listener: its name (how tests find its port) and what it does.
#[derive(Debug, Clone)]
pub struct ListenerSpec {
    /// Listener name.
    pub name: String,
    /// Its filter chain.
    pub kind: ListenerKind,
    /// Whether Envoy lets clients without a certificate finish the handshake.
    pub client_cert_optional: bool,
}

/// A STATIC cluster with one endpoint on 127.0.0.1.
pub fn cluster(name: &str, port: u16) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": "127.0.0.1", "port_value": port}
            }}}]}]
        }
    })
}

fn merge(into: &mut Value, extra: &Value) {
    if let (Some(into), Some(extra)) = (into.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            into.insert(k.clone(), v.clone());
        }
    }
}

/// Builds a bootstrap: admin and every listener on port 0 (Envoy picks free ports and
/// the harness reads them back), access logs to `access_log_path`.
pub fn bootstrap(
    pki: &Pki,
    listeners: &[ListenerSpec],
    clusters: Vec<Value>,
    access_log_path: &Path,
) -> Value {
    let listeners: Vec<Value> = listeners
        .iter()
        .map(|l| {
            let filters = match &l.kind {
                ListenerKind::Tcp {
                    filter,
                    cluster,
                    tcp_proxy_extra,
                } => {
                    let mut tcp = json!({
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                        "stat_prefix": l.name,
                        "cluster": cluster,
                        "access_log": [access_log(access_log_path, LogSite::TcpProxy, &format!("{}/tcp_proxy", l.name))]
                    });
                    merge(&mut tcp, tcp_proxy_extra);
                    let mut f: Vec<Value> = filter.iter().cloned().collect();
                    f.push(json!({"name": "envoy.filters.network.tcp_proxy", "typed_config": tcp}));
                    f
                }
                ListenerKind::Http { filter, cluster } => {
                    let mut http_filters: Vec<Value> = filter.iter().cloned().collect();
                    http_filters.push(json!({
                        "name": "envoy.filters.http.router",
                        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
                    }));
                    vec![json!({
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": l.name,
                            "codec_type": "AUTO",
                            "access_log": [access_log(access_log_path, LogSite::Http, &format!("{}/http", l.name))],
                            "route_config": {"virtual_hosts": [{
                                "name": "all", "domains": ["*"],
                                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}]
                            }]},
                            "http_filters": http_filters
                        }
                    })]
                }
            };
            json!({
                "name": l.name,
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "access_log": [access_log(access_log_path, LogSite::Listener, &format!("{}/listener", l.name))],
                "filter_chains": [{
                    "filters": filters,
                    "transport_socket": downstream_tls(pki, l.client_cert_optional)
                }]
            })
        })
        .collect();
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        // An admin layer lets a test change a runtime key (`/runtime_modify`) on a running
        // Envoy; without one the defaults are Envoy's own, as here.
        "layered_runtime": {"layers": [{"name": "admin", "admin_layer": {}}]},
        "static_resources": {"listeners": listeners, "clusters": clusters}
    })
}

/// A running Envoy. Dropping it kills the process.
#[derive(Debug)]
pub struct Envoy {
    child: Option<Child>,
    watchdog: Option<Child>,
    /// The admin API address.
    pub admin: SocketAddr,
    /// Listener name -> bound port.
    pub ports: BTreeMap<String, u16>,
    /// Envoy's own log (stderr).
    pub log_path: PathBuf,
    /// The access log every listener writes to.
    pub access_log_path: PathBuf,
}

/// Why an Envoy did not come up.
#[derive(Debug)]
pub struct StartError {
    /// What went wrong.
    pub message: String,
    /// The tail of Envoy's log.
    pub log_tail: String,
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\n--- envoy log (tail) ---\n{}",
            self.message, self.log_tail
        )
    }
}

impl std::error::Error for StartError {}

/// The last `n` lines of a file (empty when unreadable).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn envoy_command(envoy: &Path, config: &Path, log: &Path) -> Result<Command> {
    let mut cmd = Command::new(envoy);
    cmd.arg("-c")
        .arg(config)
        // No shared memory, so parallel Envoys never clash on a base id.
        .arg("--disable-hot-restart")
        .args(["--concurrency", "1"])
        .args(["--file-flush-interval-msec", "50"])
        .args(["-l", "info"])
        .args([
            "--component-log-level",
            "upstream:warn,config:warn,main:warn",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(log)?));
    Ok(cmd)
}

/// Runs `envoy --mode validate` on a bootstrap; returns the output on success.
pub fn validate(envoy: &Path, dir: &Path, bootstrap: &Value) -> Result<String> {
    let config = dir.join("validate.json");
    std::fs::write(&config, serde_json::to_vec_pretty(bootstrap)?)?;
    let out = Command::new(envoy)
        .arg("-c")
        .arg(&config)
        .args(["--mode", "validate", "--disable-hot-restart", "-l", "warn"])
        .output()
        .context("running envoy --mode validate")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("envoy --mode validate rejected the config:\n{text}");
    }
    Ok(text)
}

impl Envoy {
    /// Starts Envoy with `bootstrap` in `dir` and waits until it is ready and every
    /// listener is bound.
    pub fn start(envoy: &Path, dir: &Path, bootstrap: &Value) -> Result<Envoy, StartError> {
        let fail = |message: String, log: &Path| StartError {
            message,
            log_tail: tail(log, 40),
        };
        let config = dir.join("envoy.json");
        let log_path = dir.join("envoy.log");
        let admin_path = dir.join("admin.txt");
        let access_log_path = dir.join("access.log");
        let _ = std::fs::remove_file(&admin_path);
        let io = |e: anyhow::Error| fail(format!("{e:#}"), &log_path);
        std::fs::write(
            &config,
            serde_json::to_vec_pretty(bootstrap).map_err(|e| io(e.into()))?,
        )
        .map_err(|e| io(e.into()))?;
        let mut cmd = envoy_command(envoy, &config, &log_path).map_err(io)?;
        cmd.arg("--admin-address-path").arg(&admin_path);
        let child = cmd
            .spawn()
            .map_err(|e| fail(format!("cannot start {}: {e}", envoy.display()), &log_path))?;
        let watchdog = watchdog(child.id());
        let mut me = Envoy {
            child: Some(child),
            watchdog,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            ports: BTreeMap::new(),
            log_path: log_path.clone(),
            access_log_path,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = me.exited() {
                return Err(fail(
                    format!("envoy exited during startup ({status})"),
                    &log_path,
                ));
            }
            if Instant::now() > deadline {
                return Err(fail("envoy not ready after 30s".into(), &log_path));
            }
            std::thread::sleep(Duration::from_millis(50));
            if me.admin.port() == 0 {
                match std::fs::read_to_string(&admin_path)
                    .ok()
                    .and_then(|s| s.trim().parse::<SocketAddr>().ok())
                {
                    Some(addr) => me.admin = addr,
                    None => continue,
                }
            }
            match me.admin_get("/ready") {
                Ok((200, _)) => {}
                _ => continue,
            }
            let Ok((200, body)) = me.admin_get("/listeners?format=json") else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<Value>(&body) else {
                continue;
            };
            let mut ports = BTreeMap::new();
            for l in v["listener_statuses"].as_array().into_iter().flatten() {
                let name = l["name"].as_str().unwrap_or_default().to_string();
                let port = l["local_address"]["socket_address"]["port_value"]
                    .as_u64()
                    .unwrap_or(0);
                if port != 0 {
                    ports.insert(name, port as u16);
                }
            }
            let want = bootstrap["static_resources"]["listeners"]
                .as_array()
                .map_or(0, Vec::len);
            if ports.len() == want {
                me.ports = ports;
                return Ok(me);
            }
        }
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Whether the process is still running.
    /// The process id, while Envoy runs (for reading its memory from `/proc`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Resident bytes of each wasm linear memory in the process, one per VM (see
    /// [`wasm_memories_kb`]).
    pub fn wasm_memories(&self) -> Result<Vec<u64>> {
        let pid = self.pid().context("envoy is not running")?;
        Ok(wasm_memories_kb(pid)?
            .into_iter()
            .map(|kb| kb * 1024)
            .collect())
    }

    pub fn is_running(&mut self) -> bool {
        self.exited().is_none()
    }

    /// The address of listener `name`.
    pub fn addr(&self, name: &str) -> SocketAddr {
        let port = self.ports.get(name).copied().unwrap_or(0);
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// A GET on the admin API: status and body.
    pub fn admin_get(&self, path: &str) -> Result<(u16, String)> {
        http_get(self.admin, path)
    }

    /// POST to the admin API (`/runtime_modify?key=value`, ...): status and body.
    pub fn admin_post(&self, path: &str) -> Result<(u16, String)> {
        let mut s = TcpStream::connect_timeout(&self.admin, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)?;
        parse_response(&buf)
    }

    /// certgate's counter `name` (`wasmcustom.certgate.{name}`); 0 while Envoy has not
    /// reported it or the admin API does not answer.
    pub fn certgate_counter(&self, name: &str) -> u64 {
        self.certgate_stats()
            .unwrap_or_default()
            .get(&format!("wasmcustom.certgate.{name}"))
            .copied()
            .unwrap_or(0)
    }

    /// Every counter and gauge of the filter (Envoy's `wasmcustom.` namespace) whose name
    /// mentions `certgate`, by name; not Envoy's own stats of a cluster named certgate-feed.
    pub fn certgate_stats(&self) -> Result<BTreeMap<String, u64>> {
        let (status, body) = self.admin_get("/stats?format=json&filter=certgate")?;
        if status != 200 {
            bail!("admin /stats answered {status}");
        }
        let v: Value = serde_json::from_str(&body)?;
        let mut out = BTreeMap::new();
        for s in v["stats"].as_array().into_iter().flatten() {
            if let (Some(name), Some(value)) = (s["name"].as_str(), s["value"].as_u64()) {
                if name.starts_with("wasmcustom.") {
                    out.insert(name.to_string(), value);
                }
            }
        }
        Ok(out)
    }

    /// Every access-log record written so far, in order.
    pub fn access_records(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.access_log_path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The tail of Envoy's log.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log_path, n)
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        for mut child in [self.child.take(), self.watchdog.take()]
            .into_iter()
            .flatten()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Resident kilobytes of each wasm linear memory in process `pid`, one per VM. V8
/// reserves several GiB of address space per wasm memory and makes only its current
/// size accessible, so a memory is a read-write mapping that ends exactly where an
/// inaccessible mapping of at least 4 GiB (its guard region) begins. Shared with bench/'s
/// harness, so both read memory the same way.
pub fn wasm_memories_kb(pid: u32) -> Result<Vec<u64>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    // (start, end, permissions, resident kB) of every mapping, in address order.
    let mut maps: Vec<(u64, u64, String, u64)> = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                maps.push((a, b, words.next().unwrap_or("").to_string(), 0));
                continue;
            }
        }
        if first == "Rss:" {
            if let (Some(m), Some(kb)) =
                (maps.last_mut(), words.next().and_then(|v| v.parse().ok()))
            {
                m.3 = kb;
            }
        }
    }
    Ok(maps
        .windows(2)
        .filter(|w| {
            let (mem, guard) = (&w[0], &w[1]);
            mem.2.starts_with("rw")
                && guard.2.starts_with("---")
                && mem.1 == guard.0
                && guard.1 - guard.0 >= 4 << 30
        })
        .map(|w| w[0].3)
        .collect())
}

/// A shell that kills Envoy `pid` if this process dies without dropping the [`Envoy`]
/// (killed by a timeout, aborted): no test run leaves an Envoy behind.
fn watchdog(pid: u32) -> Option<Child> {
    let script = format!(
        "while kill -0 {parent} 2>/dev/null && kill -0 {pid} 2>/dev/null; do sleep 1; done; \
         kill -9 {pid} 2>/dev/null",
        parent = std::process::id()
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

/// A minimal blocking HTTP/1.1 GET (the admin API only; it refuses HTTP/1.0).
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    parse_response(&buf)
}

/// Status and body of a raw HTTP/1.1 response (chunked bodies decoded), as the admin
/// API sends them. Shared with the benchmark harness.
pub fn parse_response(raw: &[u8]) -> Result<(u16, String)> {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("malformed admin response")?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Ok((
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    ))
}

/// Decodes a chunked HTTP/1.1 body (the admin API streams large answers).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(rest.get(..n).unwrap_or_default());
        body = rest.get(n..).unwrap_or_default().trim_start_matches("\r\n");
    }
    out
}
