//! The typed policy model: one [`Policy`] per YAML document, every value with the span it was
//! written at. Checks and lowering work on this model, never on YAML.

use ruleset::{
    Action, AuditLog, Cidr, KeyPolicy, Mode, OnStale, Pattern, PortRange, RevokedSerial, SigHash,
    TlsVersion,
};

use crate::crl::CrlInfo;
use crate::source::{Span, Spanned};

/// One `MeshTLSPolicy` document.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Index of the input file that holds the document.
    pub file: usize,
    /// `metadata.name`.
    pub name: Spanned<String>,
    /// `spec`.
    pub spec: Spec,
}

/// `spec` of a policy. `None` means "not set in this document".
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// `spec.mode`.
    pub mode: Option<Spanned<Mode>>,
    /// `spec.defaultAction`.
    pub default_action: Option<Spanned<Action>>,
    /// `spec.tls.minVersion`.
    pub min_tls: Option<Spanned<TlsVersion>>,
    /// `spec.peerCertificate.trustDomains`.
    pub trust_domains: Vec<Spanned<String>>,
    /// `spec.peerCertificate.maxLifetime`, in seconds.
    pub max_lifetime: Option<Spanned<u64>>,
    /// `spec.peerCertificate.keys`; the span is the whole mapping.
    pub keys: Option<Spanned<KeyPolicy>>,
    /// Span of `keys.rsaMinBits`, for the weak-key warning.
    pub rsa_min_bits_span: Option<Span>,
    /// `spec.peerCertificate.forbidSignatureAlgorithms`.
    pub forbid_signatures: Vec<Spanned<SigHash>>,
    /// `spec.revocation.crls`.
    pub crls: Vec<CrlRef>,
    /// `spec.revocation.crlUrls`: CRLs fetched over HTTP(S) by the caller's loader; `path`
    /// holds the URL. Only well-formed, distinct URLs are kept (the others were reported).
    pub crl_urls: Vec<CrlRef>,
    /// Span of the `crlUrls` key, for "a URL needs `crlIssuers`".
    pub crl_urls_span: Option<Span>,
    /// `spec.revocation.crlIssuers`: CA certificates every CRL of this document must be
    /// signed by (one of them).
    pub crl_issuers: Vec<CaRef>,
    /// `spec.revocation.onStale`.
    pub on_stale: Option<Spanned<OnStale>>,
    /// `spec.revocation.maxAge`, in seconds: how long after its issue a table's
    /// revocation data counts as current.
    pub max_age: Option<Spanned<u64>>,
    /// `spec.revocation.serials`.
    pub serials: Vec<Spanned<RevokedSerial>>,
    /// `spec.revocation.certificates`: certificates revoked by what their CA signed.
    pub certificates: Vec<CaRef>,
    /// `spec.revocation.publicKeys`: files or SPKI SHA-256 digests.
    pub public_keys: Vec<KeyRef>,
    /// `spec.revocation.issuers`: compromised CAs, everything they issued is revoked.
    pub issuers: Vec<CaRef>,
    /// `spec.revocation.caCertificates`: CA certificates a CRL may revoke.
    pub ca_certificates: Vec<CaRef>,
    /// `spec.rules`, in document order.
    pub rules: Vec<RuleSpec>,
    /// `spec.audit.log`.
    pub audit_log: Option<Spanned<AuditLog>>,
}

/// A CRL named by a policy, with its contents once read.
#[derive(Debug, Clone)]
pub struct CrlRef {
    /// The path as written (relative to the policy file), or the URL of `crlUrls`.
    pub path: Spanned<String>,
    /// The parsed CRL; `None` if it could not be read or parsed (an error was reported).
    pub crl: Option<CrlInfo>,
}

/// A CA certificate file named by `spec.revocation.crlIssuers`.
#[derive(Debug, Clone)]
pub struct CaRef {
    /// The path as written (relative to the policy file).
    pub path: Spanned<String>,
    /// The certificates it holds, DER, once read (empty if it could not be read).
    pub certs: Vec<Vec<u8>>,
}

/// One entry of `spec.revocation.publicKeys`: an SPKI SHA-256 or a file.
#[derive(Debug, Clone)]
pub struct KeyRef {
    /// The entry as written.
    pub value: Spanned<String>,
    /// Whether the entry is an SPKI SHA-256 (64 hex digits) rather than a path.
    pub is_digest: bool,
    /// The revoked-key SHA-256s it yields (`ruleset::Revocation::add_key`); for a
    /// file, once read.
    pub keys: Vec<[u8; 32]>,
}

/// One entry of `spec.rules`.
#[derive(Debug, Clone)]
pub struct RuleSpec {
    /// The whole rule mapping.
    pub span: Span,
    /// `name`.
    pub name: Spanned<String>,
    /// `action`.
    pub action: Spanned<Action>,
    /// `principals`; `None` when absent (any identity).
    pub principals: Option<Vec<Spanned<Pattern>>>,
    /// `notPrincipals`.
    pub not_principals: Vec<Spanned<Pattern>>,
    /// `ports`; empty means any port.
    pub ports: Vec<Spanned<PortRange>>,
    /// `sni`; empty means any (or no) server name.
    pub sni: Vec<Spanned<String>>,
    /// `sourceCidrs`; empty means any source.
    pub source_cidrs: Vec<Spanned<Cidr>>,
}

impl RuleSpec {
    /// The table's form of the rule (`policy`: the index of its policy in the table).
    pub fn lower(&self, policy: u16) -> ruleset::Rule {
        ruleset::Rule {
            name: self.name.value.clone(),
            policy,
            action: self.action.value,
            principals: self
                .principals
                .iter()
                .flatten()
                .map(|s| s.value.clone())
                .collect(),
            not_principals: self
                .not_principals
                .iter()
                .map(|s| s.value.clone())
                .collect(),
            ports: self.ports.iter().map(|s| s.value).collect(),
            sni: self.sni.iter().map(|s| s.value.clone()).collect(),
            source_cidrs: self.source_cidrs.iter().map(|s| s.value).collect(),
        }
    }
}
