//! `certgate serve`: the live revocation feed. Serves the newest valid compiled table in a
//! directory over HTTP/1.1 with a strong ETag, so filters polling with `If-None-Match`
//! get `304` until a new table lands; reloads when the directory changes.
//!
//! A table that fails to decode (half-written, corrupt, unknown version) is never served:
//! it is skipped with a logged reason and the last good table stays. A small blocking
//! server on `std::net`, one thread per connection: a feed has a few clients per proxy
//! and answers almost always `304`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use sha2::{Digest, Sha256};

use super::EXIT_OK;

/// Longest request head accepted (request line and headers).
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// An idle keep-alive connection is closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, clap::Args)]
#[command(
    about = "Serve the newest compiled table in DIR over HTTP (the filter's live feed)",
    after_help = "Serves the `*.cgt` file in DIR with the newest issue time (the time `certgate compile` \
stamps into the table, not the file's modification time) at PATH with a strong ETag (the quoted \
SHA-256 of the bytes); `If-None-Match` gets 304. DIR is re-scanned every --poll; a table that \
does not decode is skipped with a logged reason, and a table is served only if it is strictly \
newer than the one served before, so copying an old table into DIR never rolls the feed back. \
Tables are served as they are; the filter verifies their signature. GET /healthz answers 200 once a table is served, else 503.\n\n\
Examples:\n  certgate serve tables/ --listen 127.0.0.1:8080\n  \
certgate compile policies/ -o tables/payments.cgt   # picked up within --poll"
)]
pub struct Args {
    /// Directory holding compiled tables (`*.cgt`; hidden files are ignored).
    pub dir: PathBuf,
    /// Address to listen on (loopback by default; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Request path of the table.
    #[arg(long, default_value = "/table.cgt")]
    pub path: String,
    /// How often DIR is re-scanned, in milliseconds.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub poll_ms: u64,
    /// Exit when standard input reaches end of file (for supervisors and tests that hold a pipe).
    #[arg(long)]
    pub exit_on_stdin_close: bool,
}

/// The table being served.
#[derive(Debug, Clone)]
struct Served {
    bytes: Arc<Vec<u8>>,
    etag: String,
}

/// What a file looked like when it was last read, so an unchanged file is not re-read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: SystemTime,
    len: u64,
}

/// What the directory held at the last scan: per file, its stamp and either its issue
/// time or why it is skipped; and the issue time of the table being served.
#[derive(Debug, Default)]
struct Seen {
    files: std::collections::BTreeMap<PathBuf, (Stamp, Result<u64, String>)>,
    served_issued_ms: Option<u64>,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    if !args.path.starts_with('/') {
        anyhow::bail!("--path must start with `/`, found `{}`", args.path);
    }
    if !args.dir.is_dir() {
        anyhow::bail!("`{}` is not a directory", args.dir.display());
    }
    let listener = TcpListener::bind(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr()?;
    let served: Arc<RwLock<Option<Served>>> = Arc::new(RwLock::new(None));
    let mut seen = Seen::default();
    reload(&args.dir, &served, &mut seen);
    // The address line is what scripts and tests wait for (port 0 resolves here).
    eprintln!(
        "listening on http://{local}{} (tables from `{}`)",
        args.path,
        args.dir.display()
    );

    if args.exit_on_stdin_close {
        std::thread::spawn(|| {
            let mut sink = [0u8; 256];
            let mut stdin = std::io::stdin();
            while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
            eprintln!("standard input closed: exiting");
            std::process::exit(i32::from(EXIT_OK));
        });
    }
    {
        let served = Arc::clone(&served);
        let dir = args.dir.clone();
        let poll = Duration::from_millis(args.poll_ms);
        std::thread::spawn(move || loop {
            std::thread::sleep(poll);
            reload(&dir, &served, &mut seen);
        });
    }
    // SIGINT and SIGTERM keep their default action: the process ends at once, which is
    // safe because nothing here writes files or holds state worth flushing.
    let path: Arc<str> = Arc::from(args.path.as_str());
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let served = Arc::clone(&served);
        let path = Arc::clone(&path);
        std::thread::spawn(move || {
            let _ = handle(stream, &served, &path);
        });
    }
    Ok(EXIT_OK)
}

