//! The machine-readable diagnostics report (`--format json`). Its shape is a contract,
//! versioned by `version`; docs/cli.md documents it.

use serde::Serialize;

use crate::{Compilation, Diagnostic, Span};

/// The version of the JSON report schema.
pub const VERSION: u32 = 1;

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Schema version, [`VERSION`].
    pub version: u32,
    /// The findings, sorted by file and position.
    pub diagnostics: Vec<JsonDiagnostic>,
    /// Counts.
    pub summary: Summary,
}

/// One finding.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JsonDiagnostic {
    /// `error` or `warning` (as the compiler classifies it, before `--deny-warnings`).
    pub severity: &'static str,
    /// Stable code, such as `certgate::unknown-field`.
    pub code: &'static str,
    /// The message.
    pub message: String,
    /// What to do about it.
    pub help: Option<String>,
    /// Path of the policy file, `null` for findings about the whole input set.
    pub file: Option<String>,
    /// 1-based line of the start.
    pub line: Option<usize>,
    /// 1-based column (in characters) of the start.
    pub column: Option<usize>,
    /// 1-based line of the end.
    pub end_line: Option<usize>,
    /// 1-based column of the end (exclusive).
    pub end_column: Option<usize>,
    /// Other locations that explain the finding.
    pub related: Vec<JsonRelated>,
}

/// A secondary location.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JsonRelated {
    /// What is there.
    pub message: String,
    /// Path of the policy file.
    pub file: Option<String>,
    /// 1-based line.
    pub line: Option<usize>,
    /// 1-based column.
    pub column: Option<usize>,
    /// 1-based end line.
    pub end_line: Option<usize>,
    /// 1-based end column (exclusive).
    pub end_column: Option<usize>,
}

/// Counts over the run.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Number of errors.
    pub errors: usize,
    /// Number of warnings.
    pub warnings: usize,
    /// Number of policy files read.
    pub files: usize,
    /// Number of policy documents read.
    pub policies: usize,
    /// Number of rules compiled.
    pub rules: usize,
    /// Whether the run passed (no error; no warning either with `--deny-warnings`).
    pub ok: bool,
}

type Location = (
    Option<String>,
    Option<usize>,
    Option<usize>,
    Option<usize>,
    Option<usize>,
);

fn locate(c: &Compilation, span: Option<Span>) -> Location {
    match span.and_then(|s| c.locate(s)) {
        Some((file, start, end)) => (
            Some(file.to_string()),
            Some(start.line),
            Some(start.column),
            Some(end.line),
            Some(end.column),
        ),
        None => (None, None, None, None, None),
    }
}

fn one(c: &Compilation, d: &Diagnostic) -> JsonDiagnostic {
    let (file, line, column, end_line, end_column) = locate(c, d.span);
    JsonDiagnostic {
        severity: d.severity.as_str(),
        code: d.code.as_str(),
        message: d.message.clone(),
        help: d.help.clone(),
        file,
        line,
        column,
        end_line,
        end_column,
        related: d
            .related
            .iter()
            .map(|r| {
                let (file, line, column, end_line, end_column) = locate(c, Some(r.span));
                JsonRelated {
                    message: r.message.clone(),
                    file,
                    line,
                    column,
                    end_line,
                    end_column,
                }
            })
            .collect(),
    }
}

/// Builds the report for a compilation.
pub fn report(c: &Compilation, deny_warnings: bool) -> Report {
    Report {
        version: VERSION,
        diagnostics: c.diagnostics.iter().map(|d| one(c, d)).collect(),
        summary: Summary {
            errors: c.error_count(),
            warnings: c.warning_count(),
            files: c.inputs.len(),
            policies: c.policies.len(),
            rules: c.policies.iter().map(|p| p.spec.rules.len()).sum(),
            ok: !c.failed(deny_warnings),
        },
    }
}

/// The report as pretty-printed JSON.
pub fn to_json(c: &Compilation, deny_warnings: bool) -> String {
    serde_json::to_string_pretty(&report(c, deny_warnings)).unwrap_or_else(|e| {
        // Serialising plain strings and numbers cannot fail; keep the output valid JSON anyway.
        format!("{{\"version\":{VERSION},\"error\":\"{e}\"}}")
    })
}

/// The findings as a SARIF 2.1.0 log, for code-scanning services. Paths are as given on the
/// command line (relative paths stay relative, as SARIF consumers expect from the repository
/// root).
pub fn to_sarif(c: &Compilation) -> String {
    let r = report(c, false);
    let location = |file: &Option<String>, line, column, end_line, end_column| {
        serde_json::json!({
            "physicalLocation": {
                "artifactLocation": {"uri": file},
                "region": {"startLine": line, "startColumn": column, "endLine": end_line, "endColumn": end_column},
            }
        })
    };
    let results: Vec<serde_json::Value> = r
        .diagnostics
        .iter()
        .map(|d| {
            let text = match &d.help {
                Some(h) => format!("{}\nhelp: {h}", d.message),
                None => d.message.clone(),
            };
            let mut v = serde_json::json!({
                "ruleId": d.code,
                "level": d.severity,
                "message": {"text": text},
            });
            if d.file.is_some() {
                v["locations"] = serde_json::json!([location(
                    &d.file,
                    d.line,
                    d.column,
                    d.end_line,
                    d.end_column
                )]);
                v["relatedLocations"] = d
                    .related
                    .iter()
                    .enumerate()
                    .map(|(i, rel)| {
                        let mut l = location(
                            &rel.file,
                            rel.line,
                            rel.column,
                            rel.end_line,
                            rel.end_column,
                        );
                        l["id"] = serde_json::json!(i);
                        l["message"] = serde_json::json!({"text": rel.message});
                        l
                    })
                    .collect();
            }
            v
        })
        .collect();
    let rules: Vec<serde_json::Value> = crate::Code::ALL
        .iter()
        .map(|code| {
            serde_json::json!({
                "id": code.as_str(),
                "defaultConfiguration": {"level": code.severity().as_str()},
            })
        })
        .collect();
    sarif_log("certgate", rules, results)
}

/// A SARIF 2.1.0 log of one run of the tool `name`: the envelope the diagnostics here and
/// the compliance report (`certgate-report`) share, so code-scanning services see the same
/// schema, version and home page from both.
pub(crate) fn sarif_log(
    name: &str,
    rules: Vec<serde_json::Value>,
    results: Vec<serde_json::Value>,
) -> String {
    let log = serde_json::json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": name,
                "version": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://github.com/certgate/certgate",
                "rules": rules,
            }},
            "results": results,
        }],
    });
    serde_json::to_string_pretty(&log).unwrap_or_default()
}
