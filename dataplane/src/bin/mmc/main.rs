//! `mmc`: the MemCache command-line client and admin tool.

/// `println!` that ends the program quietly when standard output is closed (`mmc info K | head`)
/// instead of panicking.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout(), $($t)*).is_err() {
            std::process::exit(0);
        }
    }};
}

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use mmc_config::flags::{apply_flags, with_flags};
use mmc_config::logging;
use mmc_config::LogLevel;
use mmc_controlplane::msg::media_name;
use mmc_controlplane::{Code, Error};
use mmc_dataplane::{Client, ClientConfig, PutOptions};

mod status;

/// Exit codes: 0 ok; 1 a key is missing; 2 bad usage; 3 the key already exists; 4 any other failure
/// (meta or local service unreachable, timeout, no space, ...).
#[derive(Parser)]
#[command(
    version,
    about = "MemCache command-line client",
    after_help = "Exit codes: 0 ok, 1 key missing, 2 usage, 3 key exists, 4 other failure."
)]
struct Args {
    /// The meta service (default $MMC_META_URL, else the config file's, else tcp://127.0.0.1:5000).
    #[arg(long, global = true)]
    meta: Option<String>,
    /// Client config file (TOML or ock.mmc.* key=value, as for clients: `meta_url`, `[client]`,
    /// `[tls]`); the flags override it. The `--tls*` flags (before the command) set TLS alone.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Per-call timeout in seconds.
    #[arg(long, global = true, default_value_t = 30)]
    timeout: u64,
    /// Log level for diagnostics on standard error.
    #[arg(long, global = true, default_value = "warn")]
    log_level: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Store FILE (or standard input with "-") under KEY.
    Put {
        key: String,
        file: PathBuf,
        /// Copies on distinct local services.
        #[arg(long, default_value_t = 1)]
        replicas: u16,
        /// dram, hbm or any.
        #[arg(long, default_value = "any")]
        media: String,
    },
    /// Write KEY's bytes to FILE, or standard output.
    Get { key: String, file: Option<PathBuf> },
    /// Remove keys.
    Rm {
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Say for each key whether it exists; exit 1 if any is missing.
    Exists {
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Size and replicas of KEY.
    Info { key: String },
    /// Local services (health), capacity bars per media, object counts.
    Status {
        /// Print JSON (one object per refresh) for scripts.
        #[arg(long)]
        json: bool,
        /// Refresh every SECS seconds (default 2) until interrupted.
        #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2")]
        watch: Option<u64>,
    },
    /// Live rates from two samples: keys per operation (with --metrics), objects, evictions and
    /// used bytes per second.
    Top {
        /// The meta service's metrics address (its `metrics_url`, host:port), for the rates of
        /// operations; default $MMC_METRICS_URL.
        #[arg(long)]
        metrics: Option<String>,
        /// Seconds between samples.
        #[arg(long, default_value_t = 2)]
        interval: u64,
        /// Stop after this many lines (default: until interrupted).
        #[arg(long)]
        count: Option<u64>,
    },
}

fn main() -> ExitCode {
    let matches = with_flags(Args::command(), mmc_config::TLS_KEYS).get_matches();
    let a = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    logging::init(LogLevel::parse(&a.log_level).unwrap_or(LogLevel::Warn));
    let mut config = match &a.config {
        Some(path) => match mmc_config::load_client_and_local(Some(path)) {
            Ok((client, _)) => client,
            Err(e) => {
                eprintln!("mmc: config: {e}");
                return ExitCode::from(2);
            }
        },
        None => ClientConfig::default(),
    };
    if let Err(e) = apply_flags(mmc_config::TLS_KEYS, &matches, &mut config.tls)
        .and_then(|()| config.tls.validate())
    {
        eprintln!("mmc: {e}");
        return ExitCode::from(2);
    }
    let meta = a
        .meta
        .or_else(|| std::env::var("MMC_META_URL").ok())
        .unwrap_or_else(|| config.meta_url.clone());
    config.meta_url = meta.clone();
    config.timeout_ms = a.timeout.max(1) * 1000;
    let client = match Client::connect(&config) {
        Ok(c) => c,
        Err(e) => return fail(&format!("cannot reach the meta service at {meta}"), &e),
    };
    match run(&client, a.cmd) {
        Ok(code) => code,
        Err((what, e)) => fail(&what, &e),
    }
}

type CmdResult = Result<ExitCode, (String, Error)>;

fn run(client: &Client, cmd: Cmd) -> CmdResult {
    match cmd {
        Cmd::Put {
            key,
            file,
            replicas,
            media,
        } => {
            let data = read_input(&file).map_err(|e| (format!("read {}", file.display()), e))?;
            let media = match media.to_ascii_lowercase().as_str() {
                "dram" => mmc_controlplane::msg::MEDIA_DRAM,
                "hbm" => mmc_controlplane::msg::MEDIA_HBM,
                "any" | "none" => mmc_controlplane::msg::MEDIA_NONE,
                other => {
                    return Err((
                        "--media".into(),
                        Error::InvalidParam(format!("unknown media {other:?}")),
                    ))
                }
            };
            let opts = PutOptions {
                replicas,
                media,
                ..PutOptions::default()
            };
            client
                .put(&key, &data, &opts)
                .map_err(|e| (format!("put {key}"), e))?;
            eprintln!("stored {key} ({} bytes)", data.len());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Get { key, file } => {
            let data = client.get(&key).map_err(|e| (format!("get {key}"), e))?;
            let written = match &file {
                Some(path) => std::fs::write(path, &data),
                None => std::io::stdout().lock().write_all(&data),
            };
            written.map_err(|e| ("write output".to_string(), Error::io("write", e)))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Rm { keys } => {
            let refs: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
            let results = client
                .batch_remove(&refs)
                .map_err(|e| ("rm".to_string(), e))?;
            per_key(&keys, results, "removed")
        }
        Cmd::Exists { keys } => {
            let refs: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
            let results = client
                .batch_exist(&refs)
                .map_err(|e| ("exists".to_string(), e))?;
            per_key(&keys, results, "exists")
        }
        Cmd::Info { key } => {
            let info = client.query(&key).map_err(|e| (format!("info {key}"), e))?;
            out!("key       {key}");
            out!("size      {} bytes", info.size);
            out!("replicas  {}", info.replicas.len());
            let status = client.status().ok();
            for r in &info.replicas {
                let endpoint = status
                    .as_ref()
                    .and_then(|s| s.segments.iter().find(|g| g.segment == r.segment))
                    .map(|g| g.data_endpoint.clone())
                    .unwrap_or_default();
                out!(
                    "  rank {} segment {} {} offset {} len {} at {}",
                    r.rank,
                    r.segment,
                    media_name(r.media),
                    r.offset,
                    r.len,
                    endpoint
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status { json, watch } => {
            status::run(client, json, watch).map_err(|e| ("status".to_string(), e))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Top {
            metrics,
            interval,
            count,
        } => {
            let metrics = metrics.or_else(|| std::env::var("MMC_METRICS_URL").ok());
            status::top(client, metrics.as_deref(), interval, count)
                .map_err(|e| ("top".to_string(), e))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn per_key(keys: &[String], results: Vec<Result<(), Error>>, verb: &str) -> CmdResult {
    let mut missing = false;
    for (k, r) in keys.iter().zip(results) {
        match r {
            Ok(()) => out!("{k}: {verb}"),
            Err(e) if e.code() == Code::ObjectNotExists => {
                missing = true;
                out!("{k}: missing");
            }
            Err(e) => return Err((k.clone(), e)),
        }
    }
    Ok(if missing {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn read_input(file: &PathBuf) -> Result<Vec<u8>, Error> {
    if file.as_os_str() == "-" {
        let mut v = Vec::new();
        std::io::stdin()
            .read_to_end(&mut v)
            .map_err(|e| Error::io("read stdin", e))?;
        return Ok(v);
    }
    std::fs::read(file).map_err(|e| Error::io(file.display().to_string(), e))
}

fn fail(what: &str, e: &Error) -> ExitCode {
    eprintln!("mmc: {what}: {e} ({})", e.code());
    ExitCode::from(match e.code() {
        Code::ObjectNotExists => 1,
        Code::InvalidParam => 2,
        Code::DuplicatedObject => 3,
        _ => 4,
    })
}
