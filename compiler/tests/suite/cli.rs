//! The CLI contract: exit codes, nothing written on error, decisions, certificate and CRL
//! facts, and the emitted Envoy and Istio configuration.

use std::path::Path;

use base64::Engine as _;

use crate::common::{certgate, certgate_in, crate_dir, repo_dir};
use crate::examples::compile_example;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

const GOOD: &str = "apiVersion: certgate.dev/v1alpha1
kind: MeshTLSPolicy
metadata: {name: good}
spec:
  rules:
    - name: web
      action: allow
      principals: [spiffe://cluster.local/ns/frontend/sa/web]
";

#[test]
fn compile_writes_nothing_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.cgt");
    let run = certgate(&[
        "compile",
        "tests/ui/unknown-field.yaml",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 1);
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no temporary file left behind"
    );
}

#[test]
fn compile_keeps_the_previous_table_on_error_and_replaces_it_on_success() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.cgt");
    std::fs::write(&out, b"previous").unwrap();
    let run = certgate(&[
        "compile",
        "tests/ui/spiffe.yaml",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 1);
    assert_eq!(std::fs::read(&out).unwrap(), b"previous");
    let good = write(dir.path(), "good.yaml", GOOD);
    let run = certgate(&["compile", &good, "-o", out.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("wrote"), "{}", run.stderr);
    let bytes = std::fs::read(&out).unwrap();
    assert!(ruleset::decode(&bytes).is_ok());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        2,
        "good.yaml and t.cgt only"
    );
}

#[test]
fn deny_warnings_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.cgt");
    let run = certgate(&[
        "compile",
        "--deny-warnings",
        "tests/ui/warnings.yaml",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 1);
    assert!(!out.exists());
}

#[test]
fn usage_and_io_errors_exit_2_with_one_line() {
    let run = certgate(&["compile", "does/not/exist.yaml", "-o", "x.cgt"]);
    assert_eq!(run.code, 2);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr
            .starts_with("error: cannot read `does/not/exist.yaml`"),
        "{}",
        run.stderr
    );
    assert_eq!(certgate(&["compile"]).code, 2);
    assert_eq!(certgate(&["frobnicate"]).code, 2);
    assert_eq!(certgate(&["check", "--format", "xml", "x.yaml"]).code, 2);
}

#[test]
fn unwritable_output_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.yaml", GOOD);
    let out = dir.path().join("missing-dir/t.cgt");
    let run = certgate(&["compile", &good, "-o", out.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("cannot write"), "{}", run.stderr);
}

#[test]
fn directories_read_yaml_sorted_and_skip_test_files() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "b.yaml",
        &GOOD
            .replace("name: good", "name: b")
            .replace("name: web", "name: web-b"),
    );
    write(dir.path(), "a.yml", &GOOD.replace("name: good", "name: a"));
    write(dir.path(), "a.test.yaml", "not: [valid");
    write(dir.path(), "notes.txt", "ignored");
    let out = dir.path().join("t.cgt");
    let run = certgate(&[
        "compile",
        dir.path().to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let inspect = certgate(&["inspect", "--format", "json", out.to_str().unwrap()]);
    let v = json(&inspect.stdout);
    assert_eq!(v["policies"], serde_json::json!(["a", "b"]));
    assert_eq!(v["rules"][1]["policy"], "b");
}

#[test]
fn the_digest_depends_on_sources_not_on_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.cgt");
    let b = dir.path().join("b.cgt");
    let run = certgate_in(
        &repo_dir(),
        &[
            "compile",
            "policies/zero-trust.yaml",
            "-o",
            a.to_str().unwrap(),
            "--issued-at-ms",
            "1767225600000",
        ],
    );
    assert_eq!(run.code, 0);
    // The same issue time: only the sources may make the bytes differ.
    let run = certgate_in(
        &repo_dir().join("policies"),
        &[
            "compile",
            "zero-trust.yaml",
            "-o",
            b.to_str().unwrap(),
            "--issued-at-ms",
            "1767225600000",
        ],
    );
    assert_eq!(run.code, 0);
    assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
}

fn eval(table: &str, args: &[&str]) -> (i32, serde_json::Value) {
    let mut all = vec!["eval", "--table", table];
    all.extend_from_slice(args);
    let run = certgate(&all);
    assert!(run.code == 0 || run.code == 1, "{}", run.stderr);
    (run.code, json(&run.stdout))
}

