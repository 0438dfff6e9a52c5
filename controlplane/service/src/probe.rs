//! The meta service's own probe of a suspect local service (README, "Death hints").
//!
//! A hint (the member's heartbeat connection closed, or a client reported it unreachable) pauses a
//! member at once; the probe then tells a dead process from a live one by connecting to the
//! member's data endpoint, and nothing else:
//!
//! - every connect refused (an RST: the host answered, nothing listens on that port) means the
//!   process that served it is gone: the driver calls `MetaCore::member_dead`, which drops the
//!   member (and its objects with no other replica) if it is still paused at that incarnation;
//! - a connect that succeeds and stays open for an interval means a process listens there (a
//!   frozen one too: its kernel completes the handshake and queues the connection), and a timeout
//!   or any other error (a partition, a host that is down) tells nothing: the member stays paused
//!   and its lease and grace decide as before.
//!
//! A killed process's kernel closes its files one by one: the heartbeat connection's close (the
//! hint) can be seen while its listener still completes handshakes. Such a connection is reset
//! when the listener closes, which is why an accepted connect must stay open for an interval to
//! count as a live process; one reset within it counts as refused.
//!
//! Probes run on their own threads, never under the core's lock; at most one per member (rank and
//! incarnation) is in flight, and at most [`PROBES_MAX`] in all (a hint past that is left to the
//! lease and grace).

use std::collections::HashSet;
use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{debug, warn};

/// Most probes in flight at once, over all members.
pub const PROBES_MAX: usize = 32;

/// How a probe connects: `attempts` connects, `interval` apart, each with `interval` as its
/// timeout (from the `probe_attempts` and `probe_interval_ms` settings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeSettings {
    pub attempts: u32,
    pub interval: Duration,
}

/// What a probe learned about an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every connect was refused: nothing listens there, on a host that answered.
    Refused,
    /// A connect succeeded: a process listens there (perhaps frozen).
    Accepted,
    /// A connect timed out or failed otherwise (partition, unreachable or frozen host): nothing
    /// is confirmed.
    Unanswered,
    /// Given up because the meta service is stopping.
    Cancelled,
}

/// Connect to `addr` up to `settings.attempts` times; stops at the first attempt that is not
/// refused (the answer is then known) and when `stop` is set. Blocks for at most about
/// `3 * attempts * interval`.
pub fn probe(addr: SocketAddr, settings: ProbeSettings, stop: &AtomicBool) -> Outcome {
    for attempt in 0..settings.attempts {
        if attempt > 0 {
            std::thread::sleep(settings.interval);
        }
        if stop.load(Ordering::Acquire) {
            return Outcome::Cancelled;
        }
        let outcome = match TcpStream::connect_timeout(&addr, settings.interval) {
            Ok(stream) => held_open(stream, settings.interval),
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => Outcome::Refused,
            Err(_) => Outcome::Unanswered,
        };
        if outcome != Outcome::Refused {
            return outcome;
        }
    }
    Outcome::Refused
}

/// A connect succeeded: wait up to `interval` for the connection to be reset (the listener
/// closed with it still queued: a process that was exiting) rather than held open (a process
/// listens, running or frozen). Sends nothing; the connection is closed on return (a frozen
/// service accepts it on waking and reads an end of stream).
fn held_open(mut stream: TcpStream, interval: Duration) -> Outcome {
    if stream.set_read_timeout(Some(interval)).is_err() {
        return Outcome::Unanswered;
    }
    match stream.read(&mut [0u8; 1]) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            Outcome::Accepted
        }
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {
            debug!("probe: accepted, then reset: the listener closed (a process exiting)");
            Outcome::Refused
        }
        // An end of stream or bytes: a running process answered.
        Ok(_) => Outcome::Accepted,
        Err(_) => Outcome::Unanswered,
    }
}

/// Probe outcomes counted since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeCounts {
    pub refused: u64,
    pub accepted: u64,
    pub unanswered: u64,
    /// Hints left to the lease because [`PROBES_MAX`] probes were in flight.
    pub skipped: u64,
    /// Probes whose refusal dropped the member.
    pub dropped: u64,
}

/// The probes in flight and what they found (for `/metrics`).
pub struct Prober {
    /// None: `probe_dead = false`, no probe is ever started.
    settings: Option<ProbeSettings>,
    /// (rank, incarnation) of each probe in flight.
    in_flight: Mutex<HashSet<(u32, u64)>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    refused: AtomicU64,
    accepted: AtomicU64,
    unanswered: AtomicU64,
    skipped: AtomicU64,
    dropped: AtomicU64,
}

