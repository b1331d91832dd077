//! A tiny ordered document model printed as YAML or JSON, for `emit`: Envoy and Kubernetes
//! readers expect keys in their conventional order, and every string is quoted unless it is
//! plainly safe, so no value can change type or structure on the way.

/// A value to print.
#[derive(Debug, Clone, PartialEq)]
pub enum Y {
    /// A string.
    Str(String),
    /// A boolean.
    Bool(bool),
    /// A non-negative integer.
    Int(u64),
    /// A signed integer (a WasmPlugin's `priority`).
    Signed(i64),
    /// A sequence, in this order.
    Seq(Vec<Y>),
    /// A mapping, in this order.
    Map(Vec<(String, Y)>),
    /// A sequence, written in flow style (JSON, which YAML reads too).
    List(Vec<Y>),
}

use std::borrow::Cow;

use saphyr::{Mapping, Scalar, ScalarStyle, Yaml, YamlEmitter};

/// Shorthand for a string value.
pub fn s(v: impl Into<String>) -> Y {
    Y::Str(v.into())
}

/// Shorthand for a mapping.
pub fn map(entries: Vec<(&str, Y)>) -> Y {
    Y::Map(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

fn quote(v: &str) -> String {
    serde_json::Value::String(v.to_string()).to_string()
}

/// Whether `v` may be written as a plain (unquoted) YAML scalar and still read back as
/// this string. An allowlist, stricter than saphyr's own test: that one leaves plain what a
/// YAML 1.1 reader (Kubernetes' sigs.k8s.io/yaml, PyYAML) resolves to another type, such as
/// `y` (a boolean), `1_000` and `0b1` (integers) or `2024-01-01` (a timestamp).
fn plain_safe(v: &str) -> bool {
    const WORDS: &[&str] = &[
        "true", "false", "null", "yes", "no", "on", "off", "y", "n", "~",
    ];
    let first_ok = v
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '/');
    first_ok
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:-".contains(c))
        && !v.contains(": ")
        && !v.ends_with(':')
        && !WORDS.contains(&v.to_ascii_lowercase().as_str())
}

/// The body of a double-quoted YAML scalar (without the quotes): JSON's escapes, which
/// YAML's double-quoted style shares, plus `\u` escapes for the characters YAML does not
/// allow raw (DEL, NEL, the line and paragraph separators, the byte-order mark).
fn double_quoted_body(v: &str) -> String {
    let json = quote(v);
    let inner = json
        .strip_prefix('"')
        .and_then(|j| j.strip_suffix('"'))
        .unwrap_or_default();
    let mut out = String::with_capacity(inner.len());
    for c in inner.chars() {
        match c {
            '\u{7f}' | '\u{85}' | '\u{2028}' | '\u{2029}' | '\u{feff}' => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out
}

/// A string as saphyr should write it: plain when [`plain_safe`], else double-quoted.
/// The choice is made here, not by saphyr's emitter (see [`plain_safe`]).
fn string_node(v: &str) -> Yaml<'static> {
    if plain_safe(v) {
        Yaml::Representation(Cow::Owned(v.to_string()), ScalarStyle::Plain, None)
    } else {
        Yaml::Representation(
            Cow::Owned(double_quoted_body(v)),
            ScalarStyle::DoubleQuoted,
            None,
        )
    }
}

/// The saphyr document of `v`. Mapping keys are unique in every document `emit` builds
/// (fixed key lists), so saphyr's hash map loses nothing and keeps their order.
fn node(v: &Y) -> Yaml<'static> {
    match v {
        Y::Str(s) => string_node(s),
        Y::Bool(b) => Yaml::Value(Scalar::Boolean(*b)),
        // u64 is wider than saphyr's i64 integer: write the digits as they are.
        Y::Int(i) => Yaml::Representation(Cow::Owned(i.to_string()), ScalarStyle::Plain, None),
        Y::Signed(i) => Yaml::Value(Scalar::Integer(*i)),
        Y::Seq(items) => Yaml::Sequence(items.iter().map(node).collect()),
        Y::Map(m) => {
            let mut out = Mapping::new();
            for (k, v) in m {
                out.insert(string_node(k), node(v));
            }
            Yaml::Mapping(out)
        }
        // Flow style is JSON, which YAML reads as the same sequence.
        Y::List(_) => {
            Yaml::Representation(Cow::Owned(to_json_compact(v)), ScalarStyle::Plain, None)
        }
    }
}

/// Block-style YAML, written by saphyr's emitter: two-space indentation, sequences indented
/// under their key, no document marker, a final line break.
pub fn to_yaml(v: &Y) -> String {
    let mut out = String::new();
    let mut emitter = YamlEmitter::new(&mut out);
    emitter.multiline(false);
    // Writing into a String cannot fail; if it ever did, JSON is YAML that reads the same.
    if emitter.dump(&node(v)).is_err() {
        return to_json(v);
    }
    let mut text = out.strip_prefix("---\n").map(str::to_string).unwrap_or(out);
    text.push('\n');
    text
}

/// Pretty JSON with keys in order.
pub fn to_json(v: &Y) -> String {
    let mut out = String::new();
    write_json(&mut out, v, 0);
    out.push('\n');
    out
}

fn write_json(out: &mut String, v: &Y, indent: usize) {
    match v {
        Y::Str(s) => out.push_str(&quote(s)),
        Y::Bool(b) => out.push_str(&b.to_string()),
        Y::Int(i) => out.push_str(&i.to_string()),
        Y::Signed(i) => out.push_str(&i.to_string()),
        Y::Map(m) if m.is_empty() => out.push_str("{}"),
        Y::Seq(items) if items.is_empty() => out.push_str("[]"),
        Y::Seq(items) => {
            out.push_str("[\n");
            for (i, v) in items.iter().enumerate() {
                out.push_str(&" ".repeat(indent + 2));
                write_json(out, v, indent + 2);
                if i + 1 < items.len() {
                    out.push(',');
                }
                out.push('\n');
            }
            out.push_str(&" ".repeat(indent));
            out.push(']');
        }
        Y::List(_) => out.push_str(&to_json_compact(v)),
        Y::Map(m) => {
            out.push_str("{\n");
            for (i, (k, v)) in m.iter().enumerate() {
                out.push_str(&" ".repeat(indent + 2));
                out.push_str(&quote(k));
                out.push_str(": ");
                write_json(out, v, indent + 2);
                if i + 1 < m.len() {
                    out.push(',');
                }
                out.push('\n');
            }
            out.push_str(&" ".repeat(indent));
            out.push('}');
        }
    }
}

/// Compact JSON with keys in order (the filter configuration string).
pub fn to_json_compact(v: &Y) -> String {
    match v {
        Y::Str(s) => quote(s),
        Y::Bool(b) => b.to_string(),
        Y::Int(i) => i.to_string(),
        Y::Signed(i) => i.to_string(),
        Y::Seq(items) => {
            let parts: Vec<String> = items.iter().map(to_json_compact).collect();
            format!("[{}]", parts.join(","))
        }
        Y::Map(m) => {
            let parts: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}:{}", quote(k), to_json_compact(v)))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Y::List(items) => {
            let parts: Vec<String> = items.iter().map(to_json_compact).collect();
            format!("[{}]", parts.join(","))
        }
    }
}

