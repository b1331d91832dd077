//! Distinguished names (also `ruleset::dn`): their display form, and the issuer identity
//! revocation looks them up by: one 64-bit id per name, computed the same way from a
//! policy string (`CN=Intermediate CA,O=Example`), a CRL's issuer and a certificate's
//! issuer, so that attribute order, spacing and letter case in the policy do not decide
//! whether a revocation entry applies.

use std::borrow::Cow;
use std::fmt;

use sha2::{Digest, Sha256};
use x509_parser::asn1_rs::Tag;
use x509_parser::der_parser::oid::Oid;
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

use super::hex::hex_lower;
use super::oid::find_row;

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
    find_row(oid, ATTRIBUTE_NAMES).map(|(_, dotted, name)| (*name, *dotted))
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
#[non_exhaustive]
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

/// String preparation for comparison, RFC 4518 as far as it goes without Unicode
/// normalisation tables (which would cost the filter module more than the rest of the
/// name code): the characters RFC 4518 section 2.2 maps to nothing are dropped, the other
/// controls and every space-like character become a space; letters are lowercased (Rust's
/// full Unicode lowercase mapping); leading and trailing spaces are dropped and inner runs
/// of spaces collapse to one (insignificant space handling). Not done: NFKC normalisation
/// and the prohibited-character check, so a name spelled with a precomposed `é` in one
/// place and `e` + combining accent in another gives two ids.
fn normalize_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut space = false;
    for c in v.chars() {
        if mapped_to_nothing(c) {
            continue;
        }
        if c.is_whitespace() || c.is_control() {
            space = !out.is_empty();
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.extend(c.to_lowercase());
    }
    out
}

/// RFC 4518 section 2.2: soft hyphens, the combining grapheme joiner, variation
/// selectors, the object replacement character, zero-width characters and the byte order
/// mark are mapped to nothing; every other control except the spacing ones
/// (tab, LF, VT, FF, CR, NEL) is too.
fn mapped_to_nothing(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{1806}'
            | '\u{034F}'
            | '\u{180B}'..='\u{180E}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FFFC}'
            | '\u{200B}'..='\u{200D}'
            | '\u{2060}'
            | '\u{FEFF}'
    ) || (c.is_control() && !matches!(c, '\t' | '\n' | '\u{0B}' | '\u{0C}' | '\r' | '\u{85}'))
}

