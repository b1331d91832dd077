//! Revocation an adversary cannot dodge, through a real Envoy: a re-encoded copy of a
//! revoked certificate (its ECDSA signature's `s` replaced by `n - s`, which still
//! verifies) is refused as the original is, and a leaf of an intermediate revoked by
//! the root's CRL is refused although Envoy hands the filter the leaf only.

use base64::Engine as _;

use crate::common::{emit, run, runtime, verdict};
use certgate_e2e::pki::{openssl_verifies, reencode_ecdsa_signature};
use certgate_e2e::{Case, EmitEnvoy, Expect, Leaf, Listener, Scenario, Wire};

/// The e2e matrix policy with `extra` added under `spec.revocation`.
fn policy_with(extra: &str) -> String {
    let text =
        std::fs::read_to_string(certgate_e2e::tools::repo_root().join("e2e/policies/enforce.yaml"))
            .unwrap_or_else(|e| panic!("enforce.yaml: {e}"));
    let anchor = "    crls: [crl/intermediate.crl]\n";
    assert!(text.contains(anchor), "enforce.yaml changed: {text}");
    text.replace(anchor, &format!("{anchor}{extra}"))
}

fn pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

#[test]
fn a_re_encoded_copy_of_a_revoked_certificate_is_refused() {
    let mut run = run();
    let checkout = run.pki.leaf("checkout").clone();
    let chain = std::fs::read(&checkout.chain_pem).unwrap_or_else(|e| panic!("chain: {e}"));
    let blocks = ruleset::cert::pem_blocks(&chain).unwrap_or_else(|e| panic!("chain: {e}"));
    let original = &blocks[0].der;
    let copy = reencode_ecdsa_signature(original).unwrap_or_else(|e| panic!("{e:#}"));
    assert_ne!(&copy, original);

    // The copy is a valid certificate of the same CA: openssl verifies it, and
    // certgate reads another whole-certificate SHA-256 but the same certificate key.
    let dir = run.subdir("reencoded").unwrap_or_else(|e| panic!("{e:#}"));
    let copy_leaf = dir.join("copy.leaf.pem");
    std::fs::write(&copy_leaf, pem(&copy)).unwrap_or_else(|e| panic!("{e}"));
    for leaf in [&copy_leaf, &checkout.chain_pem] {
        assert!(
            openssl_verifies(&run.pki.root_pem, &run.pki.intermediate_pem, leaf)
                .unwrap_or_else(|e| panic!("{e:#}")),
            "openssl does not verify {}",
            leaf.display()
        );
    }
    let (a, b) = (
        ruleset::cert::parse_der(original).unwrap_or_else(|e| panic!("{e}")),
        ruleset::cert::parse_der(&copy).unwrap_or_else(|e| panic!("{e}")),
    );
    assert_ne!(a.sha256, b.sha256);
    assert_eq!(a.tbs_sha256(), b.tbs_sha256());

    // The copy, presented with the intermediate and the original's key.
    let copy_chain = dir.join("copy.pem");
    let intermediate =
        std::fs::read_to_string(&run.pki.intermediate_pem).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&copy_chain, format!("{}{intermediate}", pem(&copy)))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut spec = checkout.spec.clone();
    spec.name = "checkout-reencoded";
    run.pki.leaves.push(Leaf {
        spec,
        chain_pem: copy_chain,
        key_pem: checkout.key_pem.clone(),
    });

    // Revoke the original by file, leaf only.
    std::fs::write(run.pki.dir.join("checkout.leaf.pem"), pem(original))
        .unwrap_or_else(|e| panic!("{e}"));
    let table = run
        .compile_text(
            "revoke-certificate.yaml",
            &policy_with("    certificates: [checkout.leaf.pem]\n"),
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    let filter = emit(&run, &table, EmitEnvoy::default());
    runtime().block_on(async {
        let s = Scenario::start(
            &run,
            "revoked-certificate",
            vec![Listener::new("tcp", filter, Wire::Echo)],
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
        let cases = [
            Case::new(
                "the revoked certificate is closed",
                "checkout",
                Expect::deny("revoked_certificate"),
            ),
            Case::new(
                "its re-encoded copy (s -> n - s) is closed too",
                "checkout-reencoded",
                Expect::deny("revoked_certificate"),
            ),
            Case::new(
                "another certificate still gets through",
                "web",
                Expect::allow("frontend-and-checkout"),
            ),
        ];
        verdict(
            &s.target("tcp").with_eval(&run.certgate, &table),
            &run,
            &cases,
        )
        .await;
    });
}

#[test]
fn a_leaf_of_a_revoked_intermediate_is_refused() {
    let run = run();
    // The root's CRL revokes the intermediate; the compiler knows the intermediate
    // from `caCertificates`, so everything it issued is revoked. Every CRL of the
    // document is checked against `crlIssuers`.
    let table = run
        .compile_text(
            "revoke-intermediate.yaml",
            &policy_with(
                "    crls: [crl/intermediate.crl, crl/root.crl]\n    crlIssuers: [root.pem, intermediate.pem]\n    caCertificates: [intermediate.pem]\n",
            )
            .replacen("    crls: [crl/intermediate.crl]\n", "", 1),
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    let filter = emit(&run, &table, EmitEnvoy::default());
    runtime().block_on(async {
        let s = Scenario::start(
            &run,
            "revoked-intermediate",
            vec![Listener::new("tcp", filter, Wire::Echo)],
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
        // The clients send leaf + intermediate and Envoy trusts the root: the
        // handshake succeeds, the filter sees the leaf only.
        let cases = [
            Case::new(
                "a leaf of the revoked intermediate is closed",
                "web",
                Expect::deny("revoked_issuer"),
            ),
            Case::new(
                "another leaf of it is closed too",
                "checkout",
                Expect::deny("revoked_issuer"),
            ),
        ];
        verdict(
            &s.target("tcp").with_eval(&run.certgate, &table),
            &run,
            &cases,
        )
        .await;
    });
    // The same intermediate without the root's CRL: its leaves pass.
    let table = run
        .compile_text(
            "intermediate-not-revoked.yaml",
            &policy_with("    caCertificates: [intermediate.pem]\n"),
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    let out = run
        .certgate
        .eval_cert(&table, &run.pki.leaf("web").chain_pem, Some("1.3"), None)
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(out["reason"], "allow_rule", "{out}");
}
