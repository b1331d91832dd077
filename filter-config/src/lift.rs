//! Lifts the inline table out of the plugin configuration while it is read.
//!
//! The table arrives as a base64 string inside the configuration JSON: 10.8 MB of text
//! for a table with a million revoked serials. Reading the whole configuration, parsing
//! it into a JSON value (a copy of the string) and then decoding the base64 (the table)
//! would hold all three at once, and wasm memory never shrinks. Instead the root
//! context reads the configuration in chunks and feeds them here: the top-level
//! `table` string is base64-decoded as it streams past, straight into the one buffer
//! the table will live in, and everything else (a few hundred bytes) is kept as JSON
//! with `"table":""` in its place for the configuration reader (`config.rs`) to
//! validate as usual.

use std::fmt;

/// What is left of the configuration, and the table lifted out of it.
#[derive(Debug)]
pub struct Lifted {
    /// The configuration text with the lifted string's contents removed.
    pub rest: Vec<u8>,
    /// The decoded top-level `table` string, or why it is not base64. `None` when the
    /// configuration has no top-level `table` key written plainly (an escaped key is
    /// left in `rest` for the JSON parser).
    pub table: Option<Result<Vec<u8>, Base64Error>>,
}

/// Why the `table` string is not standard base64; offsets count characters of the
/// string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base64Error {
    /// A character outside the alphabet (or whitespace inside the string).
    Symbol { offset: usize, found: char },
    /// A JSON escape that does not stand for an ASCII character.
    Escape { offset: usize },
    /// Characters after the `=` padding.
    AfterPadding { offset: usize },
    /// A length or padding that standard base64 does not produce.
    Length,
}

impl fmt::Display for Base64Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Base64Error::Symbol { offset, found } => {
                write!(f, "invalid character {found:?} at offset {offset}")
            }
            Base64Error::Escape { offset } => {
                write!(
                    f,
                    "JSON escape at offset {offset} is not a base64 character"
                )
            }
            Base64Error::AfterPadding { offset } => {
                write!(f, "characters after the `=` padding at offset {offset}")
            }
            Base64Error::Length => {
                write!(f, "invalid length or padding (standard base64 is padded)")
            }
        }
    }
}

impl std::error::Error for Base64Error {}

/// Where the scanner is in the JSON text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between tokens.
    Outside,
    /// Inside a string that is not lifted; `escaped` after a backslash. A string
    /// directly inside the top-level object is remembered, in case it is a key.
    InString { escaped: bool, top: bool },
    /// A top-level string just ended; a `:` makes it a key.
    AfterString { table: bool },
    /// After the `:` of a top-level key, before its value.
    BeforeValue { table: bool },
    /// Inside the lifted `table` string.
    Lifting,
    /// After a backslash in the lifted string: the escape's bytes so far.
    LiftEscape { len: u8 },
}

/// Characters decoded per step: a multiple of 4, so a step never splits a quantum.
const STEP: usize = 4096;

/// Streams the base64 of the lifted string into its buffer.
#[derive(Debug)]
struct Decoder {
    out: Vec<u8>,
    /// Characters not decoded yet: at most `STEP` plus the current quantum.
    pending: Vec<u8>,
    /// Characters seen (the string's offset of the next one).
    offset: usize,
    /// Where whitespace after the first base64 character began (fine if nothing but
    /// whitespace follows).
    whitespace_at: Option<usize>,
    /// `=` seen: only more `=` may follow.
    padded: bool,
    error: Option<Base64Error>,
}

impl Decoder {
    fn new(capacity: usize) -> Self {
        Decoder {
            out: Vec::with_capacity(capacity),
            pending: Vec::with_capacity(STEP.saturating_add(4)),
            offset: 0,
            whitespace_at: None,
            padded: false,
            error: None,
        }
    }

