//! Asynchronous operations: a bounded worker pool runs the work, a wait handle completes it.
//!
//! Handles are positive `i32`s, unique for the life of the process. `mmcc_wait` returns 0 (done),
//! 1 (timed out; the handle stays valid), the positive negated error code (the operation failed),
//! or `MMC_NET_REQ_HANDLE_NO_FOUND` for a handle that is unknown or was already waited for.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::warn;

use crate::types::*;

/// Operations queued but not yet started, per pool.
const QUEUE_OPS_MAX: usize = 4096;

type Job = Box<dyn FnOnce() -> i32 + Send>;

struct Completion {
    result: Mutex<Option<i32>>,
    done: Condvar,
}

fn handles() -> &'static Mutex<HashMap<i32, Arc<Completion>>> {
    static HANDLES: OnceLock<Mutex<HashMap<i32, Arc<Completion>>>> = OnceLock::new();
    HANDLES.get_or_init(|| Mutex::new(HashMap::new()))
}

static NEXT_HANDLE: AtomicI32 = AtomicI32::new(1);

/// A fixed set of worker threads fed through a bounded queue.
pub(crate) struct Pool {
    tx: Option<SyncSender<(Job, Arc<Completion>)>>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    pub(crate) fn new(name: &str, threads: usize) -> Pool {
        assert!(threads > 0);
        let (tx, rx) = sync_channel::<(Job, Arc<Completion>)>(QUEUE_OPS_MAX);
        let rx = Arc::new(Mutex::new(rx));
        let workers = (0..threads)
            .map(|i| {
                let rx = rx.clone();
                std::thread::Builder::new()
                    .name(format!("{name}-{i}"))
                    .spawn(move || worker(&rx))
                    .expect("spawn an async worker")
            })
            .collect();
        Pool {
            tx: Some(tx),
            workers,
        }
    }

    /// Queue `job`; returns its wait handle, or a negative code when the queue is full.
    pub(crate) fn submit(&self, job: Job) -> i32 {
        let handle = loop {
            let h = NEXT_HANDLE.fetch_add(1, Ordering::Relaxed);
            if h > 0 {
                break h;
            }
            // Wrapped after 2^31 handles: start again at 1.
            let _ = NEXT_HANDLE.compare_exchange(h + 1, 1, Ordering::Relaxed, Ordering::Relaxed);
        };
        let completion = Arc::new(Completion {
            result: Mutex::new(None),
            done: Condvar::new(),
        });
        handles()
            .lock()
            .expect("lock poisoned: a panic left this state half-updated")
            .insert(handle, completion.clone());
        let tx = self.tx.as_ref().expect("pool is running");
        match tx.try_send((job, completion)) {
            Ok(()) => handle,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                handles()
                    .lock()
                    .expect("lock poisoned: a panic left this state half-updated")
                    .remove(&handle);
                warn!(max = QUEUE_OPS_MAX, "async queue full: operation refused");
                MMC_NOT_ENOUGH_MEMORY
            }
        }
    }
}

impl Drop for Pool {
    /// Finish every queued operation, then stop the workers.
    fn drop(&mut self) {
        drop(self.tx.take());
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker(rx: &Mutex<Receiver<(Job, Arc<Completion>)>>) {
    loop {
        let next = rx
            .lock()
            .expect("lock poisoned: a panic left this state half-updated")
            .recv();
        let Ok((job, completion)) = next else { return };
        let code = crate::guard("async operation", MMC_ERROR, job);
        *completion
            .result
            .lock()
            .expect("lock poisoned: a panic left this state half-updated") = Some(code);
        completion.done.notify_all();
    }
}

/// `mmcc_wait`'s logic.
pub(crate) fn wait(handle: i32, timeout_sec: i32) -> i32 {
    let Some(c) = handles()
        .lock()
        .expect("lock poisoned: a panic left this state half-updated")
        .get(&handle)
        .cloned()
    else {
        warn!(handle, "mmcc_wait: unknown handle, or already waited for");
        return MMC_NET_REQ_HANDLE_NO_FOUND;
    };
    let deadline = Instant::now() + Duration::from_secs(timeout_sec.max(0) as u64);
    let mut result = c
        .result
        .lock()
        .expect("lock poisoned: a panic left this state half-updated");
    while result.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return 1;
        }
        result = c
            .done
            .wait_timeout(result, left)
            .expect("lock poisoned: a panic left this state half-updated")
            .0;
    }
    let code = result.expect("checked");
    drop(result);
    // Exactly once: a second wait finds no handle.
    if handles()
        .lock()
        .expect("lock poisoned: a panic left this state half-updated")
        .remove(&handle)
        .is_none()
    {
        return MMC_NET_REQ_HANDLE_NO_FOUND;
    }
    // A failed operation's negative code is reported negated (positive); a positive outcome (the
    // failure count of `mmcc_batch_remove`) is reported as it is.
    if code < 0 {
        code.checked_neg().unwrap_or(i32::MAX)
    } else {
        code
    }
}
