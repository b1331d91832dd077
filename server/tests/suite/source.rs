//! Tables produced by a [`Source`] (what `certgate serve --policies` compiles) compete with
//! the directory's files under the same rules.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use certgate_server::{Config, Limits, Server, Source};

use super::common::{get, now_ms, table, wait_for, ANSWER_DEADLINE, POLL};

/// A source fed by the test through a channel.
struct Fed(mpsc::Receiver<Result<Vec<u8>, String>>);

impl Source for Fed {
    fn name(&self) -> String {
        "the test".into()
    }

    fn poll(&mut self) -> Option<Result<Vec<u8>, String>> {
        self.0.try_recv().ok()
    }
}

#[test]
fn a_sources_tables_follow_the_same_rules_as_files() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms();
    let file = table(now, None, 1);
    std::fs::write(dir.path().join("t.cgt"), &file).unwrap();
    let (tx, rx) = mpsc::channel();
    let server = Server::bind_with_source(
        Config {
            dir: dir.path().to_path_buf(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            path: "/table.cgt".into(),
            poll: POLL,
            limits: Limits::default(),
            delta_history: certgate_server::delta::DEFAULT_DELTA_HISTORY,
        },
        Some(Box::new(Fed(rx))),
    )
    .unwrap();
    let addr = server.local_addr().unwrap();
    let shutdown = server.shutdown_handle();
    let thread = std::thread::spawn(move || server.run());
    let body = || get(addr, "/table.cgt", None).body;
    let refused = |reason: &str| {
        let text = String::from_utf8(get(addr, "/metrics", None).body).unwrap();
        let sample = format!("certgate_feed_tables_refused_total{{reason=\"{reason}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&sample))
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert_eq!(body(), file);

    // Older than the file served: refused. Not a table, or a failure: refused, file stays.
    tx.send(Ok(table(now - 1, None, 2))).unwrap();
    wait_for("the older table refused", ANSWER_DEADLINE, || {
        refused("older") == 1
    });
    tx.send(Ok(b"not a table".to_vec())).unwrap();
    wait_for("the bytes refused", ANSWER_DEADLINE, || {
        refused("undecodable") == 1
    });
    tx.send(Err("does not compile".into())).unwrap();
    wait_for("the failure counted", ANSWER_DEADLINE, || {
        refused("source_failed") == 1
    });
    assert_eq!(body(), file);

    // Newer: served; and a file copied in later that is older than it is not.
    let produced = table(now + 1, None, 3);
    tx.send(Ok(produced.clone())).unwrap();
    wait_for("the produced table", ANSWER_DEADLINE, || body() == produced);
    std::fs::write(dir.path().join("u.cgt"), table(now, None, 4)).unwrap();
    std::thread::sleep(POLL * 5 + Duration::from_millis(100));
    assert_eq!(body(), produced);

    shutdown.trigger();
    thread.join().unwrap().unwrap();
}
