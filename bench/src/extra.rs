//! The runs that need extra `mmc-local` processes of the bench's cluster: busy-poll rows, the
//! shard-mode data servers and the RDMA rows (MR cache and bounce buffers).

use mmc_config::{DataOpType, RdmaProvider};
use mmc_controlplane::msg::PREFERRED_AFFINITY;
use mmc_dataplane::{Client, ClientConfig, PutOptions};

use crate::cluster::Cluster;
use crate::progress::Progress;
use crate::rdma;
use crate::report::{Row, BUSY_POLL, SHARDS, SHARDS_URING, TCP};
use crate::workloads::{self, Checks, Ctx, Place, Plan};
use crate::Args;

/// Where the extra runs put what they measured and what went wrong.
pub(crate) struct Out<'a> {
    pub(crate) rows: &'a mut Vec<Row>,
    pub(crate) notes: &'a mut Vec<String>,
    pub(crate) checks: &'a mut Checks,
    pub(crate) op_failures: &'a mut Vec<String>,
}

/// Busy-poll rows on `busy_places`, the shard-mode data servers (`shards_row`) and the RDMA rows
/// of `names`, each against an `mmc-local` started for it in `c`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn rows(
    c: &mut Cluster,
    extra: &Extra,
    config: &ClientConfig,
    args: &Args,
    busy_places: &[&'static str],
    shards_row: bool,
    names: &[&str],
    out: Out,
) {
    let Out {
        rows,
        notes,
        checks,
        op_failures,
    } = out;
    if !busy_places.is_empty() {
        let bp = args.busy_poll_us.to_string();
        let dram_bp = extra.plan.peak_bytes() + (64 << 20);
        extra.progress.say(format!(
            "starting an mmc-local with --busy-poll-us {bp} for the busy-poll rows"
        ));
        match extra.local(c, dram_bp, &["--busy-poll-us", &bp], notes) {
            Ok(rank) => {
                for &pl in busy_places {
                    let cfg = ClientConfig {
                        busy_poll_us: args.busy_poll_us,
                        transport: (pl == TCP).then_some(DataOpType::Tcp),
                        ..config.clone()
                    };
                    match extra.run(pl, &cfg, rank, "busy-poll", &["4k"], checks) {
                        Ok(r) => rows.extend(r.into_iter().map(|mut r| {
                            r.wait = BUSY_POLL;
                            r
                        })),
                        Err(f) => {
                            extra.progress.note(format!("busy-poll {pl}: FAILED: {f}"));
                            op_failures.push(format!("busy-poll {pl}: {f}"));
                        }
                    }
                }
            }
            Err(e) => {
                extra.progress.note(format!("busy-poll rows skipped: {e}"));
                notes.push(format!("busy-poll rows skipped: {e}"));
            }
        }
    }
    if shards_row {
        let variants: [(&'static str, &[&str], &str); 2] = [
            (
                SHARDS,
                &["--data-shards", "2", "--protocol", "tcp"],
                "two mio shard threads",
            ),
            (
                SHARDS_URING,
                &[
                    "--data-shards",
                    "2",
                    "--data-poller",
                    "io_uring",
                    "--protocol",
                    "tcp",
                ],
                "two shard threads waiting with io_uring",
            ),
        ];
        for (label, flags, what) in variants {
            extra.progress.say(format!(
                "starting an mmc-local with {} ({what})",
                flags.join(" ")
            ));
            match extra.local(c, extra.plan.peak_bytes() + (64 << 20), flags, notes) {
                Ok(rank) => {
                    let cfg = ClientConfig {
                        transport: Some(DataOpType::Tcp),
                        ..config.clone()
                    };
                    match extra.run(TCP, &cfg, rank, "shards", &["batch-8m"], checks) {
                        Ok(r) => {
                            rows.extend(r.into_iter().map(|mut r| {
                                r.data_server = label;
                                r
                            }));
                            notes.push(format!(
                                "data servers: the rows marked \"{label}\" ran against an \
                                 mmc-local with {} ({what}); every other mmc-local runs a \
                                 thread per data connection (the default)",
                                flags.join(" ")
                            ));
                        }
                        Err(f) => {
                            extra
                                .progress
                                .note(format!("{label} data server: FAILED: {f}"));
                            op_failures.push(format!("{label} data server: {f}"));
                        }
                    }
                }
                Err(e) => {
                    extra
                        .progress
                        .note(format!("{label} data server row skipped: {e}"));
                    notes.push(format!("{label} data server row skipped: {e}"));
                }
            }
        }
    }
    // RDMA over the simulated NIC: an mmc-local with it, a client that forces RDMA.
    let rdma_names: Vec<&str> = ["4k", "batch-1m", "batch-8m", "deepseek-r1"]
        .into_iter()
        .filter(|n| names.contains(n) && (!args.quick || ["4k", "batch-1m"].contains(n)))
        .collect();
    let (rdma_pl, rdma_provider, rdma_name) = match args.rdma_provider.as_str() {
        "verbs" => (rdma::RDMA_VERBS, RdmaProvider::Verbs, "verbs"),
        "none" => (rdma::RDMA_SIM, RdmaProvider::None, "none"),
        _ => (rdma::RDMA_SIM, RdmaProvider::Sim, "sim"),
    };
    if !rdma_names.is_empty() && rdma_provider != RdmaProvider::None {
        extra.progress.say(format!(
            "starting an mmc-local with RDMA provider {rdma_name} for the {rdma_pl} rows"
        ));
        let flags = ["--protocol", "rdma", "--rdma-provider", rdma_name];
        match extra.local(c, extra.plan.peak_bytes() + (64 << 20), &flags, notes) {
            Ok(rank) => {
                let cfg = ClientConfig {
                    transport: Some(DataOpType::Rdma),
                    rdma_provider,
                    ..config.clone()
                };
                // The same rows with bounce buffers instead of the MR cache.
                let bounce_pl = match rdma_provider {
                    RdmaProvider::Verbs => rdma::RDMA_VERBS_BOUNCE,
                    _ => rdma::RDMA_SIM_BOUNCE,
                };
                let bounce = ClientConfig {
                    rdma_caller_memory: mmc_config::RdmaCallerMemory::Bounce,
                    ..cfg.clone()
                };
                let both = extra
                    .run(rdma_pl, &cfg, rank, "rdma", &rdma_names, checks)
                    .and_then(|mut r| {
                        let b = extra.run(
                            bounce_pl,
                            &bounce,
                            rank,
                            "rdma-bounce",
                            &rdma_names,
                            checks,
                        )?;
                        r.extend(b);
                        Ok(r)
                    });
                match both {
                    Ok(r) => {
                        rows.extend(r);
                        notes.push(
                            "rdma-sim rows: one-sided verbs over the simulated NIC (a memcpy \
                             into the service's memfds per work request, with its key and \
                             bounds checks), so they measure the software path, not a NIC"
                                .into(),
                        );
                    }
                    Err(f) => {
                        extra.progress.note(format!("rdma-sim: FAILED: {f}"));
                        op_failures.push(format!("rdma-sim: {f}"));
                    }
                }
            }
            Err(e) => {
                extra.progress.note(format!("rdma-sim rows skipped: {e}"));
                notes.push(format!("rdma-sim rows skipped: {e}"));
            }
        }
    }
}

/// What the extra measurements (busy-poll, shard data server) share.
pub(crate) struct Extra<'a> {
    pub(crate) meta: &'a str,
    pub(crate) prefix: &'a str,
    pub(crate) plan: &'a Plan,
    pub(crate) progress: &'a Progress,
}

