//! Process-wide `tracing` set-up for the binaries (libraries only emit events): an env filter
//! (`RUST_LOG` over the configured level), text or JSON lines, on standard error or in a
//! size-rotated file under `log_path`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::table::Kind;
use crate::{ConfigError, LogLevel};

/// How log lines look.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// `2026-11-29T23:21:23.677927Z  INFO message key=value`.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields`, ...), for log collectors.
    Json,
}

impl LogFormat {
    pub fn parse(s: &str) -> Result<LogFormat, ConfigError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" | "plain" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(ConfigError::value(s, "expected a log format: text or json")),
        }
    }
}

/// A [`LogFormat`] key.
pub struct Format;

impl Kind for Format {
    type Value = LogFormat;
    const NAME: &'static str = "`text` or `json`";
    fn from_text(s: &str) -> Result<LogFormat, ConfigError> {
        LogFormat::parse(s)
    }
}

/// The size at which a log file rotates: a plain number is MiB (as Ascend MemCache's
/// `ock.mmc.log_rotation_file_size`), or a size with a unit (`512KB`, `1GB`); 4 KiB to 4 GiB.
pub struct FileSize;

const FILE_SIZE_MIN: u64 = 4 << 10;
const FILE_SIZE_MAX: u64 = 4 << 30;

impl Kind for FileSize {
    type Value = u64;
    const NAME: &'static str = "MiB, or a size such as `512KB`";
    fn from_text(s: &str) -> Result<u64, ConfigError> {
        let t = s.trim();
        if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
            let mib: u64 = t.parse().map_err(|_| ConfigError::value(s, "too large"))?;
            return mib
                .checked_mul(1 << 20)
                .ok_or_else(|| ConfigError::value(s, "too large"));
        }
        crate::parse_size(t)
    }
    fn from_toml(v: &toml::Value) -> Result<u64, ConfigError> {
        match v {
            toml::Value::Integer(i) => Self::from_text(&i.to_string()),
            toml::Value::String(s) => Self::from_text(s),
            other => Err(ConfigError::value(
                &other.to_string(),
                "expected MiB, or a size such as \"512KB\"",
            )),
        }
    }
    fn check(key: &str, v: &u64) -> Result<(), ConfigError> {
        if (FILE_SIZE_MIN..=FILE_SIZE_MAX).contains(v) {
            return Ok(());
        }
        Err(ConfigError::Invalid {
            key: key.to_string(),
            reason: format!("{v} bytes: a log file rotates at 4 KiB to 4 GiB"),
        })
    }
}

/// Where and how a binary logs (from its config's log keys).
#[derive(Clone, Debug)]
pub struct LogSettings {
    pub level: LogLevel,
    pub format: LogFormat,
    /// A folder for `<program>.log` and its rotated files; empty = standard error.
    pub path: String,
    /// Rotate when the file would pass this many bytes.
    pub file_bytes: u64,
    /// Files kept, the current one included (the oldest is deleted).
    pub file_count: u32,
}

/// Install a text subscriber on standard error at `level`, unless `RUST_LOG` says otherwise.
/// Idempotent.
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

/// Install a subscriber per `s` for the binary `program` (names the log file). With a path, the
/// folder is created if needed; an error says why the file cannot be opened. Idempotent (a
/// second call changes nothing).
pub fn init_with(program: &str, s: &LogSettings) -> io::Result<()> {
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(s.level.as_filter_str()))
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_target(false);
    if s.path.is_empty() {
        let ansi = s.format == LogFormat::Text && io::IsTerminal::is_terminal(&io::stderr());
        let b = builder.with_ansi(ansi).with_writer(io::stderr);
        let _ = match s.format {
            LogFormat::Text => b.try_init(),
            LogFormat::Json => b.json().try_init(),
        };
        return Ok(());
    }
    std::fs::create_dir_all(&s.path)?;
    let file = RotatingFile::open(
        Path::new(&s.path).join(format!("{program}.log")),
        s.file_bytes,
        s.file_count,
    )?;
    let b = builder.with_ansi(false).with_writer(Mutex::new(file));
    let _ = match s.format {
        LogFormat::Text => b.try_init(),
        LogFormat::Json => b.json().try_init(),
    };
    Ok(())
}

