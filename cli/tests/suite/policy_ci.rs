//! Policy CI: `certgate test`, `diff` and `report`. Every output format is a golden
//! snapshot; the example policies' own tests run here (so `cargo test` runs them); described
//! certificates are proven to decide as the real certificates `certgate eval --cert` reads;
//! and the pipelines of docs/ci.md run, as written, in a scratch repository.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{certgate_in, data_dir, repo_dir};

fn golden() -> PathBuf {
    data_dir().join("tests/policy-ci")
}

fn snapshots(f: impl FnOnce()) {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("../snapshots/policy-ci");
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(f);
}

fn json(s: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"));
    assert_eq!(v["version"], 1, "every JSON output is versioned");
    v
}

#[test]
fn the_example_policies_pass_their_tests_and_cover_every_rule() {
    for name in crate::examples::EXAMPLES {
        assert!(
            repo_dir()
                .join(format!("policies/{name}.test.yaml"))
                .is_file(),
            "policies/{name}.yaml has no tests"
        );
    }
    let run = certgate_in(&repo_dir(), &["test", "--coverage", "policies/"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let last = run.stdout.lines().last().unwrap();
    let (passed, failed) = last.split_once(" passed, ").unwrap();
    assert!(passed.parse::<usize>().unwrap() >= 30, "{last}");
    assert_eq!(failed, "0 failed");
    assert!(
        run.stdout
            .contains("coverage: every rule decided at least one case"),
        "{}",
        run.stdout
    );
}

#[test]
fn test_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("junit.xml");
    snapshots(|| {
        let human = certgate_in(
            &golden(),
            &[
                "test",
                "--coverage",
                "--junit",
                junit.to_str().unwrap(),
                "payments.test.yaml",
            ],
        );
        assert_eq!(human.code, 1);
        assert!(human.stderr.is_empty(), "{}", human.stderr);
        assert_eq!(
            human.stdout.lines().last(),
            Some("1 passed, 4 failed"),
            "the summary line is exactly `N passed, N failed`"
        );
        insta::assert_snapshot!("test.human", human.stdout);
        insta::assert_snapshot!("test.junit", std::fs::read_to_string(&junit).unwrap());
        let j = certgate_in(
            &golden(),
            &[
                "test",
                "--coverage",
                "--format",
                "json",
                "payments.test.yaml",
            ],
        );
        assert_eq!(j.code, 1);
        let v = json(&j.stdout);
        assert_eq!(
            (v["passed"].as_u64(), v["failed"].as_u64()),
            (Some(1), Some(4))
        );
        insta::assert_snapshot!("test.json", j.stdout);
        // A policy file stands for its test file.
        let by_policy = certgate_in(&golden(), &["test", "payments.yaml"]);
        assert_eq!(by_policy.code, 1);
        assert!(by_policy.stdout.ends_with("1 passed, 4 failed\n"));
    });
}

#[test]
fn a_malformed_test_file_reports_every_problem() {
    snapshots(|| {
        let run = certgate_in(&golden(), &["test", "malformed.test.yaml"]);
        assert_eq!(run.code, 2);
        assert!(run.stdout.is_empty());
        // Drawn like policy diagnostics: a code, what is wrong, the snippet at
        // file:line:column, and how to fix it; every problem of the file, not the first.
        let places = run.stderr.matches("╭─[malformed.test.yaml:").count();
        assert_eq!(places, 11, "{}", run.stderr);
        assert_eq!(run.stderr.matches("\n  help: ").count(), places);
        assert_eq!(run.stderr.matches("\ncertgate::").count() + 1, places);
        insta::assert_snapshot!("test.malformed", run.stderr);
    });
    let none = certgate_in(&golden(), &["test", "diff-old.yaml"]);
    assert_eq!(none.code, 2);
    assert!(none
        .stderr
        .contains("has no `diff-old.test.yaml` beside it"));
}

#[test]
fn a_policy_that_does_not_compile_fails_its_cases() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"), "kind: Nope\n").unwrap();
    std::fs::write(
        dir.path().join("p.test.yaml"),
        "cases:\n  - {name: a, peer: {identity: \"spiffe://x.test/a\"}, expect: {action: deny}}\n",
    )
    .unwrap();
    let run = certgate_in(dir.path(), &["test", "."]);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.contains("the policies do not compile"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.ends_with("0 passed, 1 failed\n"));
}

