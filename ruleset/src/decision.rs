//! The result of evaluation: an action, a stable reason code and the rule that decided.

use crate::{Action, Mode, Table};

/// Why a decision was made. The `code()` strings are stable: audit records, metrics
/// and tests depend on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The peer presented no certificate.
    NoPeerCert,
    /// The peer certificate could not be parsed.
    BadPeerCert,
    /// The host verified a certificate but does not hand it over (Envoy before 1.38),
    /// and the table needs more than the host vouches for (any revocation entry, key,
    /// signature or lifetime constraints, or a first URI SAN that is no SPIFFE ID).
    PeerCertificateUnavailable,
    /// The certificate has no `spiffe://` URI SAN.
    NoSpiffeId,
    /// The certificate has more than one `spiffe://` URI SAN.
    MultipleSpiffeIds,
    /// The certificate's SPIFFE ID is not a valid SPIFFE ID.
    InvalidSpiffeId,
    /// Issuer and serial are in the revocation set.
    RevokedSerial,
    /// What its CA signed (the tbsCertificate) is in the revocation set, however the
    /// certificate is encoded.
    RevokedCertificate,
    /// The certificate's public key is in the revocation set.
    RevokedKey,
    /// The CA that issued the certificate is revoked.
    RevokedIssuer,
    /// The SPIFFE ID's trust domain is not one of the policy's.
    UntrustedDomain,
    /// The key type is not allowed.
    KeyTypeNotAllowed,
    /// The RSA key is smaller than `rsaMinBits`.
    WeakRsaKey,
    /// The ECDSA curve is not in `ecdsaCurves`.
    CurveNotAllowed,
    /// The signature algorithm uses a forbidden hash.
    ForbiddenSignature,
    /// `notAfter - notBefore` exceeds `maxLifetime`.
    LifetimeTooLong,
    /// The negotiated TLS version is below `minVersion`.
    TlsVersionTooLow,
    /// The negotiated TLS version is unknown while `minVersion` is set.
    TlsVersionUnknown,
    /// A deny rule matched.
    DenyRule,
    /// An allow rule matched.
    AllowRule,
    /// No rule matched and the default action is deny.
    DefaultDeny,
    /// No rule matched and the default action is allow.
    DefaultAllow,
    /// A host fed by a live revocation feed has had no good table for longer than its
    /// `maxStale`, and the table says `onStale: deny` (or there is no table yet).
    StaleRevocation,
}

impl Reason {
    /// Every reason, in declaration order (for metrics defined up front).
    pub const ALL: [Reason; 23] = [
        Reason::NoPeerCert,
        Reason::BadPeerCert,
        Reason::PeerCertificateUnavailable,
        Reason::NoSpiffeId,
        Reason::MultipleSpiffeIds,
        Reason::InvalidSpiffeId,
        Reason::RevokedSerial,
        Reason::RevokedCertificate,
        Reason::RevokedKey,
        Reason::RevokedIssuer,
        Reason::UntrustedDomain,
        Reason::KeyTypeNotAllowed,
        Reason::WeakRsaKey,
        Reason::CurveNotAllowed,
        Reason::ForbiddenSignature,
        Reason::LifetimeTooLong,
        Reason::TlsVersionTooLow,
        Reason::TlsVersionUnknown,
        Reason::DenyRule,
        Reason::AllowRule,
        Reason::DefaultDeny,
        Reason::DefaultAllow,
        Reason::StaleRevocation,
    ];

