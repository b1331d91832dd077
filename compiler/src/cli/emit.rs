//! `certgate emit`: the configuration that carries a table to the filter, for Envoy (a
//! filter entry) and for Istio (a `WasmPlugin`). Both hold the same filter configuration
//! JSON: `{"table"?: base64, "feed"?: {...}, "mode"?, "audit"?: {"log"}, "serverFirst"?,
//! "certCacheSize"?, "logAllDecisions"?}`.

use std::path::PathBuf;

use anyhow::bail;
use base64::Engine as _;

use super::yaml_out::{map, s, to_json, to_json_compact, to_yaml, Y};
use super::EXIT_OK;

/// Kubernetes refuses objects much above this; Istio copies `pluginConfig` into the
/// `WasmPlugin` object, so a larger table cannot be delivered that way.
pub const MAX_PLUGIN_CONFIG_BYTES: usize = 1_000_000;

/// Emit proxy configuration.
#[derive(Debug, clap::Args)]
#[command(
    about = "Print the Envoy filter entry or Istio WasmPlugin that carries a table",
    after_help = "Examples:\n  certgate emit envoy --table table.cgt\n  certgate emit envoy --table table.cgt --http --format json\n  \
certgate emit istio --table table.cgt --name certgate --namespace payments --selector app=payments --url oci://registry.example/certgate-filter:0.1.0"
)]
pub struct Args {
    #[command(subcommand)]
    target: Target,
}

#[derive(Debug, clap::Subcommand)]
enum Target {
    /// An Envoy `envoy.filters.network.wasm` (or `--http`) filter entry
    #[command(
        after_help = "Put the printed entry in a listener's filter chain before `tcp_proxy` (or in \
`http_filters` before the router with --http). The certgate module must be at --wasm on the Envoy host.\n\n\
Exit codes: 0 printed, 2 usage or I/O error (unreadable or corrupt table).\n\n\
Examples:\n  certgate emit envoy --table table.cgt\n  certgate emit envoy --table table.cgt --server-first --mode audit\n  \
certgate emit envoy --table table.cgt --feed-cluster certgate-feed --feed-public-key signing.key.pub --feed-max-stale 10m"
    )]
    Envoy(EnvoyArgs),
    /// An Istio `WasmPlugin` (type NETWORK, phase AUTHN, failStrategy FAIL_CLOSE)
    #[command(
        after_help = "The table travels base64-encoded in `pluginConfig`; Kubernetes limits objects to \
about 1.5 MB, so certgate refuses tables whose configuration exceeds 1 MB (exit 2).\n\n\
Exit codes: 0 printed, 2 usage or I/O error, or the table is too large for a WasmPlugin.\n\n\
Examples:\n  certgate emit istio --table table.cgt --name certgate --url oci://registry.example/certgate-filter:0.1.0\n  \
certgate emit istio --table table.cgt --name certgate --namespace payments --selector app=payments --url file:///etc/certgate/certgate_filter.wasm\n  \
certgate emit istio --name certgate --url oci://registry.example/certgate-filter:0.1.0 --feed-cluster 'outbound|8080||certgate-feed.certgate.svc.cluster.local' --feed-public-key signing.key.pub --feed-lineage payments"
    )]
    Istio(IstioArgs),
}

/// Output syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Syntax {
    Yaml,
    Json,
}

