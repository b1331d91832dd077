//! Policy tests (`certgate test`): `*.test.yaml` files that name peers and the decision the
//! policy must make for each, run through the same [`ruleset::Engine`] as `certgate eval` and
//! the filter. A test file is data, read with the same span-keeping YAML layer as policies, so
//! a failing case points at its line.
//!
//! Peers are described without a PKI: an identity alone (a what-if, as `eval --identity`),
//! a certificate file, or an inline certificate description that becomes the
//! [`ruleset::CertFacts`] the certificate reader would produce for such a certificate (so
//! keys and signatures no generator makes, such as RSA-1024 or SHA-1, can be tested too).
//!
//! Pure: certificate files are read through the caller's [`Loader`].

use std::collections::BTreeSet;
use std::net::IpAddr;

use ruleset::{
    Action, CertFacts, Curve, Engine, KeyInfo, Peer, PeerBuilder, PeerCert, Reason, SigHash,
    SigInfo, TlsVersion,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::diag::{Code, Diagnostic};
use crate::source::{LineIndex, Span};
use crate::yaml::{self, Kind, Node};
use crate::{Input, Loader};

/// The version of the `certgate test --format json` schema.
pub const VERSION: u32 = 1;

/// notBefore of described certificates (2026-01-01T00:00:00Z): fixed, so runs are
/// reproducible; the engine looks only at the lifetime, never at the clock.
pub const DESCRIBED_NOT_BEFORE: i64 = 1_767_225_600;

const TOP_FIELDS: &[&str] = &["policies", "cases"];
const CASE_FIELDS: &[&str] = &["name", "peer", "expect"];
const PEER_FIELDS: &[&str] = &[
    "identity",
    "certificate",
    "tlsVersion",
    "port",
    "sni",
    "sourceIp",
];
const DESCRIBE_FIELDS: &[&str] = &[
    "identity",
    "uriSans",
    "dnsSans",
    "key",
    "lifetime",
    "serial",
    "issuer",
    "signatureHash",
    "spkiSha256",
];
const EXPECT_FIELDS: &[&str] = &["action", "reason", "rule", "policy"];

/// One parsed `*.test.yaml` file.
#[derive(Debug, Clone)]
pub struct TestFile {
    /// Policy files to compile, as written (relative to the test file); empty: the default.
    pub policies: Vec<String>,
    /// The cases, in file order.
    pub cases: Vec<Case>,
}

/// One test case.
#[derive(Debug, Clone)]
pub struct Case {
    /// `name`, unique in the file.
    pub name: String,
    /// The whole case mapping.
    pub span: Span,
    /// The peer.
    pub peer: PeerSpec,
    /// The expected decision.
    pub expect: Expect,
}

/// How a case describes the peer's certificate.
#[derive(Debug, Clone)]
pub enum CertSpec {
    /// `identity: ID`: a what-if by SPIFFE ID; certificate checks are skipped.
    Identity(String),
    /// `certificate: none`: the peer presented no certificate.
    Missing,
    /// `certificate: FILE`: a PEM or DER file relative to the test file.
    File(String),
    /// `certificate: {...}`: the facts of a described certificate.
    Described(Box<CertFacts>),
}

/// The peer of a case.
#[derive(Debug, Clone)]
pub struct PeerSpec {
    /// The certificate.
    pub cert: CertSpec,
    /// `tlsVersion`.
    pub tls_version: Option<TlsVersion>,
    /// `port`.
    pub port: Option<u16>,
    /// `sni`.
    pub sni: Option<String>,
    /// `sourceIp`.
    pub source_ip: Option<IpAddr>,
}

/// What a case expects. Absent fields are not compared; `rule: null` expects no rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    /// `action`.
    pub action: Action,
    /// `reason`.
    pub reason: Option<Reason>,
    /// `rule`: `Some(None)` for `rule: null`.
    pub rule: Option<Option<String>>,
    /// `policy`: `Some(None)` for `policy: null`.
    pub policy: Option<Option<String>>,
}

struct TestFileWalker<'a> {
    text: &'a str,
    errors: Vec<Diagnostic>,
}

