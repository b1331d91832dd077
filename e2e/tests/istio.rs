//! The Istio shape: the WasmPlugin that `certgate emit istio` prints, translated the way
//! istiod translates it, into the listener layout Istio builds for a sidecar.
//!
//! Upstream (istio/istio, `pilot/pkg`):
//! - `config/kube/extensions/translate.go`: a WasmPlugin becomes a TrafficExtension with
//!   the same phase, priority, match and plugin settings.
//! - `model/extensions.go`: which listeners get it (`matchTrafficExtensionSelectors`,
//!   `matchMode`, `matchPorts`, `workloadModeForListenerClass`: a sidecar's inbound
//!   listeners are SERVER, its outbound listeners and a gateway's are CLIENT, no `match`
//!   means every listener), and the Envoy config (`buildWasmConfig`, `buildVMConfig`:
//!   plugin name `<namespace>.<name>`, root id `pluginName`, the pluginConfig as JSON in a
//!   StringValue, runtime v8, no vm_id, FAIL_CLOSE as `failure_policy: FAIL_CLOSED`).
//! - `networking/core/networkfilter.go` `buildCompleteNetworkFilters` and
//!   `listener_inbound.go` `buildInboundNetworkFilters`: on a TCP filter chain the AUTHN
//!   plugins follow metadata exchange and CUSTOM ext_authz and precede RBAC, stats and
//!   `tcp_proxy`; inbound chains forward to `inbound|PORT||`, outbound ones to
//!   `outbound|PORT||HOST`.
//!
//! Two liberties, neither of which changes what the plugin sees: istiod hands the plugin
//! over ECDS and istio-agent rewrites the module URL to a local file (here both are
//! inline in a static bootstrap), and a pod's inbound ports share one `virtualInbound`
//! listener behind iptables (here each logical port has its own listener; the match
//! is decided on the logical port, as istiod does).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use certgate_e2e::client::{rustls_config, rustls_exchange, rustls_http_get};
use certgate_e2e::envoy::{cluster, downstream_tls};
use certgate_e2e::feed::{feed_policy, SignedFeed};
use certgate_e2e::pki::{Leaf, SERVER_NAME};
use certgate_e2e::{
    Backend, BackendKind, Case, Client, Envoy, Expect, Listener, Run, Scenario, TlsPin, Want, Wire,
};
use rustls::ClientConfig;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{enforce_table, run, runtime, verdict};

/// The feed's cluster as Istio names a Service's outbound cluster
/// (`outbound|PORT|SUBSET|HOST`, istio `pkg/model` `BuildSubsetKey`).
const ISTIO_FEED_CLUSTER: &str = "outbound|8080||certgate-feed.certgate.svc.cluster.local";
/// How often the plugin polls the feed in these tests.
const FEED_INTERVAL: Duration = Duration::from_secs(1);
/// Time allowed for a placed table to take effect: a poll interval plus generous slack
/// for a loaded machine (`certgate serve` rescans its directory every 100 ms).
const FEED_TAKES_EFFECT: Duration = Duration::from_secs(8);
const PING: &[u8] = b"ping\n";

/// The listener classes istiod distinguishes (`pilot/pkg/networking` `ListenerClass`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    SidecarInbound,
    SidecarOutbound,
}

/// istiod's `matchTrafficExtensionSelectors` for one listener: no `match` selects every
/// listener; otherwise some entry's mode and ports must both match.
fn istio_selects(plugin: &Value, class: Class, port: u16) -> bool {
    let Some(selectors) = plugin["spec"]["match"].as_array().filter(|m| !m.is_empty()) else {
        return true;
    };
    // `workloadModeForListenerClass`.
    let listener_mode = match class {
        Class::SidecarInbound => "SERVER",
        Class::SidecarOutbound => "CLIENT",
    };
    selectors.iter().any(|sel| {
        let mode_ok = match sel["mode"].as_str().unwrap_or("UNDEFINED") {
            "CLIENT_AND_SERVER" | "UNDEFINED" => true,
            mode => mode == listener_mode,
        };
        let ports_ok = match sel["ports"].as_array().filter(|p| !p.is_empty()) {
            None => true,
            Some(ports) => ports
                .iter()
                .any(|p| p["number"].as_u64() == Some(u64::from(port))),
        };
        mode_ok && ports_ok
    })
}

