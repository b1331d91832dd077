//! The human rendering of diagnostics: miette's graphical report with the source snippet,
//! plus a one-line summary. Colour and width are parameters so golden tests are stable.

use std::fmt;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceSpan};

use crate::{Compilation, Diagnostic, Input, Severity};

/// How to draw.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    /// ANSI colours.
    pub color: bool,
    /// Wrap width in columns.
    pub width: usize,
}

/// A diagnostic with its source, in the shape miette renders.
struct Renderable {
    message: String,
    code: Option<&'static str>,
    severity: miette::Severity,
    source: Option<NamedSource<String>>,
    labels: Vec<LabeledSpan>,
    help: Option<String>,
    /// Locations in other files, each shown with its own snippet.
    related: Vec<Renderable>,
}

impl fmt::Debug for Renderable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Renderable")
            .field("message", &self.message)
            .finish()
    }
}

impl fmt::Display for Renderable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Renderable {}

impl miette::Diagnostic for Renderable {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.code.map(|c| Box::new(c) as Box<dyn fmt::Display>)
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(self.severity)
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

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn miette::Diagnostic> + 'a>> {
        if self.related.is_empty() {
            None
        } else {
            Some(Box::new(
                self.related.iter().map(|r| r as &dyn miette::Diagnostic),
            ))
        }
    }
}

fn source_of(inputs: &[Input], file: usize) -> Option<NamedSource<String>> {
    let input = inputs.get(file)?;
    Some(NamedSource::new(input.path.clone(), input.text.clone()))
}

fn renderable(inputs: &[Input], d: &Diagnostic) -> Renderable {
    let mut labels = Vec::new();
    let mut related = Vec::new();
    let source = d.span.and_then(|span| {
        labels.push(LabeledSpan::new_primary_with_span(
            d.label.clone(),
            SourceSpan::from(span.start..span.end),
        ));
        for r in &d.related {
            let at = SourceSpan::from(r.span.start..r.span.end);
            if r.span.file == span.file {
                labels.push(LabeledSpan::new_with_span(Some(r.message.clone()), at));
            } else {
                related.push(Renderable {
                    message: r.message.clone(),
                    code: None,
                    severity: miette::Severity::Advice,
                    source: source_of(inputs, r.span.file),
                    labels: vec![LabeledSpan::new_primary_with_span(None, at)],
                    help: None,
                    related: Vec::new(),
                });
            }
        }
        source_of(inputs, span.file)
    });
    Renderable {
        message: d.message.clone(),
        code: Some(d.code.as_str()),
        severity: match d.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        },
        source,
        labels,
        help: d.help.clone(),
        related,
    }
}

/// Renders every diagnostic, then the summary line.
pub fn render(c: &Compilation, deny_warnings: bool, style: Style) -> String {
    let mut out = render_diagnostics(&c.inputs, &c.diagnostics, style);
    out.push_str(&summary_line(c, deny_warnings));
    out.push('\n');
    out
}

/// Renders diagnostics whose spans point into `inputs` (by index), each with its source
/// snippet: policy diagnostics, and the problems of a policy-test file.
pub fn render_diagnostics(inputs: &[Input], diagnostics: &[Diagnostic], style: Style) -> String {
    let theme = if style.color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_width(style.width)
        .with_links(false);
    let mut out = String::new();
    for d in diagnostics {
        let r = renderable(inputs, d);
        if handler.render_report(&mut out, &r).is_err() {
            out.push_str(&format!("{}: {}\n", d.severity.as_str(), d.message));
        }
        out.push('\n');
    }
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
