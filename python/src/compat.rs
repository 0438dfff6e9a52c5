//! The value classes of Ascend MemCache's Python module: `ReplicateConfig` (what a put asks for:
//! replica count and placement) and `KeyInfo` (what `get_key_info` tells about an object).

use mmc_controlplane::msg::{self, Replica};
use mmc_dataplane::{ObjectInfo, PutOptions};
use pyo3::prelude::*;
use tracing::warn;

use crate::buffers::key_arg;
use crate::items::batch_keys;

use crate::codes::INVALID;

/// Most replicas one put may ask for (the C API's `MAX_BLOB_COPIES`).
const REPLICAS_MAX: i64 = 8;

/// Replica allocation policy of a put (the C API's ``mmc_put_options``).
///
/// - ``replicaNum``: copies to keep, each on a different local service; 0 or 1 = one copy,
///   at most 8.
/// - ``preferredLocalServiceIDs``: local service ids (``get_local_service_id()``) to place the
///   copies on, unique, at most ``max(replicaNum, 1)`` of them; empty = the meta service
///   chooses (the writer's own service first).
///
/// Passed as the optional last argument of ``put``, ``put_from``, ``put_from_layers`` and the
/// batch puts. A config the meta service cannot satisfy (more replicas than live services under
/// the strict replica policy, a preferred service without room) fails the put with -3013.
#[pyclass(module = "mmc", name = "ReplicateConfig", from_py_object)]
#[derive(Clone, Debug, Default)]
pub struct ReplicateConfig {
    #[pyo3(get, set, name = "replicaNum")]
    replica_num: i64,
    #[pyo3(get, set, name = "preferredLocalServiceIDs")]
    preferred: Vec<i64>,
}

#[pymethods]
impl ReplicateConfig {
    #[new]
    #[pyo3(signature = (replicaNum = 0, preferredLocalServiceIDs = None))]
    #[allow(non_snake_case)]
    fn new(replicaNum: i64, preferredLocalServiceIDs: Option<Vec<i64>>) -> Self {
        ReplicateConfig {
            replica_num: replicaNum,
            preferred: preferredLocalServiceIDs.unwrap_or_default(),
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "ReplicateConfig(replicaNum={}, preferredLocalServiceIDs={:?})",
            self.replica_num, self.preferred
        )
    }
}

impl ReplicateConfig {
    /// The put options it asks for; -3000 when out of range.
    fn options(&self) -> Result<PutOptions, i32> {
        let n = self.replica_num;
        let replicas = n.max(1);
        let mut seen = self.preferred.clone();
        seen.sort_unstable();
        seen.dedup();
        let bad_ids = self
            .preferred
            .iter()
            .any(|&id| !(0..=i64::from(i32::MAX)).contains(&id));
        if !(0..=REPLICAS_MAX).contains(&n)
            || bad_ids
            || seen.len() != self.preferred.len()
            || self.preferred.len() as i64 > replicas
        {
            warn!(
                config = ?self,
                "invalid ReplicateConfig: replicaNum 0..8; preferredLocalServiceIDs unique ids \
                 >= 0, at most max(replicaNum, 1) of them"
            );
            return Err(INVALID);
        }
        Ok(PutOptions {
            media: msg::MEDIA_NONE,
            policy: if self.preferred.is_empty() {
                msg::NATIVE_AFFINITY
            } else {
                msg::PREFERRED_AFFINITY
            },
            replicas: replicas as u16,
            preferred: self.preferred.iter().map(|&id| id as i32).collect(),
        })
    }
}

/// The put options of an optional `replicateConfig` argument: the defaults when absent or None;
/// -3000 when it is not a valid `ReplicateConfig`.
pub(crate) fn put_options(cfg: Option<&Bound<'_, PyAny>>) -> Result<PutOptions, i32> {
    match cfg.filter(|c| !c.is_none()) {
        None => Ok(PutOptions::default()),
        Some(c) => match c.cast::<ReplicateConfig>() {
            Ok(c) => c.borrow().options(),
            Err(_) => {
                warn!("replicateConfig must be an mmc.ReplicateConfig");
                Err(INVALID)
            }
        },
    }
}

/// Bits of a [`gva`] given to the offset inside the segment (1 TiB).
const GVA_OFFSET_BITS: u32 = 40;
/// Bits given to the segment id.
const GVA_SEGMENT_BITS: u32 = 8;
/// Bits given to the local service id (rank); the top bit stays 0, so a GVA is a positive int.
const GVA_RANK_BITS: u32 = 15;

