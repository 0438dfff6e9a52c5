//! Logging across the C boundary: every `tracing` event of the process (client, services, any
//! thread) goes to the callback set by `mmc_set_extern_logger`, or to standard output when none is
//! set, filtered by the level of `mmc_set_log_level` (0 debug, 1 info, 2 warn, 3 error).

use std::ffi::{c_char, c_int, CString};
use std::io::Write;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::Once;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

use crate::types::mmc_log_func;

/// The callback as an address (0 = none), so that any thread reads it without a lock.
static LOG_FUNC: AtomicUsize = AtomicUsize::new(0);
/// Events below this level are dropped. Info by default.
static LOG_LEVEL: AtomicI32 = AtomicI32::new(1);
static INSTALL: Once = Once::new();

pub fn level_of(level: &Level) -> c_int {
    match *level {
        Level::TRACE | Level::DEBUG => 0,
        Level::INFO => 1,
        Level::WARN => 2,
        Level::ERROR => 3,
    }
}

/// Install the process-wide subscriber once (a no-op if the host installed its own first).
pub fn install() {
    INSTALL.call_once(|| {
        let filter = tracing_subscriber::filter::filter_fn(|m: &Metadata<'_>| {
            level_of(m.level()) >= LOG_LEVEL.load(Ordering::Relaxed)
        });
        use tracing_subscriber::layer::SubscriberExt;
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(CallbackWriter)
            .with_ansi(false)
            .with_target(false)
            .without_time()
            .with_level(false)
            .with_filter(filter);
        let subscriber = tracing_subscriber::registry().with(layer);
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}

pub fn set_logger(func: mmc_log_func) {
    LOG_FUNC.store(func.map(|f| f as usize).unwrap_or(0), Ordering::Release);
    install();
}

/// Set the level; returns false for a level outside 0..=3.
pub fn set_level(level: i32) -> bool {
    if !(0..=3).contains(&level) {
        return false;
    }
    LOG_LEVEL.store(level, Ordering::Release);
    install();
    // Callsites cache whether they are enabled: make them ask the filter again.
    tracing::callsite::rebuild_interest_cache();
    true
}

use tracing_subscriber::Layer as _;

struct CallbackWriter;

/// Collects one formatted event, then hands it to the callback (or stdout) when dropped.
pub struct EventWriter {
    level: c_int,
    buf: Vec<u8>,
}

impl<'a> MakeWriter<'a> for CallbackWriter {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> EventWriter {
        EventWriter {
            level: 1,
            buf: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> EventWriter {
        EventWriter {
            level: level_of(meta.level()),
            buf: Vec::with_capacity(128),
        }
    }
}

impl Write for EventWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        while self.buf.last() == Some(&b'\n') {
            self.buf.pop();
        }
        if self.buf.is_empty() {
            return;
        }
        let func = LOG_FUNC.load(Ordering::Acquire);
        if func == 0 {
            let name = ["DEBUG", "INFO", "WARN", "ERROR"][self.level.clamp(0, 3) as usize];
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(format!("[mmc {name}] ").as_bytes());
            let _ = out.write_all(&self.buf);
            let _ = out.write_all(b"\n");
            return;
        }
        self.buf.retain(|b| *b != 0);
        let msg = CString::new(std::mem::take(&mut self.buf)).unwrap_or_default();
        // SAFETY: `func` was stored from a non-null `extern "C" fn(c_int, *const c_char)` by
        // `set_logger`; usize <-> fn pointer round trips are lossless on supported targets. `msg`
        // is a valid NUL-terminated string that outlives the call.
        let f: unsafe extern "C" fn(c_int, *const c_char) = unsafe { std::mem::transmute(func) };
        // SAFETY: calling the user's logger with the documented arguments; it must be callable
        // from any thread, as the API document requires of it.
        unsafe { f(self.level, msg.as_ptr()) };
    }
}
