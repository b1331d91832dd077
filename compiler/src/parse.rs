//! Walks the YAML node tree of one document into a [`Policy`], reporting every problem it
//! finds (unknown fields, wrong types, malformed values) instead of stopping at the first.

use ruleset::{
    Action, AuditLog, Cidr, CidrError, Curve, KeyPolicy, Mode, OnStale, Pattern, PortRange,
    RevokedSerial, SigHash, TlsVersion,
};

use crate::diag::{one_of, Code, Diagnostic, Sink};
use crate::model::{CaRef, CrlRef, KeyRef, Policy, RuleSpec, Spec};
use crate::source::{Span, Spanned};
use crate::suggest::closest;
use crate::yaml::{raw, Kind, Node};

/// The only `apiVersion` this compiler reads.
pub const API_VERSION: &str = "certgate.dev/v1alpha1";
/// The only `kind` this compiler reads.
pub const KIND: &str = "MeshTLSPolicy";

const TOP_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "spec"];
const METADATA_FIELDS: &[&str] = &["name", "namespace", "labels", "annotations"];
const SPEC_FIELDS: &[&str] = &[
    "mode",
    "defaultAction",
    "tls",
    "peerCertificate",
    "revocation",
    "rules",
    "audit",
];
const TLS_FIELDS: &[&str] = &["minVersion"];
const PEER_FIELDS: &[&str] = &[
    "trustDomains",
    "maxLifetime",
    "keys",
    "forbidSignatureAlgorithms",
];
const KEYS_FIELDS: &[&str] = &["rsaMinBits", "ecdsaCurves", "ed25519"];
const REVOCATION_FIELDS: &[&str] = &[
    "crls",
    "crlUrls",
    "crlIssuers",
    "caCertificates",
    "serials",
    "certificates",
    "publicKeys",
    "issuers",
    "sha256Fingerprints",
    "onStale",
    "maxAge",
];
const SERIAL_FIELDS: &[&str] = &["serial", "issuer"];
const RULE_FIELDS: &[&str] = &[
    "name",
    "action",
    "principals",
    "notPrincipals",
    "ports",
    "sni",
    "sourceCidrs",
];
const AUDIT_FIELDS: &[&str] = &["log"];

/// Words people write from other tools' vocabularies, and the word certgate uses.
const SYNONYMS: &[(&str, &str)] = &[
    ("permit", "allow"),
    ("accept", "allow"),
    ("reject", "deny"),
    ("block", "deny"),
    ("drop", "deny"),
    ("denied", "deny"),
    ("enforcing", "enforce"),
    ("permissive", "audit"),
    ("dry-run", "audit"),
    ("secp256r1", "P-256"),
    ("prime256v1", "P-256"),
    ("secp384r1", "P-384"),
    ("secp521r1", "P-521"),
    ("sha-1", "sha1"),
    ("sha-256", "sha256"),
];

/// A mapping whose keys were checked against the allowed field names.
struct Fields<'n> {
    /// `(key, key node, value node)` for the known fields.
    entries: Vec<(&'n str, &'n Node, &'n Node)>,
    /// Where "missing field" findings point: the key that holds this mapping, or the mapping.
    anchor: Span,
}

impl<'n> Fields<'n> {
    fn get(&self, name: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == name)
            .map(|(_, _, v)| *v)
    }
}

/// The walker for one document.
pub(crate) struct Walker<'a> {
    text: &'a str,
    sink: &'a mut Sink,
}

impl<'a> Walker<'a> {
    pub(crate) fn new(text: &'a str, sink: &'a mut Sink) -> Self {
        Walker { text, sink }
    }

    fn error(&mut self, code: Code, span: Span, message: String) -> &mut Diagnostic {
        self.sink.push(Diagnostic::new(code, Some(span), message));
        let last = self.sink.diags.len() - 1;
        &mut self.sink.diags[last]
    }

    fn report(&mut self, d: Diagnostic) {
        self.sink.push(d);
    }

