//! The plugin configuration: the JSON that `certgate emit` writes into a
//! `google.protobuf.StringValue` (what Istio makes of a WasmPlugin's `pluginConfig`).
//!
//! Parsed once per VM in `on_configure`. Anything unexpected is an error, so a typo in
//! a deployment fails closed at load time instead of silently changing behaviour.
//!
//! The parser is the one place that holds the limits: [`Config::check`], for a
//! configuration built in code (by `certgate emit`), runs it on [`Config::serialise`]'s
//! output, so emit refuses exactly what the filter refuses.

use std::fmt;

use base64::Engine as _;
use ruleset::{AuditLog, Mode};

use crate::json::{self, Value};
use crate::lift::{Lifted, Lifter};

/// Default size of the per-VM certificate cache, in entries.
pub const DEFAULT_CERT_CACHE_SIZE: usize = 1024;
/// Largest accepted `certCacheSize` (the filter's cache and its table share the bound).
pub use ruleset::MAX_CERT_CACHE_SIZE;
/// Largest accepted configuration, in bytes (a 1M-entry revocation table in base64
/// is far below this).
pub const MAX_CONFIG_BYTES: usize = 64 << 20;

/// Bytes asked of the host per read of the configuration.
pub const READ_CHUNK: usize = 64 << 10;

/// Up to `max` bytes of `bytes` from `start`, as a host answers a buffer read (`None`
/// past the end).
pub fn chunk_of(bytes: &[u8], start: usize, max: usize) -> Option<Vec<u8>> {
    let end = start.saturating_add(max).min(bytes.len());
    bytes.get(start..end).map(<[u8]>::to_vec)
}

/// The filter's configuration, after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The compiled table (base64-decoded, not yet decoded as a table).
    pub table: Vec<u8>,
    /// Overrides the table's mode when present.
    pub mode: Option<Mode>,
    /// Overrides the table's audit log setting when present.
    pub audit_log: Option<AuditLog>,
    /// Decide from a root-context tick before any upstream connection (server-first protocols).
    pub server_first: bool,
    /// Entries in the per-VM cache of parsed peer certificates; 0 disables it.
    pub cert_cache_size: usize,
    /// Log every decision at info (costly; off by default).
    pub log_all_decisions: bool,
    /// Poll a live table feed (`certgate serve`) instead of (or after) the inline table.
    pub feed: Option<FeedConfig>,
}

/// `feed`: where and how often the root context polls for a newer table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedConfig {
    /// The Envoy cluster that reaches the feed server.
    pub cluster: String,
    /// Request path, starting with `/`.
    pub path: String,
    /// `:authority` of the request; defaults to the cluster name.
    pub authority: String,
    /// Time between polls, in milliseconds.
    pub interval_millis: u64,
    /// Time without a good fetch after which the table's `onStale` decides, in milliseconds.
    pub max_stale_millis: u64,
    /// Timeout of one poll, in milliseconds (a long poll's timeout is this plus its wait).
    pub timeout_millis: u64,
    /// Long-poll (`feed.longPoll`): each poll asks the server to hold it this long
    /// (`Prefer: wait=N`, whole seconds) until a newer table is served, and the next poll
    /// follows the answer at once; `None`: regular polls every `interval`.
    pub long_poll_millis: Option<u64>,
    /// Ed25519 keys a fed table must be signed with (any one; several for rotation).
    pub public_keys: Vec<[u8; 32]>,
    /// The policy names a fed table must carry, in order (`None`: those of the inline
    /// table, which must then be present).
    pub lineage: Option<Vec<String>>,
    /// Accept fed tables without a signature (`publicKeys` may then be empty).
    pub allow_unsigned: bool,
    /// Accept a fed table that loosens `mode`, `defaultAction`, `onStale` or `audit.log`.
    pub allow_loosening: bool,
    /// Ask the feed for deltas (`A-IM: certgate-delta`) instead of whole tables.
    pub deltas: bool,
}

/// Shortest accepted `feed.interval`: a feed is not a busy loop.
pub const MIN_FEED_INTERVAL_MILLIS: u64 = 100;
/// Longest accepted feed duration (one day).
pub const MAX_FEED_DURATION_MILLIS: u64 = 86_400_000;
/// Default `feed.timeout`.
pub const DEFAULT_FEED_TIMEOUT_MILLIS: u64 = 5_000;
/// Longest accepted `feed.longPoll`: what `certgate serve` holds a poll at most.
pub const MAX_LONG_POLL_MILLIS: u64 = 60_000;

