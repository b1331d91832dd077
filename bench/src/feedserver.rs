//! The servers of the feed load test, each a real process on loopback serving the same
//! table file: `certgate serve` (the release binary, over a directory holding the table)
//! and the baseline a user would reach for, Debian's nginx serving the table as a static
//! file with `etag on`, from a configuration generated into a scratch directory and run
//! unprivileged (as `nobody` when the harness runs as root). Dropping a server kills it.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long a server may take to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);
/// The table's request path on both servers.
pub const TABLE_PATH: &str = "/table.cgt";
/// uid and gid of `nobody` on Debian: nginx runs as it when the harness is root.
const NOBODY: u32 = 65534;

/// Which server a phase measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `certgate serve`.
    Certgate,
    /// nginx, the baseline.
    Nginx,
}

impl Kind {
    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Certgate => "certgate",
            Kind::Nginx => "nginx",
        }
    }
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    /// What it is.
    pub kind: Kind,
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
    /// Kept open: `certgate serve --exit-on-stdin-close` exits when the harness dies.
    _stdin: Option<std::process::ChildStdin>,
    log: PathBuf,
}

impl Server {
    /// The process id (nginx: its master).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every process of the server (nginx: master and workers).
    pub fn pids(&self) -> Vec<u32> {
        crate::procstat::with_children(self.pid())
    }

    /// The last lines of its log, for an error message.
    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }

    /// Lines in its log so far (certgate logs refusals and skipped files there).
    pub fn log_lines(&self) -> usize {
        std::fs::read_to_string(&self.log).map_or(0, |t| t.lines().count())
    }
}

/// How long nginx may take to stop its workers after SIGTERM before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

