//! PEM text: telling it from DER, and its `-----BEGIN label-----` blocks decoded.

use super::error::CertError;

/// Whether `bytes` start (after whitespace) with a PEM `-----BEGIN ` line; anything
/// else is read as DER.
pub fn looks_like_pem(bytes: &[u8]) -> bool {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    bytes
        .get(start..)
        .is_some_and(|b| b.starts_with(b"-----BEGIN "))
}

/// One `-----BEGIN label-----` … `-----END label-----` block, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemBlock {
    /// The label, such as `CERTIFICATE` or `X509 CRL`.
    pub label: String,
    /// The decoded contents (DER).
    pub der: Vec<u8>,
}

/// Every PEM block in `text`, in order; text outside blocks is ignored (as OpenSSL
/// does). Written here with the `base64` crate, which the filter links anyway, rather
/// than through x509-parser's PEM reader and its own base64 dependency.
pub fn pem_blocks(text: &[u8]) -> Result<Vec<PemBlock>, CertError> {
    use base64::Engine as _;
    let text = std::str::from_utf8(text).map_err(|_| CertError::Pem("not UTF-8 text".into()))?;
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("-----BEGIN ") {
        let after = rest.get(at.saturating_add(11)..).unwrap_or_default();
        let (label, body) = after
            .split_once("-----")
            .ok_or_else(|| CertError::Pem("unterminated BEGIN line".into()))?;
        // Concatenated, not `format!`ed: the formatting machinery is cold code in the
        // filter, and a cache miss on it cost more than the concatenation.
        let end = ["-----END ", label, "-----"].concat();
        let (b64, tail) = body
            .split_once(end.as_str())
            .ok_or_else(|| CertError::Pem(format!("no `{end}` line")))?;
        // The runs between whitespace are copied whole, not byte by byte, and not as
        // `char`s into a `String`: in wasm, that filter cost more than the decoding.
        let mut packed = Vec::with_capacity(b64.len());
        for run in b64.as_bytes().split(u8::is_ascii_whitespace) {
            packed.extend_from_slice(run);
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(&packed)
            .map_err(|e| CertError::Pem(format!("invalid base64 in `{label}` block: {e}")))?;
        blocks.push(PemBlock {
            label: label.to_owned(),
            der,
        });
        rest = tail;
    }
    Ok(blocks)
}
