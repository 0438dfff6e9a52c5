//! The TCP backend: the client's side of the TCP data path. A batch's jobs for one service are
//! spread over up to [`TCP_LANES`] pooled connections ([`Lanes`]); each (service, lane) is one
//! scatter-gather request whose raw bytes go straight from or into the caller's slices (vectored
//! writes and reads, no staging copy); lanes and services run in parallel threads, and `submit`
//! returns when all have. The service checks the epoch fence before and after its copy and says
//! so in its reply. It refuses a rank the meta reply gave no address; a failed request fails
//! every job it carried.

use std::collections::{BTreeMap, HashMap};
use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mmc_controlplane::msg::{DataReply, DataRequest, Piece, RdmaHello, RdmaPeer, ServiceAddr};
use mmc_controlplane::wire::{self, Kind, WireError};
use mmc_controlplane::{Code, Error, Result};
use mmc_core::client::{service, CloneError, Dir};
use mmc_core::transport::{Completions, Job, Mem, Transport};
use mmc_meta_service::rpc::{is_timeout, remaining};
use mmc_tls::{Stream, TlsContext};
use rkyv::util::AlignedVec;
use tracing::warn;

/// Idle connections kept per local service.
const DATA_CONNS_IDLE_MAX: usize = 16;

/// TCP connections one batch may use in parallel towards one local service.
const TCP_LANES: usize = 2;
/// A service's first lane carries at least this many bytes of a batch before a second one opens:
/// small batches stay on one connection, large ones use more than one TCP stream.
const LANE_BYTES_MIN: u64 = 4 << 20;

/// Spreads the objects of one batch bound for one service over up to [`TCP_LANES`] connections,
/// balancing their bytes.
#[derive(Default)]
struct Lanes {
    bytes: HashMap<u32, [u64; TCP_LANES]>,
}

impl Lanes {
    /// The lane for the next object of `size` bytes bound for `rank`.
    fn pick(&mut self, rank: u32, size: u64) -> usize {
        let lanes = self.bytes.entry(rank).or_default();
        let lane = if lanes[0] < LANE_BYTES_MIN {
            0
        } else {
            (0..TCP_LANES).min_by_key(|l| lanes[*l]).unwrap_or(0)
        };
        lanes[lane] += size;
        lane
    }
}

/// Idle connections to local services, kept between batches.
pub(crate) struct Pool {
    conns: Mutex<HashMap<String, Vec<DataConn>>>,
    busy_poll: Duration,
    tls: Option<Arc<TlsContext>>,
}

impl Pool {
    pub(crate) fn new(busy_poll: Duration, tls: Option<Arc<TlsContext>>) -> Pool {
        Pool {
            conns: Mutex::new(HashMap::new()),
            busy_poll,
            tls,
        }
    }

    fn take(&self, endpoint: &str, deadline: Instant) -> Result<DataConn> {
        let pooled = self
            .conns
            .lock()
            .expect("lock poisoned: a panic left this state half-updated")
            .get_mut(endpoint)
            .and_then(|v| v.pop());
        match pooled {
            Some(c) => Ok(c),
            None => DataConn::connect(endpoint, self.tls.as_ref(), deadline, self.busy_poll),
        }
    }

    fn give(&self, conn: DataConn) {
        let mut pool = self
            .conns
            .lock()
            .expect("lock poisoned: a panic left this state half-updated");
        let v = pool.entry(conn.endpoint().to_string()).or_default();
        if v.len() < DATA_CONNS_IDLE_MAX {
            v.push(conn);
        }
    }
}

/// The caller's slices of one group, as the socket calls take them.
enum Bufs<'a> {
    Write(Vec<IoSlice<'a>>),
    Read(Vec<IoSliceMut<'a>>),
}

/// Jobs bound for one remote local service (one lane of it): one request.
struct Group<'a> {
    endpoint: String,
    rank: u32,
    incarnation: u64,
    pieces: Vec<Piece>,
    bufs: Bufs<'a>,
    /// Indexes of the transfers this group carries.
    transfers: Vec<usize>,
}

