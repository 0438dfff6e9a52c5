//! Claims on byte ranges of an arena, for the copies Rust code makes (`copy_in` / `copy_out`).
//!
//! Two copies by this process into (or a copy into and out of) overlapping bytes at the same time
//! would be a data race in Rust's abstract machine. The protocol (space allocator, read leases,
//! epoch fence) keeps that from happening, but the safe API must not depend on the protocol for
//! soundness: every copy claims its range for its duration, and a copy whose range conflicts with
//! one in flight is refused ([`HalError::Busy`]) instead of racing. Reads may overlap reads.
//!
//! The claims live in a short vector under a mutex: its length is the number of copies in flight
//! in this process (bounded by its threads), and a claim costs two uncontended lock round trips,
//! small beside the copy. Copies the kernel makes (`fill_from` / `drain_to`) and writes by other
//! processes are outside the abstract machine: to this process they are writes of unknown bytes,
//! which readers detect with their lease and fence checks.

use std::sync::Mutex;

use crate::error::HalError;

#[derive(Debug, Default)]
pub(super) struct Claims {
    inflight: Mutex<Vec<Claim>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Claim {
    start: u64,
    end: u64,
    write: bool,
}

impl Claims {
    /// Claim `[offset, offset + len)` for a copy; `write` when the copy writes the arena.
    pub(super) fn claim(
        &self,
        offset: u64,
        len: u64,
        write: bool,
    ) -> Result<ClaimGuard<'_>, HalError> {
        let claim = Claim {
            start: offset,
            end: offset.checked_add(len).expect("bounds were checked"),
            write,
        };
        let mut inflight = self.inflight.lock().expect("arena claims lock poisoned");
        if let Some(other) = inflight
            .iter()
            .find(|c| c.start < claim.end && claim.start < c.end && (c.write || write))
        {
            return Err(HalError::Busy {
                offset,
                len,
                other_offset: other.start,
                other_len: other.end - other.start,
            });
        }
        inflight.push(claim);
        Ok(ClaimGuard {
            claims: self,
            claim,
        })
    }

    #[cfg(test)]
    pub(super) fn inflight(&self) -> usize {
        self.inflight
            .lock()
            .expect("arena claims lock poisoned")
            .len()
    }
}

/// A claimed range; dropping it ends the claim.
#[derive(Debug)]
pub(super) struct ClaimGuard<'a> {
    claims: &'a Claims,
    claim: Claim,
}

impl Drop for ClaimGuard<'_> {
    fn drop(&mut self) {
        let mut inflight = self
            .claims
            .inflight
            .lock()
            .expect("arena claims lock poisoned");
        let i = inflight
            .iter()
            .position(|c| *c == self.claim)
            .expect("a live claim is listed");
        inflight.swap_remove(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicting_copies_are_refused_and_reads_share() {
        let c = Claims::default();
        let w = c.claim(100, 50, true).unwrap();
        assert!(matches!(
            c.claim(149, 10, false),
            Err(HalError::Busy { .. })
        ));
        assert!(matches!(c.claim(90, 11, true), Err(HalError::Busy { .. })));
        let beside = c.claim(150, 10, true).unwrap();
        drop(w);
        let r1 = c.claim(100, 50, false).unwrap();
        let r2 = c.claim(120, 30, false).unwrap();
        assert!(
            c.claim(140, 20, false).is_err(),
            "a read never overlaps a write"
        );
        assert!(
            c.claim(110, 1, true).is_err(),
            "a write never overlaps a read"
        );
        drop((r1, r2, beside));
        assert_eq!(c.inflight(), 0);
        let _empty = c.claim(0, 0, true).unwrap();
    }
}
