//! A paced put/get load for the fault tests: one thread puts new objects at a fixed rate, another
//! reads known objects at a fixed rate and checks every byte; each records every operation (when,
//! how long, which code), so a test can print operations, errors by code, objects lost and wrong
//! bytes for the whole run and for the fault's window.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mmc_dataplane::{Client, PutOptions};

use super::{pattern, Rng};

/// What the load does.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Key prefix of the objects it puts.
    pub prefix: String,
    pub puts_per_s: u64,
    pub gets_per_s: u64,
    pub object_bytes: usize,
    pub replicas: u16,
    /// Bound on the run (it also stops when [`Load::stop`] is called).
    pub max: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Put,
    Get,
}

/// One operation: when it started (since the load's start), how long it took, its code (0 = ok).
#[derive(Clone, Debug)]
pub struct Op {
    pub kind: Kind,
    pub at: Duration,
    pub took: Duration,
    pub key: String,
    pub code: i32,
}

/// Keys known to be committed, shared by the put and get threads.
type Known = Arc<Mutex<Vec<String>>>;

/// A running load.
pub struct Load {
    pub started: Instant,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<(Vec<Op>, usize)>>,
    known: Known,
    object_bytes: usize,
}

/// What a load did.
pub struct Report {
    pub ops: Vec<Op>,
    /// Gets that returned bytes other than the key's (must stay 0).
    pub wrong_bytes: usize,
    /// Every key committed: the preloaded ones and every successful put.
    pub committed: Vec<String>,
    pub object_bytes: usize,
}

/// Put `n` objects named `{prefix}-{i}` (all must succeed); returns their keys.
pub fn preload(
    c: &Client,
    prefix: &str,
    n: usize,
    object_bytes: usize,
    replicas: u16,
) -> Vec<String> {
    let opts = PutOptions {
        replicas,
        ..PutOptions::default()
    };
    (0..n)
        .map(|i| {
            let key = format!("{prefix}-pre-{i:04}");
            c.put(&key, &pattern(&key, object_bytes), &opts)
                .unwrap_or_else(|e| panic!("preload {key}: {e}"));
            key
        })
        .collect()
}

/// After operation `n` (from 0): sleep until the next slot (`period` apart from `started`) and
/// return its number. Slots missed while an operation was blocked are skipped, not made up in a
/// burst.
fn pace(started: Instant, period: Duration, n: u64) -> u64 {
    let due = (started.elapsed().as_nanos() / period.as_nanos().max(1)) as u64 + 1;
    let next = due.max(n + 1);
    let at = period.saturating_mul(next as u32);
    if let Some(wait) = at.checked_sub(started.elapsed()) {
        std::thread::sleep(wait);
    }
    next
}

