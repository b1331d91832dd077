//! Serial numbers: their limit, how a policy or CRL spells one (`parse_serial`), the
//! magnitude certificates and revocation entries compare by, and how audit records print
//! one.

use std::fmt;

use super::hex::hex_upper;

/// Longest accepted serial number, in bytes (RFC 5280 allows 20; some CAs exceed it).
pub const MAX_SERIAL_LEN: usize = 64;

/// Why a serial number string could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SerialError {
    /// Nothing but separators.
    Empty,
    /// A character that is not a hex digit or an accepted separator.
    BadChar(char),
    /// Longer than [`MAX_SERIAL_LEN`] bytes.
    TooLong,
    /// A `-` that is not the leading sign of the whole number.
    MisplacedMinus,
    /// A sign followed by a separator or another sign (`- 4f`, `-:4f`, `--4f`).
    SignThenSeparator,
    /// A negative zero (`-0`): a sign on nothing.
    NegativeZero,
}

impl fmt::Display for SerialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SerialError::Empty => write!(f, "the serial number is empty"),
            SerialError::BadChar(c) => write!(
                f,
                "`{}` is not a hex digit (write serials in hex, optionally with `:` separators)",
                c.escape_debug()
            ),
            SerialError::TooLong => {
                write!(f, "the serial number is longer than {MAX_SERIAL_LEN} bytes")
            }
            SerialError::MisplacedMinus => write!(
                f,
                "`-` is only accepted as the sign in front of the whole number, not as a separator"
            ),
            SerialError::SignThenSeparator => {
                write!(f, "the sign `-` must be followed directly by a hex digit")
            }
            SerialError::NegativeZero => write!(f, "a negative zero is not a serial number"),
        }
    }
}

impl std::error::Error for SerialError {}

/// Strips leading zero bytes: serials compare by magnitude, whatever DER padding or
/// policy spelling they came with.
pub fn normalize_serial(raw: &[u8]) -> Vec<u8> {
    strip_leading_zeros(raw).to_vec()
}

/// The serial's magnitude: `raw` without leading zero bytes.
pub fn strip_leading_zeros(raw: &[u8]) -> &[u8] {
    let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    raw.get(start..).unwrap_or_default()
}

/// Parses a hex serial: `4f:38:0a`, `4F380A`, `0x4f380a` or `4f 38 0a`; a negative
/// one as OpenSSL prints it: `-4F380A` (`-serial`), `(Negative)4f:38:0a` (`-text`), or
/// `-0x4f380a`, `-4f:38:0a`.
///
/// The result is what a certificate or CRL with that serial holds (see
/// [`normalize_serial`]): a DER INTEGER's content bytes are two's complement, so a
/// negative serial is converted to its minimal two's-complement bytes (`-4F380A` is
/// the content `B0 C7 F6`). The only `-` accepted is a sign directly in front of the
/// first digit (after an optional `0x`): `4f-38` and `- 4f` are refused rather than
/// guessed at.
pub fn parse_serial(s: &str) -> Result<Vec<u8>, SerialError> {
    let s = s.trim();
    let (negative, s) = if let Some(rest) = s.strip_prefix("(Negative)") {
        (true, rest)
    } else if let Some(rest) = s.strip_prefix('-') {
        (true, rest)
    } else {
        (false, s)
    };
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    if negative && !s.chars().next().is_some_and(|c| c.is_ascii_hexdigit()) {
        return Err(SerialError::SignThenSeparator);
    }
    let mut nibbles = Vec::with_capacity(s.len());
    for c in s.chars() {
        match c {
            ':' | ' ' => {}
            '-' => return Err(SerialError::MisplacedMinus),
            c => nibbles.push(c.to_digit(16).ok_or(SerialError::BadChar(c))?),
        }
    }
    if nibbles.is_empty() {
        return Err(SerialError::Empty);
    }
    // An odd count means a leading zero nibble was left out.
    if nibbles.len() % 2 == 1 {
        nibbles.insert(0, 0);
    }
    let bytes: Vec<u8> = nibbles
        .chunks(2)
        .map(|pair| match pair {
            [hi, lo] => u8::try_from((hi << 4) | lo).unwrap_or(0),
            _ => 0,
        })
        .collect();
    let magnitude = normalize_serial(&bytes);
    let serial = if negative {
        if magnitude.is_empty() {
            return Err(SerialError::NegativeZero);
        }
        negate_magnitude(&magnitude)
    } else {
        magnitude
    };
    if serial.len() > MAX_SERIAL_LEN {
        return Err(SerialError::TooLong);
    }
    Ok(serial)
}

