//! The rebuild invariant: a restarted meta core rebuilds its directory from what the services
//! report. When a rejoin's last chunk is answered `Registered`, every entry the service reported
//! is in the directory under its version or a later one (or a put of the key is pending), unless
//! the service's previous incarnation was this run's own (the run dropped it: its index is
//! stale). Counts the objects rebuilt and rejoins checked.

use std::collections::HashMap;

use mmc_controlplane::msg::{Rejoin, RejoinEntry, Reply};

use super::Sim;

/// Entries of the rejoins under way, by the previous incarnation that names each.
pub(crate) type Rejoins = HashMap<u64, Vec<RejoinEntry>>;

impl Sim {
    /// Note a rejoin chunk before the meta core handles it.
    pub(crate) fn rejoin_sent(&mut self, j: &Rejoin) {
        let entries = self.rejoins.entry(j.previous).or_default();
        if j.chunk == 0 {
            entries.clear();
        }
        entries.extend(j.entries.iter().cloned());
    }

    /// Check the directory right after the meta core answered a rejoin's last chunk.
    pub(crate) fn rejoin_answered(&mut self, j: &Rejoin, reply: &Reply) {
        if !j.last {
            return;
        }
        let entries = self.rejoins.remove(&j.previous).unwrap_or_default();
        if !matches!(reply, Reply::Registered { .. }) || j.previous >= self.meta.first_incarnation()
        {
            return;
        }
        self.summary.rejoins += 1;
        for e in &entries {
            match self.meta.key_version(&e.key) {
                Some((v, true)) if v == e.version => self.summary.objects_rebuilt += 1,
                Some((v, committed)) if v > e.version || !committed => {}
                other => {
                    return self.fail(format!(
                        "rejoin of {}: {:?} version {} is not in the rebuilt directory ({other:?})",
                        j.previous, e.key, e.version
                    ))
                }
            }
        }
    }
}
