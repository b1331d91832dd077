//! The example policies in `policies/`: each compiles on its own without a warning, and
//! what its table holds is a snapshot.

use crate::common::{certgate_in, repo_dir};

pub const EXAMPLES: &[&str] = &[
    "zero-trust",
    "staged-rollout",
    "revoked-intermediate",
    "demo",
];

/// Compiles `policies/NAME.yaml` into a temporary table and returns its path.
pub fn compile_example(name: &str, dir: &std::path::Path) -> std::path::PathBuf {
    let out = dir.join(format!("{name}.cgt"));
    let run = certgate_in(
        &repo_dir(),
        &[
            "compile",
            "--deny-warnings",
            // A fixed issue time (2026-01-01T00:00:00Z): snapshots stay stable.
            "--issued-at-ms",
            "1767225600000",
            &format!("policies/{name}.yaml"),
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 0, "{name}: {}", run.stderr);
    assert!(!run.stderr.contains("warning"), "{name}: {}", run.stderr);
    out
}

#[test]
fn examples_compile_cleanly_and_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("../snapshots/examples");
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| {
        for name in EXAMPLES {
            let table = compile_example(name, dir.path());
            let table = table.to_str().unwrap();
            let human = certgate_in(&repo_dir(), &["inspect", table]);
            assert_eq!(human.code, 0, "{}", human.stderr);
            // The size depends on the table format (ruleset's), not on the policy: redact it
            // so a format change does not churn these snapshots.
            let human = redact_size(&human.stdout);
            insta::assert_snapshot!(format!("{name}.inspect"), human);
            let json = certgate_in(&repo_dir(), &["inspect", "--format", "json", table]);
            assert_eq!(json.code, 0, "{}", json.stderr);
            let mut value: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
            assert!(value["size"].as_u64().unwrap() > 0);
            value["size"] = "[size]".into();
            insta::assert_snapshot!(
                format!("{name}.inspect.json"),
                serde_json::to_string_pretty(&value).unwrap()
            );
        }
    });
}

#[test]
fn the_policies_directory_is_one_input_per_example() {
    // The examples are standalone tables (their modes differ on purpose); compiling the
    // directory as one set reports the conflicts instead of picking a winner.
    let run = certgate_in(&repo_dir(), &["check", "policies/"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("certgate::conflict"), "{}", run.stderr);
}

fn redact_size(text: &str) -> String {
    text.lines()
        .map(|l| match l.strip_prefix("table     ") {
            Some(rest) => format!("table     [size]{}", &rest[rest.find(" bytes").unwrap()..]),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[test]
fn emitted_configuration_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let table = compile_example("zero-trust", dir.path());
    let table = table.to_str().unwrap();
    let redact = |s: &str| {
        let b64 = base64_of(table);
        s.replace(&b64, "[base64 of the table]")
    };
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("../snapshots/examples");
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| {
        let envoy = certgate_in(&repo_dir(), &["emit", "envoy", "--table", table]);
        assert_eq!(envoy.code, 0, "{}", envoy.stderr);
        insta::assert_snapshot!("emit-envoy.yaml", redact(&envoy.stdout));
        let istio = certgate_in(
            &repo_dir(),
            &[
                "emit",
                "istio",
                "--table",
                table,
                "--name",
                "payments-certgate",
                "--namespace",
                "payments",
                "--selector",
                "app=payments",
                "--url",
                "oci://registry.example/certgate-filter:0.1.0",
                "--mode",
                "audit",
                "--audit-log",
                "all",
            ],
        );
        assert_eq!(istio.code, 0, "{}", istio.stderr);
        if let Err(findings) = crate::common::check_wasmplugin(&istio.stdout) {
            panic!("the CRD rejects the WasmPlugin:\n{findings}");
        }
        insta::assert_snapshot!("emit-istio.yaml", redact(&istio.stdout));
    });
}

fn base64_of(path: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).unwrap())
}
