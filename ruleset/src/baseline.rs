//! The hygiene baseline: the key size and certificate lifetime below which a policy is
//! weaker than current guidance. One definition, read by the compiler's warnings
//! (`certgate check`) and by the compliance report (`certgate report`), so the two never
//! disagree about what "weak" means.

/// Smallest RSA modulus, in bits, that counts as strong: NIST SP 800-131A disallows RSA
/// keys under 2048 bits for digital signatures.
pub const RSA_MIN_BITS: u32 = 2048;

/// Longest certificate lifetime, in seconds, that counts as short-lived (90 days): a
/// certificate that lives longer outlives the time a revocation takes to reach every
/// proxy, and the CA/Browser Forum is moving public TLS to far shorter lifetimes.
pub const MAX_LIFETIME_SECS: u64 = 90 * 86_400;

/// Whether an `rsaMinBits` setting admits RSA keys weaker than [`RSA_MIN_BITS`].
pub fn is_weak_rsa_min_bits(bits: u32) -> bool {
    bits < RSA_MIN_BITS
}

/// Whether a `maxLifetime` setting, in seconds, admits certificates that live longer
/// than [`MAX_LIFETIME_SECS`].
pub fn is_long_lifetime(secs: u64) -> bool {
    secs > MAX_LIFETIME_SECS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries() {
        assert!(is_weak_rsa_min_bits(2047));
        assert!(!is_weak_rsa_min_bits(2048));
        assert!(!is_long_lifetime(90 * 86_400));
        assert!(is_long_lifetime(90 * 86_400 + 1));
    }
}