    /// One character of the string (after JSON unescaping).
    fn push(&mut self, c: u8) {
        let at = self.offset;
        self.offset = self.offset.saturating_add(1);
        if self.error.is_some() {
            return;
        }
        // Whitespace is trimmed at both ends of the string, as the inline decoder
        // always did; inside it is an error.
        if matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
            let started = !self.pending.is_empty() || !self.out.is_empty();
            if started && self.whitespace_at.is_none() {
                self.whitespace_at = Some(at);
            }
            return;
        }
        if let Some(ws) = self.whitespace_at {
            self.error = Some(Base64Error::Symbol {
                offset: ws,
                found: ' ',
            });
            return;
        }
        let valid = c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=');
        if !valid {
            self.error = Some(Base64Error::Symbol {
                offset: at,
                found: char::from(c),
            });
            return;
        }
        if c != b'=' && self.padded {
            self.error = Some(Base64Error::AfterPadding { offset: at });
            return;
        }
        self.padded |= c == b'=';
        self.pending.push(c);
        if self.pending.len() >= STEP.saturating_add(4) {
            self.flush(STEP);
        }
    }

    /// Decodes the first `n` pending characters (a multiple of 4, no padding inside
    /// unless they are the last).
    fn flush(&mut self, n: usize) {
        use base64::Engine as _;
        let Some(chunk) = self.pending.get(..n) else {
            return;
        };
        if let Err(e) = base64::engine::general_purpose::STANDARD.decode_vec(chunk, &mut self.out) {
            self.error = Some(match e {
                base64::DecodeError::InvalidByte(_, b'=') => {
                    // Padding followed by more quanta.
                    Base64Error::AfterPadding {
                        offset: self.offset,
                    }
                }
                _ => Base64Error::Length,
            });
        }
        self.pending.drain(..n);
    }

    fn finish(mut self) -> Result<Vec<u8>, Base64Error> {
        if self.error.is_none() {
            self.flush(self.pending.len());
        }
        match self.error {
            Some(e) => Err(e),
            None => {
                self.out.shrink_to_fit();
                Ok(self.out)
            }
        }
    }
}

/// The scanner: feed it the configuration in chunks, then [`Lifter::finish`].
#[derive(Debug)]
pub struct Lifter {
    total_len: usize,
    seen: usize,
    state: State,
    depth: u32,
    /// The current top-level string, while it could still be `table`.
    key: Vec<u8>,
    rest: Vec<u8>,
    decoder: Option<Decoder>,
    /// The first top-level `table` string, decoded (a duplicate key stays in `rest`,
    /// where the JSON parser refuses it).
    table: Option<Result<Vec<u8>, Base64Error>>,
    /// An escape in the lifted string so far: the letter after the backslash (`u`),
    /// then up to four hex digits.
    escape: [u8; 5],
}

impl Lifter {
    /// A scanner for a configuration of `total_len` bytes (a hint: it sizes the table
    /// buffer so it never regrows).
    pub fn new(total_len: usize) -> Self {
        Lifter {
            total_len,
            seen: 0,
            state: State::Outside,
            depth: 0,
            key: Vec::new(),
            rest: Vec::new(),
            decoder: None,
            table: None,
            escape: [0; 5],
        }
    }

    /// The next chunk of the configuration.
    pub fn feed(&mut self, chunk: &[u8]) {
        for &c in chunk {
            self.seen = self.seen.saturating_add(1);
            self.byte(c);
        }
    }

