//! CRLs named by URL (`revocation.crlUrls`) through `certgate serve --policies`: a CRL
//! served by a tiny HTTP server in the test is fetched, verified against `crlIssuers`,
//! compiled and published; an unchanged CRL is answered `304` and changes nothing; a new
//! CRL is published; a CRL signed by another key, an oversized and a trickled response, and
//! a replayed older CRL are refused, counted and logged, and the table served stays.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::serve::{certgate_compiler_decode, get, Feed, DEADLINE};

/// What the test server answers on `GET /ca.crl`.
#[derive(Clone)]
enum Answer {
    /// The CRL with this ETag; `304` when the request's `If-None-Match` matches.
    Crl(Vec<u8>, String),
    /// A `200` with this many bytes.
    Oversized(usize),
    /// Headers, then one byte every 200 ms, forever.
    Trickle,
}

#[derive(Default)]
struct Seen {
    requests: usize,
    not_modified: usize,
}

fn crl_server(answer: Arc<Mutex<Answer>>, seen: Arc<Mutex<Seen>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { continue };
            let answer = answer.lock().unwrap().clone();
            let seen = Arc::clone(&seen);
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read(&mut b).unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                seen.lock().unwrap().requests += 1;
                let _ = match answer {
                    Answer::Crl(body, etag) => {
                        if head.contains(&format!("if-none-match: {}", etag.to_ascii_lowercase())) {
                            seen.lock().unwrap().not_modified += 1;
                            write!(s, "HTTP/1.1 304 Not Modified\r\netag: {etag}\r\nconnection: close\r\n\r\n")
                        } else {
                            write!(s, "HTTP/1.1 200 OK\r\netag: {etag}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len())
                                .and_then(|()| s.write_all(&body))
                        }
                    }
                    Answer::Oversized(n) => write!(
                        s,
                        "HTTP/1.1 200 OK\r\ncontent-length: {n}\r\nconnection: close\r\n\r\n"
                    )
                    .and_then(|()| s.write_all(&vec![0x30; n])),
                    Answer::Trickle => write!(
                        s,
                        "HTTP/1.1 200 OK\r\ncontent-length: 100000\r\nconnection: close\r\n\r\n"
                    )
                    .and_then(|()| loop {
                        s.write_all(b"0")?;
                        std::thread::sleep(Duration::from_millis(200));
                    }),
                };
            });
        }
    });
    addr
}

fn ca(name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    rcgen::CertifiedIssuer::self_signed(p, rcgen::KeyPair::generate().unwrap()).unwrap()
}

/// A CRL of `issuer` revoking `serials`, issued on day `day` of 2026.
fn crl(
    issuer: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    day: u8,
    serials: &[u8],
) -> Vec<u8> {
    rcgen::CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(2026, 1, day),
        next_update: rcgen::date_time_ymd(2040, 1, 1),
        crl_number: rcgen::SerialNumber::from_slice(&[day]),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|s| rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from_slice(&[*s]),
                revocation_time: rcgen::date_time_ymd(2026, 1, 1),
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    }
    .signed_by(issuer)
    .unwrap()
    .der()
    .to_vec()
}

