use mmc_controlplane::meta::{MetaCore, MetaParams};
use mmc_controlplane::msg::{Register, SegmentSpec, MEDIA_DRAM};

use super::*;
use crate::fence::FenceWord;

const POOL: u64 = 1 << 20;

fn params() -> LocalParams {
    LocalParams {
        register: Register {
            rank: None,
            create_id: 0,
            host: "h".into(),
            data_endpoint: "127.0.0.1:1".into(),
            shm_endpoint: String::new(),
            segments: vec![SegmentSpec {
                media: MEDIA_DRAM,
                capacity: POOL,
            }],
        },
        heartbeat_ms: 100,
        drain_timeout_ms: 2_000,
        request_timeout_ms: 500,
    }
}

/// A local core wired to a real meta core and a fence word, with a clock the test moves.
struct Rig {
    meta: MetaCore,
    core: LocalCore,
    fence: std::sync::Arc<FenceWord>,
    now: u64,
    /// Requests sent and not yet answered.
    sent: Vec<(u64, Request)>,
    /// Every output, in order.
    log: Vec<LocalOutput>,
    /// Drains asked for and not yet reported.
    draining: Option<u64>,
    /// Offsets of index entries whose bytes no longer match their checksum.
    corrupt: Vec<u64>,
}

/// The meta core's defaults, but a member silent past its timeout is dropped at once (no grace):
/// these tests are about a service the meta service forgot.
fn meta_params() -> MetaParams {
    MetaParams {
        member_grace_ms: 0,
        ..MetaParams::default()
    }
}

impl Rig {
    fn new() -> Rig {
        Rig {
            meta: MetaCore::new(meta_params()),
            core: LocalCore::new(params(), 0),
            fence: std::sync::Arc::new(FenceWord::new()),
            now: 0,
            sent: Vec::new(),
            log: Vec::new(),
            draining: None,
            corrupt: Vec::new(),
        }
    }

    fn apply(&mut self, out: Vec<LocalOutput>) {
        for o in out {
            match &o {
                LocalOutput::SendMeta { id, request } => self.sent.push((*id, request.clone())),
                LocalOutput::CloseFence => self.fence.close(),
                LocalOutput::WaitDrain { until_ms } => self.draining = Some(*until_ms),
                LocalOutput::OpenFence(inc) => self.fence.publish(*inc),
                LocalOutput::Repair(_) => {}
            }
            self.log.push(o);
        }
    }

    fn start(&mut self) {
        let mut out = Vec::new();
        self.core.start(self.now, &mut out);
        self.apply(out);
    }

    /// Deliver every pending request to the meta core and its reply back.
    fn deliver(&mut self) {
        while !self.sent.is_empty() {
            let (id, req) = self.sent.remove(0);
            let reply = self.meta.handle(self.now, req);
            let mut out = Vec::new();
            self.core.on_meta_reply(self.now, id, Ok(reply), &mut out);
            self.apply(out);
        }
    }

    fn tick(&mut self, ms: u64) {
        self.now += ms;
        let mut out = Vec::new();
        self.core.on_timer(self.now, &mut out);
        self.apply(out);
    }

    /// The service stays silent for `ms` while the meta service ticks on (every 100 ms, as its
    /// driver does: one jump would be the meta service's own stall, which drops nobody).
    fn meta_silence(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            self.now = (self.now + 100).min(end);
            self.meta.tick(self.now);
        }
    }

    fn drained(&mut self, left: u64) {
        assert!(self.draining.take().is_some(), "no drain was asked for");
        let mut out = Vec::new();
        // Every entry's bytes are intact unless the test says which are not.
        let bad = self.corrupt.clone();
        let mut verify = |_pool: usize, e: &IndexEntry| !bad.contains(&e.offset);
        self.core.on_drained(self.now, left, &mut verify, &mut out);
        self.apply(out);
    }

    fn incarnation(&self) -> u64 {
        self.core.membership().expect("a member").incarnation
    }
}

