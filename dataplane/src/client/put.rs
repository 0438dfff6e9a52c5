//! Put, driven: the sans-IO [`PutOp`] decides (allocate, write every replica, commit, retry while
//! leased space frees up, deadline); this driver makes its meta calls and hands its transfers,
//! resolved to the caller's slices, to the transport backends (`crate::transport`).

use mmc_controlplane::Result;
use mmc_core::client::{check_lengths, Action, PutOp, Transfer};
use mmc_core::transport::{write_jobs, Job};

use super::{Client, PutOptions};

/// Batches of at least this many bytes compute their checksums on a second thread while the
/// writes run.
const PARALLEL_CHECKSUM_MIN_BYTES: u64 = 1 << 20;

/// CRC-32C of each value (its parts concatenated).
fn checksums(values: &[&[&[u8]]]) -> Vec<u32> {
    values
        .iter()
        .map(|v| mmc_core::checksum(v.iter().copied()))
        .collect()
}

impl Client {
    /// Put one object from one buffer. Create-only: an existing key is `Error::Exists`.
    pub fn put(&self, key: &str, data: &[u8], opts: &PutOptions) -> Result<()> {
        self.put_parts(key, &[data], opts)
    }

    /// Put one object whose bytes are `parts` concatenated (layer-wise put).
    pub fn put_parts(&self, key: &str, parts: &[&[u8]], opts: &PutOptions) -> Result<()> {
        self.flush_releases();
        // Small values: one meta round trip, into space leased ahead.
        if let Some(done) = self.put_small(key, parts, opts) {
            return done;
        }
        self.batch_put_parts(&[key], &[parts], opts)?.remove(0)
    }

    /// Put many objects, one result per key; `Err` for the whole call only when the batch itself
    /// is refused (too many keys, mismatched lengths).
    pub fn batch_put(
        &self,
        keys: &[&str],
        values: &[&[u8]],
        opts: &PutOptions,
    ) -> Result<Vec<Result<()>>> {
        let parts: Vec<[&[u8]; 1]> = values.iter().map(|v| [*v]).collect();
        let parts: Vec<&[&[u8]]> = parts.iter().map(|p| &p[..]).collect();
        self.batch_put_parts(keys, &parts, opts)
    }

    /// Put many objects, each from several pieces, in one alloc and one commit round trip.
    pub fn batch_put_parts(
        &self,
        keys: &[&str],
        values: &[&[&[u8]]],
        opts: &PutOptions,
    ) -> Result<Vec<Result<()>>> {
        check_lengths(keys.len(), values.len(), "values")?;
        let sizes: Vec<u64> = values
            .iter()
            .map(|v| v.iter().map(|p| p.len() as u64).sum())
            .collect();
        // Small batches: checksums first, inline. Large ones: computed on a second thread while
        // the first round of writes runs (on a multi-core host the pass over the bytes then
        // costs little time); the commit needs them, not the writes.
        let total: u64 = sizes.iter().sum();
        let crcs = (total < PARALLEL_CHECKSUM_MIN_BYTES).then(|| checksums(values));
        self.put_with(
            keys,
            &sizes,
            crcs,
            || checksums(values),
            opts,
            |t| write_jobs(t, values),
        )
    }

    /// The put loop, for host or device values: `crcs` when known up front, else `late_crcs`
    /// runs beside the first round of writes; `jobs` resolves a round's transfers.
    pub(crate) fn put_with<'v>(
        &self,
        keys: &[&str],
        sizes: &[u64],
        crcs: Option<Vec<u32>>,
        late_crcs: impl Fn() -> Vec<u32> + Sync,
        opts: &PutOptions,
        jobs: impl Fn(&[Transfer]) -> Vec<Job<'v>>,
    ) -> Result<Vec<Result<()>>> {
        self.renew_session(self.deadline());
        let mut op = PutOp::new(
            keys,
            sizes,
            crcs.as_deref(),
            opts,
            self.local_rank(),
            self.now_ms(),
            self.timeout_ms(),
        )?
        .with_client_id(self.client_id);
        loop {
            match op.poll(self.now_ms()) {
                Action::Transfer => {
                    self.before_transfer();
                    let deadline = self.instant(op.deadline_ms());
                    let jobs = jobs(op.transfers());
                    let outcomes = if op.has_crcs() {
                        self.transports.run(jobs, op.services(), deadline)
                    } else {
                        let services = op.services();
                        let (outcomes, crcs) = std::thread::scope(|s| {
                            let sums = s.spawn(&late_crcs);
                            let outcomes = self.transports.run(jobs, services, deadline);
                            (outcomes, sums.join().expect("checksum thread panicked"))
                        });
                        op.set_crcs(crcs);
                        outcomes
                    };
                    op.on_transfers(self.now_ms(), outcomes);
                }
                Action::Done => return op.results(),
                // A commit only follows writes, so the checksums are set by then.
                other => self.control_step(&mut op, other),
            }
        }
    }
}
