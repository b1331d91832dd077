//! The CLI contract: exit codes, nothing written on error, decisions, certificate and CRL
//! facts, and the emitted Envoy and Istio configuration.

use std::path::Path;

use base64::Engine as _;

use crate::common::{
    certgate, certgate_in, check_wasmplugin, check_wasmplugins, data_dir, emit_istio,
    emit_istio_unchecked, repo_dir,
};
use crate::examples::compile_example;

/// A public key (from `certgate keygen`) that feed variants pin.
const FEED_KEY: &str = "ed25519:wkpWUWG290s9N+bPs4JGXHw/xHKh67imXvPrtm4UW2g=";

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
    let cert = data_dir().join("tests/fixtures/web.pem");
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

/// Regression: `--cert-cache-size 100000` printed a configuration the filter refuses at
/// load (its `certCacheSize` maximum is 65536), so the proxy failed closed on every
/// connection. Emit now refuses it up front and prints nothing.
#[test]
fn emit_stats_prints_one_tag_extractor_per_label() {
    let run = certgate(&["emit", "stats", "--format", "json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v = json(&run.stdout);
    let tags = v["stats_config"]["stats_tags"].as_array().unwrap();
    let names: Vec<&str> = tags
        .iter()
        .map(|t| t["tag_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["plugin", "action", "reason", "mode", "policy"]);
    // Istio's convention: the first group is cut from the name, the second is the value.
    assert_eq!(tags[2]["regex"], "(reason=\\.=(.*?);\\.;)");
    let yaml = certgate(&["emit", "stats"]);
    assert_eq!(yaml.code, 0, "{}", yaml.stderr);
    assert!(
        yaml.stdout.starts_with("stats_config:\n  stats_tags:"),
        "{}",
        yaml.stdout
    );
}

#[test]
fn emit_envoy_names_the_plugin_for_its_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let t = compile_example("zero-trust", dir.path());
    let table = t.to_str().unwrap();
    let named = certgate(&[
        "emit",
        "envoy",
        "--table",
        table,
        "--format",
        "json",
        "--plugin-name",
        "edge",
    ]);
    assert_eq!(named.code, 0, "{}", named.stderr);
    assert_eq!(
        json(&named.stdout)["typed_config"]["config"]["name"],
        "edge"
    );
    let default = certgate(&["emit", "envoy", "--table", table, "--format", "json"]);
    assert_eq!(
        json(&default.stdout)["typed_config"]["config"]["name"],
        "certgate"
    );
}

#[test]
fn emit_refuses_a_cert_cache_the_filter_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let t = compile_example("zero-trust", dir.path());
    let emit = |size: &str| {
        certgate(&[
            "emit",
            "envoy",
            "--table",
            t.to_str().unwrap(),
            "--format",
            "json",
            "--cert-cache-size",
            size,
        ])
    };
    let largest = emit("65536");
    assert_eq!(largest.code, 0, "{}", largest.stderr);
    let v = json(&largest.stdout);
    let fc = filter_config(
        v["typed_config"]["config"]["configuration"]["value"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(fc["certCacheSize"], 65536);
    assert_eq!(
        ruleset::MAX_CERT_CACHE_SIZE,
        65536,
        "docs/filter.md states 0..65536"
    );

    for too_large in ["65537", "100000", "18446744073709551615"] {
        let run = emit(too_large);
        assert_eq!(run.code, 2, "{too_large}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{too_large}: {}", run.stdout);
        assert!(
            run.stderr.contains(&format!(
                "invalid value '{too_large}' for '--cert-cache-size <N>'"
            )) && run.stderr.contains("at most 65536"),
            "{}",
            run.stderr
        );
    }
    let negative = emit("-1");
    assert_eq!(negative.code, 2, "{}", negative.stderr);
    assert!(negative.stdout.is_empty(), "{}", negative.stdout);
}

/// Regression: emit checked `--feed-path` for a leading `/` only and `--feed-authority` not
/// at all, so `--feed-path '/a b'` printed a configuration the filter refuses at load.
/// Every limit now comes from the filter's own configuration crate: for each value the
/// filter refuses in its JSON, emit refuses the flag, names it, and prints nothing.
#[test]
fn emit_refuses_each_feed_setting_the_filter_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let t = compile_example("zero-trust", dir.path());
    let t = t.to_str().unwrap();
    let base = [
        ("cluster", "f"),
        ("path", "/t"),
        ("interval", "5s"),
        ("maxStale", "10m"),
    ];
    for (flag, value, key) in [
        ("--feed-path", "/a b", "path"),
        ("--feed-path", "t", "path"),
        ("--feed-authority", "a b", "authority"),
        ("--feed-authority", "", "authority"),
        ("--feed-cluster", "", "cluster"),
        ("--feed-interval", "50ms", "interval"),
        ("--feed-max-stale", "1s", "maxStale"),
        ("--feed-timeout", "0s", "timeout"),
        ("--feed-timeout", "25h", "timeout"),
    ] {
        // The filter's side: the same setting in its configuration JSON.
        let mut feed: Vec<(&str, &str)> = base.iter().copied().filter(|(k, _)| *k != key).collect();
        feed.push((key, value));
        let members: Vec<String> = feed
            .iter()
            .map(|(k, v)| format!("{}:{}", serde_json::json!(k), serde_json::json!(v)))
            .collect();
        let text = format!(
            r#"{{"table":"","feed":{{{},"allowUnsigned":true,"lineage":["p"]}}}}"#,
            members.join(",")
        );
        assert!(
            filter_config::Config::parse(text.as_bytes()).is_err(),
            "the filter takes {text}"
        );
        // Emit's side.
        let mut args = vec!["emit", "envoy", "--table", t, "--feed-allow-unsigned"];
        if flag != "--feed-cluster" {
            args.extend(["--feed-cluster", "f"]);
        }
        args.extend([flag, value]);
        let run = certgate(&args);
        assert_eq!(run.code, 2, "{flag} {value:?}: {}", run.stdout);
        assert!(run.stdout.is_empty(), "{flag} {value:?}: {}", run.stdout);
        assert!(
            run.stderr.contains(&format!("`{flag}")),
            "{flag} {value:?}: {}",
            run.stderr
        );
    }
}

#[test]
fn emit_istio_wasmplugin() {
    let dir = tempfile::tempdir().unwrap();
    let t = compile_example("staged-rollout", dir.path());
    let t = t.to_str().unwrap();
    let url = "oci://registry.example/certgate-filter:0.1.0";
    let run = emit_istio(&[
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
    assert_eq!(
        run.stderr, "",
        "no warning for a namespaced, selected plugin"
    );
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
    // Safe by default: inbound listeners only (issue 13: outbound connections carry no
    // client certificate and would all be refused).
    assert_eq!(spec["match"], serde_json::json!([{"mode": "SERVER"}]));
    assert_eq!(spec["pluginName"], "certgate");
    assert_eq!(spec["url"], url);
    assert_eq!(spec["pluginConfig"]["audit"]["log"], "all");
    for absent in ["sha256", "imagePullPolicy", "imagePullSecret", "priority"] {
        assert!(spec.get(absent).is_none(), "{absent} only when asked for");
    }
    let table = base64::engine::general_purpose::STANDARD
        .decode(spec["pluginConfig"]["table"].as_str().unwrap())
        .unwrap();
    assert_eq!(table, std::fs::read(t).unwrap());

    let yaml = emit_istio(&[
        "--table",
        t,
        "--name",
        "certgate",
        "--namespace",
        "inventory",
        "--url",
        url,
    ]);
    assert_eq!(yaml.code, 0, "{}", yaml.stderr);
    assert!(
        yaml.stdout
            .contains("  match:\n    - mode: SERVER\n  pluginConfig:\n    table: \""),
        "{}",
        yaml.stdout
    );
}

/// Every option of `emit istio`, alone and together, in YAML and JSON: each output is
/// checked against the pinned CRD by `emit_istio`, and here for the field it sets.
#[test]
fn emit_istio_variants_validate_against_the_pinned_crd() {
    let dir = tempfile::tempdir().unwrap();
    let t = compile_example("zero-trust", dir.path());
    let t = t.to_str().unwrap();
    let digest = "sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef";
    let hex = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let feed = "outbound|8080||certgate-feed.certgate.svc.cluster.local";
    type Check = fn(&serde_json::Value) -> serde_json::Value;
    let variants: Vec<(Vec<&str>, Check, serde_json::Value)> = vec![
        (
            vec![],
            |v| v["spec"]["match"].clone(),
            serde_json::json!([{"mode": "SERVER"}]),
        ),
        (
            vec!["--match", "client"],
            |v| v["spec"]["match"].clone(),
            serde_json::json!([{"mode": "CLIENT"}]),
        ),
        (
            vec!["--match", "client-and-server"],
            |v| v["spec"]["match"].clone(),
            serde_json::json!([{"mode": "CLIENT_AND_SERVER"}]),
        ),
        (
            vec!["--ports", "8443,9443", "--ports", "15000"],
            |v| v["spec"]["match"].clone(),
            serde_json::json!([{"mode": "SERVER", "ports": [{"number": 8443}, {"number": 9443}, {"number": 15000}]}]),
        ),
        (
            vec!["--sha256", digest],
            |v| v["spec"]["sha256"].clone(),
            serde_json::json!(hex),
        ),
        (
            vec!["--sha256", hex],
            |v| v["spec"]["sha256"].clone(),
            serde_json::json!(hex),
        ),
        (
            vec![
                "--image-pull-policy",
                "Always",
                "--image-pull-secret",
                "registry-cred",
            ],
            |v| serde_json::json!([v["spec"]["imagePullPolicy"], v["spec"]["imagePullSecret"]]),
            serde_json::json!(["Always", "registry-cred"]),
        ),
        (
            vec!["--image-pull-policy", "IfNotPresent"],
            |v| v["spec"]["imagePullPolicy"].clone(),
            serde_json::json!("IfNotPresent"),
        ),
        (
            vec!["--priority", "-10"],
            |v| v["spec"]["priority"].clone(),
            serde_json::json!(-10),
        ),
        (
            vec!["--priority", "2147483647"],
            |v| v["spec"]["priority"].clone(),
            serde_json::json!(2147483647),
        ),
        (
            vec!["--revision", "1-27-0"],
            |v| v["metadata"]["labels"].clone(),
            serde_json::json!({"istio.io/rev": "1-27-0"}),
        ),
        (
            vec![
                "--selector",
                "app.kubernetes.io/name=payments",
                "--selector",
                "tier=",
                "--selector",
                "version=v1.2_b",
            ],
            |v| v["spec"]["selector"]["matchLabels"].clone(),
            serde_json::json!({"app.kubernetes.io/name": "payments", "tier": "", "version": "v1.2_b"}),
        ),
        (
            // Values YAML would read as a boolean, a float or an octal number stay
            // strings (the CRD wants strings).
            vec![
                "--selector",
                "canary=true",
                "--selector",
                "version=1.20",
                "--selector",
                "build=007",
                "--revision",
                "1.27",
            ],
            |v| {
                serde_json::json!([
                    v["spec"]["selector"]["matchLabels"],
                    v["metadata"]["labels"]
                ])
            },
            serde_json::json!([{"canary": "true", "version": "1.20", "build": "007"}, {"istio.io/rev": "1.27"}]),
        ),
        (
            vec!["--namespace", "istio-system", "--mesh-wide"],
            |v| {
                serde_json::json!([
                    v["metadata"]["namespace"],
                    v["spec"].get("selector").is_some()
                ])
            },
            serde_json::json!(["istio-system", false]),
        ),
        (
            vec![
                "--namespace",
                "mesh-root",
                "--root-namespace",
                "mesh-root",
                "--selector",
                "app=x",
            ],
            |v| v["metadata"]["namespace"].clone(),
            serde_json::json!("mesh-root"),
        ),
        (
            vec![
                "--feed-cluster",
                feed,
                "--feed-authority",
                "certgate-feed.certgate",
                "--feed-public-key",
                FEED_KEY,
                "--feed-lineage",
                "payments",
            ],
            |v| v["spec"]["pluginConfig"]["feed"]["cluster"].clone(),
            serde_json::json!(feed),
        ),
        (
            vec!["--server-first", "--mode", "audit"],
            |v| v["spec"]["pluginConfig"]["serverFirst"].clone(),
            serde_json::json!(true),
        ),
    ];
    let urls: [(&str, &str); 4] = [
        ("registry.example/certgate-filter:0.1.0", "oci://registry.example/certgate-filter:0.1.0"),
        ("oci://registry.example/certgate-filter@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "oci://registry.example/certgate-filter@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
        ("https://modules.example/certgate_filter.wasm", "https://modules.example/certgate_filter.wasm"),
        ("file:///etc/certgate/certgate_filter.wasm", "file:///etc/certgate/certgate_filter.wasm"),
    ];
    let mut emitted: Vec<(Vec<&str>, String)> = Vec::new();
    for (extra, check, want) in &variants {
        for (given, url) in urls {
            let file_url = url.starts_with("file://");
            if file_url
                && extra
                    .iter()
                    .any(|a| a.starts_with("--sha256") || a.starts_with("--image-pull"))
            {
                continue;
            }
            if !url.starts_with("oci://") && extra.contains(&"--image-pull-secret") {
                continue;
            }
            for format in ["yaml", "json"] {
                let mut args = vec!["--name", "certgate", "--url", given, "--format", format];
                if !extra.contains(&"--feed-cluster") {
                    args.extend(["--table", t]);
                }
                if !extra.contains(&"--namespace") {
                    args.extend(["--namespace", "payments"]);
                }
                args.extend(extra.iter().copied());
                let run = emit_istio_unchecked(&args);
                assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
                if format == "json" {
                    let v = json(&run.stdout);
                    assert_eq!(&check(&v), want, "{args:?}");
                    assert_eq!(v["spec"]["url"], url, "{args:?}");
                }
                emitted.push((args, run.stdout));
            }
        }
    }
    assert!(emitted.len() >= 100, "only {} variants", emitted.len());
    // One validator run for all of them; a finding names `object-<index>`.
    let texts: Vec<String> = emitted.iter().map(|(_, text)| text.clone()).collect();
    if let Err(findings) = check_wasmplugins(&texts) {
        let which: Vec<String> = emitted
            .iter()
            .enumerate()
            .filter(|(i, _)| findings.contains(&format!("object-{i}.yaml:")))
            .map(|(i, (args, _))| format!("object-{i}: {args:?}"))
            .collect();
        panic!(
            "the CRD rejects these variants:\n{}\n{findings}",
            which.join("\n")
        );
    }
}

/// The validator must be able to say no: a broken WasmPlugin fails, so a passing check
/// means something.
#[test]
fn the_crd_check_rejects_a_broken_wasmplugin() {
    let dir = tempfile::tempdir().unwrap();
    let t = compile_example("zero-trust", dir.path());
    let run = emit_istio(&[
        "--table",
        t.to_str().unwrap(),
        "--name",
        "certgate",
        "--namespace",
        "payments",
        "--url",
        "oci://r/x:1",
        "--sha256",
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let good = run.stdout;
    for (broken, why) in [
        (
            good.replace("mode: SERVER", "mode: INBOUND"),
            "match mode outside the enum",
        ),
        (
            good.replace("sha256: ", "sha256: sha256:"),
            "sha256 with a prefix",
        ),
        (
            good.replace("0123456789abcdef0123", "0123456789ABCDEF0123"),
            "uppercase sha256",
        ),
        (
            good.replace("  pluginName:", "  rootId: certgate\n  pluginName:"),
            "an unknown field",
        ),
        (
            good.replace("failStrategy: FAIL_CLOSE", "failStrategy: CLOSE"),
            "failStrategy outside the enum",
        ),
        (
            good.replace("  name: certgate", "  name: Cert_Gate"),
            "a name Kubernetes refuses",
        ),
        (
            good.replace("kind: WasmPlugin", "kind: WasmPlugins"),
            "the wrong kind",
        ),
        (
            good.replace(
                "  match:\n    - mode: SERVER\n",
                "  match:\n    - mode: SERVER\n      ports:\n        - number: 70000\n",
            ),
            "a port out of range",
        ),
    ] {
        assert_ne!(broken, good, "{why}: the edit must apply");
        assert!(
            check_wasmplugin(&broken).is_err(),
            "{why} passed the CRD check:\n{broken}"
        );
    }
    assert_eq!(check_wasmplugin(&good), Ok(()));
}

#[test]
fn emit_istio_refuses_what_istio_or_kubernetes_would_not_take() {
    let dir = tempfile::tempdir().unwrap();
    let t = compile_example("zero-trust", dir.path());
    let t = t.to_str().unwrap();
    let url = "oci://registry.example/certgate-filter:0.1.0";
    let feed = "outbound|8080||certgate-feed.certgate.svc.cluster.local";
    let long = "a".repeat(64);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--name", "Cert_Gate"], "`--name Cert_Gate` is not an RFC 1123 label"),
        (vec!["--name", &long], "is not an RFC 1123 label"),
        (vec!["--name", "cert.gate"], "is not an RFC 1123 label"),
        (vec!["--namespace", "Payments"], "`--namespace Payments` is not a Kubernetes namespace name"),
        (vec!["--url", "ftp://x/y"], "`--url ftp://x/y` must be an image reference"),
        (vec!["--url", "/etc/certgate/certgate_filter.wasm"], "must be an image reference"),
        (vec!["--url", "oci://"], "must be an image reference"),
        (vec!["--selector", "novalue"], "`--selector novalue` must be `key=value`"),
        (vec!["--selector", "app=a*"], "is not a Kubernetes label"),
        (vec!["--selector=-app=x"], "is not a Kubernetes label"),
        (vec!["--selector", "Bad_Prefix/app=x"], "is not a Kubernetes label"),
        (vec!["--selector", "app=x", "--selector", "app=y"], "label `app` is selected twice"),
        (vec!["--namespace", "istio-system"], "a WasmPlugin in the root namespace `istio-system` without `--selector` applies to every pod of the mesh"),
        (vec!["--namespace", "mesh-root", "--root-namespace", "mesh-root"], "root namespace `mesh-root`"),
        (vec!["--namespace", "payments", "--mesh-wide"], "`--mesh-wide` is for a plugin in the root namespace"),
        (vec!["--namespace", "istio-system", "--selector", "app=x", "--mesh-wide"], "`--mesh-wide` is for a plugin"),
        (vec!["--ports", "8443,8443"], "`--ports` must list distinct ports"),
        (vec!["--ports", "0"], "`--ports` must list distinct ports"),
        (vec!["--sha256", "abc"], "`--sha256 abc` must be 64 hex digits"),
        (vec!["--sha256", "sha512:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"], "must be 64 hex digits"),
        (vec!["--url", "file:///x.wasm", "--sha256", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"], "`--sha256` does not apply to a `file://` module"),
        (vec!["--url", "file:///x.wasm", "--image-pull-policy", "Always"], "`--image-pull-policy` does not apply"),
        (vec!["--url", "https://m.example/x.wasm", "--image-pull-secret", "cred"], "`--image-pull-secret` applies to `oci://` modules only"),
        (vec!["--image-pull-secret", "Cred"], "is not a Kubernetes Secret name"),
        (vec!["--url", "oci://r/x@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "--sha256", "1123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"], "`--sha256` differs from the digest in `--url"),
        (vec!["--revision", "canary!"], "`--revision canary!` is not a Kubernetes label value"),
        (vec!["--revision", ""], "is not a Kubernetes label value"),
        // Attempts to smuggle structure into the object are refused, not quoted away.
        (vec!["--url", "oci://r/x:1\nkind: Secret"], "must not contain spaces or control characters"),
        (vec!["--url", "oci://r/x:1 #"], "must not contain spaces or control characters"),
        (vec!["--selector", "app=x\nkind: Secret"], "is not a Kubernetes label"),
        (vec!["--selector", "app: x=y"], "is not a Kubernetes label"),
        (vec!["--revision", "1\n"], "is not a Kubernetes label value"),
        (vec!["--image-pull-secret", "cred\nx: y"], "is not a Kubernetes Secret name"),
        (vec!["--namespace", "certgate", "--feed-cluster", feed, "--feed-public-key", FEED_KEY], "the feed server's own namespace"),
    ];
    for (extra, want) in cases {
        // The defaults for what the case does not set (clap refuses a repeated flag).
        let mut full = vec!["--table", t];
        for (flag, value) in [
            ("--name", "certgate"),
            ("--url", url),
            ("--namespace", "payments"),
        ] {
            if !extra.contains(&flag) {
                full.extend([flag, value]);
            }
        }
        full.extend(extra.iter().copied());
        let run = emit_istio(&full);
        assert_eq!(run.code, 2, "{full:?}: {}", run.stdout);
        assert!(run.stdout.is_empty(), "{full:?}");
        assert!(
            run.stderr.contains(want),
            "{full:?}: want {want:?} in:\n{}",
            run.stderr
        );
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    }
    // `--priority` is an int32 in the CRD.
    let run = emit_istio(&[
        "--table",
        t,
        "--name",
        "c",
        "--namespace",
        "p",
        "--url",
        url,
        "--priority",
        "2147483648",
    ]);
    assert_eq!(run.code, 2, "{}", run.stdout);
}

#[test]
fn emit_istio_warns_where_it_cannot_be_sure() {
    let dir = tempfile::tempdir().unwrap();
    let t = compile_example("zero-trust", dir.path());
    let t = t.to_str().unwrap();
    let url = "oci://registry.example/certgate-filter:0.1.0";
    let feed = "outbound|8080||certgate-feed.certgate.svc.cluster.local";
    for (args, want) in [
        (
            vec!["--table", t, "--name", "c", "--url", url],
            "warning: no `--namespace` and no `--selector`",
        ),
        (
            vec![
                "--name",
                "c",
                "--url",
                url,
                "--namespace",
                "istio-system",
                "--mesh-wide",
                "--feed-cluster",
                feed,
                "--feed-public-key",
                FEED_KEY,
                "--feed-lineage",
                "payments",
            ],
            "warning: a mesh-wide plugin also selects the feed server's pods in `certgate`",
        ),
        (
            vec![
                "--name",
                "c",
                "--url",
                url,
                "--namespace",
                "certgate",
                "--selector",
                "app=api",
                "--feed-cluster",
                feed,
                "--feed-public-key",
                FEED_KEY,
                "--feed-lineage",
                "payments",
            ],
            "warning: the plugin shares the namespace `certgate` with the feed server",
        ),
        (
            vec![
                "--name",
                "c",
                "--url",
                url,
                "--namespace",
                "payments",
                "--feed-cluster",
                "certgate-feed",
                "--feed-public-key",
                FEED_KEY,
                "--feed-lineage",
                "payments",
            ],
            "warning: `--feed-cluster certgate-feed` is not an Istio service cluster name",
        ),
    ] {
        let run = emit_istio(&args);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains(want),
            "{args:?}: want {want:?} in:\n{}",
            run.stderr
        );
    }
}

/// `certgate emit istio` (namespace `payments`) of a table compiled from `GOOD` plus
/// `count` revoked serials into `dir` as `{name}.cgt`, the plugin named `name`.
fn emit_istio_revoking(dir: &Path, name: &str, count: u32) -> crate::common::Run {
    let serials: Vec<String> = (1..=count).map(|i| format!("\"{i:x}\"")).collect();
    let policy = format!(
        "{GOOD}  revocation:\n    serials: [{}]\n",
        serials.join(", ")
    );
    let p = write(dir, &format!("{name}.yaml"), &policy);
    let out = dir.join(format!("{name}.cgt"));
    let run = certgate(&["compile", &p, "-o", out.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    emit_istio(&[
        "--table",
        out.to_str().unwrap(),
        "--name",
        name,
        "--namespace",
        "payments",
        "--url",
        "oci://r/x:1",
    ])
}

/// Client-side `kubectl apply` stores the object in an annotation, and annotations are
/// limited to 256 KiB: warn above that, still print; refuse above 1 MB.
#[test]
fn emit_istio_warns_above_256_kib_and_refuses_above_1_mb() {
    let dir = tempfile::tempdir().unwrap();
    // 30k revoked serials are ~240 kB of table, ~320 kB in base64.
    let run = emit_istio_revoking(dir.path(), "mid", 30_000);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.len() > 256 * 1024);
    assert!(
        run.stderr.contains("warning: the WasmPlugin is")
            && run.stderr.contains("kubectl apply --server-side"),
        "{}",
        run.stderr
    );
    // A small table: no warning at all.
    let small = emit_istio(&[
        "--table",
        &compile_example("zero-trust", dir.path()).to_string_lossy(),
        "--name",
        "s",
        "--namespace",
        "p",
        "--url",
        "oci://r/x:1",
    ]);
    assert_eq!((small.code, small.stderr.as_str()), (0, ""));
}

#[test]
fn emit_istio_refuses_tables_too_large_for_kubernetes() {
    let dir = tempfile::tempdir().unwrap();
    // 120k revoked serials are ~960 kB of table, ~1.3 MB in base64.
    let run = emit_istio_revoking(dir.path(), "big", 120_000);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("limit for a Kubernetes object"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty());
    // Envoy has no such limit.
    let out = dir.path().join("big.cgt");
    assert_eq!(
        certgate(&["emit", "envoy", "--table", out.to_str().unwrap()]).code,
        0
    );
}

#[test]
fn every_subcommand_has_help_with_examples() {
    for sub in [
        "compile", "keygen", "check", "inspect", "eval", "cert", "crl", "emit", "package", "drill",
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

/// Regression: a serial written as OpenSSL prints a negative one (`-4F380A`) was read as
/// the positive 4F380A. A certificate openssl made with that serial is revoked by the
/// policy spelling `openssl x509 -serial` prints.
#[test]
fn a_negative_serial_written_as_openssl_prints_it_revokes_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("neg.pem");
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/O=Example/CN=Neg CA",
        ])
        .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"])
        .args(["-set_serial", "-0x4F380A"])
        .args([
            "-addext",
            "subjectAltName=URI:spiffe://cluster.local/ns/frontend/sa/web",
        ])
        .arg("-keyout")
        .arg(dir.path().join("key.pem"))
        .arg("-out")
        .arg(&pem)
        .output()
        .expect("the openssl CLI is needed to make test certificates");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(&pem)
        .output()
        .unwrap();
    let printed = String::from_utf8(printed.stdout).unwrap();
    assert_eq!(printed.trim(), "serial=-4F380A");
    let pem = pem.to_str().unwrap();

    let policy = |serial: &str| {
        format!("{GOOD}  revocation:\n    serials: [{{serial: \"{serial}\", issuer: \"CN=Neg CA,O=Example\"}}]\n")
    };
    let verdict = |serial: &str| {
        let p = write(dir.path(), "p.yaml", &policy(serial));
        let t = dir.path().join("t.cgt");
        let run = certgate(&["compile", &p, "-o", t.to_str().unwrap()]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let (_, d) = eval(
            t.to_str().unwrap(),
            &["--cert", pem, "--tls-version", "1.3", "--port", "8443"],
        );
        d["reason"].as_str().unwrap().to_owned()
    };
    assert_eq!(verdict("-4F380A"), "revoked_serial");
    assert_eq!(verdict("-4f:38:0a"), "revoked_serial");
    // `certgate cert` prints the content bytes, which revoke it too.
    let facts = certgate(&["cert", "--format", "json", pem]);
    assert_eq!(json(&facts.stdout)["certificates"][0]["serial"], "B0C7F6");
    assert_eq!(verdict("B0C7F6"), "revoked_serial");
    // The positive serial with the same digits is another certificate.
    assert_eq!(verdict("4F380A"), "allow_rule");
}

/// Regression: a 1.4 MB YAML file of aliases to a large string grew the compiler past
/// 800 MB. Run with its address space capped far below that, the compiler refuses the
/// file with the alias-budget diagnostic (exit 1), rather than dying for lack of memory.
#[test]
fn a_billion_laughs_file_is_refused_in_bounded_memory() {
    const ADDRESS_SPACE_KIB: u32 = 256 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let big = "x".repeat(1_000_000);
    let aliases = vec!["*big"; 100_000].join(", ");
    let text = format!("{GOOD}x-big: &big \"{big}\"\nx-all: [{aliases}]\n");
    assert!(text.len() < 1_700_000, "{}", text.len());
    let path = write(dir.path(), "laughs.yaml", &text);
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v {ADDRESS_SPACE_KIB} && exec \"$0\" check --format json \"$1\""
        ))
        .arg(env!("CARGO_BIN_EXE_certgate"))
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&stdout);
    let codes: Vec<&str> = report["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["certgate::yaml-alias-budget"]);
}

/// Regression: issuer names in BMPString or UniversalString never matched. A CA named in
/// BMPString issues a leaf and a CRL revoking it: the compiled CRL revokes it, and so does
/// a policy serial whose issuer is written as plain text.
#[test]
fn issuer_names_in_wide_string_types_revoke_through_crls_and_policy_serials() {
    let bmp = |s: &str| rcgen::DnValue::BmpString(rcgen::string::BmpString::try_from(s).unwrap());
    let ucs = |s: &str| {
        rcgen::DnValue::UniversalString(rcgen::string::UniversalString::try_from(s).unwrap())
    };
    type Value<'a> = &'a dyn Fn(&str) -> rcgen::DnValue;
    let types: [Value<'_>; 2] = [&bmp, &ucs];
    for value in types {
        let dir = tempfile::tempdir().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name
            .push(rcgen::DnType::OrganizationName, value("Exämple"));
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, value("Zürich CA"));
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).unwrap();
        let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        leaf.subject_alt_names = vec![rcgen::SanType::URI(
            rcgen::string::Ia5String::try_from("spiffe://cluster.local/ns/frontend/sa/web")
                .unwrap(),
        )];
        leaf.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x4f, 0x38, 0x0a]));
        let now = std::time::SystemTime::now();
        leaf.not_before = (now - std::time::Duration::from_secs(60)).into();
        leaf.not_after = (now + std::time::Duration::from_secs(3600)).into();
        let leaf_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let leaf = leaf.signed_by(&leaf_key, &ca).unwrap();
        let pem = write(dir.path(), "leaf.pem", &leaf.pem());
        let crl = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2026, 1, 1),
            next_update: rcgen::date_time_ymd(2099, 1, 1),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: vec![rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from_slice(&[0x4f, 0x38, 0x0a]),
                revocation_time: rcgen::date_time_ymd(2026, 1, 1),
                reason_code: None,
                invalidity_date: None,
            }],
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&ca)
        .unwrap();
        write(dir.path(), "ca.crl", &crl.pem().unwrap());

        let verdict = |revocation: &str| {
            let p = write(
                dir.path(),
                "p.yaml",
                &format!("{GOOD}  revocation:\n{revocation}"),
            );
            let t = dir.path().join("t.cgt");
            let run = certgate(&["compile", &p, "-o", t.to_str().unwrap()]);
            assert_eq!(run.code, 0, "{}", run.stderr);
            let (_, d) = eval(
                t.to_str().unwrap(),
                &["--cert", &pem, "--tls-version", "1.3", "--port", "8443"],
            );
            d["reason"].as_str().unwrap().to_owned()
        };
        assert_eq!(verdict("    crls: [ca.crl]\n"), "revoked_serial");
        assert_eq!(
            verdict("    serials: [{serial: \"4f:38:0a\", issuer: \"O=Exämple,CN=Zürich CA\"}]\n"),
            "revoked_serial"
        );
        assert_eq!(
            verdict("    serials: [{serial: \"4f:38:0a\", issuer: \"CN=Other CA\"}]\n"),
            "allow_rule"
        );
    }
}

/// Runs `certgate` with extra environment variables.
fn certgate_env(args: &[&str], env: &[(&str, &str)]) -> crate::common::Run {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_certgate"))
        .args(args)
        .current_dir(data_dir())
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

#[test]
fn emit_access_log_prints_an_ecs_logger_for_each_site() {
    // The release the e2e suite checks records against (its header names the tag).
    let pinned = std::fs::read_to_string(repo_dir().join("e2e/ecs/ecs_flat.yml")).unwrap();
    let tag = pinned
        .lines()
        .find_map(|l| l.strip_prefix("# tag: v"))
        .unwrap()
        .to_string();
    for (site, status) in [("listener", false), ("tcp-proxy", false), ("http", true)] {
        let run = certgate(&[
            "emit",
            "access-log",
            "--site",
            site,
            "--path",
            "/var/log/certgate.json",
            "--format",
            "json",
        ]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let v = json(&run.stdout);
        assert_eq!(v["name"], "envoy.access_loggers.file");
        let c = &v["typed_config"];
        assert_eq!(c["path"], "/var/log/certgate.json");
        assert_eq!(c["log_format"]["omit_empty_values"], true);
        let f = &c["log_format"]["json_format"];
        assert_eq!(f["ecs.version"], tag.as_str(), "{site}");
        assert_eq!(f["error.message"], "%DOWNSTREAM_TRANSPORT_FAILURE_REASON%");
        assert_eq!(
            f["certgate.decision"],
            "%FILTER_STATE(wasm.certgate.audit:PLAIN)%"
        );
        assert_eq!(f["http.response.status_code"].is_string(), status, "{site}");
    }
    let bad = certgate(&["emit", "access-log", "--site", "cluster"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
}
