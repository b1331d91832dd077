//! Records checked against the pinned Elastic Common Schema: `scripts/ecs-check.py`
//! (PyYAML) with `e2e/ecs/ecs_flat.yml` (elastic/ecs at the release the filter and
//! `certgate emit access-log` write as `ecs.version`).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// The pinned `ecs_flat.yml`.
pub fn ecs_flat() -> PathBuf {
    crate::tools::repo_root().join("e2e/ecs/ecs_flat.yml")
}

/// Checks `records` (access-log lines or audit records; a line's `certgate.decision`
/// is checked as a record too). `Ok` carries the checker's summary, `Err` every problem
/// it found.
pub fn check(records: &[Value]) -> Result<String> {
    let Some(python) = std::env::var_os("CERTGATE_PYTHON").filter(|p| !p.is_empty()) else {
        bail!(
            "CERTGATE_PYTHON is not set: records are checked against ECS with PyPI `PyYAML`; \
run the tests through `make e2e` (or `make venv` and export CERTGATE_PYTHON=.tools/venv/bin/python)"
        );
    };
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("records.jsonl");
    let mut text = String::new();
    for r in records {
        text.push_str(&serde_json::to_string(r)?);
        text.push('\n');
    }
    std::fs::write(&file, text)?;
    let out = Command::new(&python)
        .arg(crate::tools::repo_root().join("scripts/ecs-check.py"))
        .arg(ecs_flat())
        .arg(&file)
        .output()
        .with_context(|| format!("running CERTGATE_PYTHON={python:?} (run `make venv`)"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{}{stdout}{}",
            if out.status.code() == Some(1) {
                ""
            } else {
                "ecs-check.py failed to run: "
            },
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout.trim().to_string())
}