/// Why a configuration was refused; `Display` is the log line's detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// No configuration at all.
    Empty,
    /// Larger than [`MAX_CONFIG_BYTES`].
    TooLarge(usize),
    /// Not UTF-8.
    NotUtf8,
    /// Not JSON.
    Json(String),
    /// The document is not an object.
    NotAnObject(&'static str),
    /// A key the filter does not know.
    UnknownKey(String),
    /// A known key with a value of the wrong JSON type.
    WrongType {
        /// The key, dotted below the top level (`feed.interval`).
        key: &'static str,
        /// What the key takes, for the message.
        expected: &'static str,
        /// The JSON type found instead.
        found: &'static str,
    },
    /// A known key with a value outside its allowed set.
    BadValue {
        /// The key, dotted below the top level (`feed.interval`).
        key: &'static str,
        /// The value as written, with the limit it breaks when there is one.
        value: String,
    },
    /// `table` is missing (and there is no `feed`).
    MissingTable,
    /// `table` is not standard base64.
    BadBase64(String),
    /// `table` decodes but is not a valid certgate table.
    BadTable(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Empty => write!(f, "no plugin configuration (expected a JSON object with `table`)"),
            ConfigError::TooLarge(n) => write!(f, "plugin configuration is {n} bytes, more than {MAX_CONFIG_BYTES}"),
            ConfigError::NotUtf8 => write!(f, "plugin configuration is not UTF-8 text"),
            ConfigError::Json(e) => write!(f, "plugin configuration is not valid JSON: {e}"),
            ConfigError::NotAnObject(found) => {
                write!(f, "plugin configuration must be a JSON object, found {found}")
            }
            ConfigError::UnknownKey(k) => write!(
                f,
                "unknown key `{k}` in plugin configuration (known: table, feed, mode, audit, serverFirst, certCacheSize, logAllDecisions)"
            ),
            ConfigError::WrongType { key, expected, found } => {
                write!(f, "`{key}` must be {expected}, found {found}")
            }
            ConfigError::BadValue { key, value } => write!(f, "invalid value `{value}` for `{key}`"),
            ConfigError::MissingTable => write!(f, "missing `table` (the base64 compiled table) or `feed`"),
            ConfigError::BadBase64(e) => write!(f, "`table` is not standard base64: {e}"),
            ConfigError::BadTable(e) => write!(f, "`table` is not a valid certgate table: {e}"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// The configuration key the error is about, dotted below the top level
    /// (`feed.interval`), when it is about one key.
    pub fn key(&self) -> Option<&'static str> {
        match self {
            ConfigError::WrongType { key, .. } | ConfigError::BadValue { key, .. } => Some(key),
            ConfigError::MissingTable | ConfigError::BadBase64(_) | ConfigError::BadTable(_) => {
                Some("table")
            }
            _ => None,
        }
    }
}

impl Config {
    /// Parses and validates the raw plugin configuration bytes.
    pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        Config::read(bytes.len(), |start, max| chunk_of(bytes, start, max))
    }

    /// Reads the `size` bytes of configuration the host announced, in chunks of at most
    /// [`READ_CHUNK`] bytes from `chunk(start, max)` (the host's buffer; `None` or an
    /// empty chunk ends it early, and the parser then reports the truncation), lifting
    /// the inline table out as it goes ([`crate::lift`]), then validates it.
    pub fn read(
        size: usize,
        mut chunk: impl FnMut(usize, usize) -> Option<Vec<u8>>,
    ) -> Result<Config, ConfigError> {
        if size > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge(size));
        }
        let mut lifter = Lifter::new(size);
        let mut read = 0usize;
        while read < size {
            let Some(bytes) = chunk(read, READ_CHUNK).filter(|b| !b.is_empty()) else {
                break;
            };
            read = read.saturating_add(bytes.len());
            lifter.feed(&bytes);
        }
        if read == 0 {
            return Err(ConfigError::Empty);
        }
        Config::from_lifted(lifter.finish())
    }

    // INVARIANT: not generic, unlike `read`. Generic code is instantiated in the crate
    // that calls it (the filter's), with its own copies of every small function it
    // shares with the rest of this crate's parser, and the module would grow.
    fn from_lifted(lifted: Lifted) -> Result<Config, ConfigError> {
        let Lifted {
            rest,
            table: mut lifted,
        } = lifted;
        let text = std::str::from_utf8(&rest).map_err(|_| ConfigError::NotUtf8)?;
        let members = match json::parse(text).map_err(|e| ConfigError::Json(e.0))? {
            Value::Object(m) => m,
            other => return Err(ConfigError::NotAnObject(other.type_name())),
        };

        let mut table = None;
        let mut config = Config {
            table: Vec::new(),
            mode: None,
            audit_log: None,
            server_first: false,
            cert_cache_size: DEFAULT_CERT_CACHE_SIZE,
            log_all_decisions: false,
            feed: None,
        };
        for (key, value) in members {
            match key.as_str() {
                "table" => {
                    let b64 = string(&value, "table", "a base64 string")?;
                    // Lifted while reading, unless the key was written with escapes.
                    let bytes = match lifted.take() {
                        Some(lifted) => {
                            lifted.map_err(|e| ConfigError::BadBase64(e.to_string()))?
                        }
                        None => base64::engine::general_purpose::STANDARD
                            .decode(b64.trim())
                            .map_err(|e| ConfigError::BadBase64(e.to_string()))?,
                    };
                    table = Some(bytes);
                }
                "mode" => {
                    let s = string(&value, "mode", "`enforce` or `audit`")?;
                    config.mode = Some(Mode::parse(s).ok_or_else(|| ConfigError::BadValue {
                        key: "mode",
                        value: s.to_owned(),
                    })?);
                }
                "audit" => config.audit_log = parse_audit(&value)?,
                "feed" => config.feed = Some(parse_feed(&value)?),
                "serverFirst" => config.server_first = boolean(&value, "serverFirst")?,
                "logAllDecisions" => config.log_all_decisions = boolean(&value, "logAllDecisions")?,
                "certCacheSize" => {
                    let wrong = || ConfigError::WrongType {
                        key: "certCacheSize",
                        expected: "a non-negative integer",
                        found: value.type_name(),
                    };
                    let Value::Number(n) = &value else {
                        return Err(wrong());
                    };
                    let n: usize = n.parse().map_err(|_| ConfigError::BadValue {
                        key: "certCacheSize",
                        value: n.clone(),
                    })?;
                    if n > MAX_CERT_CACHE_SIZE {
                        return Err(ConfigError::BadValue {
                            key: "certCacheSize",
                            value: format!("{n} (at most {MAX_CERT_CACHE_SIZE})"),
                        });
                    }
                    config.cert_cache_size = n;
                }
                _ => return Err(ConfigError::UnknownKey(key)),
            }
        }
        // With a feed, an inline table is only the one enforced until the first fetch.
        match table {
            Some(t) => config.table = t,
            // Without an inline table nothing else says which tables the feed may deliver.
            None if config.feed.as_ref().is_some_and(|f| f.lineage.is_none()) => {
                return Err(ConfigError::BadValue {
                    key: "feed.lineage",
                    value: "missing (required without `table`)".into(),
                })
            }
            None if config.feed.is_some() => {}
            None => return Err(ConfigError::MissingTable),
        }
        Ok(config)
    }
}

