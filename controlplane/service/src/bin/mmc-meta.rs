//! `mmc-meta`: the MemCache meta service.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};
use mmc_config::flags::{apply_flags, with_flags};
use mmc_config::{fsutil, logging, MetaConfig, META_KEYS, TLS_KEYS};
use mmc_meta_service::{ha, MetaServer};

#[derive(Parser)]
#[command(
    version,
    about = "MemCache meta service: key directory, placement, leases, eviction"
)]
// The flags that are not config keys; the others come from [`META_KEYS`] (`--listen`,
// `--log-level`, `--evict-high`, ...) and [`TLS_KEYS`] (`--tls`, `--tls-cert`, ...) and override
// the file.
struct Args {
    /// Config file (TOML, or Ascend MemCache's ock.mmc.* key=value); default $MMC_META_CONFIG_PATH.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Write the bound address (ip:port) to this file once listening (for scripts and tests). With
    /// `etcd_url`: written when elected leader, removed when stepping down.
    #[arg(long)]
    addr_file: Option<PathBuf>,
}

fn main() {
    let matches = with_flags(with_flags(Args::command(), META_KEYS), TLS_KEYS).get_matches();
    let args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let mut config = match MetaConfig::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => fail(&format!("config: {e}")),
    };
    apply_flags(META_KEYS, &matches, &mut config)
        .and_then(|()| apply_flags(TLS_KEYS, &matches, &mut config.tls))
        .and_then(|()| config.validate())
        .unwrap_or_else(|e| fail(&e.to_string()));
    logging::init_with("mmc-meta", &config.log_settings())
        .unwrap_or_else(|e| fail(&format!("log file in {:?}: {e}", config.log_path)));
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .unwrap_or_else(|e| fail(&format!("signal: {e}")));
    }
    if !config.etcd_url.is_empty() {
        // High availability: serve only while elected (see mmc_meta_service::ha).
        let addr_file = args.addr_file;
        ha::run(&config, &stop, |role| match (role, &addr_file) {
            (ha::Role::Leader(addr), Some(path)) => {
                fsutil::write_atomically(path, &addr.to_string())
                    .unwrap_or_else(|e| fail(&format!("write {}: {e}", path.display())));
            }
            (ha::Role::Standby, Some(path)) => {
                let _ = std::fs::remove_file(path);
            }
            (_, None) => {}
        })
        .unwrap_or_else(|e| fail(&e.to_string()));
        tracing::info!("signal received: stopped");
        return;
    }
    let server = MetaServer::start(&config).unwrap_or_else(|e| fail(&e.to_string()));
    if let Some(path) = args.addr_file {
        fsutil::write_atomically(&path, &server.local_addr().to_string())
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
