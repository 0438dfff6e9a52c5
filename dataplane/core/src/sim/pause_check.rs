//! The pause invariant: a local service that freezes (SIGSTOP) for less than its member timeout
//! plus grace, and comes back with its memory, keeps its objects.
//!
//! At each freeze that fits the grace with room to spare ([`PAUSE_MARGIN_MS`] for a lost
//! heartbeat, the heartbeat period and a short meta freeze), the checker notes the committed
//! objects with a replica on the service. Until the service is live again at the same
//! incarnation, each noted object must stay in the directory at the same place, unless a remove
//! or an eviction the checker saw took it (a request whose handling made it vanish). A meta
//! restart, the service's death, a partition of it or a burst of loss ends the watch unjudged.

use std::collections::BTreeMap;

use mmc_controlplane::meta::MetaCore;

use super::{meta_params, Sim};

/// Silence beyond the freeze itself that a frozen service may add before the meta core notices
/// it back: a lost heartbeat (one request timeout), a heartbeat period, a meta freeze shorter
/// than its stall threshold, and delivery.
pub(crate) const PAUSE_MARGIN_MS: u64 = 250;
/// A watch not over this long after the thaw has failed: the service never came back.
const BACK_WITHIN_MS: u64 = 1_000;

/// One frozen service under watch.
pub(crate) struct PauseWatch {
    local: usize,
    incarnation: u64,
    meta_gen: u64,
    local_gen: u64,
    thaw_ms: u64,
    /// Noted objects still expected: key -> (segment, offset).
    keys: BTreeMap<String, (u32, u64)>,
    /// The meta core paused the service at some point of the watch.
    paused_seen: bool,
}

/// The committed objects with a replica on `rank`: key -> (segment, offset).
fn held_by(meta: &MetaCore, rank: u32) -> BTreeMap<String, (u32, u64)> {
    meta.committed_objects()
        .into_iter()
        .filter_map(|o| {
            let r = o.replicas.iter().find(|r| r.rank == rank)?;
            Some((o.key, (r.segment, r.offset)))
        })
        .collect()
}

impl Sim {
    /// Local service `i` freezes for `for_ms`: watch it if the freeze fits the grace.
    pub(crate) fn pause_watch_start(&mut self, i: usize, for_ms: u64) {
        self.pause_watches.retain(|w| w.local != i);
        let p = meta_params(self.meta_gen);
        let fits = for_ms + PAUSE_MARGIN_MS < p.member_timeout_ms + p.member_grace_ms;
        let calm = self.loss_per_million <= 5_000 && self.cut.is_none_or(|(_, u)| u <= self.now);
        let already_frozen = self.locals[i].frozen_until > self.now;
        let Some((incarnation, _)) = self.locals[i]
            .state
            .as_ref()
            .and_then(|l| l.membership.clone())
        else {
            return;
        };
        let known = self.meta.member_incarnation(i as u32) == Some(incarnation)
            && !self.meta.member_paused(i as u32);
        if !(fits && calm && known && !already_frozen) {
            return;
        }
        self.summary.pauses_watched += 1;
        self.pause_watches.push(PauseWatch {
            local: i,
            incarnation,
            meta_gen: self.meta_gen,
            local_gen: self.locals[i].gen,
            thaw_ms: self.now + for_ms,
            keys: held_by(&self.meta, i as u32),
            paused_seen: false,
        });
    }

    /// Something that voids every watch (a loss burst), or those of local `i` (a partition).
    pub(crate) fn pause_watch_void(&mut self, local: Option<usize>) {
        self.pause_watches
            .retain(|w| local.is_some_and(|i| i != w.local));
    }

    /// Objects that vanished while the meta core handled a remove or an allocation (evictions)
    /// are excused.
    pub(crate) fn pause_watch_excuse(&mut self, before: &[String]) {
        let after: Vec<String> = self
            .meta
            .committed_objects()
            .into_iter()
            .map(|o| o.key)
            .collect();
        for key in before.iter().filter(|k| after.binary_search(k).is_err()) {
            for w in &mut self.pause_watches {
                w.keys.remove(key);
            }
        }
    }

    /// After every step: noted objects are still there; a service back at its incarnation ends
    /// its watch.
    pub(crate) fn pause_watch_check(&mut self) -> Result<(), String> {
        let mut watches = std::mem::take(&mut self.pause_watches);
        let mut err = Ok(());
        watches.retain_mut(|w| {
            let node = &self.locals[w.local];
            if err.is_err() || w.meta_gen != self.meta_gen || w.local_gen != node.gen {
                return false;
            }
            let rank = w.local as u32;
            let held = held_by(&self.meta, rank);
            if let Some((key, place)) = w.keys.iter().find(|(k, p)| held.get(*k) != Some(p)) {
                err = Err(format!(
                    "rank {rank} froze until {} ms, within its grace, and lost committed object \
                     {key:?} (segment {}, offset {}) at {} ms; incarnation {} now {:?}",
                    w.thaw_ms,
                    place.0,
                    place.1,
                    self.now,
                    w.incarnation,
                    self.meta.member_incarnation(rank)
                ));
                return false;
            }
            w.paused_seen |= self.meta.member_paused(rank);
            let back = self.now >= w.thaw_ms
                && self.meta.member_incarnation(rank) == Some(w.incarnation)
                && !self.meta.member_paused(rank);
            if back {
                if w.paused_seen {
                    self.summary.pauses_readmitted += 1;
                    self.summary.pause_objects_kept += w.keys.len() as u64;
                }
                return false;
            }
            if self.now > w.thaw_ms + BACK_WITHIN_MS {
                err = Err(format!(
                    "rank {rank} thawed at {} ms and is not a live member at incarnation {} \
                     {BACK_WITHIN_MS} ms later",
                    w.thaw_ms, w.incarnation
                ));
                return false;
            }
            true
        });
        self.pause_watches = watches;
        err
    }
}