impl Load {
    /// Start putting and getting through `putter` and `getter` (they may be the same client);
    /// gets read `preloaded` keys and the load's own committed puts.
    pub fn start(
        putter: Arc<Client>,
        getter: Arc<Client>,
        spec: Spec,
        preloaded: Vec<String>,
    ) -> Load {
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let known: Known = Arc::new(Mutex::new(preloaded));
        let mut threads = Vec::new();
        if spec.puts_per_s > 0 {
            let (stop, known, spec) = (stop.clone(), known.clone(), spec.clone());
            threads.push(std::thread::spawn(move || {
                let period = Duration::from_micros(1_000_000 / spec.puts_per_s);
                let opts = PutOptions {
                    replicas: spec.replicas,
                    ..PutOptions::default()
                };
                let mut ops = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Acquire) && started.elapsed() < spec.max {
                    let key = format!("{}-{n:05}", spec.prefix);
                    let at = started.elapsed();
                    let r = putter.put(&key, &pattern(&key, spec.object_bytes), &opts);
                    let code = r.as_ref().map_or_else(|e| e.code().as_i32(), |_| 0);
                    if code == 0 {
                        known.lock().unwrap().push(key.clone());
                    }
                    ops.push(Op {
                        kind: Kind::Put,
                        at,
                        took: started.elapsed() - at,
                        key,
                        code,
                    });
                    n = pace(started, period, n);
                }
                (ops, 0)
            }));
        }
        if spec.gets_per_s > 0 {
            let (stop, known, spec) = (stop.clone(), known.clone(), spec.clone());
            threads.push(std::thread::spawn(move || {
                let mut rng = Rng::from_env(&format!("{} gets", spec.prefix));
                let period = Duration::from_micros(1_000_000 / spec.gets_per_s);
                let mut buf = vec![0u8; spec.object_bytes];
                let mut ops = Vec::new();
                let mut wrong = 0;
                let mut n = 0u64;
                while !stop.load(Ordering::Acquire) && started.elapsed() < spec.max {
                    let key = {
                        let k = known.lock().unwrap();
                        k[rng.below(k.len() as u64) as usize].clone()
                    };
                    let at = started.elapsed();
                    let r = getter.get_into(&key, &mut buf);
                    let code = match r {
                        Ok(size) => {
                            if size as usize != spec.object_bytes
                                || buf != pattern(&key, spec.object_bytes)
                            {
                                wrong += 1;
                            }
                            0
                        }
                        Err(e) => e.code().as_i32(),
                    };
                    ops.push(Op {
                        kind: Kind::Get,
                        at,
                        took: started.elapsed() - at,
                        key,
                        code,
                    });
                    n = pace(started, period, n);
                }
                (ops, wrong)
            }));
        }
        Load {
            started,
            stop,
            threads,
            known,
            object_bytes: spec.object_bytes,
        }
    }

    /// Time since the load started.
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stop and collect.
    pub fn finish(self) -> Report {
        self.stop.store(true, Ordering::Release);
        let mut ops = Vec::new();
        let mut wrong_bytes = 0;
        for t in self.threads {
            let (o, w) = t.join().expect("load thread");
            ops.extend(o);
            wrong_bytes += w;
        }
        ops.sort_by_key(|o| o.at);
        let committed = self.known.lock().unwrap().clone();
        Report {
            ops,
            wrong_bytes,
            committed,
            object_bytes: self.object_bytes,
        }
    }
}

/// Counts of one kind of operation.
#[derive(Default)]
pub struct Tally {
    pub ops: usize,
    pub failed: BTreeMap<i32, usize>,
    /// Longest operation.
    pub max: Duration,
}

impl Tally {
    pub fn failures(&self) -> usize {
        self.failed.values().sum()
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ops, {} failed {:?}, longest {:.0} ms",
            self.ops,
            self.failures(),
            self.failed,
            self.max.as_secs_f64() * 1e3
        )
    }
}

impl Report {
    /// Operations of `kind` that started in `[from, to)`.
    pub fn tally(&self, kind: Kind, from: Duration, to: Duration) -> Tally {
        let mut t = Tally::default();
        for o in self
            .ops
            .iter()
            .filter(|o| o.kind == kind && o.at >= from && o.at < to)
        {
            t.ops += 1;
            t.max = t.max.max(o.took);
            if o.code != 0 {
                *t.failed.entry(o.code).or_default() += 1;
            }
        }
        t
    }

    /// Over the whole run.
    pub fn all(&self, kind: Kind) -> Tally {
        self.tally(kind, Duration::ZERO, Duration::MAX)
    }

    /// Read every committed object back through `c`: (lost, wrong). Lost: any get failure, by
    /// code.
    pub fn read_back(&self, c: &Client) -> (BTreeMap<i32, usize>, usize) {
        let mut lost = BTreeMap::new();
        let mut wrong = 0;
        let mut buf = vec![0u8; self.object_bytes];
        for key in &self.committed {
            match c.get_into(key, &mut buf) {
                Ok(size) => {
                    if size as usize != self.object_bytes || buf != pattern(key, self.object_bytes)
                    {
                        wrong += 1;
                    }
                }
                Err(e) => *lost.entry(e.code().as_i32()).or_default() += 1,
            }
        }
        (lost, wrong)
    }
}