#[test]
fn eval_by_identity() {
    let dir = tempfile::tempdir().unwrap();
    let t = compile_example("zero-trust", dir.path());
    let t = t.to_str().unwrap();
    let (code, d) = eval(
        t,
        &[
            "--identity",
            "spiffe://cluster.local/ns/frontend/sa/web",
            "--tls-version",
            "1.3",
            "--port",
            "8443",
            "--sni",
            "payments.internal.example.com",
        ],
    );
    assert_eq!(code, 0);
    assert_eq!(
        d,
        serde_json::json!({"action": "allow", "reason": "allow_rule", "rule": "frontend-to-payments",
            "policy": "payments-inbound", "mode": "enforce", "identity": "spiffe://cluster.local/ns/frontend/sa/web"})
    );
    let (_, d) = eval(
        t,
        &[
            "--identity",
            "spiffe://cluster.local/ns/legacy/sa/old",
            "--tls-version",
            "1.3",
        ],
    );
    assert_eq!(
        (
            d["action"].as_str(),
            d["reason"].as_str(),
            d["rule"].as_str()
        ),
        (Some("deny"), Some("deny_rule"), Some("no-legacy"))
    );
    let (_, d) = eval(
        t,
        &[
            "--identity",
            "spiffe://cluster.local/ns/frontend/sa/web",
            "--tls-version",
            "1.2",
        ],
    );
    assert_eq!(d["reason"], "tls_version_too_low");
    let (_, d) = eval(
        t,
        &[
            "--identity",
            "spiffe://other.example/ns/a",
            "--tls-version",
            "1.3",
        ],
    );
    assert_eq!(d["reason"], "untrusted_domain");
    let (code, d) = eval(
        t,
        &[
            "--identity",
            "spiffe://cluster.local/ns/nobody",
            "--tls-version",
            "1.3",
            "--fail-on-deny",
        ],
    );
    assert_eq!(
        (code, d["reason"].as_str(), d["rule"].clone()),
        (1, Some("default_deny"), serde_json::Value::Null)
    );
}

#[test]
fn eval_audit_mode_reports_the_would_be_decision() {
    let dir = tempfile::tempdir().unwrap();
    let t = compile_example("staged-rollout", dir.path());
    let (code, d) = eval(
        t.to_str().unwrap(),
        &[
            "--identity",
            "spiffe://prod.example.com/ns/batch/sa/ad-hoc",
            "--port",
            "8080",
            "--tls-version",
            "1.3",
        ],
    );
    assert_eq!(code, 0);
    assert_eq!(
        (
            d["action"].as_str(),
            d["reason"].as_str(),
            d["mode"].as_str()
        ),
        (Some("deny"), Some("default_deny"), Some("audit"))
    );
}

/// A real certificate, made here: ECDSA P-256 with one SPIFFE URI SAN, valid one hour.
fn rcgen_cert(dir: &Path, spiffe: &str) -> String {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        rcgen::string::Ia5String::try_from(spiffe).unwrap(),
    )];
    let now = std::time::SystemTime::now();
    params.not_before = (now - std::time::Duration::from_secs(60)).into();
    params.not_after = (now + std::time::Duration::from_secs(3600)).into();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = params.self_signed(&key).unwrap();
    write(dir, "client.pem", &cert.pem())
}

#[test]
fn eval_with_a_real_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let t = compile_example("zero-trust", dir.path());
    let t = t.to_str().unwrap();
    let pem = rcgen_cert(dir.path(), "spiffe://cluster.local/ns/checkout/sa/cart");
    let args = [
        "--cert",
        pem.as_str(),
        "--tls-version",
        "1.3",
        "--port",
        "8443",
        "--sni",
        "payments.internal.example.com",
    ];
    let (code, d) = eval(t, &args);
    assert_eq!(code, 0);
    assert_eq!(
        (d["action"].as_str(), d["rule"].as_str()),
        (Some("allow"), Some("frontend-to-payments"))
    );
    assert_eq!(d["identity"], "spiffe://cluster.local/ns/checkout/sa/cart");
    // The same certificate on another port falls through to the default.
    let (_, d) = eval(
        t,
        &["--cert", &pem, "--tls-version", "1.3", "--port", "9999"],
    );
    assert_eq!(d["reason"], "default_deny");

    let facts = certgate(&["cert", "--format", "json", &pem]);
    assert_eq!(facts.code, 0, "{}", facts.stderr);
    let v = json(&facts.stdout);
    let c = &v["certificates"][0];
    assert_eq!(c["spiffeId"], "spiffe://cluster.local/ns/checkout/sa/cart");
    assert_eq!(
        c["key"],
        serde_json::json!({"algorithm": "ECDSA", "curve": "P-256"})
    );
    assert_eq!(c["lifetimeSeconds"], 3660);
    assert!(c["notAfter"].as_str().unwrap().ends_with('Z'));
    assert_eq!(c["sha256"].as_str().unwrap().len(), 64);
}