/// The TCP backend for one batch.
pub(crate) struct Tcp<'a> {
    pool: &'a Pool,
    services: &'a [ServiceAddr],
    deadline: Instant,
}

impl<'a> Tcp<'a> {
    pub(crate) fn new(pool: &'a Pool, services: &'a [ServiceAddr], deadline: Instant) -> Tcp<'a> {
        Tcp {
            pool,
            services,
            deadline,
        }
    }

    fn run_group(&self, mut g: Group<'_>) -> (Vec<usize>, Result<()>) {
        let deadline = self.deadline;
        let pieces = std::mem::take(&mut g.pieces);
        let outcome = self.pool.take(&g.endpoint, deadline).and_then(|mut conn| {
            let done = match &mut g.bufs {
                Bufs::Write(data) => conn.write(g.rank, g.incarnation, pieces, data, deadline),
                Bufs::Read(bufs) => conn.read(g.rank, g.incarnation, pieces, bufs, deadline),
            };
            if done.is_ok() {
                self.pool.give(conn);
            } else {
                conn.abort();
            }
            done
        });
        if let Err(e) = &outcome {
            let what = match g.bufs {
                Bufs::Write(_) => "put: write to local service failed",
                Bufs::Read(_) => "get: read from local service failed",
            };
            warn!(endpoint = %g.endpoint, transfers = g.transfers.len(), error = %e, "{what}");
        }
        (g.transfers, outcome)
    }
}

impl Transport for Tcp<'_> {
    fn submit(&mut self, jobs: Vec<Job<'_>>, done: &mut Completions) {
        let mut groups: BTreeMap<(u32, usize), Group<'_>> = BTreeMap::new();
        let mut lanes = Lanes::default();
        for job in jobs {
            let (t, f) = (job.t, job.t.fence);
            let Some(addr) = service(self.services, f.rank) else {
                done.set(
                    job.idx,
                    Err(Error::LocalUnreachable {
                        endpoint: format!("rank {}", f.rank),
                        reason: "the meta service gave no address".into(),
                    }),
                );
                continue;
            };
            let lane = lanes.pick(f.rank, t.len);
            let g = groups.entry((f.rank, lane)).or_insert_with(|| Group {
                endpoint: addr.data_endpoint.clone(),
                rank: f.rank,
                incarnation: f.incarnation,
                pieces: Vec::new(),
                bufs: match t.dir {
                    Dir::Write => Bufs::Write(Vec::new()),
                    Dir::Read => Bufs::Read(Vec::new()),
                },
                transfers: Vec::new(),
            });
            debug_assert_eq!(
                g.incarnation, f.incarnation,
                "one incarnation per rank and plan"
            );
            g.pieces.push(Piece {
                segment: f.segment,
                offset: t.offset,
                len: t.len,
            });
            match (&mut g.bufs, job.mem) {
                (Bufs::Write(data), Mem::Src(src)) => {
                    data.extend(src.into_iter().map(IoSlice::new));
                }
                (Bufs::Read(bufs), Mem::Dst(dst)) => {
                    bufs.extend(dst.into_iter().map(IoSliceMut::new));
                }
                _ => unreachable!("a batch moves bytes one way"),
            }
            g.transfers.push(job.idx);
        }
        let finished: Vec<(Vec<usize>, Result<()>)> = if groups.len() <= 1 {
            groups.into_values().map(|g| self.run_group(g)).collect()
        } else {
            let this = &*self;
            std::thread::scope(|s| {
                let handles: Vec<_> = groups
                    .into_values()
                    .map(|g| s.spawn(move || this.run_group(g)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("transfer thread"))
                    .collect()
            })
        };
        for (idxs, outcome) in finished {
            for idx in idxs {
                let fresh = done.set(idx, outcome.as_ref().map_err(|e| e.clone_error()).copied());
                debug_assert!(fresh, "one outcome per job");
            }
        }
    }
}

pub(crate) struct DataConn {
    stream: Stream,
    endpoint: String,
    buf: AlignedVec,
    next_id: u64,
    busy_poll: std::time::Duration,
    /// Set only when off by more than `wire::SOCKET_TIMEOUT_SLACK`: no `setsockopt` per request.
    timeouts: wire::SocketTimeouts,
}

