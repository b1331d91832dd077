//! The adversaries the feed must survive, on real sockets: each holds or abuses
//! connections while a legitimate poll must still be answered.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use certgate_server::Limits;

use super::common::{get, now_ms, table, try_status, wait_for, Running, ANSWER_DEADLINE};

/// Idle connections an attacker holds open (issue 15: 300 of them used to cost 302 threads).
const IDLE_CONNECTIONS: usize = 2_000;
/// Clients that ask for the large table and never read it.
const UNREAD_CLIENTS: usize = 20;
/// Revoked serials in the large table: 8 bytes each, about 8 MB, more than loopback's
/// socket buffers absorb for a client that does not read.
const LARGE_TABLE_SERIALS: u32 = 1_000_000;
/// The request-head deadline in the trickle test.
const HEADER_DEADLINE: Duration = Duration::from_secs(2);
/// The write timeout in the unread-response test.
const WRITE_DEADLINE: Duration = Duration::from_secs(2);
/// How late after its deadline the server may act on a loaded machine.
const SLACK: Duration = Duration::from_secs(15);

#[test]
fn a_poll_is_answered_while_2000_idle_connections_are_held() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = table(now_ms(), None, 10);
    std::fs::write(dir.path().join("t.cgt"), &bytes).unwrap();
    // The idle connections must outlive the test: no header deadline cuts them here.
    let server = Running::start(
        dir.path(),
        Limits {
            header_timeout: Duration::from_secs(600),
            ..Limits::default()
        },
    );
    let idle: Vec<TcpStream> = (0..IDLE_CONNECTIONS)
        .map(|_| TcpStream::connect(server.addr).expect("idle connection"))
        .collect();
    wait_for(
        "the idle connections to be accepted",
        ANSWER_DEADLINE,
        || server.metric("certgate_feed_open_connections") >= (IDLE_CONNECTIONS + 1) as f64,
    );
    let start = Instant::now();
    let reply = get(server.addr, "/table.cgt", None);
    assert_eq!((reply.status, reply.body), (200, bytes));
    assert!(start.elapsed() < ANSWER_DEADLINE, "{:?}", start.elapsed());
    drop(idle);
    wait_for("the idle connections to close", ANSWER_DEADLINE, || {
        server.metric("certgate_feed_open_connections") <= 1.0
    });
}

#[test]
fn connections_over_the_limit_are_closed_at_once_and_polls_resume() {
    const LIMIT: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.cgt"), table(now_ms(), None, 1)).unwrap();
    let server = Running::start(
        dir.path(),
        Limits {
            max_connections: LIMIT,
            header_timeout: Duration::from_secs(600),
            ..Limits::default()
        },
    );
    let idle: Vec<TcpStream> = (0..LIMIT)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    // The limit is full once one more connection is closed without an answer.
    wait_for("a connection over the limit", ANSWER_DEADLINE, || {
        let mut extra = TcpStream::connect(server.addr).unwrap();
        extra.set_read_timeout(Some(ANSWER_DEADLINE)).unwrap();
        let _ = extra.write_all(b"GET /table.cgt HTTP/1.1\r\nhost: f\r\n\r\n");
        let mut buf = [0u8; 64];
        let read = extra.read(&mut buf);
        matches!(read, Ok(0))
            || matches!(read, Err(ref e) if e.kind() == ErrorKind::ConnectionReset)
    });
    drop(idle);
    wait_for(
        "a poll after the idle connections left",
        ANSWER_DEADLINE,
        || try_status(server.addr, "/table.cgt") == Some(200),
    );
    assert!(server.metric("certgate_feed_connections_closed_early_total{reason=\"limit\"}") >= 1.0);
}