/// What istiod makes of a WasmPlugin of type NETWORK: the network filter's config.
fn as_istio_would(plugin: &Value, wasm: &Path) -> Value {
    let spec = &plugin["spec"];
    assert_eq!(spec["type"], "NETWORK", "WasmPlugin type: {plugin}");
    assert_eq!(spec["phase"], "AUTHN", "WasmPlugin phase: {plugin}");
    assert_eq!(
        spec["failStrategy"], "FAIL_CLOSE",
        "WasmPlugin failStrategy: {plugin}"
    );
    let namespace = plugin["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default");
    let name = plugin["metadata"]["name"].as_str().unwrap_or_default();
    // The pluginConfig Struct serialised to JSON, in a StringValue.
    let config = serde_json::to_string(&spec["pluginConfig"]).unwrap_or_default();
    let mut env = serde_json::Map::new();
    env.insert("ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION".into(), json!("1"));
    if let Some(policy) = spec["imagePullPolicy"].as_str() {
        env.insert("ISTIO_META_WASM_IMAGE_PULL_POLICY".into(), json!(policy));
    }
    json!({
        "name": format!("extensions.istio.io/wasmplugin/{namespace}.{name}"),
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm",
            "config": {
                "name": format!("{namespace}.{name}"),
                "root_id": spec["pluginName"],
                "vm_config": {
                    "runtime": "envoy.wasm.runtime.v8",
                    // istio-agent fetches `url` and hands Envoy a local file.
                    "code": {"local": {"filename": wasm}},
                    "environment_variables": {"key_values": env}
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": config
                },
                "failure_policy": "FAIL_CLOSED"
            }
        }
    })
}

/// One listener of the sidecar: its class, the logical (service target) port istiod
/// matches on, and the cluster its tcp_proxy forwards to.
struct PodPort {
    class: Class,
    port: u16,
    listener: String,
    cluster: String,
    /// An HTTP port: the chain ends in the HTTP connection manager instead of tcp_proxy.
    http: bool,
}

impl PodPort {
    fn inbound(port: u16) -> PodPort {
        PodPort {
            class: Class::SidecarInbound,
            port,
            listener: format!("virtualInbound|{port}"),
            cluster: format!("inbound|{port}||"),
            http: false,
        }
    }

    /// An inbound HTTP port: istiod puts network plugins before the HTTP connection
    /// manager (`listener_inbound.go`, `buildInboundNetworkFiltersForHTTP`).
    fn inbound_http(port: u16) -> PodPort {
        PodPort {
            http: true,
            ..PodPort::inbound(port)
        }
    }

    fn outbound(port: u16, host: &str) -> PodPort {
        PodPort {
            class: Class::SidecarOutbound,
            port,
            listener: format!("0.0.0.0_{port}"),
            cluster: format!("outbound|{port}||{host}"),
            http: false,
        }
    }
}

