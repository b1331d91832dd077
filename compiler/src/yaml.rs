//! Loads YAML into a small node tree that keeps a byte span for every node, keys included.
//! The policy walker works on this tree only, so the YAML crate stays behind this module.

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};

use crate::source::{CharOffsets, Span};

/// A YAML node with its span.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub(crate) span: Span,
    pub(crate) kind: Kind,
}

/// The shapes a node can have.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// A string; `raw` for plain scalars that the YAML core schema read as something else is
    /// kept in the other variants' spans.
    Str(String),
    Seq(Vec<Node>),
    /// Keys in document order.
    Map(Vec<(Node, Node)>),
    /// Aliases, tags and values the YAML crate could not resolve.
    Unsupported(&'static str),
}

impl Node {
    /// The YAML type name used in messages.
    pub(crate) fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Null => "null",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) => "an integer",
            Kind::Float(_) => "a number",
            Kind::Str(_) => "a string",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
            Kind::Unsupported(what) => what,
        }
    }
}

/// A YAML syntax error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub(crate) span: Span,
    pub(crate) message: String,
}

/// Deepest indentation (in characters of blanks and block indicators at the start of a
/// line) accepted. Block nesting depth is bounded by it, and the YAML loader recurses per
/// level: hostile input nested thousands deep would overflow the stack (flow collections
/// have their own limit in the parser). Real policies stay under 30.
const MAX_INDENT: usize = 256;

/// Parses every document of `text`. Duplicate keys are a syntax error.
pub(crate) fn load(file: usize, text: &str) -> Result<Vec<Node>, SyntaxError> {
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        let indent = line
            .chars()
            .take_while(|c| matches!(c, ' ' | '\t' | '-' | '?' | ':'))
            .count();
        if indent > MAX_INDENT {
            return Err(SyntaxError {
                span: Span {
                    file,
                    start: line_start,
                    end: line_start,
                },
                message: format!("the document is nested too deeply (more than {MAX_INDENT} columns of indentation)"),
            });
        }
        line_start += line.len();
    }
    let offsets = CharOffsets::new(text);
    match MarkedYaml::load_from_str(text) {
        Ok(docs) => Ok(docs
            .iter()
            .map(|d| convert(file, text, &offsets, d, 0))
            .collect()),
        Err(e) => {
            let at = offsets.byte(e.marker().index());
            Err(SyntaxError {
                span: Span {
                    file,
                    start: at,
                    end: at,
                },
                message: lowercase_first(e.info()),
            })
        }
    }
}

/// `s` with its first letter lowercased (parser messages start capitalised; ours do not).
pub(crate) fn lowercase_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Deep enough for any policy; deeper input is hostile and is cut off, not recursed into.
const MAX_DEPTH: usize = 64;

fn convert(
    file: usize,
    text: &str,
    offsets: &CharOffsets,
    y: &MarkedYaml<'_>,
    depth: usize,
) -> Node {
    let start = offsets.byte(y.span.start.index());
    let mut end = offsets.byte(y.span.end.index()).max(start);
    let kind = if depth > MAX_DEPTH {
        Kind::Unsupported("a too deeply nested value")
    } else {
        match &y.data {
            YamlData::Value(s) => match s {
                Scalar::Null => Kind::Null,
                Scalar::Boolean(b) => Kind::Bool(*b),
                Scalar::Integer(i) => Kind::Int(*i),
                Scalar::FloatingPoint(f) => Kind::Float(f.into_inner()),
                Scalar::String(s) => Kind::Str(s.to_string()),
            },
            YamlData::Representation(s, _, _) => Kind::Str(s.to_string()),
            YamlData::Sequence(items) => Kind::Seq(
                items
                    .iter()
                    .map(|i| convert(file, text, offsets, i, depth + 1))
                    .collect(),
            ),
            YamlData::Mapping(map) => Kind::Map(
                map.iter()
                    .map(|(k, v)| {
                        (
                            convert(file, text, offsets, k, depth + 1),
                            convert(file, text, offsets, v, depth + 1),
                        )
                    })
                    .collect(),
            ),
            YamlData::Tagged(_, _) => Kind::Unsupported("a tagged value"),
            YamlData::Alias(_) => Kind::Unsupported("an alias"),
            YamlData::BadValue => Kind::Unsupported("an unreadable value"),
        }
    };
    // Trailing blanks are trimmed so a span never runs onto the next line; a flow
    // collection's span stops before its closing bracket, which belongs to it.
    if let Some(slice) = text.get(start..end) {
        end = start + slice.trim_end().len();
    }
    let closer = match text.get(start..).and_then(|t| t.chars().next()) {
        Some('[') if matches!(kind, Kind::Seq(_)) => Some(']'),
        Some('{') if matches!(kind, Kind::Map(_)) => Some('}'),
        _ => None,
    };
    if let Some(c) = closer {
        if let Some(rest) = text.get(end..) {
            let skip = rest.len() - rest.trim_start().len();
            if rest.trim_start().starts_with(c) {
                end += skip + 1;
            }
        }
    }
    Node {
        span: Span { file, start, end },
        kind,
    }
}

/// The source text of a node (a plain scalar such as `1.3` as written).
pub(crate) fn raw(text: &str, span: Span) -> &str {
    text.get(span.start..span.end).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> Node {
        load(0, text).unwrap().remove(0)
    }

    #[test]
    fn spans_cover_keys_and_scalars() {
        let text = "a: 1\nbé: [x, \"y\"]\n";
        let n = doc(text);
        let Kind::Map(m) = &n.kind else { panic!() };
        let (k, v) = &m[1];
        assert_eq!(raw(text, k.span), "bé");
        assert_eq!(raw(text, v.span), "[x, \"y\"]");
        let Kind::Seq(items) = &v.kind else { panic!() };
        assert_eq!(raw(text, items[1].span), "\"y\"");
        assert_eq!(items[1].kind, Kind::Str("y".into()));
    }

    #[test]
    fn duplicate_keys_are_syntax_errors() {
        let e = load(0, "a: 1\na: 2\n").unwrap_err();
        assert!(e.message.contains("duplicate"), "{}", e.message);
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let text: String = (0..5000)
            .map(|i| format!("{}- \n", "  ".repeat(i)))
            .collect();
        let e = load(0, &format!("a:\n{text}")).unwrap_err();
        assert!(e.message.contains("nested too deeply"), "{}", e.message);
        let flow = format!("a: {}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(load(0, &flow).is_err());
    }

    #[test]
    fn several_documents() {
        assert_eq!(load(0, "a: 1\n---\nb: 2\n").unwrap().len(), 2);
    }
}
