//! SPIFFE ID patterns used by rules: an exact ID, `*` for exactly one path segment,
//! and `**` as the last segment for one or more remaining segments.

use std::fmt;

use crate::spiffe::{self, SpiffeError};

/// The path segment [`Pattern::example`] puts where a pattern has a wildcard.
pub const ANY_SEGMENT: &str = "_any";

/// One segment of a [`Pattern`]'s path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Segment {
    /// A literal segment, compared exactly.
    Literal(String),
    /// `*`: exactly one segment.
    One,
    /// `**` (last segment only): one or more segments.
    Rest,
}

/// A parsed principal pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pattern {
    trust_domain: String,
    segments: Vec<Segment>,
}

impl Pattern {
    /// Parses and validates a pattern; literal parts follow the SPIFFE ID standard.
    pub fn parse(s: &str) -> Result<Pattern, SpiffeError> {
        let (td, path) = spiffe::split(s)?;
        spiffe::validate_trust_domain(td)?;
        let mut segments = Vec::new();
        if let Some(path) = path {
            let mut parts = path.split('/').peekable();
            while let Some(part) = parts.next() {
                let seg = match part {
                    "*" => Segment::One,
                    "**" if parts.peek().is_none() => Segment::Rest,
                    "**" => {
                        return Err(SpiffeError::Wildcard(
                            "`**` is only allowed as the last path segment",
                        ))
                    }
                    lit if lit.contains('*') => {
                        return Err(SpiffeError::Wildcard(
                            "a wildcard must be a whole path segment (`*` or `**`)",
                        ))
                    }
                    lit => {
                        spiffe::validate_segment(lit)?;
                        Segment::Literal(lit.to_owned())
                    }
                };
                segments.push(seg);
            }
        }
        Ok(Pattern {
            trust_domain: td.to_owned(),
            segments,
        })
    }

    /// The trust domain the pattern is confined to.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The path segments.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// A SPIFFE ID the pattern matches: its literal segments, and [`ANY_SEGMENT`] where it
    /// has a wildcard. For tools that probe rules (`certgate diff`).
    pub fn example(&self) -> String {
        let mut id = format!("spiffe://{}", self.trust_domain);
        for seg in &self.segments {
            id.push('/');
            id.push_str(match seg {
                Segment::Literal(l) => l,
                Segment::One | Segment::Rest => ANY_SEGMENT,
            });
        }
        id
    }

    /// Whether the pattern names exactly one SPIFFE ID.
    pub fn is_exact(&self) -> bool {
        self.segments
            .iter()
            .all(|s| matches!(s, Segment::Literal(_)))
    }

    /// Whether `id` matches. `id` is expected to be a valid SPIFFE ID; anything else
    /// simply does not match.
    pub fn matches(&self, id: &str) -> bool {
        let Ok((td, path)) = spiffe::split(id) else {
            return false;
        };
        if td != self.trust_domain {
            return false;
        }
        let mut have = path.into_iter().flat_map(|p| p.split('/'));
        for seg in &self.segments {
            match seg {
                Segment::Rest => return have.next().is_some(),
                Segment::One => {
                    if have.next().is_none() {
                        return false;
                    }
                }
                Segment::Literal(lit) => {
                    if have.next() != Some(lit.as_str()) {
                        return false;
                    }
                }
            }
        }
        have.next().is_none()
    }

