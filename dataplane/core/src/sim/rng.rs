//! The simulator's one source of randomness: SplitMix64 from the seed, so a seed replays exactly.

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo <= hi);
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `per_million` / 1,000,000.
    pub fn chance(&mut self, per_million: u64) -> bool {
        self.next_u64() % 1_000_000 < per_million
    }

    pub fn pick(&mut self, n: usize) -> usize {
        assert!(n > 0);
        (self.next_u64() % n as u64) as usize
    }
}

/// The bytes a put of `key` at `version` writes: byte `i` is a hash of (key, version, i), so any
/// torn, shifted or foreign byte is caught, and the first 8 bytes (when there are 8) carry the
/// version.
pub fn pattern(key: &str, version: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let kh = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let mut r = Rng::new(kh ^ version.rotate_left(17));
    let v = version.to_le_bytes();
    for i in 0..len {
        if len >= 8 && i < 8 {
            out.push(v[i % 8]);
        } else {
            out.push(r.next_u64() as u8);
        }
    }
    out
}