impl DataConn {
    /// Connect to a local service's data endpoint; over TLS when `tls` is set (a failed handshake
    /// is -3018 with its reason).
    pub(crate) fn connect(
        endpoint: &str,
        tls: Option<&Arc<TlsContext>>,
        deadline: Instant,
        busy_poll: std::time::Duration,
    ) -> Result<DataConn> {
        let addr: SocketAddr = endpoint.parse().map_err(|_| Error::LocalUnreachable {
            endpoint: endpoint.to_string(),
            reason: "not an ip:port address".into(),
        })?;
        let timeout = remaining(deadline, "connect to a local service")?;
        let stream =
            TcpStream::connect_timeout(&addr, timeout).map_err(|e| Error::LocalUnreachable {
                endpoint: endpoint.to_string(),
                reason: e.to_string(),
            })?;
        let _ = stream.set_nodelay(true);
        let stream = match tls {
            None => Stream::Plain(stream),
            Some(tls) => {
                let timeout = remaining(deadline, "TLS handshake with a local service")?;
                tls.connect(stream, addr, timeout)
                    .map_err(|e| Error::LocalUnreachable {
                        endpoint: endpoint.to_string(),
                        reason: e.to_string(),
                    })?
            }
        };
        Ok(DataConn {
            stream,
            endpoint: endpoint.to_string(),
            buf: AlignedVec::new(),
            next_id: 1,
            busy_poll,
            timeouts: wire::SocketTimeouts::default(),
        })
    }

    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Drop a connection whose transfer failed with a reset, not a graceful close: the kernel
    /// discards what it still holds to send. A write that timed out behind a partition must not
    /// reach the service when the network heals (TCP would retransmit it, seconds later), by
    /// which time the failed put's space may hold another object.
    pub(crate) fn abort(self) {
        if let Err(e) =
            rustix::net::sockopt::set_socket_linger(self.stream.tcp(), Some(Duration::ZERO))
        {
            warn!(endpoint = %self.endpoint, error = %e, "SO_LINGER 0 refused: closing gracefully");
        }
    }

