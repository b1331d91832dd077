//! `certgate emit`: the configuration that carries a table to the filter, for Envoy (a
//! filter entry) and for Istio (a `WasmPlugin`). Both hold the same filter configuration,
//! built as the `certgate-filter-config` crate's `Config` (the type the filter parses it
//! into) and written by that crate, so emit refuses what the filter would refuse.

use std::path::PathBuf;

use anyhow::bail;
use filter_config::{json::Value, Config as FilterConfig, FeedConfig};
use ruleset::{AuditLog, Mode};

use super::yaml_out::{map, s, to_json, to_json_compact, to_yaml, Y};
use super::EXIT_OK;

/// Kubernetes refuses objects much above this; Istio copies `pluginConfig` into the
/// `WasmPlugin` object, so a larger table cannot be delivered that way.
pub const MAX_PLUGIN_CONFIG_BYTES: usize = 1_000_000;

/// Emit proxy configuration.
#[derive(Debug, clap::Args)]
#[command(
    about = "Print the Envoy filter entry or Istio WasmPlugin that carries a table, or the ECS access logger",
    after_help = "Examples:\n  certgate emit envoy --table table.cgt\n  certgate emit envoy --table table.cgt --http --format json\n  \
certgate emit stats\n  certgate emit access-log --path /var/log/envoy/certgate.json\n  certgate emit istio --table table.cgt --name certgate --namespace payments --selector app=payments --url oci://registry.example/certgate-filter:0.1.0"
)]
pub struct Args {
    #[command(subcommand)]
    target: Target,
}

