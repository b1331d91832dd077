//! Lowering: the checked policy model becomes one `ruleset::Table`.

use ruleset::{Constraints, Revocation, RevokedSerial, Table};
use sha2::{Digest, Sha256};

use crate::check::Merged;
use crate::diag::{Code, Diagnostic, Sink};
use crate::model::Policy;
use crate::source::Input;

/// One CRL file as read, for the digest.
#[derive(Debug, Clone)]
pub(crate) struct CrlBytes {
    pub(crate) name: String,
    pub(crate) bytes: Vec<u8>,
}

/// SHA-256 over every source the table was compiled from: each policy file's relative path
/// and contents in input order, then each CRL's path and bytes in the order they are named.
/// Each item is `path NUL length(u64, big-endian) bytes`, so no two source sets collide by
/// concatenation.
pub(crate) fn digest(inputs: &[Input], crls: &[CrlBytes]) -> [u8; 32] {
    let mut h = Sha256::new();
    let items = inputs
        .iter()
        .map(|i| (i.relative.as_str(), i.text.as_bytes()))
        .chain(crls.iter().map(|c| (c.name.as_str(), c.bytes.as_slice())));
    for (name, bytes) in items {
        h.update(name.as_bytes());
        h.update([0]);
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    }
    h.finalize().into()
}

/// A CA certificate as a CRL entry names it: its issuer's id and its serial.
type KnownCa = (u64, Vec<u8>);

pub(crate) fn lower(
    policies: &[Policy],
    merged: &Merged,
    digest: [u8; 32],
    sink: &mut Sink,
) -> Option<Table> {
    let mut rules = Vec::new();
    let mut serials: Vec<RevokedSerial> = Vec::new();
    let mut revocation = Revocation::default();
    // CA certificates a CRL may revoke: `crlIssuers` and `caCertificates` of every
    // document, by the (issuer, serial) a CRL entry names them with.
    let known_cas: Vec<(KnownCa, &[u8])> = policies
        .iter()
        .flat_map(|p| p.spec.crl_issuers.iter().chain(&p.spec.ca_certificates))
        .flat_map(|c| c.certs.iter())
        .filter_map(|der| Some((crate::revfiles::issuer_and_serial(der)?, der.as_slice())))
        .collect();
    let revoke_ca = |revocation: &mut Revocation, der: &[u8]| {
        if let Some((name, key_id)) = crate::revfiles::issuer_of(der) {
            revocation.add_issuer(name, key_id.as_deref());
        }
    };
    for (index, p) in policies.iter().enumerate() {
        let Ok(policy) = u16::try_from(index) else {
            sink.push(
                Diagnostic::new(
                    Code::TableLimit,
                    Some(p.name.span),
                    format!("too many policies: a table holds at most {}", u16::MAX),
                )
                .help("compile fewer policy documents into one table"),
            );
            return None;
        };
        for r in &p.spec.rules {
            rules.push(r.lower(policy));
        }
        serials.extend(p.spec.serials.iter().map(|s| s.value.clone()));
        for der in p.spec.certificates.iter().flat_map(|c| c.certs.iter()) {
            if let Ok(facts) = ruleset::cert::parse_der(der) {
                revocation.add_certificate(&facts.tbs_sha256());
            }
        }
        for key in p.spec.public_keys.iter().flat_map(|k| k.keys.iter()) {
            revocation.add_key(key);
        }
        for der in p.spec.issuers.iter().flat_map(|c| c.certs.iter()) {
            revoke_ca(&mut revocation, der);
        }
        for crl in p
            .spec
            .crls
            .iter()
            .chain(&p.spec.crl_urls)
            .filter_map(|c| c.crl.as_ref())
        {
            for (issuer, serial) in crl.entries() {
                serials.push(RevokedSerial {
                    issuer: Some(issuer),
                    serial: serial.to_vec(),
                });
                // A revoked CA the compiler knows revokes everything it issued.
                for (_, der) in known_cas
                    .iter()
                    .filter(|((i, s), _)| *i == issuer && s.as_slice() == serial)
                {
                    revoke_ca(&mut revocation, der);
                }
            }
        }
    }
    revocation.set_on_stale(merged.on_stale);
    for s in &serials {
        revocation.add_serial(s.issuer, &s.serial);
    }
    // The data is current until the first CRL's nextUpdate (`Compilation::stamp` also
    // applies `maxAge`, which counts from the issue time).
    let expires_at_ms = policies
        .iter()
        .flat_map(|p| p.spec.crls.iter().chain(&p.spec.crl_urls))
        .filter_map(|c| c.crl.as_ref()?.next_update)
        .min()
        .map(|secs| u64::try_from(secs).unwrap_or(0).saturating_mul(1000).max(1));
    let mut table = Table {
        policy_names: policies.iter().map(|p| p.name.value.clone()).collect(),
        policy_digest: digest,
        issued_at_ms: 0,
        expires_at_ms,
        signer: None,
        mode: merged.mode,
        default_action: merged.default_action,
        audit_log: merged.audit_log,
        constraints: Constraints {
            min_tls: merged.min_tls,
            trust_domains: merged.trust_domains.clone(),
            max_lifetime_secs: merged.max_lifetime,
            keys: merged.keys.clone(),
            forbid_sig_hashes: merged.forbid_signatures.clone(),
        },
        revocation,
        rules,
    };
    table.normalize();
    Some(table)
}
