//! Go-style durations for `maxLifetime`: `90s`, `30m`, `24h`, `90d`, or a sum such as `1d12h`.

/// Why a duration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// Empty text.
    #[error("the duration is empty")]
    Empty,
    /// A number without a unit, or an unknown unit.
    #[error("`{0}` needs a unit: `s`, `m`, `h` or `d`")]
    Unit(String),
    /// Not digits where a number belongs.
    #[error("`{0}` is not a number followed by a unit")]
    Malformed(String),
    /// Zero length.
    #[error("the duration is zero")]
    Zero,
    /// More seconds than fit.
    #[error("the duration is too long")]
    Overflow,
}

/// Parses a duration into seconds.
pub fn parse(text: &str) -> Result<u64, DurationError> {
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return Err(DurationError::Malformed(text.to_string()));
        }
        let (num, after) = rest.split_at(digits);
        let n: u64 = num.parse().map_err(|_| DurationError::Overflow)?;
        let unit_len = after.chars().take_while(char::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(unit_len);
        let mult = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "" => return Err(DurationError::Unit(text.to_string())),
            _ => return Err(DurationError::Unit(text.to_string())),
        };
        total = n
            .checked_mul(mult)
            .and_then(|s| total.checked_add(s))
            .ok_or(DurationError::Overflow)?;
        rest = after;
    }
    if total == 0 {
        return Err(DurationError::Zero);
    }
    Ok(total)
}

/// Formats seconds in the largest units that divide them (`86400` → `1d`, `5400` → `1h30m`).
pub fn format(secs: u64) -> String {
    if secs == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    let mut rest = secs;
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_sums() {
        assert_eq!(parse("90s"), Ok(90));
        assert_eq!(parse("30m"), Ok(1800));
        assert_eq!(parse("24h"), Ok(86_400));
        assert_eq!(parse("90d"), Ok(90 * 86_400));
        assert_eq!(parse("1d12h"), Ok(129_600));
        assert_eq!(format(129_600), "1d12h");
    }

    #[test]
    fn refusals() {
        assert_eq!(parse(""), Err(DurationError::Empty));
        assert!(matches!(parse("24"), Err(DurationError::Unit(_))));
        assert!(matches!(parse("2w"), Err(DurationError::Unit(_))));
        assert!(matches!(parse("h"), Err(DurationError::Malformed(_))));
        assert_eq!(parse("0h"), Err(DurationError::Zero));
        assert_eq!(parse("99999999999999999999d"), Err(DurationError::Overflow));
    }
}
