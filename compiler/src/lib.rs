//! certgate's policy compiler: YAML `MeshTLSPolicy` documents in, one `ruleset::Table` out,
//! with every problem reported at once as a [`Diagnostic`] with a source span.
//!
//! The library does no I/O of its own: callers hand it the policy texts ([`Input`]) and a
//! [`Loader`] for the CRL and certificate files the policies name, so the same code runs in the
//! `certgate` CLI (the `cli/` crate) and in the browser playground (the `playground/` crate).
//!
//! Beside the language itself: the diagnostics and their renderers ([`diag`]), and the CI
//! tooling over compiled policies ([`ci`]: policy tests, semantic diff, compliance report).
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

pub mod certinfo;
pub mod check;
pub mod ci;
pub mod crl;
pub mod diag;
pub mod duration;
pub mod inspect;
mod lower;
pub mod model;
mod parse;
pub mod revfiles;
pub mod source;
mod suggest;
pub mod time;
mod yaml;

pub use check::Merged;
pub use diag::{Code, Diagnostic, Related, Severity};
pub use model::Policy;
pub use parse::{API_VERSION, KIND};
pub use source::{Input, LineCol, Span, Spanned};

use crl::CrlInfo;
use diag::Sink;
use lower::CrlBytes;

/// Reads the files that policies name: CRLs, and the certificate and key files of
/// `spec.revocation`.
pub trait Loader {
    /// The bytes of `path`, which `policy` names relative to its own location. The error is
    /// shown to the user after "cannot read CRL `path`: " (or certificate, public key).
    fn load(&self, policy: &Input, path: &str) -> Result<Vec<u8>, String>;

    /// The bytes of the CRL at `url` (a `spec.revocation.crlUrls` entry that
    /// [`crl::check_url`] accepted), which `policy` names. The error is shown after
    /// "cannot fetch CRL `url`: ". The library does no I/O: without a fetching loader a
    /// URL is an error, never skipped.
    fn fetch(&self, policy: &Input, url: &str) -> Result<Vec<u8>, String> {
        let _ = (policy, url);
        Err("CRLs named by URL are not fetched here".to_string())
    }
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
    /// Line starts of each input, for locating spans.
    lines: Vec<source::LineIndex>,
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

    /// Sets the table's issue time (Unix milliseconds) and, from it and `maxAge`, its
    /// expiry (the earlier of that and the CRLs' first `nextUpdate`), and re-encodes it.
    pub fn stamp(&mut self, issued_at_ms: u64) -> Result<(), ruleset::EncodeError> {
        let max_age = self.merged.as_ref().and_then(|m| m.max_age);
        if let Some(t) = &mut self.table {
            t.issued_at_ms = issued_at_ms;
            let by_age = max_age.map(|s| issued_at_ms.saturating_add(s.saturating_mul(1000)));
            t.expires_at_ms = match (t.expires_at_ms, by_age) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            self.bytes = Some(ruleset::encode(t)?);
        }
        Ok(())
    }

    /// `file:line:column` of a span's start.
    pub fn locate(&self, span: Span) -> Option<(&str, LineCol, LineCol)> {
        let input = self.inputs.get(span.file)?;
        let idx = self.lines.get(span.file)?;
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
            Err(e) if e.alias_budget => sink.push(
                Diagnostic::new(Code::YamlAliasBudget, Some(e.span), e.message)
                    .label("this alias crosses the limit")
                    .help("write the shared values out, or use fewer aliases of large anchors; an alias copies its anchor's whole value"),
            ),
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
        lines: inputs
            .iter()
            .map(|i| source::LineIndex::new(&i.text))
            .collect(),
        inputs,
        policies,
        diagnostics,
        merged: Some(merged),
        table,
        bytes,
    }
}

