//! Labelled stat names: how the filter writes a label into a stat's name, and the Envoy
//! tag-extraction rules (`stats_config.stats_tags`) that turn it back into a label.
//!
//! Envoy's stats have names, not labels; a tag extractor's regex removes its first
//! capture group from the name and makes its second the tag's value. certgate follows
//! Istio's convention for stats that carry tags, `<tag>=.=<value>;.;` before the stat's
//! name (istio/istio, `tools/packaging/common/envoy_bootstrap.json`, whose
//! `extraStatTags` entries expand to exactly the regex [`tag_regex`] returns). So
//! `plugin=.=certgate;.;action=.=deny;.;...;.;certgate_decisions_total` (Envoy adds its
//! `wasmcustom.` namespace in front) becomes `certgate_decisions_total{plugin="certgate",
//! action="deny",...}` in `/stats/prometheus`, in plain Envoy with the rules
//! [`stats_tags`] lists and in Istio with `extraStatTags` naming [`TAGS`].
//!
//! One module for the filter (which writes the names) and `certgate emit stats` (which
//! writes the rules), so they cannot disagree.

use std::fmt::Write as _;

/// Every tag a certgate stat name carries.
pub const TAGS: [&str; 5] = ["plugin", "action", "reason", "mode", "policy"];

/// The longest tag value written; longer values are cut (policy and plugin names).
pub const MAX_VALUE_BYTES: usize = 64;

/// Envoy's regex for one tag, as Istio writes it for `extraStatTags`.
pub fn tag_regex(tag: &str) -> String {
    format!("({tag}=\\.=(.*?);\\.;)")
}

/// `(tag_name, regex)` for every tag in [`TAGS`], the `stats_config.stats_tags` entries.
pub fn stats_tags() -> Vec<(&'static str, String)> {
    TAGS.iter().map(|t| (*t, tag_regex(t))).collect()
}

/// Writes `tag=.=value;.;`, the value reduced to characters that can neither end a tag
/// nor break a label (letters, digits, `_`, `-`, `.`, `:`, `/`, `@`; anything else
/// becomes `_`) and cut to [`MAX_VALUE_BYTES`].
pub fn push_tag(out: &mut String, tag: &str, value: &str) {
    let _ = write!(out, "{tag}=.=");
    for c in value.chars().take(MAX_VALUE_BYTES) {
        out.push(
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/' | '@') {
                c
            } else {
                '_'
            },
        );
    }
    out.push_str(";.;");
}

/// A labelled stat name: the tags, then the name.
pub fn labelled(name: &str, tags: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (tag, value) in tags {
        push_tag(&mut out, tag, value);
    }
    out.push_str(name);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_cannot_forge_a_tag() {
        let name = labelled(
            "x_total",
            &[("policy", "a;.;reason=.=allow_rule"), ("mode", "")],
        );
        assert_eq!(name, "policy=.=a_._reason_._allow_rule;.;mode=.=;.;x_total");
        assert_eq!(name.matches(";.;").count(), 2);
    }

    #[test]
    fn long_values_are_cut() {
        let long = "p".repeat(200);
        let name = labelled("x", &[("policy", &long)]);
        assert_eq!(
            name.len(),
            "policy=.=".len() + MAX_VALUE_BYTES + ";.;x".len()
        );
    }

    #[test]
    fn every_tag_has_istios_regex() {
        let tags = stats_tags();
        assert_eq!(tags.len(), TAGS.len());
        assert!(tags.contains(&("reason", "(reason=\\.=(.*?);\\.;)".to_owned())));
    }
}