    fn byte(&mut self, c: u8) {
        match self.state {
            State::Outside => self.outside(c),
            State::InString { escaped, top } => {
                self.rest.push(c);
                if top && self.key.len() <= b"table".len() {
                    self.key.push(c);
                }
                self.state = match (escaped, c) {
                    (true, _) => State::InString {
                        escaped: false,
                        top,
                    },
                    (false, b'\\') => State::InString { escaped: true, top },
                    (false, b'"') if top => State::AfterString {
                        table: self.key.as_slice() == b"table\"",
                    },
                    (false, b'"') => State::Outside,
                    (false, _) => State::InString {
                        escaped: false,
                        top,
                    },
                };
            }
            State::AfterString { table } => match c {
                b':' => {
                    self.rest.push(c);
                    self.state = State::BeforeValue { table };
                }
                c if c.is_ascii_whitespace() => self.rest.push(c),
                _ => self.outside(c),
            },
            State::BeforeValue { table } => match c {
                b'"' if table => {
                    self.rest.push(c);
                    // Decoded base64 is 3/4 of what is left, at most.
                    let left = self.total_len.saturating_sub(self.seen);
                    self.decoder = Some(Decoder::new((left / 4).saturating_mul(3)));
                    self.state = State::Lifting;
                }
                c if c.is_ascii_whitespace() => self.rest.push(c),
                _ => self.outside(c),
            },
            State::Lifting => match c {
                b'"' => {
                    self.rest.push(c);
                    let done = self.decoder.take().map(Decoder::finish);
                    // A second plain `table` key: keep the first; the parser refuses
                    // the duplicate.
                    if self.table.is_none() {
                        self.table = done;
                    }
                    self.state = State::Outside;
                }
                b'\\' => self.state = State::LiftEscape { len: 0 },
                // Not allowed raw in a JSON string: left for the parser to report.
                c if c < 0x20 => self.rest.push(c),
                c => self.lifted(c),
            },
            State::LiftEscape { len } => self.lift_escape(len, c),
        }
    }

    fn outside(&mut self, c: u8) {
        self.rest.push(c);
        match c {
            b'{' | b'[' => self.depth = self.depth.saturating_add(1),
            b'}' | b']' => self.depth = self.depth.saturating_sub(1),
            b'"' => {
                let top = self.depth == 1;
                if top {
                    self.key.clear();
                }
                self.state = State::InString {
                    escaped: false,
                    top,
                };
            }
            _ => {}
        }
    }

    fn lifted(&mut self, c: u8) {
        if let Some(d) = &mut self.decoder {
            d.push(c);
        }
    }

    /// A JSON escape inside the lifted string: `\/` and the other one-letter escapes
    /// stand for their character, `\u00XX` for an ASCII one; the decoder judges it. An
    /// escape JSON does not allow is left in `rest`, for the parser to report.
    fn lift_escape(&mut self, len: u8, c: u8) {
        let at = self.decoder.as_ref().map_or(0, |d| d.offset);
        let not_json = |this: &mut Self| {
            this.rest.push(b'\\');
            let digits = usize::from(len.min(4));
            this.rest
                .extend_from_slice(this.escape.get(..=digits).unwrap_or_default());
            this.state = State::Lifting;
        };
        let not_base64 = |this: &mut Self| {
            if let Some(d) = &mut this.decoder {
                if d.error.is_none() {
                    d.error = Some(Base64Error::Escape { offset: at });
                }
            }
            this.state = State::Lifting;
        };
        if len == 0 {
            let single = match c {
                b'"' | b'\\' | b'/' => Some(c),
                b'b' => Some(0x08),
                b'f' => Some(0x0c),
                b'n' => Some(b'\n'),
                b'r' => Some(b'\r'),
                b't' => Some(b'\t'),
                _ => None,
            };
            match (single, c) {
                (Some(s), _) => {
                    self.lifted(s);
                    self.state = State::Lifting;
                }
                (None, b'u') => {
                    self.escape = [b'u', 0, 0, 0, 0];
                    self.state = State::LiftEscape { len: 1 };
                }
                (None, _) => {
                    // The parser only needs to see an invalid escape; a non-ASCII
                    // byte would split a UTF-8 sequence and change its complaint.
                    self.escape = [if c.is_ascii() { c } else { b'?' }, 0, 0, 0, 0];
                    not_json(self);
                }
            }
            return;
        }
        let Some(slot) = self.escape.get_mut(usize::from(len)) else {
            return not_json(self);
        };
        *slot = if c.is_ascii() { c } else { b'?' };
        if !c.is_ascii_hexdigit() {
            return not_json(self);
        }
        if len < 4 {
            self.state = State::LiftEscape {
                len: len.saturating_add(1),
            };
            return;
        }
        let code = std::str::from_utf8(self.escape.get(1..).unwrap_or_default())
            .ok()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .filter(u8::is_ascii);
        match code {
            Some(b) => {
                self.lifted(b);
                self.state = State::Lifting;
            }
            None => not_base64(self),
        }
    }

