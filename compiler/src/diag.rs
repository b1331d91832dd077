//! Diagnostics: what the compiler tells a person about a policy. Every finding has a stable
//! code, a lowercase message with user input in backticks, a `help` line and, when it comes
//! from a policy file, the span of the YAML node at fault.
//!
//! How they reach a person: [`report`] (the versioned JSON report and SARIF) and, with the
//! `fancy` feature, [`render`] (the graphical text with source snippets).

#[cfg(feature = "fancy")]
pub mod render;
pub mod report;

use std::fmt;

use crate::source::Span;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The policy is wrong; no table is produced.
    Error,
    /// The policy compiles but probably does not mean what it says.
    Warning,
}

impl Severity {
    /// `error` or `warning`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

macro_rules! codes {
    ($( $(#[$doc:meta])* $variant:ident = $code:literal, $sev:ident; )*) => {
        /// A stable diagnostic code. The strings are part of the JSON output contract.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Code {
            $( $(#[$doc])* $variant, )*
        }

        impl Code {
            /// Every code, in documentation order.
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];

            /// The stable code string, such as `certgate::unknown-field`.
            pub fn as_str(self) -> &'static str {
                match self { $( Code::$variant => $code, )* }
            }

            /// The severity findings with this code have (before `--deny-warnings`).
            pub fn severity(self) -> Severity {
                match self { $( Code::$variant => Severity::$sev, )* }
            }
        }
    };
}

codes! {
    /// The file is not valid YAML (or not UTF-8).
    YamlSyntax = "certgate::yaml-syntax", Error;
    /// The file's aliases expand to more than the alias budget.
    YamlAliasBudget = "certgate::yaml-alias-budget", Error;
    /// A mapping has a key the policy language does not define.
    UnknownField = "certgate::unknown-field", Error;
    /// A required field is absent.
    MissingField = "certgate::missing-field", Error;
    /// A value has the wrong YAML type (a list where a string was expected, ...).
    WrongType = "certgate::wrong-type", Error;
    /// A value is not one of the accepted words or forms.
    InvalidValue = "certgate::invalid-value", Error;
    /// `apiVersion` is not one this compiler understands.
    UnknownApiVersion = "certgate::unknown-api-version", Error;
    /// `kind` is not `MeshTLSPolicy`.
    UnknownKind = "certgate::unknown-kind", Error;
    /// A policy or rule name is not a lowercase DNS label.
    InvalidName = "certgate::invalid-name", Error;
    /// Two documents declare the same policy name.
    DuplicatePolicy = "certgate::duplicate-policy", Error;
    /// Two rules have the same name.
    DuplicateRule = "certgate::duplicate-rule", Error;
    /// An exact principal is not a valid SPIFFE ID.
    InvalidSpiffeId = "certgate::invalid-spiffe-id", Error;
    /// A principal pattern with wildcards is malformed.
    InvalidPattern = "certgate::invalid-pattern", Error;
    /// A trust domain is malformed.
    InvalidTrustDomain = "certgate::invalid-trust-domain", Error;
    /// A list that would mean "anything" if empty is written empty.
    EmptyList = "certgate::empty-list", Error;
    /// A port or port range is malformed or out of range.
    InvalidPort = "certgate::invalid-port", Error;
    /// A source CIDR is malformed or has host bits set.
    InvalidCidr = "certgate::invalid-cidr", Error;
    /// A server name is malformed.
    InvalidSni = "certgate::invalid-sni", Error;
    /// A duration is malformed.
    InvalidDuration = "certgate::invalid-duration", Error;
    /// `tls.minVersion` is below TLS 1.2.
    TlsVersionTooLow = "certgate::tls-version-too-low", Error;
    /// A revoked serial number is malformed.
    InvalidSerial = "certgate::invalid-serial", Error;
    /// `sha256Fingerprints` is refused: a whole-certificate digest can be dodged by
    /// re-encoding the certificate.
    WholeCertificateFingerprint = "certgate::whole-certificate-fingerprint", Error;
    /// A certificate or public key file of `spec.revocation` cannot be read.
    RevocationFileUnreadable = "certgate::revocation-file-unreadable", Error;
    /// An issuer distinguished name is malformed.
    InvalidIssuer = "certgate::invalid-issuer", Error;
    /// A CRL file could not be read.
    CrlUnreadable = "certgate::crl-unreadable", Error;
    /// A CRL file is not a PEM or DER X.509 CRL.
    CrlMalformed = "certgate::crl-malformed", Error;
    /// A CRL uses a feature certgate refuses to guess at (an unknown critical
    /// extension, a delta CRL, an unmarked indirect entry).
    CrlUnsupported = "certgate::crl-unsupported", Error;
    /// A CRL's signature does not verify against any certificate of `crlIssuers`.
    CrlSignature = "certgate::crl-signature", Error;
    /// A `crlIssuers` file cannot be read or holds no X.509 certificate.
    CrlIssuerUnreadable = "certgate::crl-issuer-unreadable", Error;
    /// A `crlUrls` entry is not an absolute http(s) URL certgate can fetch.
    InvalidCrlUrl = "certgate::invalid-crl-url", Error;
    /// A `crlUrls` entry has a scheme other than `http` and `https`.
    CrlUrlScheme = "certgate::crl-url-scheme", Error;
    /// The same URL is listed twice in `crlUrls`.
    DuplicateCrlUrl = "certgate::duplicate-crl-url", Error;
    /// `crlUrls` without `crlIssuers`: a CRL fetched over the network would be trusted
    /// unauthenticated.
    CrlUrlWithoutIssuers = "certgate::crl-url-without-issuers", Error;
    /// Two documents set the same spec setting to different values.
    Conflict = "certgate::conflict", Error;
    /// No policy document was found in the inputs.
    NoPolicies = "certgate::no-policies", Error;
    /// The compiled table exceeds a limit of the table format.
    TableLimit = "certgate::table-limit", Error;
    /// A rule can never decide because an earlier rule matches every peer it matches.
    ShadowedRule = "certgate::shadowed-rule", Warning;
    /// An allow rule has no `principals`, so it admits any identity.
    AllowAnyIdentity = "certgate::allow-any-identity", Warning;
    /// A principal's trust domain is not among `trustDomains`: it can never match.
    OutsideTrustDomains = "certgate::outside-trust-domains", Warning;
    /// `rsaMinBits` is below 2048.
    WeakRsa = "certgate::weak-rsa", Warning;
    /// `maxLifetime` is above 90 days.
    LongLifetime = "certgate::long-lifetime", Warning;
    /// A CRL is past its `nextUpdate`.
    CrlExpired = "certgate::crl-expired", Warning;
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A secondary location that explains a finding (the other side of a conflict, the rule
/// that shadows another).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Related {
    /// Where.
    pub span: Span,
    /// What is there.
    pub message: String,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning (after `--deny-warnings`, warnings stay warnings here; the caller
    /// decides whether they fail the run).
    pub severity: Severity,
    /// Stable code.
    pub code: Code,
    /// Lowercase, no trailing period, user input in backticks.
    pub message: String,
    /// What to do about it.
    pub help: Option<String>,
    /// The YAML node at fault, if the finding comes from a policy file.
    pub span: Option<Span>,
    /// The label under the primary span in the graphical rendering.
    pub label: Option<String>,
    /// Other locations that explain the finding.
    pub related: Vec<Related>,
}

impl Diagnostic {
    /// A finding with the code's default severity.
    pub fn new(code: Code, span: Option<Span>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: code.severity(),
            code,
            message: message.into(),
            help: None,
            span,
            label: None,
            related: Vec::new(),
        }
    }

    /// Adds the help line.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Adds the label under the primary span.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Adds a related location.
    pub fn related(mut self, span: Span, message: impl Into<String>) -> Self {
        self.related.push(Related {
            span,
            message: message.into(),
        });
        self
    }

    /// Whether this is an error.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Collects findings in the order they are found.
#[derive(Debug, Default)]
pub(crate) struct Sink {
    pub(crate) diags: Vec<Diagnostic>,
}

impl Sink {
    pub(crate) fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    pub(crate) fn has_errors(&self) -> bool {
        self.diags.iter().any(Diagnostic::is_error)
    }
}

/// Formats `items` as `` `a`, `b` or `c` `` for messages.
pub(crate) fn one_of(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("`{i}`")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_namespaced() {
        let mut seen = std::collections::HashSet::new();
        for c in Code::ALL {
            assert!(c.as_str().starts_with("certgate::"));
            assert!(seen.insert(c.as_str()), "{c} twice");
        }
    }

    #[test]
    fn one_of_reads_naturally() {
        assert_eq!(one_of(&["a"]), "`a`");
        assert_eq!(one_of(&["a", "b", "c"]), "`a`, `b` or `c`");
    }
}