impl TestFileWalker<'_> {
    /// Records a problem: what is wrong at `span`, and how to fix it.
    fn err(&mut self, code: Code, span: Span, message: String, help: impl Into<String>) {
        self.errors
            .push(Diagnostic::new(code, Some(span), message).help(help));
    }

    fn map<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        allowed: &[&str],
    ) -> Option<Vec<(&'n str, &'n Node)>> {
        let Kind::Map(entries) = &node.kind else {
            self.err(
                Code::WrongType,
                node.span,
                format!("{what} must be a mapping, found {}", node.type_name()),
                format!(
                    "write {what} as a mapping of {}",
                    crate::diag::one_of(allowed)
                ),
            );
            return None;
        };
        let mut out = Vec::new();
        for (k, v) in entries {
            match &k.kind {
                Kind::Str(key) if allowed.contains(&key.as_str()) => out.push((key.as_str(), v)),
                _ => {
                    let key = yaml::raw(self.text, k.span).to_string();
                    let hint = match crate::suggest::closest(&key, allowed) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => format!("expected one of {}", crate::diag::one_of(allowed)),
                    };
                    self.err(
                        Code::UnknownField,
                        k.span,
                        format!("unknown field `{key}` in {what}"),
                        hint,
                    );
                }
            }
        }
        Some(out)
    }

    fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        match &node.kind {
            Kind::Str(s) => Some(s.clone()),
            // `tlsVersion: 1.3` and `serial: 1234` read as numbers; take them as written.
            Kind::Int(_) | Kind::Float(_) => Some(yaml::raw(self.text, node.span).to_string()),
            _ => {
                self.err(
                    Code::WrongType,
                    node.span,
                    format!("{what} must be a string, found {}", node.type_name()),
                    format!("give {what} one value, not a list or a mapping"),
                );
                None
            }
        }
    }

    fn strings(&mut self, node: &Node, what: &str) -> Vec<String> {
        match &node.kind {
            Kind::Seq(items) => items.iter().filter_map(|i| self.string(i, what)).collect(),
            _ => {
                self.err(
                    Code::WrongType,
                    node.span,
                    format!("{what} must be a list, found {}", node.type_name()),
                    format!("write {what} as a list, such as `[a, b]`"),
                );
                Vec::new()
            }
        }
    }

    fn file(&mut self, doc: &Node) -> TestFile {
        let mut file = TestFile {
            policies: Vec::new(),
            cases: Vec::new(),
        };
        let Some(fields) = self.map(doc, "the test file", TOP_FIELDS) else {
            return file;
        };
        let mut has_cases = false;
        for (key, value) in fields {
            match key {
                "policies" => file.policies = self.strings(value, "`policies`"),
                "cases" => {
                    has_cases = true;
                    let Kind::Seq(items) = &value.kind else {
                        self.err(
                            Code::WrongType,
                            value.span,
                            "`cases` must be a list".into(),
                            "write each case as a list item: `- {name: ..., peer: {...}, expect: {...}}`",
                        );
                        continue;
                    };
                    let mut names = BTreeSet::new();
                    for item in items {
                        if let Some(case) = self.case(item) {
                            if !names.insert(case.name.clone()) {
                                self.err(
                                    Code::InvalidValue,
                                    case.span,
                                    format!("duplicate case name `{}`", case.name),
                                    "give each case of a file its own `name`: results are reported by name",
                                );
                            }
                            file.cases.push(case);
                        }
                    }
                }
                _ => {}
            }
        }
        if !has_cases {
            self.err(
                Code::MissingField,
                doc.span,
                "the test file has no `cases`".into(),
                "add `cases:`, a list of `{name, peer, expect}` mappings",
            );
        }
        file
    }

    fn case(&mut self, node: &Node) -> Option<Case> {
        let fields = self.map(node, "a case", CASE_FIELDS)?;
        let get = |k: &str| fields.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
        let name = match get("name") {
            Some(n) => self.string(n, "`name`"),
            None => {
                self.err(
                    Code::MissingField,
                    node.span,
                    "a case has no `name`".into(),
                    "name the case: `name: allow-web`",
                );
                None
            }
        };
        let peer = match get("peer") {
            Some(p) => self.peer(p),
            None => {
                self.err(
                    Code::MissingField,
                    node.span,
                    "a case has no `peer`".into(),
                    "describe the peer: `peer: {identity: spiffe://...}`",
                );
                None
            }
        };
        let expect = match get("expect") {
            Some(e) => self.expect(e),
            None => {
                self.err(
                    Code::MissingField,
                    node.span,
                    "a case has no `expect`".into(),
                    "give the expected decision: `expect: {action: allow}`",
                );
                None
            }
        };
        Some(Case {
            name: name?,
            span: node.span,
            peer: peer?,
            expect: expect?,
        })
    }

    fn peer(&mut self, node: &Node) -> Option<PeerSpec> {
        let fields = self.map(node, "`peer`", PEER_FIELDS)?;
        let mut cert = None;
        let mut spec = PeerSpec {
            cert: CertSpec::Missing,
            tls_version: None,
            port: None,
            sni: None,
            source_ip: None,
        };
        let mut ok = true;
        let written = fields
            .iter()
            .filter(|(k, _)| *k == "identity" || *k == "certificate")
            .count();
        for (key, v) in fields {
            match key {
                "identity" | "certificate" if written > 1 => {
                    self.err(
                        Code::Conflict,
                        v.span,
                        "the peer has both `identity` and `certificate`".into(),
                        "give either `identity` or `certificate`, not both",
                    );
                    ok = false;
                }
                "identity" => cert = self.string(v, "`identity`").map(CertSpec::Identity),
                "certificate" => {
                    cert = match &v.kind {
                        Kind::Str(s) if s == "none" => Some(CertSpec::Missing),
                        Kind::Str(s) => Some(CertSpec::File(s.clone())),
                        Kind::Map(_) => self.describe(v).map(|f| CertSpec::Described(Box::new(f))),
                        _ => {
                            self.err(
                                Code::WrongType,
                                v.span,
                                format!("`certificate` must be a file path, `none` or a mapping, found {}", v.type_name()),
                                "name a PEM or DER file, write `none` for no certificate, or describe one: `{identity: ..., key: ecdsa-p256}`",
                            );
                            None
                        }
                    }
                }
                "tlsVersion" => {
                    let s = self.string(v, "`tlsVersion`")?;
                    match ruleset::peer_builder::parse_tls_version(&s) {
                        Ok(t) => spec.tls_version = Some(t),
                        Err(_) => {
                            self.err(
                                Code::InvalidValue,
                                v.span,
                                format!("unknown TLS version `{s}`"),
                                "use 1.2 or 1.3",
                            );
                            ok = false;
                        }
                    }
                }
                "port" => match &v.kind {
                    Kind::Int(p) if (1..=65535).contains(p) => {
                        spec.port = u16::try_from(*p).ok();
                    }
                    _ => {
                        self.err(
                            Code::InvalidPort,
                            v.span,
                            format!(
                                "`port` must be a port number 1..65535, found `{}`",
                                yaml::raw(self.text, v.span)
                            ),
                            "write the destination port as a number, such as `port: 8443`",
                        );
                        ok = false;
                    }
                },
                "sni" => spec.sni = self.string(v, "`sni`"),
                "sourceIp" => {
                    let s = self.string(v, "`sourceIp`")?;
                    match ruleset::peer_builder::parse_source_ip(&s) {
                        Ok(ip) => spec.source_ip = Some(ip),
                        Err(e) => {
                            self.err(
                                Code::InvalidValue,
                                v.span,
                                e.to_string(),
                                "write an IPv4 or IPv6 address, such as `10.0.0.7`",
                            );
                            ok = false;
                        }
                    }
                }
                _ => {}
            }
        }
        match cert {
            Some(c) => spec.cert = c,
            // A written but malformed one was reported already.
            None if written > 0 => ok = false,
            None => {
                self.err(
                    Code::MissingField,
                    node.span,
                    "the peer has no `identity` or `certificate`".into(),
                    "add `identity: spiffe://...` for a what-if, or `certificate:` (a file, `none`, or a description)",
                );
                ok = false;
            }
        }
        ok.then_some(spec)
    }

    fn describe(&mut self, node: &Node) -> Option<CertFacts> {
        let fields = self.map(node, "a described certificate", DESCRIBE_FIELDS)?;
        let mut ok = true;
        let mut identity = None;
        let mut uri_sans = None;
        let mut dns_sans = Vec::new();
        let mut key = KeyInfo::Ecdsa {
            curve: Some(Curve::P256),
        };
        let mut lifetime: u64 = 3600;
        let mut serial = vec![1u8];
        let mut issuer = "CN=certgate test CA".to_string();
        let mut issuer_span = node.span;
        let mut hash = None;
        // Distinct per description, so certificate and key revocations never match by
        // accident.
        let sha256: [u8; 32] = Sha256::digest(yaml::raw(self.text, node.span).as_bytes()).into();
        let derived = |tag: &[u8]| -> [u8; 32] {
            Sha256::new()
                .chain_update(tag)
                .chain_update(sha256)
                .finalize()
                .into()
        };
        let mut spki_sha256 = derived(b"spki");
        for (k, v) in fields {
            match k {
                "identity" => identity = self.string(v, "`identity`"),
                "uriSans" => uri_sans = Some(self.strings(v, "`uriSans`")),
                "dnsSans" => dns_sans = self.strings(v, "`dnsSans`"),
                "key" => match self.string(v, "`key`").as_deref().map(parse_key) {
                    Some(Some(k)) => key = k,
                    Some(None) => {
                        self.err(
                            Code::InvalidValue,
                            v.span,
                            format!("unknown key `{}`", yaml::raw(self.text, v.span)),
                            "use `ecdsa-p256`, `ecdsa-p384`, `ecdsa-p521`, `ed25519` or `rsa-BITS` (`rsa-2048`)",
                        );
                        ok = false;
                    }
                    None => ok = false,
                },
                "lifetime" => match self.string(v, "`lifetime`") {
                    Some(s) => match crate::duration::parse(&s) {
                        Ok(secs) => lifetime = secs,
                        Err(e) => {
                            self.err(
                                Code::InvalidDuration,
                                v.span,
                                format!("invalid lifetime `{s}`: {e}"),
                                "write a duration such as `24h` or `90d` (units `s`, `m`, `h`, `d`)",
                            );
                            ok = false;
                        }
                    },
                    None => ok = false,
                },
                "serial" => match self.string(v, "`serial`") {
                    Some(s) => match ruleset::cert::parse_serial(&s) {
                        Ok(b) => serial = b,
                        Err(e) => {
                            self.err(
                                Code::InvalidSerial,
                                v.span,
                                format!("invalid serial `{s}`: {e}"),
                                "write the serial in hex, optionally with `:` separators, such as `4f:38:0a`",
                            );
                            ok = false;
                        }
                    },
                    None => ok = false,
                },
                "issuer" => {
                    issuer_span = v.span;
                    match self.string(v, "`issuer`") {
                        Some(s) => issuer = s,
                        None => ok = false,
                    }
                }
                "signatureHash" => match self.string(v, "`signatureHash`") {
                    Some(s) => match SigHash::parse(&s).filter(|h| *h != SigHash::Other) {
                        Some(h) => hash = Some((h, v.span)),
                        None => {
                            self.err(
                                Code::InvalidValue,
                                v.span,
                                format!("unknown signature hash `{s}`"),
                                "use md5, sha1, sha224, sha256, sha384 or sha512",
                            );
                            ok = false;
                        }
                    },
                    None => ok = false,
                },
                "spkiSha256" => match self.string(v, "`spkiSha256`") {
                    Some(s) => match ruleset::cert::parse_fingerprint(&s) {
                        Some(f) => spki_sha256 = f,
                        None => {
                            self.err(
                                Code::InvalidValue,
                                v.span,
                                format!("`{s}` is not an SPKI SHA-256"),
                                "write the SHA-256 of the SubjectPublicKeyInfo as 64 hex digits (`:` separators allowed)",
                            );
                            ok = false;
                        }
                    },
                    None => ok = false,
                },
                _ => {}
            }
        }
        let issuer_id = match ruleset::dn::parse_dn_string(&issuer) {
            Ok(id) => id,
            Err(e) => {
                self.err(
                    Code::InvalidIssuer,
                    issuer_span,
                    format!("invalid issuer `{issuer}`: {e}"),
                    "write the issuer's distinguished name, such as `CN=Intermediate CA,O=Example`",
                );
                return None;
            }
        };
        let uri_sans = match (uri_sans, identity) {
            (Some(_), Some(_)) => {
                self.err(
                    Code::Conflict,
                    node.span,
                    "the described certificate has both `identity` and `uriSans`".into(),
                    "give either `identity` or `uriSans`, not both",
                );
                return None;
            }
            (Some(u), None) => u,
            (None, Some(id)) => vec![id],
            (None, None) => Vec::new(),
        };
        let signature = match (&key, hash) {
            (KeyInfo::Ed25519, Some((_, span))) => {
                self.err(
                    Code::Conflict,
                    span,
                    "an Ed25519 signature has no separate hash".into(),
                    "leave `signatureHash` out for an `ed25519` key",
                );
                return None;
            }
            (KeyInfo::Ed25519, None) => SigInfo {
                name: "Ed25519".into(),
                hash: SigHash::Other,
            },
            (KeyInfo::Rsa { .. }, h) => {
                let h = h.map_or(SigHash::Sha256, |(h, _)| h);
                SigInfo {
                    name: format!("{}WithRSAEncryption", h.as_str()),
                    hash: h,
                }
            }
            (_, h) => {
                let h = h.map_or(SigHash::Sha256, |(h, _)| h);
                SigInfo {
                    name: format!("ecdsa-with-{}", h.as_str().to_uppercase()),
                    hash: h,
                }
            }
        };
        let not_after = i64::try_from(lifetime)
            .ok()
            .and_then(|l| DESCRIBED_NOT_BEFORE.checked_add(l));
        let Some(not_after) = not_after else {
            self.err(
                Code::InvalidDuration,
                node.span,
                "the lifetime is too long".into(),
                "use a lifetime of years, not millennia, such as `lifetime: 365d`",
            );
            return None;
        };
        ok.then(|| CertFacts {
            serial,
            issuer,
            issuer_id,
            subject: "O=certgate test".into(),
            not_before: DESCRIBED_NOT_BEFORE,
            not_after,
            key,
            signature,
            uri_sans,
            dns_sans,
            other_sans: Vec::new(),
            sha256,
            revocation_keys: ruleset::RevocationKeys::from_digests(
                derived(b"tbs"),
                spki_sha256,
                derived(b"key"),
            ),
            subject_key_id: None,
            authority_key_id: None,
        })
    }

    fn optional_name(&mut self, node: &Node, what: &str) -> Option<Option<String>> {
        match &node.kind {
            Kind::Null => Some(None),
            _ => self.string(node, what).map(Some),
        }
    }

    fn expect(&mut self, node: &Node) -> Option<Expect> {
        let fields = self.map(node, "`expect`", EXPECT_FIELDS)?;
        let mut action = None;
        let mut reason = None;
        let mut rule = None;
        let mut policy = None;
        let mut ok = true;
        for (k, v) in fields {
            match k {
                "action" => match self.string(v, "`action`") {
                    Some(s) => match Action::parse(&s) {
                        Some(a) => action = Some(a),
                        None => {
                            self.err(
                                Code::InvalidValue,
                                v.span,
                                format!("unknown action `{s}`"),
                                "use allow or deny",
                            );
                            ok = false;
                        }
                    },
                    None => ok = false,
                },
                "reason" => match self.string(v, "`reason`") {
                    Some(s) => match Reason::from_code(&s) {
                        Some(r) => reason = Some(r),
                        None => {
                            let codes: Vec<&str> = Reason::ALL.iter().map(|r| r.code()).collect();
                            let hint = match crate::suggest::closest(&s, &codes) {
                                Some(c) => format!("did you mean `{c}`?"),
                                None => "see the reason codes in docs/policy.md".into(),
                            };
                            self.err(
                                Code::InvalidValue,
                                v.span,
                                format!("unknown reason `{s}`"),
                                hint,
                            );
                            ok = false;
                        }
                    },
                    None => ok = false,
                },
                "rule" => rule = self.optional_name(v, "`rule`"),
                "policy" => policy = self.optional_name(v, "`policy`"),
                _ => {}
            }
        }
        let Some(action) = action else {
            if ok {
                self.err(
                    Code::MissingField,
                    node.span,
                    "`expect` has no `action`".into(),
                    "add `action: allow` or `action: deny`",
                );
            }
            return None;
        };
        ok.then_some(Expect {
            action,
            reason,
            rule,
            policy,
        })
    }
}

