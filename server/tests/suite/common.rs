//! A server started in-process on a free loopback port, tables built with `ruleset`, and a
//! minimal HTTP/1.1 client on `std::net` (so the client has no part in what is tested).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use certgate_server::{Config, Limits, Server, Shutdown};
use ruleset::{Action, AuditLog, Constraints, Mode, Revocation, Table};

/// How long a legitimate request may take on a loaded 2-core machine shared with other
/// builds: generous, and still far below every attack's duration.
pub const ANSWER_DEADLINE: Duration = Duration::from_secs(20);
/// How often the tests' servers re-scan their directory.
pub const POLL: Duration = Duration::from_millis(50);

/// A running server; shut down (gracefully) when dropped.
pub struct Running {
    pub addr: SocketAddr,
    pub shutdown: Shutdown,
    pub thread: Option<JoinHandle<Result<(), certgate_server::Error>>>,
}

impl Running {
    pub fn start(dir: &Path, limits: Limits) -> Running {
        let server = Server::bind(Config {
            dir: dir.to_path_buf(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            path: "/table.cgt".into(),
            poll: POLL,
            limits,
            delta_history: certgate_server::delta::DEFAULT_DELTA_HISTORY,
        })
        .expect("bind");
        let addr = server.local_addr().expect("address");
        let shutdown = server.shutdown_handle();
        let thread = Some(std::thread::spawn(move || server.run()));
        Running {
            addr,
            shutdown,
            thread,
        }
    }

    /// Triggers the shutdown and waits for `run` to return; how long that took.
    pub fn stop(&mut self) -> Duration {
        let start = Instant::now();
        self.shutdown.trigger();
        if let Some(t) = self.thread.take() {
            t.join().expect("server thread").expect("server run");
        }
        start.elapsed()
    }

    /// The value of one sample of `/metrics` (its full name with labels).
    pub fn metric(&self, sample: &str) -> f64 {
        let text = String::from_utf8(get(self.addr, "/metrics", None).body).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no sample {sample} in\n{text}"))
            .parse()
            .unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// An encoded table issued at `issued_at_ms` with `serials` revoked serials (8 bytes each
/// in the table: a million make an 8 MB table).
pub fn table(issued_at_ms: u64, expires_at_ms: Option<u64>, serials: u32) -> Vec<u8> {
    let mut revocation = Revocation::default();
    for n in 0..serials {
        revocation.add_serial(None, &n.to_be_bytes());
    }
    revocation.normalize();
    ruleset::encode(&Table {
        policy_names: vec!["test".into()],
        policy_digest: [7; 32],
        issued_at_ms,
        expires_at_ms,
        signer: None,
        mode: Mode::Enforce,
        default_action: Action::Deny,
        audit_log: AuditLog::Deny,
        constraints: Constraints::default(),
        revocation,
        rules: vec![],
    })
    .expect("encode")
}

/// A response as the tests look at it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// The status of one `GET path` on a fresh connection, or `None` when the connection is
/// refused, reset or answers nothing whole (a server that is closing connections over its
/// limit may reset one opened in that moment; a caller waits for a poll to succeed).
pub fn try_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(ANSWER_DEADLINE)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: feed\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let head = String::from_utf8_lossy(&raw);
    head.split_whitespace().nth(1)?.parse().ok()
}

/// One request on a fresh connection (`connection: close`), read to the end.
pub fn request(addr: SocketAddr, method: &str, path: &str, if_none_match: Option<&str>) -> Reply {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(ANSWER_DEADLINE)).unwrap();
    let inm = if_none_match.map_or(String::new(), |e| format!("if-none-match: {e}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: feed\r\n{inm}connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    Reply {
        status,
        head,
        body: raw[split + 4..].to_vec(),
    }
}

pub fn get(addr: SocketAddr, path: &str, if_none_match: Option<&str>) -> Reply {
    request(addr, "GET", path, if_none_match)
}

/// Polls `cond` every 20 ms until it holds; fails naming `what` after `deadline`.
pub fn wait_for(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
