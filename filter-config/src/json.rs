//! A tiny JSON reader (for the plugin configuration) and writer (for the configuration
//! `certgate emit` prints and the filter's audit records).
//!
//! serde_json would cost tens of kilobytes in a module that must stay small, and the
//! filter reads one small object and writes another. The reader is strict (RFC 8259,
//! no trailing commas, no comments, no duplicate keys) and bounded in nesting depth,
//! because the configuration is untrusted bytes like everything else a filter reads.

use std::fmt::Write as _;
use std::iter::Peekable;
use std::net::IpAddr;
use std::str::Chars;

/// Deepest nesting accepted; the configuration needs two levels.
const MAX_DEPTH: u8 = 8;

/// A parsed JSON value. Numbers keep their source text: the caller decides which
/// numeric type it wants and reports a range error in its own words.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<Value>),
    /// Members in source order; keys are unique.
    Object(Vec<(String, Value)>),
}

impl Value {
    /// The JSON type name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }
}

impl Value {
    /// The value as compact JSON (no whitespace), members in their order. A `Number`
    /// is written as its text, which [`parse`] checked or the caller wrote.
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Number(n) => out.push_str(n),
            Value::String(s) => write_str(out, s),
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Value::Object(members) => {
                out.push('{');
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_str(out, key);
                    out.push(':');
                    value.write(out);
                }
                out.push('}');
            }
        }
    }
}

/// Why a document is not JSON; the text is lowercase and meant for a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

/// Parses one JSON document; trailing non-whitespace is an error.
pub fn parse(text: &str) -> Result<Value, ParseError> {
    let mut p = Parser {
        chars: text.chars().peekable(),
    };
    let value = p.value(0)?;
    p.skip_ws();
    match p.chars.next() {
        None => Ok(value),
        Some(c) => Err(ParseError(format!("unexpected `{c}` after the document"))),
    }
}