/// Reads `path`, which the policy `input` names, and parses it with `read`. On success the
/// file's bytes are recorded in `out` (they enter the table's digest, named `input#path`);
/// on failure the error is returned for the caller's diagnostic and nothing is recorded.
fn load_named<T>(
    loader: &dyn Loader,
    input: &Input,
    path: &str,
    read: impl FnOnce(&[u8]) -> Result<T, String>,
    out: &mut Vec<CrlBytes>,
) -> Result<T, String> {
    let bytes = loader.load(input, path)?;
    let parsed = read(&bytes)?;
    out.push(CrlBytes {
        name: format!("{}#{}", input.relative, path),
        bytes,
    });
    Ok(parsed)
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
        // `crlIssuers`: the CA certificates this document's CRLs must be signed by.
        let mut cas = Vec::new();
        for ca in &mut p.spec.crl_issuers {
            let path = &ca.path.value;
            match load_named(loader, input, path, crl::read_ca_certs, &mut out) {
                Ok(certs) => {
                    cas.extend(certs.iter().cloned());
                    ca.certs = certs;
                }
                Err(e) => sink.push(
                    Diagnostic::new(
                        Code::CrlIssuerUnreadable,
                        Some(ca.path.span),
                        format!("cannot read CA certificate `{path}`: {e}"),
                    )
                    .label("not a CA certificate")
                    .help("give the PEM or DER certificate of the CA that signs the CRLs; paths are relative to the policy file"),
                ),
            }
        }
        // The certificate files of `certificates`, `issuers` and `caCertificates`.
        type Reader = fn(&[u8]) -> Result<Vec<Vec<u8>>, String>;
        let lists: [(_, _, Reader); 3] = [
            (
                &mut p.spec.certificates,
                "certificates",
                revfiles::read_certs,
            ),
            (&mut p.spec.issuers, "issuers", revfiles::read_ca_certs),
            (
                &mut p.spec.ca_certificates,
                "caCertificates",
                revfiles::read_ca_certs,
            ),
        ];
        for (list, field, read) in lists {
            for f in list.iter_mut() {
                let path = &f.path.value;
                match load_named(loader, input, path, read, &mut out) {
                    Ok(certs) => f.certs = certs,
                    Err(e) => sink.push(
                        Diagnostic::new(
                            Code::RevocationFileUnreadable,
                            Some(f.path.span),
                            format!("cannot read certificate `{path}` of `revocation.{field}`: {e}"),
                        )
                        .label(if field == "certificates" { "not a certificate" } else { "not a CA certificate" })
                        .help(if field == "certificates" {
                            "give a PEM bundle or a DER X.509 certificate; paths are relative to the policy file"
                        } else {
                            "give the CA's own certificate (PEM bundle or DER, basicConstraints `CA:TRUE`); paths are relative to the policy file"
                        }),
                    ),
                }
            }
        }
        for k in p.spec.public_keys.iter_mut().filter(|k| !k.is_digest) {
            let path = &k.value.value;
            match load_named(loader, input, path, revfiles::read_public_keys, &mut out) {
                Ok(keys) => k.keys = keys,
                Err(e) => sink.push(
                    Diagnostic::new(
                        Code::RevocationFileUnreadable,
                        Some(k.value.span),
                        format!("cannot read public key `{path}` of `revocation.publicKeys`: {e}"),
                    )
                    .label("neither a key file nor an SPKI SHA-256")
                    .help("give a PEM or DER certificate or public key (paths are relative to the policy file), or the key's SPKI SHA-256 as 64 hex digits; `certgate cert FILE` prints it"),
                ),
            }
        }
        if let (false, true, Some(span)) = (
            p.spec.crl_urls.is_empty(),
            p.spec.crl_issuers.is_empty(),
            p.spec.crl_urls_span,
        ) {
            // Refused before anything is fetched: a CRL from the network without a CA to
            // verify it is whatever the network says.
            sink.push(
                Diagnostic::new(
                    Code::CrlUrlWithoutIssuers,
                    Some(span),
                    "`crlUrls` needs `crlIssuers`: a CRL fetched over the network must be verified against the CA that signs it",
                )
                .label("no CA to verify these CRLs against")
                .help("add `crlIssuers: [FILE]` with the certificate of the CA that signs the CRLs"),
            );
            p.spec.crl_urls.clear();
        }
        let verify = !p.spec.crl_issuers.is_empty();
        let issuer_spans: Vec<Span> = p
            .spec
            .crl_issuers
            .iter()
            .filter(|c| !c.certs.is_empty())
            .map(|c| c.path.span)
            .collect();
        let check = CrlCheck {
            cas: &cas,
            verify,
            issuer_spans: &issuer_spans,
            now: options.now,
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
            c.crl = check.read(&bytes, &c.path, sink);
            out.push(CrlBytes {
                name: format!("{}#{}", input.relative, path),
                bytes,
            });
        }
        for c in &mut p.spec.crl_urls {
            let url = &c.path.value;
            let bytes = match loader.fetch(input, url) {
                Ok(b) => b,
                Err(e) => {
                    sink.push(
                        Diagnostic::new(
                            Code::CrlUnreadable,
                            Some(c.path.span),
                            format!("cannot fetch CRL `{url}`: {e}"),
                        )
                        .label("not fetched")
                        .help("check that the URL serves the CRL; `certgate serve` keeps the last good copy of a URL that fails"),
                    );
                    continue;
                }
            };
            c.crl = check.read(&bytes, &c.path, sink);
            out.push(CrlBytes {
                name: format!("{}#{}", input.relative, url),
                bytes,
            });
        }
    }
    out
}