#[derive(Debug, clap::Subcommand)]
enum Target {
    /// An Envoy access logger writing the connection lifecycle as ECS JSON
    #[command(
        name = "access-log",
        after_help = "Prints one `access_log` entry (an `envoy.access_loggers.file`) whose lines are ECS \
JSON: one per connection (per request on an HTTP connection manager) when it closes, with the TLS handshake \
failure Envoy saw (`error.message`: expired or untrusted client certificates never reach the filter), \
the filter's decision record as text (`certgate.decision`), and the duration and bytes in and out. Put it \
on the listener (`listeners[].access_log`, --site listener: one line for every connection the listener \
accepted, on TCP and HTTP ports alike, handshake failures and connections closed before any HTTP request \
included), or in `tcp_proxy`'s `access_log` (--site tcp-proxy) or the HTTP connection manager's (--site \
http: one line per request, with `http.response.status_code`).\n\n\
Exit codes: 0 printed, 2 usage error.\n\n\
Examples:\n  certgate emit access-log\n  \
certgate emit access-log --site http --path /var/log/envoy/certgate.json --format json"
    )]
    AccessLog(AccessLogArgs),
    /// An Envoy `envoy.filters.network.wasm` (or `--http`) filter entry
    #[command(
        after_help = "Put the printed entry in a listener's filter chain before `tcp_proxy` (or in \
`http_filters` before the router with --http). The certgate module must be at --wasm on the Envoy host.\n\n\
Exit codes: 0 printed, 2 usage or I/O error (unreadable or corrupt table, or a setting the filter would \
refuse; the error names the flag).\n\n\
Examples:\n  certgate emit envoy --table table.cgt\n  certgate emit envoy --table table.cgt --server-first --mode audit\n  \
certgate emit envoy --table table.cgt --feed-cluster certgate-feed --feed-public-key signing.key.pub --feed-max-stale 10m\n  \
certgate emit envoy --table table.cgt --feed-cluster certgate-feed --feed-public-key signing.key.pub --feed-long-poll 30s"
    )]
    Envoy(Box<EnvoyArgs>),
    /// An Istio `WasmPlugin` (type NETWORK, phase AUTHN, failStrategy FAIL_CLOSE, inbound only)
    #[command(
        after_help = "Safe by default: `match: [{mode: SERVER}]` puts the plugin on a sidecar's inbound \
listeners only. Without it Istio also installs a NETWORK plugin on the pod's outbound listeners, where \
connections from the local app carry no client certificate and would all be refused. Use --match client \
for a gateway (Istio counts gateway listeners as CLIENT) and --ports to limit the plugin to some ports.\n\n\
A plugin in the root namespace (--root-namespace, default istio-system) without --selector applies to every \
pod of the mesh: certgate refuses it unless --mesh-wide is given. With --feed-cluster, certgate refuses a \
plugin that would select every pod of the feed server's namespace (a stale table with `onStale: deny` would \
refuse the polls that refresh it) and warns where it cannot tell.\n\n\
The table travels base64-encoded in `pluginConfig`; Kubernetes limits objects to about 1.5 MB, so certgate \
refuses configurations above 1 MB, and warns above 256 KiB, where client-side `kubectl apply` can no longer \
keep its copy in an annotation (use `kubectl apply --server-side`, or the feed). Warnings go to stderr.\n\n\
Exit codes: 0 printed (possibly with warnings), 2 usage or I/O error, an invalid name, label, URL or digest, \
a plugin that would select more than asked, a table too large for a WasmPlugin, or a setting the filter \
would refuse (the error names the flag).\n\n\
Examples:\n  \
certgate emit istio --table t.cgt --name cg --namespace payments --url registry.example/cg:0.1\n  \
certgate emit istio --table t.cgt --name certgate --namespace payments --selector app=payments \\\n    \
--url oci://registry.example/certgate:0.1 --sha256 sha256:<digest that certgate package printed>\n  \
certgate emit istio --table t.cgt --name certgate --namespace payments --ports 8443,9443 \\\n    \
--url oci://registry.example/certgate:0.1 --image-pull-secret registry-cred --revision 1-27-0\n  \
certgate emit istio --table t.cgt --name certgate --namespace istio-system --mesh-wide \\\n    \
--url https://modules.example/certgate_filter.wasm --sha256 <sha256sum of the file>\n  \
certgate emit istio --name certgate --namespace payments --url oci://registry.example/cg:0.1 \\\n    \
--feed-cluster 'outbound|8080||certgate-feed.certgate.svc.cluster.local' \\\n    \
--feed-public-key signing.key.pub --feed-lineage payments"
    )]
    Istio(Box<IstioArgs>),
    /// Envoy's bootstrap `stats_config` that turns certgate's stat names into Prometheus labels
    #[command(
        after_help = "certgate's counters carry their labels (plugin, action, reason, \
mode, policy) in the stat name, as Istio's stats do (`reason=.=default_deny;.;`). Merge the printed \
`stats_config` into the Envoy bootstrap; `/stats/prometheus` then shows \
`certgate_decisions_total{plugin=\"certgate\",action=\"deny\",reason=\"default_deny\",...}`. \
In Istio, list the same tags in `meshConfig.defaultConfig.extraStatTags` instead (docs/filter.md).\n\n\
Exit codes: 0 printed, 2 usage error.\n\n\
Examples:\n  certgate emit stats\n  certgate emit stats --format json"
    )]
    Stats(StatsArgs),
}

#[derive(Debug, clap::Args)]
struct StatsArgs {
    /// Output syntax
    #[arg(long, value_enum, default_value_t = Syntax::Yaml)]
    format: Syntax,
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
    /// Long-poll the feed: each poll is held by the server up to this long (whole seconds, at most `60s`) until a newer table is served
    #[arg(long, value_name = "DURATION")]
    feed_long_poll: Option<String>,
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
    /// Ask the feed for deltas (RFC 3229 `A-IM: certgate-delta`) instead of whole tables
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    feed_deltas: bool,
    /// Override the table's mode in the filter
    #[arg(long, value_parser = ["enforce", "audit"])]
    mode: Option<String>,
    /// Override which decisions the filter records
    #[arg(long, value_name = "LOG", value_parser = ["all", "deny", "none"])]
    audit_log: Option<String>,
    /// Size of the filter's per-worker parsed-certificate cache (at most 65536)
    #[arg(long, value_name = "N", value_parser = cert_cache_size)]
    cert_cache_size: Option<usize>,
    /// Log every decision at info level (costly: about a third more Envoy CPU per connection; for troubleshooting)
    #[arg(long)]
    log_all_decisions: bool,
    /// Output syntax
    #[arg(long, value_enum, default_value_t = Syntax::Yaml)]
    format: Syntax,
}

