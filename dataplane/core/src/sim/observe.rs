//! What the checker learns by watching the meta core's requests and replies: which put version
//! each token stands for, when each version became visible, which ranges are leased, and when a
//! get's lookup was answered.

use mmc_controlplane::msg::{CommitItem, IndexChange, Reply, Request};

use super::oracle::LeaseView;
use super::{Peer, Sim};

impl Sim {
    pub(crate) fn observe_request(&mut self, from: Peer, gen: u64, seq: u64, req: &Request) {
        match req {
            Request::Lookup { .. } => {
                let now = self.now;
                if let Some(run) = self.client_run(from, gen, seq) {
                    run.lookup_at = now;
                }
            }
            Request::Release { leases } => {
                for id in leases {
                    self.oracle.leases.remove(&(self.meta_gen, *id));
                }
            }
            Request::Commit { items } => self.pending_commit = Some(items.clone()),
            // A put into a leased slot (its token was mapped to the put's version when the put
            // took the slot): the reply commits it like a `Commit`.
            Request::PutLeased { items, .. } if items.iter().any(|i| i.ok) => {
                self.pending_commit = Some(
                    items
                        .iter()
                        .map(|i| {
                            let c = CommitItem {
                                token: i.token,
                                ok: i.ok,
                                crc: i.crc,
                            };
                            (i.key.clone(), c)
                        })
                        .collect(),
                );
            }
            _ => {}
        }
    }

    pub(crate) fn observe_reply(&mut self, from: Peer, gen: u64, seq: u64, reply: &Reply) {
        let meta_gen = self.meta_gen;
        let now = self.now;
        match reply {
            Reply::Heartbeat { index_changes, .. } => {
                let resets = index_changes.iter().filter(|c| **c == IndexChange::Reset);
                self.summary.index_resets += resets.count() as u64;
            }
            Reply::Alloc { items, .. } => {
                let Some(run) = self.client_run(from, gen, seq) else {
                    return;
                };
                let learnt: Vec<((u64, u64), (String, u64))> = run
                    .alloc_keys
                    .iter()
                    .zip(items)
                    .filter(|(_, item)| item.code == 0)
                    .map(|(key, item)| {
                        let i = run.keys.iter().position(|k| k == key).expect("own key");
                        ((meta_gen, item.token), (key.clone(), run.versions[i]))
                    })
                    .collect();
                self.oracle.tokens.extend(learnt);
            }
            Reply::Commit { codes } => {
                let items: Vec<(String, CommitItem)> =
                    self.pending_commit.take().unwrap_or_default();
                for ((key, item), code) in items.iter().zip(codes) {
                    if !item.ok || *code != 0 {
                        continue;
                    }
                    match self.oracle.tokens.get(&(meta_gen, item.token)) {
                        Some((k, v)) if k == key => {
                            let v = *v;
                            self.oracle.visible_at.entry(v).or_insert(now);
                        }
                        other => {
                            let what = format!(
                                "commit of {key:?} (token {}) accepted for {other:?}: a token of \
                                 another put or another meta incarnation",
                                item.token
                            );
                            self.fail(what);
                        }
                    }
                }
            }
            Reply::Lookup {
                items,
                services,
                lease_ms,
            } => {
                for item in items.iter().filter(|i| i.code == 0) {
                    let ranges = item
                        .replicas
                        .iter()
                        .filter_map(|r| {
                            let s = services.iter().find(|s| s.rank == r.rank)?;
                            Some(LeaseView {
                                rank: r.rank,
                                incarnation: s.incarnation,
                                offset: r.offset,
                                len: r.len,
                                until_ms: now + lease_ms,
                            })
                        })
                        .collect();
                    self.oracle.leases.insert((meta_gen, item.lease), ranges);
                }
            }
            _ => {}
        }
    }

    fn client_run(
        &mut self,
        from: Peer,
        gen: u64,
        seq: u64,
    ) -> Option<&mut super::client::Running> {
        let Peer::Client(j) = from else { return None };
        let node = &mut self.clients[j];
        if node.gen != gen {
            return None;
        }
        node.state
            .as_mut()?
            .run
            .as_mut()
            .filter(|r| r.seq == seq && seq != 0)
    }
}
