//! `mmc-local`: a MemCache local service that contributes its memory to the cluster.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use mmc_controlplane::config::{parse_size, LogLevel};
use mmc_controlplane::logging;
use mmc_dataplane::config::{DataOpType, LocalConfig};
use mmc_dataplane::LocalService;

#[derive(Parser)]
#[command(
    version,
    about = "MemCache local service: contributes DRAM (and HBM) pools to the cluster"
)]
struct Args {
    /// Config file (TOML, or ock.mmc.* key=value); default $MMC_LOCAL_CONFIG_PATH.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The meta service, e.g. tcp://127.0.0.1:5000.
    #[arg(long)]
    meta: Option<String>,
    /// Where the data endpoint listens, e.g. tcp://127.0.0.1:0 (port 0 = any free port).
    #[arg(long)]
    listen: Option<String>,
    /// The address other hosts use to reach the data endpoint (default: the listen address).
    #[arg(long)]
    advertise: Option<String>,
    /// DRAM pool size, e.g. 1GB, 256MB.
    #[arg(long)]
    dram: Option<String>,
    /// HBM pool size (a host-backed stand-in until device backends land).
    #[arg(long)]
    hbm: Option<String>,
    /// Fix this service's rank instead of having the meta service assign one.
    #[arg(long)]
    rank: Option<u32>,
    /// An id shown in logs and status.
    #[arg(long)]
    create_id: Option<i32>,
    /// tcp, shm or rdma (host_tcp, host_shm, host_rdma accepted).
    #[arg(long)]
    protocol: Option<String>,
    #[arg(long)]
    log_level: Option<String>,
    /// Busy-poll each data connection this many microseconds before blocking (0 = block).
    #[arg(long)]
    busy_poll_us: Option<u64>,
    /// Serve data connections with this many shard threads (0 = a thread per connection).
    #[arg(long)]
    data_shards: Option<u32>,
    /// What shard loops wait with: mio or io_uring.
    #[arg(long)]
    data_poller: Option<String>,
    /// Skip pre-faulting the pools (faster start, slower first writes).
    #[arg(long)]
    no_prefault: bool,
    /// Write the data endpoint address (ip:port) and rank to this file once registered.
    #[arg(long)]
    addr_file: Option<PathBuf>,
}

fn main() {
    let a = Args::parse();
    let mut c =
        LocalConfig::load(a.config.as_deref()).unwrap_or_else(|e| fail(&format!("config: {e}")));
    let size = |s: &str| parse_size(s).unwrap_or_else(|e| fail(&e.to_string()));
    if let Some(v) = a.meta {
        c.meta_url = v;
    }
    if let Some(v) = a.listen {
        c.data_url = v;
    }
    if let Some(v) = a.advertise {
        c.advertise_url = v;
    }
    if let Some(v) = a.dram {
        c.dram_bytes = size(&v);
    }
    if let Some(v) = a.hbm {
        c.hbm_bytes = size(&v);
    }
    if let Some(v) = a.rank {
        c.rank_id = Some(v);
    }
    if let Some(v) = a.create_id {
        c.create_id = v;
    }
    if let Some(v) = a.protocol {
        c.protocol = DataOpType::parse(&v).unwrap_or_else(|e| fail(&e.to_string()));
    }
    if let Some(v) = a.log_level {
        c.log_level = LogLevel::parse(&v).unwrap_or_else(|e| fail(&e.to_string()));
    }
    if let Some(v) = a.busy_poll_us {
        c.busy_poll_us = v;
    }
    if let Some(v) = a.data_shards {
        c.data_shards = v;
    }
    if let Some(v) = a.data_poller {
        c.data_poller =
            mmc_dataplane::config::DataPoller::parse(&v).unwrap_or_else(|e| fail(&e.to_string()));
    }
    if a.no_prefault {
        c.prefault = false;
    }
    logging::init(c.log_level);
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .unwrap_or_else(|e| fail(&format!("signal: {e}")));
    }
    let svc = LocalService::start(&c)
        .unwrap_or_else(|e| fail(&format!("{e} (code {})", e.code().as_i32())));
    if let Some(path) = a.addr_file {
        let text = format!("{} {}\n", svc.data_addr(), svc.rank());
        mmc_controlplane::fsutil::write_atomically(&path, &text)
            .unwrap_or_else(|e| fail(&format!("write {}: {e}", path.display())));
    }
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(50));
    }
    tracing::info!("signal received: stopping");
    svc.stop();
}

fn fail(msg: &str) -> ! {
    eprintln!("mmc-local: {msg}");
    std::process::exit(2);
}
