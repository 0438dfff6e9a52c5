//! The shared bodies of the store's batch and keyed methods.

use mmc_dataplane::{Client, PutOptions};
use pyo3::prelude::*;
use tracing::warn;

use crate::buffers::{key_arg, BufGuard};
use crate::codes::{self, Code, INVALID, NOT_INIT, OK};
use crate::compat::put_options;
use crate::device;
use crate::direct::{direction, Mode, Op};
use crate::items::{all, batch_keys, get_items, layers_item, one_item, per_key, put_items, Item};
use crate::memory::classify;
use crate::DistributedObjectStore;

/// `is_exist`'s convention: 1 present, 0 absent, else the code.
pub(crate) fn exist_code(r: &Result<(), codes::Error>) -> i32 {
    match r {
        Ok(()) => 1,
        Err(e) if e.code() == Code::ObjectNotExists => 0,
        Err(e) => codes::of(e),
    }
}

/// A batch's pointer list, its name in messages, and its size list.
type BatchLists<'a, 'py> = (
    Option<&'a Bound<'py, PyAny>>,
    &'static str,
    Option<&'a Bound<'py, PyAny>>,
);

/// Makes one key's item: key, pointer(s), size(s), writable, the buffer guards to hold.
type ItemMaker<'py> = fn(
    &Bound<'py, PyAny>,
    &Bound<'py, PyAny>,
    Option<&Bound<'py, PyAny>>,
    bool,
    &mut Vec<BufGuard<'py>>,
) -> Result<Item, i32>;

/// A batch put's or get's `direct` and `replicateConfig` arguments.
pub(crate) type CallArgs<'a, 'py> = (Option<&'a Bound<'py, PyAny>>, Option<&'a Bound<'py, PyAny>>);

impl DistributedObjectStore {
    /// Put or get prepared items (after classifying their buffers under `SMEMB_COPY_AUTO`).
    pub(crate) fn transfer(
        &self,
        py: Python<'_>,
        client: &Client,
        items: Vec<Result<Item, i32>>,
        op: Op,
        mode: Mode,
        opts: &PutOptions,
    ) -> Vec<i32> {
        let writable = op == Op::Get;
        // Which items are device memory (the rest are host memory).
        let device_backend = mmc_hal::device::active().kind() != mmc_hal::device::BackendKind::None;
        let mut on_device = vec![false; items.len()];
        let items: Vec<Result<Item, i32>> = match mode {
            Mode::Host if !device_backend => items,
            Mode::Host => items
                .into_iter()
                .map(|it| {
                    let it = it?;
                    if device::no_device(&it) {
                        Ok(it)
                    } else {
                        warn!(key = it.key, "a host direction (H2G / G2H) was given device memory");
                        Err(INVALID)
                    }
                })
                .collect(),
            Mode::Device => items
                .into_iter()
                .enumerate()
                .map(|(i, it)| {
                    let it = it?;
                    if device::all_device(&it) {
                        on_device[i] = true;
                        Ok(it)
                    } else {
                        warn!(key = it.key, backend = device::device_backend(),
                            "a device direction (L2G / G2L) was given memory that is not device memory");
                        Err(INVALID)
                    }
                })
                .collect(),
            Mode::Auto => {
                let mut host = Vec::with_capacity(items.len());
                let mut dev = Vec::new();
                for (i, it) in items.into_iter().enumerate() {
                    match it {
                        Ok(it) if device_backend && device::all_device(&it) => {
                            on_device[i] = true;
                            dev.push((i, it));
                            host.push(Err(OK));
                        }
                        Ok(it) if device_backend && !device::no_device(&it) => {
                            warn!(key = it.key, "SMEMB_COPY_AUTO: one key's buffers mix host and device memory");
                            host.push(Err(INVALID));
                        }
                        other => host.push(other),
                    }
                }
                let mut host = classify(host, &self.inner.registry, writable);
                for (i, it) in dev {
                    host[i] = Ok(it);
                }
                host
            }
        };
        if !on_device.contains(&true) {
            return match op {
                Op::Put => put_items(py, client, items, opts),
                Op::Get => get_items(py, client, items),
            };
        }
        // Split into the host share and the device share; every other entry of each is a
        // placeholder whose code is replaced by the other share's.
        let (mut host, mut dev) = (Vec::new(), Vec::new());
        for (i, it) in items.into_iter().enumerate() {
            if on_device[i] {
                host.push(Err(OK));
                dev.push(it);
            } else {
                dev.push(Err(OK));
                host.push(it);
            }
        }
        let (mut out, dev_out) = match op {
            Op::Put => (
                put_items(py, client, host, opts),
                device::put_device_items(py, client, dev, opts),
            ),
            Op::Get => (
                get_items(py, client, host),
                device::get_device_items(py, client, dev),
            ),
        };
        for (i, c) in dev_out.into_iter().enumerate() {
            if on_device[i] {
                out[i] = c;
            }
        }
        out
    }

    /// A single-key put or get (`put`, `put_from`, `put_from_layers`, `get_into`,
    /// `get_into_layers`): `make` prepares the item.
    pub(crate) fn single<'py>(
        &self,
        py: Python<'py>,
        op: Op,
        direct: Option<&Bound<'py, PyAny>>,
        replicate: Option<&Bound<'py, PyAny>>,
        make: impl FnOnce(&mut Vec<BufGuard<'py>>) -> Result<Item, i32>,
    ) -> i32 {
        let Some(client) = self.client() else {
            return NOT_INIT;
        };
        let (mode, opts) = match (direction(direct, op), put_options(replicate)) {
            (Ok(m), Ok(o)) => (m, o),
            (Err(c), _) | (_, Err(c)) => return c,
        };
        let mut guards = Vec::new();
        let item = make(&mut guards);
        let code = self.transfer(py, &client, vec![item], op, mode, &opts)[0];
        drop(guards);
        code
    }

