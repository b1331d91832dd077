//! Graceful shutdown: stop accepting, let a response in flight finish, close idle
//! connections, and never wait longer than the grace period.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use certgate_server::Limits;

use super::common::{now_ms, table, Running, ANSWER_DEADLINE};

/// Revoked serials in the table of the in-flight test: a few MB, so its response is still
/// being written when the shutdown starts.
const SERIALS: u32 = 500_000;

#[test]
fn a_response_in_flight_finishes_and_idle_connections_close() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = table(now_ms(), None, SERIALS);
    std::fs::write(dir.path().join("t.cgt"), &bytes).unwrap();
    let mut server = Running::start(
        dir.path(),
        Limits {
            shutdown_grace: ANSWER_DEADLINE,
            ..Limits::default()
        },
    );
    let addr = server.addr;
    let mut idle = TcpStream::connect(addr).unwrap();
    let mut busy = TcpStream::connect(addr).unwrap();
    busy.write_all(b"GET /table.cgt HTTP/1.1\r\nhost: feed\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 1];
    busy.read_exact(&mut first).unwrap();
    let stopping = std::thread::spawn(move || server.stop());
    // The rest of the response still arrives, whole.
    busy.set_read_timeout(Some(ANSWER_DEADLINE)).unwrap();
    let mut rest = Vec::new();
    busy.read_to_end(&mut rest).unwrap();
    let split = rest.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    assert_eq!(&rest[split + 4..], &bytes[..]);
    // The idle one was closed, and the server ended within its grace period.
    idle.set_read_timeout(Some(ANSWER_DEADLINE)).unwrap();
    assert_eq!(idle.read(&mut [0u8; 16]).unwrap(), 0);
    let took = stopping.join().unwrap();
    assert!(took < ANSWER_DEADLINE + Duration::from_secs(5), "{took:?}");
    assert!(TcpStream::connect(addr).is_err(), "still accepting");
}

#[test]
fn the_grace_period_bounds_the_wait_for_a_client_that_never_reads() {
    /// The grace period: short, and far below the write timeout.
    const GRACE: Duration = Duration::from_secs(1);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.cgt"), table(now_ms(), None, 1_000_000)).unwrap();
    let mut server = Running::start(
        dir.path(),
        Limits {
            shutdown_grace: GRACE,
            write_timeout: Duration::from_secs(600),
            ..Limits::default()
        },
    );
    let mut greedy = TcpStream::connect(server.addr).unwrap();
    greedy
        .write_all(b"GET /table.cgt HTTP/1.1\r\nhost: feed\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 1];
    greedy.read_exact(&mut first).unwrap();
    let took = server.stop();
    assert!(took >= GRACE && took < GRACE + ANSWER_DEADLINE, "{took:?}");
}