#[test]
fn diff_outputs() {
    snapshots(|| {
        let md = certgate_in(&golden(), &["diff", "diff-old.yaml", "diff-new.yaml"]);
        assert_eq!(md.code, 0, "{}", md.stderr);
        insta::assert_snapshot!("diff.markdown", md.stdout);
        let j = certgate_in(
            &golden(),
            &["diff", "--format", "json", "diff-old.yaml", "diff-new.yaml"],
        );
        let v = json(&j.stdout);
        assert_eq!(
            (v["widened"].as_bool(), v["narrowed"].as_bool()),
            (Some(true), Some(true))
        );
        insta::assert_snapshot!("diff.json", j.stdout);
        let widen = ["diff", "--fail-on", "widen"];
        let gate = |old: &str, new: &str| {
            let mut args = widen.to_vec();
            args.extend([old, new]);
            certgate_in(&golden(), &args).code
        };
        assert_eq!(gate("diff-old.yaml", "diff-new.yaml"), 1);
        assert_eq!(gate("diff-old.yaml", "diff-old.yaml"), 0);

        // Compiled tables: the same access and settings; revocations as counts only.
        let dir = tempfile::tempdir().unwrap();
        for (src, out) in [("diff-old.yaml", "old.cgt"), ("diff-new.yaml", "new.cgt")] {
            let c = certgate_in(
                &golden(),
                &["compile", src, "-o", dir.path().join(out).to_str().unwrap()],
            );
            assert_eq!(c.code, 0, "{}", c.stderr);
        }
        let t = certgate_in(dir.path(), &["diff", "old.cgt", "new.cgt"]);
        assert_eq!(t.code, 0, "{}", t.stderr);
        insta::assert_snapshot!("diff.tables.markdown", t.stdout);
        let mixed = certgate_in(
            &golden(),
            &[
                "diff",
                "--format",
                "json",
                dir.path().join("old.cgt").to_str().unwrap(),
                "diff-new.yaml",
            ],
        );
        let m = json(&mixed.stdout);
        let p = json(&j.stdout);
        assert_eq!(m["access"], p["access"], "a table decides as its policy");
        assert_eq!(m["settings"], p["settings"]);
        assert!(m["revocation"]["added"].is_null());
    });
}

#[test]
fn diff_of_the_unchanged_examples_is_empty() {
    for name in crate::examples::EXAMPLES {
        let p = format!("policies/{name}.yaml");
        let run = certgate_in(&repo_dir(), &["diff", "--fail-on", "change", &p, &p]);
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        assert!(run.stdout.contains("No change in what the policy decides."));
    }
}

#[test]
fn report_outputs() {
    // 2027-01-01T00:00:00Z: the example CRL is fresh then.
    let now = "1798761600";
    snapshots(|| {
        for name in crate::examples::EXAMPLES {
            let p = format!("policies/{name}.yaml");
            let md = certgate_in(&repo_dir(), &["report", "--now", now, &p]);
            assert_eq!(md.code, 0, "{}", md.stderr);
            insta::assert_snapshot!(format!("report.{name}.markdown"), md.stdout);
            let j = certgate_in(
                &repo_dir(),
                &["report", "--now", now, "--format", "json", &p],
            );
            json(&j.stdout);
            insta::assert_snapshot!(format!("report.{name}.json"), j.stdout);
        }
        let weak = certgate_in(&golden(), &["report", "--now", now, "weak.yaml"]);
        insta::assert_snapshot!("report.weak.markdown", weak.stdout);
        let sarif = certgate_in(
            &golden(),
            &[
                "report",
                "--now",
                now,
                "--format",
                "sarif",
                "--fail-on",
                "required",
                "weak.yaml",
            ],
        );
        assert_eq!(sarif.code, 1);
        let s: serde_json::Value = serde_json::from_str(&sarif.stdout).unwrap();
        assert_eq!(s["version"], "2.1.0");
        insta::assert_snapshot!("report.weak.sarif", sarif.stdout);
    });
    // In 2100 the CRL is long stale.
    let later = certgate_in(
        &repo_dir(),
        &[
            "report",
            "--now",
            "4102444800",
            "--format",
            "json",
            "policies/revoked-intermediate.yaml",
        ],
    );
    let v = json(&later.stdout);
    let fresh = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "revocation-fresh")
        .unwrap();
    assert_eq!(fresh["status"], "fail");
}