#[test]
fn trickled_request_heads_are_cut_at_the_deadline_and_block_no_one() {
    const TRICKLERS: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.cgt"), table(now_ms(), None, 1)).unwrap();
    let server = Running::start(
        dir.path(),
        Limits {
            header_timeout: HEADER_DEADLINE,
            ..Limits::default()
        },
    );
    let addr = server.addr;
    let start = Instant::now();
    let tricklers: Vec<_> = (0..TRICKLERS)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
                // A valid head, one byte per second: it would take a minute to finish.
                let head =
                    b"GET /table.cgt HTTP/1.1\r\nhost: feed\r\nx-slow: aaaaaaaaaaaaaaaa\r\n\r\n";
                let mut answer = Vec::new();
                for byte in head {
                    if s.write_all(std::slice::from_ref(byte)).is_err() {
                        return (start.elapsed(), answer);
                    }
                    let mut buf = [0u8; 512];
                    let stop = Instant::now() + Duration::from_secs(1);
                    while Instant::now() < stop {
                        match s.read(&mut buf) {
                            Ok(0) => return (start.elapsed(), answer),
                            Ok(n) => answer.extend_from_slice(&buf[..n]),
                            Err(e)
                                if e.kind() == ErrorKind::WouldBlock
                                    || e.kind() == ErrorKind::TimedOut => {}
                            Err(_) => return (start.elapsed(), answer),
                        }
                    }
                }
                panic!("a trickled head of {} bytes was never cut", head.len());
            })
        })
        .collect();
    // While they trickle, polls are answered at once.
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..3 {
        let t = Instant::now();
        assert_eq!(get(addr, "/table.cgt", None).status, 200);
        assert!(t.elapsed() < ANSWER_DEADLINE);
    }
    for t in tricklers {
        let (cut_after, answer) = t.join().unwrap();
        assert!(
            cut_after >= HEADER_DEADLINE && cut_after < HEADER_DEADLINE + SLACK,
            "cut after {cut_after:?}"
        );
        // Never a table for a head that did not arrive; hyper may say 408 before closing.
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer}"
        );
    }
    // The counter moves when the server's connection task ends, which can be just after
    // the client saw its socket close.
    wait_for(
        "every cut counted as a header timeout",
        ANSWER_DEADLINE,
        || {
            server.metric("certgate_feed_connections_closed_early_total{reason=\"header_timeout\"}")
                >= TRICKLERS as f64
        },
    );
}

#[test]
fn clients_that_never_read_a_large_table_are_dropped_by_the_write_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = table(now_ms(), None, LARGE_TABLE_SERIALS);
    assert!(bytes.len() > 5_000_000, "{}", bytes.len());
    std::fs::write(dir.path().join("big.cgt"), &bytes).unwrap();
    let server = Running::start(
        dir.path(),
        Limits {
            write_timeout: WRITE_DEADLINE,
            ..Limits::default()
        },
    );
    let start = Instant::now();
    let greedy: Vec<TcpStream> = (0..UNREAD_CLIENTS)
        .map(|_| {
            let mut s = TcpStream::connect(server.addr).unwrap();
            s.write_all(b"GET /table.cgt HTTP/1.1\r\nhost: feed\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    // A poll with a matching ETag is answered while they hold their responses.
    let etag = get(server.addr, "/table.cgt", None)
        .header("etag")
        .unwrap()
        .to_string();
    assert_eq!(get(server.addr, "/table.cgt", Some(&etag)).status, 304);
    wait_for(
        "the unread responses to be dropped",
        WRITE_DEADLINE + SLACK,
        || {
            server.metric("certgate_feed_connections_closed_early_total{reason=\"write_timeout\"}")
                >= UNREAD_CLIENTS as f64
        },
    );
    assert!(start.elapsed() >= WRITE_DEADLINE);
    // What a greedy client finally reads is cut short: the server gave up on it.
    for mut s in greedy {
        s.set_read_timeout(Some(ANSWER_DEADLINE)).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        assert!(got.len() < bytes.len(), "{} of {}", got.len(), bytes.len());
    }
    assert_eq!(get(server.addr, "/table.cgt", Some(&etag)).status, 304);
    wait_for(
        "no connection left open but the metrics poll",
        ANSWER_DEADLINE,
        || server.metric("certgate_feed_open_connections") <= 1.0,
    );
}
