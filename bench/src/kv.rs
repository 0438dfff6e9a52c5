//! The DeepSeek-R1 KV-cache layout: an engine's paged cache, and the 122 pieces of one block.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::pattern::{fill, first_diff, seed};

/// DeepSeek-R1 (MLA): 61 layers; per layer and block a 128 KiB latent cache piece and a 16 KiB
/// rope piece.
pub const LAYERS: usize = 61;
pub const KV_PIECE: usize = 128 << 10;
pub const PE_PIECE: usize = 16 << 10;
pub const BLOCK_BYTES: usize = LAYERS * (KV_PIECE + PE_PIECE);

/// The engine's paged KV cache: per layer, two tensors each holding every block slot; a block
/// table maps logical block `b` to slot `slot[b]`.
pub struct KvCache {
    pub kv: Vec<Vec<u8>>,
    pub pe: Vec<Vec<u8>>,
    pub slot: Vec<usize>,
}

impl KvCache {
    /// `poison` fills every byte (so the pages are touched before anything is timed).
    pub fn new(blocks: usize, poison: u8, table_seed: u64) -> KvCache {
        let mut slot: Vec<usize> = (0..blocks).collect();
        slot.shuffle(&mut StdRng::seed_from_u64(table_seed));
        KvCache {
            kv: (0..LAYERS)
                .map(|_| vec![poison; blocks * KV_PIECE])
                .collect(),
            pe: (0..LAYERS)
                .map(|_| vec![poison; blocks * PE_PIECE])
                .collect(),
            slot,
        }
    }

    pub fn poison(&mut self, byte: u8) {
        for t in self.kv.iter_mut().chain(self.pe.iter_mut()) {
            t.fill(byte);
        }
    }

    /// Block `b`'s pieces, layer by layer: (kv, pe).
    pub fn kv_range(&self, b: usize) -> std::ops::Range<usize> {
        let s = self.slot[b];
        s * KV_PIECE..(s + 1) * KV_PIECE
    }

    pub fn pe_range(&self, b: usize) -> std::ops::Range<usize> {
        let s = self.slot[b];
        s * PE_PIECE..(s + 1) * PE_PIECE
    }

    /// Fill block `b` with its pattern (piece `2l` = layer l's kv, `2l+1` its pe).
    pub fn fill_block(&mut self, b: usize, key_seed: u64) {
        let (kr, pr) = (self.kv_range(b), self.pe_range(b));
        for l in 0..LAYERS {
            fill(&mut self.kv[l][kr.clone()], seed(key_seed, 2 * l as u64));
            fill(
                &mut self.pe[l][pr.clone()],
                seed(key_seed, 2 * l as u64 + 1),
            );
        }
    }

    /// The 122 pieces of block `b`, in object order.
    pub fn parts(&self, b: usize) -> Vec<&[u8]> {
        let (kr, pr) = (self.kv_range(b), self.pe_range(b));
        (0..LAYERS)
            .flat_map(|l| [&self.kv[l][kr.clone()], &self.pe[l][pr.clone()]])
            .collect()
    }

    /// Mutable pieces of each block in `blocks`, each in object order.
    pub fn parts_mut(&mut self, blocks: &[usize]) -> Vec<Vec<&mut [u8]>> {
        let mut out: Vec<Vec<&mut [u8]>> = blocks
            .iter()
            .map(|_| Vec::with_capacity(2 * LAYERS))
            .collect();
        for (kv, pe) in self.kv.iter_mut().zip(self.pe.iter_mut()) {
            let mut kv_slots: Vec<Option<&mut [u8]>> =
                kv.chunks_exact_mut(KV_PIECE).map(Some).collect();
            let mut pe_slots: Vec<Option<&mut [u8]>> =
                pe.chunks_exact_mut(PE_PIECE).map(Some).collect();
            for (o, &b) in out.iter_mut().zip(blocks) {
                let s = self.slot[b];
                o.push(kv_slots[s].take().expect("each block once per batch"));
                o.push(pe_slots[s].take().expect("each block once per batch"));
            }
        }
        out
    }
}

/// Compare every block's pieces in `dst` (its block table) with `src` (its own); returns how many
/// pieces differ and a message for each of the first `max_messages`.
pub fn diff_blocks(
    src: &KvCache,
    dst: &KvCache,
    keys: &[String],
    max_messages: usize,
) -> (usize, Vec<String>) {
    let mut bad = 0;
    let mut messages = Vec::new();
    for (b, key) in keys.iter().enumerate() {
        let (skr, spr) = (src.kv_range(b), src.pe_range(b));
        let (dkr, dpr) = (dst.kv_range(b), dst.pe_range(b));
        for l in 0..LAYERS {
            let pairs = [
                ("kv", &src.kv[l][skr.clone()], &dst.kv[l][dkr.clone()]),
                ("pe", &src.pe[l][spr.clone()], &dst.pe[l][dpr.clone()]),
            ];
            for (what, want, got) in pairs {
                if let Some(at) = first_diff(want, got) {
                    bad += 1;
                    if messages.len() < max_messages {
                        messages.push(format!(
                            "key {key:?} layer {l} {what} piece differs at byte {at}"
                        ));
                    }
                }
            }
        }
    }
    (bad, messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `parts_mut` hands out, filled from `parts`, reproduces every block under the other
    /// block table; one flipped byte is caught in the right piece.
    #[test]
    fn kv_layout_round_trips_through_another_block_table() {
        let n = 3;
        let keys: Vec<String> = (0..n).map(|b| format!("k{b}")).collect();
        let mut src = KvCache::new(n, 0, 1);
        for b in 0..n {
            src.fill_block(b, seed(7, b as u64));
        }
        let mut dst = KvCache::new(n, 0xA5, 2);
        assert_ne!(
            src.slot, dst.slot,
            "the test needs two different block tables"
        );
        assert_eq!(diff_blocks(&src, &dst, &keys, 10).0, 2 * LAYERS * n);
        let blocks: Vec<usize> = (0..n).collect();
        let mut parts = dst.parts_mut(&blocks);
        for (b, p) in parts.iter_mut().enumerate() {
            let want = src.parts(b);
            assert_eq!(p.len(), 2 * LAYERS);
            assert_eq!(want.iter().map(|w| w.len()).sum::<usize>(), BLOCK_BYTES);
            for (d, s) in p.iter_mut().zip(want) {
                d.copy_from_slice(s);
            }
        }
        assert_eq!(diff_blocks(&src, &dst, &keys, 10), (0, Vec::new()));
        let s = dst.slot[1];
        dst.pe[60][s * PE_PIECE + 100] ^= 1;
        let (bad, msgs) = diff_blocks(&src, &dst, &keys, 10);
        assert_eq!(bad, 1);
        assert!(
            msgs[0].contains("\"k1\" layer 60 pe piece differs at byte 100"),
            "{msgs:?}"
        );
    }
}
