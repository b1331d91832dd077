//! A scenario: one Envoy with one or more listeners, each with the filter entry that
//! `certgate emit` printed and its own in-process backend. Everything it started stops
//! when it is dropped.

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};
use serde_json::{json, Value};

use crate::backend::{Backend, BackendKind};
use crate::envoy::{bootstrap, cluster, Envoy, ListenerKind, ListenerSpec};
use crate::matrix::{Target, Wire};
use crate::run::Run;

/// One listener of a scenario.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Its name.
    pub name: String,
    /// The filter entry (network, or HTTP for [`Wire::Http`]); `None` for no filter.
    pub filter: Option<Value>,
    /// What it speaks; picks the backend.
    pub wire: Wire,
    /// Extra TcpProxy fields (server-first settings).
    pub tcp_proxy_extra: Value,
    /// Whether the filter runs in audit mode (for checks).
    pub audit_mode: bool,
    /// Whether Envoy lets clients without a certificate in (the filter must not).
    pub client_cert_optional: bool,
}

impl Listener {
    /// A listener with `filter` and no TcpProxy extras.
    pub fn new(name: &str, filter: Value, wire: Wire) -> Listener {
        Listener {
            name: name.to_string(),
            filter: Some(filter),
            wire,
            tcp_proxy_extra: json!({}),
            audit_mode: false,
            client_cert_optional: false,
        }
    }
}

/// A running scenario.
#[derive(Debug)]
pub struct Scenario {
    /// The Envoy (killed on drop).
    pub envoy: Envoy,
    /// Backend per listener name (aborted on drop).
    pub backends: BTreeMap<String, Backend>,
    /// The listeners as configured.
    pub listeners: Vec<Listener>,
}

impl Scenario {
    /// Starts one backend per listener and an Envoy with all the listeners, in
    /// `run`'s scratch directory under `name`. Needs a tokio runtime.
    pub async fn start(run: &Run, name: &str, listeners: Vec<Listener>) -> Result<Scenario> {
        Self::start_with_clusters(run, name, listeners, Vec::new()).await
    }

    /// [`Scenario::start`] with extra Envoy clusters (the live feed's).
    pub async fn start_with_clusters(
        run: &Run,
        name: &str,
        listeners: Vec<Listener>,
        extra_clusters: Vec<Value>,
    ) -> Result<Scenario> {
        let dir = run.subdir(name)?;
        let mut backends = BTreeMap::new();
        let mut specs = Vec::new();
        let mut clusters = Vec::new();
        for l in &listeners {
            let kind = match l.wire {
                Wire::Echo => BackendKind::Echo,
                Wire::Banner => BackendKind::Banner,
                Wire::Http => BackendKind::Http,
            };
            let backend = Backend::start(kind).await?;
            clusters.push(cluster(&l.name, backend.port()));
            backends.insert(l.name.clone(), backend);
            specs.push(ListenerSpec {
                name: l.name.clone(),
                client_cert_optional: l.client_cert_optional,
                kind: match l.wire {
                    Wire::Http => ListenerKind::Http {
                        filter: l.filter.clone(),
                        cluster: l.name.clone(),
                    },
                    _ => ListenerKind::Tcp {
                        filter: l.filter.clone(),
                        cluster: l.name.clone(),
                        tcp_proxy_extra: l.tcp_proxy_extra.clone(),
                    },
                },
            });
        }
        clusters.extend(extra_clusters);
        let mut cfg = bootstrap(&run.pki, &specs, clusters, &dir.join("access.log"));
        // certgate's labelled stats, as an operator configures them: the tag extractors
        // `certgate emit stats` prints (a run with Envoy only has no CLI and no filter).
        if run.certgate.bin.is_file() {
            if let (Some(cfg), Some(stats)) =
                (cfg.as_object_mut(), run.certgate.emit_stats()?.as_object())
            {
                cfg.extend(stats.clone());
            }
        }
        let envoy = Envoy::start(&run.tools.envoy, &dir, &cfg).map_err(|e| anyhow!("{e}"))?;
        Ok(Scenario {
            envoy,
            backends,
            listeners,
        })
    }

    /// The check target for listener `name`.
    pub fn target(&self, name: &str) -> Target<'_> {
        let l = self.listeners.iter().find(|l| l.name == name);
        let backend = match self.backends.get(name) {
            Some(b) => b,
            None => panic!("scenario has no listener `{name}`"),
        };
        Target {
            envoy: &self.envoy,
            listener: self
                .listeners
                .iter()
                .find(|l| l.name == name)
                .map_or("", |l| l.name.as_str()),
            wire: l.map_or(Wire::Echo, |l| l.wire),
            backend,
            audit_mode: l.is_some_and(|l| l.audit_mode),
            no_upstream_on_deny: l.is_some_and(|l| l.wire == Wire::Banner),
            eval: None,
        }
    }
}
