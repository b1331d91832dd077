//! What each request gets: the routes and their answers, free of sockets so they are
//! tested directly. The table at its path (strong ETag, `304`, `HEAD`, and `226` deltas
//! for pollers that ask with `A-IM: certgate-delta`, see `delta.rs`), `/healthz`
//! (ready: a valid, unexpired table is served), `/livez` (the process runs), `/metrics`
//! (Prometheus text).

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    HeaderName, HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH,
};
use hyper::{Method, Request, Response, StatusCode};

use crate::metrics::Metrics;
use crate::served::Served;

/// Paths the server answers itself; `--path` may not be one of them.
pub const RESERVED_PATHS: [&str; 4] = ["/healthz", "/livez", "/metrics", "/status"];

/// The answer to `request`, given the table served (if any) at `path` and the time now.
pub fn respond<B>(
    request: &Request<B>,
    served: Option<&Served>,
    path: &str,
    now_ms: u64,
    metrics: &Metrics,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match request.uri().path() {
        "/livez" => text(StatusCode::OK, "ok\n".into()),
        "/healthz" => match served {
            None => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "no valid table yet\n".into(),
            ),
            Some(s) => match s.expires_at_ms {
                Some(e) if e <= now_ms => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "the table served (issued {} ms) expired at {e} ms and no newer valid table is in the directory\n",
                        s.issued_at_ms
                    ),
                ),
                _ => text(
                    StatusCode::OK,
                    format!("ok: serving the table issued {} ms\n", s.issued_at_ms),
                ),
            },
        },
        "/metrics" => metrics_text(metrics.render()),
        p if p == path => table(request, served, metrics),
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

fn table<B>(
    request: &Request<B>,
    served: Option<&Served>,
    metrics: &Metrics,
) -> Response<Full<Bytes>> {
    let Some(served) = served else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "no valid table yet\n".into(),
        );
    };
    let matches = request
        .headers()
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|inm| etag_matches(inm, &served.etag));
    if !matches {
        if let Some(r) = delta(request, served, metrics) {
            return r;
        }
    }
    let (status, body) = if matches {
        (StatusCode::NOT_MODIFIED, Bytes::new())
    } else {
        (StatusCode::OK, served.bytes.clone())
    };
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&served.etag) {
        h.insert(ETAG, etag);
    }
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if status == StatusCode::OK {
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
    }
    r
}

/// A `/metrics` answer with `body` (Prometheus text format 0.0.4).
pub fn metrics_text(body: String) -> Response<Full<Bytes>> {
    let mut r = text(StatusCode::OK, body);
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// `226 IM Used` with the delta from the table the poller holds (its `If-None-Match`) to
/// the one served, when it asked for one (`A-IM: certgate-delta`), the server still has
/// its table and the delta is at most half the table (RFC 3229; see `delta.rs`).
fn delta<B>(
    request: &Request<B>,
    served: &Served,
    metrics: &Metrics,
) -> Option<Response<Full<Bytes>>> {
    let headers = request.headers();
    let wanted = headers
        .get_all(A_IM)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(crate::delta::accepts_delta);
    if !wanted {
        return None;
    }
    let candidates = headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(str::trim));
    let (base, body) = served.deltas.for_request(candidates, &served.bytes)?;
    metrics.delta_served(served.bytes.len().saturating_sub(body.len()));
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = StatusCode::IM_USED;
    let h = r.headers_mut();
    h.insert(ETAG, HeaderValue::from_str(&served.etag).ok()?);
    h.insert(DELTA_BASE, HeaderValue::from_str(&base).ok()?);
    h.insert(IM, HeaderValue::from_static(ruleset::delta::IM_NAME));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Some(r)
}

/// RFC 3229 header names.
const A_IM: HeaderName = HeaderName::from_static("a-im");
const IM: HeaderName = HeaderName::from_static("im");
const DELTA_BASE: HeaderName = HeaderName::from_static("delta-base");

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// `If-None-Match` uses the weak comparison (RFC 9110 13.1.2): `W/` is ignored; `*` matches.
fn etag_matches(header: &str, etag: &str) -> bool {
    header.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(expires_at_ms: Option<u64>) -> Served {
        Served {
            bytes: Bytes::from_static(&[1, 2, 3]),
            etag: "\"abc\"".into(),
            issued_at_ms: 1_000,
            expires_at_ms,
            deltas: Default::default(),
        }
    }

    fn get(target: &str, inm: Option<&str>) -> Request<()> {
        let mut b = Request::get(target);
        if let Some(inm) = inm {
            b = b.header(IF_NONE_MATCH, inm);
        }
        b.body(()).unwrap()
    }

    fn status(r: &Request<()>, s: Option<&Served>, now: u64) -> u16 {
        respond(r, s, "/t", now, &Metrics::default())
            .status()
            .as_u16()
    }

    #[test]
    fn etag_and_conditional_get() {
        let s = served(None);
        let m = Metrics::default();
        let r = respond(&get("/t", None), Some(&s), "/t", 0, &m);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[ETAG], "\"abc\"");
        for inm in ["\"abc\"", "W/\"abc\"", "\"x\", \"abc\"", "*"] {
            assert_eq!(status(&get("/t", Some(inm)), Some(&s), 0), 304, "{inm}");
        }
        assert_eq!(status(&get("/t", Some("\"old\"")), Some(&s), 0), 200);
    }

    #[test]
    fn health_follows_the_tables_expiry() {
        assert_eq!(status(&get("/healthz", None), None, 0), 503);
        assert_eq!(status(&get("/healthz", None), Some(&served(None)), 0), 200);
        let expiring = served(Some(5_000));
        assert_eq!(status(&get("/healthz", None), Some(&expiring), 4_999), 200);
        assert_eq!(status(&get("/healthz", None), Some(&expiring), 5_000), 503);
        // Liveness does not depend on the table.
        assert_eq!(status(&get("/livez", None), None, 0), 200);
        // An expired table is still served: the filter judges staleness itself.
        assert_eq!(status(&get("/t", None), Some(&expiring), 9_000), 200);
    }

    #[test]
    fn missing_table_other_paths_and_methods() {
        assert_eq!(status(&get("/t", None), None, 0), 503);
        assert_eq!(status(&get("/x", None), Some(&served(None)), 0), 404);
        assert_eq!(status(&get("/t?x=1", None), Some(&served(None)), 0), 200);
        let post = Request::post("/t").body(()).unwrap();
        assert_eq!(status(&post, Some(&served(None)), 0), 405);
    }
}