    /// Whether every ID this pattern matches is also matched by `other`.
    /// Sound (never claims coverage that does not hold); used for shadowing checks.
    pub fn is_covered_by(&self, other: &Pattern) -> bool {
        if self.trust_domain != other.trust_domain {
            return false;
        }
        let mut mine = self.segments.iter();
        for theirs in &other.segments {
            match (theirs, mine.next()) {
                (_, None) => return false,
                // `**` covers one or more of anything.
                (Segment::Rest, Some(_)) => return true,
                (Segment::One, Some(Segment::One | Segment::Literal(_))) => {}
                (Segment::Literal(a), Some(Segment::Literal(b))) if a == b => {}
                _ => return false,
            }
        }
        mine.next().is_none()
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", spiffe::SCHEME, self.trust_domain)?;
        for seg in &self.segments {
            match seg {
                Segment::Literal(s) => write!(f, "/{s}")?,
                Segment::One => f.write_str("/*")?,
                Segment::Rest => f.write_str("/**")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).unwrap()
    }

    #[test]
    fn exact_and_wildcards_match_as_documented() {
        let web = "spiffe://cluster.local/ns/frontend/sa/web";
        assert!(p(web).matches(web));
        assert!(p(web).is_exact());
        assert!(!p(web).matches("spiffe://cluster.local/ns/frontend/sa/web2"));
        assert!(!p(web).matches("spiffe://cluster.local/ns/frontend/sa/web/x"));

        let one = p("spiffe://cluster.local/ns/checkout/sa/*");
        assert!(one.matches("spiffe://cluster.local/ns/checkout/sa/api"));
        assert!(!one.matches("spiffe://cluster.local/ns/checkout/sa"));
        assert!(!one.matches("spiffe://cluster.local/ns/checkout/sa/api/v2"));

        let rest = p("spiffe://cluster.local/ns/legacy/**");
        assert!(rest.matches("spiffe://cluster.local/ns/legacy/sa/x"));
        assert!(rest.matches("spiffe://cluster.local/ns/legacy/a"));
        assert!(!rest.matches("spiffe://cluster.local/ns/legacy"));
        assert!(!rest.matches("spiffe://other.domain/ns/legacy/a"));

        let td = p("spiffe://cluster.local");
        assert!(td.matches("spiffe://cluster.local"));
        assert!(!td.matches("spiffe://cluster.local/a"));
    }

    #[test]
    fn rejects_bad_wildcards() {
        assert!(matches!(
            Pattern::parse("spiffe://td/**/x"),
            Err(SpiffeError::Wildcard(_))
        ));
        assert!(matches!(
            Pattern::parse("spiffe://td/web-*"),
            Err(SpiffeError::Wildcard(_))
        ));
        assert_eq!(
            Pattern::parse("spiffe://td/a//b"),
            Err(SpiffeError::EmptySegment)
        );
    }

    #[test]
    fn display_round_trips() {
        for s in ["spiffe://td", "spiffe://td/a/*/b", "spiffe://td/ns/**"] {
            assert_eq!(p(s).to_string(), s);
        }
    }

    #[test]
    fn coverage_as_the_shadowed_rule_check_uses_it() {
        let td = "spiffe://td";
        let c = |a: &str, b: &str| p(&format!("{td}{b}")).is_covered_by(&p(&format!("{td}{a}")));
        assert!(c("/a/b", "/a/b"));
        assert!(!c("/a/b", "/a/c"));
        assert!(c("/a/*", "/a/b"));
        assert!(c("/a/*", "/a/*"));
        assert!(!c("/a/*", "/a/**"));
        assert!(!c("/a/*", "/a/b/c"));
        assert!(c("/a/**", "/a/b/c"));
        assert!(c("/a/**", "/a/*/**"));
        assert!(c("/**", "/a"));
        assert!(!c("/a/**", "/a"));
        assert!(!c("/a/b", "/a/*"));
        assert!(!p("spiffe://y/a").is_covered_by(&p("spiffe://x/a")));
    }

    #[test]
    fn an_example_is_matched_by_its_pattern() {
        for s in [
            "spiffe://td",
            "spiffe://td/a/b",
            "spiffe://td/a/*/b",
            "spiffe://td/ns/**",
        ] {
            let pattern = p(s);
            assert!(pattern.matches(&pattern.example()), "{s}");
        }
        assert_eq!(p("spiffe://td/a/*/**").example(), "spiffe://td/a/_any/_any");
    }

    #[test]
    fn coverage_is_sound() {
        let rest = p("spiffe://td/ns/**");
        assert!(p("spiffe://td/ns/a").is_covered_by(&rest));
        assert!(p("spiffe://td/ns/*/b").is_covered_by(&rest));
        assert!(!p("spiffe://td/ns").is_covered_by(&rest));
        assert!(p("spiffe://td/ns/a").is_covered_by(&p("spiffe://td/ns/*")));
        assert!(!p("spiffe://td/ns/*").is_covered_by(&p("spiffe://td/ns/a")));
        assert!(!p("spiffe://td/ns/**").is_covered_by(&p("spiffe://td/ns/*")));
        assert!(p("spiffe://td/ns/**").is_covered_by(&p("spiffe://td/**")));
    }
}
