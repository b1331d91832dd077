//! The example policies in `policies/`: each compiles on its own without a warning, and
//! what its table holds is a snapshot.

use crate::common::{certgate_in, repo_dir};

pub const EXAMPLES: &[&str] = &["zero-trust", "staged-rollout", "revoked-intermediate"];

/// Compiles `policies/NAME.yaml` into a temporary table and returns its path.
pub fn compile_example(name: &str, dir: &std::path::Path) -> std::path::PathBuf {
    let out = dir.join(format!("{name}.cgt"));
    let run = certgate_in(
        &repo_dir(),
        &[
            "compile",
            "--deny-warnings",
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
            insta::assert_snapshot!(format!("{name}.inspect"), human.stdout);
            let json = certgate_in(&repo_dir(), &["inspect", "--format", "json", table]);
            assert_eq!(json.code, 0, "{}", json.stderr);
            insta::assert_snapshot!(format!("{name}.inspect.json"), json.stdout);
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