#[cfg(test)]
mod tests {
    use saphyr::LoadableYamlNode;

    use super::*;

    /// What a YAML reader makes of `text`, as JSON values (strings stay strings).
    fn read_back(text: &str) -> serde_json::Value {
        fn json(y: &Yaml) -> serde_json::Value {
            match y {
                Yaml::Value(Scalar::String(s)) => serde_json::Value::String(s.to_string()),
                Yaml::Value(Scalar::Integer(i)) => serde_json::json!(i),
                Yaml::Value(Scalar::Boolean(b)) => serde_json::json!(b),
                Yaml::Value(Scalar::FloatingPoint(f)) => serde_json::json!(f.into_inner()),
                Yaml::Sequence(items) => items.iter().map(json).collect(),
                Yaml::Mapping(m) => m
                    .iter()
                    .map(|(k, v)| match k {
                        Yaml::Value(Scalar::String(k)) => (k.to_string(), json(v)),
                        other => panic!("non-string key {other:?}"),
                    })
                    .collect::<serde_json::Map<_, _>>()
                    .into(),
                other => panic!("unexpected node {other:?}"),
            }
        }
        let docs = Yaml::load_from_str(text).unwrap();
        assert_eq!(docs.len(), 1, "{text}");
        json(&docs[0])
    }

