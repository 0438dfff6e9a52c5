//! Replica repair in the simulation: a local service's core hands out the meta core's repair
//! tasks; here they run as a copy from the source service's pool (through its epoch fence, as the
//! real service reads over the data path) into the destination's reserved space (checked like any
//! write: it must not touch a committed object or a leased range), verified against the object's
//! checksum, and reported back to the destination's core.

use mmc_controlplane::msg::RepairTask;

use super::{Ev, Sim};

impl Sim {
    /// Schedule the repair tasks local service `i`'s core asked for.
    pub(crate) fn local_repairs(&mut self, i: usize) {
        let gen = self.locals[i].gen;
        let Some(l) = self.locals[i].state.as_mut() else {
            return;
        };
        let tasks = std::mem::take(&mut l.repairs);
        let Some(incarnation) = l.membership.as_ref().map(|m| m.0) else {
            return;
        };
        for task in tasks {
            let delay = self.rng.range(1, 30);
            self.at(
                delay,
                Ev::Repair {
                    local: i,
                    gen,
                    incarnation,
                    task,
                },
            );
        }
    }

    pub(crate) fn run_repair(
        &mut self,
        local: usize,
        gen: u64,
        incarnation: u64,
        task: RepairTask,
    ) {
        if self.locals[local].gen != gen || self.locals[local].state.is_none() {
            return;
        }
        let frozen_until = self.locals[local].frozen_until;
        if frozen_until > self.now {
            let delay = frozen_until - self.now;
            let ev = Ev::Repair {
                local,
                gen,
                incarnation,
                task,
            };
            return self.at(delay, ev);
        }
        let ok = self.repair_copy(local, incarnation, &task);
        self.summary.repairs_run += 1;
        self.summary.repairs_ok += u64::from(ok);
        let l = self.locals[local].state.as_mut().expect("alive");
        l.on_repaired(incarnation, task.token, ok);
    }

    /// Read the source replica, check it, write it here; whether it all held.
    fn repair_copy(&mut self, local: usize, incarnation: u64, task: &RepairTask) -> bool {
        let src = task.source.rank as usize;
        let len = task.len as usize;
        let bytes = {
            let Some(s) = self.locals.get(src).and_then(|n| n.state.as_ref()) else {
                return false;
            };
            if self.locals[src].frozen_until > self.now || self.cut.is_some_and(|(c, _)| c == src) {
                return false;
            }
            if s.fence.enter_detached(task.source.incarnation).is_err() {
                return false;
            }
            let checked = s.check(
                task.source.rank,
                task.source.incarnation,
                task.source_segment,
                task.source_offset,
                task.len,
            );
            let off = task.source_offset as usize;
            let bytes = s.pool.get(off..off + len).map(|b| b.to_vec());
            let held = s.fence.incarnation() == task.source.incarnation;
            s.fence.leave();
            match (checked, bytes, held) {
                (Ok(()), Some(b), true) => b,
                _ => return false,
            }
        };
        if crate::checksum([bytes.as_slice()]) != task.crc {
            // The source object left the directory and its space was reused since the task was
            // handed out (a repair holds no read lease): the checksum catches it, the repair
            // fails. (The directory scans check every committed replica's bytes.)
            self.summary.repairs_mismatched += 1;
            return false;
        }
        let rank = local as u32;
        let l = self.locals[local].state.as_ref().expect("alive");
        if l.fence.enter_detached(incarnation).is_err() {
            return false;
        }
        let checked = l.check(rank, incarnation, task.segment, task.offset, task.len);
        let inc_now = self.placing_incarnation(rank);
        if checked.is_ok() {
            let meta = &self.meta;
            if let Err(e) =
                self.oracle
                    .check_write(meta, self.now, rank, inc_now, task.offset, task.len)
            {
                self.fail(format!("repair {}: {e}", task.token));
            }
            let l = self.locals[local].state.as_mut().expect("alive");
            let off = task.offset as usize;
            l.pool[off..off + len].copy_from_slice(&bytes);
        }
        let l = self.locals[local].state.as_ref().expect("alive");
        let held = l.fence.incarnation() == incarnation;
        l.fence.leave();
        checked.is_ok() && held
    }
}
