//! `mmcc_*`: the client singleton and the data operations.

use std::ffi::c_char;
use std::sync::{Arc, RwLock};

use mmc_dataplane::{Client, ClientConfig, ObjectInfo};
use tracing::{info, warn};

use crate::async_ops::{self, Pool};
use crate::types::*;
use crate::{code_of, guard, log};
use crate::{convert, mixed};

/// Async workers per pool when the config says 0.
const ASYNC_THREADS_DEFAULT: usize = 4;
const ASYNC_THREADS_MAX: usize = 64;

struct State {
    client: Client,
    reads: Pool,
    writes: Pool,
}

static STATE: RwLock<Option<Arc<State>>> = RwLock::new(None);

fn state(what: &str) -> Result<Arc<State>, i32> {
    match STATE
        .read()
        .expect("lock poisoned: a panic left this state half-updated")
        .as_ref()
    {
        Some(s) => Ok(s.clone()),
        None => {
            warn!(
                function = what,
                "client not initialized: call mmcc_init first"
            );
            Err(MMC_CLIENT_NOT_INIT)
        }
    }
}

/// Run `op` now, or on a worker when `flags` has `MMC_FLAG_ASYNC` (then return its wait handle).
fn run(
    s: Arc<State>,
    flags: u32,
    read: bool,
    op: impl FnOnce(&Client) -> i32 + Send + 'static,
) -> i32 {
    if flags & MMC_FLAG_ASYNC == 0 {
        return op(&s.client);
    }
    let pool = if read { &s.reads } else { &s.writes };
    let job_state = s.clone();
    pool.submit(Box::new(move || op(&job_state.client)))
}

macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(code) => return code,
        }
    };
}

/// Initialize the client singleton. A second call without `mmcc_uninit` is `MMC_REPEAT_CALL`.
///
/// # Safety
/// `config` is NULL or points to a valid `mmc_client_config_t`.
#[no_mangle]
pub unsafe extern "C" fn mmcc_init(config: *mut mmc_client_config_t) -> i32 {
    guard("mmcc_init", MMC_ERROR, || {
        log::install();
        // SAFETY: checked for NULL; the caller passes a valid config.
        let Some(c) = (unsafe { config.as_ref() }) else {
            warn!("mmcc_init: config is NULL");
            return MMC_INVALID_PARAM;
        };
        if c.logFunc.is_some() {
            log::set_logger(c.logFunc);
        }
        if (0..=3).contains(&c.logLevel) {
            log::set_level(c.logLevel);
        }
        let mut slot = STATE
            .write()
            .expect("lock poisoned: a panic left this state half-updated");
        if slot.is_some() {
            warn!("mmcc_init: already initialized (call mmcc_uninit first)");
            return MMC_REPEAT_CALL;
        }
        let url = tri!(convert::field("discoveryURL", &c.discoveryURL));
        let tls = tri!(convert::tls(&c.tlsConfig));
        let config = ClientConfig {
            meta_url: url.clone(),
            rank_id: c.rankId,
            timeout_ms: if c.timeOut == 0 {
                60_000
            } else {
                c.timeOut as u64 * 1000
            },
            read_threads: c.readThreadPoolNum,
            write_threads: c.writeThreadPoolNum,
            tls,
            ..ClientConfig::default()
        };
        let client = match crate::service::local_for(&url) {
            Some(local) => Client::with_shared_local_service(&config, local),
            None => Client::connect(&config),
        };
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                warn!(url, error = %e, "mmcc_init failed");
                return code_of(&e);
            }
        };
        let threads = |n: u32| {
            if n == 0 {
                ASYNC_THREADS_DEFAULT
            } else {
                (n as usize).min(ASYNC_THREADS_MAX)
            }
        };
        *slot = Some(Arc::new(State {
            client,
            reads: Pool::new("mmc-async-read", threads(c.readThreadPoolNum)),
            writes: Pool::new("mmc-async-write", threads(c.writeThreadPoolNum)),
        }));
        info!(url, rank = c.rankId, "client initialized");
        MMC_OK
    })
}