    /// The stable snake_case code.
    pub fn code(self) -> &'static str {
        match self {
            Reason::NoPeerCert => "no_peer_cert",
            Reason::BadPeerCert => "bad_peer_cert",
            Reason::PeerCertificateUnavailable => "peer_certificate_unavailable",
            Reason::NoSpiffeId => "no_spiffe_id",
            Reason::MultipleSpiffeIds => "multiple_spiffe_ids",
            Reason::InvalidSpiffeId => "invalid_spiffe_id",
            Reason::RevokedSerial => "revoked_serial",
            Reason::RevokedCertificate => "revoked_certificate",
            Reason::RevokedKey => "revoked_key",
            Reason::RevokedIssuer => "revoked_issuer",
            Reason::UntrustedDomain => "untrusted_domain",
            Reason::KeyTypeNotAllowed => "key_type_not_allowed",
            Reason::WeakRsaKey => "weak_rsa_key",
            Reason::CurveNotAllowed => "curve_not_allowed",
            Reason::ForbiddenSignature => "forbidden_signature",
            Reason::LifetimeTooLong => "lifetime_too_long",
            Reason::TlsVersionTooLow => "tls_version_too_low",
            Reason::TlsVersionUnknown => "tls_version_unknown",
            Reason::DenyRule => "deny_rule",
            Reason::AllowRule => "allow_rule",
            Reason::DefaultDeny => "default_deny",
            Reason::DefaultAllow => "default_allow",
            Reason::StaleRevocation => "stale_revocation",
        }
    }

    /// One sentence for the person reading a decision: what happened, in the policy's
    /// words (field names in backticks). The playground shows it next to a decision and
    /// docs/policy.md's reason table is checked against it; not stable like
    /// [`Reason::code`].
    pub fn description(self) -> &'static str {
        match self {
            Reason::NoPeerCert => "The peer presented no certificate.",
            Reason::BadPeerCert => "The peer certificate could not be parsed.",
            Reason::PeerCertificateUnavailable => "The proxy verified a certificate but does not hand it over (Envoy before 1.38), and the table needs more than the proxy vouches for: a revocation entry, a key, signature or lifetime constraint, or a first URI SAN that is no SPIFFE ID.",
            Reason::NoSpiffeId => "The certificate has no `spiffe://` URI SAN.",
            Reason::MultipleSpiffeIds => "The certificate has more than one `spiffe://` URI SAN.",
            Reason::InvalidSpiffeId => "The certificate's SPIFFE ID is not a valid SPIFFE ID.",
            Reason::RevokedSerial => "The certificate's issuer and serial are revoked (a CRL or `revocation.serials`), or the serial is revoked for every issuer.",
            Reason::RevokedCertificate => "What the certificate's CA signed (the tbsCertificate) is revoked (`revocation.certificates`), however the certificate is encoded.",
            Reason::RevokedKey => "The certificate's public key is revoked (`revocation.publicKeys`).",
            Reason::RevokedIssuer => "The CA that issued the certificate is revoked (`revocation.issuers`, or a CRL revoking a known CA).",
            Reason::UntrustedDomain => "The SPIFFE ID's trust domain is not in `peerCertificate.trustDomains`.",
            Reason::KeyTypeNotAllowed => "The key type is not allowed by `peerCertificate.keys`.",
            Reason::WeakRsaKey => "The RSA key is smaller than `keys.rsaMinBits`.",
            Reason::CurveNotAllowed => "The ECDSA curve is not in `keys.ecdsaCurves`.",
            Reason::ForbiddenSignature => "The certificate's signature uses a hash in `forbidSignatureAlgorithms`.",
            Reason::LifetimeTooLong => "The certificate's lifetime (`notAfter - notBefore`) exceeds `peerCertificate.maxLifetime`.",
            Reason::TlsVersionTooLow => "The negotiated TLS version is below `tls.minVersion`.",
            Reason::TlsVersionUnknown => "`tls.minVersion` is set and the negotiated TLS version is unknown.",
            Reason::DenyRule => "A deny rule matched (deny rules are tried before allow rules).",
            Reason::AllowRule => "An allow rule matched.",
            Reason::DefaultDeny => "No rule matched, and the default action is deny.",
            Reason::DefaultAllow => "No rule matched, and the default action is allow.",
            Reason::StaleRevocation => "The revocation data is stale (the table is past its expiry, or the live feed confirmed nothing within `maxStale`) and the table says `onStale: deny`, or no table has arrived yet.",
        }
    }

    /// Parses a stable code back into a reason.
    pub fn from_code(code: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.code() == code)
    }
}

/// The engine's answer for one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<'t> {
    /// What the policy decides (in audit mode: what enforce mode would do).
    pub action: Action,
    /// Why.
    pub reason: Reason,
    /// The name of the rule that decided, if a rule did.
    pub rule: Option<&'t str>,
    /// The name of the policy that declared the deciding rule, if a rule decided.
    pub policy: Option<&'t str>,
    /// The table's mode when the decision was made.
    pub mode: Mode,
    /// The peer's SPIFFE ID, when one was established.
    pub identity: Option<&'t str>,
}

impl Decision<'static> {
    /// The decision of a host whose revocation data is stale and may not be enforced
    /// (the table is past its expiry, or a live feed confirmed nothing within its
    /// `maxStale`, and the table says `onStale: deny`), or that has no table yet: deny
    /// as [`Reason::StaleRevocation`], before any certificate is looked at. The mode is
    /// the stale table's; without a table, the host's configured mode (`mode_override`),
    /// else enforce: no table is no reason to let connections through.
    pub fn stale(table: Option<&Table>, mode_override: Option<Mode>) -> Decision<'static> {
        Decision {
            action: Action::Deny,
            reason: Reason::StaleRevocation,
            rule: None,
            policy: None,
            mode: table.map_or(mode_override.unwrap_or(Mode::Enforce), |t| t.mode),
            identity: None,
        }
    }
}

impl Decision<'_> {
    /// Whether the host must let the connection through: allow decisions, and
    /// every decision in audit mode.
    pub fn admits(&self) -> bool {
        self.action == Action::Allow || self.mode == Mode::Audit
    }

    /// Audit mode and the policy would have denied.
    pub fn would_deny(&self) -> bool {
        self.action == Action::Deny && self.mode == Mode::Audit
    }
}
