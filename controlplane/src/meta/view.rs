//! A read-only view of the core for checkers (the whole-cluster simulator compares what the core
//! believes against the bytes in the local services' pools).

use super::{MetaCore, State};
use crate::msg::Replica;

/// One committed, visible object.
#[derive(Clone, Debug, PartialEq)]
pub struct CommittedView {
    pub key: String,
    pub size: u64,
    pub replicas: Vec<Replica>,
    pub version: u64,
    pub crc: u32,
    pub want: u16,
}

impl MetaCore {
    /// Every committed object still in the directory, in key order, with all its replicas: those
    /// on paused members too (readers are offered only the live ones).
    pub fn committed_objects(&self) -> Vec<CommittedView> {
        let mut out: Vec<CommittedView> = self
            .keys
            .oids(&self.objects)
            .filter_map(|oid| {
                let obj = &self.objects[&oid];
                (obj.state == State::Committed && !obj.removed).then(|| CommittedView {
                    key: obj.key.to_string(),
                    size: obj.size,
                    replicas: obj.replicas.iter().map(|(r, _)| *r).collect(),
                    version: obj.version,
                    crc: obj.crc,
                    want: obj.want,
                })
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// The version of the object under `key`, and whether it is committed (`false`: a put of it
    /// is pending).
    pub fn key_version(&self, key: &str) -> Option<(u64, bool)> {
        let obj = &self.objects[&self.keys.get(&self.objects, key)?];
        Some((obj.version, obj.state == State::Committed))
    }

    /// The first incarnation this run hands out: a larger one is this run's.
    pub fn first_incarnation(&self) -> u64 {
        (self.params.epoch << super::INCARNATION_EPOCH_SHIFT) + 1
    }

    /// The incarnation the core knows `rank` by, if it is a member (live or paused).
    pub fn member_incarnation(&self, rank: u32) -> Option<u64> {
        let member = self.members.get(&rank).or_else(|| self.paused.get(&rank));
        member.map(|m| m.incarnation)
    }

    /// Whether `rank` is a paused member: silent past its timeout, within its grace.
    pub fn member_paused(&self, rank: u32) -> bool {
        self.paused.contains_key(&rank)
    }
}
