//! The reason codes people read about are the ones the engine has: every code is in the
//! policy reference's table with the engine's own description, and in the filter's
//! counter list; neither lists a code the engine does not have.

use std::collections::BTreeSet;

use ruleset::Reason;

fn doc(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn all_codes() -> BTreeSet<&'static str> {
    Reason::ALL.iter().map(|r| r.code()).collect()
}

#[test]
fn every_code_is_distinct_and_round_trips() {
    assert_eq!(all_codes().len(), Reason::ALL.len());
    for r in Reason::ALL {
        assert_eq!(Reason::from_code(r.code()), Some(r));
        let d = r.description();
        assert!(
            d.starts_with(|c: char| c.is_ascii_uppercase() || c == '`') && d.ends_with('.'),
            "{}: one sentence, capitalised, ending with a period: {d}",
            r.code()
        );
    }
}

/// docs/policy.md, "Reason codes": one row per code, `| code | step | meaning |`, whose
/// meaning starts with [`Reason::description`] (links may follow).
#[test]
fn the_policy_reference_lists_every_code_with_its_description() {
    let text = doc("policy.md");
    let section = text
        .split("## Reason codes")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("docs/policy.md has a `## Reason codes` section");
    let mut seen = BTreeSet::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
        let code = cells[0].trim_matches('`');
        let reason = Reason::from_code(code)
            .unwrap_or_else(|| panic!("docs/policy.md lists `{code}`, which the engine lacks"));
        let meaning = cells.last().copied().unwrap_or_default();
        assert!(
            meaning.starts_with(reason.description()),
            "docs/policy.md: `{code}` says {meaning:?}\nthe engine says {:?}",
            reason.description()
        );
        assert!(seen.insert(reason.code()), "`{code}` is listed twice");
    }
    assert_eq!(seen, all_codes(), "codes missing from docs/policy.md");
}

/// docs/filter.md lists the `certgate.reason.<code>` counters, one per code.
#[test]
fn the_filter_counter_list_names_every_code() {
    let text = doc("filter.md");
    let row = text
        .lines()
        .find(|l| l.starts_with("| `certgate.reason.<code>` |"))
        .expect("docs/filter.md has the `certgate.reason.<code>` row");
    let listed: BTreeSet<&str> = row.split('`').skip(3).step_by(2).collect();
    assert_eq!(listed, all_codes());
}
