//! Process-wide `tracing` set-up for the binaries (libraries only emit events).

use crate::LogLevel;

/// Install a formatting subscriber at `level`, unless `RUST_LOG` says otherwise. Idempotent.
pub fn init(level: LogLevel) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level.as_filter_str()));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}
