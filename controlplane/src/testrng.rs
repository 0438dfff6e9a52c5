//! The one seeded RNG of this crate's tests: prints its seed, takes `MMC_TEST_SEED` to replay.

/// xorshift64: cheap, deterministic, good enough to drive randomized tests.
pub(crate) struct SeededRng(u64);

impl SeededRng {
    /// The seed from `MMC_TEST_SEED`, else `default`; printed so a failure can be replayed.
    pub(crate) fn from_env(test: &str, default: u64) -> SeededRng {
        let seed = std::env::var("MMC_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default);
        println!("{test}: seed {seed} (replay with MMC_TEST_SEED={seed})");
        SeededRng(seed | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
