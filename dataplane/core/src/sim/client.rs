//! Simulated clients: each runs the real client operations ([`crate::client`]) one at a time,
//! with random keys, sizes and replica counts, over the simulated network; their transfers go
//! through the simulator's transport backend ([`super::transport`]), behind the same seam as the
//! real client's.

use mmc_controlplane::msg::{Reply, Request};
use mmc_controlplane::Result;

use super::rng::{pattern, Rng};
use super::transport::SimTransport;
use super::{Ev, Peer, Sim};
use crate::client::{
    Action, Dir, GetOp, Leased, LeasedPutOp, MetaKind, MetaOp, PutOp, PutOptions, SlotClass,
    SlotPool, Transfer,
};
use crate::transport::{read_jobs, write_jobs, Completions, Transport};

pub(crate) enum Op {
    Put(PutOp),
    Get(GetOp),
    Meta(MetaOp),
    /// A small put into a leased slot (one `PutLeased`).
    Leased(LeasedPutOp, SlotClass),
    /// Slots asked for (`LeaseSlots`): the request until sent, the reply once answered.
    Refill {
        class: SlotClass,
        asked: u64,
        deadline: u64,
        request: Option<Request>,
        reply: Option<Result<Reply>>,
    },
}

impl Op {
    fn poll(&mut self, now: u64) -> Action {
        match self {
            Op::Put(o) => o.poll(now),
            Op::Get(o) => o.poll(now),
            Op::Meta(o) => o.poll(now),
            Op::Leased(o, _) => o.poll(now),
            Op::Refill {
                request,
                reply,
                deadline,
                ..
            } => match (request.take(), &reply) {
                (Some(r), _) => Action::Meta(r),
                (None, Some(_)) => Action::Done,
                (None, None) if now >= *deadline => {
                    // No answer in time (the meta service restarted, or the network lost it).
                    *reply = Some(Err(mmc_controlplane::Error::Timeout {
                        ms: 0,
                        what: "slot lease".into(),
                    }));
                    Action::Done
                }
                (None, None) => Action::Wait {
                    deadline_ms: *deadline,
                },
            },
        }
    }

    fn on_meta(&mut self, now: u64, request: Request, reply: Result<Reply>) {
        match self {
            Op::Put(o) => o.on_meta(now, request, reply),
            Op::Get(o) => o.on_meta(now, request, reply),
            Op::Meta(o) => o.on_meta(now, request, reply),
            Op::Leased(o, _) => o.on_meta(now, request, reply),
            Op::Refill { reply: r, .. } => *r = Some(reply),
        }
    }

    pub(crate) fn transfers(&self) -> &[Transfer] {
        match self {
            Op::Put(o) => o.transfers(),
            Op::Get(o) => o.transfers(),
            Op::Leased(o, _) => o.transfers(),
            Op::Meta(_) | Op::Refill { .. } => &[],
        }
    }