#[test]
fn registers_opens_the_fence_and_heartbeats() {
    let mut r = Rig::new();
    assert!(r.core.membership().is_none());
    r.start();
    assert_eq!(
        r.fence.incarnation(),
        0,
        "closed until the meta service answers"
    );
    r.deliver();
    let inc = r.incarnation();
    assert_eq!(r.fence.incarnation(), inc);
    assert_eq!(r.log.last(), Some(&LocalOutput::OpenFence(inc)));
    for _ in 0..20 {
        r.tick(100);
        assert!(
            matches!(r.sent.last(), Some((_, Request::Heartbeat { .. }))),
            "a heartbeat per period"
        );
        r.deliver();
    }
    assert_eq!(
        r.incarnation(),
        inc,
        "acknowledged heartbeats keep the incarnation"
    );
}

#[test]
fn a_forgotten_incarnation_closes_drains_then_registers_again() {
    let mut r = Rig::new();
    r.start();
    r.deliver();
    let old = r.incarnation();
    let fence = r.fence.clone();
    let stale_copy = fence.enter(old).expect("open");
    // The meta service declares us dead (we were frozen past the member timeout).
    r.meta_silence(10_000);
    r.tick(0);
    r.deliver();
    assert_eq!(r.fence.incarnation(), 0, "closed before registering again");
    assert!(r.core.membership().is_none());
    assert!(
        r.sent.is_empty(),
        "nothing is registered before the drain ends"
    );
    assert!(r.core.check(0, old, &[], &[POOL]).is_err());
    assert_eq!(
        r.fence.inflight(),
        1,
        "the copy that entered is still counted"
    );
    drop(stale_copy);
    r.drained(0);
    // It was a member: it rejoins with its (here empty) index; this meta run dropped it, so it
    // is registered afresh.
    assert!(matches!(r.sent.last(), Some((_, Request::Rejoin(j))) if j.last && j.previous == old));
    r.deliver();
    let new = r.incarnation();
    assert_ne!(new, old);
    assert_eq!(r.fence.incarnation(), new);
    let tail: Vec<_> = r
        .log
        .iter()
        .filter(|o| !matches!(o, LocalOutput::SendMeta { .. }))
        .cloned()
        .collect();
    assert_eq!(
        tail,
        vec![
            LocalOutput::OpenFence(old),
            LocalOutput::CloseFence,
            LocalOutput::WaitDrain {
                until_ms: r.now + 2_000
            },
            LocalOutput::OpenFence(new),
        ]
    );
}

#[test]
fn a_restarted_meta_reissuing_the_same_incarnation_is_not_opened() {
    let mut r = Rig::new();
    r.start();
    r.deliver();
    let old = r.incarnation();
    let segment = r.core.membership().unwrap().segments[0];
    r.meta = MetaCore::new(MetaParams::default());
    r.tick(100);
    r.deliver();
    r.drained(0);
    r.deliver();
    let new = r.core.membership().unwrap().clone();
    assert_eq!(old, 1, "a fresh meta service starts at 1");
    assert_ne!(new.incarnation, old, "the reissued 1 was never opened");
    assert_eq!(r.fence.incarnation(), new.incarnation);
    let opened_old = r.log.iter().filter(|o| **o == LocalOutput::OpenFence(old));
    assert_eq!(
        opened_old.count(),
        1,
        "only the first meta service's 1 was opened"
    );
    let piece = Piece {
        segment,
        offset: 0,
        len: 1,
    };
    assert!(r.core.check(new.rank, old, &[piece], &[POOL]).is_err());
}

#[test]
fn failed_or_lost_registrations_back_off_and_retry() {
    let mut r = Rig::new();
    r.start();
    let (id, _) = r.sent.remove(0);
    let mut out = Vec::new();
    r.core
        .on_meta_reply(r.now, id, Err(Code::NotConnectMeta), &mut out);
    assert!(out.is_empty(), "no retry at once");
    let retry_at = r.core.next_timer_ms().expect("a back-off timer");
    assert!(retry_at > r.now);
    r.tick(retry_at - r.now);
    assert_eq!(r.sent.len(), 1, "retried after the back-off");
    // This one is lost: it times out, backs off longer, and a late reply to it is ignored.
    let (lost, _) = r.sent.remove(0);
    r.tick(500);
    let second = r.core.next_timer_ms().unwrap() - r.now;
    assert!(second > retry_at, "the back-off grows");
    let mut out = Vec::new();
    r.core
        .on_meta_reply(r.now, lost, Ok(Reply::Ack { code: 0 }), &mut out);
    assert!(
        out.is_empty() && r.core.membership().is_none(),
        "stale reply ignored"
    );
    r.tick(second);
    r.deliver();
    assert!(r.core.membership().is_some());
}