/// Finish queued async operations and release the client.
#[no_mangle]
pub extern "C" fn mmcc_uninit() {
    guard("mmcc_uninit", (), || {
        let taken = STATE
            .write()
            .expect("lock poisoned: a panic left this state half-updated")
            .take();
        let Some(mut s) = taken else {
            warn!("mmcc_uninit: client was not initialized");
            return;
        };
        // Queued and running async operations hold clones: wait for them here, so that the pools
        // (whose drop joins the workers) are released on this thread, never on a worker. Each
        // operation is bounded by the client's timeout.
        let state = loop {
            match Arc::try_unwrap(s) {
                Ok(state) => break state,
                Err(shared) => {
                    s = shared;
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
        };
        drop(state);
        info!("client uninitialized");
    })
}

/// Put one object from `buf`. Create-only: an existing key is `MMC_DUPLICATED_OBJECT`.
///
/// # Safety
/// `key` is a NUL-terminated string; `buf` is NULL or valid and describes readable memory that stays
/// valid until the call returns (or, with `MMC_FLAG_ASYNC`, until `mmcc_wait` completes).
#[no_mangle]
pub unsafe extern "C" fn mmcc_put(
    key: *const c_char,
    buf: *mut mmc_buffer,
    options: mmc_put_options,
    flags: u32,
) -> i32 {
    guard("mmcc_put", MMC_ERROR, || {
        let s = tri!(state("mmcc_put"));
        let key = tri!(convert::key(key));
        // SAFETY: checked for NULL; valid per the caller's contract.
        let Some(buf) = (unsafe { buf.as_ref() }) else {
            warn!(key, "mmcc_put: buffer is NULL");
            return MMC_INVALID_PARAM;
        };
        let pieces = tri!(convert::pieces(buf));
        let device = convert::is_device(buf);
        let opts = tri!(convert::put_options(&options));
        run(s, flags, false, move |c| {
            // SAFETY: the caller keeps the buffer readable until the operation completes.
            match unsafe { mixed::put(c, &[&key], &[&pieces], &[device], &opts) } {
                Ok(mut r) => match r.remove(0) {
                    Ok(()) => MMC_OK,
                    Err(e) => code_of(&e),
                },
                Err(e) => code_of(&e),
            }
        })
    })
}

/// Get one object into `buf`; a buffer smaller than the object is `MMC_INVALID_PARAM`.
///
/// # Safety
/// As `mmcc_put`, with `buf` describing writable memory.
#[no_mangle]
pub unsafe extern "C" fn mmcc_get(key: *const c_char, buf: *mut mmc_buffer, flags: u32) -> i32 {
    guard("mmcc_get", MMC_ERROR, || {
        let s = tri!(state("mmcc_get"));
        let key = tri!(convert::key(key));
        // SAFETY: checked for NULL; valid per the caller's contract.
        let Some(buf) = (unsafe { buf.as_ref() }) else {
            warn!(key, "mmcc_get: buffer is NULL");
            return MMC_INVALID_PARAM;
        };
        let pieces = tri!(convert::pieces(buf));
        let device = convert::is_device(buf);
        if !device {
            tri!(convert::check_disjoint(pieces.iter()));
        }
        run(s, flags, true, move |c| {
            // SAFETY: writable, disjoint, kept alive by the caller until completion.
            match unsafe { mixed::get(c, &[&key], &[&pieces], &[device]) } {
                Ok(mut r) => match r.remove(0) {
                    Ok(_) => MMC_OK,
                    Err(e) => code_of(&e),
                },
                Err(e) => code_of(&e),
            }
        })
    })
}

fn fill_info(info: &mut mmc_data_info, found: &Result<ObjectInfo, mmc_dataplane::Error>) {
    *info = mmc_data_info::default();
    if let Ok(o) = found {
        info.size = o.size;
        info.valid = true;
        info.numBlobs = o.replicas.len().min(MAX_BLOB_COPIES) as u8;
        for (i, r) in o.replicas.iter().take(MAX_BLOB_COPIES).enumerate() {
            info.ranks[i] = r.rank;
            info.types[i] = r.media;
        }
    }
}

/// Size and replicas of one object.
///
/// # Safety
/// `key` is a NUL-terminated string; `info` is NULL or writable (until completion when async).
#[no_mangle]
pub unsafe extern "C" fn mmcc_query(
    key: *const c_char,
    info: *mut mmc_data_info,
    flags: u32,
) -> i32 {
    guard("mmcc_query", MMC_ERROR, || {
        let s = tri!(state("mmcc_query"));
        let key = tri!(convert::key(key));
        if info.is_null() {
            warn!(key, "mmcc_query: info is NULL");
            return MMC_INVALID_PARAM;
        }
        let info = info as usize;
        run(s, flags, true, move |c| {
            let found = c.query(&key);
            // SAFETY: non-null and writable per the caller's contract.
            let info = unsafe { &mut *(info as *mut mmc_data_info) };
            fill_info(info, &found);
            match found {
                Ok(_) => MMC_OK,
                Err(e) => code_of(&e),
            }
        })
    })
}

/// Remove one object: invisible at once; its space is reused once no reader holds it.
///
/// # Safety
/// `key` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn mmcc_remove(key: *const c_char, flags: u32) -> i32 {
    guard("mmcc_remove", MMC_ERROR, || {
        let s = tri!(state("mmcc_remove"));
        let key = tri!(convert::key(key));
        run(s, flags, false, move |c| match c.remove(&key) {
            Ok(()) => MMC_OK,
            Err(e) => code_of(&e),
        })
    })
}

/// 0 if the object exists, `MMC_OBJECT_NOT_EXISTS` if not.
///
/// # Safety
/// `key` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn mmcc_exist(key: *const c_char, flags: u32) -> i32 {
    let _ = flags; // reserved: exist is always synchronous
    guard("mmcc_exist", MMC_ERROR, || {
        let s = tri!(state("mmcc_exist"));
        let key = tri!(convert::key(key));
        match s.client.exist(&key) {
            Ok(()) => MMC_OK,
            Err(e) => code_of(&e),
        }
    })
}