/// The filter configuration options both targets share.
#[derive(Debug, clap::Args)]
struct Config {
    /// The compiled table (with --feed-cluster: the table enforced until the first fetch)
    #[arg(
        long,
        value_name = "TABLE.cgt",
        required_unless_present = "feed_cluster"
    )]
    table: Option<PathBuf>,
    /// Poll a live table feed (`certgate serve`) through this Envoy cluster
    #[arg(long, value_name = "CLUSTER")]
    feed_cluster: Option<String>,
    /// Request path on the feed
    #[arg(long, value_name = "PATH", default_value = "/table.cgt")]
    feed_path: String,
    /// Time between feed polls (`500ms`, `5s`, `1m`)
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    feed_interval: String,
    /// Time without a good fetch after which the table's onStale decides
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    feed_max_stale: String,
    /// `:authority` of the feed polls (default: the cluster name)
    #[arg(long, value_name = "HOST")]
    feed_authority: Option<String>,
    /// Timeout of one feed poll (default 5s)
    #[arg(long, value_name = "DURATION")]
    feed_timeout: Option<String>,
    /// Pin a feed signing key: `ed25519:BASE64`, or a key file (SPKI PEM from `certgate keygen`); repeat to rotate
    #[arg(long, value_name = "KEY")]
    feed_public_key: Vec<String>,
    /// Policy names a fed table must carry, in order (repeatable; default: those of --table)
    #[arg(long, value_name = "NAME")]
    feed_lineage: Vec<String>,
    /// Accept unsigned fed tables (no --feed-public-key needed; for tests and trusted networks only)
    #[arg(long)]
    feed_allow_unsigned: bool,
    /// Accept a fed table that loosens mode, defaultAction, onStale or audit.log
    #[arg(long)]
    feed_allow_loosening: bool,
    /// Override the table's mode in the filter
    #[arg(long, value_parser = ["enforce", "audit"])]
    mode: Option<String>,
    /// Override which decisions the filter records
    #[arg(long, value_name = "LOG", value_parser = ["all", "deny", "none"])]
    audit_log: Option<String>,
    /// Size of the filter's per-worker parsed-certificate cache
    #[arg(long, value_name = "N")]
    cert_cache_size: Option<u64>,
    /// Log every decision at info level (costly: about a third more Envoy CPU per connection; for troubleshooting)
    #[arg(long)]
    log_all_decisions: bool,
    /// Output syntax
    #[arg(long, value_enum, default_value_t = Syntax::Yaml)]
    format: Syntax,
}

#[derive(Debug, clap::Args)]
struct EnvoyArgs {
    #[command(flatten)]
    config: Config,
    /// Path of the certgate filter module on the Envoy host
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/etc/certgate/certgate_filter.wasm"
    )]
    wasm: String,
    /// Emit an HTTP filter (`envoy.filters.http.wasm`) instead of a network filter
    #[arg(long, conflicts_with = "server_first")]
    http: bool,
    /// Decide before the upstream connection is opened (server-speaks-first protocols)
    #[arg(long)]
    server_first: bool,
}

#[derive(Debug, clap::Args)]
struct IstioArgs {
    #[command(flatten)]
    config: Config,
    /// `metadata.name` of the WasmPlugin
    #[arg(long)]
    name: String,
    /// `metadata.namespace` of the WasmPlugin (the root namespace applies mesh-wide)
    #[arg(long)]
    namespace: Option<String>,
    /// Workload label selector, `key=value`; repeat for several labels
    #[arg(long, value_name = "KEY=VALUE")]
    selector: Vec<String>,
    /// Where Istio fetches the module: `oci://`, `file://`, `https://` or `http://`
    #[arg(long)]
    url: String,
    /// Decide before the upstream connection is opened (server-speaks-first protocols)
    #[arg(long)]
    server_first: bool,
}

/// A feed duration as the filter reads it: a whole number and `ms`, `s`, `m` or `h`, in
/// milliseconds; the filter's own bounds (at most a day, not zero).
fn feed_millis(flag: &str, text: &str) -> anyhow::Result<u64> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(0);
    let (digits, unit) = text.split_at(split);
    let scale = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => 0,
    };
    match digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
    {
        Some(ms) if ms > 0 && ms <= 86_400_000 => Ok(ms),
        _ => bail!("`{flag} {text}` must be a duration like `500ms`, `5s` or `10m`, at most `24h`"),
    }
}

