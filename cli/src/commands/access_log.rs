//! `certgate emit access-log`: the Envoy access logger that writes the connection
//! lifecycle as ECS JSON, one line per connection (or HTTP request) when it closes:
//! the handshake failure Envoy saw (`error.message`), the filter's decision record
//! (`certgate.decision`, the filter-state record as text), and the connection's
//! duration and bytes. The entry goes on the listener (every connection), on
//! `tcp_proxy`, or on the HTTP connection manager (every request); see docs/filter.md.

use super::yaml_out::{map, s, Y};

/// The ECS version the lines and the filter's records conform to.
pub const ECS_VERSION: &str = "9.3.0";

/// Filter-state key of the filter's decision record (`set_property("certgate.audit")`).
pub const AUDIT_FILTER_STATE: &str = "wasm.certgate.audit";

/// Where an access logger sits; it names the line's `certgate.log_source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Site {
    /// `listeners[].access_log`: every connection the listener accepted
    Listener,
    /// `tcp_proxy`'s `access_log`: every connection of a TCP filter chain
    TcpProxy,
    /// The HTTP connection manager's `access_log`: every HTTP request
    Http,
}

impl Site {
    fn name(self) -> &'static str {
        match self {
            Site::Listener => "listener",
            Site::TcpProxy => "tcp_proxy",
            Site::Http => "http",
        }
    }
}

/// The ECS line's members, Envoy command operators as values (in order). `label`
/// prefixes `certgate.log_source` (a listener name, say).
pub fn ecs_fields(site: Site, label: Option<&str>) -> Vec<(&'static str, Y)> {
    let source = match label {
        Some(l) => format!("{l}/{}", site.name()),
        None => site.name().to_string(),
    };
    let mut f: Vec<(&'static str, Y)> = vec![
        ("@timestamp", s("%START_TIME(%Y-%m-%dT%H:%M:%S.%3fZ)%")),
        ("ecs.version", s(ECS_VERSION)),
        ("event.kind", s("event")),
        ("event.category", s("network")),
        ("event.type", s("end")),
        ("event.action", s("connection-closed")),
        ("event.module", s("certgate")),
        ("event.dataset", s("certgate.connection")),
        ("network.transport", s("tcp")),
        ("source.address", s("%DOWNSTREAM_REMOTE_ADDRESS%")),
        ("source.ip", s("%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%")),
        ("source.port", s("%DOWNSTREAM_REMOTE_PORT%")),
        ("source.bytes", s("%BYTES_RECEIVED%")),
        (
            "destination.ip",
            s("%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%"),
        ),
        ("destination.port", s("%DOWNSTREAM_LOCAL_PORT%")),
        ("destination.bytes", s("%BYTES_SENT%")),
        ("tls.client.server_name", s("%REQUESTED_SERVER_NAME%")),
        (
            "tls.client.x509.serial_number",
            s("%DOWNSTREAM_PEER_SERIAL%"),
        ),
        (
            "tls.client.x509.subject.distinguished_name",
            s("%DOWNSTREAM_PEER_SUBJECT%"),
        ),
        (
            "tls.client.x509.issuer.distinguished_name",
            s("%DOWNSTREAM_PEER_ISSUER%"),
        ),
        (
            "tls.client.hash.sha256",
            s("%DOWNSTREAM_PEER_FINGERPRINT_256%"),
        ),
        ("error.message", s("%DOWNSTREAM_TRANSPORT_FAILURE_REASON%")),
    ];
    if site == Site::Http {
        f.push(("http.response.status_code", s("%RESPONSE_CODE%")));
    }
    f.extend([
        ("certgate.log_source", s(source)),
        (
            "certgate.decision",
            s(format!("%FILTER_STATE({AUDIT_FILTER_STATE}:PLAIN)%")),
        ),
        ("certgate.duration_ms", s("%DURATION%")),
        ("certgate.tls_version", s("%DOWNSTREAM_TLS_VERSION%")),
        ("certgate.peer_uri_san", s("%DOWNSTREAM_PEER_URI_SAN%")),
        ("certgate.upstream_host", s("%UPSTREAM_HOST%")),
        ("certgate.response_flags", s("%RESPONSE_FLAGS%")),
        (
            "certgate.termination",
            s("%CONNECTION_TERMINATION_DETAILS%"),
        ),
    ]);
    f
}

/// One `envoy.access_loggers.file` entry writing [`ecs_fields`] to `path`, empty
/// values left out (`omit_empty_values`), so a line has `error.message` only when the
/// handshake failed and `certgate.decision` only when the filter decided.
pub fn envoy_entry(path: &str, site: Site, label: Option<&str>) -> Y {
    let fields = ecs_fields(site, label)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    map(vec![
        ("name", s("envoy.access_loggers.file")),
        (
            "typed_config",
            map(vec![
                (
                    "@type",
                    s("type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"),
                ),
                ("path", s(path)),
                (
                    "log_format",
                    map(vec![
                        ("json_format", Y::Map(fields)),
                        ("omit_empty_values", Y::Bool(true)),
                    ]),
                ),
            ]),
        ),
    ])
}
