//! SPIFFE ID validation, following the SPIFFE ID standard (`spiffe://trust-domain/path`):
//! lowercase trust domain of `[a-z0-9._-]`, path segments of `[A-Za-z0-9._-]`, no empty,
//! `.` or `..` segments, no percent-encoding, query, fragment, port or userinfo.

use std::fmt;

/// The URI scheme every SPIFFE ID starts with.
pub const SCHEME: &str = "spiffe://";
/// Longest accepted SPIFFE ID, in bytes (the standard's URI limit).
pub const MAX_ID_LEN: usize = 2048;
/// Longest accepted trust domain name, in bytes.
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// Why a string is not a valid SPIFFE ID, trust domain or pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpiffeError {
    /// Does not start with `spiffe://`.
    Scheme,
    /// The trust domain is empty.
    EmptyTrustDomain,
    /// The trust domain is longer than [`MAX_TRUST_DOMAIN_LEN`].
    TrustDomainTooLong,
    /// A character not allowed in a trust domain.
    TrustDomainChar(char),
    /// The ID is longer than [`MAX_ID_LEN`].
    TooLong,
    /// An empty path segment (`//` or a trailing `/`).
    EmptySegment,
    /// A `.` or `..` path segment.
    DotSegment,
    /// A character not allowed in a path segment.
    PathChar(char),
    /// A wildcard that is not a whole segment, or `**` not in the last segment.
    Wildcard(&'static str),
}

impl fmt::Display for SpiffeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpiffeError::Scheme => write!(f, "a SPIFFE ID must start with `spiffe://`"),
            SpiffeError::EmptyTrustDomain => write!(f, "the trust domain is empty"),
            SpiffeError::TrustDomainTooLong => write!(
                f,
                "the trust domain is longer than {MAX_TRUST_DOMAIN_LEN} bytes"
            ),
            SpiffeError::TrustDomainChar(c) => write!(
                f,
                "character `{}` is not allowed in a trust domain (only lowercase letters, digits, `.`, `-` and `_`)",
                c.escape_debug()
            ),
            SpiffeError::TooLong => write!(f, "a SPIFFE ID is at most {MAX_ID_LEN} bytes"),
            SpiffeError::EmptySegment => write!(f, "the path has an empty segment"),
            SpiffeError::DotSegment => write!(f, "`.` and `..` are not allowed as path segments"),
            SpiffeError::PathChar(c) => write!(
                f,
                "character `{}` is not allowed in a path segment (only letters, digits, `.`, `-` and `_`)",
                c.escape_debug()
            ),
            SpiffeError::Wildcard(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for SpiffeError {}

/// Whether `s` begins with the SPIFFE scheme (case-insensitively, as URI schemes are).
pub fn has_spiffe_scheme(s: &str) -> bool {
    s.get(..SCHEME.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(SCHEME))
}

/// Validates a trust domain name.
pub fn validate_trust_domain(td: &str) -> Result<(), SpiffeError> {
    if td.is_empty() {
        return Err(SpiffeError::EmptyTrustDomain);
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(SpiffeError::TrustDomainTooLong);
    }
    match td
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_'))
    {
        Some(c) => Err(SpiffeError::TrustDomainChar(c)),
        None => Ok(()),
    }
}

/// Validates one literal path segment.
pub(crate) fn validate_segment(seg: &str) -> Result<(), SpiffeError> {
    if seg.is_empty() {
        return Err(SpiffeError::EmptySegment);
    }
    if seg == "." || seg == ".." {
        return Err(SpiffeError::DotSegment);
    }
    match seg
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_'))
    {
        Some(c) => Err(SpiffeError::PathChar(c)),
        None => Ok(()),
    }
}

/// Splits a SPIFFE ID into trust domain and path (the path without its leading `/`,
/// `None` when the ID names the trust domain itself). Checks the scheme and length only.
pub(crate) fn split(id: &str) -> Result<(&str, Option<&str>), SpiffeError> {
    if id.len() > MAX_ID_LEN {
        return Err(SpiffeError::TooLong);
    }
    // The standard requires the lowercase scheme.
    let rest = id.strip_prefix(SCHEME).ok_or(SpiffeError::Scheme)?;
    Ok(match rest.split_once('/') {
        Some((td, path)) => (td, Some(path)),
        None => (rest, None),
    })
}

/// Validates a SPIFFE ID against the standard.
pub fn validate_id(id: &str) -> Result<(), SpiffeError> {
    let (td, path) = split(id)?;
    validate_trust_domain(td)?;
    if let Some(path) = path {
        path.split('/').try_for_each(validate_segment)?;
    }
    Ok(())
}

/// The trust domain of a SPIFFE ID (not validated).
pub fn trust_domain_of(id: &str) -> Option<&str> {
    split(id).ok().map(|(td, _)| td)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_standard_ids() {
        for id in [
            "spiffe://cluster.local/ns/default/sa/web",
            "spiffe://example.org",
            "spiffe://a_b-c.d/Upper/x.y-z_1",
        ] {
            assert_eq!(validate_id(id), Ok(()), "{id}");
        }
    }

    #[test]
    fn rejects_what_the_standard_forbids() {
        let cases = [
            ("http://cluster.local/ns", SpiffeError::Scheme),
            ("SPIFFE://cluster.local/ns", SpiffeError::Scheme),
            ("spiffe:///ns", SpiffeError::EmptyTrustDomain),
            (
                "spiffe://Cluster.local/ns",
                SpiffeError::TrustDomainChar('C'),
            ),
            (
                "spiffe://cluster.local:8080/ns",
                SpiffeError::TrustDomainChar(':'),
            ),
            (
                "spiffe://user@cluster.local/ns",
                SpiffeError::TrustDomainChar('@'),
            ),
            ("spiffe://cluster.local/ns//sa", SpiffeError::EmptySegment),
            ("spiffe://cluster.local/ns/", SpiffeError::EmptySegment),
            ("spiffe://cluster.local/ns/../sa", SpiffeError::DotSegment),
            ("spiffe://cluster.local/ns/./sa", SpiffeError::DotSegment),
            (
                "spiffe://cluster.local/ns/a%20b",
                SpiffeError::PathChar('%'),
            ),
            ("spiffe://cluster.local/ns?x=1", SpiffeError::PathChar('?')),
            ("spiffe://cluster.local/ns#frag", SpiffeError::PathChar('#')),
        ];
        for (id, want) in cases {
            assert_eq!(validate_id(id), Err(want), "{id}");
        }
        let long = format!("spiffe://td/{}", "a".repeat(MAX_ID_LEN));
        assert_eq!(validate_id(&long), Err(SpiffeError::TooLong));
        let long_td = format!("spiffe://{}", "a".repeat(MAX_TRUST_DOMAIN_LEN + 1));
        assert_eq!(validate_id(&long_td), Err(SpiffeError::TrustDomainTooLong));
    }

    #[test]
    fn scheme_detection_is_case_insensitive() {
        assert!(has_spiffe_scheme("SPIFFE://x/y"));
        assert!(!has_spiffe_scheme("https://x/y"));
        assert_eq!(trust_domain_of("spiffe://td/a"), Some("td"));
    }
}