struct Parser<'a> {
    chars: Peekable<Chars<'a>>,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while matches!(self.chars.peek(), Some(' ' | '\t' | '\n' | '\r')) {
            self.chars.next();
        }
    }

    fn expect_word(&mut self, word: &str, value: Value) -> Result<Value, ParseError> {
        for want in word.chars() {
            if self.chars.next() != Some(want) {
                return Err(ParseError(format!("invalid literal, expected `{word}`")));
            }
        }
        Ok(value)
    }

    fn value(&mut self, depth: u8) -> Result<Value, ParseError> {
        if depth > MAX_DEPTH {
            return Err(ParseError("nesting too deep".into()));
        }
        self.skip_ws();
        let next_depth = depth.saturating_add(1);
        match self.chars.peek().copied() {
            None => Err(ParseError("unexpected end of input".into())),
            Some('{') => self.object(next_depth),
            Some('[') => self.array(next_depth),
            Some('"') => self.string().map(Value::String),
            Some('t') => self.expect_word("true", Value::Bool(true)),
            Some('f') => self.expect_word("false", Value::Bool(false)),
            Some('n') => self.expect_word("null", Value::Null),
            Some(c) if c == '-' || c.is_ascii_digit() => self.number(),
            Some(c) => Err(ParseError(format!("unexpected `{c}`"))),
        }
    }

    fn object(&mut self, depth: u8) -> Result<Value, ParseError> {
        self.chars.next();
        let mut members: Vec<(String, Value)> = Vec::new();
        self.skip_ws();
        if self.chars.peek() == Some(&'}') {
            self.chars.next();
            return Ok(Value::Object(members));
        }
        loop {
            self.skip_ws();
            if self.chars.peek() != Some(&'"') {
                return Err(ParseError("expected a string key".into()));
            }
            let key = self.string()?;
            if members.iter().any(|(k, _)| *k == key) {
                return Err(ParseError(format!("duplicate key `{key}`")));
            }
            self.skip_ws();
            if self.chars.next() != Some(':') {
                return Err(ParseError(format!("expected `:` after key `{key}`")));
            }
            let value = self.value(depth)?;
            members.push((key, value));
            self.skip_ws();
            match self.chars.next() {
                Some(',') => continue,
                Some('}') => return Ok(Value::Object(members)),
                _ => return Err(ParseError("expected `,` or `}` in object".into())),
            }
        }
    }

    fn array(&mut self, depth: u8) -> Result<Value, ParseError> {
        self.chars.next();
        let mut items = Vec::new();
        self.skip_ws();
        if self.chars.peek() == Some(&']') {
            self.chars.next();
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value(depth)?);
            self.skip_ws();
            match self.chars.next() {
                Some(',') => continue,
                Some(']') => return Ok(Value::Array(items)),
                _ => return Err(ParseError("expected `,` or `]` in array".into())),
            }
        }
    }

    fn number(&mut self) -> Result<Value, ParseError> {
        let mut text = String::new();
        while let Some(&c) = self.chars.peek() {
            if c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E') {
                text.push(c);
                self.chars.next();
            } else {
                break;
            }
        }
        // Shape check per RFC 8259: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
        let body = text.strip_prefix('-').unwrap_or(&text);
        let (mantissa, exponent) = match body.find(['e', 'E']) {
            Some(at) => (
                body.get(..at).unwrap_or(""),
                body.get(at.saturating_add(1)..),
            ),
            None => (body, None),
        };
        let (int, frac) = match mantissa.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (mantissa, None),
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let int_ok = digits(int) && (int == "0" || !int.starts_with('0'));
        let frac_ok = frac.is_none_or(digits);
        let exp_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['+', '-']).unwrap_or(e)));
        if int_ok && frac_ok && exp_ok {
            Ok(Value::Number(text))
        } else {
            Err(ParseError(format!("invalid number `{text}`")))
        }
    }

    fn string(&mut self) -> Result<String, ParseError> {
        self.chars.next(); // opening quote
        let mut out = String::new();
        loop {
            match self.chars.next() {
                None => return Err(ParseError("unterminated string".into())),
                Some('"') => return Ok(out),
                Some('\\') => {
                    let c = match self.chars.next() {
                        Some('"') => '"',
                        Some('\\') => '\\',
                        Some('/') => '/',
                        Some('b') => '\u{8}',
                        Some('f') => '\u{c}',
                        Some('n') => '\n',
                        Some('r') => '\r',
                        Some('t') => '\t',
                        Some('u') => self.unicode_escape()?,
                        _ => return Err(ParseError("invalid escape in string".into())),
                    };
                    out.push(c);
                }
                Some(c) if u32::from(c) < 0x20 => {
                    return Err(ParseError("control character in string".into()))
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, ParseError> {
        let mut v: u32 = 0;
        for _ in 0..4 {
            let d = self
                .chars
                .next()
                .and_then(|c| c.to_digit(16))
                .ok_or_else(|| ParseError("invalid \\u escape".into()))?;
            v = (v << 4) | d;
        }
        Ok(v)
    }

    fn unicode_escape(&mut self) -> Result<char, ParseError> {
        let hi = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&hi) {
            if self.chars.next() != Some('\\') || self.chars.next() != Some('u') {
                return Err(ParseError("unpaired surrogate in string".into()));
            }
            let lo = self.hex4()?;
            if !(0xDC00..0xE000).contains(&lo) {
                return Err(ParseError("unpaired surrogate in string".into()));
            }
            // Both terms are bounded by the range checks above: no overflow.
            0x10000u32
                .saturating_add((hi.saturating_sub(0xD800)) << 10)
                .saturating_add(lo.saturating_sub(0xDC00))
        } else {
            hi
        };
        char::from_u32(code).ok_or_else(|| ParseError("invalid \\u escape".into()))
    }
}

/// Builds one compact JSON object, members in insertion order.
#[derive(Debug, Default)]
pub struct ObjectWriter {
    out: String,
}

impl ObjectWriter {
    pub fn new() -> Self {
        // Room for a whole audit record, so it is built without regrowing.
        let mut out = String::with_capacity(1024);
        out.push('{');
        ObjectWriter { out }
    }

    /// Continues an object whose members so far are `begun`, as [`Self::unfinished`]
    /// returned it.
    pub fn resume(begun: &str) -> Self {
        let mut out = String::with_capacity(begun.len().saturating_add(512).max(1024));
        out.push_str(begun);
        ObjectWriter { out }
    }

    /// The object so far, without its closing brace, to [`Self::resume`] later.
    pub fn unfinished(self) -> String {
        self.out
    }

    fn key(&mut self, key: &str) {
        if self.out.len() > 1 {
            self.out.push(',');
        }
        write_str(&mut self.out, key);
        self.out.push(':');
    }

    /// Adds a string member.
    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        write_str(&mut self.out, value);
        self
    }

    /// Adds a string member when `value` is present.
    pub fn opt_str(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        if let Some(v) = value {
            self.str(key, v);
        }
        self
    }

    /// Adds an unsigned integer member.
    pub fn uint(&mut self, key: &str, value: u64) -> &mut Self {
        self.key(key);
        push_decimal(&mut self.out, value);
        self
    }

    /// Adds an IP address as a string member (IPv4 dotted quad, IPv6 in its
    /// canonical text form).
    pub fn ip(&mut self, key: &str, ip: IpAddr) -> &mut Self {
        self.key(key);
        self.out.push('"');
        match ip {
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        self.out.push('.');
                    }
                    push_decimal(&mut self.out, u64::from(octet));
                }
            }
            IpAddr::V6(v6) => {
                let _ = write!(self.out, "{v6}");
            }
        }
        self.out.push('"');
        self
    }

    /// Adds an array of strings.
    pub fn str_array<'a>(&mut self, key: &str, values: impl Iterator<Item = &'a str>) -> &mut Self {
        self.key(key);
        self.out.push('[');
        for (i, v) in values.enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            write_str(&mut self.out, v);
        }
        self.out.push(']');
        self
    }

    pub fn finish(mut self) -> String {
        self.out.push('}');
        self.out
    }
}