    /// Checks that `node` is a mapping with string keys drawn from `allowed`.
    fn fields<'n>(
        &mut self,
        node: &'n Node,
        anchor: Span,
        what: &str,
        allowed: &[&str],
    ) -> Option<Fields<'n>> {
        let Kind::Map(map) = &node.kind else {
            self.wrong_type(node, what, "a mapping");
            return None;
        };
        let mut entries = Vec::new();
        for (k, v) in map {
            let Kind::Str(key) = &k.kind else {
                let found = raw(self.text, k.span).to_string();
                self.report(
                    Diagnostic::new(
                        Code::UnknownField,
                        Some(k.span),
                        format!("unknown field `{found}` in {what}"),
                    )
                    .help(format!("expected one of {}", one_of(allowed))),
                );
                continue;
            };
            if allowed.contains(&key.as_str()) {
                entries.push((key.as_str(), k, v));
            } else {
                let help = match closest(key, allowed) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("expected one of {}", one_of(allowed)),
                };
                self.report(
                    Diagnostic::new(
                        Code::UnknownField,
                        Some(k.span),
                        format!("unknown field `{key}` in {what}"),
                    )
                    .help(help)
                    .label("unknown field"),
                );
            }
        }
        Some(Fields { entries, anchor })
    }

    fn key_span(fields: &Fields<'_>, name: &str) -> Option<Span> {
        fields
            .entries
            .iter()
            .find(|(k, _, _)| *k == name)
            .map(|(_, k, _)| k.span)
    }

    fn required<'n>(&mut self, fields: &Fields<'n>, name: &str, what: &str) -> Option<&'n Node> {
        let v = fields.get(name);
        if v.is_none() {
            self.report(
                Diagnostic::new(
                    Code::MissingField,
                    Some(fields.anchor),
                    format!("missing field `{name}` in {what}"),
                )
                .help(format!("add `{name}:` to {what}")),
            );
        }
        v
    }

    fn wrong_type(&mut self, node: &Node, what: &str, expected: &str) {
        let found = node.type_name();
        let mut d = Diagnostic::new(
            Code::WrongType,
            Some(node.span),
            format!("{what} must be {expected}, found {found}"),
        )
        .label(format!("expected {expected}"));
        d = match (&node.kind, expected) {
            (Kind::Int(_) | Kind::Float(_) | Kind::Bool(_), "a string") => d.help(format!(
                "quote the value: `\"{}\"`",
                raw(self.text, node.span)
            )),
            (Kind::Str(_) | Kind::Int(_) | Kind::Float(_) | Kind::Bool(_), "a list") => d.help(format!(
                "write a YAML list: `[{}]`",
                raw(self.text, node.span)
            )),
            (Kind::Null, _) => d.help("give it a value or remove the field"),
            (Kind::Str(v), "an integer") if v.parse::<i64>().is_ok() => {
                d.help(format!("remove the quotes: `{v}`"))
            }
            (Kind::Str(v), "`true` or `false`") => match v.to_ascii_lowercase().as_str() {
                "yes" | "on" | "y" | "true" => d.help("write `true` without quotes (YAML 1.2 reads only `true` and `false` as booleans)"),
                "no" | "off" | "n" | "false" => d.help("write `false` without quotes (YAML 1.2 reads only `true` and `false` as booleans)"),
                _ => d.help("write `true` or `false`"),
            },
            _ => d.help(format!("write {expected} here")),
        };
        self.report(d);
    }

    fn string(&mut self, node: &Node, what: &str) -> Option<Spanned<String>> {
        match &node.kind {
            Kind::Str(s) => Some(Spanned::new(s.clone(), node.span)),
            _ => {
                self.wrong_type(node, what, "a string");
                None
            }
        }
    }

    /// A scalar read as text whatever YAML type it resolved to (`1.3`, `8443`).
    fn scalar_text(&mut self, node: &Node, what: &str) -> Option<Spanned<String>> {
        match &node.kind {
            Kind::Str(s) => Some(Spanned::new(s.clone(), node.span)),
            Kind::Int(_) | Kind::Float(_) => Some(Spanned::new(
                raw(self.text, node.span).to_string(),
                node.span,
            )),
            _ => {
                self.wrong_type(node, what, "a string");
                None
            }
        }
    }

    fn list<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n [Node]> {
        match &node.kind {
            Kind::Seq(items) => Some(items),
            _ => {
                self.wrong_type(node, what, "a list");
                None
            }
        }
    }

    /// A list that must not be empty because empty would read as "anything".
    fn nonempty_list<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n [Node]> {
        let items = self.list(node, what)?;
        if items.is_empty() {
            self.report(
                Diagnostic::new(
                    Code::EmptyList,
                    Some(node.span),
                    format!("{what} is an empty list"),
                )
                .help("an empty list would match everything; remove the field to mean \"any\", or list at least one entry")
                .label("empty"),
            );
            return None;
        }
        Some(items)
    }

    fn boolean(&mut self, node: &Node, what: &str) -> Option<bool> {
        match node.kind {
            Kind::Bool(b) => Some(b),
            _ => {
                self.wrong_type(node, what, "`true` or `false`");
                None
            }
        }
    }

    fn word<T: Copy>(
        &mut self,
        node: &Node,
        what: &str,
        words: &[(&str, T)],
    ) -> Option<Spanned<T>> {
        let s = self.scalar_text(node, what)?;
        if let Some((_, v)) = words.iter().find(|(w, _)| *w == s.value) {
            return Some(Spanned::new(*v, s.span));
        }
        let names: Vec<&str> = words.iter().map(|(w, _)| *w).collect();
        let synonym = SYNONYMS
            .iter()
            .find(|(alias, word)| alias.eq_ignore_ascii_case(&s.value) && names.contains(word))
            .map(|(_, word)| *word);
        let help = match synonym.or_else(|| closest(&s.value, &names)) {
            Some(c) => format!("did you mean `{c}`?"),
            None => format!("use {}", one_of(&names)),
        };
        self.error(
            Code::InvalidValue,
            s.span,
            format!("{what} must be {}, found `{}`", one_of(&names), s.value),
        )
        .help = Some(help);
        None
    }

    /// Reads one document. Returns `None` when the document is not a policy at all.
    pub(crate) fn document(&mut self, file: usize, doc: &Node) -> Option<Policy> {
        let anchor = first_key_span(doc);
        let top = self.fields(doc, anchor, "the policy document", TOP_FIELDS)?;
        if let Some(n) = self.required(&top, "kind", "the policy document") {
            let kind = self.string(n, "`kind`")?;
            if kind.value != KIND {
                let mut d = Diagnostic::new(
                    Code::UnknownKind,
                    Some(kind.span),
                    format!("unsupported kind `{}`", kind.value),
                );
                d = match closest(&kind.value, &[KIND]) {
                    Some(c) => d.help(format!("did you mean `{c}`?")),
                    None => d.help(format!(
                        "certgate reads `kind: {KIND}` documents; keep other manifests out of the policy inputs"
                    )),
                };
                self.report(d);
                return None;
            }
        }
        if let Some(n) = self.required(&top, "apiVersion", "the policy document") {
            if let Some(v) = self.string(n, "`apiVersion`") {
                if v.value != API_VERSION {
                    self.error(
                        Code::UnknownApiVersion,
                        v.span,
                        format!("unsupported apiVersion `{}`", v.value),
                    )
                    .help = Some(format!("this compiler reads `apiVersion: {API_VERSION}`"));
                }
            }
        }
        let name = self
            .required(&top, "metadata", "the policy document")
            .and_then(|m| {
                let anchor = Self::key_span(&top, "metadata").unwrap_or(m.span);
                let meta = self.fields(m, anchor, "`metadata`", METADATA_FIELDS)?;
                let n = self.required(&meta, "name", "`metadata`")?;
                let name = self.string(n, "`metadata.name`")?;
                self.check_name(&name, "policy name");
                Some(name)
            });
        let spec = self
            .required(&top, "spec", "the policy document")
            .and_then(|s| {
                let anchor = Self::key_span(&top, "spec").unwrap_or(s.span);
                self.spec(s, anchor)
            });
        Some(Policy {
            file,
            name: name?,
            spec: spec?,
        })
    }

    fn check_name(&mut self, name: &Spanned<String>, what: &str) {
        if !is_name(&name.value) {
            let fixed = suggest_name(&name.value);
            let mut d = Diagnostic::new(
                Code::InvalidName,
                Some(name.span),
                format!("invalid {what} `{}`", name.value),
            );
            d = match fixed {
                Some(f) if f != name.value => d.help(format!(
                    "use 1 to 63 lowercase letters, digits, `-` and `.`, starting and ending with a letter or digit: did you mean `{f}`?"
                )),
                _ => d.help("use 1 to 63 lowercase letters, digits, `-` and `.`, starting and ending with a letter or digit"),
            };
            self.report(d);
        }
    }

    fn spec(&mut self, node: &Node, anchor: Span) -> Option<Spec> {
        let f = self.fields(node, anchor, "`spec`", SPEC_FIELDS)?;
        let mut spec = Spec::default();
        if let Some(n) = f.get("mode") {
            spec.mode = self.word(
                n,
                "`spec.mode`",
                &[("enforce", Mode::Enforce), ("audit", Mode::Audit)],
            );
        }
        if let Some(n) = f.get("defaultAction") {
            spec.default_action = self.word(
                n,
                "`spec.defaultAction`",
                &[("deny", Action::Deny), ("allow", Action::Allow)],
            );
        }
        if let Some(n) = f.get("tls") {
            let anchor = Self::key_span(&f, "tls").unwrap_or(n.span);
            if let Some(tls) = self.fields(n, anchor, "`spec.tls`", TLS_FIELDS) {
                if let Some(v) = tls.get("minVersion") {
                    spec.min_tls = self.tls_version(v);
                }
            }
        }
        if let Some(n) = f.get("peerCertificate") {
            let anchor = Self::key_span(&f, "peerCertificate").unwrap_or(n.span);
            self.peer_certificate(n, anchor, &mut spec);
        }
        if let Some(n) = f.get("revocation") {
            let anchor = Self::key_span(&f, "revocation").unwrap_or(n.span);
            self.revocation(n, anchor, &mut spec);
        }
        if let Some(n) = f.get("rules") {
            if let Some(items) = self.list(n, "`spec.rules`") {
                for item in items {
                    if let Some(rule) = self.rule(item) {
                        spec.rules.push(rule);
                    }
                }
            }
        }
        if let Some(n) = f.get("audit") {
            let anchor = Self::key_span(&f, "audit").unwrap_or(n.span);
            if let Some(a) = self.fields(n, anchor, "`spec.audit`", AUDIT_FIELDS) {
                if let Some(v) = a.get("log") {
                    spec.audit_log = self.word(
                        v,
                        "`spec.audit.log`",
                        &[
                            ("all", AuditLog::All),
                            ("deny", AuditLog::Deny),
                            ("none", AuditLog::None),
                        ],
                    );
                }
            }
        }
        Some(spec)
    }

    fn tls_version(&mut self, node: &Node) -> Option<Spanned<TlsVersion>> {
        let s = self.scalar_text(node, "`spec.tls.minVersion`")?;
        match TlsVersion::parse(&s.value) {
            Some(v) if v < TlsVersion::V1_2 => {
                self.error(
                    Code::TlsVersionTooLow,
                    s.span,
                    format!(
                        "TLS `{}` is below the lowest version certgate accepts",
                        s.value
                    ),
                )
                .help = Some(
                    "TLS 1.0 and 1.1 are deprecated (RFC 8996): use `\"1.2\"` or `\"1.3\"`".into(),
                );
                None
            }
            Some(v) => Some(Spanned::new(v, s.span)),
            None => {
                self.error(
                    Code::InvalidValue,
                    s.span,
                    format!(
                        "`spec.tls.minVersion` must be `\"1.2\"` or `\"1.3\"`, found `{}`",
                        s.value
                    ),
                )
                .help = Some("write the version as a quoted string: `minVersion: \"1.3\"`".into());
                None
            }
        }
    }

    fn peer_certificate(&mut self, node: &Node, anchor: Span, spec: &mut Spec) {
        let Some(f) = self.fields(node, anchor, "`spec.peerCertificate`", PEER_FIELDS) else {
            return;
        };
        if let Some(n) = f.get("trustDomains") {
            let what = "`spec.peerCertificate.trustDomains`";
            for item in self.nonempty_list(n, what).unwrap_or_default() {
                let Some(td) = self.string(item, "a trust domain") else {
                    continue;
                };
                match ruleset::spiffe::validate_trust_domain(&td.value) {
                    Ok(()) => spec.trust_domains.push(td),
                    Err(e) => {
                        let mut d = Diagnostic::new(
                            Code::InvalidTrustDomain,
                            Some(td.span),
                            format!("invalid trust domain `{}`: {e}", td.value),
                        );
                        d = match fix_trust_domain(&td.value) {
                            Some(f) => d.help(format!("did you mean `{f}`?")),
                            None => d.help("a trust domain is lowercase letters, digits, `.`, `-` and `_`, such as `cluster.local`"),
                        };
                        self.report(d);
                    }
                }
            }
        }
        if let Some(n) = f.get("maxLifetime") {
            if let Some(s) = self.scalar_text(n, "`spec.peerCertificate.maxLifetime`") {
                match crate::duration::parse(&s.value) {
                    Ok(secs) => spec.max_lifetime = Some(Spanned::new(secs, s.span)),
                    Err(e) => {
                        self.error(
                            Code::InvalidDuration,
                            s.span,
                            format!("invalid duration `{}`: {e}", s.value),
                        )
                        .help = Some("write a number and a unit: `90s`, `30m`, `24h` or `90d` (sums such as `1d12h` work too)".into());
                    }
                }
            }
        }
        if let Some(n) = f.get("keys") {
            let anchor = Self::key_span(&f, "keys").unwrap_or(n.span);
            if let Some(k) = self.fields(n, anchor, "`spec.peerCertificate.keys`", KEYS_FIELDS) {
                let mut keys = KeyPolicy::default();
                let mut ok = true;
                if let Some(v) = k.get("rsaMinBits") {
                    match v.kind {
                        Kind::Int(bits) if (1..=16_384).contains(&bits) => {
                            keys.rsa_min_bits = u32::try_from(bits).ok();
                            spec.rsa_min_bits_span = Some(v.span);
                        }
                        Kind::Int(bits) => {
                            ok = false;
                            self.error(
                                Code::InvalidValue,
                                v.span,
                                format!("`rsaMinBits` must be between 1 and 16384, found `{bits}`"),
                            )
                            .help = Some(
                                "use `2048` or more; remove the field to forbid RSA keys".into(),
                            );
                        }
                        _ => {
                            ok = false;
                            self.wrong_type(
                                v,
                                "`spec.peerCertificate.keys.rsaMinBits`",
                                "an integer",
                            );
                        }
                    }
                }
                if let Some(v) = k.get("ecdsaCurves") {
                    let what = "`spec.peerCertificate.keys.ecdsaCurves`";
                    for item in self.list(v, what).unwrap_or_default() {
                        let words = [
                            ("P-256", Curve::P256),
                            ("P-384", Curve::P384),
                            ("P-521", Curve::P521),
                        ];
                        match self.word(item, "an ECDSA curve", &words) {
                            Some(c) if !keys.ecdsa_curves.contains(&c.value) => {
                                keys.ecdsa_curves.push(c.value)
                            }
                            Some(_) => {}
                            None => ok = false,
                        }
                    }
                    keys.ecdsa_curves.sort();
                }
                if let Some(v) = k.get("ed25519") {
                    match self.boolean(v, "`spec.peerCertificate.keys.ed25519`") {
                        Some(b) => keys.ed25519 = b,
                        None => ok = false,
                    }
                }
                if ok {
                    spec.keys = Some(Spanned::new(keys, n.span));
                }
            }
        }
        if let Some(n) = f.get("forbidSignatureAlgorithms") {
            let what = "`spec.peerCertificate.forbidSignatureAlgorithms`";
            let words = [
                ("md5", SigHash::Md5),
                ("sha1", SigHash::Sha1),
                ("sha224", SigHash::Sha224),
                ("sha256", SigHash::Sha256),
                ("sha384", SigHash::Sha384),
                ("sha512", SigHash::Sha512),
            ];
            for item in self.list(n, what).unwrap_or_default() {
                if let Some(h) = self.word(item, "a signature hash", &words) {
                    spec.forbid_signatures.push(h);
                }
            }
        }
    }

    fn revocation(&mut self, node: &Node, anchor: Span, spec: &mut Spec) {
        let Some(f) = self.fields(node, anchor, "`spec.revocation`", REVOCATION_FIELDS) else {
            return;
        };
        if let Some(n) = f.get("crls") {
            for item in self.list(n, "`spec.revocation.crls`").unwrap_or_default() {
                if let Some(path) = self.string(item, "a CRL path") {
                    spec.crls.push(CrlRef { path, crl: None });
                }
            }
        }
        if let Some(n) = f.get("crlUrls") {
            spec.crl_urls_span = Some(Self::key_span(&f, "crlUrls").unwrap_or(n.span));
            self.crl_urls(n, spec);
        }
        if let Some(n) = f.get("onStale") {
            spec.on_stale = self.word(
                n,
                "`spec.revocation.onStale`",
                &[("deny", OnStale::Deny), ("keep", OnStale::Keep)],
            );
        }
        if let Some(n) = f.get("maxAge") {
            if let Some(s) = self.scalar_text(n, "`spec.revocation.maxAge`") {
                match crate::duration::parse(&s.value) {
                    Ok(secs) => spec.max_age = Some(Spanned::new(secs, s.span)),
                    Err(e) => {
                        self.error(
                            Code::InvalidDuration,
                            s.span,
                            format!("invalid `maxAge` `{}`: {e}", s.value),
                        )
                        .help = Some("write how long a compiled table's revocation data stays current, as a number and a unit: `6h`, `1d`, `7d`".into());
                    }
                }
            }
        }
        if let Some(n) = f.get("crlIssuers") {
            spec.crl_issuers = self.cert_files(n, "`spec.revocation.crlIssuers`");
        }
        if let Some(n) = f.get("caCertificates") {
            spec.ca_certificates = self.cert_files(n, "`spec.revocation.caCertificates`");
        }
        if let Some(n) = f.get("certificates") {
            spec.certificates = self.cert_files(n, "`spec.revocation.certificates`");
        }
        if let Some(n) = f.get("issuers") {
            spec.issuers = self.cert_files(n, "`spec.revocation.issuers`");
        }
        if let Some(n) = f.get("publicKeys") {
            for item in self
                .list(n, "`spec.revocation.publicKeys`")
                .unwrap_or_default()
            {
                let Some(value) = self.string(item, "a public key file or SPKI SHA-256") else {
                    continue;
                };
                let digest = ruleset::cert::parse_fingerprint(&value.value);
                spec.public_keys.push(KeyRef {
                    value,
                    is_digest: digest.is_some(),
                    keys: digest.into_iter().collect(),
                });
            }
        }
        if let Some(n) = f.get("serials") {
            for item in self
                .list(n, "`spec.revocation.serials`")
                .unwrap_or_default()
            {
                if let Some(s) = self.revoked_serial(item) {
                    spec.serials.push(s);
                }
            }
        }
        if let Some(n) = f.get("sha256Fingerprints") {
            // Refused, not converted: a whole-certificate digest cannot be turned into
            // what the CA signed, and matching it would let a re-encoded copy through.
            let span = Self::key_span(&f, "sha256Fingerprints").unwrap_or(n.span);
            self.error(
                Code::WholeCertificateFingerprint,
                span,
                "`sha256Fingerprints` no longer revokes anything: the holder of a certificate can re-encode it (an ECDSA signature's `s` as `n - s`) and get a valid copy with another SHA-256".into(),
            )
            .help = Some("revoke the certificate itself with `revocation.certificates: [FILE]` (every encoding of it is caught), or its key with `revocation.publicKeys: [FILE or SPKI SHA-256]`; `certgate cert FILE` prints both keys".into());
        }
    }

    /// `spec.revocation.crlUrls`: each URL checked here, so a malformed one is never fetched;
    /// the CRLs themselves are fetched later, through the loader.
    fn crl_urls(&mut self, node: &Node, spec: &mut Spec) {
        let mut seen: Vec<(String, Span)> = Vec::new();
        for item in self
            .list(node, "`spec.revocation.crlUrls`")
            .unwrap_or_default()
        {
            let Some(url) = self.string(item, "a CRL URL") else {
                continue;
            };
            match crate::crl::check_url(&url.value) {
                Err(crate::crl::UrlError::Scheme(scheme)) => {
                    let d = Diagnostic::new(
                        Code::CrlUrlScheme,
                        Some(url.span),
                        format!("CRL URL `{}` has the unsupported scheme `{scheme}`", url.value),
                    )
                    .label("not http or https")
                    .help("give an `http://` or `https://` URL of the CRL (its issuer's CRL distribution point); a CRL on disk goes in `crls`");
                    self.report(d);
                }
                Err(crate::crl::UrlError::Malformed(why)) => {
                    let d = Diagnostic::new(
                        Code::InvalidCrlUrl,
                        Some(url.span),
                        format!("CRL URL `{}` is malformed: {why}", url.value),
                    )
                    .label("not a fetchable URL")
                    .help("write an absolute URL such as `http://ca.example/intermediate.crl`, with no credentials, fragment or spaces");
                    self.report(d);
                }
                Ok(key) => {
                    if let Some((_, first)) = seen.iter().find(|(k, _)| *k == key) {
                        let first = *first;
                        let d = Diagnostic::new(
                            Code::DuplicateCrlUrl,
                            Some(url.span),
                            format!("CRL URL `{}` is listed twice", url.value),
                        )
                        .label("duplicate")
                        .related(first, "first listed here")
                        .help("remove one of the two entries");
                        self.report(d);
                        continue;
                    }
                    seen.push((key, url.span));
                    spec.crl_urls.push(CrlRef {
                        path: url,
                        crl: None,
                    });
                }
            }
        }
    }

    /// A list of certificate file paths (read later, through the loader).
    fn cert_files(&mut self, node: &Node, what: &str) -> Vec<CaRef> {
        let mut out = Vec::new();
        for item in self.list(node, what).unwrap_or_default() {
            if let Some(path) = self.string(item, "a certificate file path") {
                out.push(CaRef {
                    path,
                    certs: Vec::new(),
                });
            }
        }
        out
    }

    fn revoked_serial(&mut self, item: &Node) -> Option<Spanned<RevokedSerial>> {
        let (serial_node, issuer_node) = match &item.kind {
            Kind::Map(_) => {
                let f = self.fields(item, item.span, "a revoked serial", SERIAL_FIELDS)?;
                (
                    self.required(&f, "serial", "a revoked serial")?,
                    f.get("issuer"),
                )
            }
            _ => (item, None),
        };
        let serial_text = self.scalar_text(serial_node, "`serial`")?;
        let serial = match ruleset::cert::parse_serial(&serial_text.value) {
            Ok(s) => Some(s),
            Err(e) => {
                self.error(
                    Code::InvalidSerial,
                    serial_text.span,
                    format!("invalid serial number `{}`: {e}", serial_text.value),
                )
                .help = Some("write the serial in hexadecimal, as `4f:38:0a`, `4F380A` or `0x4f380a`, and quote it; a negative serial as OpenSSL prints it, `-4F380A`".into());
                None
            }
        };
        let issuer = match issuer_node {
            None => Some(None),
            Some(n) => {
                let text = self.string(n, "`issuer`")?;
                match ruleset::dn::parse_dn_string(&text.value) {
                    Ok(id) => Some(Some(id)),
                    Err(e) => {
                        self.error(
                            Code::InvalidIssuer,
                            text.span,
                            format!("invalid issuer name `{}`: {e}", text.value),
                        )
                        .help = Some("write the issuer as an RFC 4514 name, such as `CN=Intermediate CA,O=Example`; `certgate cert FILE` prints it".into());
                        None
                    }
                }
            }
        };
        Some(Spanned::new(
            RevokedSerial {
                issuer: issuer?,
                serial: serial?,
            },
            item.span,
        ))
    }

    fn rule(&mut self, node: &Node) -> Option<RuleSpec> {
        // Read the name first so every other finding can say which rule it is about.
        let name_node = match &node.kind {
            Kind::Map(m) => m
                .iter()
                .find(|(k, _)| k.kind == Kind::Str("name".into()))
                .map(|(_, v)| v),
            _ => None,
        };
        let label = match name_node.map(|n| &n.kind) {
            Some(Kind::Str(s)) => format!("rule `{s}`"),
            _ => "a rule".to_string(),
        };
        let f = self.fields(node, first_key_span(node), &label, RULE_FIELDS)?;
        let name = self
            .required(&f, "name", &label)
            .and_then(|n| self.string(n, "a rule name"));
        if let Some(n) = &name {
            self.check_name(n, "rule name");
        }
        let action = self.required(&f, "action", &label).and_then(|n| {
            self.word(
                n,
                &format!("`action` of {label}"),
                &[("allow", Action::Allow), ("deny", Action::Deny)],
            )
        });
        let mut ok = true;
        let mut principals = None;
        if let Some(n) = f.get("principals") {
            let what = format!("`principals` of {label}");
            match self.nonempty_list(n, &what) {
                Some(items) => {
                    let mut v = Vec::new();
                    for item in items {
                        match self.principal(item) {
                            Some(p) => v.push(p),
                            None => ok = false,
                        }
                    }
                    principals = Some(v);
                }
                None => ok = false,
            }
        }
        let mut not_principals = Vec::new();
        if let Some(n) = f.get("notPrincipals") {
            let what = format!("`notPrincipals` of {label}");
            for item in self.list(n, &what).unwrap_or_default() {
                match self.principal(item) {
                    Some(p) => not_principals.push(p),
                    None => ok = false,
                }
            }
        }
        let mut ports = Vec::new();
        if let Some(n) = f.get("ports") {
            let what = format!("`ports` of {label}");
            match self.nonempty_list(n, &what) {
                Some(items) => {
                    for item in items {
                        match self.port_range(item) {
                            Some(p) => ports.push(p),
                            None => ok = false,
                        }
                    }
                }
                None => ok = false,
            }
        }
        let mut sni = Vec::new();
        if let Some(n) = f.get("sni") {
            let what = format!("`sni` of {label}");
            match self.nonempty_list(n, &what) {
                Some(items) => {
                    for item in items {
                        match self.server_name(item) {
                            Some(p) => sni.push(p),
                            None => ok = false,
                        }
                    }
                }
                None => ok = false,
            }
        }
        let mut source_cidrs = Vec::new();
        if let Some(n) = f.get("sourceCidrs") {
            let what = format!("`sourceCidrs` of {label}");
            match self.nonempty_list(n, &what) {
                Some(items) => {
                    for item in items {
                        match self.cidr(item) {
                            Some(p) => source_cidrs.push(p),
                            None => ok = false,
                        }
                    }
                }
                None => ok = false,
            }
        }
        // A rule with a broken condition is dropped rather than compiled without it: an
        // error is reported, so no table is written anyway.
        if !ok {
            return None;
        }
        Some(RuleSpec {
            span: node.span,
            name: name?,
            action: action?,
            principals,
            not_principals,
            ports,
            sni,
            source_cidrs,
        })
    }

    fn principal(&mut self, node: &Node) -> Option<Spanned<Pattern>> {
        let s = self.string(node, "a principal")?;
        let wildcard = s.value.contains('*');
        let checked = if wildcard {
            Pattern::parse(&s.value)
        } else {
            ruleset::spiffe::validate_id(&s.value).and_then(|()| Pattern::parse(&s.value))
        };
        match checked {
            Ok(p) => Some(Spanned::new(p, s.span)),
            Err(e) => {
                let (code, what) = if wildcard {
                    (Code::InvalidPattern, "principal pattern")
                } else {
                    (Code::InvalidSpiffeId, "SPIFFE ID")
                };
                let mut d = Diagnostic::new(
                    code,
                    Some(s.span),
                    format!("invalid {what} `{}`: {e}", s.value),
                );
                d = match fix_spiffe_id(&s.value) {
                    Some(f) if Pattern::parse(&f).is_ok() => d.help(format!("did you mean `{f}`?")),
                    _ if wildcard => d.help("`*` stands for exactly one whole path segment and `**`, as the last segment only, for one or more: `spiffe://cluster.local/ns/*/sa/web`, `spiffe://cluster.local/ns/legacy/**`"),
                    _ => d.help("a SPIFFE ID is `spiffe://` + a lowercase trust domain + a path of non-empty segments of letters, digits, `.`, `-` and `_`, such as `spiffe://cluster.local/ns/frontend/sa/web`"),
                };
                self.report(d);
                None
            }
        }
    }

    fn port_range(&mut self, node: &Node) -> Option<Spanned<PortRange>> {
        let help = "write a port from 1 to 65535, such as `8443`, or an inclusive range such as `\"8000-8100\"`";
        let text = self.scalar_text(node, "a port")?;
        let parsed = match text.value.split_once('-') {
            Some((a, b)) => parse_port(a.trim()).zip(parse_port(b.trim())),
            None => parse_port(text.value.trim()).map(|p| (p, p)),
        };
        match parsed {
            Some((start, end)) if start <= end => {
                Some(Spanned::new(PortRange { start, end }, text.span))
            }
            Some((start, end)) => {
                self.error(
                    Code::InvalidPort,
                    text.span,
                    format!("port range `{}` ends before it starts", text.value),
                )
                .help = Some(format!("did you mean `\"{end}-{start}\"`?"));
                None
            }
            None => {
                self.error(
                    Code::InvalidPort,
                    text.span,
                    format!("invalid port `{}`", text.value),
                )
                .help = Some(help.into());
                None
            }
        }
    }

    fn server_name(&mut self, node: &Node) -> Option<Spanned<String>> {
        let s = self.string(node, "a server name")?;
        if ruleset::sni::is_valid_pattern(&s.value) {
            return Some(s);
        }
        let lower = s.value.to_ascii_lowercase();
        let help = if lower != s.value && ruleset::sni::is_valid_pattern(&lower) {
            format!("server names are matched in lowercase: did you mean `{lower}`?")
        } else {
            "write a DNS name such as `api.example.com`, or `*.example.com` for any one label in front of `example.com`".into()
        };
        self.error(
            Code::InvalidSni,
            s.span,
            format!("invalid server name `{}`", s.value),
        )
        .help = Some(help);
        None
    }

    fn cidr(&mut self, node: &Node) -> Option<Spanned<Cidr>> {
        let s = self.string(node, "a source CIDR")?;
        match Cidr::parse(&s.value) {
            Ok(cidr) => Some(Spanned::new(cidr, s.span)),
            Err(CidrError::Invalid) => {
                self.error(
                    Code::InvalidCidr,
                    s.span,
                    format!("invalid source CIDR `{}`", s.value),
                )
                .help = Some(
                    "write an address block such as `10.0.0.0/8` or `fd00::/8`, or a single address"
                        .into(),
                );
                None
            }
            Err(CidrError::HostBits { network }) => {
                self.error(
                    Code::InvalidCidr,
                    s.span,
                    format!("source CIDR `{}` has host bits set", s.value),
                )
                .help = Some(format!("did you mean `{network}`?"));
                None
            }
            // A reason ruleset adds later: refused all the same, with its own wording.
            Err(other) => {
                self.error(
                    Code::InvalidCidr,
                    s.span,
                    format!("invalid source CIDR `{}`: {other}", s.value),
                )
                .help = Some("write an address block such as `10.0.0.0/8` or `fd00::/8`".into());
                None
            }
        }
    }
}

