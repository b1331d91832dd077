//! The browser playground's entry points: the compiler, the table inspector, the
//! certificate reader and the decision engine, exported through wasm-bindgen (on a native
//! target they are plain functions, so native tests cover them). Each function takes and returns JSON text, so the JavaScript side needs
//! no generated types and every error reaches the page as data, never as an exception.
//!
//! These are thin adapters over the same code the CLI runs ([`certgate_compiler::compile`],
//! [`certgate_compiler::diag::report`], [`certgate_compiler::inspect`], [`ruleset::cert::parse_pem_or_der`],
//! [`ruleset::Engine::evaluate`]); the playground's browser test checks that its decisions
//! and tables equal `certgate eval`'s and `certgate compile`'s.

#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::collections::BTreeMap;

use ruleset::{Engine, Peer};
use serde::Deserialize;
use serde_json::{json, Value};
use wasm_bindgen::prelude::wasm_bindgen;

use certgate_compiler::{Input, Loader, Options};

/// The version of the JSON shapes these functions return.
pub const VERSION: u32 = 1;

/// One policy file handed in by the page.
#[derive(Debug, Deserialize)]
struct PolicyFile {
    path: String,
    text: String,
}

/// What `compile` and `check` read.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CompileRequest {
    /// The policy files, in order.
    policies: Vec<PolicyFile>,
    /// Other files the policies name (CRLs, as PEM text), by path relative to the
    /// policies' directory.
    #[serde(default)]
    files: BTreeMap<String, String>,
    /// Seconds since the Unix epoch (for "CRL past its nextUpdate").
    #[serde(default)]
    now: i64,
    /// Count warnings as failures in `report.summary.ok`.
    #[serde(default)]
    deny_warnings: bool,
}

/// What `eval` reads: the same peer facts as `certgate eval`'s flags.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PeerRequest {
    /// The peer's certificate (PEM; the first certificate is the leaf). Takes precedence
    /// over `identity`, as `--cert` does.
    cert: Option<String>,
    /// A SPIFFE ID for a what-if evaluation without a certificate.
    identity: Option<String>,
    /// `1.2` or `1.3`.
    tls_version: Option<String>,
    port: Option<u16>,
    sni: Option<String>,
    source_ip: Option<String>,
}

/// Serves CRLs from the files the page handed in.
struct MapLoader<'a>(&'a BTreeMap<String, String>);

impl Loader for MapLoader<'_> {
    fn load(&self, policy: &Input, path: &str) -> Result<Vec<u8>, String> {
        // Relative to the policy, as the CLI's file-system loader resolves it.
        let dir = policy.path.rsplit_once('/').map_or("", |(d, _)| d);
        let joined = if dir.is_empty() || path.starts_with('/') {
            path.to_string()
        } else {
            format!("{dir}/{path}")
        };
        let normal: Vec<&str> = joined
            .split('/')
            .filter(|s| !s.is_empty() && *s != ".")
            .collect();
        self.0
            .get(&normal.join("/"))
            .map(|t| t.as_bytes().to_vec())
            .ok_or_else(|| "no such file in the playground".to_string())
    }
}

fn error(message: impl Into<String>) -> String {
    json!({"version": VERSION, "error": message.into()}).to_string()
}

/// The compilation and whether warnings count as failures.
fn run_compile(request: &str) -> Result<(certgate_compiler::Compilation, bool), String> {
    let req: CompileRequest =
        serde_json::from_str(request).map_err(|e| format!("bad request: {e}"))?;
    let inputs = req
        .policies
        .into_iter()
        .map(|p| Input::new(p.path, p.text))
        .collect();
    let mut c =
        certgate_compiler::compile(inputs, &MapLoader(&req.files), &Options { now: req.now });
    // Issued now, as `certgate compile` would (the expiry then counts `maxAge` from it).
    c.stamp(u64::try_from(req.now).unwrap_or(0).saturating_mul(1000))
        .map_err(|e| format!("the table cannot be encoded: {e}"))?;
    Ok((c, req.deny_warnings))
}

/// The diagnostics report of `certgate check --format json`, with each diagnostic's
/// `label` (the short text under the offending span) added for the editor.
fn report_json(c: &certgate_compiler::Compilation, deny_warnings: bool) -> Value {
    let mut report =
        serde_json::to_value(certgate_compiler::diag::report::report(c, deny_warnings))
            .unwrap_or(Value::Null);
    if let Some(list) = report.get_mut("diagnostics").and_then(Value::as_array_mut) {
        for (d, source) in list.iter_mut().zip(&c.diagnostics) {
            if let Some(obj) = d.as_object_mut() {
                obj.insert("label".into(), json!(source.label));
            }
        }
    }
    report
}