/// Where an object's replicas live (synchronous only).
///
/// # Safety
/// `key` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn mmcc_get_location(key: *const c_char, flags: u32) -> mmc_location_t {
    let _ = flags; // reserved: synchronous only
    let failed = |code| mmc_location_t {
        result: code,
        ..Default::default()
    };
    guard("mmcc_get_location", failed(MMC_ERROR), || {
        let s = match state("mmcc_get_location") {
            Ok(s) => s,
            Err(code) => return failed(code),
        };
        let key = match convert::key(key) {
            Ok(k) => k,
            Err(code) => return failed(code),
        };
        match s.client.query(&key) {
            Err(e) => failed(code_of(&e)),
            Ok(o) => {
                let mut loc = mmc_location_t {
                    size: o.size,
                    numBlobs: o.replicas.len().min(MAX_BLOB_COPIES) as u8,
                    ..Default::default()
                };
                for (i, r) in o.replicas.iter().take(MAX_BLOB_COPIES).enumerate() {
                    loc.ranks[i] = r.rank;
                    loc.types[i] = r.media;
                    loc.offsets[i] = r.offset;
                }
                loc
            }
        }
    })
}

/// Per-key outcome codes into the caller's array (if any); returns the first failure or 0.
fn report(codes: &[i32], results: usize) -> i32 {
    if results != 0 {
        // SAFETY: the caller passes an array of one int32_t per key, writable until completion.
        let out = unsafe { std::slice::from_raw_parts_mut(results as *mut i32, codes.len()) };
        out.copy_from_slice(codes);
    }
    codes.iter().copied().find(|c| *c != 0).unwrap_or(MMC_OK)
}

fn codes_of<T>(
    checked: &[Result<String, i32>],
    outcomes: Vec<Result<T, mmc_dataplane::Error>>,
) -> Vec<i32> {
    let mut outcomes = outcomes.into_iter();
    checked
        .iter()
        .map(|k| match k {
            Err(code) => *code,
            Ok(_) => match outcomes.next() {
                Some(Ok(_)) => MMC_OK,
                Some(Err(e)) => code_of(&e),
                None => MMC_ERROR,
            },
        })
        .collect()
}

/// # Safety
/// See `mmcc_batch_put_with_results`.
#[no_mangle]
pub unsafe extern "C" fn mmcc_batch_put(
    keys: *mut *const c_char,
    keys_count: u32,
    bufs: *const mmc_buffer,
    options: *mut mmc_put_options,
    flags: u32,
) -> i32 {
    // SAFETY: same contract, no results array.
    unsafe {
        mmcc_batch_put_with_results(keys, keys_count, bufs, options, flags, std::ptr::null_mut())
    }
}