/// `ecdsa-p256`, `ecdsa-P-384`, `ed25519`, `rsa-2048`.
fn parse_key(s: &str) -> Option<KeyInfo> {
    let s = s.to_ascii_lowercase();
    if s == "ed25519" {
        return Some(KeyInfo::Ed25519);
    }
    if let Some(bits) = s.strip_prefix("rsa-") {
        let bits: u32 = bits.parse().ok()?;
        return (512..=16384)
            .contains(&bits)
            .then_some(KeyInfo::Rsa { bits });
    }
    let curve = match s.strip_prefix("ecdsa-")?.replace('-', "").as_str() {
        "p256" => Curve::P256,
        "p384" => Curve::P384,
        "p521" => Curve::P521,
        _ => return None,
    };
    Some(KeyInfo::Ecdsa { curve: Some(curve) })
}

/// Parses a test file (`file` is its index for spans). Every problem is reported.
pub fn parse(file: usize, text: &str) -> Result<TestFile, Vec<Diagnostic>> {
    let docs = yaml::load(file, text).map_err(|e| {
        vec![if e.alias_budget {
            Diagnostic::new(Code::YamlAliasBudget, Some(e.span), e.message)
                .help("write the shared values out, or use fewer aliases of large anchors")
        } else {
            Diagnostic::new(
                Code::YamlSyntax,
                Some(e.span),
                format!("invalid YAML: {}", e.message),
            )
            .help("fix the YAML syntax; the other problems are reported once it parses")
        }]
    })?;
    let mut docs = docs.into_iter().filter(|d| d.kind != Kind::Null);
    let Some(doc) = docs.next() else {
        return Err(vec![Diagnostic::new(
            Code::MissingField,
            Some(Span {
                file,
                start: 0,
                end: 0,
            }),
            "the test file is empty",
        )
        .help("add `cases:`, a list of `{name, peer, expect}` mappings")]);
    };
    let mut w = TestFileWalker {
        text,
        errors: Vec::new(),
    };
    let parsed = w.file(&doc);
    if let Some(extra) = docs.next() {
        w.err(
            Code::InvalidValue,
            extra.span,
            "a test file holds one document".into(),
            "put every case under the first document's `cases`",
        );
    }
    if w.errors.is_empty() {
        Ok(parsed)
    } else {
        w.errors.sort_by_key(|e| e.span.map(|s| s.start));
        Err(w.errors)
    }
}

