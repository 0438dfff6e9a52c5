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
}

impl MetaCore {
    /// Every committed object still in the directory, in key order.
    pub fn committed_objects(&self) -> Vec<CommittedView> {
        let mut out: Vec<CommittedView> = self
            .keys
            .iter()
            .filter_map(|(key, oid)| {
                let obj = &self.objects[oid];
                (obj.state == State::Committed && !obj.removed).then(|| CommittedView {
                    key: key.clone(),
                    size: obj.size,
                    replicas: obj.replicas.iter().map(|(r, _)| *r).collect(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// The incarnation the core knows `rank` by, if it is a member.
    pub fn member_incarnation(&self, rank: u32) -> Option<u64> {
        self.members.get(&rank).map(|m| m.incarnation)
    }
}
