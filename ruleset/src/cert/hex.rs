//! Bytes as hex text (digests, key ids, serials, keys in messages) and SHA-256
//! fingerprints read back from hex.

/// Lowercase hex without separators.
pub fn hex_lower(bytes: &[u8]) -> String {
    hex_with(bytes, b"0123456789abcdef")
}

/// Uppercase hex, two digits per byte (as the audit record shows fingerprints).
pub fn hex_upper(bytes: &[u8]) -> String {
    hex_with(bytes, b"0123456789ABCDEF")
}

/// Two digits per byte from `digits`, without the formatting machinery (a `format!`
/// per byte cost the filter several microseconds per audit record under V8).
fn hex_with(bytes: &[u8], digits: &[u8; 16]) -> String {
    let digit = |n: u8| char::from(digits.get(usize::from(n & 0x0f)).copied().unwrap_or(b'0'));
    let mut out = String::with_capacity(bytes.len().saturating_mul(2));
    for b in bytes {
        out.push(digit(b >> 4));
        out.push(digit(*b));
    }
    out
}

/// Parses 64 hex digits (separators `:` allowed) into a SHA-256 fingerprint.
pub fn parse_fingerprint(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    let mut nibbles = 0usize;
    // Bytes, not chars: a non-ASCII byte is no hex digit either way.
    for b in s.trim().bytes().filter(|b| *b != b':') {
        let digit = u8::try_from(char::from(b).to_digit(16)?).ok()?;
        let byte = out.get_mut(nibbles / 2)?;
        *byte = (*byte << 4) | digit;
        nibbles = nibbles.checked_add(1)?;
    }
    (nibbles == 64).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_need_64_hex_digits() {
        let hex = "ab".repeat(32);
        assert_eq!(parse_fingerprint(&hex), Some([0xab; 32]));
        assert_eq!(parse_fingerprint(&"ab:".repeat(32)), Some([0xab; 32]));
        assert_eq!(parse_fingerprint(&"ab".repeat(31)), None);
        assert_eq!(parse_fingerprint(&"zz".repeat(32)), None);
    }
}