    #[test]
    fn quotes_what_yaml_would_misread() {
        let v = map(vec![
            ("@type", s("type.googleapis.com/x")),
            ("a", s("true")),
            ("b", s("1.3")),
            ("c", s("oci://r/x:1")),
            ("d", s("{\"k\":1}")),
            ("e", Y::Bool(false)),
        ]);
        assert_eq!(
            to_yaml(&v),
            "\"@type\": type.googleapis.com/x\na: \"true\"\nb: \"1.3\"\nc: oci://r/x:1\nd: \"{\\\"k\\\":1}\"\ne: false\n"
        );
        assert_eq!(to_json_compact(&map(vec![("a", Y::Int(1))])), "{\"a\":1}");
    }

    /// saphyr's own quoting test leaves these plain, and a YAML 1.1 reader (Kubernetes')
    /// would read a boolean, integers or a timestamp: they must come out quoted.
    #[test]
    fn quotes_what_a_yaml_1_1_reader_would_misread() {
        for v in [
            "y",
            "N",
            "1_000",
            "0b1",
            "2024-01-01",
            "1:20",
            "<<",
            "",
            " x",
            "x ",
        ] {
            let text = to_yaml(&map(vec![("k", s(v))]));
            assert!(text.starts_with("k: \""), "{v:?} written as {text:?}");
            assert_eq!(read_back(&text), serde_json::json!({ "k": v }), "{text}");
        }
    }

    /// Any string, key or value, reads back as itself: control characters, quotes,
    /// backslashes, line breaks, characters YAML does not allow raw, document markers.
    #[test]
    fn every_string_reads_back_as_written() {
        let nasty = [
            "a\nb",
            "tab\there",
            "\"quoted\" and \\ back",
            "del\u{7f} nel\u{85} ls\u{2028} ps\u{2029} bom\u{feff}",
            "\u{1}\u{1f}",
            "---",
            "...",
            "- item",
            "# comment",
            "key: value",
            "&anchor",
            "*alias",
            "!tag",
            "%directive",
            "@at",
            "`tick`",
            "[flow]",
            "{flow}",
            "ünïcödé",
            "null",
            "~",
            "0x1F",
            "1e3",
            ".inf",
        ];
        for v in nasty {
            let doc = map(vec![(v, s(v)), ("list", Y::Seq(vec![s(v)]))]);
            let text = to_yaml(&doc);
            assert_eq!(
                read_back(&text),
                serde_json::json!({ v: v, "list": [v] }),
                "{v:?} written as {text:?}"
            );
        }
    }

    #[test]
    fn sequences_of_mappings_read_back_as_written() {
        let v = map(vec![
            (
                "match",
                Y::Seq(vec![
                    map(vec![
                        ("mode", s("SERVER")),
                        ("ports", Y::Seq(vec![map(vec![("number", Y::Int(8443))])])),
                    ]),
                    map(vec![("mode", s("CLIENT"))]),
                ]),
            ),
            ("priority", Y::Signed(-5)),
            ("empty", Y::Seq(vec![])),
            ("none", map(vec![])),
            ("keys", Y::List(vec![s("k1"), s("k2")])),
        ]);
        assert_eq!(
            to_yaml(&v),
            "match:\n  - mode: SERVER\n    ports:\n      - number: 8443\n  - mode: CLIENT\n\
             priority: -5\nempty: []\nnone: {}\nkeys: [\"k1\",\"k2\"]\n"
        );
        let want = serde_json::json!({
            "match": [{"mode": "SERVER", "ports": [{"number": 8443}]}, {"mode": "CLIENT"}],
            "priority": -5,
            "empty": [],
            "none": {},
            "keys": ["k1", "k2"]
        });
        let pretty: serde_json::Value = serde_json::from_str(&to_json(&v)).unwrap();
        let compact: serde_json::Value = serde_json::from_str(&to_json_compact(&v)).unwrap();
        assert_eq!(
            (pretty, compact, read_back(&to_yaml(&v))),
            (want.clone(), want.clone(), want)
        );
        // Wider than saphyr's i64 integers: written digit for digit.
        assert_eq!(
            to_yaml(&map(vec![("big", Y::Int(u64::MAX))])),
            "big: 18446744073709551615\n"
        );
    }
}