/// Appends `n` in decimal, without the formatting machinery (slow in wasm).
fn push_decimal(out: &mut String, n: u64) {
    push_digits(out, n, 10);
}

/// Appends `n` in lowercase hex, no leading zeros, as `{n:x}` would.
pub fn push_hex(out: &mut String, n: u64) {
    push_digits(out, n, 16);
}

/// Appends `n` in `radix` (2 to 16), most significant digit first.
fn push_digits(out: &mut String, mut n: u64, radix: u64) {
    let radix = radix.clamp(2, 16);
    // 64 digits: u64::MAX in binary, the longest any radix needs.
    let mut digits = [b'0'; 64];
    let mut at = digits.len();
    loop {
        at = at.saturating_sub(1);
        if let (Some(d), Some(digit)) = (
            digits.get_mut(at),
            b"0123456789abcdef"
                .get(usize::try_from(n.checked_rem(radix).unwrap_or(0)).unwrap_or(0)),
        ) {
            *d = *digit;
        }
        n = n.checked_div(radix).unwrap_or(0);
        if n == 0 {
            break;
        }
    }
    for d in digits.get(at..).unwrap_or_default() {
        out.push(char::from(*d));
    }
}

/// Appends `s` as a JSON string literal. Scans bytes, not characters (everything that
/// needs an escape is ASCII, or U+2028/U+2029 = E2 80 A8/A9), and copies the runs in
/// between whole: a record is almost all plain text.
fn write_str(out: &mut String, s: &str) {
    out.push('"');
    let bytes = s.as_bytes();
    let mut plain_from = 0;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let (escape, len): (&str, usize) = match b {
            b'"' => ("\\\"", 1),
            b'\\' => ("\\\\", 1),
            b'\n' => ("\\n", 1),
            b'\r' => ("\\r", 1),
            b'\t' => ("\\t", 1),
            0..=0x1f => ("", 1),
            0xe2 if matches!(
                (
                    bytes.get(i.saturating_add(1)),
                    bytes.get(i.saturating_add(2))
                ),
                (Some(0x80), Some(0xa8 | 0xa9))
            ) =>
            {
                ("", 3)
            }
            _ => {
                i = i.saturating_add(1);
                continue;
            }
        };
        out.push_str(s.get(plain_from..i).unwrap_or_default());
        if escape.is_empty() {
            let code = s
                .get(i..)
                .and_then(|rest| rest.chars().next())
                .map_or(0, u32::from);
            let _ = write!(out, "\\u{code:04x}");
        } else {
            out.push_str(escape);
        }
        i = i.saturating_add(len);
        plain_from = i;
    }
    out.push_str(s.get(plain_from..).unwrap_or_default());
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_configuration_shape() {
        let v = parse(
            r#" {"table":"AAEC","audit":{"log":"deny"},"serverFirst":false,"certCacheSize":1024} "#,
        )
        .unwrap();
        let Value::Object(members) = v else { panic!() };
        assert_eq!(members.len(), 4);
        assert_eq!(
            members[1].1,
            Value::Object(vec![("log".into(), Value::String("deny".into()))])
        );
        assert_eq!(members[3].1, Value::Number("1024".into()));
    }

    #[test]
    fn rejects_malformed_documents() {
        for bad in [
            "",
            "{",
            "{\"a\":}",
            "{\"a\":1,}",
            "[1,]",
            "{\"a\":1} x",
            "{'a':1}",
            "{\"a\":01}",
            "{\"a\":1.}",
            "{\"a\":tru}",
            "{\"a\":\"\\x\"}",
            "{\"a\":1,\"a\":2}",
            "\"\\ud800\"",
            "[[[[[[[[[[[]]]]]]]]]]]",
            "{\"a\":\"\u{1}\"}",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn decodes_escapes() {
        assert_eq!(
            parse(r#""a\"b\\c\/\n\u00e9\ud83d\ude00""#).unwrap(),
            Value::String("a\"b\\c/\né😀".into())
        );
        assert_eq!(parse("-1.5e+3").unwrap(), Value::Number("-1.5e+3".into()));
    }

    #[test]
    fn writer_escapes_and_round_trips() {
        let mut w = ObjectWriter::new();
        w.str("event.reason", "deny\"rule\"\n\u{1}")
            .uint("destination.port", 443)
            .opt_str("absent", None)
            .str_array("names", ["a", "b"].into_iter());
        let text = w.finish();
        assert_eq!(
            text,
            r#"{"event.reason":"deny\"rule\"\n\u0001","destination.port":443,"names":["a","b"]}"#
        );
        assert!(parse(&text).is_ok());
        let mut w = ObjectWriter::new();
        w.uint("zero", 0)
            .uint("max", u64::MAX)
            .ip("v4", "10.0.255.1".parse().unwrap())
            .ip("v6", "2001:db8::1".parse().unwrap());
        assert_eq!(
            w.finish(),
            r#"{"zero":0,"max":18446744073709551615,"v4":"10.0.255.1","v6":"2001:db8::1"}"#
        );
        // Escapes between and after runs of plain (also multi-byte) characters.
        let mut w = ObjectWriter::new();
        w.str("dn", "CN=é\u{2028}ü\tx\\y");
        let text = w.finish();
        assert_eq!(text, r#"{"dn":"CN=é\u2028ü\tx\\y"}"#);
        let Value::Object(m) = parse(&text).unwrap() else {
            panic!("{text}")
        };
        assert_eq!(m[0].1, Value::String("CN=é\u{2028}ü\tx\\y".into()));
    }
}
