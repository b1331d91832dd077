//! certgate's policy compiler: YAML `MeshTLSPolicy` documents in, one `ruleset::Table` out,
//! with every problem reported at once as a [`Diagnostic`] with a source span.
//!
//! The library does no I/O of its own: callers hand it the policy texts ([`Input`]) and a
//! [`Loader`] for the CRL files the policies name, so the same code runs in the CLI and in
//! the browser playground.
//!
//! ```text
//! Input texts --yaml--> nodes --parse--> Policy model --check--> Merged settings + warnings
//!                                                      --lower--> Table --encode--> bytes
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod check;
pub mod crl;
pub mod diag;
pub mod duration;
pub mod inspect;
mod lower;
pub mod model;
mod parse;
#[cfg(feature = "fancy")]
pub mod render;
pub mod report;
pub mod source;
mod suggest;
pub mod time;
mod yaml;

pub use check::Merged;
pub use diag::{Code, Diagnostic, Related, Severity};
pub use model::Policy;
pub use parse::{API_VERSION, KIND};
pub use source::{Input, LineCol, Span, Spanned};

use diag::Sink;
use lower::CrlBytes;

/// Reads the CRL files that policies name.
pub trait Loader {
    /// The bytes of `path`, which `policy` names relative to its own location. The error is
    /// shown to the user after "cannot read CRL `path`: ".
    fn load(&self, policy: &Input, path: &str) -> Result<Vec<u8>, String>;
}

/// A loader for sources without CRLs: every read fails.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFiles;

impl Loader for NoFiles {
    fn load(&self, _policy: &Input, _path: &str) -> Result<Vec<u8>, String> {
        Err("no files are available here".to_string())
    }
}

/// Settings of one compilation.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// The current time, in seconds since the Unix epoch (for "CRL past its nextUpdate").
    pub now: i64,
}

/// The result of a compilation: the diagnostics always, the table when there is no error.
#[derive(Debug)]
pub struct Compilation {
    /// The inputs, by index as [`Span::file`] refers to them.
    pub inputs: Vec<Input>,
    /// The policy documents that were read (including ones with errors in some fields).
    pub policies: Vec<Policy>,
    /// Every finding, sorted by file and position.
    pub diagnostics: Vec<Diagnostic>,
    /// The merged spec settings.
    pub merged: Option<Merged>,
    /// The table, when no error was found.
    pub table: Option<ruleset::Table>,
    /// The encoded table, when no error was found.
    pub bytes: Option<Vec<u8>>,
}

impl Compilation {
    /// Number of errors.
    pub fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    /// Number of warnings.
    pub fn warning_count(&self) -> usize {
        self.diagnostics.len() - self.error_count()
    }

    /// Whether the run failed: any error, or any warning when warnings are denied.
    pub fn failed(&self, deny_warnings: bool) -> bool {
        self.error_count() > 0 || (deny_warnings && self.warning_count() > 0)
    }

    /// `file:line:column` of a span's start.
    pub fn locate(&self, span: Span) -> Option<(&str, LineCol, LineCol)> {
        let input = self.inputs.get(span.file)?;
        let idx = source::LineIndex::new(&input.text);
        Some((
            input.path.as_str(),
            idx.line_col(&input.text, span.start),
            idx.line_col(&input.text, span.end),
        ))
    }
}

/// Compiles policy texts into one table. Documents are read in input order; within a file,
/// in document order.
pub fn compile(inputs: Vec<Input>, loader: &dyn Loader, options: &Options) -> Compilation {
    let mut sink = Sink::default();
    let mut policies = Vec::new();
    for (file, input) in inputs.iter().enumerate() {
        match yaml::load(file, &input.text) {
            Err(e) => sink.push(
                Diagnostic::new(Code::YamlSyntax, Some(e.span), format!("invalid YAML: {}", e.message))
                    .label("here")
                    .help("fix the YAML syntax; `certgate check` reports the other problems once it parses"),
            ),
            Ok(docs) => {
                for doc in docs.iter().filter(|d| d.kind != yaml::Kind::Null) {
                    let mut walker = parse::Walker::new(&input.text, &mut sink);
                    if let Some(p) = walker.document(file, doc) {
                        policies.push(p);
                    }
                }
            }
        }
    }
    if policies.is_empty() && !sink.has_errors() {
        sink.push(
            Diagnostic::new(
                Code::NoPolicies,
                None,
                "no policy documents found in the inputs",
            )
            .help("pass `.yaml` files or directories holding `kind: MeshTLSPolicy` documents"),
        );
    }
    let crls = load_crls(&inputs, &mut policies, loader, options, &mut sink);
    let merged = check::check(&policies, &mut sink);
    let mut table = None;
    let mut bytes = None;
    if !sink.has_errors() {
        let digest = lower::digest(&inputs, &crls);
        if let Some(t) = lower::lower(&policies, &merged, digest, &mut sink) {
            match ruleset::encode(&t) {
                Ok(b) => {
                    bytes = Some(b);
                    table = Some(t);
                }
                Err(e) => sink.push(
                    Diagnostic::new(Code::TableLimit, None, format!("the table cannot be encoded: {e}"))
                        .help("split the policies into several tables, or shorten the lists that exceed the limit"),
                ),
            }
        }
    }
    let mut diagnostics = sink.diags;
    // Spanless findings (about the whole input set) go last; the sort is stable.
    diagnostics.sort_by_key(|d| d.span.map_or((usize::MAX, 0), |s| (s.file, s.start)));
    Compilation {
        inputs,
        policies,
        diagnostics,
        merged: Some(merged),
        table,
        bytes,
    }
}

fn load_crls(
    inputs: &[Input],
    policies: &mut [Policy],
    loader: &dyn Loader,
    options: &Options,
    sink: &mut Sink,
) -> Vec<CrlBytes> {
    let mut out = Vec::new();
    for p in policies.iter_mut() {
        let Some(input) = inputs.get(p.file) else {
            continue;
        };
        for c in &mut p.spec.crls {
            let path = &c.path.value;
            let bytes = match loader.load(input, path) {
                Ok(b) => b,
                Err(e) => {
                    sink.push(
                        Diagnostic::new(
                            Code::CrlUnreadable,
                            Some(c.path.span),
                            format!("cannot read CRL `{path}`: {e}"),
                        )
                        .label("not readable")
                        .help("CRL paths are relative to the policy file that names them"),
                    );
                    continue;
                }
            };
            match crl::parse(&bytes) {
                Ok(info) => {
                    if let Some(next) = info.next_update.filter(|n| *n < options.now) {
                        sink.push(
                            Diagnostic::new(
                                Code::CrlExpired,
                                Some(c.path.span),
                                format!("CRL `{path}` is past its nextUpdate `{}`", time::rfc3339(next)),
                            )
                            .label("stale")
                            .help("fetch a fresh CRL from the issuer: revocations after this one are missing"),
                        );
                    }
                    c.crl = Some(info);
                }
                Err(e) => sink.push(
                    Diagnostic::new(Code::CrlMalformed, Some(c.path.span), format!("CRL `{path}` is malformed: {e}"))
                        .label("not a CRL")
                        .help("give a PEM (`-----BEGIN X509 CRL-----`) or DER X.509 CRL; `certgate crl FILE` shows what certgate reads"),
                ),
            }
            out.push(CrlBytes {
                name: format!("{}#{}", input.relative, path),
                bytes,
            });
        }
    }
    out
}
