//! Deterministic fill patterns and byte-exact verification.

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// A well-mixed 64-bit seed from two numbers (SplitMix64 finaliser).
pub fn seed(a: u64, b: u64) -> u64 {
    let mut z = a.wrapping_mul(GOLDEN) ^ b.wrapping_add(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fill `buf` with a cheap pattern unique to `seed`: 64-bit words `seed + i * GOLDEN`.
pub fn fill(buf: &mut [u8], seed: u64) {
    let mut x = seed;
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        c.copy_from_slice(&x.to_le_bytes());
        x = x.wrapping_add(GOLDEN);
    }
    let rem = chunks.into_remainder();
    let n = rem.len();
    rem.copy_from_slice(&x.to_le_bytes()[..n]);
}

/// The first offset where `got` differs from `want` (a length difference counts).
pub fn first_diff(want: &[u8], got: &[u8]) -> Option<usize> {
    if want == got {
        return None;
    }
    Some(
        want.iter()
            .zip(got)
            .position(|(a, b)| a != b)
            .unwrap_or(want.len().min(got.len())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_differ_per_seed_and_are_reproducible() {
        let mut a = vec![0u8; 1001];
        let mut b = vec![0u8; 1001];
        fill(&mut a, seed(1, 2));
        fill(&mut b, seed(1, 2));
        assert_eq!(first_diff(&a, &b), None);
        fill(&mut b, seed(1, 3));
        assert!(first_diff(&a, &b).is_some());
        assert_eq!(first_diff(&a, &a[..10]), Some(10));
    }
}