/// The text of an attribute value, decoded from its ASN.1 string type, or `None` when
/// the bytes are not valid for it (the value is then compared as hex).
///
/// - UTF8String, PrintableString, NumericString, IA5String, VisibleString: UTF-8 (the
///   others are subsets of ASCII);
/// - BMPString: UTF-16BE (surrogate pairs are decoded; a lone surrogate is invalid);
/// - UniversalString: UCS-4, big-endian;
/// - TeletexString (T.61): read as ISO 8859-1, one byte per character, as OpenSSL and
///   most CAs treat it. Proper T.61 differs for a few bytes (diacritics written as a
///   prefix byte before the letter), which no CA in use writes.
///
/// Any other type is read as UTF-8 if it is, as before.
fn attribute_text<'a>(a: &'a AttributeTypeAndValue<'_>) -> Option<Cow<'a, str>> {
    let bytes = a.as_slice();
    match a.attr_value().tag() {
        Tag::BmpString => {
            let units = bytes
                .chunks_exact(2)
                .map(|p| <[u8; 2]>::try_from(p).ok().map(u16::from_be_bytes))
                .collect::<Option<Vec<u16>>>()?;
            if bytes.len() % 2 != 0 {
                return None;
            }
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
                .map(Cow::Owned)
        }
        Tag::UniversalString => {
            if bytes.len() % 4 != 0 {
                return None;
            }
            bytes
                .chunks_exact(4)
                .map(|q| {
                    let word = <[u8; 4]>::try_from(q).ok()?;
                    char::from_u32(u32::from_be_bytes(word))
                })
                .collect::<Option<String>>()
                .map(Cow::Owned)
        }
        Tag::TeletexString => Some(match std::str::from_utf8(bytes) {
            Ok(ascii) if ascii.is_ascii() => Cow::Borrowed(ascii),
            _ => Cow::Owned(bytes.iter().copied().map(char::from).collect()),
        }),
        _ => std::str::from_utf8(bytes).ok().map(Cow::Borrowed),
    }
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
            let value = match attribute_text(a) {
                Some(s) => normalize_value(&s),
                None => format!("#{}", hex_lower(a.as_slice())),
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
            match attribute_text(attr) {
                Some(v) => escape_value(&v, &mut out),
                None => {
                    out.push('#');
                    out.push_str(&hex_lower(attr.as_slice()));
                }
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

/// `v` without leading and trailing blanks, except an escaped last one (`a\ `).
fn trim_unescaped(v: &str) -> &str {
    let v = v.trim_start();
    let trimmed = v.trim_end();
    let backslashes = trimmed.chars().rev().take_while(|c| *c == '\\').count();
    if backslashes % 2 == 1 {
        // The escape takes the first blank after it.
        let len = trimmed.len();
        let next = v
            .get(len..)
            .and_then(|rest| rest.chars().next())
            .map_or(0, char::len_utf8);
        v.get(..len.saturating_add(next)).unwrap_or(v)
    } else {
        trimmed
    }
}

/// Parses an RFC 4514 distinguished name string into its issuer id. Attribute order
/// does not matter; names are case-insensitive; values compare case-insensitively.
pub fn parse_dn_string(s: &str) -> Result<u64, DnError> {
    if s.trim().is_empty() {
        return Err(DnError::Empty);
    }
    let mut attrs = Vec::new();
    for component in split_unescaped(s, &[',', ';', '+']) {
        let (name, value) = component
            .split_once('=')
            .ok_or_else(|| DnError::MissingEquals(component.trim().to_owned()))?;
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
        let value = normalize_value(&unescape(trim_unescaped(value))?);
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
    use x509_parser::prelude::FromDer as _;

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

    /// DER of a Name with one attribute per RDN: `(OID content bytes, tag, value bytes)`.
    fn der_name(attrs: &[(&[u8], u8, Vec<u8>)]) -> Vec<u8> {
        fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
            let mut out = vec![tag];
            let len = body.len();
            if len < 0x80 {
                out.push(len as u8);
            } else if len < 0x100 {
                out.extend([0x81, len as u8]);
            } else {
                out.extend([0x82, (len >> 8) as u8, len as u8]);
            }
            out.extend_from_slice(body);
            out
        }
        let mut rdns = Vec::new();
        for (oid, tag, value) in attrs {
            let mut atv = tlv(0x06, oid);
            atv.extend(tlv(*tag, value));
            rdns.extend(tlv(0x31, &tlv(0x30, &atv)));
        }
        tlv(0x30, &rdns)
    }

    const CN: &[u8] = &[0x55, 0x04, 0x03];
    const O: &[u8] = &[0x55, 0x04, 0x0a];
    const UTF8: u8 = 0x0c;
    const PRINTABLE: u8 = 0x13;
    const TELETEX: u8 = 0x14;
    const UNIVERSAL: u8 = 0x1c;
    const BMP: u8 = 0x1e;

    fn utf16(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(u16::to_be_bytes).collect()
    }
    fn ucs4(s: &str) -> Vec<u8> {
        s.chars().flat_map(|c| u32::from(c).to_be_bytes()).collect()
    }
    fn latin1(s: &str) -> Vec<u8> {
        s.chars()
            .map(|c| u8::try_from(u32::from(c)).unwrap())
            .collect()
    }

    fn id_and_display(der: &[u8]) -> (u64, String) {
        let (rest, name) = X509Name::from_der(der).unwrap();
        assert!(rest.is_empty());
        (issuer_id_of(&name), format_name(&name))
    }

    /// Regression: issuer names in BMPString, UniversalString or TeletexString never
    /// matched a policy `issuer:` (their bytes were compared as UTF-8, NULs and all).
    #[test]
    fn every_string_type_of_one_name_gives_one_id() {
        let want = parse_dn_string("CN=Zürich Intermediate CA,O=Exämple").unwrap();
        type Encode = fn(&str) -> Vec<u8>;
        let encodings: Vec<(u8, Encode)> = vec![
            (UTF8, |s| s.as_bytes().to_vec()),
            (BMP, utf16),
            (UNIVERSAL, ucs4),
            (TELETEX, latin1),
        ];
        for (tag, enc) in &encodings {
            let der = der_name(&[
                (O, *tag, enc("Exämple")),
                (CN, *tag, enc("Zürich Intermediate CA")),
            ]);
            let (id, display) = id_and_display(&der);
            assert_eq!(id, want, "tag {tag:#x}");
            assert_eq!(
                display, "CN=Zürich Intermediate CA,O=Exämple",
                "tag {tag:#x}"
            );
        }
        // Mixed types within one name, and ASCII in PrintableString.
        let der = der_name(&[
            (O, PRINTABLE, b"Example".to_vec()),
            (CN, BMP, utf16("Intermediate CA")),
        ]);
        assert_eq!(
            id_and_display(&der).0,
            parse_dn_string("CN=Intermediate CA,O=Example").unwrap()
        );
        // Beyond the BMP: a surrogate pair in UTF-16, one word in UCS-4.
        let emoji = "CA \u{1F510}";
        let a = id_and_display(&der_name(&[(CN, BMP, utf16(emoji))])).0;
        let b = id_and_display(&der_name(&[(CN, UNIVERSAL, ucs4(emoji))])).0;
        let c = id_and_display(&der_name(&[(CN, UTF8, emoji.as_bytes().to_vec())])).0;
        assert_eq!((a, b), (c, c));
    }

    #[test]
    fn invalid_wide_strings_compare_as_hex_not_as_text() {
        // A lone surrogate, an odd BMPString length, a UCS-4 word above U+10FFFF.
        for (tag, bytes) in [
            (BMP, vec![0xd8, 0x00, 0x00, 0x41]),
            (BMP, vec![0x00, 0x41, 0x00]),
            (UNIVERSAL, vec![0x00, 0x11, 0x00, 0x00]),
        ] {
            let (_, display) = id_and_display(&der_name(&[(CN, tag, bytes.clone())]));
            assert_eq!(display, format!("CN=#{}", hex_lower(&bytes)));
        }
    }

    #[test]
    fn preparation_maps_controls_spaces_and_invisible_characters() {
        let want = parse_dn_string("CN=Intermediate CA").unwrap();
        for spelling in [
            "intermediate\u{00A0}ca",
            "inter\u{00AD}mediate ca",
            "\u{200B}intermediate\tca\n",
            "INTERMEDIATE \u{3000} CA",
            "inter\u{FEFF}mediate ca\u{0}",
        ] {
            let der = der_name(&[(CN, BMP, utf16(spelling))]);
            assert_eq!(id_and_display(&der).0, want, "{spelling:?}");
        }
        // A NUL between words is dropped, not a space: `ab`, not `a b`.
        assert_eq!(normalize_value("a\u{0}b"), "ab");
        assert_eq!(normalize_value("  a \r\n b  "), "a b");
    }

    proptest::proptest! {
        /// Any name that each string type can carry gives the same id in every one of
        /// them, and as a policy string (RFC 4514 escaped).
        #[test]
        fn encodings_of_one_name_agree(
            cn in "[ -~\u{a0}-\u{ff}]{1,40}",
            o in "[a-zA-Z0-9 \u{c0}-\u{ff}\u{100}-\u{17f}\u{4e00}-\u{4e20}\u{1F300}-\u{1F310}]{1,20}",
        ) {
            proptest::prop_assume!(!normalize_value(&cn).is_empty());
            proptest::prop_assume!(!normalize_value(&o).is_empty());
            let utf8 = id_and_display(&der_name(&[
                (O, UTF8, o.as_bytes().to_vec()),
                (CN, UTF8, cn.as_bytes().to_vec()),
            ])).0;
            let bmp = id_and_display(&der_name(&[(O, BMP, utf16(&o)), (CN, BMP, utf16(&cn))])).0;
            let ucs = id_and_display(&der_name(&[
                (O, UNIVERSAL, ucs4(&o)),
                (CN, UNIVERSAL, ucs4(&cn)),
            ])).0;
            // Teletex carries Latin-1 only: the CN alphabet is Latin-1.
            let teletex = id_and_display(&der_name(&[
                (O, UTF8, o.as_bytes().to_vec()),
                (CN, TELETEX, latin1(&cn)),
            ])).0;
            let mut policy = String::from("CN=");
            escape_value(&cn, &mut policy);
            policy.push_str(",O=");
            escape_value(&o, &mut policy);
            let from_policy = parse_dn_string(&policy).unwrap();
            proptest::prop_assert_eq!(bmp, utf8);
            proptest::prop_assert_eq!(ucs, utf8);
            proptest::prop_assert_eq!(teletex, utf8);
            proptest::prop_assert_eq!(from_policy, utf8);
        }
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
