//! `certgate package` refusals: bad input leaves nothing behind and exits 2 with one line.
//! (The registry round trip with istio-agent's rules is e2e/tests/oci.rs.)

use std::path::Path;

use crate::common::certgate;

fn module(dir: &Path) -> String {
    let p = dir.join("m.wasm");
    let mut bytes = b"\0asm\x01\0\0\0".to_vec();
    bytes.extend_from_slice(&[0u8; 64]);
    std::fs::write(&p, bytes).unwrap();
    p.display().to_string()
}

fn digests(stdout: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(stdout).unwrap();
    v["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["digest"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn package_refuses_what_is_not_a_module_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.wasm");
    std::fs::write(&bad, b"#!/bin/sh\n").unwrap();
    let out = dir.path().join("out");
    let run = certgate(&[
        "package",
        "--wasm",
        bad.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("not a WebAssembly module"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty());
    assert!(!out.exists(), "nothing is written for bad input");

    let good = module(dir.path());
    let run = certgate(&[
        "package",
        "--wasm",
        &good,
        "--out",
        out.to_str().unwrap(),
        "--tag",
        "a/b",
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("invalid tag `a/b`"), "{}", run.stderr);
    assert!(!out.exists());
}

#[test]
fn package_never_replaces_a_folder_that_is_not_a_layout() {
    let dir = tempfile::tempdir().unwrap();
    let good = module(dir.path());
    let out = dir.path().join("out");
    std::fs::create_dir_all(out.join("compat")).unwrap();
    std::fs::write(out.join("compat/keep.txt"), "mine").unwrap();
    let run = certgate(&["package", "--wasm", &good, "--out", out.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("is not an OCI image layout"),
        "{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read_to_string(out.join("compat/keep.txt")).unwrap(),
        "mine"
    );
}

#[test]
fn package_prints_stable_digests_and_honours_source_date_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let good = module(dir.path());
    let out = dir.path().join("out");
    let args = [
        "package",
        "--wasm",
        &good,
        "--out",
        out.to_str().unwrap(),
        "--format",
        "json",
    ];
    let first = certgate(&args);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let again = certgate(&args);
    assert_eq!(digests(&first.stdout), digests(&again.stdout));
    assert!(out.join("compat/oci-layout").is_file());
    assert!(out.join("artifact/index.json").is_file());

    let human = certgate(&["package", "--wasm", &good, "--out", out.to_str().unwrap()]);
    for d in digests(&first.stdout) {
        assert!(human.stdout.contains(&d), "{}", human.stdout);
    }

    let later = std::process::Command::new(env!("CARGO_BIN_EXE_certgate"))
        .args(args)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap();
    assert!(later.status.success());
    let later = digests(&String::from_utf8(later.stdout).unwrap());
    // The compat image records the time (tar mtime, `created`); the artifact holds none.
    assert_ne!(later[0], digests(&first.stdout)[0]);
    assert_eq!(later[1], digests(&first.stdout)[1]);

    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_certgate"))
        .args(args)
        .env("SOURCE_DATE_EPOCH", "yesterday")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid SOURCE_DATE_EPOCH"));
}
