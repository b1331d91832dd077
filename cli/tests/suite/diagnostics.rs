//! Golden diagnostics: every `tests/ui/*.yaml` (and every `tests/ui/*.d/` directory, compiled
//! as one input set) is checked, and its rendered human output and JSON report are insta
//! snapshots, so a changed message is a reviewed diff.

use std::collections::BTreeSet;

use crate::common::{certgate, data_dir};

fn ui_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(data_dir().join("tests/ui"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".d"))
        .collect();
    files.sort();
    files
}

#[test]
fn golden_diagnostics() {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("../snapshots/ui");
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| {
        for file in ui_files() {
            let stem = file.trim_end_matches(".yaml").trim_end_matches(".d");
            let path = format!("tests/ui/{file}");
            let human = certgate(&["check", &path]);
            assert!(
                human.stdout.is_empty(),
                "{file}: human output goes to stderr"
            );
            insta::assert_snapshot!(
                format!("{stem}.human"),
                format!("exit: {}\n{}", human.code, human.stderr)
            );
            let json = certgate(&["check", "--format", "json", &path]);
            assert_eq!(
                json.code, human.code,
                "{file}: same exit code in both formats"
            );
            let value: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
            insta::assert_snapshot!(format!("{stem}.json"), json.stdout);
            assert_eq!(value["version"], 1);
        }
    });
}

/// Every code the compiler can emit appears in some golden file, except the table-size
/// limit that needs thousands of documents to reach.
#[test]
fn every_code_is_covered_by_a_golden_file() {
    let mut seen = BTreeSet::new();
    for file in ui_files() {
        let json = certgate(&["check", "--format", "json", &format!("tests/ui/{file}")]);
        let value: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
        for d in value["diagnostics"].as_array().unwrap() {
            seen.insert(d["code"].as_str().unwrap().to_string());
        }
    }
    let missing: Vec<&str> = certgate_compiler::Code::ALL
        .iter()
        .map(|c| c.as_str())
        .filter(|c| *c != "certgate::table-limit" && !seen.contains(*c))
        .collect();
    assert!(missing.is_empty(), "no golden file shows {missing:?}");
}

#[test]
fn deny_warnings_fails_on_warnings_only() {
    let plain = certgate(&["check", "tests/ui/warnings.yaml"]);
    assert_eq!(plain.code, 0, "{}", plain.stderr);
    let denied = certgate(&["check", "--deny-warnings", "tests/ui/warnings.yaml"]);
    assert_eq!(denied.code, 1);
    assert!(
        denied.stderr.contains("warnings are denied"),
        "{}",
        denied.stderr
    );
    let json = certgate(&[
        "check",
        "--deny-warnings",
        "--format",
        "json",
        "tests/ui/warnings.yaml",
    ]);
    let value: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(value["summary"]["ok"], false);
    assert_eq!(value["summary"]["errors"], 0);
}

#[test]
fn several_files_merge_and_conflicts_point_at_both() {
    let run = certgate(&["check", "--format", "json", "tests/ui/conflict.yaml"]);
    let value: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let conflicts: Vec<&serde_json::Value> = value["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["code"] == "certgate::conflict")
        .collect();
    // mode, tls.minVersion, keys and audit.log differ; `24h` and `1d` are the same lifetime.
    assert_eq!(conflicts.len(), 4, "{}", run.stdout);
    for c in conflicts {
        assert_eq!(c["related"].as_array().unwrap().len(), 1);
    }
}

#[test]
fn sarif_carries_the_same_findings() {
    let json = certgate(&["check", "--format", "json", "tests/ui/warnings.yaml"]);
    let sarif = certgate(&["check", "--format", "sarif", "tests/ui/warnings.yaml"]);
    assert_eq!(sarif.code, json.code);
    let j: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let s: serde_json::Value = serde_json::from_str(&sarif.stdout).unwrap();
    assert_eq!(s["version"], "2.1.0");
    let results = s["runs"][0]["results"].as_array().unwrap();
    let diags = j["diagnostics"].as_array().unwrap();
    assert_eq!(results.len(), diags.len());
    for (r, d) in results.iter().zip(diags) {
        assert_eq!(r["ruleId"], d["code"]);
        assert_eq!(r["level"], d["severity"]);
        let region = &r["locations"][0]["physicalLocation"]["region"];
        assert_eq!(region["startLine"], d["line"]);
        assert_eq!(region["startColumn"], d["column"]);
        assert_eq!(
            r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
            "tests/ui/warnings.yaml"
        );
    }
}
