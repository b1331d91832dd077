//! Issuer identity for revocation: one 64-bit id per distinguished name, computed the
//! same way from a policy string (`CN=Intermediate CA,O=Example`), a CRL's issuer and
//! a certificate's issuer, so that attribute order, spacing and letter case in the
//! policy do not decide whether a revocation entry applies.

use std::borrow::Cow;
use std::fmt;

use sha2::{Digest, Sha256};
use x509_parser::der_parser::oid::Oid;
use x509_parser::x509::X509Name;

/// Attribute names accepted in policy strings, with their OIDs as DER content bytes
/// (what a parsed certificate holds, compared without formatting) and dotted.
const ATTRIBUTE_NAMES: &[(&[u8], &str, &str)] = &[
    (&[0x55, 0x04, 0x03], "2.5.4.3", "CN"),
    (&[0x55, 0x04, 0x04], "2.5.4.4", "SN"),
    (&[0x55, 0x04, 0x05], "2.5.4.5", "SERIALNUMBER"),
    (&[0x55, 0x04, 0x06], "2.5.4.6", "C"),
    (&[0x55, 0x04, 0x07], "2.5.4.7", "L"),
    (&[0x55, 0x04, 0x08], "2.5.4.8", "ST"),
    (&[0x55, 0x04, 0x09], "2.5.4.9", "STREET"),
    (&[0x55, 0x04, 0x0a], "2.5.4.10", "O"),
    (&[0x55, 0x04, 0x0b], "2.5.4.11", "OU"),
    (&[0x55, 0x04, 0x0c], "2.5.4.12", "TITLE"),
    (&[0x55, 0x04, 0x11], "2.5.4.17", "POSTALCODE"),
    (&[0x55, 0x04, 0x2a], "2.5.4.42", "GIVENNAME"),
    (&[0x55, 0x04, 0x2e], "2.5.4.46", "DNQUALIFIER"),
    (&[0x55, 0x04, 0x41], "2.5.4.65", "PSEUDONYM"),
    (&[0x55, 0x04, 0x61], "2.5.4.97", "ORGANIZATIONIDENTIFIER"),
    (
        &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01],
        "0.9.2342.19200300.100.1.1",
        "UID",
    ),
    (
        &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19],
        "0.9.2342.19200300.100.1.25",
        "DC",
    ),
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01],
        "1.2.840.113549.1.9.1",
        "EMAILADDRESS",
    ),
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01],
        "1.2.840.113549.1.9.1",
        "E",
    ),
];

/// The first [`ATTRIBUTE_NAMES`] entry for a parsed attribute type: its name and
/// dotted OID, found by the OID's DER bytes (formatting every OID of every name cost
/// the filter more than the rest of the name).
fn known_attribute(oid: &Oid<'_>) -> Option<(&'static str, &'static str)> {
    crate::cert::find_row(oid, ATTRIBUTE_NAMES).map(|(_, dotted, name)| (*name, *dotted))
}

/// The dotted form of an attribute type, without formatting the common ones.
fn dotted(oid: &Oid<'_>) -> Cow<'static, str> {
    match known_attribute(oid) {
        Some((_, dotted)) => Cow::Borrowed(dotted),
        None => Cow::Owned(oid.to_id_string()),
    }
}

/// Why a distinguished-name string could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnError {
    /// The string is empty.
    Empty,
    /// A component has no `=`.
    MissingEquals(String),
    /// An attribute name certgate does not know and that is not a dotted OID.
    UnknownAttribute(String),
    /// A component has an empty value.
    EmptyValue(String),
    /// A backslash escape is incomplete or not valid hex.
    BadEscape,
}

impl fmt::Display for DnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnError::Empty => write!(f, "the distinguished name is empty"),
            DnError::MissingEquals(c) => write!(f, "`{c}` is not of the form `NAME=value`"),
            DnError::UnknownAttribute(a) => write!(
                f,
                "unknown attribute `{a}` (use CN, O, OU, C, L, ST, DC, UID, emailAddress, … or a dotted OID)"
            ),
            DnError::EmptyValue(a) => write!(f, "attribute `{a}` has an empty value"),
            DnError::BadEscape => write!(f, "invalid backslash escape"),
        }
    }
}

impl std::error::Error for DnError {}

/// Lowercases, trims and collapses inner whitespace, so that comparisons follow the
/// spirit of RFC 5280's caseIgnoreMatch for the ASCII names CAs use.
fn normalize_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for word in v.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().flat_map(char::to_lowercase));
    }
    out
}

/// Hashes a set of `(oid, value)` attributes into the issuer id.
fn id_of<O: AsRef<str> + Ord>(mut attrs: Vec<(O, String)>) -> u64 {
    attrs.sort();
    let mut h = Sha256::new();
    for (oid, value) in &attrs {
        h.update(oid.as_ref().as_bytes());
        h.update(b"=");
        h.update(value.as_bytes());
        h.update([0u8]);
    }
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(digest.get(..8).unwrap_or(&[0u8; 8]));
    u64::from_be_bytes(first)
}

/// The issuer id of a parsed X.509 name (certificate or CRL issuer).
pub fn issuer_id_of(name: &X509Name<'_>) -> u64 {
    let attrs = name
        .iter_attributes()
        .map(|a| {
            let value = match a.as_str() {
                Ok(s) => normalize_value(s),
                Err(_) => match std::str::from_utf8(a.as_slice()) {
                    Ok(s) => normalize_value(s),
                    Err(_) => format!("#{}", crate::cert::hex_lower(a.as_slice())),
                },
            };
            (dotted(a.attr_type()), value)
        })
        .collect();
    id_of(attrs)
}

