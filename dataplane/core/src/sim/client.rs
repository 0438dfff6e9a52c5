//! Simulated clients: each runs the real client operations ([`crate::client`]) one at a time,
//! with random keys, sizes and replica counts, over the simulated network; same-host copies go
//! through the service's fence word in two events.

use mmc_controlplane::msg::{Reply, Request};
use mmc_controlplane::{Error, Result};

use super::rng::{pattern, Rng};
use super::{CopyReq, Ev, Peer, Sim};
use crate::client::{Action, Dir, GetOp, MetaKind, MetaOp, PutOp, PutOptions, Transfer};

pub(crate) enum Op {
    Put(PutOp),
    Get(GetOp),
    Meta(MetaOp),
}

impl Op {
    fn poll(&mut self, now: u64) -> Action {
        match self {
            Op::Put(o) => o.poll(now),
            Op::Get(o) => o.poll(now),
            Op::Meta(o) => o.poll(now),
        }
    }

    fn on_meta(&mut self, now: u64, reply: Result<Reply>) {
        match self {
            Op::Put(o) => o.on_meta(now, reply),
            Op::Get(o) => o.on_meta(now, reply),
            Op::Meta(o) => o.on_meta(now, reply),
        }
    }

    fn transfers(&self) -> &[Transfer] {
        match self {
            Op::Put(o) => o.transfers(),
            Op::Get(o) => o.transfers(),
            Op::Meta(_) => &[],
        }
    }

    fn on_transfers(&mut self, now: u64, outcomes: Vec<Result<()>>) {
        match self {
            Op::Put(o) => o.on_transfers(now, outcomes),
            Op::Get(o) => o.on_transfers(now, outcomes),
            Op::Meta(_) => unreachable!("metadata calls move no bytes"),
        }
    }
}

pub(crate) struct Running {
    pub op: Op,
    /// The meta request or transfer batch now awaited.
    pub seq: u64,
    pub started: u64,
    pub deadline: u64,
    pub keys: Vec<String>,
    pub values: Vec<Vec<u8>>,
    pub versions: Vec<u64>,
    pub bufs: Vec<Vec<u8>>,
    pub outcomes: Vec<Option<Result<()>>>,
    /// When the meta core handled this get's lookup.
    pub lookup_at: u64,
    /// Keys of the last alloc request, in order (to map tokens to versions).
    pub alloc_keys: Vec<String>,
}

pub(crate) struct SimClient {
    pub host: u32,
    pub rng: Rng,
    pub run: Option<Running>,
}

impl SimClient {
    pub fn new(_id: usize, host: u32, seed: u64) -> SimClient {
        SimClient {
            host,
            rng: Rng::new(seed),
            run: None,
        }
    }
}

fn local_error(rank: u32, why: &str) -> Error {
    Error::LocalUnreachable {
        endpoint: format!("rank {rank}"),
        reason: why.to_string(),
    }
}