/// 1-based `(line, column)` of a byte offset in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let lc = LineIndex::new(text).line_col(text, offset);
    (lc.line, lc.column)
}

/// A decision as tests compare it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// `allow` or `deny`.
    pub action: &'static str,
    /// Reason code.
    pub reason: &'static str,
    /// Deciding rule.
    pub rule: Option<String>,
    /// Its policy.
    pub policy: Option<String>,
}

/// The result of one case.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CaseResult {
    /// Case name.
    pub name: String,
    /// Test file path, as given.
    pub file: String,
    /// 1-based line of the case.
    pub line: usize,
    /// Whether the decision matched every expected field.
    pub passed: bool,
    /// The expected fields (absent ones are `null` and not compared).
    pub expected: ExpectedJson,
    /// The decision, or `null` when the peer could not be built.
    pub actual: Option<Outcome>,
    /// The fields that differ: `action`, `reason`, `rule`, `policy`.
    pub mismatches: Vec<&'static str>,
    /// Why the case could not run (unreadable certificate, policy that does not compile).
    pub error: Option<String>,
}

/// The expected fields of a case, for output.
#[derive(Debug, Clone, Serialize)]
pub struct ExpectedJson {
    /// Expected action.
    pub action: &'static str,
    /// Expected reason, if given.
    pub reason: Option<&'static str>,
    /// Expected rule: absent (not compared) is omitted; `null` expects none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<Option<String>>,
    /// Expected policy, as `rule`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<Option<String>>,
}

