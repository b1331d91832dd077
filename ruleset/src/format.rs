//! Constants of the binary table format shared by the encoder and the decoder.
//! `ruleset/FORMAT.md` documents the bytes; keep the two in step.

use crate::{Curve, SigHash};

/// First four bytes of every table.
pub const MAGIC: [u8; 4] = *b"CGT\x01";
/// The only format version this build reads and writes.
pub const VERSION: u16 = 2;
/// Header size: magic, version, flags, body length, CRC-32, policy digest, issue time,
/// expiry.
pub const HEADER_LEN: usize = 4 + 2 + 2 + 4 + 4 + 32 + 8 + 8;

/// Section tags, in the order they must appear.
pub const SECTION_META: u8 = 1;
/// Constraints section.
pub const SECTION_CONSTRAINTS: u8 = 2;
/// Rules section.
pub const SECTION_RULES: u8 = 3;
/// Revocation section: stale policy, then the six key lists of [`REVOCATION_LISTS`].
pub const SECTION_REVOCATION: u8 = 4;

/// Largest table accepted, in bytes.
pub const MAX_TABLE_LEN: usize = 512 * 1024 * 1024;
/// Longest string (rule name, pattern, SNI, trust domain, policy name).
pub const MAX_STRING_LEN: usize = 2048;
/// Most policies in one table.
pub const MAX_POLICIES: usize = 4096;
/// Most trust domains.
pub const MAX_TRUST_DOMAINS: usize = 4096;
/// Most rules.
pub const MAX_RULES: usize = 1_000_000;
/// Most entries in one list of a rule (principals, ports, SNI, CIDRs).
pub const MAX_RULE_LIST: usize = 100_000;
/// Most keys in one revocation list.
pub const MAX_REVOKED: usize = 50_000_000;
/// The revocation section's key lists, in table order, as errors name them.
pub const REVOCATION_LISTS: [&str; 6] = [
    "revoked serials",
    "revoked serials (any issuer)",
    "revoked certificates",
    "revoked public keys",
    "revoked issuers (name and key id)",
    "revoked issuers (name)",
];

/// The bit of each curve in the constraints section's curve mask.
pub(crate) const CURVE_BITS: [(Curve, u8); 3] =
    [(Curve::P256, 1), (Curve::P384, 2), (Curve::P521, 4)];
/// The bit of each signature hash in the constraints section's forbidden-hash mask.
pub(crate) const HASH_BITS: [(SigHash, u8); 7] = [
    (SigHash::Md5, 1),
    (SigHash::Sha1, 2),
    (SigHash::Sha224, 4),
    (SigHash::Sha256, 8),
    (SigHash::Sha384, 16),
    (SigHash::Sha512, 32),
    (SigHash::Other, 64),
];

/// CRC-32 (IEEE 802.3, reflected, as in zlib and PNG) of `bytes`.
pub fn crc32(bytes: &[u8]) -> u32 {
    // Built at compile time; indices are in range by construction (const eval would
    // fail the build otherwise).
    #[allow(clippy::indexing_slicing)]
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for b in bytes {
        let idx = usize::from((crc as u8) ^ b);
        crc = TABLE.get(idx).copied().unwrap_or(0) ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(super::crc32(b"123456789"), 0xCBF4_3926);
    }
}