/// How the CRLs of one policy document are checked, whether read from a file or fetched.
struct CrlCheck<'a> {
    /// The certificates of `crlIssuers` that could be read.
    cas: &'a [Vec<u8>],
    /// Whether the document has `crlIssuers` (then every CRL must verify).
    verify: bool,
    /// Where the readable `crlIssuers` are written, for the signature error.
    issuer_spans: &'a [Span],
    now: i64,
}

impl CrlCheck<'_> {
    /// Verifies and parses one CRL named at `name`; every problem goes to `sink`. `None`
    /// unless the CRL verified and parsed.
    fn read(&self, bytes: &[u8], name: &Spanned<String>, sink: &mut Sink) -> Option<CrlInfo> {
        let signed = if self.verify && !self.cas.is_empty() {
            crl::verify_signed_by(bytes, self.cas).map_err(|e| e.to_string())
        } else {
            Ok(())
        };
        let path = &name.value;
        match crl::parse(bytes) {
            Ok(_) if signed.is_err() => {
                let mut d = Diagnostic::new(
                    Code::CrlSignature,
                    Some(name.span),
                    format!(
                        "CRL `{path}` is not signed by a CA of `crlIssuers` ({})",
                        signed.err().unwrap_or_default()
                    ),
                )
                .label("signature does not verify")
                .help("fetch the CRL from its issuer again, or add the CA certificate that signs it to `crlIssuers`");
                for span in self.issuer_spans {
                    d = d.related(*span, "a CA the CRL was checked against");
                }
                sink.push(d);
            }
            Ok(info) => {
                if let Some(next) = info.next_update.filter(|n| *n < self.now) {
                    sink.push(
                        Diagnostic::new(
                            Code::CrlExpired,
                            Some(name.span),
                            format!("CRL `{path}` is past its nextUpdate `{}`", time::rfc3339(next)),
                        )
                        .label("stale")
                        .help("fetch a fresh CRL from the issuer: revocations after this one are missing"),
                    );
                }
                return Some(info);
            }
            Err(e @ (crl::CrlError::UnknownCritical(_)
            | crl::CrlError::UnknownCriticalEntry { .. }
            | crl::CrlError::Delta(_)
            | crl::CrlError::NotIndirect(_)
            | crl::CrlError::BadCertificateIssuer(_))) => sink.push(
                Diagnostic::new(Code::CrlUnsupported, Some(name.span), format!("CRL `{path}` is refused: {e}"))
                    .label("not enforceable as written")
                    .help(match e {
                        crl::CrlError::Delta(_) => "give the complete (base) CRL instead: certgate enforces whole CRLs only",
                        crl::CrlError::NotIndirect(_) | crl::CrlError::BadCertificateIssuer(_) => "an indirect CRL must carry an issuingDistributionPoint with `indirectCRL` set and name each certificate issuer as a directory name; ask its issuer for a conforming CRL",
                        _ => "RFC 5280 requires refusing a CRL with a critical extension the reader does not understand; ask its issuer for a CRL without it",
                    }),
            ),
            Err(e) => sink.push(
                Diagnostic::new(Code::CrlMalformed, Some(name.span), format!("CRL `{path}` is malformed: {e}"))
                    .label("not a CRL")
                    .help("give a PEM (`-----BEGIN X509 CRL-----`) or DER X.509 CRL; `certgate crl FILE` shows what certgate reads"),
            ),
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files(Vec<(&'static str, Vec<u8>)>);

    impl Loader for Files {
        fn load(&self, _policy: &Input, path: &str) -> Result<Vec<u8>, String> {
            self.0
                .iter()
                .find(|(p, _)| *p == path)
                .map(|(_, b)| b.clone())
                .ok_or_else(|| "no such file".to_string())
        }
    }

    fn doc(name: &str, body: &str) -> String {
        format!("apiVersion: certgate.dev/v1alpha1\nkind: MeshTLSPolicy\nmetadata: {{name: {name}}}\nspec:\n{body}")
    }

    fn run(inputs: Vec<Input>) -> Compilation {
        compile(inputs, &NoFiles, &Options { now: 0 })
    }

    #[test]
    fn documents_merge_into_one_table() {
        let a = doc(
            "a",
            "  mode: audit\n  peerCertificate: {trustDomains: [x.test], forbidSignatureAlgorithms: [sha1]}\n  rules:\n    - {name: r1, action: allow, principals: [spiffe://x.test/a]}\n",
        );
        let b = doc(
            "b",
            "  peerCertificate: {trustDomains: [y.test, x.test], forbidSignatureAlgorithms: [md5, sha1]}\n  rules:\n    - {name: r2, action: deny, principals: [spiffe://y.test/b]}\n",
        );
        let c = run(vec![Input::new("a.yaml", a), Input::new("b.yaml", b)]);
        assert_eq!(c.diagnostics, vec![]);
        let t = c.table.unwrap();
        assert_eq!(t.policy_names, vec!["a", "b"]);
        assert_eq!(t.mode, ruleset::Mode::Audit);
        assert_eq!(t.constraints.trust_domains, vec!["x.test", "y.test"]);
        assert_eq!(
            t.constraints.forbid_sig_hashes,
            vec![ruleset::SigHash::Md5, ruleset::SigHash::Sha1]
        );
        let names: Vec<(&str, u16)> = t
            .rules
            .iter()
            .map(|r| (r.name.as_str(), r.policy))
            .collect();
        assert_eq!(names, vec![("r1", 0), ("r2", 1)]);
        assert_eq!(ruleset::decode(&c.bytes.unwrap()).unwrap(), t);
    }

    #[test]
    fn duplicate_rules_across_files_point_at_the_first() {
        let r = "  rules:\n    - {name: same, action: allow, principals: [spiffe://x.test/a]}\n";
        let c = run(vec![
            Input::new("a.yaml", doc("a", r)),
            Input::new("b.yaml", doc("b", r)),
        ]);
        let d = &c.diagnostics[0];
        assert_eq!(d.code, Code::DuplicateRule);
        assert_eq!(d.span.unwrap().file, 1);
        assert_eq!(d.related[0].span.file, 0);
        assert!(c.table.is_none());
    }

    #[test]
    fn digest_covers_relative_paths_contents_and_crls() {
        let text = doc("a", "  rules: []\n");
        let digest = |path: &str, relative: &str, text: &str| {
            let input = Input {
                path: path.into(),
                relative: relative.into(),
                text: text.into(),
            };
            run(vec![input]).table.unwrap().policy_digest
        };
        let base = digest("policies/a.yaml", "a.yaml", &text);
        assert_eq!(base, digest("/elsewhere/a.yaml", "a.yaml", &text));
        assert_ne!(base, digest("policies/a.yaml", "b.yaml", &text));
        assert_ne!(
            base,
            digest("policies/a.yaml", "a.yaml", &format!("{text}# comment\n"))
        );
    }

    #[test]
    fn crls_go_through_the_loader_and_stale_ones_warn() {
        let text = doc("a", "  revocation: {crls: [ca.crl]}\n");
        let crl = include_bytes!("../../policies/crl/intermediate.crl.pem").to_vec();
        let files = Files(vec![("ca.crl", crl)]);
        let fresh = compile(
            vec![Input::new("a.yaml", text.clone())],
            &files,
            &Options { now: 0 },
        );
        assert_eq!(fresh.diagnostics, vec![]);
        assert_eq!(fresh.table.unwrap().revocation.serial_count(), 1);
        let later = compile(
            vec![Input::new("a.yaml", text.clone())],
            &files,
            &Options { now: i64::MAX },
        );
        assert_eq!(
            later.diagnostics.iter().map(|d| d.code).collect::<Vec<_>>(),
            vec![Code::CrlExpired]
        );
        let missing = compile(
            vec![Input::new("a.yaml", text)],
            &NoFiles,
            &Options { now: 0 },
        );
        assert_eq!(missing.diagnostics[0].code, Code::CrlUnreadable);
    }

    #[test]
    fn nothing_to_compile_is_an_error() {
        let c = run(vec![Input::new("empty.yaml", "# nothing\n")]);
        assert_eq!(c.diagnostics[0].code, Code::NoPolicies);
        assert!(c.failed(false));
    }
}