fn parse_feed(value: &Value) -> Result<FeedConfig, ConfigError> {
    let Value::Object(members) = value else {
        return Err(ConfigError::WrongType {
            key: "feed",
            expected: "an object like {\"cluster\":\"certgate-feed\",\"path\":\"/table.cgt\",\"interval\":\"5s\",\"maxStale\":\"5m\"}",
            found: value.type_name(),
        });
    };
    let mut cluster = None;
    let mut path = None;
    let mut authority = None;
    let mut interval = None;
    let mut max_stale = None;
    let mut timeout = None;
    let mut long_poll = None;
    let mut public_keys = Vec::new();
    let mut lineage = None;
    let mut allow_unsigned = false;
    let mut allow_loosening = false;
    let mut deltas = true;
    for (key, value) in members {
        let bad = |key: &'static str, v: &str| ConfigError::BadValue {
            key,
            value: v.to_owned(),
        };
        match key.as_str() {
            "cluster" => {
                let s = string(value, "feed.cluster", "a cluster name")?;
                if s.is_empty() {
                    return Err(bad("feed.cluster", s));
                }
                cluster = Some(s.to_owned());
            }
            "path" => {
                let s = string(value, "feed.path", "a path like `/table.cgt`")?;
                if !s.starts_with('/') || s.chars().any(|c| c.is_ascii_control() || c == ' ') {
                    return Err(bad("feed.path", s));
                }
                path = Some(s.to_owned());
            }
            "authority" => {
                let s = string(value, "feed.authority", "a host name")?;
                if s.is_empty() || s.chars().any(|c| c.is_ascii_control() || c == ' ') {
                    return Err(bad("feed.authority", s));
                }
                authority = Some(s.to_owned());
            }
            "interval" => {
                let s = string(value, "feed.interval", DURATION)?;
                interval = Some(parse_duration("feed.interval", s)?);
            }
            "maxStale" => {
                let s = string(value, "feed.maxStale", DURATION)?;
                max_stale = Some(parse_duration("feed.maxStale", s)?);
            }
            "timeout" => {
                let s = string(value, "feed.timeout", DURATION)?;
                timeout = Some(parse_duration("feed.timeout", s)?);
            }
            "longPoll" => {
                let s = string(value, "feed.longPoll", DURATION)?;
                let ms = parse_duration("feed.longPoll", s)?;
                // `Prefer: wait=N` counts whole seconds.
                if ms > MAX_LONG_POLL_MILLIS || ms.checked_rem(1_000) != Some(0) {
                    return Err(bad("feed.longPoll", s));
                }
                long_poll = Some(ms);
            }
            "publicKeys" => {
                for k in strings(value, "feed.publicKeys", "a list of `ed25519:BASE64` keys")? {
                    public_keys.push(
                        ruleset::signature::parse_key(k)
                            .ok_or_else(|| bad("feed.publicKeys", k))?,
                    );
                }
            }
            "lineage" => {
                let names: Vec<String> = strings(value, "feed.lineage", "a list of policy names")?
                    .into_iter()
                    .map(str::to_owned)
                    .collect();
                if names.is_empty() {
                    return Err(bad("feed.lineage", "[]"));
                }
                lineage = Some(names);
            }
            "allowUnsigned" => allow_unsigned = boolean(value, "feed.allowUnsigned")?,
            "allowLoosening" => allow_loosening = boolean(value, "feed.allowLoosening")?,
            "deltas" => deltas = boolean(value, "feed.deltas")?,
            _ => return Err(ConfigError::UnknownKey(format!("feed.{key}"))),
        }
    }
    let missing = |k: &'static str| ConfigError::BadValue {
        key: k,
        value: "missing".into(),
    };
    let cluster = cluster.ok_or_else(|| missing("feed.cluster"))?;
    let interval_millis = interval.ok_or_else(|| missing("feed.interval"))?;
    let max_stale_millis = max_stale.ok_or_else(|| missing("feed.maxStale"))?;
    if interval_millis < MIN_FEED_INTERVAL_MILLIS {
        return Err(ConfigError::BadValue {
            key: "feed.interval",
            value: format!("{interval_millis}ms (at least {MIN_FEED_INTERVAL_MILLIS}ms)"),
        });
    }
    if max_stale_millis < interval_millis {
        return Err(ConfigError::BadValue {
            key: "feed.maxStale",
            value: format!("{max_stale_millis}ms (at least `feed.interval`)"),
        });
    }
    let timeout_millis = timeout.unwrap_or(DEFAULT_FEED_TIMEOUT_MILLIS);
    if let Some(wait) = long_poll {
        // A held poll confirms the table only when it is answered: a table may not go
        // stale while its poll is legitimately held.
        if max_stale_millis < wait.saturating_add(timeout_millis) {
            return Err(ConfigError::BadValue {
                key: "feed.maxStale",
                value: format!(
                    "{max_stale_millis}ms (at least `feed.longPoll` + `feed.timeout`, {}ms)",
                    wait.saturating_add(timeout_millis)
                ),
            });
        }
    }
    if public_keys.is_empty() && !allow_unsigned {
        return Err(missing("feed.publicKeys"));
    }
    Ok(FeedConfig {
        public_keys,
        lineage,
        allow_unsigned,
        allow_loosening,
        deltas,
        authority: authority.unwrap_or_else(|| cluster.clone()),
        cluster,
        path: path.ok_or_else(|| missing("feed.path"))?,
        interval_millis,
        max_stale_millis,
        timeout_millis,
        long_poll_millis: long_poll,
    })
}