    /// The configuration without the lifted string, and the table.
    pub fn finish(mut self) -> Lifted {
        // A string still open at the end: the JSON parser reports the truncation.
        if let Some(d) = self.decoder.take() {
            if self.table.is_none() {
                self.table = Some(d.finish());
            }
        }
        Lifted {
            rest: self.rest,
            table: self.table,
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    fn lift_in_chunks(text: &[u8], chunk: usize) -> Lifted {
        let mut l = Lifter::new(text.len());
        text.chunks(chunk).for_each(|c| l.feed(c));
        l.finish()
    }

    #[test]
    fn lifts_the_top_level_table_in_any_chunking() {
        let table: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&table);
        let text = format!(
            r#"{{"mode":"table","audit":{{"table":"x"}}, "table" : "{b64}","certCacheSize":8}}"#
        );
        for chunk in [1, 3, 64, 4096, text.len()] {
            let l = lift_in_chunks(text.as_bytes(), chunk);
            assert_eq!(l.table, Some(Ok(table.clone())), "chunk {chunk}");
            assert_eq!(
                String::from_utf8(l.rest).unwrap(),
                r#"{"mode":"table","audit":{"table":"x"}, "table" : "","certCacheSize":8}"#
            );
        }
    }

    #[test]
    fn escapes_whitespace_and_errors() {
        let ok = |s: &str| lift_in_chunks(s.as_bytes(), 2).table;
        assert_eq!(ok(r#"{"table":"AAEC"}"#), Some(Ok(vec![0, 1, 2])));
        let slashes = base64::engine::general_purpose::STANDARD
            .decode("A//A")
            .unwrap();
        assert_eq!(ok(r#"{"table":" \u0041\/\/A\n"}"#), Some(Ok(slashes)));
        assert_eq!(ok(r#"{"table":""}"#), Some(Ok(vec![])));
        assert_eq!(ok(r#"{"table":1}"#), None);
        assert_eq!(ok(r#"{"t\u0061ble":"AAEC"}"#), None);
        assert!(matches!(
            ok(r#"{"table":"AA EC"}"#),
            Some(Err(Base64Error::Symbol { offset: 2, .. }))
        ));
        assert!(matches!(
            ok(r#"{"table":"!!"}"#),
            Some(Err(Base64Error::Symbol {
                offset: 0,
                found: '!'
            }))
        ));
        assert_eq!(ok(r#"{"table":"AA=="}"#), Some(Ok(vec![0])));
        assert!(matches!(
            ok(r#"{"table":"AA==AAAA"}"#),
            Some(Err(Base64Error::AfterPadding { .. }))
        ));
        assert_eq!(ok(r#"{"table":"AAE"}"#), Some(Err(Base64Error::Length)));
        assert!(matches!(
            ok(r#"{"table":"A\u00e9AA"}"#),
            Some(Err(Base64Error::Escape { .. }))
        ));
    }

    #[test]
    fn what_json_forbids_is_left_for_the_parser() {
        for (text, rest) in [
            ("{\"table\":\"AA\nAA\"}", "{\"table\":\"\n\"}"),
            (r#"{"table":"AA\xAA"}"#, r#"{"table":"\x"}"#),
            (r#"{"table":"AA\u00zzAA"}"#, r#"{"table":"\u00z"}"#),
        ] {
            let l = lift_in_chunks(text.as_bytes(), 3);
            assert_eq!(String::from_utf8(l.rest).unwrap(), rest, "{text}");
            assert!(crate::json::parse(rest).is_err(), "{rest}");
        }
    }
}
