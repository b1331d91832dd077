//! The human rendering of diagnostics: miette's graphical report with the source snippet,
//! plus a one-line summary. Colour and width are parameters so golden tests are stable.

use std::fmt;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceSpan};

use crate::{Compilation, Diagnostic, Severity};

/// How to draw.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    /// ANSI colours.
    pub color: bool,
    /// Wrap width in columns.
    pub width: usize,
}

/// A diagnostic with its source, in the shape miette renders.
struct Renderable<'c> {
    diag: &'c Diagnostic,
    source: Option<NamedSource<String>>,
    labels: Vec<LabeledSpan>,
    help: Option<String>,
}

impl fmt::Debug for Renderable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Renderable")
            .field("diag", self.diag)
            .finish()
    }
}

impl fmt::Display for Renderable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diag.message)
    }
}

impl std::error::Error for Renderable<'_> {}

impl miette::Diagnostic for Renderable<'_> {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.diag.code.as_str()))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.diag.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.source.as_ref().map(|s| s as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if self.labels.is_empty() {
            None
        } else {
            Some(Box::new(self.labels.iter().cloned()))
        }
    }
}

fn renderable<'c>(c: &'c Compilation, d: &'c Diagnostic) -> Renderable<'c> {
    let mut help = d.help.clone();
    let mut labels = Vec::new();
    let source = d.span.and_then(|span| {
        let input = c.inputs.get(span.file)?;
        labels.push(LabeledSpan::new_primary_with_span(
            d.label.clone(),
            SourceSpan::from(span.start..span.end),
        ));
        for r in &d.related {
            if r.span.file == span.file {
                labels.push(LabeledSpan::new_with_span(
                    Some(r.message.clone()),
                    SourceSpan::from(r.span.start..r.span.end),
                ));
            } else if let Some((file, at, _)) = c.locate(r.span) {
                let note = format!("{} at {file}:{}:{}", r.message, at.line, at.column);
                help = Some(match help.take() {
                    Some(h) => format!("{h}\n{note}"),
                    None => note,
                });
            }
        }
        Some(NamedSource::new(input.path.clone(), input.text.clone()))
    });
    Renderable {
        diag: d,
        source,
        labels,
        help,
    }
}

/// Renders every diagnostic, then the summary line.
pub fn render(c: &Compilation, deny_warnings: bool, style: Style) -> String {
    let theme = if style.color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_width(style.width)
        .with_links(false);
    let mut out = String::new();
    for d in &c.diagnostics {
        let r = renderable(c, d);
        if handler.render_report(&mut out, &r).is_err() {
            out.push_str(&format!("{}: {}\n", d.severity.as_str(), d.message));
        }
        out.push('\n');
    }
    out.push_str(&summary_line(c, deny_warnings));
    out.push('\n');
    out
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// `ok: 2 policies, 5 rules from 2 files (1 warning)` or `failed: 2 errors, 1 warning`.
pub fn summary_line(c: &Compilation, deny_warnings: bool) -> String {
    let (e, w) = (c.error_count(), c.warning_count());
    if c.failed(deny_warnings) {
        let why = if e == 0 { " (warnings are denied)" } else { "" };
        format!(
            "failed: {}, {}{why}",
            plural(e, "error"),
            plural(w, "warning")
        )
    } else {
        let rules: usize = c.policies.iter().map(|p| p.spec.rules.len()).sum();
        let warn = if w > 0 {
            format!(" ({})", plural(w, "warning"))
        } else {
            String::new()
        };
        format!(
            "ok: {}, {} from {}{warn}",
            plural(c.policies.len(), "policy").replace("policys", "policies"),
            plural(rules, "rule"),
            plural(c.inputs.len(), "file")
        )
    }
}