#[test]
fn check_refuses_other_incarnations_segments_and_ranges() {
    let mut r = Rig::new();
    r.start();
    r.deliver();
    let m = r.core.membership().unwrap().clone();
    let p = |segment, offset, len| Piece {
        segment,
        offset,
        len,
    };
    let seg = m.segments[0];
    let pools = [POOL];
    assert_eq!(
        r.core
            .check(m.rank, m.incarnation, &[p(seg, 0, POOL)], &pools),
        Ok(())
    );
    let refused = |rank, inc, piece| r.core.check(rank, inc, &[piece], &pools).unwrap_err();
    assert_eq!(
        refused(m.rank, m.incarnation + 1, p(seg, 0, 1)).code(),
        Code::NotConnectLocal
    );
    assert_eq!(
        refused(m.rank + 1, m.incarnation, p(seg, 0, 1)).code(),
        Code::NotConnectLocal
    );
    assert_eq!(
        refused(m.rank, m.incarnation, p(seg + 1, 0, 1)).code(),
        Code::LinkNotFound
    );
    assert_eq!(
        refused(m.rank, m.incarnation, p(seg, POOL, 1)).code(),
        Code::InvalidParam
    );
    assert_eq!(
        refused(m.rank, m.incarnation, p(seg, u64::MAX, 2)).code(),
        Code::InvalidParam
    );
    assert!(refused(m.rank, m.incarnation + 1, p(seg, 0, 1))
        .to_string()
        .contains("fence"));
}

#[test]
fn stop_unregisters_and_closes() {
    let mut r = Rig::new();
    r.start();
    r.deliver();
    let mut out = Vec::new();
    r.core.stop(r.now, &mut out);
    r.apply(out);
    assert!(matches!(
        r.sent.last(),
        Some((_, Request::Unregister { .. }))
    ));
    assert_eq!(r.fence.incarnation(), 0);
    assert!(r.core.stopped() && r.core.next_timer_ms().is_none());
    r.deliver();
    r.tick(10_000);
    assert!(r.sent.is_empty(), "a stopped core sends nothing");
}

/// Commit `keys` (of `size` bytes) on this service through the meta core, as clients do.
fn put_here(r: &mut Rig, keys: &[&str], size: u64) {
    let rank = r.core.membership().expect("a member").rank;
    let alloc = msg::AllocRequest {
        writer_rank: Some(rank),
        client_id: 0,
        media: MEDIA_DRAM,
        policy: msg::NATIVE_AFFINITY,
        replicas: 1,
        preferred: vec![],
        items: keys.iter().map(|k| (k.to_string(), size)).collect(),
    };
    let Reply::Alloc { items, .. } = r.meta.handle(r.now, Request::Alloc(alloc)) else {
        panic!("alloc refused");
    };
    let commit = keys
        .iter()
        .zip(items)
        .map(|(k, item)| {
            assert_eq!(item.code, 0);
            let ok = true;
            (
                k.to_string(),
                msg::CommitItem {
                    token: item.token,
                    ok,
                    crc: 0,
                },
            )
        })
        .collect();
    r.meta.handle(r.now, Request::Commit { items: commit });
}