/// A sidecar as istiod lays it out for `plugin` (if any selects the pod): inbound
/// listeners terminate Istio mTLS (client certificate required); outbound listeners take
/// the app's plaintext. Each filter chain: the plugin where istiod's match selects it,
/// then tcp_proxy.
fn sidecar(run: &Run, plugin: Option<&Value>, ports: &[PodPort], backends: &[u16]) -> Value {
    let plugin = plugin.map(|p| (p, as_istio_would(p, &run.tools.filter_wasm)));
    let listeners: Vec<Value> = ports
        .iter()
        .map(|p| {
            let mut filters = Vec::new();
            if let Some((plugin, filter)) = &plugin {
                if istio_selects(plugin, p.class, p.port) {
                    filters.push(filter.clone());
                }
            }
            filters.push(if p.http {
                json!({
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": p.cluster,
                        "route_config": {"virtual_hosts": [{
                            "name": "inbound", "domains": ["*"],
                            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": p.cluster}}]
                        }]},
                        "http_filters": [{
                            "name": "envoy.filters.http.router",
                            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
                        }]
                    }
                })
            } else {
                json!({
                    "name": "envoy.filters.network.tcp_proxy",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                        "stat_prefix": p.cluster,
                        "cluster": p.cluster
                    }
                })
            });
            let mut chain = json!({"filters": filters});
            if p.class == Class::SidecarInbound {
                chain["transport_socket"] = downstream_tls(&run.pki, false);
            }
            json!({
                "name": p.listener,
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [chain]
            })
        })
        .collect();
    let clusters: Vec<Value> = ports
        .iter()
        .zip(backends)
        .map(|(p, b)| cluster(&p.cluster, *b))
        .collect();
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"listeners": listeners, "clusters": clusters}
    })
}

/// An outbound cluster as Istio sends it over mutual TLS (`ISTIO_MUTUAL`): the pod's
/// workload certificate as client certificate, the mesh root as trust anchor. (Istio also
/// matches the server's SPIFFE ID; the test PKI's server certificate has none.)
fn istio_mutual(mut cluster: Value, run: &Run, workload: &Leaf) -> Value {
    cluster["transport_socket"] = json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": SERVER_NAME,
            "common_tls_context": {
                "tls_certificates": [{
                    "certificate_chain": {"filename": workload.chain_pem},
                    "private_key": {"filename": workload.key_pem}
                }],
                "validation_context": {"trusted_ca": {"filename": run.pki.root_pem}}
            }
        }
    });
    cluster
}

/// Adds a cluster (the feed's) to a bootstrap.
fn with_cluster(mut bootstrap: Value, c: Value) -> Value {
    if let Some(list) = bootstrap["static_resources"]["clusters"].as_array_mut() {
        list.push(c);
    }
    bootstrap
}

/// The listeners that carry the plugin, by name.
fn plugged(bootstrap: &Value) -> Vec<String> {
    bootstrap["static_resources"]["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| {
            l["filter_chains"][0]["filters"]
                .as_array()
                .is_some_and(|f| f.len() > 1)
        })
        .filter_map(|l| l["name"].as_str().map(String::from))
        .collect()
}

/// A new mTLS connection: whether its ping came back.
async fn admitted(addr: SocketAddr, config: &Arc<ClientConfig>) -> bool {
    rustls_exchange(addr, Arc::clone(config), PING, Want::Bytes(PING.len()))
        .await
        .got(PING)
}

/// A plaintext connection, as the app opens towards its sidecar's outbound listener:
/// whether its ping came back.
async fn plaintext_echoes(addr: SocketAddr) -> bool {
    let Ok(mut tcp) = TcpStream::connect(addr).await else {
        return false;
    };
    if tcp.write_all(PING).await.is_err() {
        return false;
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while got.len() < PING.len() {
        match tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(buf.get(..n).unwrap_or_default()),
            _ => return false,
        }
    }
    got == PING
}

fn policy(run: &Run, revoke_web: bool) -> String {
    feed_policy(run, "e2e-istio", revoke_web)
}

fn start(run: &Run, dir: &str, bootstrap: &Value) -> Envoy {
    let dir = run.subdir(dir).unwrap_or_else(|e| panic!("{e:#}"));
    Envoy::start(&run.tools.envoy, &dir, bootstrap).unwrap_or_else(|e| panic!("{e}"))
}

