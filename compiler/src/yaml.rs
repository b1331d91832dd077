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

/// A YAML syntax error, or a document refused for what its aliases would expand to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub(crate) span: Span,
    pub(crate) message: String,
    /// The document is refused by [`MAX_ALIAS_EXPANSION_BYTES`], not for its syntax.
    pub(crate) alias_budget: bool,
}

/// The most that alias expansion may add to a file's loaded size, in bytes, counting each
/// alias as the size of the node it copies ([`loaded_size`]). The YAML loader copies an
/// anchored node for every alias, so a small file of aliases to a large string or list
/// (`a: &a "xxxx…"`, then `[*a, *a, …]`) would grow the compiler to hundreds of times its
/// size; saphyr's own limit counts nodes, not bytes. Real policies share a few lists of
/// principals this way, far below the limit.
pub(crate) const MAX_ALIAS_EXPANSION_BYTES: usize = 8 << 20;

/// What a node is counted as in [`MAX_ALIAS_EXPANSION_BYTES`], besides its text: about
/// what the loader and [`Node`] keep per node, so that many small nodes count too.
const NODE_COST: usize = 64;

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
                alias_budget: false,
            });
        }
        line_start += line.len();
    }
    let offsets = CharOffsets::new(text);
    // Checked before loading: the loader expands every alias as it goes.
    if let Some(alias) = alias_budget_exceeded(text) {
        let start = offsets.byte(alias.start.index());
        let end = offsets.byte(alias.end.index()).max(start);
        return Err(SyntaxError {
            span: Span { file, start, end },
            message: format!(
                "aliases in this file expand to more than {} MiB",
                MAX_ALIAS_EXPANSION_BYTES >> 20
            ),
            alias_budget: true,
        });
    }
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
                alias_budget: false,
            })
        }
    }
}

/// The alias at which the bytes that alias expansion adds to `text` pass
/// [`MAX_ALIAS_EXPANSION_BYTES`], found from the parser's events without building any
/// node (memory: one size per anchor and one per open collection). `None` also for a
/// syntax error: the loader reports it.
fn alias_budget_exceeded(text: &str) -> Option<saphyr_parser::Span> {
    use saphyr_parser::{Event, Parser};
    // The loaded size of each anchor by id, and of each open collection with its anchor.
    let mut anchors: Vec<usize> = Vec::new();
    let mut open: Vec<(usize, usize)> = Vec::new();
    let mut expanded = 0usize;
    for event in Parser::new_from_str(text) {
        let (event, span) = event.ok()?;
        let (anchor, size) = match event {
            Event::Scalar(value, _, anchor, _) => (anchor, NODE_COST.saturating_add(value.len())),
            Event::Alias(id) => {
                let size = anchors.get(id).copied().unwrap_or(0);
                expanded = expanded.saturating_add(size);
                if expanded > MAX_ALIAS_EXPANSION_BYTES {
                    return Some(span);
                }
                (0, size)
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                open.push((anchor, NODE_COST));
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match open.pop() {
                Some(done) => done,
                None => continue,
            },
            _ => continue,
        };
        if anchor != 0 {
            if anchors.len() <= anchor {
                anchors.resize(anchor.saturating_add(1), 0);
            }
            if let Some(slot) = anchors.get_mut(anchor) {
                *slot = size;
            }
        }
        if let Some((_, parent)) = open.last_mut() {
            *parent = parent.saturating_add(size);
        }
    }
    None
}

/// What a node costs once loaded, as [`alias_budget_exceeded`] counts it (for tests).
#[cfg(test)]
fn loaded_size(text: &str) -> usize {
    text.len() + NODE_COST
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

    /// Regression: a 1.4 MB file of aliases to a large string grew the compiler past
    /// 800 MB (saphyr's alias limit counts nodes, not bytes). It is refused before the
    /// loader expands a single alias.
    #[test]
    fn alias_expansion_is_budgeted_in_bytes() {
        let big = "x".repeat(1_000_000);
        let aliases = vec!["*a"; 100_000].join(", ");
        let hostile = format!("a: &a \"{big}\"\nb: [{aliases}]\n");
        assert!(hostile.len() < 1_500_000);
        let e = load(0, &hostile).unwrap_err();
        assert!(e.alias_budget, "{}", e.message);
        assert!(
            e.message.contains("expand to more than 8 MiB"),
            "{}",
            e.message
        );
        // The span is the alias that crossed the budget (the 84th of 100 kB each).
        let big = "x".repeat(100_000);
        let hostile = format!("a: &a \"{big}\"\nb: [{}]\n", vec!["*a"; 100].join(", "));
        let e = load(0, &hostile).unwrap_err();
        assert_eq!(raw(&hostile, e.span), "*a");
        let over = MAX_ALIAS_EXPANSION_BYTES / loaded_size(&big) + 1;
        let before = hostile.find("b: [").unwrap() + 4 + (over - 1) * 4;
        assert_eq!(e.span.start, before);

        // Nested: a list of anchored lists counts what each alias copies, recursively.
        let mut nested = format!("l0: &l0 [\"{}\"]\n", "y".repeat(1000));
        for i in 1..20 {
            let p = i - 1;
            nested.push_str(&format!("l{i}: &l{i} [*l{p}, *l{p}]\n"));
        }
        let e = load(0, &nested).unwrap_err();
        assert!(e.alias_budget, "{}", e.message);

        // Sharing a list of principals a few times is fine.
        let shared = "p: &p [spiffe://a/b, spiffe://a/c]\nq: *p\nr: [*p, *p]\n";
        let docs = load(0, shared).unwrap();
        let Kind::Map(m) = &docs[0].kind else {
            panic!()
        };
        assert_eq!(m[1].1.kind, m[0].1.kind);
    }

    #[test]
    fn several_documents() {
        assert_eq!(load(0, "a: 1\n---\nb: 2\n").unwrap().len(), 2);
    }
}