#[derive(Debug, clap::Args)]
struct AccessLogArgs {
    /// Where the logger sits: `listener` (every connection), `tcp-proxy` or `http` (every request)
    #[arg(long, value_enum, value_name = "SITE", default_value = "listener")]
    site: super::access_log::Site,
    /// The file Envoy writes the lines to
    #[arg(long, value_name = "PATH", default_value = "/dev/stdout")]
    path: String,
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
    /// The plugin's name: the `plugin` label of its metrics (give two certgate filters in one Envoy different names)
    #[arg(long, value_name = "NAME", default_value = "certgate")]
    plugin_name: String,
}

/// Which of a pod's listeners Istio gives the plugin (`match[].mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum MatchMode {
    /// Inbound listeners of sidecars: where client certificates arrive
    Server,
    /// Outbound listeners of sidecars, and the listeners of gateways
    Client,
    /// Every listener (Istio's behaviour without `match`)
    ClientAndServer,
}

impl MatchMode {
    fn istio(self) -> &'static str {
        match self {
            MatchMode::Server => "SERVER",
            MatchMode::Client => "CLIENT",
            MatchMode::ClientAndServer => "CLIENT_AND_SERVER",
        }
    }
}

/// `imagePullPolicy` of the WasmPlugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PullPolicy {
    /// Fetch once per URL and digest (Istio's default for tags other than `latest`)
    #[value(name = "IfNotPresent")]
    IfNotPresent,
    /// Fetch again whenever the WasmPlugin changes
    #[value(name = "Always")]
    Always,
}

#[derive(Debug, clap::Args)]
struct IstioArgs {
    #[command(flatten)]
    config: Config,
    /// `metadata.name` of the WasmPlugin (an RFC 1123 label: at most 63 lowercase letters, digits and `-`)
    #[arg(long)]
    name: String,
    /// `metadata.namespace` of the WasmPlugin (the root namespace applies mesh-wide)
    #[arg(long)]
    namespace: Option<String>,
    /// Workload label selector, `key=value`; repeat for several labels
    #[arg(long, value_name = "KEY=VALUE")]
    selector: Vec<String>,
    /// Where Istio fetches the module: `oci://`, `file://`, `https://` or `http://`; without a scheme, `oci://`
    #[arg(long)]
    url: String,
    /// Which listeners of a selected pod get the plugin: `server` (inbound; sidecars), `client`
    /// (outbound, and gateways), `client-and-server` (every listener)
    #[arg(long, value_enum, value_name = "MODE", default_value_t = MatchMode::Server)]
    r#match: MatchMode,
    /// Only these ports (`match[].ports`), comma-separated; inbound, Istio compares a TCP port's
    /// Service port and an HTTP port's container port: list both when they differ
    #[arg(long, value_name = "PORT,...", value_delimiter = ',')]
    ports: Vec<u16>,
    /// Istio's root namespace, where a WasmPlugin without selector applies to every pod of the mesh
    #[arg(long, value_name = "NAMESPACE", default_value = "istio-system")]
    root_namespace: String,
    /// Allow a plugin in the root namespace without `--selector` (it then applies to every pod of the mesh)
    #[arg(long)]
    mesh_wide: bool,
    /// Expected SHA-256 of the module: the manifest digest for `oci://`, the file's hash for
    /// `http(s)://`; 64 hex digits, with or without `sha256:`
    #[arg(long, value_name = "HEX")]
    sha256: Option<String>,
    /// When istio-agent fetches the module again
    #[arg(long, value_enum, value_name = "POLICY")]
    image_pull_policy: Option<PullPolicy>,
    /// A `kubernetes.io/dockerconfigjson` Secret in the plugin's namespace for a private `oci://` registry
    #[arg(long, value_name = "SECRET")]
    image_pull_secret: Option<String>,
    /// Order among plugins of the same phase (higher runs first)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    priority: Option<i32>,
    /// Istio control-plane revision that should pick the plugin up (label `istio.io/rev`)
    #[arg(long, value_name = "REV")]
    revision: Option<String>,
    /// Decide before the upstream connection is opened (server-speaks-first protocols)
    #[arg(long)]
    server_first: bool,
}