/// Put many objects with one allocation and one commit round trip. Returns 0 when every key was
/// stored, else the first failure; `results` (NULL or one `int32_t` per key) gets each key's code.
///
/// # Safety
/// `keys` holds `keys_count` NUL-terminated strings; `bufs` holds `keys_count` buffers describing
/// readable memory; `options` is NULL or valid; everything stays valid until the call returns (or
/// `mmcc_wait` completes, with `MMC_FLAG_ASYNC`).
#[no_mangle]
pub unsafe extern "C" fn mmcc_batch_put_with_results(
    keys: *mut *const c_char,
    keys_count: u32,
    bufs: *const mmc_buffer,
    options: *mut mmc_put_options,
    flags: u32,
    results: *mut i32,
) -> i32 {
    guard("mmcc_batch_put", MMC_ERROR, || {
        let s = tri!(state("mmcc_batch_put"));
        let mut checked = tri!(convert::keys(keys, keys_count as usize));
        // SAFETY: checked for NULL; valid per the caller's contract.
        let (Some(options), false) = (unsafe { options.as_ref() }, bufs.is_null()) else {
            warn!("mmcc_batch_put: options or bufs is NULL");
            return MMC_INVALID_PARAM;
        };
        let opts = tri!(convert::put_options(options));
        // SAFETY: non-null, `keys_count` buffers per the caller's contract.
        let bufs = unsafe { std::slice::from_raw_parts(bufs, checked.len()) };
        let pieces = convert::batch_pieces(&mut checked, bufs);
        let device: Vec<bool> = bufs.iter().map(convert::is_device).collect();
        let results = results as usize;
        run(s, flags, false, move |c| {
            let mut valid = (Vec::new(), Vec::new(), Vec::new());
            for ((k, p), d) in checked.iter().zip(&pieces).zip(&device) {
                if let Ok(k) = k {
                    valid.0.push(k.as_str());
                    valid.1.push(p);
                    valid.2.push(*d);
                }
            }
            let outcomes = if valid.0.is_empty() {
                Vec::new()
            } else {
                // SAFETY: readable until completion per the caller's contract.
                match unsafe { mixed::put(c, &valid.0, &valid.1, &valid.2, &opts) } {
                    Ok(o) => o,
                    Err(e) => return report(&vec![code_of(&e); checked.len()], results),
                }
            };
            report(&codes_of(&checked, outcomes), results)
        })
    })
}

/// # Safety
/// See `mmcc_batch_get_with_results`.
#[no_mangle]
pub unsafe extern "C" fn mmcc_batch_get(
    keys: *mut *const c_char,
    keys_count: u32,
    bufs: *mut mmc_buffer,
    flags: u32,
) -> i32 {
    // SAFETY: same contract, no results array.
    unsafe { mmcc_batch_get_with_results(keys, keys_count, bufs, flags, std::ptr::null_mut()) }
}

/// Get many objects with one lookup round trip. Returns 0 when every key was read, else the first
/// failure; `results` (NULL or one `int32_t` per key) gets each key's code.
///
/// # Safety
/// As `mmcc_batch_put_with_results`, with `bufs` describing writable, non-overlapping memory.
#[no_mangle]
pub unsafe extern "C" fn mmcc_batch_get_with_results(
    keys: *mut *const c_char,
    keys_count: u32,
    bufs: *mut mmc_buffer,
    flags: u32,
    results: *mut i32,
) -> i32 {
    guard("mmcc_batch_get", MMC_ERROR, || {
        let s = tri!(state("mmcc_batch_get"));
        let mut checked = tri!(convert::keys(keys, keys_count as usize));
        if bufs.is_null() {
            warn!("mmcc_batch_get: bufs is NULL");
            return MMC_INVALID_PARAM;
        }
        // SAFETY: non-null, `keys_count` buffers per the caller's contract.
        let bufs = unsafe { std::slice::from_raw_parts(bufs, checked.len()) };
        let pieces = convert::batch_pieces(&mut checked, bufs);
        let device: Vec<bool> = bufs.iter().map(convert::is_device).collect();
        tri!(convert::check_disjoint(
            pieces
                .iter()
                .zip(&device)
                .filter(|(_, d)| !**d)
                .flat_map(|(p, _)| p.iter())
        ));
        let results = results as usize;
        run(s, flags, true, move |c| {
            let mut valid = (Vec::new(), Vec::new(), Vec::new());
            for ((k, p), d) in checked.iter().zip(&pieces).zip(&device) {
                if let Ok(k) = k {
                    valid.0.push(k.as_str());
                    valid.1.push(p);
                    valid.2.push(*d);
                }
            }
            let outcomes = if valid.0.is_empty() {
                Vec::new()
            } else {
                // SAFETY: host pieces are writable, disjoint across the call, alive until
                // completion.
                match unsafe { mixed::get(c, &valid.0, &valid.1, &valid.2) } {
                    Ok(o) => o,
                    Err(e) => return report(&vec![code_of(&e); checked.len()], results),
                }
            };
            report(&codes_of(&checked, outcomes), results)
        })
    })
}

