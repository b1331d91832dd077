//! Source files and byte spans. Diagnostics point into these; the renderers turn a span into
//! `file:line:column` (1-based, columns counted in characters, as editors do).

/// One policy file the compiler read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// The path as the user can open it; shown in diagnostics.
    pub path: String,
    /// The path relative to the input it was found in (for a file given directly, its file
    /// name); it goes into the policy digest so the digest does not depend on the working
    /// directory.
    pub relative: String,
    /// The file's text.
    pub text: String,
}

impl Input {
    /// An input whose display and digest paths are the same.
    pub fn new(path: impl Into<String>, text: impl Into<String>) -> Input {
        let path = path.into();
        Input {
            relative: path.clone(),
            path,
            text: text.into(),
        }
    }
}

/// A byte range in one input file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    /// Index of the file in the compiler's input list.
    pub file: usize,
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

/// A value with the span of the YAML node it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spanned<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    pub span: Span,
}

impl<T> Spanned<T> {
    /// Pairs a value with its span.
    pub fn new(value: T, span: Span) -> Self {
        Spanned { value, span }
    }
}

/// A position for humans: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineCol {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

/// Maps byte offsets of one text to lines and columns.
#[derive(Debug, Clone)]
pub(crate) struct LineIndex {
    /// Byte offset of the start of each line.
    starts: Vec<usize>,
}

impl LineIndex {
    pub(crate) fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    pub(crate) fn line_col(&self, text: &str, offset: usize) -> LineCol {
        let offset = offset.min(text.len());
        let line = match self.starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let start = self.starts.get(line).copied().unwrap_or(0);
        let column = text
            .get(start..offset)
            .map_or(0, |s| s.chars().count())
            .saturating_add(1);
        LineCol {
            line: line + 1,
            column,
        }
    }
}

/// Converts the YAML parser's character indices to byte offsets.
#[derive(Debug)]
pub(crate) struct CharOffsets {
    /// Byte offset of each character, plus the text length at the end.
    bytes: Vec<usize>,
}

impl CharOffsets {
    pub(crate) fn new(text: &str) -> Self {
        let mut bytes: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        bytes.push(text.len());
        CharOffsets { bytes }
    }

    pub(crate) fn byte(&self, char_index: usize) -> usize {
        self.bytes
            .get(char_index)
            .or(self.bytes.last())
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters() {
        let text = "ab\nçd\n";
        let idx = LineIndex::new(text);
        assert_eq!(idx.line_col(text, 0), LineCol { line: 1, column: 1 });
        assert_eq!(idx.line_col(text, 3), LineCol { line: 2, column: 1 });
        // `d` is after the two-byte `ç`
        assert_eq!(idx.line_col(text, 5), LineCol { line: 2, column: 2 });
    }

    #[test]
    fn char_offsets_map_to_bytes() {
        let c = CharOffsets::new("çd");
        assert_eq!(c.byte(0), 0);
        assert_eq!(c.byte(1), 2);
        assert_eq!(c.byte(2), 3);
        assert_eq!(c.byte(9), 3);
    }
}