/// Re-scans `dir` and serves the table with the newest issue time, if it is strictly
/// newer than the one served: copying an old table into the directory (or touching it)
/// never rolls the feed back. Every file skipped is logged once per change, with why.
fn reload(dir: &Path, served: &RwLock<Option<Served>>, seen: &mut Seen) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut present = std::collections::BTreeSet::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || !name.ends_with(".cgt") {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        let Ok(modified) = meta.modified() else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let stamp = Stamp {
            modified,
            len: meta.len(),
        };
        present.insert(path.clone());
        if seen.files.get(&path).is_some_and(|(s, _)| *s == stamp) {
            continue;
        }
        let verdict = match std::fs::read(&path) {
            Err(e) => Err(format!("cannot read it: {e}")),
            Ok(bytes) => ruleset::decode(&bytes)
                .map(|t| t.issued_at_ms)
                .map_err(|e| format!("not a valid table ({e})")),
        };
        match (&verdict, seen.served_issued_ms) {
            (Err(why), _) => eprintln!("skipping `{}`: {why}", path.display()),
            (Ok(i), Some(served)) if *i < served => eprintln!(
                "skipping `{}`: issued {i} ms, older than the table served (issued {served} ms)",
                path.display()
            ),
            _ => {}
        }
        seen.files.insert(path, (stamp, verdict));
    }
    seen.files.retain(|p, _| present.contains(p));
    // Newest by issue time; ties by name, so the choice does not depend on directory order.
    let Some((path, issued)) = seen
        .files
        .iter()
        .filter_map(|(p, (_, v))| v.as_ref().ok().map(|i| (p.clone(), *i)))
        .max_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)))
    else {
        return;
    };
    if seen.served_issued_ms.is_some_and(|s| issued <= s) {
        return;
    }
    let name = path.display().to_string();
    // Read again: the bytes served are the ones decoded now, not an earlier version.
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("skipping `{name}`: cannot read it: {e}");
            return;
        }
    };
    let table = match ruleset::decode(&bytes) {
        Ok(t) if t.issued_at_ms == issued => t,
        Ok(_) | Err(_) => {
            // Changed between the scan and now: the next scan sees the new version.
            seen.files.remove(&path);
            return;
        }
    };
    let etag = format!(
        "\"{}\"",
        ruleset::cert::hex_lower(Sha256::digest(&bytes).as_slice())
    );
    eprintln!(
        "serving `{name}`: {} bytes, issued {} ms, {} rules, {} revoked serials, {}, etag {etag}",
        bytes.len(),
        table.issued_at_ms,
        table.rules.len(),
        table.revocation.serial_count(),
        table
            .signer
            .as_ref()
            .map_or("unsigned".to_string(), |k| format!(
                "signed by {}",
                ruleset::signature::key_id(k)
            )),
    );
    if let Some(old) = seen.served_issued_ms {
        for (p, (_, v)) in &seen.files {
            if let Ok(i) = v {
                if *i <= old && p != &path {
                    eprintln!(
                        "skipping `{}`: issued {i} ms, not newer than the table served before",
                        p.display()
                    );
                }
            }
        }
    }
    if let Ok(mut s) = served.write() {
        *s = Some(Served {
            bytes: Arc::new(bytes),
            etag,
        });
        seen.served_issued_ms = Some(issued);
    }
}

/// Serves requests on one connection until the client closes it or asks to.
fn handle(stream: TcpStream, served: &RwLock<Option<Served>>, path: &str) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let Some(request) = read_head(&mut reader)? else {
            return Ok(());
        };
        let current = served.read().ok().and_then(|s| s.clone());
        let response = respond(&request, current.as_ref(), path);
        write_response(&mut out, &response, request.method == "HEAD")?;
        if request.close {
            return Ok(());
        }
    }
}

#[derive(Debug, Default)]
struct Request {
    method: String,
    target: String,
    if_none_match: Option<String>,
    close: bool,
}

#[derive(Debug)]
struct Response {
    status: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Arc<Vec<u8>>,
}

fn read_head(reader: &mut impl BufRead) -> std::io::Result<Option<Request>> {
    let mut request = Request::default();
    let mut total = 0usize;
    let mut first = true;
    loop {
        let mut line = String::new();
        let n = reader
            .by_ref()
            .take((MAX_HEAD_BYTES - total.min(MAX_HEAD_BYTES)) as u64)
            .read_line(&mut line)?;
        if n == 0 {
            return Ok(None);
        }
        total += n;
        if total >= MAX_HEAD_BYTES {
            return Ok(None);
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if first {
            if line.is_empty() {
                continue; // tolerate a stray CRLF between requests
            }
            let mut parts = line.split(' ');
            request.method = parts.next().unwrap_or_default().to_string();
            request.target = parts.next().unwrap_or_default().to_string();
            request.close = parts.next() == Some("HTTP/1.0");
            first = false;
            continue;
        }
        if line.is_empty() {
            return Ok(Some(request));
        }
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("if-none-match") {
                request.if_none_match = Some(value.to_string());
            } else if name.eq_ignore_ascii_case("connection") {
                request.close = value.eq_ignore_ascii_case("close");
            }
        }
    }
}