/// A self-signed certificate: the issuer is the subject `CN=Test CA,O=Example`.
fn real_cert(
    dir: &Path,
    name: &str,
    alg: &'static rcgen::SignatureAlgorithm,
    serial: &[u8],
    hours: u64,
) -> PathBuf {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        rcgen::string::Ia5String::try_from("spiffe://t.test/ns/a/sa/web").unwrap(),
    )];
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::OrganizationName, "Example");
    dn.push(rcgen::DnType::CommonName, "Test CA");
    params.distinguished_name = dn;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(serial));
    let start = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_767_225_600);
    params.not_before = start.into();
    params.not_after = (start + std::time::Duration::from_secs(hours * 3600)).into();
    let key = rcgen::KeyPair::generate_for(alg).unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    let path = dir.join(format!("{name}.pem"));
    std::fs::write(&path, pem).unwrap();
    path
}

/// `certgate test` on a described certificate decides what `certgate eval --cert` decides
/// on the real certificate it describes.
#[test]
fn described_certificates_decide_as_the_real_ones() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("p.yaml"),
        "apiVersion: certgate.dev/v1alpha1\nkind: MeshTLSPolicy\nmetadata: {name: p}\nspec:\n  peerCertificate:\n    trustDomains: [t.test]\n    maxLifetime: 24h\n    keys: {ecdsaCurves: [P-256, P-384]}\n    forbidSignatureAlgorithms: [sha384]\n  revocation:\n    serials: [{serial: \"0a:0b\", issuer: \"CN=Test CA,O=Example\"}]\n  rules:\n    - {name: web, action: allow, principals: [spiffe://t.test/ns/a/sa/web]}\n",
    )
    .unwrap();
    let table = d.join("p.cgt");
    assert_eq!(
        certgate_in(d, &["compile", "p.yaml", "-o", table.to_str().unwrap()]).code,
        0
    );
    let cases: [(&str, &'static rcgen::SignatureAlgorithm, &[u8], u64, &str); 5] = [
        (
            "ok",
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &[1],
            1,
            "key: ecdsa-p256, lifetime: 1h, serial: \"01\"",
        ),
        (
            "p384",
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &[2],
            1,
            "key: ecdsa-p384, signatureHash: sha384, lifetime: 1h, serial: \"02\"",
        ),
        (
            "ed25519",
            &rcgen::PKCS_ED25519,
            &[3],
            1,
            "key: ed25519, lifetime: 1h, serial: \"03\"",
        ),
        (
            "long",
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &[4],
            48,
            "key: ecdsa-p256, lifetime: 2d, serial: \"04\"",
        ),
        (
            "revoked",
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &[0x0a, 0x0b],
            1,
            "key: ecdsa-p256, lifetime: 1h, serial: \"0a0b\"",
        ),
    ];
    let mut test = String::from("policies: [p.yaml]\ncases:\n");
    let mut reasons = Vec::new();
    for (name, alg, serial, hours, described) in cases {
        let pem = real_cert(d, name, alg, serial, hours);
        let eval = certgate_in(
            d,
            &[
                "eval",
                "--table",
                table.to_str().unwrap(),
                "--cert",
                pem.to_str().unwrap(),
                "--tls-version",
                "1.3",
            ],
        );
        assert_eq!(eval.code, 0, "{}", eval.stderr);
        let e: serde_json::Value = serde_json::from_str(&eval.stdout).unwrap();
        let expect = format!(
            "{{action: {}, reason: {}, rule: {}}}",
            e["action"].as_str().unwrap(),
            e["reason"].as_str().unwrap(),
            e["rule"].as_str().unwrap_or("null")
        );
        reasons.push(e["reason"].as_str().unwrap().to_string());
        test.push_str(&format!(
            "  - {{name: {name} file, peer: {{certificate: {name}.pem, tlsVersion: \"1.3\"}}, expect: {expect}}}\n  - {{name: {name} described, peer: {{certificate: {{identity: \"spiffe://t.test/ns/a/sa/web\", issuer: \"CN=Test CA,O=Example\", {described}}}, tlsVersion: \"1.3\"}}, expect: {expect}}}\n"
        ));
    }
    // The cases reach every certificate check the policy makes.
    assert_eq!(
        reasons,
        [
            "allow_rule",
            "forbidden_signature",
            "key_type_not_allowed",
            "lifetime_too_long",
            "revoked_serial",
        ]
    );
    std::fs::write(d.join("p.test.yaml"), test).unwrap();
    let run = certgate_in(d, &["test", "p.test.yaml"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(
        run.stdout.ends_with("10 passed, 0 failed\n"),
        "{}",
        run.stdout
    );
}

// --- docs/ci.md, run as written ---------------------------------------------------------

/// The YAML of the first ```yaml block after `heading` in docs/ci.md.
fn ci_block(heading: &str) -> saphyr::Yaml<'static> {
    use saphyr::LoadableYamlNode;
    let doc = std::fs::read_to_string(repo_dir().join("docs/ci.md")).unwrap();
    let at = doc
        .find(heading)
        .unwrap_or_else(|| panic!("no `{heading}` in docs/ci.md"));
    let rest = &doc[at..];
    let start = rest.find("```yaml\n").unwrap() + "```yaml\n".len();
    let end = start + rest[start..].find("```").unwrap();
    let text = rest[start..end].to_string();
    let mut docs = saphyr::Yaml::load_from_str(Box::leak(text.into_boxed_str())).unwrap();
    docs.remove(0)
}

fn str_of<'a>(y: &'a saphyr::Yaml<'_>, key: &str) -> Option<&'a str> {
    y.as_mapping_get(key).and_then(|v| v.as_str())
}

/// The shell steps of the GitHub workflow, except installing certgate (the test puts the
/// built binary on PATH) and `uses:` actions (upload, comment): `(name, always, script)`.
fn github_steps() -> Vec<(String, bool, String)> {
    let wf = ci_block("## GitHub Actions");
    let job = wf
        .as_mapping_get("jobs")
        .and_then(|j| j.as_mapping_get("policy"))
        .expect("jobs.policy");
    let steps = job
        .as_mapping_get("steps")
        .and_then(|s| s.as_vec())
        .unwrap();
    steps
        .iter()
        .filter_map(|s| {
            let run = str_of(s, "run")?;
            let name = str_of(s, "name").unwrap_or_default();
            if name.starts_with("Install") {
                assert!(run.contains("cargo install"), "{run}");
                return None;
            }
            let always = str_of(s, "if").is_some_and(|c| c.contains("always()"));
            Some((name.to_string(), always, run.to_string()))
        })
        .collect()
}

fn gitlab_script() -> Vec<String> {
    let ci = ci_block("## GitLab CI");
    let job = ci.as_mapping_get("certgate").expect("job certgate");
    let install = job
        .as_mapping_get("before_script")
        .and_then(|s| s.as_vec())
        .unwrap();
    assert!(install
        .iter()
        .all(|l| l.as_str().unwrap().starts_with("cargo install")));
    job.as_mapping_get("script")
        .and_then(|s| s.as_vec())
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect()
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "ci")
        .env("GIT_AUTHOR_EMAIL", "ci@example.com")
        .env("GIT_COMMITTER_NAME", "ci")
        .env("GIT_COMMITTER_EMAIL", "ci@example.com")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const CI_POLICY: &str = "apiVersion: certgate.dev/v1alpha1
kind: MeshTLSPolicy
metadata:
  name: orders
spec:
  tls: {minVersion: \"1.3\"}
  peerCertificate:
    trustDomains: [cluster.local]
    maxLifetime: 24h
    keys: {ecdsaCurves: [P-256]}
    forbidSignatureAlgorithms: [md5, sha1]
  revocation:
    serials: [{serial: \"0a:0b\", issuer: \"CN=Mesh CA,O=Example\"}]
  rules:
    - name: callers
      action: allow
      principals: [PRINCIPALS]
      ports: [8443]
";

const CI_TESTS: &str = "cases:
  - name: web calls orders
    peer: {identity: \"spiffe://cluster.local/ns/web/sa/web\", tlsVersion: \"1.3\", port: 8443}
    expect: {action: allow, rule: callers}
";

/// A repository whose `main` holds the policy with two callers, and a clone (the CI
/// checkout) on a branch.
fn scratch_repo(root: &Path) -> PathBuf {
    let origin = root.join("origin");
    std::fs::create_dir_all(origin.join("policies")).unwrap();
    git(&origin, &["init", "-q", "-b", "main"]);
    let two = "spiffe://cluster.local/ns/web/sa/web, spiffe://cluster.local/ns/batch/sa/report";
    std::fs::write(
        origin.join("policies/orders.yaml"),
        CI_POLICY.replace("PRINCIPALS", two),
    )
    .unwrap();
    std::fs::write(origin.join("policies/orders.test.yaml"), CI_TESTS).unwrap();
    git(&origin, &["add", "."]);
    git(&origin, &["commit", "-q", "-m", "base"]);
    let work = root.join("work");
    git(
        root,
        &[
            "clone",
            "-q",
            origin.to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    git(&work, &["checkout", "-q", "-b", "change"]);
    work
}

fn commit_policy(work: &Path, principals: &str) {
    std::fs::write(
        work.join("policies/orders.yaml"),
        CI_POLICY.replace("PRINCIPALS", principals),
    )
    .unwrap();
    git(work, &["commit", "-q", "-am", "change"]);
}

fn bash(dir: &Path, script: &str, env: &[(&str, &Path)], flags: &str) -> i32 {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_certgate")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    cmd.args([flags, script])
        .current_dir(dir)
        .env("PATH", path)
        .env("POLICY", "policies/orders.yaml")
        .env("GITHUB_BASE_REF", "main")
        .env("CI_MERGE_REQUEST_TARGET_BRANCH_NAME", "main")
        .env("CI_JOB_ID", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    out.status.code().unwrap_or(-1)
}

/// Runs the GitHub steps as Actions would: in order, each `bash -e`, skipping the rest after
/// a failure except `if: always()` steps. Returns each step's exit code.
fn run_github(work: &Path, tmp: &Path) -> Vec<(String, i32)> {
    let summary = tmp.join("summary.md");
    let mut failed = false;
    let mut codes = Vec::new();
    for (name, always, script) in github_steps() {
        if failed && !always {
            continue;
        }
        let code = bash(
            work,
            &script,
            &[("RUNNER_TEMP", tmp), ("GITHUB_STEP_SUMMARY", &summary)],
            "-ec",
        );
        failed |= code != 0;
        codes.push((name, code));
    }
    codes
}

fn run_gitlab(work: &Path, builds: &Path) -> i32 {
    let script = format!("set -eo pipefail\n{}", gitlab_script().join("\n"));
    bash(work, &script, &[("CI_BUILDS_DIR", builds)], "-c")
}

#[test]
fn the_ci_examples_run_as_documented() {
    let steps: Vec<String> = github_steps().into_iter().map(|(n, _, _)| n).collect();
    assert_eq!(
        steps,
        ["Check", "Test", "Diff against the base branch", "Report"]
    );

    // A change that narrows access: every step passes, and the diff says who lost access.
    let root = tempfile::tempdir().unwrap();
    let work = scratch_repo(root.path());
    commit_policy(&work, "spiffe://cluster.local/ns/web/sa/web");
    let gh_tmp = root.path().join("gh");
    std::fs::create_dir(&gh_tmp).unwrap();
    let codes = run_github(&work, &gh_tmp);
    assert!(codes.iter().all(|(_, c)| *c == 0), "{codes:?}");
    let diff = std::fs::read_to_string(work.join("policy-diff.md")).unwrap();
    assert!(
        diff.contains("| lost | `spiffe://cluster.local/ns/batch/sa/report` |"),
        "{diff}"
    );
    let summary = std::fs::read_to_string(gh_tmp.join("summary.md")).unwrap();
    assert!(
        summary.contains("## certgate policy diff") && summary.contains("**Compliant**"),
        "{summary}"
    );
    for sarif in ["sarif/check.sarif", "sarif/report.sarif"] {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(work.join(sarif)).unwrap()).unwrap();
        assert_eq!(v["version"], "2.1.0", "{sarif}");
    }
    assert!(std::fs::read_to_string(work.join("policy-tests.xml"))
        .unwrap()
        .contains("<testsuites"));
    let gl_builds = root.path().join("gl");
    std::fs::create_dir(&gl_builds).unwrap();
    assert_eq!(run_gitlab(&work, &gl_builds), 0);
    assert!(work.join("gl-certgate-check.sarif").is_file());

    // A change that widens access: the diff step fails both pipelines, the report still runs.
    let root = tempfile::tempdir().unwrap();
    let work = scratch_repo(root.path());
    commit_policy(
        &work,
        "spiffe://cluster.local/ns/web/sa/web, spiffe://cluster.local/ns/batch/sa/report, \"spiffe://cluster.local/ns/ops/sa/*\"",
    );
    let gh_tmp = root.path().join("gh");
    std::fs::create_dir(&gh_tmp).unwrap();
    let codes = run_github(&work, &gh_tmp);
    assert_eq!(
        codes,
        [
            ("Check".to_string(), 0),
            ("Test".to_string(), 0),
            ("Diff against the base branch".to_string(), 1),
            ("Report".to_string(), 0)
        ]
    );
    let diff = std::fs::read_to_string(work.join("policy-diff.md")).unwrap();
    assert!(
        diff.contains("| **gained** | `spiffe://cluster.local/ns/ops/sa/*` |"),
        "{diff}"
    );
    let gl_builds = root.path().join("gl");
    std::fs::create_dir(&gl_builds).unwrap();
    assert_eq!(run_gitlab(&work, &gl_builds), 1);
    assert!(std::fs::read_to_string(work.join("policy-diff.md"))
        .unwrap()
        .contains("**Access widened.**"));
}