/// Issue 13, end to end: with the WasmPlugin `emit istio` prints by default, istiod puts
/// the plugin on the pod's inbound listener only; inbound connections are decided, the
/// app's plaintext outbound connections pass, and the plugin polls the feed through the
/// cluster Istio names for the feed Service. The same plugin with `--match
/// client-and-server` (Istio's behaviour without `match`) refuses the outbound
/// connections: the reason the default exists.
#[test]
fn istio_sidecar_layout_enforces_inbound_leaves_outbound_alone_and_polls_the_feed() {
    let run = run();
    let feed_dir = run.subdir("istio-feed-tables").expect("feed dir");
    // Fed tables are signed; the plugin pins the key.
    let SignedFeed {
        key,
        public,
        v1,
        server,
    } = SignedFeed::start(&run, &feed_dir, "istio.yaml", &policy(&run, false))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let signed = ["--sign-key", key.to_str().expect("key path")];
    let url = format!("file://{}", run.tools.filter_wasm.display());
    let v1_path = v1.to_string_lossy().into_owned();
    let emit = |extra: &[&str]| {
        let mut args = vec![
            "--table",
            &v1_path,
            "--name",
            "certgate",
            "--namespace",
            "payments",
            "--selector",
            "app=payments",
            "--url",
            &url,
            "--feed-cluster",
            ISTIO_FEED_CLUSTER,
            "--feed-authority",
            "certgate-feed.certgate.svc.cluster.local:8080",
            "--feed-interval",
            "1s",
            "--feed-max-stale",
            "10m",
            "--feed-timeout",
            "2s",
            "--feed-public-key",
            &public,
        ];
        args.extend_from_slice(extra);
        run.certgate
            .emit_istio(&args)
            .unwrap_or_else(|e| panic!("{e:#}"))
    };
    let safe = emit(&["--ports", "8443,8080"]);
    assert_eq!(
        safe["spec"]["match"],
        json!([{"mode": "SERVER", "ports": [{"number": 8443}, {"number": 8080}]}])
    );
    let everywhere = emit(&["--match", "client-and-server"]);
    let web = rustls_config(&run.pki, run.pki.leaf("web"), TlsPin::Any).expect("web");
    let checkout =
        rustls_config(&run.pki, run.pki.leaf("checkout"), TlsPin::Any).expect("checkout");
    let stranger =
        rustls_config(&run.pki, run.pki.leaf("stranger"), TlsPin::Any).expect("stranger");

    runtime().block_on(async {
        // The payments pod: inbound 8443 and HTTP 8080 (in `--ports`), inbound 9000
        // (not), and an outbound listener for a database the app talks to in plaintext.
        let pod = || {
            vec![
                PodPort::inbound(8443),
                PodPort::inbound_http(8080),
                PodPort::inbound(9000),
                PodPort::outbound(5432, "db.data.svc.cluster.local"),
            ]
        };
        let mut backends = Vec::new();
        for p in pod() {
            let kind = if p.http {
                BackendKind::Http
            } else {
                BackendKind::Echo
            };
            backends.push(Backend::start(kind).await.expect("backend"));
        }
        let ports: Vec<u16> = backends.iter().map(Backend::port).collect();
        // The feed server's pod: `certgate serve` behind its own sidecar, which no
        // certgate plugin selects (docs/istio.md, "The feed server's pods").
        let feed_pod = sidecar(&run, None, &[PodPort::inbound(8080)], &[server.addr.port()]);
        assert!(plugged(&feed_pod).is_empty());
        let feed_envoy = start(&run, "istio-feed-sidecar", &feed_pod);
        // The payments pod reaches it over Istio mTLS, as workload `checkout`.
        let feed_cluster = istio_mutual(
            cluster(
                ISTIO_FEED_CLUSTER,
                feed_envoy.addr("virtualInbound|8080").port(),
            ),
            &run,
            run.pki.leaf("checkout"),
        );
        let layout = with_cluster(
            sidecar(&run, Some(&safe), &pod(), &ports),
            feed_cluster.clone(),
        );
        assert_eq!(
            plugged(&layout),
            ["virtualInbound|8443", "virtualInbound|8080"],
            "{layout:#}"
        );
        let control = with_cluster(
            sidecar(&run, Some(&everywhere), &pod(), &ports),
            feed_cluster.clone(),
        );
        assert_eq!(
            plugged(&control),
            [
                "virtualInbound|8443",
                "virtualInbound|8080",
                "virtualInbound|9000",
                "0.0.0.0_5432"
            ]
        );
        let envoy = start(&run, "istio-sidecar", &layout);
        let control_envoy = start(&run, "istio-sidecar-no-match", &control);
        let inbound = envoy.addr("virtualInbound|8443");
        let unmatched = envoy.addr("virtualInbound|9000");
        let outbound = envoy.addr("0.0.0.0_5432");

        // Inbound is enforced; a port outside `--ports` is not the plugin's.
        assert!(admitted(inbound, &web).await, "{}", envoy.log_tail(30));
        assert!(admitted(inbound, &checkout).await);
        assert!(!admitted(inbound, &stranger).await, "stranger admitted");
        assert!(envoy.certgate_counter("reason.default_deny") >= 1);
        assert!(
            admitted(unmatched, &stranger).await,
            "port 9000 is outside `--ports`: no plugin there"
        );
        // On the HTTP port the network plugin decides once per connection, before the
        // HTTP connection manager: web gets its 200, the stranger's connection is closed
        // without a response and its request never reaches the backend.
        let http = envoy.addr("virtualInbound|8080");
        let http_backend = &backends[1];
        assert_eq!(
            rustls_http_get(http, Arc::clone(&web)).await.status,
            Some(200)
        );
        let before = http_backend.accepted();
        let refused = rustls_http_get(http, Arc::clone(&stranger)).await;
        assert_eq!(refused.status, None, "{:?}", refused.exchange.summary());
        assert!(refused.exchange.denied(), "{}", refused.exchange.summary());
        assert_eq!(
            http_backend.accepted(),
            before,
            "the refused request reached the backend"
        );
        // The app's plaintext outbound connection passes untouched, again and again.
        for _ in 0..3 {
            assert!(
                plaintext_echoes(outbound).await,
                "outbound refused:\n{}",
                envoy.log_tail(30)
            );
        }
        assert_eq!(envoy.certgate_counter("reason.no_peer_cert"), 0);
        // Without `match`, the same pod's outbound connection is refused (issue 13).
        assert!(
            !plaintext_echoes(control_envoy.addr("0.0.0.0_5432")).await,
            "the control plugin let a certificate-less outbound connection through"
        );
        assert!(control_envoy.certgate_counter("reason.no_peer_cert") >= 1);

        // The feed: a newer table revoking web reaches the plugin through the cluster
        // Istio names for the feed Service.
        let v2 = run
            .compile_text_with("istio.yaml", &policy(&run, true), &signed)
            .expect("compile v2");
        let updates = envoy.certgate_counter("feed_updates");
        let placed = Instant::now();
        std::fs::copy(&v2, feed_dir.join("v2.cgt")).expect("place v2");
        let mut revoked = false;
        while placed.elapsed() < FEED_TAKES_EFFECT {
            if !admitted(inbound, &web).await {
                revoked = true;
                break;
            }
            tokio::time::sleep(FEED_INTERVAL / 4).await;
        }
        println!("v2 in force after {:?}", placed.elapsed());
        assert!(
            revoked,
            "web still admitted {:?} after placing v2:\n{}",
            placed.elapsed(),
            envoy.log_tail(40)
        );
        assert!(envoy.certgate_counter("feed_updates") > updates);
        let (_, feed_stats) = feed_envoy.admin_get("/stats").expect("feed sidecar stats");
        assert!(
            feed_stats.lines().any(|l| l.starts_with("listener.")
                && l.contains("ssl.handshake: ")
                && !l.ends_with(": 0")),
            "the polls did not arrive over mTLS at the feed's sidecar:\n{feed_stats}"
        );
        assert!(envoy.certgate_counter("reason.revoked_serial") >= 1);
        assert!(
            admitted(inbound, &checkout).await,
            "checkout refused under v2"
        );
        assert!(
            plaintext_echoes(outbound).await,
            "outbound refused after the feed update"
        );
        drop(server);
    });
}

