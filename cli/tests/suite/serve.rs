//! `certgate serve` as a process: the newest valid table (by issue time) with a strong
//! ETag, `304` for a matching `If-None-Match`, a corrupt newest file skipped, a new table
//! picked up, an old table copied in never served, and an exit when its standard input
//! closes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{certgate, repo_dir};

/// One request on a fresh connection: status, ETag, body.
fn get(addr: SocketAddr, path: &str, if_none_match: Option<&str>) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
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
