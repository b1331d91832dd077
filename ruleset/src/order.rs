//! The order in which rules are tried: deny rules first, then allow rules, each in
//! policy order; the first rule that matches decides. The engine sorts its candidates
//! with [`priority`], and the compiler's shadowed-rule check walks the policy's rules in
//! [`evaluation_order`], so the order is defined here only.

use crate::Action;

/// The sort key of the rule at `position` (its index in policy order) with `action`:
/// smaller keys are tried first.
pub fn priority(action: Action, position: usize) -> (bool, usize) {
    (action != Action::Deny, position)
}

/// `rules`, given in policy order, in the order the engine tries them. `action` reads a
/// rule's action, so the policy model (before lowering) and the table's [`crate::Rule`]
/// share the order.
pub fn evaluation_order<T>(rules: &[T], action: impl Fn(&T) -> Action) -> Vec<&T> {
    let mut order: Vec<(usize, &T)> = rules.iter().enumerate().collect();
    order.sort_by_key(|(i, r)| priority(action(r), *i));
    order.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_first_then_policy_order() {
        let rules = [
            ("a", Action::Allow),
            ("b", Action::Deny),
            ("c", Action::Allow),
            ("d", Action::Deny),
        ];
        let names: Vec<&str> = evaluation_order(&rules, |r| r.1)
            .into_iter()
            .map(|r| r.0)
            .collect();
        assert_eq!(names, ["b", "d", "a", "c"]);
    }
}