/// A feed duration flag, in milliseconds, read as the filter reads the key it becomes.
fn feed_millis(flag: &str, key: &'static str, text: &str) -> anyhow::Result<u64> {
    filter_config::config::parse_duration(key, text).map_err(|_| {
        anyhow::anyhow!(
            "`{flag} {text}` must be a duration like `500ms`, `5s` or `10m`, at most `24h`"
        )
    })
}

/// The `feed` settings, when `--feed-cluster` is given. Their limits are checked with the
/// rest of the configuration ([`checked`]).
fn feed_config(c: &Config, inline: Option<&ruleset::Table>) -> anyhow::Result<Option<FeedConfig>> {
    let Some(cluster) = &c.feed_cluster else {
        if !c.feed_public_key.is_empty()
            || !c.feed_lineage.is_empty()
            || c.feed_allow_unsigned
            || c.feed_allow_loosening
            || c.feed_long_poll.is_some()
            || !c.feed_deltas
        {
            bail!("the `--feed-*` options need `--feed-cluster`");
        }
        return Ok(None);
    };
    let public_keys = c
        .feed_public_key
        .iter()
        .map(|k| super::keygen::read_public(k))
        .collect::<anyhow::Result<Vec<_>>>()?;
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
    Ok(Some(FeedConfig {
        cluster: cluster.clone(),
        path: c.feed_path.clone(),
        authority: c.feed_authority.clone().unwrap_or_else(|| cluster.clone()),
        interval_millis: feed_millis("--feed-interval", "feed.interval", &c.feed_interval)?,
        max_stale_millis: feed_millis("--feed-max-stale", "feed.maxStale", &c.feed_max_stale)?,
        timeout_millis: match &c.feed_timeout {
            Some(t) => feed_millis("--feed-timeout", "feed.timeout", t)?,
            None => filter_config::config::DEFAULT_FEED_TIMEOUT_MILLIS,
        },
        long_poll_millis: match &c.feed_long_poll {
            Some(t) => {
                let ms = feed_millis("--feed-long-poll", "feed.longPoll", t)?;
                if ms > filter_config::config::MAX_LONG_POLL_MILLIS || ms % 1_000 != 0 {
                    bail!("`--feed-long-poll {t}` must be whole seconds, at most `60s`");
                }
                Some(ms)
            }
            None => None,
        },
        public_keys,
        lineage: Some(lineage),
        allow_unsigned: c.feed_allow_unsigned,
        allow_loosening: c.feed_allow_loosening,
        deltas: c.feed_deltas,
    }))
}

/// The filter configuration the flags describe, refused (naming the flag) where the
/// filter would refuse it.
fn plugin_config(c: &Config, server_first: bool) -> anyhow::Result<FilterConfig> {
    let mut config = FilterConfig::with_table(Vec::new());
    let mut inline = None;
    if let Some(table) = &c.table {
        let (bytes, t) = super::read_table(table)?;
        config.table = bytes;
        inline = Some(t);
    }
    config.feed = feed_config(c, inline.as_ref())?;
    if let Some(m) = &c.mode {
        config.mode = Some(
            Mode::parse(m)
                .ok_or_else(|| anyhow::anyhow!("`--mode {m}` must be `enforce` or `audit`"))?,
        );
    }
    if let Some(l) = &c.audit_log {
        config.audit_log =
            Some(AuditLog::parse(l).ok_or_else(|| {
                anyhow::anyhow!("`--audit-log {l}` must be `all`, `deny` or `none`")
            })?);
    }
    config.server_first = server_first;
    if let Some(n) = c.cert_cache_size {
        config.cert_cache_size = n;
    }
    config.log_all_decisions = c.log_all_decisions;
    checked(config)
}

