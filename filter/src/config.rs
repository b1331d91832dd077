//! The plugin configuration: the JSON that `certgate emit` writes into a
//! `google.protobuf.StringValue` (what Istio makes of a WasmPlugin's `pluginConfig`).
//!
//! Parsed once per VM in `on_configure`. Anything unexpected is an error, so a typo in
//! a deployment fails closed at load time instead of silently changing behaviour.

use std::fmt;

use base64::Engine as _;
use ruleset::{AuditLog, Mode};

use crate::json::{self, Value};

/// Default size of the per-VM certificate cache, in entries.
pub const DEFAULT_CERT_CACHE_SIZE: usize = 1024;
/// Largest accepted `certCacheSize`: a parsed certificate costs about a kilobyte.
pub const MAX_CERT_CACHE_SIZE: usize = 65_536;
/// Largest accepted configuration, in bytes (a 1M-entry revocation table in base64
/// is far below this).
pub const MAX_CONFIG_BYTES: usize = 64 << 20;

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
}

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
        key: &'static str,
        expected: &'static str,
        found: &'static str,
    },
    /// A known key with a value outside its allowed set.
    BadValue { key: &'static str, value: String },
    /// `table` is missing.
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
                "unknown key `{k}` in plugin configuration (known: table, mode, audit, serverFirst, certCacheSize, logAllDecisions)"
            ),
            ConfigError::WrongType { key, expected, found } => {
                write!(f, "`{key}` must be {expected}, found {found}")
            }
            ConfigError::BadValue { key, value } => write!(f, "invalid value `{value}` for `{key}`"),
            ConfigError::MissingTable => write!(f, "missing `table` (the base64 compiled table)"),
            ConfigError::BadBase64(e) => write!(f, "`table` is not standard base64: {e}"),
            ConfigError::BadTable(e) => write!(f, "`table` is not a valid certgate table: {e}"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Parses and validates the raw plugin configuration bytes.
    pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        if bytes.is_empty() {
            return Err(ConfigError::Empty);
        }
        if bytes.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge(bytes.len()));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| ConfigError::NotUtf8)?;
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
        };
        for (key, value) in members {
            match key.as_str() {
                "table" => {
                    let b64 = string(&value, "table", "a base64 string")?;
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(b64.trim())
                        .map_err(|e| ConfigError::BadBase64(e.to_string()))?;
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
        config.table = table.ok_or(ConfigError::MissingTable)?;
        Ok(config)
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
    use super::*;

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