impl From<&Expect> for ExpectedJson {
    fn from(e: &Expect) -> Self {
        ExpectedJson {
            action: e.action.as_str(),
            reason: e.reason.map(Reason::code),
            rule: e.rule.clone(),
            policy: e.policy.clone(),
        }
    }
}

/// Builds the engine's peer for a case; certificate files go through `loader`.
pub fn build_peer(case: &Case, test_input: &Input, loader: &dyn Loader) -> Result<Peer, String> {
    let builder = PeerBuilder::new()
        .tls_version(case.peer.tls_version)
        .port(case.peer.port)
        .sni(case.peer.sni.clone())
        .source_ip(case.peer.source_ip);
    let builder = match &case.peer.cert {
        CertSpec::Identity(id) => builder.identity(Some(id.clone())),
        CertSpec::Missing => builder.cert(PeerCert::Missing),
        CertSpec::Described(f) => {
            builder.cert(PeerCert::Parsed(std::sync::Arc::new((**f).clone())))
        }
        CertSpec::File(path) => {
            let bytes = loader
                .load(test_input, path)
                .map_err(|e| format!("cannot read certificate `{path}`: {e}"))?;
            builder
                .cert_pem_or_der(&bytes)
                .map_err(|e| format!("`{path}` {e}"))?
        }
    };
    builder.build().map_err(|e| e.to_string())
}