fn respond(request: &Request, served: Option<&Served>, path: &str) -> Response {
    let text = |status, body: &str| Response {
        status,
        headers: vec![("content-type", "text/plain".to_string())],
        body: Arc::new(body.as_bytes().to_vec()),
    };
    if request.method != "GET" && request.method != "HEAD" {
        let mut r = text("405 Method Not Allowed", "only GET and HEAD\n");
        r.headers.push(("allow", "GET, HEAD".into()));
        return r;
    }
    let target = request.target.split('?').next().unwrap_or_default();
    if target == "/healthz" {
        return match served {
            Some(_) => text("200 OK", "ok\n"),
            None => text("503 Service Unavailable", "no valid table yet\n"),
        };
    }
    if target != path {
        return text("404 Not Found", "not found\n");
    }
    let Some(served) = served else {
        return text("503 Service Unavailable", "no valid table yet\n");
    };
    let headers = vec![
        ("etag", served.etag.clone()),
        ("cache-control", "no-cache".into()),
    ];
    if request
        .if_none_match
        .as_deref()
        .is_some_and(|inm| etag_matches(inm, &served.etag))
    {
        return Response {
            status: "304 Not Modified",
            headers,
            body: Arc::new(Vec::new()),
        };
    }
    let mut headers = headers;
    headers.push(("content-type", "application/octet-stream".into()));
    Response {
        status: "200 OK",
        headers,
        body: Arc::clone(&served.bytes),
    }
}

/// `If-None-Match` uses the weak comparison (RFC 9110 13.1.2): `W/` is ignored; `*` matches.
fn etag_matches(header: &str, etag: &str) -> bool {
    header.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}

fn write_response(out: &mut TcpStream, r: &Response, head_only: bool) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {}\r\n", r.status);
    for (name, value) in &r.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    // 304 has no body and no content-length of its own representation.
    if !r.status.starts_with("304") {
        head.push_str(&format!("content-length: {}\r\n", r.body.len()));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    if !head_only && !r.status.starts_with("304") {
        out.write_all(&r.body)?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served() -> Served {
        Served {
            bytes: Arc::new(vec![1, 2, 3]),
            etag: "\"abc\"".into(),
        }
    }

    fn get(target: &str, inm: Option<&str>) -> Request {
        Request {
            method: "GET".into(),
            target: target.into(),
            if_none_match: inm.map(str::to_string),
            close: false,
        }
    }

    #[test]
    fn etag_and_conditional_get() {
        let s = served();
        let r = respond(&get("/table.cgt", None), Some(&s), "/table.cgt");
        assert_eq!(r.status, "200 OK");
        assert_eq!(*r.body, vec![1, 2, 3]);
        assert!(r.headers.contains(&("etag", "\"abc\"".into())));
        for inm in ["\"abc\"", "W/\"abc\"", "\"x\", \"abc\"", "*"] {
            let r = respond(&get("/table.cgt", Some(inm)), Some(&s), "/table.cgt");
            assert_eq!(r.status, "304 Not Modified", "{inm}");
        }
        let r = respond(&get("/table.cgt", Some("\"old\"")), Some(&s), "/table.cgt");
        assert_eq!(r.status, "200 OK");
    }

    #[test]
    fn health_missing_table_and_other_paths() {
        assert_eq!(
            respond(&get("/healthz", None), None, "/t").status,
            "503 Service Unavailable"
        );
        assert_eq!(
            respond(&get("/healthz", None), Some(&served()), "/t").status,
            "200 OK"
        );
        assert_eq!(
            respond(&get("/t", None), None, "/t").status,
            "503 Service Unavailable"
        );
        assert_eq!(
            respond(&get("/x", None), Some(&served()), "/t").status,
            "404 Not Found"
        );
        let mut post = get("/t", None);
        post.method = "POST".into();
        assert_eq!(
            respond(&post, Some(&served()), "/t").status,
            "405 Method Not Allowed"
        );
    }

    #[test]
    fn reads_request_heads() {
        let raw = b"GET /table.cgt HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"a\"\r\nConnection: close\r\n\r\n";
        let r = read_head(&mut &raw[..]).unwrap().unwrap();
        assert_eq!(
            (r.method.as_str(), r.target.as_str()),
            ("GET", "/table.cgt")
        );
        assert_eq!(r.if_none_match.as_deref(), Some("\"a\""));
        assert!(r.close);
        assert!(read_head(&mut &b""[..]).unwrap().is_none());
    }
}