/// Checks policies: `{policies: [{path, text}], files?: {path: text}, now?, denyWarnings?}`
/// in, `{version, report}` out, where `report` is `certgate check --format json`'s report
/// (every diagnostic with `file`, `line`, `column`, `endLine`, `endColumn`, `help`,
/// `label` and `related` locations). A malformed request gives `{version, error}`.
#[wasm_bindgen]
pub fn check(request: &str) -> String {
    match run_compile(request) {
        Err(e) => error(e),
        Ok((c, deny_warnings)) => json!({
            "version": VERSION,
            "report": report_json(&c, deny_warnings),
        })
        .to_string(),
    }
}

/// Compiles policies: `check`'s request in; `check`'s answer plus the table out, when
/// there is no error: `table` (`certgate inspect --format json`), `tableText` (the text
/// `certgate inspect` prints) and `tableHex` (the encoded table, byte for byte what
/// `certgate compile` writes for the same file names, texts and CRLs).
#[wasm_bindgen]
pub fn compile(request: &str) -> String {
    let (c, deny_warnings) = match run_compile(request) {
        Err(e) => return error(e),
        Ok(r) => r,
    };
    let (table, text, hex) = match (&c.table, &c.bytes) {
        (Some(t), Some(b)) => (
            certgate_compiler::inspect::to_json(t, b.len()),
            json!(certgate_compiler::inspect::to_text(t, b.len())),
            json!(ruleset::cert::hex_lower(b)),
        ),
        _ => (Value::Null, Value::Null, Value::Null),
    };
    json!({
        "version": VERSION,
        "report": report_json(&c, deny_warnings),
        "table": table,
        "tableText": text,
        "tableHex": hex,
    })
    .to_string()
}

/// What an encoded table holds: `{version, table, tableText}` as `certgate inspect`
/// shows it, or `{version, error}` when the bytes are not a valid table.
#[wasm_bindgen]
pub fn inspect_table(table: &[u8]) -> String {
    match ruleset::decode(table) {
        Err(e) => error(format!("not a valid certgate table: {e}")),
        Ok(t) => json!({
            "version": VERSION,
            "table": certgate_compiler::inspect::to_json(&t, table.len()),
            "tableText": certgate_compiler::inspect::to_text(&t, table.len()),
        })
        .to_string(),
    }
}

/// The facts certgate reads from a PEM bundle: `{version, certificates}` as
/// `certgate cert --format json` prints them, or `{version, error}`.
#[wasm_bindgen]
pub fn inspect_cert(pem: &str) -> String {
    match ruleset::cert::parse_pem_or_der(pem.as_bytes()) {
        Err(e) => error(format!("not a certificate: {e}")),
        Ok(certs) => json!({
            "version": VERSION,
            "certificates": certs.iter().map(certgate_compiler::certinfo::to_json).collect::<Vec<_>>(),
        })
        .to_string(),
    }
}

fn peer(req: PeerRequest) -> Result<Peer, String> {
    let mut builder = ruleset::PeerBuilder::new()
        .identity(req.identity)
        .port(req.port)
        .sni(req.sni)
        .tls_version_text(req.tls_version.as_deref())
        .and_then(|b| b.source_ip_text(req.source_ip.as_deref()))
        .map_err(|e| e.to_string())?;
    if let Some(pem) = req.cert.filter(|c| !c.trim().is_empty()) {
        builder = builder
            .cert_pem_or_der(pem.as_bytes())
            .map_err(|e| format!("the certificate field {e}"))?;
    }
    builder.build().map_err(|e| e.to_string())
}

/// The decision an encoded table makes for one peer, through the engine the filter runs:
/// `{cert?, identity?, tlsVersion?, port?, sni?, sourceIp?}` in (as `certgate eval`'s
/// flags), `{version, action, reason, rule, policy, mode, identity, admitted}` out, where
/// the first six are what `certgate eval` prints and `admitted` says whether the host
/// lets the connection through (every decision in audit mode). Bad input gives
/// `{version, error}`.
#[wasm_bindgen]
pub fn evaluate(table: &[u8], request: &str) -> String {
    let engine = match Engine::from_bytes(table) {
        Ok(e) => e,
        Err(e) => return error(format!("not a valid certgate table: {e}")),
    };
    let req: PeerRequest = match serde_json::from_str(request) {
        Ok(r) => r,
        Err(e) => return error(format!("bad request: {e}")),
    };
    let peer = match peer(req) {
        Ok(p) => p,
        Err(e) => return error(e),
    };
    let d = engine.evaluate(&peer);
    json!({
        "version": VERSION,
        "action": d.action.as_str(),
        "reason": d.reason.code(),
        "rule": d.rule,
        "policy": d.policy,
        "mode": d.mode.as_str(),
        "identity": d.identity,
        "admitted": d.admits(),
    })
    .to_string()
}

/// The compiler's version, shown on the page.
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