/// Runs every case of a test file against an engine. `exercised` collects the names of the
/// rules that decided some case.
pub fn run(
    file: &TestFile,
    test_input: &Input,
    engine: &Engine,
    loader: &dyn Loader,
    exercised: &mut BTreeSet<String>,
) -> Vec<CaseResult> {
    let index = LineIndex::new(&test_input.text);
    file.cases
        .iter()
        .map(|case| {
            let line = index.line_col(&test_input.text, case.span.start).line;
            let expected = ExpectedJson::from(&case.expect);
            match build_peer(case, test_input, loader) {
                Err(error) => CaseResult {
                    name: case.name.clone(),
                    file: test_input.path.clone(),
                    line,
                    passed: false,
                    expected,
                    actual: None,
                    mismatches: Vec::new(),
                    error: Some(error),
                },
                Ok(peer) => {
                    let d = engine.evaluate(&peer);
                    if let Some(r) = d.rule {
                        exercised.insert(r.to_string());
                    }
                    let actual = Outcome {
                        action: d.action.as_str(),
                        reason: d.reason.code(),
                        rule: d.rule.map(str::to_string),
                        policy: d.policy.map(str::to_string),
                    };
                    let e = &case.expect;
                    let mut mismatches = Vec::new();
                    if e.action != d.action {
                        mismatches.push("action");
                    }
                    if e.reason.is_some_and(|r| r != d.reason) {
                        mismatches.push("reason");
                    }
                    if e.rule.as_ref().is_some_and(|r| *r != actual.rule) {
                        mismatches.push("rule");
                    }
                    if e.policy.as_ref().is_some_and(|p| *p != actual.policy) {
                        mismatches.push("policy");
                    }
                    CaseResult {
                        name: case.name.clone(),
                        file: test_input.path.clone(),
                        line,
                        passed: mismatches.is_empty(),
                        expected,
                        actual: Some(actual),
                        mismatches,
                        error: None,
                    }
                }
            }
        })
        .collect()
}