/// What a duration key takes, for the message.
const DURATION: &str = "a duration string like \"5s\"";

/// A feed duration string, in milliseconds: a whole number and a unit, `ms`, `s`, `m` or
/// `h` (`500ms`, `5s`), more than zero and at most [`MAX_FEED_DURATION_MILLIS`]. `key`
/// names the configuration key in the error.
pub fn parse_duration(key: &'static str, s: &str) -> Result<u64, ConfigError> {
    let bad = || ConfigError::BadValue {
        key,
        value: s.to_owned(),
    };
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let scale = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad()),
    };
    match n.checked_mul(scale) {
        Some(ms) if ms > 0 && ms <= MAX_FEED_DURATION_MILLIS => Ok(ms),
        _ => Err(bad()),
    }
}

/// `millis` as [`parse_duration`] reads it, in the largest unit that divides it
/// (`300000` is `5m`, `1500` is `1500ms`).
pub fn format_duration(millis: u64) -> String {
    let (n, unit) = [(3_600_000, "h"), (60_000, "m"), (1_000, "s")]
        .into_iter()
        .find_map(|(scale, unit)| {
            (millis != 0 && millis.checked_rem(scale) == Some(0))
                .then(|| (millis.checked_div(scale).unwrap_or(0), unit))
        })
        .unwrap_or((millis, "ms"));
    format!("{n}{unit}")
}

impl FeedConfig {
    fn to_value(&self) -> Value {
        let s = |v: &str| Value::String(v.to_owned());
        let mut m = vec![
            ("cluster", s(&self.cluster)),
            ("path", s(&self.path)),
            (
                "interval",
                Value::String(format_duration(self.interval_millis)),
            ),
            (
                "maxStale",
                Value::String(format_duration(self.max_stale_millis)),
            ),
        ];
        // Defaults are left out, as `certgate emit` leaves out the flags not given.
        if self.authority != self.cluster {
            m.push(("authority", s(&self.authority)));
        }
        if self.timeout_millis != DEFAULT_FEED_TIMEOUT_MILLIS {
            m.push((
                "timeout",
                Value::String(format_duration(self.timeout_millis)),
            ));
        }
        if let Some(wait) = self.long_poll_millis {
            m.push(("longPoll", Value::String(format_duration(wait))));
        }
        if !self.public_keys.is_empty() {
            let keys = self.public_keys.iter().map(ruleset::signature::key_id);
            m.push((
                "publicKeys",
                Value::Array(keys.map(Value::String).collect()),
            ));
        }
        if let Some(names) = &self.lineage {
            m.push((
                "lineage",
                Value::Array(names.iter().map(|n| s(n)).collect()),
            ));
        }
        if self.allow_unsigned {
            m.push(("allowUnsigned", Value::Bool(true)));
        }
        if self.allow_loosening {
            m.push(("allowLoosening", Value::Bool(true)));
        }
        if !self.deltas {
            m.push(("deltas", Value::Bool(false)));
        }
        object(m)
    }
}

fn object(members: Vec<(&str, Value)>) -> Value {
    Value::Object(
        members
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    )
}

impl Config {
    /// A configuration with `table` and every other setting at its default.
    pub fn with_table(table: Vec<u8>) -> Config {
        Config {
            table,
            mode: None,
            audit_log: None,
            server_first: false,
            cert_cache_size: DEFAULT_CERT_CACHE_SIZE,
            log_all_decisions: false,
            feed: None,
        }
    }

