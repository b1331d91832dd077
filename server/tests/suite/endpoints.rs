//! What the feed answers, and which table: ETag and `304`, `HEAD`, readiness by the
//! table's expiry, liveness, metrics that `promtool` accepts, and tables reached through
//! symbolic links the way Kubernetes volumes lay them out.

use std::io::Write;
use std::os::unix::fs::symlink;
use std::process::{Command, Stdio};
use std::time::Duration;

use certgate_server::Limits;

use super::common::{get, now_ms, request, table, wait_for, Running, ANSWER_DEADLINE};

#[test]
fn table_etag_304_and_head() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = table(now_ms(), None, 3);
    std::fs::write(dir.path().join("t.cgt"), &bytes).unwrap();
    let server = Running::start(dir.path(), Limits::default());
    let full = get(server.addr, "/table.cgt", None);
    assert_eq!((full.status, &full.body), (200, &bytes));
    let etag = full.header("etag").unwrap().to_string();
    assert!(etag.starts_with('"') && etag.len() == 66, "{etag}");
    let not_modified = get(server.addr, "/table.cgt", Some(&etag));
    assert_eq!((not_modified.status, not_modified.body.len()), (304, 0));
    assert_eq!(not_modified.header("etag"), Some(etag.as_str()));
    let head = request(server.addr, "HEAD", "/table.cgt", None);
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(bytes.len().to_string().as_str())
    );
    assert!(head.body.is_empty());
    assert_eq!(request(server.addr, "POST", "/table.cgt", None).status, 405);
    assert_eq!(get(server.addr, "/other", None).status, 404);
    assert_eq!(
        server.metric("certgate_feed_requests_total{code=\"304\"}"),
        1.0
    );
}

#[test]
fn readiness_follows_the_tables_expiry_and_liveness_does_not() {
    /// How long the table stays current: long enough to see it ready on a loaded machine.
    const LIFETIME: Duration = Duration::from_secs(3);
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(dir.path(), Limits::default());
    let empty = get(server.addr, "/healthz", None);
    assert_eq!(empty.status, 503);
    assert_eq!(String::from_utf8_lossy(&empty.body), "no valid table yet\n");
    assert_eq!(get(server.addr, "/livez", None).status, 200);
    assert_eq!(get(server.addr, "/table.cgt", None).status, 503);

    let issued = now_ms();
    let expires = issued + u64::try_from(LIFETIME.as_millis()).unwrap();
    std::fs::write(dir.path().join("t.cgt"), table(issued, Some(expires), 1)).unwrap();
    wait_for("the table to be served", ANSWER_DEADLINE, || {
        get(server.addr, "/table.cgt", None).status == 200
    });
    if now_ms() < expires {
        let ready = get(server.addr, "/healthz", None);
        assert!(ready.status == 200 || now_ms() >= expires, "{ready:?}");
    }
    wait_for("the table to expire", LIFETIME + ANSWER_DEADLINE, || {
        now_ms() > expires
    });
    let stale = get(server.addr, "/healthz", None);
    assert_eq!(stale.status, 503);
    let why = String::from_utf8_lossy(&stale.body);
    assert!(why.contains(&format!("expired at {expires} ms")), "{why}");
    // Still served (the filter applies `onStale` itself), and the process is alive.
    assert_eq!(get(server.addr, "/table.cgt", None).status, 200);
    assert_eq!(get(server.addr, "/livez", None).status, 200);
    assert_eq!(
        server.metric("certgate_feed_table_expiry_timestamp_seconds"),
        expires as f64 / 1000.0
    );
}

/// A Kubernetes ConfigMap or Secret volume: the visible name links through `..data`,
/// itself a link to a timestamped directory that an update replaces atomically.
#[test]
fn follows_links_inside_the_directory_and_refuses_links_out_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let d = dir.path();
    let first = table(now_ms(), None, 1);
    std::fs::create_dir(d.join("..2026_01_01_00_00_00.1")).unwrap();
    std::fs::write(d.join("..2026_01_01_00_00_00.1/table.cgt"), &first).unwrap();
    symlink("..2026_01_01_00_00_00.1", d.join("..data")).unwrap();
    symlink("..data/table.cgt", d.join("table.cgt")).unwrap();
    // A newer valid table, but outside the directory: never served.
    let escaped = table(now_ms() + 60_000, None, 2);
    std::fs::write(outside.path().join("x.cgt"), &escaped).unwrap();
    symlink(outside.path().join("x.cgt"), d.join("escape.cgt")).unwrap();
    symlink("../../nowhere.cgt", d.join("dangling.cgt")).unwrap();

    let server = Running::start(d, Limits::default());
    assert_eq!(get(server.addr, "/table.cgt", None).body, first);
    assert_eq!(
        server.metric("certgate_feed_tables_refused_total{reason=\"outside_dir\"}"),
        1.0
    );
    assert_eq!(
        server.metric("certgate_feed_tables_refused_total{reason=\"unreadable\"}"),
        1.0
    );

    // The volume is updated: a new timestamped directory, `..data` swapped by rename.
    let second = table(now_ms() + 1, None, 3);
    std::fs::create_dir(d.join("..2026_01_01_00_01_00.2")).unwrap();
    std::fs::write(d.join("..2026_01_01_00_01_00.2/table.cgt"), &second).unwrap();
    symlink("..2026_01_01_00_01_00.2", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    std::fs::remove_dir_all(d.join("..2026_01_01_00_00_00.1")).unwrap();
    wait_for("the updated volume's table", ANSWER_DEADLINE, || {
        get(server.addr, "/table.cgt", None).body == second
    });
    // Each refused file was counted once, not once per scan.
    std::thread::sleep(super::common::POLL * 5);
    assert_eq!(
        server.metric("certgate_feed_tables_refused_total{reason=\"outside_dir\"}"),
        1.0
    );
}

