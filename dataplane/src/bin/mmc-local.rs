//! `mmc-local`: a MemCache local service that contributes its memory to the cluster.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};
use mmc_config::flags::{apply_flags, with_flags};
use mmc_config::logging;
use mmc_config::{LocalConfig, LOCAL_KEYS, TLS_KEYS};
use mmc_dataplane::LocalService;

#[derive(Parser)]
#[command(
    version,
    about = "MemCache local service: contributes DRAM (and HBM) pools to the cluster"
)]
// The flags that are not config keys; the others come from [`LOCAL_KEYS`] (`--meta`,
// `--listen`, `--dram`, `--no-prefault`, ...) and override the file.
struct Args {
    /// Config file (TOML, or ock.mmc.* key=value); default $MMC_LOCAL_CONFIG_PATH.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Write the data endpoint address (ip:port) and rank to this file once registered.
    #[arg(long)]
    addr_file: Option<PathBuf>,
}

fn main() {
    let matches = with_flags(with_flags(Args::command(), LOCAL_KEYS), TLS_KEYS).get_matches();
    let a = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let mut c =
        LocalConfig::load(a.config.as_deref()).unwrap_or_else(|e| fail(&format!("config: {e}")));
    apply_flags(LOCAL_KEYS, &matches, &mut c)
        .and_then(|()| apply_flags(TLS_KEYS, &matches, &mut c.tls))
        .and_then(|()| c.validate())
        .unwrap_or_else(|e| fail(&e.to_string()));
    logging::init_with("mmc-local", &c.log_settings())
        .unwrap_or_else(|e| fail(&format!("log file in {:?}: {e}", c.log_path)));
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .unwrap_or_else(|e| fail(&format!("signal: {e}")));
    }
    let svc = LocalService::start(&c)
        .unwrap_or_else(|e| fail(&format!("{e} (code {})", e.code().as_i32())));
    if let Some(path) = a.addr_file {
        let text = format!("{} {}\n", svc.data_addr(), svc.rank());
        mmc_config::fsutil::write_atomically(&path, &text)
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