/// A case that could not run because its policies do not compile: failed, with the reason.
pub fn not_run(file: &TestFile, test_input: &Input, error: &str) -> Vec<CaseResult> {
    let index = LineIndex::new(&test_input.text);
    file.cases
        .iter()
        .map(|case| CaseResult {
            name: case.name.clone(),
            file: test_input.path.clone(),
            line: index.line_col(&test_input.text, case.span.start).line,
            passed: false,
            expected: ExpectedJson::from(&case.expect),
            actual: None,
            mismatches: Vec::new(),
            error: Some(error.to_string()),
        })
        .collect()
}

/// A rule no case decided.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Uncovered {
    /// Rule name.
    pub rule: String,
    /// Its policy.
    pub policy: String,
    /// Policy file path.
    pub file: String,
    /// 1-based line of the rule.
    pub line: usize,
}

/// The whole run, for every output format.
#[derive(Debug, Clone, Serialize)]
pub struct TestSummary {
    /// Schema version, [`VERSION`].
    pub version: u32,
    /// Every case, in file order.
    pub cases: Vec<CaseResult>,
    /// Passed cases.
    pub passed: usize,
    /// Failed cases.
    pub failed: usize,
    /// With `--coverage`: rules no case decided; `null` without it.
    pub uncovered: Option<Vec<Uncovered>>,
}

impl TestSummary {
    /// Counts the results.
    pub fn new(cases: Vec<CaseResult>, uncovered: Option<Vec<Uncovered>>) -> TestSummary {
        let passed = cases.iter().filter(|c| c.passed).count();
        TestSummary {
            version: VERSION,
            failed: cases.len() - passed,
            passed,
            cases,
            uncovered,
        }
    }

    /// The JSON report.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Text for a terminal or a CI log: one line per case, the expected/actual diff under
    /// each failure, the uncovered rules, and the final line `N passed, N failed`.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for c in &self.cases {
            let mark = if c.passed { "ok  " } else { "FAIL" };
            out.push_str(&format!("{mark} {}:{}: {}\n", c.file, c.line, c.name));
            if c.passed {
                continue;
            }
            if let Some(e) = &c.error {
                out.push_str(&format!("       error: {e}\n"));
            }
            if let Some(a) = &c.actual {
                let field = |name: &str, want: String, got: String, differs: bool| {
                    let mark = if differs { "≠" } else { " " };
                    format!("     {mark} {name:<7} expected {want:<24} actual {got}\n")
                };
                let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
                out.push_str(&field(
                    "action",
                    c.expected.action.into(),
                    a.action.into(),
                    c.mismatches.contains(&"action"),
                ));
                out.push_str(&field(
                    "reason",
                    c.expected.reason.unwrap_or("(any)").into(),
                    a.reason.into(),
                    c.mismatches.contains(&"reason"),
                ));
                out.push_str(&field(
                    "rule",
                    c.expected.rule.as_ref().map_or("(any)".into(), show),
                    show(&a.rule),
                    c.mismatches.contains(&"rule"),
                ));
                if c.expected.policy.is_some() {
                    out.push_str(&field(
                        "policy",
                        c.expected.policy.as_ref().map_or("(any)".into(), show),
                        show(&a.policy),
                        c.mismatches.contains(&"policy"),
                    ));
                }
            }
        }
        if let Some(u) = &self.uncovered {
            if u.is_empty() {
                out.push_str("\ncoverage: every rule decided at least one case\n");
            } else {
                out.push_str(&format!(
                    "\ncoverage: {} rule{} no case exercised:\n",
                    u.len(),
                    if u.len() == 1 { "" } else { "s" }
                ));
                for r in u {
                    out.push_str(&format!(
                        "  {}:{}: rule `{}` (policy `{}`)\n",
                        r.file, r.line, r.rule, r.policy
                    ));
                }
            }
        }
        out.push_str(&format!("{} passed, {} failed\n", self.passed, self.failed));
        out
    }

    /// JUnit XML: one `testsuite` per test file, one `testcase` per case, a `failure` with
    /// the expected/actual diff for each failed case.
    pub fn to_junit(&self) -> String {
        let mut files: Vec<&str> = Vec::new();
        for c in &self.cases {
            if !files.contains(&c.file.as_str()) {
                files.push(&c.file);
            }
        }
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        out.push_str(&format!(
            "<testsuites name=\"certgate\" tests=\"{}\" failures=\"{}\" errors=\"0\">\n",
            self.cases.len(),
            self.failed
        ));
        for f in files {
            let cases: Vec<&CaseResult> = self.cases.iter().filter(|c| c.file == f).collect();
            let failures = cases.iter().filter(|c| !c.passed).count();
            out.push_str(&format!(
                "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\">\n",
                xml(f),
                cases.len()
            ));
            for c in cases {
                out.push_str(&format!(
                    "    <testcase name=\"{}\" classname=\"{}\" file=\"{}\" line=\"{}\"",
                    xml(&c.name),
                    xml(f),
                    xml(f),
                    c.line
                ));
                if c.passed {
                    out.push_str("/>\n");
                    continue;
                }
                let (message, body) = match (&c.error, &c.actual) {
                    (Some(e), _) => (e.clone(), e.clone()),
                    (None, Some(a)) => (
                        format!("mismatch in {}", c.mismatches.join(", ")),
                        format!(
                            "expected: {}\nactual: {}",
                            serde_json::to_string(&c.expected).unwrap_or_default(),
                            serde_json::to_string(a).unwrap_or_default()
                        ),
                    ),
                    (None, None) => ("failed".into(), String::new()),
                };
                out.push_str(&format!(
                    ">\n      <failure message=\"{}\" type=\"decision\">{}</failure>\n    </testcase>\n",
                    xml(&message),
                    xml(&body)
                ));
            }
            out.push_str("  </testsuite>\n");
        }
        out.push_str("</testsuites>\n");
        out
    }
}