fn first_key_span(node: &Node) -> Span {
    match &node.kind {
        Kind::Map(m) => m.first().map_or(node.span, |(k, _)| k.span),
        _ => node.span,
    }
}

fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u16>().ok().filter(|p| *p != 0)
}

/// Policy and rule names: 1 to 63 of `[a-z0-9.-]`, starting and ending alphanumeric.
pub(crate) fn is_name(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'.')
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

fn suggest_name(s: &str) -> Option<String> {
    let f: String = s
        .trim()
        .chars()
        .map(|c| match c {
            'A'..='Z' => c.to_ascii_lowercase(),
            '_' | ' ' => '-',
            c => c,
        })
        .collect();
    let f = f.trim_matches(|c: char| c == '-' || c == '.').to_string();
    is_name(&f).then_some(f)
}

fn fix_trust_domain(s: &str) -> Option<String> {
    let f = s
        .trim()
        .trim_start_matches("spiffe://")
        .trim_end_matches('/')
        .to_ascii_lowercase();
    (f != s && ruleset::spiffe::validate_trust_domain(&f).is_ok()).then_some(f)
}

/// A likely intended form of a malformed SPIFFE ID: scheme added, trust domain lowercased,
/// trailing and doubled slashes removed.
fn fix_spiffe_id(s: &str) -> Option<String> {
    let s = s.trim();
    let rest = s
        .strip_prefix("spiffe://")
        .or_else(|| s.strip_prefix("SPIFFE://"))
        .or_else(|| s.strip_prefix("spiffe:/"))
        .unwrap_or(s);
    let mut parts = rest.split('/').filter(|p| !p.is_empty());
    let td = parts.next()?.to_ascii_lowercase();
    let path: Vec<&str> = parts.collect();
    let fixed = if path.is_empty() {
        format!("spiffe://{td}")
    } else {
        format!("spiffe://{td}/{}", path.join("/"))
    };
    (fixed != s).then_some(fixed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_name("payments-inbound"));
        assert!(is_name("a.b-1"));
        assert!(!is_name("Payments"));
        assert!(!is_name("-x"));
        assert!(!is_name(""));
        assert_eq!(
            suggest_name("Allow_Frontend").as_deref(),
            Some("allow-frontend")
        );
    }

    #[test]
    fn spiffe_fixes() {
        assert_eq!(
            fix_spiffe_id("spiffe://Cluster.Local/ns/a//sa/b/").as_deref(),
            Some("spiffe://cluster.local/ns/a/sa/b")
        );
        assert_eq!(
            fix_spiffe_id("cluster.local/ns/a").as_deref(),
            Some("spiffe://cluster.local/ns/a")
        );
    }
}
