//! The index invariants: what each local service's core believes it holds, against the meta core.
//!
//! For a service the meta core knows at the service's own incarnation:
//! - it never applied a change the meta core did not make (`applied <= last`), and the meta core
//!   forgot only changes the service acknowledged, or dropped them for a `Reset` still queued;
//! - once it has applied every change the meta core made for it (and no snapshot is still being
//!   queued), its index is exactly the committed objects with a replica on it;
//! - at every step, an entry that is not (or no longer) in the directory has its removal (or a
//!   `Reset`) queued and not yet applied: once the service acknowledges the round that carried
//!   the removal, the entry is gone.

use std::collections::BTreeMap;

use mmc_controlplane::meta::MetaCore;
use mmc_controlplane::msg::IndexChange;

use super::local::SimLocal;
use super::Node;
use crate::local::IndexEntry;

/// Check every live service's index; returns how many were checked for exact equality.
pub(crate) fn check_indexes(meta: &MetaCore, locals: &[Node<SimLocal>]) -> Result<u64, String> {
    let mut expected: BTreeMap<u32, BTreeMap<String, IndexEntry>> = BTreeMap::new();
    for obj in meta.committed_objects() {
        for r in &obj.replicas {
            let entry = IndexEntry {
                segment: r.segment,
                offset: r.offset,
                len: r.len,
                version: obj.version,
                crc: obj.crc,
                // The wanted replica count can grow without an index change (a rejoin merges
                // services' reports): not compared.
                want: 0,
            };
            let held = expected
                .entry(r.rank)
                .or_default()
                .insert(obj.key.clone(), entry);
            assert!(held.is_none(), "one replica per rank");
        }
    }
    let empty = BTreeMap::new();
    let mut exact = 0;
    for (rank, node) in locals.iter().enumerate() {
        let rank = rank as u32;
        let Some(local) = node.state.as_ref() else {
            continue;
        };
        let Some((incarnation, _)) = local.membership else {
            continue;
        };
        let Some(view) = meta.index_outbox(rank) else {
            continue;
        };
        if view.incarnation != incarnation {
            continue;
        }
        let index = local.index();
        let held: BTreeMap<String, IndexEntry> = index
            .entries()
            .iter()
            .map(|(k, e)| (k.clone(), IndexEntry { want: 0, ..*e }))
            .collect();
        let applied = index.applied_seq();
        let last = view.last_seq();
        let reset_queued = view.changes.front() == Some(&IndexChange::Reset);
        if applied > last {
            return Err(format!(
                "rank {rank} applied index change {applied}, the meta core made only {last}"
            ));
        }
        if view.first_seq > applied + 1 && !reset_queued {
            return Err(format!(
                "rank {rank} applied index changes up to {applied}; the meta core forgot up to {}",
                view.first_seq - 1
            ));
        }
        let want = expected.get(&rank).unwrap_or(&empty);
        if applied == last && !view.resyncing && !index.resync_wanted() {
            exact += 1;
            if &held != want {
                return Err(format!(
                    "rank {rank} (incarnation {incarnation}) applied every index change ({applied}) \
                     but its index differs from the directory: {}",
                    diff(&held, want)
                ));
            }
        }
        // Changes the service has not applied yet.
        let unapplied = view
            .changes
            .iter()
            .enumerate()
            .filter(|(i, _)| view.first_seq + *i as u64 > applied)
            .map(|(_, c)| c);
        let unapplied: Vec<&IndexChange> = unapplied.collect();
        let reset_ahead = unapplied.iter().any(|c| **c == IndexChange::Reset);
        for (key, e) in &held {
            if want.get(key) == Some(e) || reset_ahead {
                continue;
            }
            let removal_ahead = unapplied.iter().any(|c| {
                matches!(c, IndexChange::Removed { key: k, segment, offset }
                    if k == key && (*segment, *offset) == (e.segment, e.offset))
            });
            if !removal_ahead {
                return Err(format!(
                    "rank {rank} (incarnation {incarnation}, applied {applied}) holds {key:?} at \
                     {}:{}+{} in its index, which the directory no longer has there, and no \
                     removal of it is on its way",
                    e.segment, e.offset, e.len
                ));
            }
        }
    }
    Ok(exact)
}

fn diff(held: &BTreeMap<String, IndexEntry>, want: &BTreeMap<String, IndexEntry>) -> String {
    let extra: Vec<&String> = held
        .iter()
        .filter(|(k, e)| want.get(*k) != Some(e))
        .map(|(k, _)| k)
        .collect();
    let missing: Vec<&String> = want
        .iter()
        .filter(|(k, e)| held.get(*k) != Some(e))
        .map(|(k, _)| k)
        .collect();
    format!("extra or moved {extra:?}, missing or moved {missing:?}")
}