/// The global address of one replica: `rank << 48 | segment << 40 | offset`, naming the local
/// service, its pool (segment) and the byte in it where the object starts; -1 when a field does
/// not fit (rank >= 32768, segment >= 256, offset >= 1 TiB).
pub(crate) fn gva(r: &Replica) -> i64 {
    if u64::from(r.rank) >> GVA_RANK_BITS != 0
        || u64::from(r.segment) >> GVA_SEGMENT_BITS != 0
        || r.offset >> GVA_OFFSET_BITS != 0
    {
        return -1;
    }
    let v = (u64::from(r.rank) << (GVA_OFFSET_BITS + GVA_SEGMENT_BITS))
        | (u64::from(r.segment) << GVA_OFFSET_BITS)
        | r.offset;
    v as i64
}

/// What ``get_key_info`` tells about an object: its size and where its replicas are.
///
/// - ``size()``: the object's size in bytes; 0 when the key does not exist (or the call failed).
/// - ``gva_list()``: one global address per replica, an int
///   ``rank << 48 | segment << 40 | offset``: the local service (``loc_list``), its pool and the
///   object's first byte in that pool (-1 for a replica whose fields do not fit 15/8/40 bits).
///   It names a place in the pool for inspection and placement decisions; reads and writes go
///   through the store's methods.
/// - ``loc_list()``: the local service id of each replica.
/// - ``type_list()``: the medium of each replica (0 HBM, 1 DRAM).
#[pyclass(frozen, module = "mmc", name = "KeyInfo")]
#[derive(Clone, Debug, Default)]
pub struct KeyInfo {
    size: u64,
    replicas: Vec<Replica>,
}

impl KeyInfo {
    pub(crate) fn of(info: ObjectInfo) -> KeyInfo {
        KeyInfo {
            size: info.size,
            replicas: info.replicas,
        }
    }
}

#[pymethods]
impl KeyInfo {
    fn size(&self) -> u64 {
        self.size
    }

    fn gva_list(&self) -> Vec<i64> {
        self.replicas.iter().map(gva).collect()
    }

    fn loc_list(&self) -> Vec<u32> {
        self.replicas.iter().map(|r| r.rank).collect()
    }

    fn type_list(&self) -> Vec<u16> {
        self.replicas.iter().map(|r| r.media).collect()
    }

    fn __repr__(&self) -> String {
        let reps: Vec<String> = self
            .replicas
            .iter()
            .map(|r| {
                format!(
                    "(rank {}, {} segment {}, offset {}, gva {:#x})",
                    r.rank,
                    msg::media_name(r.media),
                    r.segment,
                    r.offset,
                    gva(r)
                )
            })
            .collect();
        format!(
            "KeyInfo(size={}, replicas=[{}])",
            self.size,
            reps.join(", ")
        )
    }

    fn __str__(&self) -> String {
        self.__repr__()
    }
}

impl crate::DistributedObjectStore {
    /// `batch_get_key_info`'s body: one query for the valid keys; with `flag == 0` keys this
    /// store has staged (`batch_alloc`, not finished) are reported too.
    pub(crate) fn key_infos(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        flag: i64,
    ) -> Vec<KeyInfo> {
        let Ok(keys) = batch_keys(keys) else {
            return Vec::new();
        };
        let parsed: Vec<Option<String>> = keys.iter().map(|k| key_arg(k).ok()).collect();
        let mut out = vec![KeyInfo::default(); parsed.len()];
        let Some(client) = self.inner.client() else {
            return out;
        };
        let todo: Vec<(usize, &str)> = parsed
            .iter()
            .enumerate()
            .filter_map(|(i, k)| k.as_deref().map(|k| (i, k)))
            .collect();
        if todo.is_empty() {
            return out;
        }
        let keys: Vec<&str> = todo.iter().map(|(_, k)| *k).collect();
        if let Ok(results) = py.detach(|| client.batch_query(&keys)) {
            for ((i, _), r) in todo.iter().zip(results) {
                if let Ok(info) = r {
                    out[*i] = KeyInfo::of(info);
                }
            }
        }
        if flag == 0 {
            let session = self.inner.session();
            for (i, k) in &todo {
                if let Some(s) = session.staged(k) {
                    out[*i] = KeyInfo::of(mmc_dataplane::ObjectInfo {
                        size: s.size,
                        replicas: s.replicas.clone(),
                    });
                }
            }
        }
        out
    }
}