    /// Whether the filter would load this configuration, for one built in code (by
    /// `certgate emit`): the filter's own parser reads what [`Self::serialise`] writes,
    /// so every limit stays in one place and the answer is the filter's, error and all.
    /// (The table's bytes are not decoded; the filter decodes them after parsing.)
    pub fn check(&self) -> Result<(), ConfigError> {
        Config::parse(self.serialise().as_bytes()).map(|_| ())
    }

    /// The configuration as a JSON value, members in the order `certgate emit` writes
    /// them; settings at their defaults are left out.
    pub fn to_value(&self) -> Value {
        use base64::Engine as _;
        let mut m = Vec::new();
        // Without a table the feed's lineage must be explicit, or the parser refuses it.
        let lineage_given = self.feed.as_ref().is_some_and(|f| f.lineage.is_some());
        if !self.table.is_empty() || !lineage_given {
            let b64 = base64::engine::general_purpose::STANDARD.encode(&self.table);
            m.push(("table", Value::String(b64)));
        }
        if let Some(feed) = &self.feed {
            m.push(("feed", feed.to_value()));
        }
        if let Some(mode) = self.mode {
            m.push(("mode", Value::String(mode.as_str().to_owned())));
        }
        if let Some(log) = self.audit_log {
            let log = Value::String(log.as_str().to_owned());
            m.push(("audit", object(vec![("log", log)])));
        }
        if self.server_first {
            m.push(("serverFirst", Value::Bool(true)));
        }
        if self.cert_cache_size != DEFAULT_CERT_CACHE_SIZE {
            m.push((
                "certCacheSize",
                Value::Number(self.cert_cache_size.to_string()),
            ));
        }
        if self.log_all_decisions {
            m.push(("logAllDecisions", Value::Bool(true)));
        }
        object(m)
    }

    /// The compact JSON the filter reads: [`Self::to_value`] written without spaces.
    pub fn serialise(&self) -> String {
        self.to_value().to_json()
    }
}

fn parse_audit(value: &Value) -> Result<Option<AuditLog>, ConfigError> {
    let Value::Object(members) = value else {
        return Err(ConfigError::WrongType {
            key: "audit",
            expected: "an object like {\"log\":\"deny\"}",
            found: value.type_name(),
        });
    };
    let mut log = None;
    for (key, value) in members {
        if key != "log" {
            return Err(ConfigError::UnknownKey(format!("audit.{key}")));
        }
        let s = string(value, "audit.log", "`all`, `deny` or `none`")?;
        log = Some(AuditLog::parse(s).ok_or_else(|| ConfigError::BadValue {
            key: "audit.log",
            value: s.to_owned(),
        })?);
    }
    Ok(log)
}

fn string<'v>(
    value: &'v Value,
    key: &'static str,
    expected: &'static str,
) -> Result<&'v str, ConfigError> {
    match value {
        Value::String(s) => Ok(s),
        other => Err(ConfigError::WrongType {
            key,
            expected,
            found: other.type_name(),
        }),
    }
}

/// A JSON array of strings.
fn strings<'v>(
    value: &'v Value,
    key: &'static str,
    expected: &'static str,
) -> Result<Vec<&'v str>, ConfigError> {
    let wrong = |found| ConfigError::WrongType {
        key,
        expected,
        found,
    };
    match value {
        Value::Array(items) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.as_str()),
                other => Err(wrong(other.type_name())),
            })
            .collect(),
        other => Err(wrong(other.type_name())),
    }
}

