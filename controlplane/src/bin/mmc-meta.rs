//! `mmc-meta`: the MemCache meta service.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use mmc_controlplane::config::{LogLevel, MetaConfig};
use mmc_controlplane::{logging, server::MetaServer};

#[derive(Parser)]
#[command(
    version,
    about = "MemCache meta service: key directory, placement, leases, eviction"
)]
struct Args {
    /// Config file (TOML, or Ascend MemCache's ock.mmc.* key=value); default $MMC_META_CONFIG_PATH.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Where to listen, e.g. tcp://127.0.0.1:5000 (port 0 = any free port).
    #[arg(long)]
    listen: Option<String>,
    /// debug, info, warn or error.
    #[arg(long)]
    log_level: Option<String>,
    #[arg(long)]
    evict_high: Option<u16>,
    #[arg(long)]
    evict_low: Option<u16>,
    /// HTTP address for /metrics and /health, e.g. 127.0.0.1:9100.
    #[arg(long)]
    metrics: Option<String>,
    /// A local service silent this long is declared dead (milliseconds).
    #[arg(long)]
    member_timeout_ms: Option<u64>,
    /// Write the bound address (ip:port) to this file once listening (for scripts and tests).
    #[arg(long)]
    addr_file: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    let mut config = match MetaConfig::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => fail(&format!("config: {e}")),
    };
    if let Some(l) = args.listen {
        config.listen_url = l;
    }
    if let Some(l) = args.log_level {
        config.log_level = LogLevel::parse(&l).unwrap_or_else(|e| fail(&e.to_string()));
    }
    if let Some(h) = args.evict_high {
        config.evict_threshold_high = h;
    }
    if let Some(l) = args.evict_low {
        config.evict_threshold_low = l;
    }
    if let Some(t) = args.member_timeout_ms {
        config.member_timeout_ms = t;
    }
    if let Some(m) = args.metrics {
        config.metrics_url = m;
    }
    logging::init(config.log_level);
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .unwrap_or_else(|e| fail(&format!("signal: {e}")));
    }
    let server = MetaServer::start(&config).unwrap_or_else(|e| fail(&e.to_string()));
    if let Some(path) = args.addr_file {
        mmc_controlplane::fsutil::write_atomically(&path, &server.local_addr().to_string())
            .unwrap_or_else(|e| fail(&format!("write {}: {e}", path.display())));
    }
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(50));
    }
    tracing::info!("signal received: stopping");
    server.stop();
}

fn fail(msg: &str) -> ! {
    eprintln!("mmc-meta: {msg}");
    std::process::exit(2);
}