#[test]
fn eval_revoked_by_the_imported_crl() {
    let dir = tempfile::tempdir().unwrap();
    let t = compile_example("revoked-intermediate", dir.path());
    let t = t.to_str().unwrap();
    let (_, d) = eval(
        t,
        &[
            "--cert",
            "tests/fixtures/legacy-batch.pem",
            "--tls-version",
            "1.3",
            "--port",
            "8000",
        ],
    );
    assert_eq!(d["reason"], "revoked_serial");
    let (_, d) = eval(
        t,
        &[
            "--cert",
            "tests/fixtures/web.pem",
            "--tls-version",
            "1.3",
            "--port",
            "8000",
        ],
    );
    assert_eq!(
        (d["action"].as_str(), d["rule"].as_str()),
        (Some("allow"), Some("ledger-clients"))
    );
}

#[test]
fn eval_rejects_bad_inputs_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let t = compile_example("zero-trust", dir.path());
    let t = t.to_str().unwrap();
    let garbage = write(
        dir.path(),
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    for args in [
        vec!["eval", "--table", t, "--cert", garbage.as_str()],
        vec![
            "eval",
            "--table",
            t,
            "--identity",
            "spiffe://a/b",
            "--tls-version",
            "1.7",
        ],
        vec![
            "eval",
            "--table",
            garbage.as_str(),
            "--identity",
            "spiffe://a/b",
        ],
        vec!["eval", "--table", t],
        vec![
            "eval",
            "--table",
            t,
            "--identity",
            "spiffe://a/b",
            "--cert",
            garbage.as_str(),
        ],
    ] {
        let run = certgate(&args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(run.stdout.is_empty());
    }
}

#[test]
fn cert_and_crl_facts() {
    let run = certgate(&["cert", "tests/fixtures/legacy-batch.pem"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("serial      4F380A"), "{}", run.stdout);
    assert!(run
        .stdout
        .contains("SPIFFE ID   spiffe://cluster.local/ns/legacy-batch/sa/legacy-batch"));
    for crl in [
        "../policies/crl/intermediate.crl.pem",
        "tests/fixtures/intermediate.crl.der",
    ] {
        let run = certgate(&["crl", "--format", "json", crl]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let v = json(&run.stdout);
        assert_eq!(v["revoked"], serde_json::json!(["4F380A"]));
        assert_eq!(v["issuer"], "CN=Example Intermediate CA,O=Example");
        assert_eq!(v["crlNumber"], "4096");
        assert_eq!(v["expired"], false);
    }
    let run = certgate(&["crl", "tests/ui/crl/expired.crl.pem"]);
    assert!(
        run.stdout
            .contains("nextUpdate  2024-02-01T00:00:00Z  (past"),
        "{}",
        run.stdout
    );
}

#[test]
fn malformed_files_give_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = write(dir.path(), "garbage", "hello, world\n");
    let empty = write(dir.path(), "empty", "");
    let cert = crate_dir().join("tests/fixtures/web.pem");
    for args in [
        vec!["cert", garbage.as_str()],
        vec!["cert", empty.as_str()],
        vec!["cert", "tests/fixtures/intermediate.crl.der"],
        vec!["crl", garbage.as_str()],
        vec!["crl", empty.as_str()],
        vec!["crl", cert.to_str().unwrap()],
        vec!["inspect", garbage.as_str()],
        vec!["inspect", empty.as_str()],
        vec!["cert", "no-such-file"],
    ] {
        let run = certgate(&args);
        assert_eq!(run.code, 2, "{args:?}");
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.starts_with("error: "),
            "{args:?}: {}",
            run.stderr
        );
        assert!(run.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn truncated_and_corrupted_tables_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let t = compile_example("zero-trust", dir.path());
    let bytes = std::fs::read(&t).unwrap();
    let cut = write(dir.path(), "cut.cgt", "");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0xff;
    let bad = dir.path().join("flipped.cgt");
    std::fs::write(&bad, flipped).unwrap();
    for p in [cut.as_str(), bad.to_str().unwrap()] {
        let run = certgate(&["inspect", p]);
        assert_eq!(run.code, 2);
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    }
}

fn filter_config(value: &str) -> serde_json::Value {
    json(value)
}

#[test]
fn emit_envoy_carries_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let t = compile_example("zero-trust", dir.path());
    let bytes = std::fs::read(&t).unwrap();
    let run = certgate(&[
        "emit",
        "envoy",
        "--table",
        t.to_str().unwrap(),
        "--format",
        "json",
        "--mode",
        "audit",
        "--server-first",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v = json(&run.stdout);
    assert_eq!(v["name"], "envoy.filters.network.wasm");
    assert_eq!(
        v["typed_config"]["@type"],
        "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm"
    );
    let config = &v["typed_config"]["config"];
    assert_eq!(config["root_id"], "certgate");
    assert_eq!(config["fail_open"], false);
    assert_eq!(config["vm_config"]["runtime"], "envoy.wasm.runtime.v8");
    assert_eq!(
        config["vm_config"]["code"]["local"]["filename"],
        "/etc/certgate/certgate_filter.wasm"
    );
    assert_eq!(
        config["configuration"]["@type"],
        "type.googleapis.com/google.protobuf.StringValue"
    );
    let fc = filter_config(config["configuration"]["value"].as_str().unwrap());
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(fc["table"].as_str().unwrap())
            .unwrap(),
        bytes
    );
    assert_eq!(fc["mode"], "audit");
    assert_eq!(fc["serverFirst"], true);

    let http = certgate(&[
        "emit",
        "envoy",
        "--table",
        t.to_str().unwrap(),
        "--http",
        "--wasm",
        "/opt/cg.wasm",
    ]);
    assert_eq!(http.code, 0, "{}", http.stderr);
    assert!(
        http.stdout.starts_with("name: envoy.filters.http.wasm\n"),
        "{}",
        http.stdout
    );
    assert!(http
        .stdout
        .contains("\"@type\": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm\n"));
    assert!(http.stdout.contains("filename: /opt/cg.wasm\n"));
    // Regression: the HTTP entry carried the network root id, and the module then ran
    // the wrong front end (every request answered 503).
    assert!(
        http.stdout.contains("root_id: certgate-http\n"),
        "{}",
        http.stdout
    );
    assert_eq!(
        certgate(&[
            "emit",
            "envoy",
            "--table",
            t.to_str().unwrap(),
            "--http",
            "--server-first"
        ])
        .code,
        2
    );
}

#[test]
fn emit_istio_wasmplugin() {
    let dir = tempfile::tempdir().unwrap();
    let t = compile_example("staged-rollout", dir.path());
    let t = t.to_str().unwrap();
    let url = "oci://registry.example/certgate-filter:0.1.0";
    let run = certgate(&[
        "emit",
        "istio",
        "--table",
        t,
        "--name",
        "certgate",
        "--namespace",
        "inventory",
        "--selector",
        "app=inventory",
        "--url",
        url,
        "--audit-log",
        "all",
        "--format",
        "json",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v = json(&run.stdout);
    assert_eq!(v["apiVersion"], "extensions.istio.io/v1alpha1");
    assert_eq!(v["kind"], "WasmPlugin");
    assert_eq!(
        v["metadata"],
        serde_json::json!({"name": "certgate", "namespace": "inventory"})
    );
    let spec = &v["spec"];
    assert_eq!(spec["selector"]["matchLabels"]["app"], "inventory");
    assert_eq!(
        (
            spec["type"].as_str(),
            spec["phase"].as_str(),
            spec["failStrategy"].as_str()
        ),
        (Some("NETWORK"), Some("AUTHN"), Some("FAIL_CLOSE"))
    );
    assert_eq!(spec["pluginName"], "certgate");
    assert_eq!(spec["url"], url);
    assert_eq!(spec["pluginConfig"]["audit"]["log"], "all");
    let table = base64::engine::general_purpose::STANDARD
        .decode(spec["pluginConfig"]["table"].as_str().unwrap())
        .unwrap();
    assert_eq!(table, std::fs::read(t).unwrap());

    let yaml = certgate(&[
        "emit", "istio", "--table", t, "--name", "certgate", "--url", url,
    ]);
    assert_eq!(yaml.code, 0);
    assert!(
        yaml.stdout.contains("  pluginConfig:\n    table: \""),
        "{}",
        yaml.stdout
    );
    for bad in [
        vec![
            "emit",
            "istio",
            "--table",
            t,
            "--name",
            "Cert_Gate",
            "--url",
            url,
        ],
        vec![
            "emit",
            "istio",
            "--table",
            t,
            "--name",
            "certgate",
            "--url",
            "ftp://x/y",
        ],
        vec![
            "emit",
            "istio",
            "--table",
            t,
            "--name",
            "certgate",
            "--url",
            url,
            "--selector",
            "novalue",
        ],
    ] {
        let run = certgate(&bad);
        assert_eq!(run.code, 2, "{bad:?}");
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    }
}

#[test]
fn emit_istio_refuses_tables_too_large_for_kubernetes() {
    let dir = tempfile::tempdir().unwrap();
    // 120k revoked serials are ~960 kB of table, ~1.3 MB in base64.
    let serials: Vec<String> = (1..=120_000u32).map(|i| format!("\"{i:x}\"")).collect();
    let policy = format!(
        "{GOOD}  revocation:\n    serials: [{}]\n",
        serials.join(", ")
    );
    let p = write(dir.path(), "big.yaml", &policy);
    let out = dir.path().join("big.cgt");
    let run = certgate(&["compile", &p, "-o", out.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = certgate(&[
        "emit",
        "istio",
        "--table",
        out.to_str().unwrap(),
        "--name",
        "big",
        "--url",
        "oci://r/x:1",
    ]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("limit for a Kubernetes object"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty());
    // Envoy has no such limit.
    assert_eq!(
        certgate(&["emit", "envoy", "--table", out.to_str().unwrap()]).code,
        0
    );
}

#[test]
fn every_subcommand_has_help_with_examples() {
    for sub in [
        "compile", "keygen", "check", "inspect", "eval", "cert", "crl", "emit",
    ] {
        let run = certgate(&[sub, "--help"]);
        assert_eq!(run.code, 0, "{sub}");
        assert!(run.stdout.contains("Examples:"), "{sub}: {}", run.stdout);
    }
    for target in ["envoy", "istio"] {
        let run = certgate(&["emit", target, "--help"]);
        assert!(run.stdout.contains("Examples:"), "{target}");
    }
}

/// Runs `certgate` with extra environment variables.
fn certgate_env(args: &[&str], env: &[(&str, &str)]) -> crate::common::Run {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_certgate"))
        .args(args)
        .current_dir(crate_dir())
        .env("NO_COLOR", "1")
        .env_remove("SOURCE_DATE_EPOCH")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    crate::common::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

#[test]
fn keygen_writes_a_private_key_once_and_prints_the_pinnable_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("signing.key");
    let run = certgate(&["keygen", "-o", key.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let public = run.stdout.trim().to_string();
    assert!(public.starts_with("ed25519:"), "{public}");
    let private = std::fs::read_to_string(&key).unwrap();
    assert!(
        private.starts_with("-----BEGIN PRIVATE KEY-----"),
        "{private}"
    );
    let pub_pem = std::fs::read_to_string(dir.path().join("signing.key.pub")).unwrap();
    assert!(
        pub_pem.starts_with("-----BEGIN PUBLIC KEY-----"),
        "{pub_pem}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Never overwritten.
    let again = certgate(&["keygen", "-o", key.to_str().unwrap()]);
    assert_eq!(again.code, 2);
    assert!(
        again.stderr.contains("never overwritten") || again.stderr.contains("already exists"),
        "{}",
        again.stderr
    );
    assert_eq!(std::fs::read_to_string(&key).unwrap(), private);
}

#[test]
fn compile_signs_stamps_and_keeps_issue_times_monotonic() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    let public = certgate(&["keygen", "-o", key.to_str().unwrap()]).stdout;
    let public = public.trim();
    let policy = write(
        dir.path(),
        "p.yaml",
        "apiVersion: certgate.dev/v1alpha1\nkind: MeshTLSPolicy\nmetadata: {name: payments}\nspec:\n  revocation:\n    maxAge: 1h\n  rules:\n    - name: a\n      action: allow\n      principals: [\"spiffe://example.org/ns/a/sa/b\"]\n",
    );
    let out = dir.path().join("t.cgt");
    let out_s = out.to_str().unwrap();
    let run = certgate_env(
        &[
            "compile",
            &policy,
            "-o",
            out_s,
            "--sign-key",
            key.to_str().unwrap(),
        ],
        &[("SOURCE_DATE_EPOCH", "1767225600")],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("issued at 1767225600000 ms, signed by {public})")),
        "{}",
        run.stderr
    );
    let inspect = |p: &str| json(&certgate(&["inspect", "--format", "json", p]).stdout);
    let v = inspect(out_s);
    assert_eq!(v["issuedAtMs"], 1_767_225_600_000u64);
    assert_eq!(v["issuedAt"], "2026-01-01T00:00:00Z");
    assert_eq!(v["expiresAtMs"], 1_767_225_600_000u64 + 3_600_000);
    assert_eq!(v["signer"], public);
    let human = certgate(&["inspect", out_s]).stdout;
    assert!(human.contains(&format!("signer    {public}")), "{human}");
    assert!(human.contains("expires   2026-01-01T01:00:00Z"), "{human}");

    // Compiling again at the same (or an earlier) time: one millisecond later, so a feed
    // never sees two tables of one lineage issued at the same time.
    for _ in 0..2 {
        let run = certgate_env(
            &["compile", &policy, "-o", out_s],
            &[("SOURCE_DATE_EPOCH", "1767225500")],
        );
        assert_eq!(run.code, 0, "{}", run.stderr);
    }
    let v = inspect(out_s);
    assert_eq!(v["issuedAtMs"], 1_767_225_600_002u64);
    assert_eq!(v["signer"], serde_json::Value::Null);
    // A later time is taken as is.
    let run = certgate(&[
        "compile",
        &policy,
        "-o",
        out_s,
        "--issued-at-ms",
        "1800000000000",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(inspect(out_s)["issuedAtMs"], 1_800_000_000_000u64);

    // A SOURCE_DATE_EPOCH that is not a number of seconds is a usage error.
    let bad = certgate_env(
        &["compile", &policy, "-o", out_s],
        &[("SOURCE_DATE_EPOCH", "yesterday")],
    );
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("SOURCE_DATE_EPOCH"), "{}", bad.stderr);
    // A key that is not a private key costs nothing: exit 2 before compiling.
    let pub_file = format!("{}.pub", key.to_str().unwrap());
    let bad = certgate(&["compile", &policy, "-o", out_s, "--sign-key", &pub_file]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("not an Ed25519 private key"),
        "{}",
        bad.stderr
    );
}

#[test]
fn emit_pins_feed_keys_and_lineage() {
    let dir = tempfile::tempdir().unwrap();
    let t = compile_example("zero-trust", dir.path());
    let t = t.to_str().unwrap();
    let key = dir.path().join("k");
    let public = certgate(&["keygen", "-o", key.to_str().unwrap()]).stdout;
    let pub_file = format!("{}.pub", key.to_str().unwrap());
    let feed = |extra: &[&str]| {
        let mut args = vec!["emit", "envoy", "--format", "json", "--feed-cluster", "f"];
        args.extend_from_slice(extra);
        certgate(&args)
    };
    let run = feed(&[
        "--table",
        t,
        "--feed-public-key",
        &pub_file,
        "--feed-public-key",
        public.trim(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v = json(&run.stdout);
    let fc = filter_config(
        v["typed_config"]["config"]["configuration"]["value"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(
        fc["feed"]["publicKeys"],
        serde_json::json!([public.trim(), public.trim()])
    );
    assert_eq!(
        fc["feed"]["lineage"],
        serde_json::json!(["payments-inbound"])
    );
    assert_eq!(fc["feed"].get("allowUnsigned"), None);

    // No key and no --feed-allow-unsigned; no table and no lineage; a lineage that
    // differs from the table's: each a usage error.
    for (args, want) in [
        (vec!["--table", t], "--feed-public-key"),
        (vec!["--feed-public-key", public.trim()], "--feed-lineage"),
        (
            vec!["--table", t, "--feed-allow-unsigned", "--feed-lineage", "x"],
            "differs",
        ),
        (
            vec!["--table", t, "--feed-public-key", "ed25519:AAAA"],
            "ed25519:AAAA",
        ),
    ] {
        let run = feed(&args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stdout);
        assert!(run.stderr.contains(want), "{args:?}: {}", run.stderr);
    }
    let run = feed(&[
        "--feed-allow-unsigned",
        "--feed-allow-loosening",
        "--feed-lineage",
        "a",
        "--feed-lineage",
        "b",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v = json(&run.stdout);
    let fc = filter_config(
        v["typed_config"]["config"]["configuration"]["value"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(fc["feed"]["lineage"], serde_json::json!(["a", "b"]));
    assert_eq!(fc["feed"]["allowUnsigned"], true);
    assert_eq!(fc["feed"]["allowLoosening"], true);
}