    /// A batch of one buffer per key (`batch_put_from`, `batch_get_into`).
    pub(crate) fn batch_flat(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        ptrs: Option<&Bound<'_, PyAny>>,
        sizes: Option<&Bound<'_, PyAny>>,
        args: CallArgs<'_, '_>,
        op: Op,
    ) -> Vec<i32> {
        let lists = (ptrs, "buffer_ptrs", sizes);
        self.batch_items(py, keys, lists, args, op, one_item)
    }

    /// A batch of several pieces per key (`batch_put_from_layers`, `batch_get_into_layers`).
    pub(crate) fn batch_layers(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        ptrs_list: Option<&Bound<'_, PyAny>>,
        sizes_list: Option<&Bound<'_, PyAny>>,
        args: CallArgs<'_, '_>,
        op: Op,
    ) -> Vec<i32> {
        let lists = (ptrs_list, "buffer_ptrs_list", sizes_list);
        self.batch_items(py, keys, lists, args, op, layers_item)
    }

    /// A batch whose key `i` is made by `make(key, ptrs[i], sizes[i], writable, guards)`.
    fn batch_items<'py>(
        &self,
        py: Python<'py>,
        keys: &Bound<'py, PyAny>,
        (ptrs, ptrs_name, sizes): BatchLists<'_, 'py>,
        (direct, replicate): CallArgs<'_, 'py>,
        op: Op,
        make: ItemMaker<'py>,
    ) -> Vec<i32> {
        let Some(client) = self.client() else {
            return all(keys, NOT_INIT);
        };
        let Ok(keys_v) = batch_keys(keys) else {
            return vec![INVALID];
        };
        let n = keys_v.len();
        let (mode, opts) = match (direction(direct, op), put_options(replicate)) {
            (Ok(m), Ok(o)) => (m, o),
            (Err(c), _) | (_, Err(c)) => return vec![c; n],
        };
        let (ptrs, sizes) = match (per_key(ptrs, n, ptrs_name), per_key(sizes, n, "sizes")) {
            (Ok(p), Ok(s)) => (p, s),
            _ => return vec![INVALID; n],
        };
        let writable = op == Op::Get;
        let mut guards = Vec::new();
        let items: Vec<Result<Item, i32>> = keys_v
            .iter()
            .zip(ptrs.iter().zip(&sizes))
            .map(|(k, (p, s))| match p {
                Some(p) => make(k, p, s.as_ref(), writable, &mut guards),
                None => Err(INVALID),
            })
            .collect();
        let out = self.transfer(py, &client, items, op, mode, &opts);
        drop(guards);
        out
    }

    /// A single-key metadata call (`remove`, `is_exist`).
    pub(crate) fn keyed_one(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        call: impl FnOnce(&Client, &str) -> i32 + Send,
    ) -> i32 {
        let Some(client) = self.client() else {
            return NOT_INIT;
        };
        let Ok(key) = key_arg(key) else {
            warn!("key must be a str");
            return INVALID;
        };
        py.detach(|| call(&client, &key))
    }

    /// A batch metadata call (`remove_batch`, `batch_is_exist`): invalid keys get -3000, the
    /// rest go in one request.
    pub(crate) fn keyed_batch(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        call: impl FnOnce(&Client, &[&str]) -> Result<Vec<Result<(), codes::Error>>, codes::Error>
            + Send,
        code: fn(&Result<(), codes::Error>) -> i32,
    ) -> Vec<i32> {
        let Some(client) = self.client() else {
            return all(keys, NOT_INIT);
        };
        let Ok(keys_v) = batch_keys(keys) else {
            return vec![INVALID];
        };
        let parsed: Vec<Result<String, i32>> = keys_v.iter().map(key_arg).collect();
        let mut out: Vec<i32> = parsed
            .iter()
            .map(|k| k.as_ref().err().copied().unwrap_or(OK))
            .collect();
        let todo: Vec<(usize, String)> = parsed
            .into_iter()
            .enumerate()
            .filter_map(|(i, k)| k.ok().map(|k| (i, k)))
            .collect();
        if todo.is_empty() {
            return out;
        }
        let results = py.detach(|| {
            let keys: Vec<&str> = todo.iter().map(|(_, k)| k.as_str()).collect();
            call(&client, &keys)
        });
        match results {
            Ok(rs) => {
                for ((i, _), r) in todo.iter().zip(rs) {
                    out[*i] = code(&r);
                }
            }
            Err(e) => {
                let c = codes::of(&e);
                for (i, _) in &todo {
                    out[*i] = c;
                }
            }
        }
        out
    }
}

impl DistributedObjectStore {
    /// `get_batch`'s body: each key's bytes, `b""` for a key that failed.
    pub(crate) fn values<'py>(
        &self,
        py: Python<'py>,
        keys: &Bound<'py, PyAny>,
    ) -> Vec<Bound<'py, pyo3::types::PyBytes>> {
        use pyo3::types::PyBytes;
        let Ok(keys) = batch_keys(keys) else {
            return Vec::new();
        };
        let client = self.client();
        let parsed: Vec<Option<String>> = keys.iter().map(|k| key_arg(k).ok()).collect();
        let values: Vec<Option<Vec<u8>>> = py.detach(|| {
            parsed
                .iter()
                .map(|k| match (&client, k) {
                    (Some(c), Some(k)) => c.get(k).ok(),
                    _ => None,
                })
                .collect()
        });
        values
            .iter()
            .map(|v| PyBytes::new(py, v.as_deref().unwrap_or(b"")))
            .collect()
    }
}