impl Prober {
    pub fn new(settings: Option<ProbeSettings>) -> Prober {
        Prober {
            settings,
            in_flight: Mutex::new(HashSet::new()),
            threads: Mutex::new(Vec::new()),
            refused: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            unanswered: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Take the probe slot of `rank` at `incarnation`, and the settings to probe with. None when
    /// probing is off, a probe of that member is already in flight (its result serves this hint
    /// too), or [`PROBES_MAX`] are.
    pub fn claim(&self, rank: u32, incarnation: u64) -> Option<ProbeSettings> {
        let settings = self.settings?;
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if in_flight.contains(&(rank, incarnation)) {
            return None;
        }
        if in_flight.len() >= PROBES_MAX {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            warn!(
                rank,
                incarnation,
                limit = PROBES_MAX,
                "too many probes in flight: this suspect is left to its lease and grace"
            );
            return None;
        }
        in_flight.insert((rank, incarnation));
        debug_assert!(in_flight.len() <= PROBES_MAX);
        Some(settings)
    }

    /// The probe of `rank` at `incarnation` is over (its result applied).
    pub fn release(&self, rank: u32, incarnation: u64) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let was = in_flight.remove(&(rank, incarnation));
        debug_assert!(was, "release of a probe not in flight");
    }

    /// Count one probe's outcome, and whether its result dropped the member.
    pub fn record(&self, outcome: Outcome, dropped: bool) {
        let counter = match outcome {
            Outcome::Refused => &self.refused,
            Outcome::Accepted => &self.accepted,
            Outcome::Unanswered => &self.unanswered,
            Outcome::Cancelled => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if dropped {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Keep a probe's thread, to join it when the service stops.
    pub fn keep(&self, thread: JoinHandle<()>) {
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        threads.retain(|t| !t.is_finished());
        threads.push(thread);
    }

    /// Join every probe's thread (after the stop flag was set: they end within about one
    /// interval).
    pub fn join_all(&self) {
        let threads: Vec<_> = self
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        for t in threads {
            let _ = t.join();
        }
    }

    /// What the probes found so far (for `/metrics`).
    pub fn counts(&self) -> ProbeCounts {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ProbeCounts {
            refused: n(&self.refused),
            accepted: n(&self.accepted),
            unanswered: n(&self.unanswered),
            skipped: n(&self.skipped),
            dropped: n(&self.dropped),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    const QUICK: ProbeSettings = ProbeSettings {
        attempts: 3,
        interval: Duration::from_millis(20),
    };

    #[test]
    fn a_closed_port_is_refused_and_a_listening_one_accepted() {
        let stop = AtomicBool::new(false);
        // Never accepted, as by a frozen process: its kernel holds the connection open.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(probe(addr, QUICK, &stop), Outcome::Accepted);
        drop(listener);
        assert_eq!(probe(addr, QUICK, &stop), Outcome::Refused);
        stop.store(true, Ordering::Release);
        assert_eq!(probe(addr, QUICK, &stop), Outcome::Cancelled);
    }

    #[test]
    fn a_listener_that_closes_during_the_probe_is_refused() {
        // An exiting process: its listener completes the first handshake, then closes, which
        // resets the queued connection; the next connects are refused.
        let stop = AtomicBool::new(false);
        let slow = ProbeSettings {
            attempts: 3,
            interval: Duration::from_millis(500),
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(listener);
        });
        assert_eq!(probe(addr, slow, &stop), Outcome::Refused);
        closer.join().unwrap();
    }

    #[test]
    fn one_probe_per_member_and_none_when_off() {
        let p = Prober::new(Some(QUICK));
        assert_eq!(p.claim(1, 10), Some(QUICK));
        assert_eq!(p.claim(1, 10), None, "already in flight");
        assert_eq!(p.claim(2, 20), Some(QUICK));
        p.release(1, 10);
        assert_eq!(p.claim(1, 10), Some(QUICK), "free again once over");
        // A new incarnation of rank 1 (it restarted) is another member.
        assert_eq!(p.claim(1, 11), Some(QUICK));
        for rank in 3..PROBES_MAX as u32 {
            assert_eq!(p.claim(rank, 1), Some(QUICK));
        }
        assert_eq!(p.claim(1_000, 1), None, "bounded in all");
        assert_eq!(p.counts().skipped, 1);
        p.record(Outcome::Refused, true);
        p.record(Outcome::Accepted, false);
        p.record(Outcome::Cancelled, false);
        let c = p.counts();
        assert_eq!(
            (c.refused, c.accepted, c.unanswered, c.dropped),
            (1, 1, 0, 1)
        );
        assert_eq!(Prober::new(None).claim(1, 10), None);
    }
}
