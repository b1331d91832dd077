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

fn key(k: &str) -> String {
    if plain_safe(k) {
        k.to_string()
    } else {
        quote(k)
    }
}

fn scalar(v: &Y) -> Option<String> {
    match v {
        Y::Str(s) if plain_safe(s) => Some(s.clone()),
        Y::Str(s) => Some(quote(s)),
        Y::Bool(b) => Some(b.to_string()),
        Y::Int(i) => Some(i.to_string()),
        Y::Signed(i) => Some(i.to_string()),
        Y::Map(m) if m.is_empty() => Some("{}".to_string()),
        Y::Seq(items) if items.is_empty() => Some("[]".to_string()),
        Y::Map(_) | Y::Seq(_) => None,
        Y::List(_) => Some(to_json_compact(v)),
    }
}

/// Block-style YAML.
pub fn to_yaml(v: &Y) -> String {
    let mut out = String::new();
    if let Y::Map(m) = v {
        write_map(&mut out, m, 0);
    } else if let Some(s) = scalar(v) {
        out.push_str(&s);
        out.push('\n');
    }
    out
}

fn write_map(out: &mut String, m: &[(String, Y)], indent: usize) {
    for (k, v) in m {
        out.push_str(&" ".repeat(indent));
        out.push_str(&key(k));
        out.push(':');
        match (scalar(v), v) {
            (Some(s), _) => {
                out.push(' ');
                out.push_str(&s);
                out.push('\n');
            }
            (None, Y::Map(inner)) => {
                out.push('\n');
                write_map(out, inner, indent + 2);
            }
            (None, Y::Seq(items)) => {
                out.push('\n');
                write_seq(out, items, indent);
            }
            (None, _) => out.push('\n'),
        }
    }
}

/// A block sequence at `indent` (Kubernetes style: the dash at the parent key's column);
/// a mapping item starts on the dash's line.
fn write_seq(out: &mut String, items: &[Y], indent: usize) {
    for item in items {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        match (scalar(item), item) {
            (Some(s), _) => {
                out.push(' ');
                out.push_str(&s);
                out.push('\n');
            }
            (None, Y::Map(inner)) => {
                let mut block = String::new();
                write_map(&mut block, inner, indent + 2);
                // The first key moves up onto the dash's line.
                out.push(' ');
                out.push_str(block.get(indent + 2..).unwrap_or_default());
            }
            (None, Y::Seq(inner)) => {
                out.push('\n');
                write_seq(out, inner, indent + 2);
            }
            (None, _) => out.push('\n'),
        }
    }
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
    use super::*;

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
        ]);
        assert_eq!(
            to_yaml(&v),
            "match:\n- mode: SERVER\n  ports:\n  - number: 8443\n- mode: CLIENT\npriority: -5\nempty: []\n"
        );
        let want = serde_json::json!({
            "match": [{"mode": "SERVER", "ports": [{"number": 8443}]}, {"mode": "CLIENT"}],
            "priority": -5,
            "empty": []
        });
        let pretty: serde_json::Value = serde_json::from_str(&to_json(&v)).unwrap();
        let compact: serde_json::Value = serde_json::from_str(&to_json_compact(&v)).unwrap();
        assert_eq!((pretty, compact), (want.clone(), want));
    }
}