#[test]
fn an_older_or_corrupt_table_never_replaces_the_one_served() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms();
    let newer = table(now, None, 1);
    std::fs::write(dir.path().join("a.cgt"), &newer).unwrap();
    let server = Running::start(dir.path(), Limits::default());
    assert_eq!(get(server.addr, "/table.cgt", None).body, newer);
    std::fs::write(dir.path().join("z.cgt"), table(now - 1, None, 2)).unwrap();
    std::fs::write(dir.path().join("zz.cgt"), &newer[..newer.len() / 2]).unwrap();
    wait_for("both files refused", ANSWER_DEADLINE, || {
        server.metric("certgate_feed_tables_refused_total{reason=\"older\"}") >= 1.0
            && server.metric("certgate_feed_tables_refused_total{reason=\"undecodable\"}") >= 1.0
    });
    assert_eq!(get(server.addr, "/table.cgt", None).body, newer);
}

/// `/metrics` is valid Prometheus text exposition, as Prometheus' own linter reads it.
/// promtool comes from Debian's `prometheus` package: `make promtool` installs it.
#[test]
fn metrics_pass_promtool() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("t.cgt"),
        table(now_ms(), Some(now_ms() + 3_600_000), 1),
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a table").unwrap();
    let server = Running::start(dir.path(), Limits::default());
    assert_eq!(get(server.addr, "/table.cgt", None).status, 200);
    assert_eq!(get(server.addr, "/nope", None).status, 404);
    let reply = get(server.addr, "/metrics", None);
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let promtool = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("`{promtool}` cannot run ({e}): install it with `make promtool`")
        });
    child.stdin.take().unwrap().write_all(&reply.body).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // promtool exits non-zero on a format error and prints lint problems (naming,
    // units, counters without `_total`); neither may happen.
    assert!(
        out.status.success() && said.trim().is_empty(),
        "{said}\n{}",
        String::from_utf8_lossy(&reply.body)
    );
    for family in [
        "certgate_feed_table_issued_timestamp_seconds",
        "certgate_feed_table_expiry_timestamp_seconds",
        "certgate_feed_requests_total{code=\"404\"}",
        "certgate_feed_sent_bytes_total",
        "certgate_feed_open_connections",
        "certgate_feed_tables_refused_total{reason=\"not_a_table\"}",
    ] {
        assert!(server.metric(family) > 0.0, "{family}");
    }
}

#[test]
fn a_connection_is_closed_after_its_request_limit() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(
        dir.path(),
        Limits {
            max_requests_per_connection: 2,
            ..Limits::default()
        },
    );
    let mut s = std::net::TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(ANSWER_DEADLINE)).unwrap();
    // Three requests on one keep-alive connection: two answers, then the server closes.
    s.write_all(&b"GET /livez HTTP/1.1\r\nhost: feed\r\n\r\n".repeat(3))
        .unwrap();
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw);
    let answers: Vec<&str> = raw.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(answers.len(), 2, "{raw}");
    assert!(answers[0].starts_with("200") && !answers[0].contains("connection: close"));
    assert!(answers[1].starts_with("200") && answers[1].contains("connection: close"));
}

#[test]
fn unusable_configurations_are_refused_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let config = |path: &str, dir: &std::path::Path| certgate_server::Config {
        dir: dir.to_path_buf(),
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        path: path.into(),
        poll: super::common::POLL,
        limits: Limits::default(),
        delta_history: certgate_server::delta::DEFAULT_DELTA_HISTORY,
    };
    for (path, want) in [
        ("table.cgt", "--path must start with `/`"),
        ("/metrics", "--path `/metrics` is taken"),
        ("/healthz", "--path `/healthz` is taken"),
    ] {
        let e = certgate_server::Server::bind(config(path, dir.path())).unwrap_err();
        assert!(e.to_string().contains(want), "{e}");
    }
    let missing = dir.path().join("missing");
    let e = certgate_server::Server::bind(config("/t", &missing)).unwrap_err();
    assert!(e.to_string().contains("is not a directory"), "{e}");
}