    /// Write `data` (whose lengths add up to the pieces') into the pieces, in order; the service
    /// refuses it unless it is `rank` at `incarnation` (the epoch fence).
    pub(crate) fn write(
        &mut self,
        rank: u32,
        incarnation: u64,
        pieces: Vec<Piece>,
        data: &mut [IoSlice<'_>],
        deadline: Instant,
    ) -> Result<()> {
        let total: u64 = pieces.iter().map(|p| p.len).sum();
        debug_assert_eq!(total, data.iter().map(|d| d.len() as u64).sum::<u64>());
        let req = DataRequest::Write {
            rank,
            incarnation,
            pieces,
        };
        let id = self.send(req, total, deadline)?;
        wire::write_all_vectored(&mut self.stream, data).map_err(|e| self.io_error(e.into()))?;
        let raw = self.read_reply(id, deadline)?;
        if raw != 0 {
            return Err(Error::Protocol(format!(
                "write reply from {} carries {raw} raw bytes",
                self.endpoint
            )));
        }
        Ok(())
    }

    /// Read the pieces, in order, into `bufs` (whose lengths add up to the pieces'), from `rank`
    /// at `incarnation`. After the bytes the service says whether its fence held during the copy;
    /// if not, the bytes are not the object's and the read fails.
    pub(crate) fn read(
        &mut self,
        rank: u32,
        incarnation: u64,
        pieces: Vec<Piece>,
        bufs: &mut [IoSliceMut<'_>],
        deadline: Instant,
    ) -> Result<()> {
        let total: u64 = pieces.iter().map(|p| p.len).sum();
        debug_assert_eq!(total, bufs.iter().map(|d| d.len() as u64).sum::<u64>());
        let req = DataRequest::Read {
            rank,
            incarnation,
            pieces,
        };
        let id = self.send(req, 0, deadline)?;
        let raw = self.read_reply(id, deadline)?;
        if raw != total {
            return Err(Error::Protocol(format!(
                "{} sent {raw} bytes, {total} were asked",
                self.endpoint
            )));
        }
        wire::read_exact_vectored(&mut self.stream, bufs).map_err(|e| self.io_error(e.into()))?;
        match self.read_reply(id, deadline)? {
            0 => Ok(()),
            raw => Err(Error::Protocol(format!(
                "{}: the fence check after a read carries {raw} raw bytes",
                self.endpoint
            ))),
        }
    }

    fn send(&mut self, req: DataRequest, raw_len: u64, deadline: Instant) -> Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        wire::encode_payload(&req, &mut self.buf)
            .map_err(|e| Error::InvalidParam(e.to_string()))?;
        let timeout = remaining(deadline, "data transfer")?;
        let tcp = self.stream.tcp();
        self.timeouts
            .fit(tcp, timeout, true)
            .and_then(|_| self.timeouts.fit(tcp, timeout, false))
            .map_err(|e| Error::io("set socket timeouts", e))?;
        wire::write_frame(&mut self.stream, Kind::DataRequest, id, &self.buf, raw_len)
            .map_err(|e| self.io_error(e))?;
        Ok(id)
    }

    /// Read the reply frame; returns how many raw bytes follow it.
    fn read_reply(&mut self, id: u64, deadline: Instant) -> Result<u64> {
        let timeout = remaining(deadline, "data transfer")?;
        self.timeouts
            .fit(self.stream.tcp(), timeout, false)
            .map_err(|e| Error::io("set read timeout", e))?;
        if !self.busy_poll.is_zero() && !self.stream.has_buffered() {
            wire::spin_until_readable(&self.stream, self.busy_poll.min(timeout));
        }
        let header =
            wire::read_frame(&mut self.stream, &mut self.buf).map_err(|e| self.io_error(e))?;
        if header.kind != Kind::DataReply || header.req_id != id {
            return Err(Error::Protocol(format!(
                "{}: expected data reply {id}, got {:?} {}",
                self.endpoint, header.kind, header.req_id
            )));
        }
        let reply: DataReply =
            wire::decode_payload(&self.buf).map_err(|e| Error::Protocol(e.to_string()))?;
        if reply.code == Code::NotConnectLocal.as_i32() {
            tracing::warn!(endpoint = %self.endpoint, reason = %reply.message, "transfer refused by the epoch fence");
            return Err(Error::LocalUnreachable {
                endpoint: self.endpoint.clone(),
                reason: reply.message,
            });
        }
        if reply.code != 0 {
            return Err(Error::Remote {
                code: Code::from_i32(reply.code),
                context: format!("local service {}: {}", self.endpoint, reply.message),
            });
        }
        Ok(header.raw_len)
    }

    /// Connect an RDMA queue pair: send the client's endpoint, read the service's [`RdmaHello`]
    /// (the raw bytes after the reply, at most 16 MiB).
    pub(crate) fn rdma_connect(
        &mut self,
        rank: u32,
        incarnation: u64,
        peer: RdmaPeer,
        deadline: Instant,
    ) -> Result<RdmaHello> {
        let req = DataRequest::RdmaConnect {
            rank,
            incarnation,
            peer,
        };
        let id = self.send(req, 0, deadline)?;
        let raw = self.read_reply(id, deadline)?;
        if raw == 0 || raw > 16 << 20 {
            return Err(Error::Protocol(format!(
                "RDMA hello from {} of {raw} bytes",
                self.endpoint
            )));
        }
        let mut bytes = AlignedVec::<16>::with_capacity(raw as usize);
        bytes.resize(raw as usize, 0);
        std::io::Read::read_exact(&mut self.stream, &mut bytes)
            .map_err(|e| self.io_error(e.into()))?;
        wire::decode_payload(&bytes).map_err(|e| Error::Protocol(e.to_string()))
    }

    fn io_error(&self, e: WireError) -> Error {
        match e {
            WireError::Io(ref io) if is_timeout(io) => Error::Timeout {
                ms: 0,
                what: format!("transfer with local service {}", self.endpoint),
            },
            e => Error::LocalUnreachable {
                endpoint: self.endpoint.clone(),
                reason: e.to_string(),
            },
        }
    }
}
