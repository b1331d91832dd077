//! Running the built `certgate` binary from the compiler crate's directory, where the test
//! data lives, so paths in its output are relative and stable.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What a run printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The compiler crate's directory: the golden inputs (`tests/ui`), certificates
/// (`tests/fixtures`) and policy-CI inputs (`tests/policy-ci`) the binary runs on.
pub fn data_dir() -> PathBuf {
    repo_dir().join("compiler")
}

/// Runs `certgate` in `dir` with a fixed, colourless, 100-column environment.
pub fn certgate_in(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_certgate"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("COLUMNS", "100")
        .output()
        .expect("run certgate");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    };
    // `emit stats` prints bootstrap stats settings, `emit access-log` an access logger: no
    // filter configuration.
    if args.first() == Some(&"emit")
        && args.get(1) != Some(&"stats")
        && args.get(1) != Some(&"access-log")
        && run.code == 0
        && !args.contains(&"--help")
    {
        check_filter_config(args, &run.stdout);
    }
    run
}

/// Every configuration `certgate emit` prints (Envoy or Istio, YAML or JSON) must be one
/// the filter loads: it is parsed with the filter's own parser, and the Envoy string is
/// exactly what that crate writes for the parsed configuration.
fn check_filter_config(args: &[&str], stdout: &str) {
    let doc = match serde_json::from_str(stdout) {
        Ok(v) => v,
        Err(_) => {
            use saphyr::LoadableYamlNode;
            let docs = saphyr::Yaml::load_from_str(stdout).unwrap();
            yaml_to_json(&docs[0])
        }
    };
    let (text, exact) = match doc["typed_config"]["config"]["configuration"]["value"].as_str() {
        Some(value) => (value.to_string(), true),
        None => (doc["spec"]["pluginConfig"].to_string(), false),
    };
    match filter_config::Config::parse(text.as_bytes()) {
        Ok(config) if exact => assert_eq!(config.serialise(), text, "certgate {args:?}"),
        Ok(_) => {}
        Err(e) => panic!("the filter refuses what `certgate {args:?}` printed: {e}\n{text}"),
    }
}

/// A YAML document as the JSON value it stands for (mappings with string keys).
fn yaml_to_json(y: &saphyr::Yaml<'_>) -> serde_json::Value {
    use serde_json::Value;
    if let Some(m) = y.as_mapping() {
        let members = m
            .iter()
            .map(|(k, v)| (k.as_str().unwrap().to_string(), yaml_to_json(v)));
        Value::Object(members.collect())
    } else if let Some(items) = y.as_vec() {
        Value::Array(items.iter().map(yaml_to_json).collect())
    } else if let Some(b) = y.as_bool() {
        Value::Bool(b)
    } else if let Some(i) = y.as_integer() {
        Value::from(i)
    } else if let Some(s) = y.as_str() {
        Value::String(s.to_string())
    } else {
        panic!("unexpected YAML node {y:?}")
    }
}

/// Runs `certgate` in the compiler crate's directory ([`data_dir`]).
pub fn certgate(args: &[&str]) -> Run {
    certgate_in(&data_dir(), args)
}

/// The pinned WasmPlugin CRD (from istio/api; the source commit is in its header).
pub fn wasmplugin_crd() -> PathBuf {
    data_dir().join("tests/fixtures/istio/wasmplugin-crd.yaml")
}

/// Runs `scripts/validate-crd.py` (PyPI `jsonschema`, in the venv `make venv` builds and
/// names in `CERTGATE_PYTHON`) on `text`, a YAML or JSON object: `Ok` when it validates
/// against the pinned WasmPlugin CRD, else the validator's findings.
pub fn check_wasmplugin(text: &str) -> Result<(), String> {
    check_wasmplugins(&[text.to_string()])
}

/// [`check_wasmplugin`] for many objects in one validator run; the findings name the
/// failing objects `object-<index>.yaml`.
pub fn check_wasmplugins(texts: &[String]) -> Result<(), String> {
    let python = std::env::var_os("CERTGATE_PYTHON")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| {
            panic!(
                "CERTGATE_PYTHON is not set: the emitted WasmPlugins are validated with PyPI `jsonschema`; \
run the tests through `make test` (or `make venv` and export CERTGATE_PYTHON=.tools/venv/bin/python)"
            )
        });
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(&python);
    cmd.arg(repo_dir().join("scripts/validate-crd.py"))
        .arg(wasmplugin_crd());
    for (i, text) in texts.iter().enumerate() {
        let object = dir.path().join(format!("object-{i}.yaml"));
        std::fs::write(&object, text).unwrap();
        cmd.arg(&object);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run CERTGATE_PYTHON={python:?}: {e}; run `make venv`"));
    match out.status.code() {
        Some(0) => Ok(()),
        Some(1) => Err(String::from_utf8_lossy(&out.stdout).into_owned()),
        _ => panic!(
            "validate-crd.py failed to run ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// `certgate emit istio ARGS...` without the CRD check: for a test that checks its
/// outputs in one batch with [`check_wasmplugins`].
pub fn emit_istio_unchecked(args: &[&str]) -> Run {
    let mut all = vec!["emit", "istio"];
    all.extend_from_slice(args);
    certgate(&all)
}

/// `certgate emit istio ARGS...`: when it succeeds, its output must validate against the
/// pinned WasmPlugin CRD. Every Istio test goes through here (or checks in a batch), so
/// every variant is checked.
pub fn emit_istio(args: &[&str]) -> Run {
    let mut all = vec!["emit", "istio"];
    all.extend_from_slice(args);
    let run = certgate(&all);
    if run.code == 0 {
        if let Err(findings) = check_wasmplugin(&run.stdout) {
            panic!(
                "`certgate {}` printed a WasmPlugin the CRD rejects:\n{findings}\n{}",
                all.join(" "),
                run.stdout
            );
        }
    }
    run
}