/// The minimal two's-complement bytes (a DER INTEGER's content) of `-magnitude`, for a
/// non-zero big-endian `magnitude` without leading zeros.
fn negate_magnitude(magnitude: &[u8]) -> Vec<u8> {
    // Two's complement over one more byte than the magnitude: invert, then add one.
    let mut out: Vec<u8> = std::iter::once(0xffu8)
        .chain(magnitude.iter().map(|b| !b))
        .collect();
    for byte in out.iter_mut().rev() {
        let (sum, carry) = byte.overflowing_add(1);
        *byte = sum;
        if !carry {
            break;
        }
    }
    // Minimal: drop a leading 0xFF while the next byte still carries the sign.
    let redundant = out
        .windows(2)
        .take_while(|w| matches!(w, [0xff, next] if next & 0x80 != 0))
        .count();
    out.split_off(redundant)
}

/// Uppercase hex without separators (`00` for a zero serial), as in ECS
/// `tls.client.x509.serial_number`.
pub fn serial_hex(serial: &[u8]) -> String {
    if serial.is_empty() {
        return "00".to_owned();
    }
    hex_upper(serial)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_parse_in_every_spelling() {
        let want = vec![0x4f, 0x38, 0x0a];
        for s in ["4f:38:0a", "4F380A", "0x4f380a", "4f 38 0a", "00:4f:38:0a"] {
            assert_eq!(parse_serial(s), Ok(want.clone()), "{s}");
        }
        assert_eq!(parse_serial("f380a"), Ok(vec![0x0f, 0x38, 0x0a]));
        assert_eq!(parse_serial("4g"), Err(SerialError::BadChar('g')));
        assert_eq!(parse_serial(" : "), Err(SerialError::Empty));
        assert_eq!(parse_serial(&"ab".repeat(65)), Err(SerialError::TooLong));
        assert_eq!(serial_hex(&[0x4f, 0x0a]), "4F0A");
        assert_eq!(serial_hex(&[]), "00");
    }

    /// Regression: `-4F380A`, as OpenSSL prints a negative serial, was read as the
    /// positive 4F380A (`-` was a separator), so the certificate stayed allowed.
    #[test]
    fn negative_serials_are_their_der_content_bytes() {
        let want = vec![0xb0, 0xc7, 0xf6];
        for s in [
            "-4F380A",
            "-4f:38:0a",
            "-0x4f380a",
            " -4F380A ",
            "(Negative)4f:38:0a",
            "-004f380a",
        ] {
            assert_eq!(parse_serial(s), Ok(want.clone()), "{s}");
        }
        // Minimal two's complement at the byte boundaries.
        assert_eq!(parse_serial("-1"), Ok(vec![0xff]));
        assert_eq!(parse_serial("-80"), Ok(vec![0x80]));
        assert_eq!(parse_serial("-81"), Ok(vec![0xff, 0x7f]));
        assert_eq!(parse_serial("-ff"), Ok(vec![0xff, 0x01]));
        assert_eq!(parse_serial("-100"), Ok(vec![0xff, 0x00]));
        assert_eq!(parse_serial("-8000"), Ok(vec![0x80, 0x00]));
        // The same bytes as every i64, as Rust's own two's complement gives them.
        for n in [
            1i64,
            2,
            127,
            128,
            129,
            255,
            256,
            0x4f380a,
            0x7fff_ffff,
            i64::MAX,
        ] {
            let be = (-n).to_be_bytes();
            let skip = be
                .windows(2)
                .take_while(|w| w[0] == 0xff && w[1] & 0x80 != 0)
                .count();
            assert_eq!(
                parse_serial(&format!("-{n:x}")),
                Ok(be[skip..].to_vec()),
                "{n}"
            );
        }
        // The limit is on the two's-complement bytes: a 64-byte magnitude whose top
        // bit is set needs a 65th byte for the sign.
        assert_eq!(
            parse_serial(&format!("-{}", "7b".repeat(64))).map(|s| s.len()),
            Ok(64)
        );
        assert_eq!(
            parse_serial(&format!("-{}", "ab".repeat(64))),
            Err(SerialError::TooLong)
        );
        assert_eq!(
            parse_serial(&format!("-{}", "ff".repeat(64))),
            Err(SerialError::TooLong)
        );
    }

    #[test]
    fn malformed_signs_are_refused() {
        for (s, want) in [
            ("4f-38-0a", SerialError::MisplacedMinus),
            ("-4f-38", SerialError::MisplacedMinus),
            ("0x-4f", SerialError::MisplacedMinus),
            ("4f380a-", SerialError::MisplacedMinus),
            ("- 4f380a", SerialError::SignThenSeparator),
            ("-:4f:38", SerialError::SignThenSeparator),
            ("--4f", SerialError::SignThenSeparator),
            ("-", SerialError::SignThenSeparator),
            ("-0x", SerialError::SignThenSeparator),
            ("(Negative) 4f", SerialError::SignThenSeparator),
            ("-0", SerialError::NegativeZero),
            ("-00:00", SerialError::NegativeZero),
        ] {
            assert_eq!(parse_serial(s), Err(want), "{s}");
        }
    }
}