/// The `feed` object, when `--feed-cluster` is given.
fn feed_config(c: &Config, inline: Option<&ruleset::Table>) -> anyhow::Result<Option<Y>> {
    let Some(cluster) = &c.feed_cluster else {
        if !c.feed_public_key.is_empty()
            || !c.feed_lineage.is_empty()
            || c.feed_allow_unsigned
            || c.feed_allow_loosening
        {
            bail!("the `--feed-*` options need `--feed-cluster`");
        }
        return Ok(None);
    };
    if cluster.is_empty() || !c.feed_path.starts_with('/') {
        bail!("`--feed-cluster` must not be empty and `--feed-path` must start with `/`");
    }
    let interval = feed_millis("--feed-interval", &c.feed_interval)?;
    let max_stale = feed_millis("--feed-max-stale", &c.feed_max_stale)?;
    if interval < 100 || max_stale < interval {
        bail!("`--feed-interval` must be at least `100ms` and `--feed-max-stale` at least `--feed-interval`");
    }
    let mut feed = vec![
        ("cluster", s(cluster.clone())),
        ("path", s(c.feed_path.clone())),
        ("interval", s(c.feed_interval.clone())),
        ("maxStale", s(c.feed_max_stale.clone())),
    ];
    if let Some(a) = &c.feed_authority {
        feed.push(("authority", s(a.clone())));
    }
    if let Some(t) = &c.feed_timeout {
        feed_millis("--feed-timeout", t)?;
        feed.push(("timeout", s(t.clone())));
    }
    let keys = c
        .feed_public_key
        .iter()
        .map(|k| super::keygen::read_public(k).map(|k| s(ruleset::signature::key_id(&k))))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if keys.is_empty() && !c.feed_allow_unsigned {
        bail!("a feed needs `--feed-public-key` (the key its tables are signed with, from `certgate keygen`), or `--feed-allow-unsigned`");
    }
    if !keys.is_empty() {
        feed.push(("publicKeys", Y::List(keys)));
    }
    let lineage = match (c.feed_lineage.is_empty(), inline) {
        (false, Some(t)) if t.policy_names != c.feed_lineage => bail!(
            "`--feed-lineage` [{}] differs from the policies of `--table` [{}]",
            c.feed_lineage.join(", "),
            t.policy_names.join(", ")
        ),
        (false, _) => c.feed_lineage.clone(),
        (true, Some(t)) => t.policy_names.clone(),
        (true, None) => bail!(
            "a feed without `--table` needs `--feed-lineage` (the policy names its tables carry)"
        ),
    };
    feed.push(("lineage", Y::List(lineage.into_iter().map(s).collect())));
    if c.feed_allow_unsigned {
        feed.push(("allowUnsigned", Y::Bool(true)));
    }
    if c.feed_allow_loosening {
        feed.push(("allowLoosening", Y::Bool(true)));
    }
    Ok(Some(map(feed)))
}

/// The filter configuration object.
fn filter_config(c: &Config, server_first: bool) -> anyhow::Result<Y> {
    let mut entries = Vec::new();
    let mut inline = None;
    if let Some(table) = &c.table {
        let (bytes, t) = super::read_table(table)?;
        entries.push((
            "table",
            s(base64::engine::general_purpose::STANDARD.encode(&bytes)),
        ));
        inline = Some(t);
    }
    if let Some(feed) = feed_config(c, inline.as_ref())? {
        entries.push(("feed", feed));
    }
    if let Some(m) = &c.mode {
        entries.push(("mode", s(m.clone())));
    }
    if let Some(l) = &c.audit_log {
        entries.push(("audit", map(vec![("log", s(l.clone()))])));
    }
    if server_first {
        entries.push(("serverFirst", Y::Bool(true)));
    }
    if let Some(n) = c.cert_cache_size {
        entries.push(("certCacheSize", Y::Int(n)));
    }
    if c.log_all_decisions {
        entries.push(("logAllDecisions", Y::Bool(true)));
    }
    Ok(map(entries))
}