    fn on_transfers(&mut self, now: u64, outcomes: Vec<Result<()>>) {
        match self {
            Op::Put(o) => o.on_transfers(now, outcomes),
            Op::Get(o) => o.on_transfers(now, outcomes),
            Op::Leased(o, _) => o.on_transfers(now, &outcomes),
            Op::Meta(_) | Op::Refill { .. } => unreachable!("metadata calls move no bytes"),
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
    /// The outcomes of the transfer batch now awaited.
    pub outcomes: Completions,
    /// When the meta core handled this get's lookup.
    pub lookup_at: u64,
    /// Keys of the last alloc request, in order (to map tokens to versions).
    pub alloc_keys: Vec<String>,
    /// The meta request in flight, handed back to the operation with its reply.
    pub request: Option<Request>,
}

pub(crate) struct SimClient {
    pub host: u32,
    /// This incarnation's session id, sent with its puts: its death reclaims its pending puts.
    pub session: u64,
    pub rng: Rng,
    pub run: Option<Running>,
    /// Slots leased for its small puts (this incarnation's).
    pub slots: SlotPool,
}

impl SimClient {
    pub fn new(id: usize, gen: u64, host: u32, seed: u64) -> SimClient {
        SimClient {
            host,
            // Nonzero, distinct per client and per incarnation.
            session: ((id as u64 + 1) << 32) | (gen & 0xffff_ffff),
            rng: Rng::new(seed),
            run: None,
            slots: SlotPool::new(((id as u64 + 1) << 32) | (gen & 0xffff_ffff), None),
        }
    }
}

impl Sim {
    fn new_op(&mut self, j: usize) -> Running {
        let now = self.now;
        let timeout = self.cfg.timeout_ms;
        let nkeys = self.cfg.keys;
        let pool_bytes = self.cfg.pool_bytes;
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
            outcomes: Completions::default(),
            lookup_at: 0,
            alloc_keys: Vec::new(),
            request: None,
        };
        match roll {
            0..=44 => {
                let replicas = if c.rng.chance(300_000) { 2 } else { 1 };
                let opts = PutOptions {
                    replicas,
                    ..PutOptions::default()
                };
                for k in &run.keys {
                    // Now and then a put larger than any pool: refused at once, evicting nothing
                    // (checked in `on_meta_req`).
                    let size = if c.rng.chance(5_000) {
                        c.rng.range(pool_bytes + 1, 4 * pool_bytes)
                    } else if c.rng.chance(50_000) {
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
                let crcs: Vec<u32> = run
                    .values
                    .iter()
                    .map(|v| crate::checksum([v.as_slice()]))
                    .collect();
                // A single small put: into a leased slot when the client holds one (asking for
                // some first, as an operation of its own, when it holds none).
                let class = (run.keys.len() == 1)
                    .then(|| SlotClass::of(sizes[0], &opts))
                    .flatten();
                let mut leased = None;
                let mut slot_token = None;
                if let Some(class) = class {
                    if let Some(r) = c.slots.refill(now, class) {
                        leased = Some(Op::Refill {
                            class,
                            asked: now,
                            deadline: now + timeout,
                            request: Some(r),
                            reply: None,
                        });
                    } else if let Some((slot, _)) = c.slots.take(now, class) {
                        slot_token = Some(slot.token);
                        leased = Some(Op::Leased(
                            LeasedPutOp::new(
                                &run.keys[0],
                                sizes[0],
                                crcs[0],
                                slot,
                                c.session,
                                now,
                                timeout,
                                Default::default(),
                            ),
                            class,
                        ));
                    }
                }
                if let Some(token) = slot_token {
                    // From now on the slot's token stands for this put's version (its
                    // `PutLeased` may reach the meta service after the put gave up).
                    let learnt = (run.keys[0].clone(), run.versions[0]);
                    self.oracle.tokens.insert((self.meta_gen, token), learnt);
                }
                run.op = match leased {
                    Some(op) => op,
                    None => Op::Put(
                        PutOp::new(&run.keys, &sizes, Some(&crcs), &opts, None, now, timeout)
                            .expect("valid batch")
                            .with_client_id(c.session),
                    ),
                };
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
    pub(crate) fn drive(&mut self, j: usize) {
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
                    // The network gets a copy; the operation gets its request back with the reply.
                    run.request = Some(req.clone());
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
                    self.submit_transfers(j, gen, seq);
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

    /// Hand the operation's transfers, resolved against the client's values and buffers, to the
    /// simulated transport as batch `seq`.
    fn submit_transfers(&mut self, j: usize, gen: u64, seq: u64) {
        let run = self.run_mut(j);
        run.seq = seq;
        let transfers: Vec<Transfer> = run.op.transfers().to_vec();
        let values = std::mem::take(&mut run.values);
        let mut bufs = std::mem::take(&mut run.bufs);
        let mut done = Completions::new(transfers.len());
        let mut backend = SimTransport {
            sim: self,
            client: j,
            gen,
            seq,
        };
        if transfers.iter().all(|t| t.dir == Dir::Write) {
            let parts: Vec<[&[u8]; 1]> = values.iter().map(|v| [&v[..]]).collect();
            let parts: Vec<&[&[u8]]> = parts.iter().map(|p| &p[..]).collect();
            backend.submit(write_jobs(&transfers, &parts), &mut done);
        } else {
            // Each read's buffer holds at least its range (a read delivers there later).
            for t in &transfers {
                let end = (t.item_offset + t.len) as usize;
                if bufs[t.item].len() < end {
                    bufs[t.item].resize(end, 0);
                }
            }
            let mut parts: Vec<[&mut [u8]; 1]> = bufs.iter_mut().map(|b| [&mut b[..]]).collect();
            let mut views: Vec<&mut [&mut [u8]]> = parts.iter_mut().map(|p| &mut p[..]).collect();
            backend.submit(read_jobs(&transfers, &mut views), &mut done);
        }
        let run = self.run_mut(j);
        run.values = values;
        run.bufs = bufs;
        run.outcomes = done;
    }

    /// Feed the outcomes once every transfer has one; true if fed.
    pub(crate) fn try_complete(&mut self, j: usize) -> bool {
        let now = self.now;
        let run = self.run_mut(j);
        if !run.outcomes.is_complete() {
            return false;
        }
        let outcomes = run.outcomes.take();
        run.op.on_transfers(now, outcomes);
        true
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
        let request = run
            .request
            .take()
            .expect("a reply answers the request in flight");
        run.op.on_meta(now, request, reply);
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
            Op::Leased(op, class) => {
                let c = self.clients[j].state.as_mut().expect("alive");
                match op.finish_op().0 {
                    Leased::Done(r) => self.summary.ops_ok += r.is_ok() as u64,
                    Leased::Fallback { forget_class } => {
                        if forget_class {
                            c.slots.forget_class(class);
                        }
                    }
                }
                self.summary.leased_puts += 1;
            }
            Op::Refill {
                class,
                asked,
                reply,
                ..
            } => {
                let c = self.clients[j].state.as_mut().expect("alive");
                let reply = reply.expect("a finished refill has its reply");
                c.slots.on_refill(asked, now, class, reply);
            }
        }
        let c = self.clients[j].state.as_mut().expect("alive");
        if let Some(back) = c.slots.give_back() {
            self.send(Ev::MetaReq {
                from: Peer::Client(j),
                gen,
                seq: 0,
                req: back,
            });
        }
        self.at(think, Ev::ClientWake { client: j, gen });
    }
}