/// A file that rotates by size: when a write would take it past `max_bytes`, `name.log` becomes
/// `name.log.1` (`.1` becomes `.2`, ...), files past `count` in all are deleted, and a fresh
/// `name.log` is opened. A single write larger than `max_bytes` still lands whole in one file.
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    count: u32,
    file: File,
    written: u64,
}

impl RotatingFile {
    /// Open (append to) `path`; `max_bytes` and `count` are floored at 1.
    pub fn open(path: PathBuf, max_bytes: u64, count: u32) -> io::Result<RotatingFile> {
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let written = file.metadata()?.len();
        Ok(RotatingFile {
            path,
            max_bytes: max_bytes.max(1),
            count: count.max(1),
            file,
            written,
        })
    }

    /// `path` with `.n` appended (n >= 1).
    fn numbered(&self, n: u32) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        // Keep count - 1 rotated files: drop the oldest, shift the others up by one.
        let kept = self.count - 1;
        if kept == 0 {
            let _ = std::fs::remove_file(&self.path);
        } else {
            let _ = std::fs::remove_file(self.numbered(kept));
            for n in (1..kept).rev() {
                let from = self.numbered(n);
                if from.exists() {
                    std::fs::rename(&from, self.numbered(n + 1))?;
                }
            }
            std::fs::rename(&self.path, self.numbered(1))?;
        }
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written > 0 && self.written.saturating_add(buf.len() as u64) > self.max_bytes {
            self.rotate()?;
        }
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_rotate_by_size_and_the_oldest_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let mut f = RotatingFile::open(path.clone(), 100, 3).unwrap();
        // 25 lines of 10 bytes: 10 per file; 3 files kept (x.log, x.log.1, x.log.2).
        for i in 0..25 {
            f.write_all(format!("line {i:04}\n").as_bytes()).unwrap();
        }
        f.flush().unwrap();
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        let current = read(&path);
        let one = read(&dir.path().join("x.log.1"));
        let two = read(&dir.path().join("x.log.2"));
        assert!(!dir.path().join("x.log.3").exists(), "at most 3 files");
        assert_eq!(current.lines().count(), 5);
        assert!(current.starts_with("line 0020") && current.ends_with("line 0024\n"));
        assert!(one.starts_with("line 0010") && one.ends_with("line 0019\n"));
        assert!(two.starts_with("line 0000") && two.ends_with("line 0009\n"));
        for p in ["x.log", "x.log.1", "x.log.2"] {
            assert!(std::fs::metadata(dir.path().join(p)).unwrap().len() <= 100);
        }
        // Five more files' worth: the oldest lines are gone.
        for i in 25..75 {
            f.write_all(format!("line {i:04}\n").as_bytes()).unwrap();
        }
        assert!(read(&dir.path().join("x.log.2")).starts_with("line 0050"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
    }

    #[test]
    fn an_existing_file_counts_and_one_file_means_truncate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("y.log");
        std::fs::write(&path, "0123456789").unwrap();
        let mut f = RotatingFile::open(path.clone(), 15, 1).unwrap();
        f.write_all(b"abcdefghij").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "abcdefghij");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn rotation_sizes_are_mib_or_sizes() {
        assert_eq!(FileSize::from_text("20").unwrap(), 20 << 20);
        assert_eq!(FileSize::from_text("64KB").unwrap(), 64 << 10);
        assert!(FileSize::check("k", &(1 << 10)).is_err());
        assert!(FileSize::check("k", &(1 << 20)).is_ok());
        assert!(FileSize::from_text("99999999999999999").is_err());
    }

    #[test]
    fn log_formats_parse() {
        assert_eq!(LogFormat::parse("JSON").unwrap(), LogFormat::Json);
        assert_eq!(LogFormat::parse(" text").unwrap(), LogFormat::Text);
        assert!(LogFormat::parse("xml").is_err());
    }
}