/// `config` if the filter would load it, else an error that names the flag to change.
fn checked(config: FilterConfig) -> anyhow::Result<FilterConfig> {
    let Err(e) = config.check() else {
        return Ok(config);
    };
    let (flag, help) = match e.key().unwrap_or_default() {
        "certCacheSize" => ("--cert-cache-size", ""),
        "feed.cluster" => ("--feed-cluster", ""),
        "feed.path" => ("--feed-path", " (a request path: `/` and no spaces)"),
        "feed.authority" => ("--feed-authority", " (a host name, no spaces)"),
        "feed.interval" => ("--feed-interval", ""),
        "feed.maxStale" => ("--feed-max-stale", ""),
        "feed.timeout" => ("--feed-timeout", ""),
        "feed.publicKeys" => (
            "--feed-public-key",
            "; a feed needs `--feed-public-key` (the key its tables are signed with, from `certgate keygen`), or `--feed-allow-unsigned`",
        ),
        "feed.lineage" => ("--feed-lineage", ""),
        "mode" => ("--mode", ""),
        "audit.log" => ("--audit-log", ""),
        "serverFirst" => ("--server-first", ""),
        "logAllDecisions" => ("--log-all-decisions", ""),
        "table" => ("--table", ""),
        // Not a setting of one flag (emit wrote something the filter cannot read).
        _ => bail!("certgate emit built a configuration the filter would refuse: {e}"),
    };
    bail!("`{flag}`: the filter would refuse this configuration: {e}{help}")
}

/// The configuration as an emitted document: its JSON value, member for member.
fn to_y(v: &Value) -> Y {
    match v {
        Value::Null => s("null"),
        Value::Bool(b) => Y::Bool(*b),
        Value::Number(n) => n.parse().map_or_else(|_| s(n.clone()), Y::Int),
        Value::String(text) => s(text.clone()),
        Value::Array(items) => Y::List(items.iter().map(to_y).collect()),
        Value::Object(members) => {
            Y::Map(members.iter().map(|(k, v)| (k.clone(), to_y(v))).collect())
        }
    }
}

/// Parses `--cert-cache-size`, held to the filter's own bound on `certCacheSize`.
fn cert_cache_size(value: &str) -> Result<usize, String> {
    let n: usize = value
        .parse()
        .map_err(|e| format!("not a non-negative integer ({e})"))?;
    let mut config = FilterConfig::with_table(Vec::new());
    config.cert_cache_size = n;
    match config.check() {
        Ok(()) => Ok(n),
        Err(e) => Err(format!("the filter would refuse this configuration: {e}")),
    }
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
        Target::AccessLog(a) => {
            let entry = super::access_log::envoy_entry(&a.path, a.site, None);
            print(&entry, a.format);
            Ok(EXIT_OK)
        }
        Target::Stats(a) => {
            print(&stats_config(), a.format);
            Ok(EXIT_OK)
        }
    }
}

/// The bootstrap's `stats_config`: one tag extractor per label certgate writes.
fn stats_config() -> Y {
    let tags = filter_config::stats::stats_tags()
        .into_iter()
        .map(|(tag, regex)| map(vec![("tag_name", s(tag)), ("regex", s(regex))]))
        .collect();
    map(vec![(
        "stats_config",
        map(vec![("stats_tags", Y::List(tags))]),
    )])
}