impl Extra<'_> {
    /// Start one more `mmc-local` with `flags`; its rank.
    pub(crate) fn local(
        &self,
        c: &mut Cluster,
        dram: u64,
        flags: &[&str],
        notes: &mut Vec<String>,
    ) -> Result<u32, String> {
        let l = c.add_local_with(dram, flags)?;
        notes.push(format!(
            "mmc-local rank {} at {}, {} MiB DRAM, {}",
            l.rank,
            l.endpoint,
            dram >> 20,
            l.flags
        ));
        Ok(l.rank)
    }

    /// Run `names` with a client of `cfg` on placement `pl`, the data on `rank`; keys under
    /// the run's prefix + `tag`.
    pub(crate) fn run(
        &self,
        pl: &'static str,
        cfg: &ClientConfig,
        rank: u32,
        tag: &str,
        names: &[&str],
        checks: &mut Checks,
    ) -> Result<Vec<Row>, String> {
        let client = Client::connect(cfg)
            .map_err(|e| format!("connect to {}: {e} (code {})", self.meta, e.code()))?;
        let place = Place {
            name: pl,
            client: &client,
            opts: PutOptions {
                policy: PREFERRED_AFFINITY,
                preferred: vec![rank as i32],
                ..PutOptions::default()
            },
            rank,
        };
        let prefix = format!("{}-{tag}", self.prefix);
        let mut ctx = Ctx::new(place, prefix.clone(), self.progress, checks);
        let res = workloads::run_all(&mut ctx, self.plan, names)
            .map_err(|f| f.to_string())
            .and_then(|r| workloads::tcp_forced(pl, &client).map_or(Ok(r), Err));
        let left = ctx.cleanup();
        if left > 0 {
            self.progress.note(format!(
                "{left} keys under {prefix}/{pl} could not be removed"
            ));
        }
        res
    }
}
