//! The hasher of the snapshot's tables: a few instructions per key where
//! the standard SipHash costs hundreds.
//!
//! SipHash guards a table against keys chosen to collide. The snapshot's
//! keys come from the record set, not from the network; a query only looks
//! keys up, so it cannot fill a bucket, only land in one. The mix below is
//! FxHash's word step with a final avalanche (murmur3's `fmix64`), so keys
//! that differ only in their last bytes still spread over the low bits the
//! table indexes by.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` with [`KeyHasher`].
pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<KeyHasher>>;

/// A `HashSet` with [`KeyHasher`].
pub(crate) type FastSet<K> = std::collections::HashSet<K, BuildHasherDefault<KeyHasher>>;

const K: u64 = 0xf135_7aea_2e62_a9c5;

/// See the module documentation.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct KeyHasher(u64);

impl KeyHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(26) ^ word).wrapping_mul(K);
    }
}

impl Hasher for KeyHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            // The length keeps "a\0" and "a" apart.
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, Hash};

    fn hash<T: Hash + ?Sized>(t: &T) -> u64 {
        BuildHasherDefault::<KeyHasher>::default().hash_one(t)
    }

    #[test]
    fn similar_keys_spread_over_the_low_bits() {
        // Task names of one service differ only at the end; a table of 2^16
        // buckets must still see them land apart.
        let mut seen = std::collections::HashSet::new();
        for s in 0..64 {
            for t in 0..64 {
                let key = format!("web-{s}.{t}");
                seen.insert(hash(key.as_bytes()) & 0xFFFF);
            }
        }
        assert!(seen.len() > 3900, "{} of 4096 distinct", seen.len());
        assert_ne!(hash(&b"a"[..]), hash(&b"a\0"[..]));
    }
}