/// Waits until `cond` holds, polling.
fn until(what: &str, feed: &Feed, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        assert!(
            Instant::now() < end,
            "{what}: {:?}",
            feed.log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `certgate_feed_crl_fetch_failures_total{reason}` as the feed reports it.
fn failures(feed: &Feed, reason: &str) -> u64 {
    let (_, _, body) = get(feed.addr, "/metrics", None);
    let text = String::from_utf8(body).unwrap();
    let prefix = format!("certgate_feed_crl_fetch_failures_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |n| n.parse().unwrap())
}

fn serials(table: &[u8]) -> String {
    let text = certgate_compiler_decode(table);
    text.lines()
        .find(|l| l.starts_with("revocation"))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn crls_by_url_are_fetched_verified_and_published_and_bad_ones_change_nothing() {
    let issuer = ca("CRL Test CA");
    let impostor = ca("CRL Test CA"); // same name, another key
    let answer = Arc::new(Mutex::new(Answer::Crl(
        crl(&issuer, 1, &[1]),
        "\"v1\"".into(),
    )));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let server = crl_server(Arc::clone(&answer), Arc::clone(&seen));

    let tables = tempfile::tempdir().unwrap();
    let policies = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    std::fs::write(policies.path().join("ca.pem"), issuer.pem()).unwrap();
    std::fs::write(
        policies.path().join("p.yaml"),
        format!(
            "apiVersion: certgate.dev/v1alpha1\nkind: MeshTLSPolicy\nmetadata: {{name: crl-urls}}\nspec:\n  defaultAction: allow\n  revocation:\n    crlIssuers: [ca.pem]\n    crlUrls: [http://{server}/ca.crl]\n"
        ),
    )
    .unwrap();
    let feed = Feed::start_with(
        tables.path(),
        &[],
        &[
            "--policies",
            policies.path().to_str().unwrap(),
            "--crl-refresh",
            "1",
            "--crl-cache",
            cache.path().to_str().unwrap(),
            "--crl-max-bytes",
            "65536",
            "--crl-timeout-ms",
            "1500",
        ],
    );
    // Fetched, verified, compiled, published.
    let mut first = (0, String::new(), Vec::new());
    until("the table compiled from the fetched CRL", &feed, || {
        first = get(feed.addr, "/table.cgt", None);
        first.0 == 200
    });
    let (_, etag, table) = first;
    assert!(
        serials(&table).contains("revocation  1 serials"),
        "{}",
        serials(&table)
    );
    assert_eq!(
        std::fs::read_dir(cache.path()).unwrap().count(),
        2,
        "the CRL and its validators are cached"
    );

    // Unchanged: the refresh is a conditional request answered 304, and nothing is republished.
    until("a 304 from the CRL server", &feed, || {
        seen.lock().unwrap().not_modified >= 2
    });
    assert_eq!(get(feed.addr, "/table.cgt", Some(&etag)).0, 304);

    // A new CRL revoking one more serial is published.
    *answer.lock().unwrap() = Answer::Crl(crl(&issuer, 2, &[1, 2]), "\"v2\"".into());
    let mut second = (0, String::new(), Vec::new());
    until("the table with the new CRL", &feed, || {
        second = get(feed.addr, "/table.cgt", Some(&etag));
        second.0 == 200
    });
    let (_, etag, table) = second;
    assert!(
        serials(&table).contains("revocation  2 serials"),
        "{}",
        serials(&table)
    );

    // Signed by another key: refused, counted, logged; the table served stays.
    *answer.lock().unwrap() = Answer::Crl(crl(&impostor, 3, &[1, 2, 3]), "\"forged\"".into());
    until("the forged CRL counted", &feed, || {
        failures(&feed, "verify") >= 1
    });
    assert!(feed.logged("is refused"), "{:?}", feed.log.lock().unwrap());
    assert!(
        feed.logged("not signed by a CA of `crlIssuers`"),
        "{:?}",
        feed.log.lock().unwrap()
    );
    assert_eq!(get(feed.addr, "/table.cgt", Some(&etag)).0, 304);

    // Oversized: refused before it is all read.
    *answer.lock().unwrap() = Answer::Oversized(200_000);
    until("the oversized CRL counted", &feed, || {
        failures(&feed, "too_large") >= 1
    });
    assert!(
        feed.logged("larger than --crl-max-bytes"),
        "{:?}",
        feed.log.lock().unwrap()
    );
    assert_eq!(get(feed.addr, "/table.cgt", Some(&etag)).0, 304);

    // Trickled: refused at the deadline.
    *answer.lock().unwrap() = Answer::Trickle;
    until("the trickled CRL counted", &feed, || {
        failures(&feed, "timeout") >= 1
    });
    assert!(
        feed.logged("did not finish within --crl-timeout-ms"),
        "{:?}",
        feed.log.lock().unwrap()
    );
    assert_eq!(get(feed.addr, "/table.cgt", Some(&etag)).0, 304);

    // Replayed: the first CRL again, validly signed but older than the last good copy.
    *answer.lock().unwrap() = Answer::Crl(crl(&issuer, 1, &[1]), "\"replayed\"".into());
    until("the replayed CRL counted", &feed, || {
        failures(&feed, "rollback") >= 1
    });
    assert!(
        feed.logged("older than the last good copy"),
        "{:?}",
        feed.log.lock().unwrap()
    );
    assert_eq!(get(feed.addr, "/table.cgt", Some(&etag)).0, 304);
    assert_eq!(get(feed.addr, "/healthz", None).0, 200);
    assert!(seen.lock().unwrap().requests >= 7);
    drop(feed);

    // A cache file changed on disk (here: to the forged CRL) is refused after a restart,
    // even though the server answers 304 to its validators: it is forgotten and fetched
    // again without them.
    *answer.lock().unwrap() = Answer::Crl(crl(&issuer, 2, &[1, 2]), "\"v2\"".into());
    let cached: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "crl"))
        .collect();
    assert_eq!(cached.len(), 1);
    std::fs::write(&cached[0], crl(&impostor, 4, &[1, 2, 3, 4])).unwrap();
    let before = seen.lock().unwrap().not_modified;
    let feed = Feed::start_with(
        tempfile::tempdir().unwrap().path(),
        &[],
        &[
            "--policies",
            policies.path().to_str().unwrap(),
            "--crl-cache",
            cache.path().to_str().unwrap(),
        ],
    );
    let mut third = (0, String::new(), Vec::new());
    until("the table after the tampered cache", &feed, || {
        third = get(feed.addr, "/table.cgt", None);
        third.0 == 200
    });
    assert!(
        seen.lock().unwrap().not_modified > before,
        "the tampered copy's validators were sent"
    );
    assert!(
        feed.logged("the last good copy is refused now"),
        "{:?}",
        feed.log.lock().unwrap()
    );
    assert!(
        serials(&third.2).contains("revocation  2 serials"),
        "{}",
        serials(&third.2)
    );
}

/// Serves `body` over https on 127.0.0.1 with a certificate for that address issued by
/// `ca`, one request per connection.
fn https_server(ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>, body: Vec<u8>) -> SocketAddr {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.subject_alt_names = vec![rcgen::SanType::IpAddress([127, 0, 0, 1].into())];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, ca).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(tcp) = conn else { continue };
            let conn = rustls::ServerConnection::new(Arc::clone(&config)).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match tls.read(&mut b) {
                    Ok(1) => head.push(b[0]),
                    _ => break,
                }
            }
            let _ = write!(
                tls,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            )
            .and_then(|()| tls.write_all(&body))
            .and_then(|()| tls.flush());
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    addr
}

