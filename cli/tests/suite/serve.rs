//! `certgate serve` as a process: the newest valid table (by issue time) with a strong
//! ETag, `304` for a matching `If-None-Match`, a corrupt newest file skipped, a new table
//! picked up, an old table copied in never served, and an exit when its standard input
//! closes; a graceful exit on SIGTERM; and the process under resource limits (memory,
//! file descriptors), which the feed server crate's in-process tests cannot impose.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{certgate, repo_dir};

/// One request on a fresh connection: status, ETag, body.
pub(crate) fn get(
    addr: SocketAddr,
    path: &str,
    if_none_match: Option<&str>,
) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let inm = if_none_match.map_or(String::new(), |e| format!("if-none-match: {e}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: feed\r\n{inm}connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let etag = head
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .unwrap_or_default()
        .to_string();
    (status, etag, raw[split + 4..].to_vec())
}

#[test]
fn serves_the_newest_valid_table_with_etags() {
    let dir = tempfile::tempdir().unwrap();
    let policy = repo_dir().join("policies/zero-trust.yaml");
    let first = dir.path().join("a.cgt");
    let run = certgate(&[
        "compile",
        policy.to_str().unwrap(),
        "-o",
        first.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let bytes = std::fs::read(&first).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_certgate"))
        .args([
            "serve",
            dir.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--poll-ms", "50", "--exit-on-stdin-close"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr: SocketAddr = loop {
        let line = lines.next().unwrap().unwrap();
        if let Some(rest) = line.strip_prefix("listening on http://") {
            break rest.split('/').next().unwrap().parse().unwrap();
        }
    };

    let (status, etag, body) = get(addr, "/table.cgt", None);
    assert_eq!((status, body), (200, bytes.clone()));
    assert!(etag.starts_with('"') && etag.len() == 66, "{etag}");
    assert_eq!(get(addr, "/table.cgt", Some(&etag)).0, 304);
    assert_eq!(get(addr, "/table.cgt", Some("\"other\"")).0, 200);
    assert_eq!(get(addr, "/healthz", None).0, 200);
    assert_eq!(get(addr, "/nope", None).0, 404);

    // A corrupt newer file is skipped; the good table stays.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(dir.path().join("b.cgt"), &bytes[..bytes.len() / 2]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get(addr, "/table.cgt", Some(&etag)).0, 304);

    // A new valid table (other bytes: audit mode) is picked up.
    let audit = dir.path().join("c.cgt");
    let text = std::fs::read_to_string(&policy)
        .unwrap()
        .replace("mode: enforce", "mode: audit");
    let src = dir.path().join("zero-trust.yaml");
    std::fs::write(&src, text).unwrap();
    let run = certgate(&[
        "compile",
        src.to_str().unwrap(),
        "-o",
        audit.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let deadline = Instant::now() + Duration::from_secs(5);
    let (new_etag, new_body) = loop {
        let (status, e, body) = get(addr, "/table.cgt", Some(&etag));
        if status == 200 {
            break (e, body);
        }
        assert!(Instant::now() < deadline, "new table not served");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_ne!(new_etag, etag);
    assert_eq!(new_body, std::fs::read(&audit).unwrap());

    // Regression: the newest file by mtime was served, so copying an old table into the
    // directory (here under a name that also sorts last) rolled the feed back. The
    // issue time decides, and an older table is never served again.
    std::fs::write(dir.path().join("z.cgt"), &bytes).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get(addr, "/table.cgt", Some(&new_etag)).0, 304);
    // Even when the newer table disappears.
    std::fs::remove_file(&audit).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get(addr, "/table.cgt", Some(&new_etag)).0, 304);

    // Closing stdin ends it.
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "serve did not exit on stdin close"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let log: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        log.iter()
            .any(|l| l.contains("b.cgt") && l.contains("not a valid table")),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|l| l.contains("z.cgt") && l.contains("older than the table served")),
        "{log:?}"
    );
}

/// A `certgate serve` child (optionally under `prlimit` with `limits`), its log collected
/// on a thread so it never blocks on a full pipe.
pub(crate) struct Feed {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    pub(crate) addr: SocketAddr,
    pub(crate) log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Feed {
    fn start(dir: &std::path::Path, prlimit: &[&str]) -> Feed {
        Feed::start_with(dir, prlimit, &[])
    }

    pub(crate) fn start_with(dir: &std::path::Path, prlimit: &[&str], extra: &[&str]) -> Feed {
        let mut command = if prlimit.is_empty() {
            Command::new(env!("CARGO_BIN_EXE_certgate"))
        } else {
            let mut c = Command::new("prlimit");
            c.args(prlimit)
                .arg("--")
                .arg(env!("CARGO_BIN_EXE_certgate"));
            c
        };
        let mut child = command
            .args(["serve", dir.to_str().unwrap(), "--listen", "127.0.0.1:0"])
            .args(["--poll-ms", "50", "--exit-on-stdin-close"])
            .args(extra)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let addr: SocketAddr = loop {
            let line = lines
                .next()
                .expect("serve exited before listening")
                .unwrap();
            log.lock().unwrap().push(line.clone());
            if let Some(rest) = line.strip_prefix("listening on http://") {
                break rest.split('/').next().unwrap().parse().unwrap();
            }
        };
        let sink = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Feed {
            child,
            stdin,
            addr,
            log,
        }
    }

    pub(crate) fn logged(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the exit; its code.
    fn wait(&mut self, deadline: Duration) -> Option<i32> {
        let end = Instant::now() + deadline;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < end, "serve did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long a request or an exit may take on a loaded machine.
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

fn compiled_dir() -> (tempfile::TempDir, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.cgt");
    let policy = repo_dir().join("policies/zero-trust.yaml");
    let run = certgate(&[
        "compile",
        policy.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let bytes = std::fs::read(&out).unwrap();
    (dir, bytes)
}

/// Polls `GET /table.cgt` until it is answered 200 with `bytes`.
fn answered(addr: SocketAddr, bytes: &[u8], deadline: Duration) {
    let end = Instant::now() + deadline;
    loop {
        let ok = std::panic::catch_unwind(|| get(addr, "/table.cgt", None));
        if matches!(&ok, Ok((200, _, body)) if body == bytes) {
            return;
        }
        assert!(Instant::now() < end, "no answer: {ok:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sigterm_stops_it_gracefully() {
    let (dir, bytes) = compiled_dir();
    let mut feed = Feed::start(dir.path(), &[]);
    answered(feed.addr, &bytes, DEADLINE);
    let kill = Command::new("kill")
        .args(["-TERM", &feed.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    assert_eq!(feed.wait(DEADLINE), Some(0));
    assert!(feed.logged("SIGTERM: shutting down"));
    assert!(TcpStream::connect(feed.addr).is_err(), "still accepting");
}

/// Regression (issue 15): under a memory limit the 31st connection made `thread::spawn`
/// panic and the process exit 101 (a thread and its stack per connection). Now 2,000
/// idle connections cost a few KB each and a poll is answered.
#[test]
fn a_memory_limit_and_2000_idle_connections_do_not_take_it_down() {
    /// The address-space limit: the idle server reserves about 300 MB (runtime threads'
    /// stacks and malloc arenas); 2,000 threads' stacks alone would need 16 GB.
    const ADDRESS_SPACE: &str = "--as=536870912";
    const IDLE: usize = 2_000;
    let (dir, bytes) = compiled_dir();
    let mut feed = Feed::start(dir.path(), &[ADDRESS_SPACE]);
    let idle: Vec<TcpStream> = (0..IDLE)
        .map(|_| TcpStream::connect(feed.addr).unwrap())
        .collect();
    answered(feed.addr, &bytes, DEADLINE);
    assert!(feed.alive());
    drop(idle);
    answered(feed.addr, &bytes, DEADLINE);
    assert!(feed.alive());
}

/// Out of file descriptors, `accept` fails with EMFILE: logged, backed off, not fatal,
/// and polls are answered again once the descriptors return.
#[test]
fn running_out_of_file_descriptors_is_survived() {
    /// Descriptors for the whole process: a dozen of its own, the rest for clients.
    const NOFILE: &str = "--nofile=64";
    /// Well over what fits.
    const CLIENTS: usize = 200;
    let (dir, bytes) = compiled_dir();
    let mut feed = Feed::start(dir.path(), &[NOFILE]);
    answered(feed.addr, &bytes, DEADLINE);
    let hogs: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| TcpStream::connect(feed.addr).unwrap())
        .collect();
    let end = Instant::now() + DEADLINE;
    while !feed.logged("accept failed, backing off") {
        assert!(Instant::now() < end, "no accept error logged");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(feed.alive());
    drop(hogs);
    answered(feed.addr, &bytes, DEADLINE);
    assert!(feed.alive());
    assert!(
        feed.logged("Too many open files"),
        "{:?}",
        feed.log.lock().unwrap()
    );
}

/// `--policies`: the table is compiled by the server when the policies change, signed
/// with `--sign-key`; a change that does not compile changes nothing and is logged.
#[test]
fn serves_tables_compiled_from_policies_as_they_change() {
    let tables = tempfile::tempdir().unwrap();
    let policies = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("signing.key");
    let run = certgate(&["keygen", "-o", key.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let text = std::fs::read_to_string(repo_dir().join("policies/zero-trust.yaml")).unwrap();
    let policy = policies.path().join("zero-trust.yaml");
    std::fs::write(&policy, &text).unwrap();
    let feed = Feed::start_with(
        tables.path(),
        &[],
        &[
            "--policies",
            policies.path().to_str().unwrap(),
            "--sign-key",
            key.to_str().unwrap(),
        ],
    );
    let (status, etag, first) = get(feed.addr, "/table.cgt", None);
    assert_eq!(status, 200);
    let table = certgate_compiler_decode(&first);
    let public = run.stdout.trim();
    assert!(public.starts_with("ed25519:"), "{public}");
    assert!(table.contains(&format!("signer    {public}")), "{table}");
    assert!(table.contains("enforce"), "{table}");

    // A change that compiles is served.
    std::fs::write(&policy, text.replace("mode: enforce", "mode: audit")).unwrap();
    let end = Instant::now() + DEADLINE;
    let (new_etag, second) = loop {
        let (status, e, body) = get(feed.addr, "/table.cgt", Some(&etag));
        if status == 200 {
            break (e, body);
        }
        assert!(Instant::now() < end, "the changed policy was not served");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_ne!(new_etag, etag);
    assert!(certgate_compiler_decode(&second).contains("audit"));

    // A change that does not compile: logged, and the table served stays.
    std::fs::write(&policy, text.replace("mode: enforce", "mode: sometimes")).unwrap();
    let end = Instant::now() + DEADLINE;
    while !feed.logged("they do not compile") {
        assert!(Instant::now() < end, "{:?}", feed.log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(feed.logged("sometimes"), "{:?}", feed.log.lock().unwrap());
    assert_eq!(get(feed.addr, "/table.cgt", Some(&new_etag)).0, 304);
    assert_eq!(get(feed.addr, "/healthz", None).0, 200);
}

/// `certgate inspect` of table bytes.
pub(crate) fn certgate_compiler_decode(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.cgt");
    std::fs::write(&path, bytes).unwrap();
    let run = certgate(&["inspect", path.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    format!("{}{}", run.stdout, run.stderr)
}