/// Formats a name for display in RFC 4514 order (last RDN first), with short
/// attribute names where certgate knows them and dotted OIDs otherwise, e.g.
/// `CN=Intermediate CA,O=Example`. Written here rather than through x509-parser's
/// `Display`, whose OID registry costs the filter module tens of kilobytes.
pub fn format_name(name: &X509Name<'_>) -> String {
    let mut out = String::new();
    let rdns: Vec<_> = name.iter_rdn().collect();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            // `E` and `emailAddress` share an OID; the table lists the long name first.
            match known_attribute(attr.attr_type()) {
                Some((short, _)) => out.push_str(display_name(short)),
                None => out.push_str(&attr.attr_type().to_id_string()),
            }
            out.push('=');
            match attr.as_str() {
                Ok(v) => escape_value(v, &mut out),
                Err(_) => match std::str::from_utf8(attr.as_slice()) {
                    Ok(v) => escape_value(v, &mut out),
                    Err(_) => {
                        out.push('#');
                        out.push_str(&crate::cert::hex_lower(attr.as_slice()));
                    }
                },
            }
        }
    }
    out
}

/// The conventional spelling of an attribute name from [`ATTRIBUTE_NAMES`].
fn display_name(upper: &'static str) -> &'static str {
    match upper {
        "SERIALNUMBER" => "serialNumber",
        "STREET" => "street",
        "TITLE" => "title",
        "POSTALCODE" => "postalCode",
        "GIVENNAME" => "givenName",
        "DNQUALIFIER" => "dnQualifier",
        "PSEUDONYM" => "pseudonym",
        "ORGANIZATIONIDENTIFIER" => "organizationIdentifier",
        "EMAILADDRESS" => "emailAddress",
        other => other,
    }
}

/// RFC 4514 escaping: `, + " \ < > ;` anywhere, `#` or space first, space last.
fn escape_value(v: &str, out: &mut String) {
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
}

/// Splits on unescaped `sep`.
fn split_unescaped(s: &str, seps: &[char]) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            cur.push('\\');
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if seps.contains(&c) {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    if escaped {
        cur.push('\\');
    }
    parts.push(cur);
    parts
}

/// Resolves RFC 4514 backslash escapes (`\,`, `\+`, `\\`, `\4F`).
fn unescape(v: &str) -> Result<String, DnError> {
    let mut out = Vec::with_capacity(v.len());
    let mut bytes = v.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let first = bytes.next().ok_or(DnError::BadEscape)?;
        if first.is_ascii_hexdigit() {
            let second = bytes.next().ok_or(DnError::BadEscape)?;
            let hex = [first, second];
            let hex = std::str::from_utf8(&hex).map_err(|_| DnError::BadEscape)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| DnError::BadEscape)?);
        } else {
            out.push(first);
        }
    }
    String::from_utf8(out).map_err(|_| DnError::BadEscape)
}

/// Parses an RFC 4514 distinguished name string into its issuer id. Attribute order
/// does not matter; names are case-insensitive; values compare case-insensitively.
pub fn parse_dn_string(s: &str) -> Result<u64, DnError> {
    if s.trim().is_empty() {
        return Err(DnError::Empty);
    }
    let mut attrs = Vec::new();
    for component in split_unescaped(s, &[',', ';', '+']) {
        let component = component.trim();
        let (name, value) = component
            .split_once('=')
            .ok_or_else(|| DnError::MissingEquals(component.to_owned()))?;
        let name = name.trim();
        let oid = if name.chars().all(|c| c.is_ascii_digit() || c == '.') && name.contains('.') {
            name.to_owned()
        } else {
            let upper = name.to_ascii_uppercase();
            ATTRIBUTE_NAMES
                .iter()
                .find(|(_, _, n)| *n == upper)
                .map(|(_, oid, _)| (*oid).to_owned())
                .ok_or_else(|| DnError::UnknownAttribute(name.to_owned()))?
        };
        let value = normalize_value(&unescape(value.trim())?);
        if value.is_empty() {
            return Err(DnError::EmptyValue(name.to_owned()));
        }
        attrs.push((oid, value));
    }
    Ok(id_of(attrs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_der_bytes_match_the_dotted_oids() {
        for (der, dotted, name) in ATTRIBUTE_NAMES {
            let oid: Oid<'_> = dotted.parse().unwrap();
            assert_eq!(oid.as_bytes(), *der, "{name}");
        }
    }

    #[test]
    fn order_case_and_spacing_do_not_matter() {
        let a = parse_dn_string("CN=Intermediate CA,O=Example").unwrap();
        let b = parse_dn_string("o=example ,  cn = intermediate   ca").unwrap();
        assert_eq!(a, b);
        assert_ne!(a, parse_dn_string("CN=Intermediate CA,O=Other").unwrap());
    }

    #[test]
    fn escapes_and_oids() {
        let a = parse_dn_string(r"CN=Acme\, Inc,O=X").unwrap();
        let b = parse_dn_string(r"2.5.4.3=Acme\2C Inc,2.5.4.10=X").unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn errors_are_specific() {
        assert_eq!(parse_dn_string(""), Err(DnError::Empty));
        assert_eq!(
            parse_dn_string("CN"),
            Err(DnError::MissingEquals("CN".into()))
        );
        assert_eq!(
            parse_dn_string("XX=1"),
            Err(DnError::UnknownAttribute("XX".into()))
        );
        assert_eq!(
            parse_dn_string("CN= "),
            Err(DnError::EmptyValue("CN".into()))
        );
        assert_eq!(parse_dn_string(r"CN=a\"), Err(DnError::BadEscape));
    }
}
