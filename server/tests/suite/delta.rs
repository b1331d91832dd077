//! Deltas over HTTP (RFC 3229): a poller holding an earlier table that asks with
//! `A-IM: certgate-delta` gets `226 IM Used` and a delta that rebuilds the newest table
//! byte for byte; anyone else gets what they got before (200 or 304).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use certgate_server::Limits;

use super::common::{now_ms, table, wait_for, Reply, Running, ANSWER_DEADLINE};

/// One GET of the table with extra header lines, on a fresh connection.
fn poll(addr: SocketAddr, headers: &[(&str, &str)]) -> Reply {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(ANSWER_DEADLINE)).unwrap();
    let extra: String = headers
        .iter()
        .map(|(n, v)| format!("{n}: {v}\r\n"))
        .collect();
    write!(
        s,
        "GET /table.cgt HTTP/1.1\r\nhost: feed\r\n{extra}connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the response");
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    Reply {
        status,
        head,
        body: raw[split + 4..].to_vec(),
    }
}

fn etag(bytes: &[u8]) -> String {
    ruleset::delta::etag(bytes)
}

#[test]
fn a_poller_holding_an_earlier_table_gets_a_delta_that_rebuilds_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = now_ms();
    let x = table(t0, None, 10_000);
    std::fs::write(dir.path().join("a.cgt"), &x).unwrap();
    let server = Running::start(dir.path(), Limits::default());
    let first = poll(server.addr, &[("a-im", "certgate-delta")]);
    assert_eq!(first.status, 200, "no If-None-Match: the whole table");
    assert_eq!(first.body, x);

    let y = table(t0 + 1, None, 10_001);
    std::fs::write(dir.path().join("b.cgt"), &y).unwrap();
    wait_for("the newer table", ANSWER_DEADLINE, || {
        poll(server.addr, &[]).header("etag") == Some(etag(&y).as_str())
    });

    let base = etag(&x);
    let ask = [("a-im", "certgate-delta"), ("if-none-match", base.as_str())];
    let r = poll(server.addr, &ask);
    assert_eq!(r.status, 226, "{}", r.head);
    assert_eq!(r.header("im"), Some("certgate-delta"));
    assert_eq!(r.header("delta-base"), Some(etag(&x).as_str()));
    assert_eq!(r.header("etag"), Some(etag(&y).as_str()));
    assert!(
        r.body.len() < 1_000,
        "a one-serial delta of {} bytes",
        r.body.len()
    );
    let rebuilt = ruleset::delta::apply(&x, &r.body, 1 << 30).unwrap();
    assert_eq!(rebuilt, y);

    // The same delta again (computed once, kept), and the counters.
    assert_eq!(poll(server.addr, &ask).body, r.body);
    assert_eq!(
        server.metric("certgate_feed_requests_total{code=\"226\"}"),
        2.0
    );
    assert_eq!(server.metric("certgate_feed_deltas_served_total"), 2.0);
    let saved = server.metric("certgate_feed_delta_saved_bytes_total");
    assert_eq!(saved, 2.0 * (y.len() - r.body.len()) as f64);

    // Without A-IM, with a base the server never served, or holding the newest: as before.
    let inm = base;
    assert_eq!(poll(server.addr, &[("if-none-match", &inm)]).status, 200);
    let q0 = [
        ("a-im", "certgate-delta;q=0"),
        ("if-none-match", inm.as_str()),
    ];
    assert_eq!(poll(server.addr, &q0).status, 200);
    let unknown = [("a-im", "certgate-delta"), ("if-none-match", "\"00\"")];
    let r = poll(server.addr, &unknown);
    assert_eq!((r.status, r.body.len()), (200, y.len()));
    let newest = etag(&y);
    let current = [
        ("a-im", "certgate-delta"),
        ("if-none-match", newest.as_str()),
    ];
    assert_eq!(poll(server.addr, &current).status, 304);
}

#[test]
fn no_delta_when_it_would_not_be_much_smaller() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = now_ms();
    // Tiny tables: a delta (with its two digests and the header) is not much smaller.
    let x = table(t0, None, 0);
    std::fs::write(dir.path().join("a.cgt"), &x).unwrap();
    let server = Running::start(dir.path(), Limits::default());
    let y = table(t0 + 1, None, 1);
    std::fs::write(dir.path().join("b.cgt"), &y).unwrap();
    wait_for("the newer table", ANSWER_DEADLINE, || {
        poll(server.addr, &[]).header("etag") == Some(etag(&y).as_str())
    });
    let inm = etag(&x);
    let r = poll(
        server.addr,
        &[("a-im", "certgate-delta"), ("if-none-match", &inm)],
    );
    assert_eq!((r.status, r.body), (200, y));
}

/// A server keeping `keep` earlier tables; stopped by dropping the returned handle.
fn start_keeping(dir: &std::path::Path, keep: usize) -> Running {
    let server = certgate_server::Server::bind(certgate_server::Config {
        dir: dir.to_path_buf(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        path: "/table.cgt".into(),
        poll: super::common::POLL,
        limits: Limits::default(),
        delta_history: keep,
    })
    .expect("bind");
    let addr = server.local_addr().expect("address");
    let shutdown = server.shutdown_handle();
    Running {
        addr,
        shutdown,
        thread: Some(std::thread::spawn(move || server.run())),
    }
}

#[test]
fn only_the_last_delta_history_tables_are_bases() {
    for keep in [0, 1] {
        let dir = tempfile::tempdir().unwrap();
        let t0 = now_ms();
        let tables: Vec<Vec<u8>> = (0..3)
            .map(|i| table(t0 + i, None, 10_000 + i as u32))
            .collect();
        let server = start_keeping(dir.path(), keep);
        for (i, t) in tables.iter().enumerate() {
            std::fs::write(dir.path().join(format!("{i}.cgt")), t).unwrap();
            wait_for("the newer table", ANSWER_DEADLINE, || {
                poll(server.addr, &[]).header("etag") == Some(etag(t).as_str())
            });
        }
        let status = |held: &[u8]| {
            let inm = etag(held);
            poll(
                server.addr,
                &[("a-im", "certgate-delta"), ("if-none-match", &inm)],
            )
            .status
        };
        // The table just before the newest is a base only when one is kept; the one
        // before it never is (evicted): the whole table then.
        assert_eq!(
            status(&tables[1]),
            if keep == 1 { 226 } else { 200 },
            "keep {keep}"
        );
        assert_eq!(status(&tables[0]), 200, "keep {keep}");
    }
    // More than the limit is refused before binding.
    let dir = tempfile::tempdir().unwrap();
    let e = certgate_server::Server::bind(certgate_server::Config {
        dir: dir.path().to_path_buf(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        path: "/table.cgt".into(),
        poll: super::common::POLL,
        limits: Limits::default(),
        delta_history: certgate_server::delta::MAX_DELTA_HISTORY + 1,
    })
    .unwrap_err();
    assert!(e.to_string().contains("--delta-history"), "{e}");
}