/// Size and replicas of many objects; a missing or invalid key gets `valid = false`. Returns 0 when
/// the call itself succeeded.
///
/// # Safety
/// `keys` holds `keys_count` NUL-terminated strings; `info` holds `keys_count` writable entries.
#[no_mangle]
pub unsafe extern "C" fn mmcc_batch_query(
    keys: *mut *const c_char,
    keys_count: usize,
    info: *mut mmc_data_info,
    flags: u32,
) -> i32 {
    guard("mmcc_batch_query", MMC_ERROR, || {
        let s = tri!(state("mmcc_batch_query"));
        let checked = tri!(convert::keys(keys, keys_count));
        if info.is_null() {
            warn!("mmcc_batch_query: info is NULL");
            return MMC_INVALID_PARAM;
        }
        let info = info as usize;
        run(s, flags, true, move |c| {
            // SAFETY: `keys_count` writable entries per the caller's contract.
            let out = unsafe {
                std::slice::from_raw_parts_mut(info as *mut mmc_data_info, checked.len())
            };
            let valid: Vec<&str> = checked.iter().filter_map(|k| k.as_deref().ok()).collect();
            let found = match c.batch_query(&valid) {
                Ok(f) => f,
                Err(e) => {
                    out.iter_mut().for_each(|i| *i = mmc_data_info::default());
                    return code_of(&e);
                }
            };
            let mut found = found.into_iter();
            for (slot, k) in out.iter_mut().zip(&checked) {
                match k {
                    Ok(_) => fill_info(slot, &found.next().expect("one per valid key")),
                    Err(_) => *slot = mmc_data_info::default(),
                }
            }
            MMC_OK
        })
    })
}

/// Remove many objects; `remove_results` (NULL or one per key) gets each key's code. Returns 0 when
/// every key was removed, the number of keys that failed (positive) otherwise, or a negative code
/// when the call itself failed.
///
/// # Safety
/// `keys` holds `keys_count` NUL-terminated strings; `remove_results` is NULL or has room for
/// `keys_count` values (until completion when async).
#[no_mangle]
pub unsafe extern "C" fn mmcc_batch_remove(
    keys: *mut *const c_char,
    keys_count: u32,
    remove_results: *mut i32,
    flags: u32,
) -> i32 {
    guard("mmcc_batch_remove", MMC_ERROR, || {
        let s = tri!(state("mmcc_batch_remove"));
        let checked = tri!(convert::keys(keys, keys_count as usize));
        let results = remove_results as usize;
        run(s, flags, false, move |c| {
            let valid: Vec<&str> = checked.iter().filter_map(|k| k.as_deref().ok()).collect();
            let outcomes = match c.batch_remove(&valid) {
                Ok(o) => o,
                Err(e) => return code_of(&e),
            };
            let codes = codes_of(&checked, outcomes);
            report(&codes, results);
            codes.iter().filter(|c| **c != 0).count() as i32
        })
    })
}

/// Existence of many keys: `exist_results` gets 0 (present) or `MMC_OBJECT_NOT_EXISTS` per key.
/// Returns 0 when the call itself succeeded.
///
/// # Safety
/// `keys` holds `keys_count` NUL-terminated strings; `exist_results` has room for `keys_count`.
#[no_mangle]
pub unsafe extern "C" fn mmcc_batch_exist(
    keys: *mut *const c_char,
    keys_count: u32,
    exist_results: *mut i32,
    flags: u32,
) -> i32 {
    let _ = flags; // reserved: exist is always synchronous
    guard("mmcc_batch_exist", MMC_ERROR, || {
        let s = tri!(state("mmcc_batch_exist"));
        let checked = tri!(convert::keys(keys, keys_count as usize));
        if exist_results.is_null() {
            warn!("mmcc_batch_exist: exist_results is NULL");
            return MMC_INVALID_PARAM;
        }
        let valid: Vec<&str> = checked.iter().filter_map(|k| k.as_deref().ok()).collect();
        let outcomes = match s.client.batch_exist(&valid) {
            Ok(o) => o,
            Err(e) => return code_of(&e),
        };
        report(&codes_of(&checked, outcomes), exist_results as usize);
        MMC_OK
    })
}

/// Wait for an async operation: 0 done, 1 timed out (the handle stays valid), a positive number
/// (the negated error code) when it failed, `MMC_NET_REQ_HANDLE_NO_FOUND` for an unknown handle.
#[no_mangle]
pub extern "C" fn mmcc_wait(waitHandle: i32, timeoutSec: i32) -> i32 {
    guard("mmcc_wait", MMC_ERROR, || {
        async_ops::wait(waitHandle, timeoutSec)
    })
}