fn boolean(value: &Value, key: &'static str) -> Result<bool, ConfigError> {
    match value {
        Value::Bool(b) => Ok(*b),
        other => Err(ConfigError::WrongType {
            key,
            expected: "true or false",
            found: other.type_name(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Reads `text` from a host that hands out `chunk` bytes at a time.
    fn read_in(text: &[u8], chunk: usize) -> Result<Config, ConfigError> {
        Config::read(text.len(), |start, max| {
            chunk_of(text, start, max.min(chunk))
        })
    }

    #[test]
    fn lifting_the_table_changes_no_outcome() {
        // The same document with the key written `t\u0061ble` is not lifted: it goes
        // through the parser whole, as every configuration did before lifting. Every
        // one-byte deletion or replacement outside the key must give the same outcome
        // either way, read in any chunking.
        let mut variants = vec![];
        for base in [
            r#"{"mode":"audit","table":" AAEC\/A== ","certCacheSize":8}"#,
            r#"{"table":"\u0041AEC"}"#,
        ] {
            let key = base.find(r#""table""#).unwrap();
            let key_end = key + r#""table""#.len();
            variants.push(base.to_owned());
            for i in (0..base.len()).filter(|i| !(key..key_end).contains(i)) {
                let (head, tail) = (&base[..i], &base[i + 1..]);
                variants.push(format!("{head}{tail}"));
                for c in ["\"", "\\", " ", "=", "A", "}", "\n", "é", "/", "u", ","] {
                    variants.push(format!("{head}{c}{tail}"));
                }
            }
        }
        let mut ok = 0;
        for text in &variants {
            let reference =
                Config::parse(text.replacen(r#""table""#, r#""t\u0061ble""#, 1).as_bytes());
            for chunk in [1, 7, READ_CHUNK] {
                let lifted = read_in(text.as_bytes(), chunk);
                match (&lifted, &reference) {
                    (Ok(a), Ok(b)) => assert_eq!(a, b, "{text}"),
                    (Err(a), Err(b)) => assert_eq!(
                        std::mem::discriminant(a),
                        std::mem::discriminant(b),
                        "{text}: {a} vs {b}"
                    ),
                    _ => panic!("{text} (chunk {chunk}): lifted {lifted:?}, parsed {reference:?}"),
                }
            }
            ok += usize::from(reference.is_ok());
        }
        // Both kinds of outcome were exercised.
        assert!(
            ok > 10 && ok < variants.len() / 2,
            "{ok} of {}",
            variants.len()
        );
    }

    #[test]
    fn full_configuration() {
        let c = Config::parse(
            br#"{"table":"AAEC","mode":"audit","audit":{"log":"all"},"serverFirst":true,"certCacheSize":16,"logAllDecisions":true}"#,
        )
        .unwrap();
        assert_eq!(c.table, vec![0, 1, 2]);
        assert_eq!(c.mode, Some(Mode::Audit));
        assert_eq!(c.audit_log, Some(AuditLog::All));
        assert!(c.server_first && c.log_all_decisions);
        assert_eq!(c.cert_cache_size, 16);
    }

    /// `certgate emit` refuses `--cert-cache-size` above the same shared limit; this pins
    /// the filter's side of the boundary.
    #[test]
    fn cert_cache_size_limit_is_the_one_emit_enforces() {
        let at = format!(r#"{{"table":"","certCacheSize":{MAX_CERT_CACHE_SIZE}}}"#);
        assert_eq!(
            Config::parse(at.as_bytes()).unwrap().cert_cache_size,
            ruleset::MAX_CERT_CACHE_SIZE
        );
        let above = format!(
            r#"{{"table":"","certCacheSize":{}}}"#,
            MAX_CERT_CACHE_SIZE + 1
        );
        let err = Config::parse(above.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("at most 65536"), "{err}");
    }

    #[test]
    fn feed_without_table() {
        let c = Config::parse(
            br#"{"feed":{"cluster":"certgate-feed","path":"/table.cgt","interval":"500ms","maxStale":"2m","timeout":"1s","publicKeys":["ed25519:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=","AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI="],"lineage":["a","b"]}}"#,
        )
        .unwrap();
        assert!(c.table.is_empty());
        let f = c.feed.unwrap();
        assert_eq!(f.authority, "certgate-feed");
        assert_eq!(
            (f.interval_millis, f.max_stale_millis, f.timeout_millis),
            (500, 120_000, 1_000)
        );
        assert_eq!(f.public_keys, vec![[1u8; 32], [2u8; 32]]);
        assert_eq!(f.lineage, Some(vec!["a".to_string(), "b".to_string()]));
        assert!(!f.allow_unsigned && !f.allow_loosening);
        assert!(f.deltas, "deltas are asked for unless turned off");
    }

    #[test]
    fn feed_trust_settings_are_validated() {
        let base = r#""cluster":"c","path":"/t","interval":"1s","maxStale":"1m""#;
        for (extra, want) in [
            ("", "invalid value `missing` for `feed.publicKeys`"),
            (
                r#","publicKeys":["ed25519:AAAA"]"#,
                "invalid value `ed25519:AAAA` for `feed.publicKeys`",
            ),
            (r#","publicKeys":"x""#, "`feed.publicKeys` must be"),
            (r#","publicKeys":[1]"#, "`feed.publicKeys` must be"),
            (
                r#","allowUnsigned":true,"lineage":[]"#,
                "invalid value `[]` for `feed.lineage`",
            ),
            (
                r#","allowUnsigned":"yes""#,
                "`feed.allowUnsigned` must be true or false",
            ),
            (r#","allowUnsigned":true"#, "`feed.lineage`"),
            (
                r#","allowUnsigned":true,"lineage":["p"],"deltas":"no""#,
                "`feed.deltas` must be true or false",
            ),
        ] {
            let json = format!(r#"{{"feed":{{{base}{extra}}}}}"#);
            let e = Config::parse(json.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(want), "{extra}: {e}");
        }
        let ok = format!(
            r#"{{"feed":{{{base},"allowUnsigned":true,"allowLoosening":true,"lineage":["p"]}}}}"#
        );
        let f = Config::parse(ok.as_bytes()).unwrap().feed.unwrap();
        assert!(f.allow_unsigned && f.allow_loosening && f.public_keys.is_empty());
        let off =
            format!(r#"{{"feed":{{{base},"allowUnsigned":true,"lineage":["p"],"deltas":false}}}}"#);
        assert!(!Config::parse(off.as_bytes()).unwrap().feed.unwrap().deltas);
    }

    /// Configurations the parser accepts, from the smallest to every key set; strings
    /// include quotes, backslashes, control and non-ASCII characters where the filter
    /// takes them.
    fn valid_config() -> impl Strategy<Value = Config> {
        let text = "[a-z0-9.|-]{1,12}|[^\\x00]{1,6}|[\"\\\\\\x01-\\x1f\u{2028}é]{1,4}";
        let no_space = "[^ \\x00-\\x1f\\x7f]{1,12}";
        let millis = |lo: u64| {
            prop_oneof![
                lo..=MAX_FEED_DURATION_MILLIS,
                (1..=24u64).prop_map(|h| h * 3_600_000),
                (1..=60u64).prop_map(|m| m * 60_000),
                (1..=90u64).prop_map(|s| s * 1_000),
            ]
            .prop_filter("within bounds", move |ms| *ms >= lo)
        };
        let timing = millis(MIN_FEED_INTERVAL_MILLIS).prop_flat_map(move |interval| {
            (
                Just(interval),
                (interval..=MAX_FEED_DURATION_MILLIS).boxed(),
            )
        });
        let feed = (
            (
                text,
                "/[^ \\x00-\\x1f\\x7f]{0,12}",
                proptest::option::of(no_space),
            ),
            timing,
            millis(1),
            proptest::collection::vec(any::<[u8; 32]>(), 0..3),
            proptest::option::of(proptest::collection::vec(text, 1..4)),
            (
                any::<(bool, bool, bool)>(),
                proptest::option::of((1..=60u64).prop_map(|s| s * 1_000)),
            ),
        )
            .prop_map(
                |(
                    (cluster, path, authority),
                    (interval, max_stale),
                    timeout,
                    keys,
                    lineage,
                    ((unsigned, loosening, deltas), long_poll),
                )| FeedConfig {
                    authority: authority.unwrap_or_else(|| cluster.clone()),
                    cluster,
                    path,
                    interval_millis: interval,
                    max_stale_millis: max_stale,
                    timeout_millis: timeout,
                    long_poll_millis: long_poll
                        .filter(|wait| max_stale >= wait.saturating_add(timeout)),
                    allow_unsigned: unsigned || keys.is_empty(),
                    public_keys: keys,
                    lineage,
                    allow_loosening: loosening,
                    deltas,
                },
            );
        (
            proptest::collection::vec(any::<u8>(), 0..48),
            proptest::option::of(prop_oneof![Just(Mode::Enforce), Just(Mode::Audit)]),
            proptest::option::of(prop_oneof![
                Just(AuditLog::All),
                Just(AuditLog::Deny),
                Just(AuditLog::None)
            ]),
            any::<(bool, bool)>(),
            prop_oneof![Just(DEFAULT_CERT_CACHE_SIZE), 0..=MAX_CERT_CACHE_SIZE],
            proptest::option::of(feed),
        )
            .prop_map(
                |(
                    table,
                    mode,
                    audit_log,
                    (server_first, log_all_decisions),
                    cert_cache_size,
                    feed,
                )| Config {
                    table,
                    mode,
                    audit_log,
                    server_first,
                    cert_cache_size,
                    log_all_decisions,
                    feed,
                },
            )
    }

    proptest! {
        #[test]
        fn serialise_round_trips(c in valid_config()) {
            prop_assert_eq!(c.check(), Ok(()));
            let text = c.serialise();
            prop_assert_eq!(Config::parse(text.as_bytes()), Ok(c.clone()), "{}", text);
            // Read as the filter reads it, a chunk at a time, the table lifted out.
            prop_assert_eq!(read_in(text.as_bytes(), 5), Ok(c), "{}", text);
        }
    }

    #[test]
    fn serialised_shape_is_the_one_emit_prints() {
        let mut c = Config::with_table(vec![0, 1, 2]);
        c.mode = Some(Mode::Audit);
        c.audit_log = Some(AuditLog::Deny);
        c.server_first = true;
        c.cert_cache_size = 16;
        c.log_all_decisions = true;
        c.feed = Some(FeedConfig {
            cluster: "certgate-feed".into(),
            path: "/table.cgt".into(),
            authority: "feed.example:8080".into(),
            interval_millis: 5_000,
            max_stale_millis: 600_000,
            timeout_millis: 1_500,
            long_poll_millis: Some(30_000),
            public_keys: vec![[1; 32]],
            lineage: Some(vec!["a".into(), "b\"".into()]),
            allow_unsigned: false,
            allow_loosening: true,
            deltas: false,
        });
        assert_eq!(
            c.serialise(),
            r#"{"table":"AAEC","feed":{"cluster":"certgate-feed","path":"/table.cgt","interval":"5s","maxStale":"10m","authority":"feed.example:8080","timeout":"1500ms","longPoll":"30s","publicKeys":["ed25519:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="],"lineage":["a","b\""],"allowLoosening":true,"deltas":false},"mode":"audit","audit":{"log":"deny"},"serverFirst":true,"certCacheSize":16,"logAllDecisions":true}"#
        );
        // Defaults are left out; a feed without a table keeps `table` only when the
        // lineage must come from it.
        assert_eq!(Config::with_table(vec![]).serialise(), r#"{"table":""}"#);
    }

    #[test]
    fn durations_are_written_in_their_largest_unit() {
        for (ms, text) in [
            (1, "1ms"),
            (100, "100ms"),
            (1_500, "1500ms"),
            (5_000, "5s"),
            (90_000, "90s"),
            (600_000, "10m"),
            (3_600_000, "1h"),
            (MAX_FEED_DURATION_MILLIS, "24h"),
        ] {
            assert_eq!(format_duration(ms), text);
            assert_eq!(parse_duration("feed.interval", text), Ok(ms));
        }
    }

    /// Regression: `certgate emit --cert-cache-size 100000` printed a configuration the
    /// filter refused at load. `check` (emit's side) and the parser (the filter's) now
    /// share the bound and refuse it alike.
    #[test]
    fn cert_cache_size_above_the_limit_is_refused_by_both_sides() {
        let mut c = Config::with_table(vec![]);
        c.cert_cache_size = 100_000;
        let checked = c.check().unwrap_err();
        let parsed = Config::parse(c.serialise().as_bytes()).unwrap_err();
        assert_eq!(checked, parsed);
        assert_eq!(checked.key(), Some("certCacheSize"));
        assert_eq!(
            checked.to_string(),
            "invalid value `100000 (at most 65536)` for `certCacheSize`"
        );
    }

    #[test]
    fn defaults() {
        let c = Config::parse(br#"{"table":""}"#).unwrap();
        assert_eq!(c.mode, None);
        assert_eq!(c.audit_log, None);
        assert!(!c.server_first && !c.log_all_decisions);
        assert_eq!(c.cert_cache_size, DEFAULT_CERT_CACHE_SIZE);
    }

    #[test]
    fn each_bad_configuration_has_its_own_message() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "no plugin configuration"),
            (b"\xff", "not UTF-8"),
            (b"{", "not valid JSON"),
            (b"[]", "must be a JSON object, found array"),
            (br#"{"table":"AA==","extra":1}"#, "unknown key `extra`"),
            (
                br#"{"table":"AA==","audit":{"level":"x"}}"#,
                "unknown key `audit.level`",
            ),
            (
                br#"{"table":1}"#,
                "`table` must be a base64 string, found number",
            ),
            (br#"{"table":"!!"}"#, "not standard base64"),
            (br#"{}"#, "missing `table`"),
            (br#"{"feed":1}"#, "`feed` must be an object"),
            (
                br#"{"feed":{"cluster":"f","path":"/t","interval":"1s","maxStale":"1m","x":1}}"#,
                "unknown key `feed.x`",
            ),
            (
                br#"{"feed":{"path":"/t","interval":"1s","maxStale":"1m"}}"#,
                "invalid value `missing` for `feed.cluster`",
            ),
            (
                br#"{"feed":{"cluster":"f","path":"t","interval":"1s","maxStale":"1m"}}"#,
                "invalid value `t` for `feed.path`",
            ),
            (
                br#"{"feed":{"cluster":"f","path":"/t","interval":"1","maxStale":"1m"}}"#,
                "invalid value `1` for `feed.interval`",
            ),
            (
                br#"{"feed":{"cluster":"f","path":"/t","interval":"5x","maxStale":"1m"}}"#,
                "invalid value `5x`",
            ),
            (
                br#"{"feed":{"cluster":"f","path":"/t","interval":"10ms","maxStale":"1m"}}"#,
                "at least 100ms",
            ),
            (
                br#"{"feed":{"cluster":"f","path":"/t","interval":"1m","maxStale":"1s"}}"#,
                "at least `feed.interval`",
            ),
            (
                br#"{"feed":{"cluster":"f","path":"/t","interval":5,"maxStale":"1m"}}"#,
                "must be a duration string",
            ),
            (
                br#"{"feed":{"cluster":"f","path":"/t","interval":"1s","maxStale":"5m","longPoll":"61s"}}"#,
                "invalid value `61s` for `feed.longPoll`",
            ),
            (
                br#"{"feed":{"cluster":"f","path":"/t","interval":"1s","maxStale":"5m","longPoll":"1500ms"}}"#,
                "invalid value `1500ms` for `feed.longPoll`",
            ),
            (
                br#"{"feed":{"cluster":"f","path":"/t","interval":"1s","maxStale":"30s","longPoll":"30s"}}"#,
                "at least `feed.longPoll` + `feed.timeout`, 35000ms",
            ),
            (
                br#"{"feed":{"cluster":"f","path":"/t","interval":"0s","maxStale":"1m"}}"#,
                "invalid value `0s`",
            ),
            (
                br#"{"table":"","mode":"block"}"#,
                "invalid value `block` for `mode`",
            ),
            (
                br#"{"table":"","audit":"deny"}"#,
                "`audit` must be an object",
            ),
            (
                br#"{"table":"","audit":{"log":"some"}}"#,
                "invalid value `some` for `audit.log`",
            ),
            (
                br#"{"table":"","serverFirst":"yes"}"#,
                "`serverFirst` must be true or false",
            ),
            (
                br#"{"table":"","certCacheSize":-1}"#,
                "invalid value `-1` for `certCacheSize`",
            ),
            (
                br#"{"table":"","certCacheSize":1.5}"#,
                "invalid value `1.5`",
            ),
            (br#"{"table":"","certCacheSize":999999}"#, "at most 65536"),
            (
                br#"{"table":"","certCacheSize":"8"}"#,
                "must be a non-negative integer",
            ),
        ];
        for (input, want) in cases {
            let err = Config::parse(input).unwrap_err().to_string();
            assert!(
                err.contains(want),
                "{:?}: {err}",
                String::from_utf8_lossy(input)
            );
        }
    }
}