#[test]
fn heartbeats_keep_the_index_of_what_the_service_holds() {
    let mut r = Rig::new();
    r.meta = MetaCore::new(MetaParams {
        index_batch_max: 2,
        ..meta_params()
    });
    r.start();
    r.deliver();
    let segment = r.core.membership().unwrap().segments[0];
    put_here(&mut r, &["a", "b", "c"], 1000);
    // This heartbeat's reply is lost: its changes come again with the next one.
    r.tick(100);
    let (_, heartbeat) = r.sent.pop().expect("a heartbeat");
    assert!(matches!(
        r.meta.handle(r.now, heartbeat),
        Reply::Heartbeat { .. }
    ));
    r.tick(500);
    assert_eq!(r.sent.len(), 1, "timed out, and the next heartbeat sent");
    r.deliver();
    assert_eq!(r.core.index().len(), 2, "a batch of two");
    // More changes wait: the next heartbeat is due at once.
    assert_eq!(r.core.next_timer_ms(), Some(r.now));
    r.tick(0);
    r.deliver();
    let index = r.core.index();
    assert_eq!(index.entries().keys().collect::<Vec<_>>(), ["a", "b", "c"]);
    assert!(index
        .entries()
        .values()
        .all(|e| e.segment == segment && e.len == 1000));
    assert_eq!(index.applied_seq(), 3);
    // A remove reaches the index on the next heartbeat, which also acknowledges it.
    r.meta.handle(
        r.now,
        Request::Remove {
            keys: vec!["b".into()],
        },
    );
    r.tick(100);
    r.deliver();
    assert_eq!(
        r.core.index().entries().keys().collect::<Vec<_>>(),
        ["a", "c"]
    );
    r.tick(100);
    assert!(matches!(
        r.sent.last(),
        Some((
            _,
            Request::Heartbeat {
                index_seq: 4,
                index_resync: false,
                ..
            }
        ))
    ));
    // This meta run dropped the service (past its grace): it rejoins, and the meta service
    // resets its index, since the objects were dropped.
    r.meta_silence(10_000);
    r.deliver();
    assert_eq!(r.core.index().len(), 2, "kept while registering again");
    r.drained(0);
    r.deliver();
    assert!(r.core.membership().is_some());
    assert_eq!(r.core.index().applied_seq(), 0);
    r.tick(100);
    r.deliver();
    assert!(r.core.index().is_empty(), "reset by the meta service");
}

/// The meta service restarts (a new core, a later epoch): the service rejoins with its index,
/// in chunks, and the new directory holds its objects again, at the same places, under a new
/// incarnation; an entry whose bytes no longer match is dropped before the rejoin.
#[test]
fn after_a_meta_restart_the_service_rejoins_with_its_objects() {
    let mut r = Rig::new();
    r.start();
    r.deliver();
    let old = r.incarnation();
    // More objects than one chunk carries.
    let n = msg::INDEX_CHANGES_MAX + 100;
    let keys: Vec<String> = (0..n).map(|i| format!("k{i:05}")).collect();
    let keys: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
    for batch in keys.chunks(1000) {
        put_here(&mut r, batch, 64);
    }
    for _ in 0..4 {
        r.tick(100);
        r.deliver();
    }
    assert_eq!(r.core.index().len(), n);
    let damaged = r.core.index().get("k00007").unwrap().offset;
    r.corrupt = vec![damaged];
    let before = r.meta.committed_objects();
    // kill -9 of the meta service, and a new one a second later.
    r.now += 1_000;
    r.meta = MetaCore::new(MetaParams {
        epoch: 5,
        ..meta_params()
    });
    r.tick(100);
    r.deliver();
    assert_eq!(r.fence.incarnation(), 0, "closed before the rejoin");
    r.drained(0);
    let mut chunks = 0;
    while let Some((_, Request::Rejoin(j))) = r.sent.first() {
        assert_eq!((j.chunk, j.previous), (chunks, old));
        chunks += 1;
        let (id, req) = r.sent.remove(0);
        let reply = r.meta.handle(r.now, req);
        let mut out = Vec::new();
        r.core.on_meta_reply(r.now, id, Ok(reply), &mut out);
        r.apply(out);
    }
    assert_eq!(chunks, 2);
    let new = r.incarnation();
    assert!(new > old && r.fence.incarnation() == new);
    assert_eq!(r.core.index().len(), n - 1, "the damaged entry was dropped");
    let after = r.meta.committed_objects();
    assert_eq!(after.len(), n - 1);
    let segment = r.core.membership().unwrap().segments[0];
    for (b, a) in before.iter().filter(|o| o.key != "k00007").zip(&after) {
        assert_eq!(
            (&b.key, b.size, b.version, b.crc),
            (&a.key, a.size, a.version, a.crc)
        );
        assert_eq!(a.replicas[0].offset, b.replicas[0].offset, "same place");
        assert_eq!(a.replicas[0].segment, segment);
    }
    // The damaged entry's space is free again; new puts are placed around the rebuilt ones.
    r.now += 3_000;
    put_here(&mut r, &["fresh"], 64);
    r.meta.check_invariants();
    assert_eq!(r.meta.committed_objects().len(), n);
}
