//! One test run's world: the located tools, a temporary directory, the PKI issued into
//! it, and helpers to compile a policy there and to check a client's outcome against
//! the access-log audit record and the `/stats` counters.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::certgate::Certgate;
use crate::client::Exchange;
use crate::envoy::Envoy;
use crate::pki::{standard_leaves, Pki};
use crate::tools::{repo_root, Tools};

/// The access-log member holding the filter's decision record, as text
/// (`certgate emit access-log`).
pub const DECISION_FIELD: &str = "certgate.decision";
/// The access-log member holding the client's `ip:port`.
pub const SOURCE_ADDRESS_FIELD: &str = "source.address";

/// A run: tools, a scratch directory (removed on drop) and the PKI in it.
#[derive(Debug)]
pub struct Run {
    /// The parts under test.
    pub tools: Tools,
    /// The CLI.
    pub certgate: Certgate,
    /// The scratch directory.
    pub dir: tempfile::TempDir,
    /// Certificates and CRL.
    pub pki: Pki,
}

impl Run {
    /// Locates the tools (failing with how to build them) and issues the PKI.
    pub fn new() -> Result<Run> {
        Self::with_tools(Tools::locate()?)
    }

    /// A run that needs Envoy only (no filter, no CLI).
    pub fn envoy_only() -> Result<Run> {
        Self::with_tools(Tools::locate_envoy()?)
    }

    fn with_tools(tools: Tools) -> Result<Run> {
        let dir = tempfile::Builder::new().prefix("certgate-e2e-").tempdir()?;
        let pki = Pki::generate(&dir.path().join("pki"), &standard_leaves())?;
        Ok(Run {
            certgate: Certgate {
                bin: tools.certgate.clone(),
            },
            tools,
            dir,
            pki,
        })
    }

    /// A fresh subdirectory of the scratch directory.
    pub fn subdir(&self, name: &str) -> Result<PathBuf> {
        let d = self.dir.path().join(name);
        std::fs::create_dir_all(&d)?;
        Ok(d)
    }

    /// Copies policy `file` from `e2e/policies/` next to the PKI (so its relative CRL
    /// path `crl/intermediate.crl` resolves to this run's CRL) and compiles it.
    pub fn compile_policy(&self, file: &str) -> Result<PathBuf> {
        self.compile_file(&repo_root().join("e2e/policies").join(file))
    }

    /// Copies the policy at `src` next to the PKI and compiles it.
    pub fn compile_file(&self, src: &std::path::Path) -> Result<PathBuf> {
        let text =
            std::fs::read_to_string(src).with_context(|| format!("reading {}", src.display()))?;
        let name = src
            .file_name()
            .and_then(|n| n.to_str())
            .context("policy path has no file name")?;
        self.compile_text(name, &text)
    }

    /// Writes `text` as policy `file` next to the PKI and compiles it to `<file>.cgt`.
    pub fn compile_text(&self, file: &str, text: &str) -> Result<PathBuf> {
        self.compile_text_with(file, text, &[])
    }

    /// [`Run::compile_text`] with more `compile` arguments (`--sign-key K`, ...). The
    /// output is `<file>.cgt`, so compiling one file again issues a newer table.
    pub fn compile_text_with(&self, file: &str, text: &str, extra: &[&str]) -> Result<PathBuf> {
        let policy = self.pki.dir.join(file);
        std::fs::write(&policy, text)?;
        let table = self.dir.path().join(format!("{file}.cgt"));
        self.certgate.compile_with(&[&policy], &table, extra)?;
        Ok(table)
    }
}

/// The short name of a labelled stat (`plugin=.=certgate;.;action=.=deny;.;...;.;
/// certgate_decisions_total`, as `/stats` lists it): `decisions{action=deny,mode=enforce,
/// reason=default_deny}`, the tags other than plugin and policy sorted; `None` for a
/// stat without tags.
pub fn labelled_short(name: &str) -> Option<String> {
    let name = name.strip_prefix("wasmcustom.").unwrap_or(name);
    if !name.contains("=.=") {
        return None;
    }
    let mut parts: Vec<&str> = name.split(";.;").collect();
    let base = parts.pop()?;
    let mut tags: Vec<String> = parts
        .iter()
        .filter_map(|p| p.split_once("=.="))
        .filter(|(k, _)| *k != "plugin" && *k != "policy")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    tags.sort();
    let base = base
        .trim_start_matches("certgate_")
        .trim_end_matches("_total");
    Some(format!("{base}{{{}}}", tags.join(",")))
}

/// Counter deltas between two `/stats` snapshots, by short name (`allowed`,
/// `reason.deny_rule`, `decisions{action=deny,mode=enforce,reason=deny_rule}`, ...), zero
/// deltas left out.
pub fn counter_deltas(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (name, v) in after {
        let d = v.saturating_sub(before.get(name).copied().unwrap_or(0));
        if d == 0 {
            continue;
        }
        let short = match labelled_short(name) {
            Some(short) => short,
            None => match name.rfind("certgate.") {
                Some(i) => name.get(i + "certgate.".len()..).unwrap_or(name),
                None => name,
            }
            .to_string(),
        };
        *out.entry(short).or_insert(0) += d;
    }
    out
}

/// The audit records (parsed) in access-log lines after index `from`, with the line's
/// own fields kept under `_log`.
pub fn audit_records(records: &[Value], from: usize) -> Vec<Value> {
    records
        .iter()
        .skip(from)
        .filter_map(|r| {
            let audit = r.get(DECISION_FIELD)?.as_str()?;
            let mut v: Value = serde_json::from_str(audit).ok()?;
            if let Some(obj) = v.as_object_mut() {
                obj.insert("_log".into(), r.clone());
            }
            Some(v)
        })
        .collect()
}

/// Waits until the access log has a line for the client's connection (by local port
/// when known, else any new line), then a little longer for siblings (the listener
/// and tcp_proxy loggers each write one).
pub fn wait_for_log(envoy: &Envoy, from: usize, ex: Option<&Exchange>) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let want_port = ex.and_then(|e| e.local_port);
    loop {
        let records = envoy.access_records();
        let new: Vec<Value> = records.iter().skip(from).cloned().collect();
        let found = match want_port {
            Some(p) => new.iter().any(|r| {
                r[SOURCE_ADDRESS_FIELD]
                    .as_str()
                    .is_some_and(|d| d.ends_with(&format!(":{p}")))
            }),
            None => !new.is_empty(),
        };
        if found || Instant::now() > deadline {
            std::thread::sleep(Duration::from_millis(150));
            return envoy.access_records();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