impl Sim {
    fn new_op(&mut self, j: usize) -> Running {
        let now = self.now;
        let timeout = self.cfg.timeout_ms;
        let nkeys = self.cfg.keys;
        let c = self.clients[j].state.as_mut().expect("alive");
        let n = c.rng.range(1, 3) as usize;
        let mut keys: Vec<String> = Vec::with_capacity(n);
        while keys.len() < n {
            let k = format!("k{}", c.rng.pick(nkeys));
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        let roll = c.rng.range(0, 99);
        let mut run = Running {
            op: Op::Meta(MetaOp::new(MetaKind::Exist, &keys, now, timeout).expect("valid")),
            seq: 0,
            started: now,
            deadline: now + timeout,
            keys,
            values: Vec::new(),
            versions: Vec::new(),
            bufs: Vec::new(),
            outcomes: Vec::new(),
            lookup_at: 0,
            alloc_keys: Vec::new(),
        };
        match roll {
            0..=44 => {
                let replicas = if c.rng.chance(300_000) { 2 } else { 1 };
                let opts = PutOptions {
                    replicas,
                    ..PutOptions::default()
                };
                for k in &run.keys {
                    let size = if c.rng.chance(50_000) {
                        c.rng.range(12_000, 30_000)
                    } else {
                        c.rng.range(1, 4096)
                    } as usize;
                    self.next_version += 1;
                    let v = self.next_version;
                    run.values.push(pattern(k, v, size));
                    run.versions.push(v);
                    self.oracle
                        .attempts
                        .entry(k.clone())
                        .or_default()
                        .push((v, size));
                }
                let sizes: Vec<u64> = run.values.iter().map(|v| v.len() as u64).collect();
                run.op = Op::Put(
                    PutOp::new(&run.keys, &sizes, &opts, None, now, timeout).expect("valid batch"),
                );
            }
            45..=79 => {
                let caps: Vec<u64> = run
                    .keys
                    .iter()
                    .map(|_| if c.rng.chance(50_000) { 16 } else { u64::MAX })
                    .collect();
                run.bufs = run.keys.iter().map(|_| Vec::new()).collect();
                run.op = Op::Get(GetOp::new(&run.keys, &caps, None, now, timeout).expect("valid"));
            }
            80..=89 => {}
            _ => {
                run.op =
                    Op::Meta(MetaOp::new(MetaKind::Remove, &run.keys, now, timeout).expect("valid"))
            }
        }
        run
    }

    pub(crate) fn client_wake(&mut self, j: usize, gen: u64) {
        if self.clients[j].gen != gen || self.clients[j].state.is_none() {
            return;
        }
        let c = self.clients[j].state.as_mut().expect("alive");
        if c.run.is_none() {
            let run = self.new_op(j);
            self.clients[j].state.as_mut().expect("alive").run = Some(run);
        }
        self.drive(j);
    }

    /// Poll the client's operation and carry out what it asks, until it waits.
    fn drive(&mut self, j: usize) {
        let gen = self.clients[j].gen;
        loop {
            let now = self.now;
            let c = self.clients[j].state.as_mut().expect("alive");
            let run = c.run.as_mut().expect("an operation runs");
            let deadline = run.deadline;
            match run.op.poll(now) {
                Action::Meta(req) => {
                    let seq = self.seq();
                    let run = self.run_mut(j);
                    run.seq = seq;
                    if let Request::Alloc(a) = &req {
                        run.alloc_keys = a.items.iter().map(|(k, _)| k.clone()).collect();
                    }
                    self.send(Ev::MetaReq {
                        from: Peer::Client(j),
                        gen,
                        seq,
                        req,
                    });
                    self.at(deadline - now, Ev::ClientWake { client: j, gen });
                    return;
                }
                Action::MetaOneway(req) => {
                    self.send(Ev::MetaReq {
                        from: Peer::Client(j),
                        gen,
                        seq: 0,
                        req,
                    });
                }
                Action::Transfer => {
                    let seq = self.seq();
                    let n = {
                        let run = self.run_mut(j);
                        run.seq = seq;
                        run.outcomes = (0..run.op.transfers().len()).map(|_| None).collect();
                        run.outcomes.len()
                    };
                    for idx in 0..n {
                        self.start_transfer(j, gen, seq, idx);
                    }
                    self.at(deadline - now, Ev::ClientWake { client: j, gen });
                    if !self.try_complete(j) {
                        return;
                    }
                }
                Action::Sleep { until_ms } => {
                    self.at(until_ms - now, Ev::ClientWake { client: j, gen });
                    return;
                }
                Action::Wait { .. } => return,
                Action::Done => return self.finish(j),
            }
        }
    }

    fn run_mut(&mut self, j: usize) -> &mut Running {
        self.clients[j]
            .state
            .as_mut()
            .expect("alive")
            .run
            .as_mut()
            .expect("running")
    }

    /// Feed the outcomes once every transfer has one; true if fed.
    fn try_complete(&mut self, j: usize) -> bool {
        let now = self.now;
        let run = self.run_mut(j);
        if run.outcomes.iter().any(|o| o.is_none()) {
            return false;
        }
        let outcomes = std::mem::take(&mut run.outcomes)
            .into_iter()
            .map(|o| o.expect("checked"))
            .collect();
        run.op.on_transfers(now, outcomes);
        true
    }

    fn start_transfer(&mut self, j: usize, gen: u64, seq: u64, idx: usize) {
        let canary = self.cfg.canary;
        let run = self.run_mut(j);
        let t = run.op.transfers()[idx];
        let data = (t.dir == Dir::Write).then(|| {
            let v = &run.values[t.item];
            v[t.item_offset as usize..(t.item_offset + t.len) as usize].to_vec()
        });
        let local = t.fence.rank as usize;
        let host = self.clients[j].state.as_ref().expect("alive").host;
        let Some(node) = self.locals.get(local) else {
            self.run_mut(j).outcomes[idx] = Some(Err(local_error(t.fence.rank, "no such rank")));
            return;
        };
        let local_gen = node.gen;
        let Some(l) = node.state.as_ref() else {
            // A same-host client sees the socket close; a remote one gets connection refused.
            self.run_mut(j).outcomes[idx] = Some(Err(local_error(t.fence.rank, "service is gone")));
            return;
        };
        if l.host != host {
            self.send(Ev::DataReq(CopyReq {
                client: j,
                gen,
                local,
                local_gen,
                seq,
                idx,
                t,
                data,
            }));
            return;
        }
        // Same host: enter the service's fence word, copy later.
        if !canary {
            if let Err(e) = l.fence.enter_detached(t.fence.incarnation) {
                self.run_mut(j).outcomes[idx] =
                    Some(Err(local_error(t.fence.rank, &e.to_string())));
                return;
            }
        }
        // A copy takes about 1 ms per KiB here, and now and then its thread is descheduled for a
        // while (but less than the service's drain bound: a copy that outlives the drain is one
        // whose client died, and a dead client writes nothing).
        let mut delay = self.rng.range(0, 2) + t.len / 1024;
        if self.rng.chance(50_000) {
            delay += self.rng.range(20, 80);
        }
        self.at(
            delay,
            Ev::ShmEnd(CopyReq {
                client: j,
                gen,
                local,
                local_gen,
                seq,
                idx,
                t,
                data,
            }),
        );
    }

    /// The incarnation under which the meta core places objects in `rank`'s pool now, if the
    /// service runs it (else writes there cannot touch what the directory describes).
    fn placing_incarnation(&self, rank: u32) -> Option<u64> {
        let inc = self.meta.member_incarnation(rank)?;
        let l = self.locals.get(rank as usize)?.state.as_ref()?;
        match &l.membership {
            Some((i, _)) if *i == inc => Some(inc),
            _ => None,
        }
    }

    /// Apply one copy at local `local` (fence already entered unless `canary`); the bytes read.
    fn copy(
        &mut self,
        local: usize,
        t: &Transfer,
        data: Option<Vec<u8>>,
    ) -> Result<Option<Vec<u8>>> {
        let canary = self.cfg.canary;
        let inc_now = self.placing_incarnation(t.fence.rank);
        let l = self.locals[local].state.as_ref().expect("alive");
        let check = if canary {
            l.check(
                t.fence.rank,
                l.membership.as_ref().map_or(0, |m| m.0),
                t.fence.segment,
                t.offset,
                t.len,
            )
            .or_else(|e| {
                if l.membership.is_some() && (t.offset + t.len) as usize <= l.pool.len() {
                    Ok(())
                } else {
                    Err(e)
                }
            })
        } else {
            l.check(
                t.fence.rank,
                t.fence.incarnation,
                t.fence.segment,
                t.offset,
                t.len,
            )
        };
        if self.trace {
            eprintln!(
                "{:>6} {:>6} copy at local {local}: {t:?} -> {check:?}",
                self.step, self.now
            );
        }
        check?;
        let range = t.offset as usize..(t.offset + t.len) as usize;
        match data {
            Some(bytes) => {
                let meta = &self.meta;
                if let Err(e) =
                    self.oracle
                        .check_write(meta, self.now, t.fence.rank, inc_now, t.offset, t.len)
                {
                    self.fail(e);
                }
                let l = self.locals[local].state.as_mut().expect("alive");
                l.pool[range].copy_from_slice(&bytes);
                Ok(None)
            }
            None => Ok(Some(l.pool[range].to_vec())),
        }
    }

    pub(crate) fn serve_data(&mut self, c: CopyReq) {
        let CopyReq {
            client,
            gen,
            local,
            local_gen,
            seq,
            idx,
            t,
            data,
        } = c;
        let out = if self.locals[local].gen != local_gen || self.locals[local].state.is_none() {
            Err(local_error(t.fence.rank, "connection reset"))
        } else if self.cfg.canary {
            self.copy(local, &t, data)
        } else {
            let entered = self.locals[local]
                .state
                .as_ref()
                .expect("alive")
                .fence
                .enter_detached(t.fence.incarnation);
            match entered {
                Err(e) => Err(local_error(t.fence.rank, &e.to_string())),
                Ok(()) => {
                    let out = self.copy(local, &t, data);
                    let l = self.locals[local].state.as_ref().expect("alive");
                    let held = l.fence.incarnation() == t.fence.incarnation;
                    l.fence.leave();
                    if held {
                        out
                    } else {
                        Err(local_error(t.fence.rank, "fence moved during the copy"))
                    }
                }
            }
        };
        self.send(Ev::DataRep {
            client,
            gen,
            seq,
            idx,
            out,
        });
    }

    pub(crate) fn shm_end(&mut self, c: CopyReq) {
        let CopyReq {
            client,
            gen,
            local,
            local_gen,
            seq,
            idx,
            t,
            data,
        } = c;
        if self.locals[local].gen != local_gen || self.locals[local].state.is_none() {
            // The service died: its word went with it.
            return self.client_transfer_done(
                client,
                gen,
                seq,
                idx,
                Err(local_error(t.fence.rank, "service is gone")),
            );
        }
        if self.clients[client].gen != gen {
            // The client died mid-copy: its count stays in the word (the drain times out).
            return;
        }
        let out = self.copy(local, &t, data);
        let out = if self.cfg.canary {
            out
        } else {
            let l = self.locals[local].state.as_ref().expect("alive");
            let held = l.fence.incarnation() == t.fence.incarnation;
            l.fence.leave();
            if held {
                out
            } else {
                Err(local_error(t.fence.rank, "fence moved during the copy"))
            }
        };
        self.client_transfer_done(client, gen, seq, idx, out);
    }

    pub(crate) fn client_transfer_done(
        &mut self,
        j: usize,
        gen: u64,
        seq: u64,
        idx: usize,
        out: Result<Option<Vec<u8>>>,
    ) {
        if self.clients[j].gen != gen || self.clients[j].state.is_none() {
            return;
        }
        let Some(run) = self.clients[j].state.as_mut().expect("alive").run.as_mut() else {
            return;
        };
        if run.seq != seq || idx >= run.outcomes.len() || run.outcomes[idx].is_some() {
            return;
        }
        let t = run.op.transfers()[idx];
        run.outcomes[idx] = Some(out.map(|bytes| {
            if let Some(bytes) = bytes {
                let buf = &mut run.bufs[t.item];
                let end = (t.item_offset + t.len) as usize;
                if buf.len() < end {
                    buf.resize(end, 0);
                }
                buf[t.item_offset as usize..end].copy_from_slice(&bytes);
            }
        }));
        if self.try_complete(j) {
            self.drive(j);
        }
    }

    pub(crate) fn client_meta_reply(&mut self, j: usize, gen: u64, seq: u64, reply: Result<Reply>) {
        if self.clients[j].gen != gen || self.clients[j].state.is_none() {
            return;
        }
        let now = self.now;
        let Some(run) = self.clients[j].state.as_mut().expect("alive").run.as_mut() else {
            return;
        };
        if run.seq != seq {
            return;
        }
        run.seq = 0;
        run.op.on_meta(now, reply);
        self.drive(j);
    }

    fn finish(&mut self, j: usize) {
        let now = self.now;
        let gen = self.clients[j].gen;
        let c = self.clients[j].state.as_mut().expect("alive");
        let run = c.run.take().expect("running");
        let think = c.rng.range(0, 5);
        self.summary.ops += 1;
        if now > run.deadline {
            self.fail(format!(
                "an operation started at {} ms outlived its {} ms deadline (done at {now} ms)",
                run.started, run.deadline
            ));
        }
        match run.op {
            Op::Put(op) => {
                if let Ok(results) = op.results() {
                    self.summary.ops_ok += results.iter().any(|r| r.is_ok()) as u64;
                }
            }
            Op::Get(op) => {
                if let Ok(results) = op.results() {
                    for (i, r) in results.iter().enumerate() {
                        if let Ok(size) = r {
                            let bytes = &run.bufs[i][..*size as usize];
                            self.summary.gets_verified += 1;
                            if let Err(e) =
                                self.oracle.check_get(&run.keys[i], bytes, run.lookup_at)
                            {
                                self.fail(e);
                            }
                        }
                    }
                    self.summary.ops_ok += results.iter().any(|r| r.is_ok()) as u64;
                }
            }
            Op::Meta(op) => {
                if let Ok(results) = op.results() {
                    self.summary.ops_ok += results.iter().any(|r| r.is_ok()) as u64;
                }
            }
        }
        self.at(think, Ev::ClientWake { client: j, gen });
    }
}