/// `certgate check` fetches an https CRL URL trusting only `--crl-ca`: verified and
/// accepted with the CA that issued the server's certificate, refused (not skipped)
/// without it, since the built-in roots do not know that CA.
#[test]
fn check_fetches_https_crls_trusting_crl_ca() {
    let issuer = ca("CRL Test CA");
    let tls_ca = ca("Test TLS CA");
    let addr = https_server(&tls_ca, crl(&issuer, 1, &[1, 2]));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), issuer.pem()).unwrap();
    std::fs::write(dir.path().join("tls-ca.pem"), tls_ca.pem()).unwrap();
    let policy = dir.path().join("p.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: certgate.dev/v1alpha1\nkind: MeshTLSPolicy\nmetadata: {{name: https-crl}}\nspec:\n  defaultAction: allow\n  revocation:\n    crlIssuers: [ca.pem]\n    crlUrls: [https://{addr}/ca.crl]\n"
        ),
    )
    .unwrap();
    let tls_ca_path = dir.path().join("tls-ca.pem");
    let out = dir.path().join("t.cgt");
    let run = crate::common::certgate(&[
        "compile",
        policy.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--crl-ca",
        tls_ca_path.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let table = std::fs::read(&out).unwrap();
    assert!(
        serials(&table).contains("revocation  2 serials"),
        "{}",
        serials(&table)
    );

    let run = crate::common::certgate(&["check", policy.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("certgate::crl-unreadable"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("cannot fetch CRL"), "{}", run.stderr);
}