fn envoy(a: &EnvoyArgs) -> anyhow::Result<u8> {
    let config = plugin_config(&a.config, a.server_first)?;
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
                        // The `plugin` label of the filter's metrics.
                        ("name", s(a.plugin_name.clone())),
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
                                ("value", s(config.serialise())),
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

/// An RFC 1123 label, as Kubernetes checks namespace names (and Istio resource names):
/// 1 to 63 lowercase letters, digits and `-`, starting and ending alphanumeric.
fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// An RFC 1123 subdomain: dot-separated labels, at most 253 characters.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A Kubernetes label value: empty, or at most 63 letters, digits, `-`, `_` and `.`,
/// starting and ending alphanumeric.
fn is_label_value(s: &str) -> bool {
    let b = s.as_bytes();
    b.is_empty()
        || (b.len() <= 63
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
            && b.first().is_some_and(u8::is_ascii_alphanumeric)
            && b.last().is_some_and(u8::is_ascii_alphanumeric))
}

/// A Kubernetes label key: an optional DNS-subdomain prefix and `/`, then a name with the
/// rules of a non-empty label value.
fn is_label_key(s: &str) -> bool {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    prefix.is_none_or(is_dns_subdomain) && !name.is_empty() && is_label_value(name)
}

/// Above this, client-side `kubectl apply` cannot store the object in its
/// `last-applied-configuration` annotation (Kubernetes caps all annotations of an object
/// at 256 KiB together).
pub const KUBECTL_APPLY_WARN_BYTES: usize = 256 * 1024;

/// `--url` as Istio reads it: a URL without scheme is an `oci://` reference
/// (`pilot/pkg/model/extensions.go` sets the scheme to `oci` when it is empty).
fn istio_url(url: &str) -> anyhow::Result<String> {
    const SCHEMES: [&str; 4] = ["oci://", "file://", "https://", "http://"];
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!(
            "`--url {}` must not contain spaces or control characters",
            url.escape_debug()
        );
    }
    if let Some(p) = SCHEMES.iter().find(|p| url.starts_with(**p)) {
        if url.len() > p.len() {
            return Ok(url.to_string());
        }
    } else if !url.contains("://") && !url.is_empty() && !url.starts_with('/') {
        return Ok(format!("oci://{url}"));
    }
    bail!(
        "`--url {url}` must be an image reference (`oci://` is assumed without a scheme) or start with `oci://`, `file://`, `https://` or `http://`"
    )
}

/// `--sha256` as the CRD wants it: 64 lowercase hex digits.
fn sha256_hex(text: &str) -> anyhow::Result<String> {
    let hex = text.strip_prefix("sha256:").unwrap_or(text);
    if hex.len() != 64 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        bail!("`--sha256 {text}` must be 64 hex digits, optionally after `sha256:` (as `certgate package` prints a manifest digest)");
    }
    Ok(hex.to_ascii_lowercase())
}