fn print(v: &Y, syntax: Syntax) {
    match syntax {
        Syntax::Yaml => print!("{}", to_yaml(v)),
        Syntax::Json => print!("{}", to_json(v)),
    }
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<u8> {
    match args.target {
        Target::Envoy(a) => envoy(&a),
        Target::Istio(a) => istio(&a),
    }
}

fn envoy(a: &EnvoyArgs) -> anyhow::Result<u8> {
    let config = filter_config(&a.config, a.server_first)?;
    let kind = if a.http { "http" } else { "network" };
    let entry = map(vec![
        ("name", s(format!("envoy.filters.{kind}.wasm"))),
        (
            "typed_config",
            map(vec![
                (
                    "@type",
                    s(format!(
                        "type.googleapis.com/envoy.extensions.filters.{kind}.wasm.v3.Wasm"
                    )),
                ),
                (
                    "config",
                    map(vec![
                        ("name", s("certgate")),
                        // The filter picks its front end by root id (docs/filter.md).
                        (
                            "root_id",
                            s(if a.http { "certgate-http" } else { "certgate" }),
                        ),
                        (
                            "vm_config",
                            map(vec![
                                ("vm_id", s("certgate")),
                                ("runtime", s("envoy.wasm.runtime.v8")),
                                (
                                    "code",
                                    map(vec![(
                                        "local",
                                        map(vec![("filename", s(a.wasm.clone()))]),
                                    )]),
                                ),
                            ]),
                        ),
                        (
                            "configuration",
                            map(vec![
                                (
                                    "@type",
                                    s("type.googleapis.com/google.protobuf.StringValue"),
                                ),
                                ("value", s(to_json_compact(&config))),
                            ]),
                        ),
                        ("fail_open", Y::Bool(false)),
                    ]),
                ),
            ]),
        ),
    ]);
    print(&entry, a.config.format);
    Ok(EXIT_OK)
}

fn is_k8s_name(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=253).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'.')
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

fn istio(a: &IstioArgs) -> anyhow::Result<u8> {
    if !is_k8s_name(&a.name) {
        bail!(
            "`--name {}` is not a Kubernetes object name (lowercase letters, digits, `-` and `.`)",
            a.name
        );
    }
    if let Some(ns) = a
        .namespace
        .as_deref()
        .filter(|ns| !is_k8s_name(ns) || ns.contains('.'))
    {
        bail!("`--namespace {ns}` is not a Kubernetes namespace name (lowercase letters, digits and `-`)");
    }
    let schemes = ["oci://", "file://", "https://", "http://"];
    if !schemes
        .iter()
        .any(|p| a.url.starts_with(p) && a.url.len() > p.len())
    {
        bail!(
            "`--url {}` must start with `oci://`, `file://`, `https://` or `http://`",
            a.url
        );
    }
    let mut labels = Vec::new();
    for sel in &a.selector {
        match sel.split_once('=') {
            Some((k, v)) if !k.is_empty() => labels.push((k.to_string(), s(v))),
            _ => bail!("`--selector {sel}` must be `key=value`"),
        }
    }
    let config = filter_config(&a.config, a.server_first)?;
    let size = to_json_compact(&config).len();
    if size > MAX_PLUGIN_CONFIG_BYTES {
        bail!(
            "the WasmPlugin's pluginConfig would be {size} bytes, above the {MAX_PLUGIN_CONFIG_BYTES}-byte limit for a Kubernetes object; \
split the policies into several tables or deliver the table with `certgate emit envoy`"
        );
    }
    let mut metadata = vec![("name", s(a.name.clone()))];
    if let Some(ns) = &a.namespace {
        metadata.push(("namespace", s(ns.clone())));
    }
    let mut spec = Vec::new();
    if !labels.is_empty() {
        spec.push(("selector", map(vec![("matchLabels", Y::Map(labels))])));
    }
    spec.extend([
        ("url", s(a.url.clone())),
        ("pluginName", s("certgate")),
        ("type", s("NETWORK")),
        ("phase", s("AUTHN")),
        ("failStrategy", s("FAIL_CLOSE")),
        ("pluginConfig", config),
    ]);
    let doc = map(vec![
        ("apiVersion", s("extensions.istio.io/v1alpha1")),
        ("kind", s("WasmPlugin")),
        ("metadata", map(metadata)),
        ("spec", map(spec)),
    ]);
    print(&doc, a.config.format);
    Ok(EXIT_OK)
}
