//! SipHash-2-4 (Aumasson & Bernstein), 64-bit output. The revocation set stores
//! 64-bit keys of revoked certificates; compiler and filter must compute them
//! identically on every platform and toolchain, so the function is written out here
//! rather than borrowed from `std`, whose `DefaultHasher` may change between releases.

/// The fixed key of the revocation set's hash (format version 1).
pub const REVOCATION_KEY: [u8; 16] = *b"certgate-revset1";

#[inline]
fn round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13);
    v[1] ^= v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16);
    v[3] ^= v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21);
    v[3] ^= v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17);
    v[1] ^= v[2];
    v[2] = v[2].rotate_left(32);
}

/// Streaming SipHash-2-4 over several byte slices, as if concatenated.
#[derive(Debug, Clone)]
pub struct SipHasher {
    v: [u64; 4],
    tail: [u8; 8],
    ntail: usize,
    len: u64,
}

impl SipHasher {
    /// A hasher with the 128-bit key `key`.
    pub fn new(key: &[u8; 16]) -> Self {
        let mut k0 = [0u8; 8];
        let mut k1 = [0u8; 8];
        let (a, b) = key.split_at(8);
        k0.copy_from_slice(a);
        k1.copy_from_slice(b);
        let k0 = u64::from_le_bytes(k0);
        let k1 = u64::from_le_bytes(k1);
        SipHasher {
            v: [
                k0 ^ 0x736f_6d65_7073_6575,
                k1 ^ 0x646f_7261_6e64_6f6d,
                k0 ^ 0x6c79_6765_6e65_7261,
                k1 ^ 0x7465_6462_7974_6573,
            ],
            tail: [0; 8],
            ntail: 0,
            len: 0,
        }
    }

    fn compress(&mut self, m: u64) {
        self.v[3] ^= m;
        round(&mut self.v);
        round(&mut self.v);
        self.v[0] ^= m;
    }

    /// Feeds bytes.
    pub fn write(&mut self, bytes: &[u8]) {
        self.len = self.len.wrapping_add(bytes.len() as u64);
        for &b in bytes {
            if let Some(slot) = self.tail.get_mut(self.ntail) {
                *slot = b;
            }
            self.ntail = self.ntail.wrapping_add(1);
            if self.ntail == 8 {
                let m = u64::from_le_bytes(self.tail);
                self.compress(m);
                self.ntail = 0;
            }
        }
    }

    /// The 64-bit hash of everything written.
    pub fn finish(mut self) -> u64 {
        let mut last = [0u8; 8];
        if let (Some(dst), Some(src)) = (last.get_mut(..self.ntail), self.tail.get(..self.ntail)) {
            dst.copy_from_slice(src);
        }
        last[7] = (self.len & 0xff) as u8;
        self.compress(u64::from_le_bytes(last));
        self.v[2] ^= 0xff;
        for _ in 0..4 {
            round(&mut self.v);
        }
        self.v[0] ^ self.v[1] ^ self.v[2] ^ self.v[3]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from the SipHash reference implementation (key 00..0f, input 00..n-1).
    #[test]
    fn reference_vectors() {
        let key: [u8; 16] = core::array::from_fn(|i| i as u8);
        let want: [(usize, u64); 4] = [
            (0, 0x726f_db47_dd0e_0e31),
            (1, 0x74f8_39c5_93dc_67fd),
            (8, 0x93f5_f579_9a93_2462),
            (15, 0xa129_ca61_49be_45e5),
        ];
        for (n, h) in want {
            let input: Vec<u8> = (0..n as u8).collect();
            let mut s = SipHasher::new(&key);
            s.write(&input);
            assert_eq!(s.finish(), h, "length {n}");
            // Split writes give the same hash.
            let mut s = SipHasher::new(&key);
            let (a, b) = input.split_at(n / 3);
            s.write(a);
            s.write(b);
            assert_eq!(s.finish(), h, "split length {n}");
        }
    }
}
