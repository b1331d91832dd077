//! Long-poll and fleet convergence on real sockets: held polls woken together by a new
//! table, the wait honoured and capped, shutdown answering held polls, `/status`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use certgate_server::Limits;

use super::common::{get, now_ms, table, Reply, Running, ANSWER_DEADLINE};

/// Polls held at once in the wake-up test.
const HELD_POLLS: usize = 50;

/// One poll on a fresh connection with the extra header lines `extra`, read to the end.
fn poll(addr: SocketAddr, extra: &str) -> Reply {
    try_poll(addr, extra).unwrap_or_else(|e| panic!("{e}"))
}

/// [`poll`], or why it got no answer (a connection closed or reset by the limit).
fn try_poll(addr: SocketAddr, extra: &str) -> Result<Reply, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "GET /table.cgt HTTP/1.1\r\nhost: feed\r\n{extra}connection: close\r\n\r\n"
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("read the response: {e}"))?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no response head")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    Ok(Reply {
        status: head.split_whitespace().nth(1).unwrap().parse().unwrap(),
        head,
        body: raw[split + 4..].to_vec(),
    })
}

fn etag(server: &Running) -> String {
    get(server.addr, "/table.cgt", None)
        .header("etag")
        .expect("etag")
        .to_owned()
}

#[test]
fn held_polls_are_answered_together_when_a_newer_table_lands() {
    let dir = tempfile::tempdir().unwrap();
    let issued = now_ms();
    std::fs::write(dir.path().join("a.cgt"), table(issued, None, 1)).unwrap();
    // A header deadline far below the wait: a held poll is not a slow request head.
    let server = Running::start(
        dir.path(),
        Limits {
            header_timeout: Duration::from_secs(1),
            ..Limits::default()
        },
    );
    let old = etag(&server);
    let polls: Vec<_> = (0..HELD_POLLS)
        .map(|i| {
            let addr = server.addr;
            let extra = format!(
                "if-none-match: {old}\r\nprefer: wait=60\r\nx-certgate-poller: test/{i}\r\n"
            );
            std::thread::spawn(move || {
                let start = Instant::now();
                (poll(addr, &extra), start.elapsed())
            })
        })
        .collect();
    super::common::wait_for("the polls to be held", ANSWER_DEADLINE, || {
        server.metric("certgate_feed_polls_held") >= HELD_POLLS as f64
    });
    // Held past the header deadline.
    std::thread::sleep(Duration::from_millis(1_500));
    let newer = table(issued + 1, None, 2);
    std::fs::write(dir.path().join("b.cgt"), &newer).unwrap();
    let landed = Instant::now();
    for p in polls {
        let (reply, waited) = p.join().unwrap();
        assert_eq!(reply.status, 200, "{}", reply.head);
        assert_eq!(reply.body, newer);
        assert_eq!(reply.header("preference-applied"), Some("wait=60"));
        assert!(waited >= Duration::from_millis(1_500), "{waited:?}");
    }
    // Answered by the table, not by the 60 s wait.
    assert!(landed.elapsed() < ANSWER_DEADLINE, "{:?}", landed.elapsed());
    let status: serde_json::Value =
        serde_json::from_slice(&get(server.addr, "/status", None).body).unwrap();
    // The held pollers, named by their header, hold the old table; the test's own
    // one-off fetches (no header, no `If-None-Match`) are not pollers.
    assert_eq!(status["pollers"]["newest"], 0);
    assert_eq!(status["pollers"]["total"], HELD_POLLS);
    assert_eq!(status["pollers"]["behind"], HELD_POLLS);
    assert_eq!(status["newest"]["etag"], etag(&server));
    assert_eq!(status["tables"][0]["etag"], old.as_str());
    assert_eq!(status["tables"][0]["pollers"], HELD_POLLS);
    assert_eq!(status["tables"][0]["newest"], false);
    // The pollers poll again naming the new table: converged.
    let new = etag(&server);
    for i in 0..HELD_POLLS {
        let r = poll(
            server.addr,
            &format!("if-none-match: {new}\r\nx-certgate-poller: test/{i}\r\n"),
        );
        assert_eq!(r.status, 304);
    }
    let status: serde_json::Value =
        serde_json::from_slice(&get(server.addr, "/status", None).body).unwrap();
    assert_eq!(status["pollers"]["newest"], HELD_POLLS);
    let named_behind = status["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["poller"].as_str().unwrap().starts_with("test/") && p["newest"] == false)
        .count();
    assert_eq!(named_behind, 0);
    assert_eq!(
        server.metric("certgate_feed_pollers{table=\"newest\"}"),
        HELD_POLLS as f64
    );
}

#[test]
fn while_polls_are_held_the_directory_is_rescanned_quickly() {
    // A scan interval far above the deadline: only the quick rescan can meet it.
    const SLOW_SCAN: Duration = Duration::from_secs(60);
    let dir = tempfile::tempdir().unwrap();
    let issued = now_ms();
    std::fs::write(dir.path().join("a.cgt"), table(issued, None, 1)).unwrap();
    let server = certgate_server::Server::bind(certgate_server::Config {
        dir: dir.path().to_path_buf(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        path: "/table.cgt".into(),
        poll: SLOW_SCAN,
        limits: Limits::default(),
        delta_history: certgate_server::delta::DEFAULT_DELTA_HISTORY,
    })
    .unwrap();
    let addr = server.local_addr().unwrap();
    let shutdown = server.shutdown_handle();
    let running = std::thread::spawn(move || server.run());
    let current = get(addr, "/table.cgt", None)
        .header("etag")
        .unwrap()
        .to_owned();
    let held = std::thread::spawn(move || {
        poll(
            addr,
            &format!("if-none-match: {current}\r\nprefer: wait=60\r\n"),
        )
    });
    super::common::wait_for("the poll to be held", ANSWER_DEADLINE, || {
        String::from_utf8(get(addr, "/metrics", None).body)
            .unwrap()
            .contains("certgate_feed_polls_held 1\n")
    });
    let newer = table(issued + 1, None, 2);
    std::fs::write(dir.path().join("b.cgt"), &newer).unwrap();
    let landed = Instant::now();
    let reply = held.join().unwrap();
    assert_eq!((reply.status, reply.body), (200, newer));
    assert!(landed.elapsed() < ANSWER_DEADLINE, "{:?}", landed.elapsed());
    assert!(landed.elapsed() < SLOW_SCAN);
    shutdown.trigger();
    running.join().unwrap().unwrap();
}

#[test]
fn a_held_poll_ends_after_its_wait_with_304_and_the_wait_is_capped() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.cgt"), table(now_ms(), None, 1)).unwrap();
    let server = Running::start(dir.path(), Limits::default());
    let current = etag(&server);
    let start = Instant::now();
    let r = poll(
        server.addr,
        &format!("if-none-match: {current}\r\nprefer: wait=1\r\n"),
    );
    assert_eq!(r.status, 304);
    assert_eq!(r.header("preference-applied"), Some("wait=1"));
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    // A poll for a table it does not hold is answered at once, whatever it prefers.
    let start = Instant::now();
    let r = poll(
        server.addr,
        "if-none-match: \"old\"\r\nprefer: wait=3600\r\n",
    );
    assert_eq!(r.status, 200);
    assert!(start.elapsed() < ANSWER_DEADLINE);
    // A wait above the cap is applied as the cap.
    assert_eq!(r.header("preference-applied"), Some("wait=60"));
}

#[test]
fn shutdown_answers_held_polls_at_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.cgt"), table(now_ms(), None, 1)).unwrap();
    let mut server = Running::start(dir.path(), Limits::default());
    let current = etag(&server);
    let addr = server.addr;
    let held = std::thread::spawn(move || {
        poll(
            addr,
            &format!("if-none-match: {current}\r\nprefer: wait=60\r\n"),
        )
    });
    super::common::wait_for("the poll to be held", ANSWER_DEADLINE, || {
        server.metric("certgate_feed_polls_held") >= 1.0
    });
    let took = server.stop();
    assert!(took < ANSWER_DEADLINE, "shutdown took {took:?}");
    assert_eq!(held.join().unwrap().status, 304);
}