impl Drop for Server {
    fn drop(&mut self) {
        // nginx's workers outlive a killed master, so the master is asked to stop them
        // (SIGTERM: fast shutdown) and whatever is left afterwards is killed.
        let pids = self.pids();
        if self.kind == Kind::Nginx {
            if let Some(pid) = i32::try_from(self.pid())
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            let deadline = Instant::now() + STOP_GRACE;
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        for p in pids.iter().skip(1) {
            if let Some(pid) = i32::try_from(*p)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// Starts `certgate serve DIR` on a free loopback port, at most `max_connections`
/// connections, logging into `log`, and waits for its address line.
pub fn certgate(bin: &Path, dir: &Path, max_connections: usize, log: &Path) -> Result<Server> {
    certgate_with(bin, dir, max_connections, log, &[])
}

/// [`certgate`] with further `certgate serve` flags (the fleet simulation's scan interval).
pub fn certgate_with(
    bin: &Path,
    dir: &Path,
    max_connections: usize,
    log: &Path,
    extra: &[String],
) -> Result<Server> {
    let err = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut child = Command::new(bin)
        .arg("serve")
        .arg(dir)
        .args(["--listen", "127.0.0.1:0", "--path", TABLE_PATH])
        .args(["--max-connections", &max_connections.to_string()])
        .arg("--exit-on-stdin-close")
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdin = child.stdin.take();
    let mut server = Server {
        kind: Kind::Certgate,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        child,
        _stdin: stdin,
        log: log.to_path_buf(),
    };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let addr = text.lines().find_map(|l| {
            let rest = l.strip_prefix("listening on http://")?;
            rest.split('/').next()?.parse::<SocketAddr>().ok()
        });
        if let Some(addr) = addr {
            server.addr = addr;
            return Ok(server);
        }
        if let Some(status) = server.child.try_wait()? {
            bail!("certgate serve exited ({status}):\n{}", tail(log));
        }
        if Instant::now() > deadline {
            bail!(
                "certgate serve did not listen within {START_TIMEOUT:?}:\n{}",
                tail(log)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// nginx's settings that matter for the comparison.
#[derive(Debug, Clone)]
pub struct NginxSettings {
    /// Worker processes.
    pub workers: usize,
    /// Connections per worker (`worker_connections`).
    pub connections: usize,
    /// Idle keep-alive and request-head deadline, as certgate's `--header-timeout-ms`.
    pub header_timeout: Duration,
    /// Requests per connection, as certgate's `--max-requests-per-connection`.
    pub max_requests: u32,
}

/// The nginx configuration: the table at [`TABLE_PATH`] from `root`, `etag on`, no access
/// log, every path nginx writes inside `dir`.
pub fn nginx_conf(dir: &Path, root: &Path, port: u16, fds: u64, s: &NginxSettings) -> String {
    let d = dir.display();
    let header_s = s.header_timeout.as_secs().max(1);
    format!(
        "# Generated by bench-feed: the feed load test's baseline.
worker_processes {workers};
worker_rlimit_nofile {fds};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
daemon off;
events {{
    worker_connections {conns};
}}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    types {{ }}
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    etag on;
    keepalive_timeout {header_s}s;
    client_header_timeout {header_s}s;
    keepalive_requests {reqs};
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {root};
        location = {TABLE_PATH} {{ }}
        location / {{ return 404; }}
    }}
}}
",
        workers = s.workers,
        conns = s.connections,
        reqs = s.max_requests,
        root = root.display(),
    )
}

/// `nginx -v`'s version, e.g. `1.22.1`.
pub fn nginx_version(bin: &Path) -> Option<String> {
    let out = Command::new(bin).arg("-v").output().ok()?;
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    Some(text.split_once("nginx/")?.1.trim().to_string())
}

/// Starts nginx on a free loopback port with a configuration in `dir` (which it then
/// owns), serving `table` (copied to `dir/www`).
pub fn nginx(bin: &Path, dir: &Path, table: &[u8], fds: u64, s: &NginxSettings) -> Result<Server> {
    let root = dir.join("www");
    std::fs::create_dir_all(&root)?;
    std::fs::write(root.join(TABLE_PATH.trim_start_matches('/')), table)?;
    // A free port: bind, read it, let go (nginx binds it a moment later).
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(dir, &root, port, fds, s))?;
    let root_user = rustix::process::geteuid().is_root();
    if root_user {
        // The parent directory must let `nobody` through (the caller makes it 0755).
        for entry in [
            dir.to_path_buf(),
            root.clone(),
            root.join(TABLE_PATH.trim_start_matches('/')),
            conf.clone(),
        ] {
            std::os::unix::fs::chown(&entry, Some(NOBODY), Some(NOBODY))
                .with_context(|| format!("chown {}", entry.display()))?;
        }
    }
    let log = dir.join("error.log");
    let mut cmd = Command::new(bin);
    cmd.arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if root_user {
        use std::os::unix::process::CommandExt as _;
        // std drops the supplementary groups when root changes uid.
        cmd.uid(NOBODY).gid(NOBODY);
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut server = Server {
        kind: Kind::Nginx,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        child,
        _stdin: None,
        log,
    };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if std::net::TcpStream::connect(server.addr).is_ok() {
            return Ok(server);
        }
        if let Some(status) = server.child.try_wait()? {
            bail!("nginx exited ({status}):\n{}", server.log_tail());
        }
        if Instant::now() > deadline {
            bail!(
                "nginx did not listen within {START_TIMEOUT:?}:\n{}",
                server.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_conf_serves_the_table_with_etags_inside_its_dir() {
        let s = NginxSettings {
            workers: 2,
            connections: 12_000,
            header_timeout: Duration::from_secs(10),
            max_requests: 10_000,
        };
        let c = nginx_conf(Path::new("/x"), Path::new("/x/www"), 8123, 20_000, &s);
        for want in [
            "listen 127.0.0.1:8123 backlog=4096;",
            "etag on;",
            "worker_processes 2;",
            "worker_connections 12000;",
            "worker_rlimit_nofile 20000;",
            "keepalive_timeout 10s;",
            "client_header_timeout 10s;",
            "keepalive_requests 10000;",
            "location = /table.cgt { }",
            "root /x/www;",
        ] {
            assert!(c.contains(want), "missing `{want}` in\n{c}");
        }
        // Nothing outside its directory: every absolute path starts with it.
        for word in c.split_whitespace().filter(|w| w.starts_with('/')) {
            assert!(
                word.starts_with("/x") || word.starts_with("/table.cgt") || word == "/",
                "{word}"
            );
        }
    }
}