/// The namespace of the Service an Istio outbound cluster name points at:
/// `outbound|PORT|SUBSET|NAME.NAMESPACE.svc.DOMAIN` (istio `pkg/model` `BuildSubsetKey`).
fn istio_cluster_namespace(cluster: &str) -> Option<&str> {
    let mut parts = cluster.split('|');
    let (Some("outbound"), Some(port), Some(_subset), Some(host), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    port.parse::<u16>().ok()?;
    let mut labels = host.split('.');
    let (_service, namespace, svc) = (labels.next()?, labels.next()?, labels.next()?);
    (svc == "svc").then_some(namespace)
}

fn istio(a: &IstioArgs) -> anyhow::Result<u8> {
    if !is_dns_label(&a.name) {
        bail!(
            "`--name {}` is not an RFC 1123 label (at most 63 lowercase letters, digits and `-`, starting and ending with a letter or digit)",
            a.name
        );
    }
    for (flag, ns) in [
        ("--namespace", a.namespace.as_deref()),
        ("--root-namespace", Some(a.root_namespace.as_str())),
    ] {
        if let Some(ns) = ns.filter(|ns| !is_dns_label(ns)) {
            bail!("`{flag} {ns}` is not a Kubernetes namespace name (an RFC 1123 label: at most 63 lowercase letters, digits and `-`)");
        }
    }
    let url = istio_url(&a.url)?;
    let mut labels = Vec::new();
    for sel in &a.selector {
        match sel.split_once('=') {
            Some((k, v)) if is_label_key(k) && is_label_value(v) => {
                if labels.iter().any(|(have, _)| have == k) {
                    bail!("`--selector {sel}`: label `{k}` is selected twice");
                }
                labels.push((k.to_string(), s(v)));
            }
            Some((k, v)) if !k.is_empty() => bail!(
                "`--selector {sel}` is not a Kubernetes label: the key is an optional DNS prefix and `/` and a name, and the value at most 63 letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit{}",
                if is_label_key(k) { format!(" (`{v}`)") } else { format!(" (`{k}`)") }
            ),
            _ => bail!("`--selector {sel}` must be `key=value`"),
        }
    }
    let in_root = a.namespace.as_deref() == Some(a.root_namespace.as_str());
    if in_root && labels.is_empty() && !a.mesh_wide {
        bail!(
            "a WasmPlugin in the root namespace `{}` without `--selector` applies to every pod of the mesh; \
add `--selector`, choose the workloads' `--namespace`, or pass `--mesh-wide` if that is what you want",
            a.root_namespace
        );
    }
    if a.mesh_wide && !(in_root && labels.is_empty()) {
        bail!(
            "`--mesh-wide` is for a plugin in the root namespace (`--namespace {}`) without `--selector`",
            a.root_namespace
        );
    }
    let mut ports: Vec<u16> = Vec::new();
    for &p in &a.ports {
        if p == 0 || ports.contains(&p) {
            bail!("`--ports` must list distinct ports from 1 to 65535 (`{p}`)");
        }
        ports.push(p);
    }
    let oci = url.starts_with("oci://");
    let sha256 = a.sha256.as_deref().map(sha256_hex).transpose()?;
    if url.starts_with("file://") {
        for (set, flag) in [
            (sha256.is_some(), "--sha256"),
            (a.image_pull_policy.is_some(), "--image-pull-policy"),
            (a.image_pull_secret.is_some(), "--image-pull-secret"),
        ] {
            if set {
                bail!("`{flag}` does not apply to a `file://` module (Istio reads the file as it is); drop it or use an `oci://` or `https://` URL");
            }
        }
    }
    if let (Some(want), Some((_, pinned))) = (&sha256, url.split_once("@sha256:")) {
        if !pinned.eq_ignore_ascii_case(want) {
            bail!("`--sha256` differs from the digest in `--url {url}`; Istio would refuse the module");
        }
    }
    if let Some(secret) = &a.image_pull_secret {
        if !oci {
            bail!("`--image-pull-secret` applies to `oci://` modules only");
        }
        if !is_dns_subdomain(secret) {
            bail!("`--image-pull-secret {secret}` is not a Kubernetes Secret name in the plugin's namespace (lowercase letters, digits, `-` and `.`)");
        }
    }
    if let Some(rev) = a
        .revision
        .as_deref()
        .filter(|r| r.is_empty() || !is_label_value(r))
    {
        bail!("`--revision {rev}` is not a Kubernetes label value (at most 63 letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit)");
    }
    if let Some(cluster) = &a.config.feed_cluster {
        check_feed_selection(a, cluster, labels.is_empty())?;
    }
    let config = plugin_config(&a.config, a.server_first)?;
    let size = config.serialise().len();
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
    if let Some(rev) = &a.revision {
        metadata.push(("labels", map(vec![("istio.io/rev", s(rev.clone()))])));
    }
    let mut spec = Vec::new();
    if !labels.is_empty() {
        spec.push(("selector", map(vec![("matchLabels", Y::Map(labels))])));
    }
    spec.push(("url", s(url)));
    if let Some(hex) = sha256 {
        spec.push(("sha256", s(hex)));
    }
    if let Some(p) = a.image_pull_policy {
        spec.push((
            "imagePullPolicy",
            s(match p {
                PullPolicy::IfNotPresent => "IfNotPresent",
                PullPolicy::Always => "Always",
            }),
        ));
    }
    if let Some(secret) = &a.image_pull_secret {
        spec.push(("imagePullSecret", s(secret.clone())));
    }
    let mut selector = vec![("mode", s(a.r#match.istio()))];
    if !ports.is_empty() {
        selector.push((
            "ports",
            Y::Seq(
                ports
                    .iter()
                    .map(|p| map(vec![("number", Y::Int(u64::from(*p)))]))
                    .collect(),
            ),
        ));
    }
    spec.extend([
        ("pluginName", s("certgate")),
        ("type", s("NETWORK")),
        ("phase", s("AUTHN")),
    ]);
    if let Some(p) = a.priority {
        spec.push(("priority", Y::Signed(i64::from(p))));
    }
    spec.extend([
        ("failStrategy", s("FAIL_CLOSE")),
        ("match", Y::Seq(vec![map(selector)])),
        ("pluginConfig", to_y(&config.to_value())),
    ]);
    let doc = map(vec![
        ("apiVersion", s("extensions.istio.io/v1alpha1")),
        ("kind", s("WasmPlugin")),
        ("metadata", map(metadata)),
        ("spec", map(spec)),
    ]);
    let object = to_json_compact(&doc).len();
    if object > KUBECTL_APPLY_WARN_BYTES {
        eprintln!(
            "warning: the WasmPlugin is {object} bytes; client-side `kubectl apply` keeps a copy in an annotation, \
and annotations are limited to {KUBECTL_APPLY_WARN_BYTES} bytes: use `kubectl apply --server-side` or `kubectl create`, \
or deliver large revocation sets through the feed (`--feed-cluster`)"
        );
    }
    if a.namespace.is_none() && a.selector.is_empty() {
        eprintln!(
            "warning: no `--namespace` and no `--selector`: the plugin applies to every pod of the namespace it is created in, \
and to every pod of the mesh in the root namespace `{}`",
            a.root_namespace
        );
    }
    print(&doc, a.config.format);
    Ok(EXIT_OK)
}

/// A plugin must not sit in front of the feed server it polls: with a stale table and
/// `onStale: deny`, the feed server's own plugin would refuse the polls that would refresh
/// it (and its own). Refuse what is certain from the flags, warn about what is not.
fn check_feed_selection(a: &IstioArgs, cluster: &str, no_selector: bool) -> anyhow::Result<()> {
    let Some(feed_ns) = istio_cluster_namespace(cluster) else {
        eprintln!(
            "warning: `--feed-cluster {cluster}` is not an Istio service cluster name (`outbound|PORT||SERVICE.NAMESPACE.svc.cluster.local`); \
Istio creates no other clusters unless an EnvoyFilter adds one"
        );
        return Ok(());
    };
    let mesh_wide = a.mesh_wide;
    if !no_selector {
        if a.namespace.as_deref() == Some(feed_ns) {
            eprintln!(
                "warning: the plugin shares the namespace `{feed_ns}` with the feed server; make sure `--selector` does not match the feed server's pods"
            );
        }
        return Ok(());
    }
    if a.namespace.as_deref() == Some(feed_ns) {
        bail!(
            "the plugin would select every pod of `{feed_ns}`, the feed server's own namespace (from `--feed-cluster`); \
with a stale table and `onStale: deny` the feed server's sidecar would refuse the polls that refresh it; \
add a `--selector` that leaves the feed server's pods out, or run `certgate serve` in another namespace"
        );
    }
    if mesh_wide {
        eprintln!(
            "warning: a mesh-wide plugin also selects the feed server's pods in `{feed_ns}` if they run a sidecar; \
with a stale table and `onStale: deny` they would refuse the polls that refresh it: \
run `certgate serve` without a sidecar (`sidecar.istio.io/inject: \"false\"`) or give the plugin a `--selector`"
        );
    }
    Ok(())
}
