//! Server names (SNI) in rules: an exact DNS name or `*.` plus a suffix, matching one
//! extra leftmost label. The compiler validates with the same rules the engine matches by.

/// Whether `pattern` is a valid rule SNI: lowercase LDH labels of 1–63 bytes, at most
/// 253 bytes, optionally prefixed by `*.`.
pub fn is_valid_pattern(pattern: &str) -> bool {
    let body = pattern.strip_prefix("*.").unwrap_or(pattern);
    !body.is_empty()
        && pattern.len() <= 253
        && body.split('.').all(|label| {
            let b = label.as_bytes();
            (1..=63).contains(&b.len())
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b.first() != Some(&b'-')
                && b.last() != Some(&b'-')
        })
}

/// Whether the client's server name `sni` matches `pattern`; DNS names compare
/// case-insensitively, and `*.example.com` needs exactly one extra leftmost label.
pub fn matches(pattern: &str, sni: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => sni
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(suffix)),
        None => pattern.eq_ignore_ascii_case(sni),
    }
}

/// A server name `pattern` matches: the name itself, or for `*.suffix` one label in
/// front of the suffix. For tools that probe rules (`certgate diff`).
pub fn example(pattern: &str) -> String {
    match pattern.strip_prefix("*.") {
        Some(suffix) => format!("x-any.{suffix}"),
        None => pattern.to_owned(),
    }
}

/// Whether pattern `a` matches every server name pattern `b` matches (sound, used to
/// find rules that can never decide). `*.x` matches one label in front of `x`: it covers
/// `l.x` but not `*.x`'s supersets. Patterns are lowercase ([`is_valid_pattern`]).
pub fn covers(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match a.strip_prefix("*.") {
        Some(suffix) => b
            .strip_suffix(suffix)
            .and_then(|head| head.strip_suffix('.'))
            .is_some_and(|label| !label.is_empty() && !label.contains('.') && label != "*"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(is_valid_pattern("api.example.com"));
        assert!(is_valid_pattern("*.example.com"));
        for bad in ["*", "", "API.example.com", "-a.b", "a..b", "a_b.c", "*.*.b"] {
            assert!(!is_valid_pattern(bad), "{bad}");
        }
        assert!(!is_valid_pattern(&"a.".repeat(127)));
    }

    #[test]
    fn matching() {
        assert!(matches("*.svc", "api.svc"));
        assert!(matches("*.svc", "API.SVC"));
        assert!(!matches("*.svc", "svc"));
        assert!(!matches("*.svc", "a.b.svc"));
        assert!(!matches("*.svc", ".svc"));
        assert!(matches("exact.example", "Exact.Example"));
        assert!(!matches("exact.example", "x.exact.example"));
    }

    #[test]
    fn an_example_is_matched_by_its_pattern() {
        for p in ["a.example", "*.svc.cluster.local", "*.x"] {
            assert!(matches(p, &example(p)), "{p}");
        }
    }

    #[test]
    fn coverage() {
        assert!(covers("*.example.com", "api.example.com"));
        assert!(covers("*.example.com", "*.example.com"));
        assert!(!covers("*.example.com", "a.b.example.com"));
        assert!(!covers("*.example.com", "example.com"));
        assert!(!covers("api.example.com", "*.example.com"));
    }

    /// Coverage agrees with matching: whenever `a` covers an exact name `b`, `a`
    /// matches the server name `b`.
    #[test]
    fn coverage_implies_matching() {
        let pats = ["*.svc", "api.svc", "a.b.svc", "*.b.svc", "svc"];
        for a in pats {
            for b in pats.iter().filter(|b| !b.starts_with('*')) {
                if covers(a, b) {
                    assert!(matches(a, b), "{a} covers {b} but does not match it");
                }
            }
        }
    }
}