/// The adversary holding polls: held polls are connections like any other, so the
/// connection limit bounds them, and a connection beyond it is closed at once.
#[test]
fn held_polls_are_bounded_by_the_connection_limit() {
    const LIMIT: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    let issued = now_ms();
    std::fs::write(dir.path().join("a.cgt"), table(issued, None, 1)).unwrap();
    let server = Running::start(
        dir.path(),
        Limits {
            max_connections: LIMIT,
            ..Limits::default()
        },
    );
    let current = etag(&server);
    let held: Vec<_> = (0..LIMIT)
        .map(|_| {
            let addr = server.addr;
            let extra = format!("if-none-match: {current}\r\nprefer: wait=60\r\n");
            // A poll that lost its slot to one of the test's probes tries again.
            std::thread::spawn(move || {
                let start = Instant::now();
                loop {
                    match try_poll(addr, &extra) {
                        Ok(r) => return r,
                        Err(_) if start.elapsed() < ANSWER_DEADLINE => {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    // Every probe is a connection of its own: the limit is full of held polls once a
    // probe is closed without an answer.
    super::common::wait_for("the limit to fill with held polls", ANSWER_DEADLINE, || {
        let mut extra = TcpStream::connect(server.addr).unwrap();
        extra.set_read_timeout(Some(ANSWER_DEADLINE)).unwrap();
        let _ = extra.write_all(b"GET /metrics HTTP/1.1\r\nhost: f\r\n\r\n");
        let mut buf = [0u8; 64];
        match extra.read(&mut buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    });
    // A newer table answers every held poll; the server serves again afterwards.
    let newer = table(issued + 1, None, 2);
    std::fs::write(dir.path().join("b.cgt"), &newer).unwrap();
    for h in held {
        let r = h.join().unwrap();
        assert_eq!((r.status, r.body), (200, newer.clone()));
    }
    super::common::wait_for("a poll after the held ones", ANSWER_DEADLINE, || {
        std::panic::catch_unwind(|| get(server.addr, "/table.cgt", None).status == 200)
            .unwrap_or(false)
    });
    assert!(server.metric("certgate_feed_connections_closed_early_total{reason=\"limit\"}") >= 1.0);
}