/// Escapes text for XML attributes and content.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            c if (c as u32) < 0x20 && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_described_certificate_reads_like_a_parsed_one() {
        let text = "cases:\n  - name: a\n    peer:\n      certificate: {identity: \"spiffe://x.test/a\", key: rsa-1024, signatureHash: sha1, lifetime: 2d, serial: \"4f:38:0a\", issuer: \"CN=CA,O=Example\"}\n    expect: {action: deny, reason: weak_rsa_key, rule: null}\n";
        let f = parse(0, text).unwrap();
        let CertSpec::Described(facts) = &f.cases[0].peer.cert else {
            panic!()
        };
        assert_eq!(facts.key, KeyInfo::Rsa { bits: 1024 });
        assert_eq!(facts.signature.name, "sha1WithRSAEncryption");
        assert_eq!(facts.not_after - facts.not_before, 2 * 86_400);
        assert_eq!(facts.serial, vec![0x4f, 0x38, 0x0a]);
        assert_eq!(
            facts.issuer_id,
            ruleset::dn::parse_dn_string("O=Example,CN=CA").unwrap()
        );
        assert_eq!(f.cases[0].expect.rule, Some(None));
    }

    #[test]
    fn every_problem_is_reported_with_its_place() {
        let text = "cases:\n  - name: a\n    peer: {identty: x}\n    expect: {action: permit, reason: allow_rul}\n";
        let errors = parse(0, text).unwrap_err();
        // What is wrong in the message, how to fix it in `help`, as policy diagnostics.
        let messages: Vec<String> = errors
            .iter()
            .map(|e| format!("{} | {}", e.message, e.help.as_deref().unwrap_or("")))
            .collect();
        for want in [
            "unknown field `identty` in `peer` | did you mean `identity`?",
            "unknown action `permit` | use allow or deny",
            "unknown reason `allow_rul` | did you mean `allow_rule`?",
        ] {
            assert!(messages.iter().any(|m| m == want), "{want}: {messages:?}");
        }
        assert!(errors.iter().all(|e| e.is_error() && e.help.is_some()));
        let first = errors[0].span.unwrap();
        assert_eq!(line_col(text, first.start).0, 3);
    }

    #[test]
    fn junit_escapes_names() {
        let s = TestSummary::new(
            vec![CaseResult {
                name: "a <b> & \"c\"".into(),
                file: "t.test.yaml".into(),
                line: 1,
                passed: true,
                expected: ExpectedJson {
                    action: "allow",
                    reason: None,
                    rule: None,
                    policy: None,
                },
                actual: None,
                mismatches: vec![],
                error: None,
            }],
            None,
        );
        assert!(s
            .to_junit()
            .contains("name=\"a &lt;b&gt; &amp; &quot;c&quot;\""));
    }
}