/// Every reason code the engine decides with, and its one-sentence description
/// (`ruleset::Reason::description`): `{version, reasons: {code: description}}`. The page
/// explains a decision with these, so it holds no copy of them.
#[wasm_bindgen]
pub fn reasons() -> String {
    let reasons: serde_json::Map<String, Value> = ruleset::Reason::ALL
        .iter()
        .map(|r| (r.code().to_string(), Value::from(r.description())))
        .collect();
    json!({ "version": VERSION, "reasons": reasons }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_the_engines() {
        let v = parse(&reasons());
        let listed = v["reasons"].as_object().unwrap();
        assert_eq!(listed.len(), ruleset::Reason::ALL.len());
        for r in ruleset::Reason::ALL {
            assert_eq!(listed[r.code()], r.description());
        }
    }

    const POLICY: &str = "apiVersion: certgate.dev/v1alpha1\nkind: MeshTLSPolicy\nmetadata: {name: p}\nspec:\n  rules:\n    - {name: web, action: allow, principals: [spiffe://cluster.local/ns/web/sa/web]}\n";

    fn parse(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    fn compiled(policy: &str) -> Value {
        let req = json!({"policies": [{"path": "p.yaml", "text": policy}]});
        parse(&compile(&req.to_string()))
    }

    fn table_bytes(v: &Value) -> Vec<u8> {
        let hex = v["tableHex"].as_str().unwrap();
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn compile_gives_table_and_decisions_follow_it() {
        let v = compiled(POLICY);
        assert_eq!(v["report"]["summary"]["ok"], true);
        assert_eq!(v["table"]["rules"][0]["name"], "web");
        let bytes = table_bytes(&v);
        let allow = parse(&evaluate(
            &bytes,
            r#"{"identity":"spiffe://cluster.local/ns/web/sa/web"}"#,
        ));
        assert_eq!(allow["action"], "allow");
        assert_eq!(allow["rule"], "web");
        assert_eq!(allow["admitted"], true);
        let deny = parse(&evaluate(
            &bytes,
            r#"{"identity":"spiffe://cluster.local/ns/db/sa/db","tlsVersion":"1.3","port":8443}"#,
        ));
        assert_eq!(deny["reason"], "default_deny");
    }

    #[test]
    fn errors_carry_spans_help_and_labels() {
        let v = compiled(&POLICY.replace("principals", "principal"));
        assert!(v["table"].is_null());
        let diags = v["report"]["diagnostics"].as_array().unwrap();
        let d = diags
            .iter()
            .find(|d| d["code"] == "certgate::unknown-field")
            .unwrap();
        assert_eq!(d["line"], 6);
        assert_eq!(d["endLine"], 6);
        assert!(d["column"].as_u64().unwrap() < d["endColumn"].as_u64().unwrap());
        assert_eq!(d["help"], "did you mean `principals`?");
        assert!(d["label"].is_string());
    }

    #[test]
    fn crls_resolve_relative_to_the_policy() {
        let crl = include_str!("../../policies/crl/intermediate.crl.pem");
        let policy = POLICY.replace("  rules:", "  revocation: {crls: [./crl/ca.pem]}\n  rules:");
        let req = json!({
            "policies": [{"path": "dir/p.yaml", "text": policy}],
            "files": {"dir/crl/ca.pem": crl},
        });
        let v = parse(&compile(&req.to_string()));
        assert_eq!(v["report"]["summary"]["ok"], true, "{v}");
        assert_eq!(v["table"]["revocation"]["serials"], 1);
        let missing = json!({"policies": [{"path": "p.yaml", "text": policy}]});
        let v = parse(&check(&missing.to_string()));
        assert_eq!(
            v["report"]["diagnostics"][0]["code"],
            "certgate::crl-unreadable"
        );
    }

    #[test]
    fn bad_input_is_an_error_value() {
        assert!(parse(&compile("{")).get("error").is_some());
        assert!(parse(&evaluate(b"nope", "{}")).get("error").is_some());
        let bytes = table_bytes(&compiled(POLICY));
        for req in [
            r#"{}"#,
            r#"{"identity":"spiffe://a/b","tlsVersion":"1.4"}"#,
            r#"{"identity":"spiffe://a/b","sourceIp":"10.0.0"}"#,
            r#"{"cert":"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}"#,
        ] {
            assert!(
                parse(&evaluate(&bytes, req)).get("error").is_some(),
                "{req}"
            );
        }
        assert!(parse(&inspect_cert("hello")).get("error").is_some());
        assert!(parse(&inspect_table(b"")).get("error").is_some());
    }

    #[test]
    fn certificates_read_like_certgate_cert() {
        let pem = include_str!("../../compiler/tests/fixtures/web.pem");
        let v = parse(&inspect_cert(pem));
        let c = &v["certificates"][0];
        assert_eq!(c["spiffeId"], "spiffe://cluster.local/ns/web/sa/web");
        assert_eq!(c["key"]["algorithm"], "ECDSA");
        let bytes = table_bytes(&compiled(POLICY));
        let d = parse(&evaluate(&bytes, &json!({"cert": pem}).to_string()));
        assert_eq!(d["action"], "allow");
        assert_eq!(d["identity"], "spiffe://cluster.local/ns/web/sa/web");
    }
}