/// The matrix subset through the plugin config istiod builds, on an inbound listener.
#[test]
fn istio_plugin_config_enforces_a_matrix_subset() {
    let run = run();
    let table = enforce_table(&run);
    let url = format!("file://{}", run.tools.filter_wasm.display());
    let table_path = table.to_string_lossy().into_owned();
    let plugin = run
        .certgate
        .emit_istio(&[
            "--table",
            &table_path,
            "--name",
            "certgate",
            "--namespace",
            "payments",
            "--selector",
            "app=payments",
            "--url",
            &url,
        ])
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(istio_selects(&plugin, Class::SidecarInbound, 8443));
    assert!(!istio_selects(&plugin, Class::SidecarOutbound, 8443));
    let filter = as_istio_would(&plugin, &run.tools.filter_wasm);
    let cases = [
        Case::new(
            "allowed identity",
            "web",
            Expect::allow("frontend-and-checkout"),
        ),
        Case::new("unknown identity", "stranger", Expect::deny("default_deny")),
        Case::new(
            "deny rule beats allow",
            "legacy",
            Expect::deny_rule("no-legacy"),
        ),
        Case::new("revoked serial", "revoked", Expect::deny("revoked_serial")),
        Case::new("RSA 1024", "rsa1024", Expect::deny("weak_rsa_key"))
            .with(Client::Openssl(TlsPin::Any)),
        Case::new("TLS 1.2", "web", Expect::deny("tls_version_too_low"))
            .with(Client::Rustls(TlsPin::Tls12)),
    ];
    runtime().block_on(async {
        let s = Scenario::start(
            &run,
            "istio",
            vec![Listener::new("istio", filter, Wire::Echo)],
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
        verdict(
            &s.target("istio").with_eval(&run.certgate, &table),
            &run,
            &cases,
        )
        .await;
    });
}

/// The match logic ported from istiod, on its own cases (`model/extensions.go`).
#[test]
fn istio_match_follows_istiod() {
    let m = |v: Value| json!({"spec": {"match": v}});
    let server = m(json!([{"mode": "SERVER"}]));
    assert!(istio_selects(&server, Class::SidecarInbound, 80));
    assert!(!istio_selects(&server, Class::SidecarOutbound, 80));
    let ports = m(json!([{"mode": "SERVER", "ports": [{"number": 8443}]}]));
    assert!(istio_selects(&ports, Class::SidecarInbound, 8443));
    assert!(!istio_selects(&ports, Class::SidecarInbound, 80));
    let client = m(json!([{"mode": "CLIENT"}]));
    assert!(!istio_selects(&client, Class::SidecarInbound, 80));
    assert!(istio_selects(&client, Class::SidecarOutbound, 80));
    for any in [
        json!({"spec": {}}),
        m(json!([])),
        m(json!([{"mode": "CLIENT_AND_SERVER"}])),
        m(json!([{}])),
    ] {
        assert!(istio_selects(&any, Class::SidecarInbound, 1));
        assert!(istio_selects(&any, Class::SidecarOutbound, 1));
    }
    let either = m(json!([{"mode": "CLIENT"}, {"mode": "SERVER", "ports": [{"number": 1}]}]));
    assert!(istio_selects(&either, Class::SidecarInbound, 1));
    assert!(!istio_selects(&either, Class::SidecarInbound, 2));
}
