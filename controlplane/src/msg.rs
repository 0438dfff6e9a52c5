//! The messages of the control plane and data plane. Carried in rkyv payloads by [`crate::wire`].
//!
//! Every batch request carries many keys, so a batch costs one round trip. Per-key outcomes are
//! documented codes ([`crate::error::Code`] values), so a batch reply says exactly which keys failed.

use rkyv::{Archive, Deserialize, Serialize};

/// Media, with the contract's values.
pub const MEDIA_HBM: u16 = 0;
pub const MEDIA_DRAM: u16 = 1;
pub const MEDIA_SSD: u16 = 2;
/// "The highest tier with room."
pub const MEDIA_NONE: u16 = 3;

pub const NATIVE_AFFINITY: u16 = 0;
pub const PREFERRED_AFFINITY: u16 = 1;

pub const KEY_BYTES_MAX: usize = 255;
pub const BATCH_KEYS_MAX: usize = 16384;
pub const REPLICAS_MAX: usize = 8;
/// Most index changes one heartbeat reply carries (with 255-byte keys, about 1.2 MB of payload).
pub const INDEX_CHANGES_MAX: usize = 4096;
/// Most repair tasks one heartbeat reply carries, and repair outcomes one heartbeat reports.
pub const REPAIRS_MAX: usize = 64;

pub fn media_name(media: u16) -> &'static str {
    match media {
        MEDIA_HBM => "HBM",
        MEDIA_DRAM => "DRAM",
        MEDIA_SSD => "SSD",
        MEDIA_NONE => "NONE",
        _ => "UNKNOWN",
    }
}

/// One pool a local service offers.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SegmentSpec {
    pub media: u16,
    pub capacity: u64,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Register {
    /// A fixed rank, or `None` to have the meta service assign one.
    pub rank: Option<u32>,
    pub create_id: i32,
    /// Host identity (so placement can spread replicas and same-host clients can map pools).
    pub host: String,
    /// `ip:port` of the data endpoint.
    pub data_endpoint: String,
    /// Unix socket where same-host clients receive the pools' memfds, as `PATH#HEX-SECRET` (the
    /// secret is what a client sends first; see the local service's `shm_server`); empty = not
    /// offered.
    pub shm_endpoint: String,
    pub segments: Vec<SegmentSpec>,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct AllocRequest {
    /// The writer's own local service (for `NATIVE_AFFINITY`), if it has one.
    pub writer_rank: Option<u32>,
    /// The writing client's session (random per client instance, nonzero): when every meta
    /// connection that carried it has closed, its pending puts are reclaimed at once. 0 = unknown:
    /// only `pending_timeout_ms` reclaims them.
    pub client_id: u64,
    pub media: u16,
    pub policy: u16,
    /// 0 or 1 = one copy.
    pub replicas: u16,
    pub preferred: Vec<i32>,
    /// (key, size in bytes)
    pub items: Vec<(String, u64)>,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct CommitItem {
    pub token: u64,
    pub ok: bool,
    /// CRC-32C (Castagnoli) of the object's bytes, computed by the writer from its source buffers.
    pub crc: u32,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Request {
    Register(Register),
    /// "Still here"; also acknowledges the index changes applied so far (see [`IndexChange`]).
    Heartbeat {
        rank: u32,
        incarnation: u64,
        /// Sequence number of the last index change this incarnation applied (0 = none yet).
        index_seq: u64,
        /// The service found the changes inconsistent with its index and asks for a resync.
        index_resync: bool,
        /// Outcomes of repair tasks ([`RepairTask`]) this incarnation carried out since its
        /// last acknowledged heartbeat (at most [`REPAIRS_MAX`]).
        repaired: Vec<RepairDone>,
    },
    Unregister {
        rank: u32,
        incarnation: u64,
    },
    /// Put phase 1: check keys are new, place replicas, reserve space, record pending entries.
    Alloc(AllocRequest),
    /// Put phase 2: make written objects visible, or free failed ones.
    Commit {
        items: Vec<(String, CommitItem)>,
    },
    /// Get: replicas and a read lease per key.
    Lookup {
        keys: Vec<String>,
    },
    /// Give leases back (one-way).
    Release {
        leases: Vec<u64>,
    },
    /// Size and replicas per key, no lease.
    Query {
        keys: Vec<String>,
    },
    Exist {
        keys: Vec<String>,
    },
    Remove {
        keys: Vec<String>,
    },
    /// Remove every committed object (`remove_all`); answered `Removed`. Objects being read stay
    /// until their readers release them, as with `Remove`; pending puts are not touched.
    RemoveAll,
    Status,
    /// One-way, from a client whose transfer to this member failed at the connection level
    /// (refused, reset, closed): a hint that the process is gone. The meta service takes the
    /// member out of placement at once if `incarnation` is its current one; a live member's next
    /// heartbeat re-admits it with its objects. Stale incarnations are ignored.
    Suspect {
        rank: u32,
        incarnation: u64,
    },
    /// A local service that was a member of an earlier run of the meta service registers again
    /// and reports the objects it holds, so that the restarted meta service rebuilds its
    /// directory from them. Sent in chunks (at most [`INDEX_CHANGES_MAX`] entries each, sorted by
    /// pool then offset across chunks), numbered from 0; every chunk but the last is answered
    /// `Ack{0}`, the last like a registration (`Registered`, with a new incarnation: the service
    /// closes its fence before the first chunk and opens it at the new incarnation). A chunk out
    /// of order is refused; the service starts over from chunk 0.
    Rejoin(Rejoin),
    /// Lease pool space ahead of puts (answered [`Reply::Slots`]): up to `count` *slots* of
    /// `size` bytes, each a placement of `replicas` copies reserved for this client only, with no
    /// key, invisible, held until the reply's `lease_ms` runs out (or a [`Request::PutLeased`]
    /// uses or gives it back). A small put then writes into one of its slots and makes the object
    /// visible with one [`Request::PutLeased`]: one meta round trip instead of two.
    LeaseSlots(SlotRequest),
    /// Put into leased slots, written already: bind each slot to its key and commit it, or give
    /// it back (`ok = false`). Answered `Commit { codes }`, one per item; whatever the code, the
    /// slot is used up.
    PutLeased {
        client_id: u64,
        items: Vec<LeasedPut>,
    },
}

/// A [`Request::LeaseSlots`]: where the slots go, as for an [`AllocRequest`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SlotRequest {
    pub writer_rank: Option<u32>,
    /// The client session the slots belong to (nonzero): only it may use them.
    pub client_id: u64,
    pub media: u16,
    pub policy: u16,
    /// 0 or 1 = one copy.
    pub replicas: u16,
    /// Bytes of each slot.
    pub size: u64,
    /// Slots wanted (the meta service may grant fewer, or none).
    pub count: u32,
    /// With `PREFERRED_AFFINITY`: the services to place on, as in [`AllocRequest`].
    pub preferred: Vec<i32>,
}

/// One item of a [`Request::PutLeased`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LeasedPut {
    /// The slot's token (from [`Reply::Slots`]).
    pub token: u64,
    pub key: String,
    /// The object's size: at most the slot's.
    pub size: u64,
    /// CRC-32C of the object's bytes.
    pub crc: u32,
    /// `false`: give the slot back unused.
    pub ok: bool,
}

/// One chunk of a [`Request::Rejoin`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Rejoin {
    /// The registration, with the rank the service held (`Some`).
    pub register: Register,
    /// The incarnation the service's fence was last opened at: names this rejoin across chunks.
    pub previous: u64,
    /// 0, 1, 2, ...
    pub chunk: u32,
    /// The last chunk: the meta service rebuilds and answers `Registered`.
    pub last: bool,
    pub entries: Vec<RejoinEntry>,
}

/// One object a rejoining service holds, checked against its checksum just before it is sent.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RejoinEntry {
    pub key: String,
    /// Index of the pool, in the order of `register.segments`.
    pub pool: u32,
    pub offset: u64,
    pub len: u64,
    pub version: u64,
    pub crc: u32,
    /// Replicas its put asked for.
    pub want: u16,
}

/// Where one replica lives.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct Replica {
    pub rank: u32,
    pub segment: u32,
    pub media: u16,
    pub offset: u64,
    pub len: u64,
}

/// One change to the index of objects a local service holds, numbered per incarnation from 1 in
/// the order the meta service made it. The index holds a service's replicas of the committed,
/// visible objects, by key (an object has at most one replica per service).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum IndexChange {
    /// Forget every entry: the meta service dropped the changes before this one (its outbox for
    /// the service overflowed, or the service asked for a resync). A snapshot follows as `Added`
    /// changes, interleaved with the changes made while it is sent. May follow a gap in numbers.
    Reset,
    /// An object with a replica here was committed: it is visible from now on.
    Added {
        key: String,
        segment: u32,
        offset: u64,
        /// The object's size in bytes.
        len: u64,
        /// Orders puts of one key across meta restarts: a later put has a larger version.
        version: u64,
        /// CRC-32C of the object's bytes.
        crc: u32,
        /// Replicas its put asked for (repair restores them after a meta restart too).
        want: u16,
    },
    /// The replica left the directory (removed or evicted); its space is or will soon be free.
    Removed {
        key: String,
        segment: u32,
        offset: u64,
    },
}

/// Copy one replica of an object from another service into this service's pools: the meta
/// service reserved `offset..offset + len` of `segment` (this incarnation's) for it. The service
/// reads the source replica over the data path, checks its CRC-32C, writes it, and reports the
/// outcome on a later heartbeat; only then does the meta service add the replica.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RepairTask {
    pub token: u64,
    pub segment: u32,
    pub offset: u64,
    pub len: u64,
    pub crc: u32,
    /// A live service holding the object, at its incarnation.
    pub source: ServiceAddr,
    pub source_segment: u32,
    pub source_offset: u64,
}

/// The outcome of a [`RepairTask`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct RepairDone {
    pub token: u64,
    pub ok: bool,
}

/// How to reach a local service.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ServiceAddr {
    pub rank: u32,
    pub incarnation: u64,
    pub host: String,
    pub data_endpoint: String,
    pub shm_endpoint: String,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct AllocItem {
    pub code: i32,
    /// With `ExceedCapacity`: space held by read leases will free up, so a retry can work (space
    /// held by pending puts does not count: a pending put may be abandoned for its whole timeout).
    pub retry: bool,
    pub token: u64,
    pub replicas: Vec<Replica>,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LookupItem {
    pub code: i32,
    pub size: u64,
    /// CRC-32C of the object's bytes (checked by readers configured with `verify_reads`).
    pub crc: u32,
    pub lease: u64,
    pub replicas: Vec<Replica>,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct QueryItem {
    pub code: i32,
    pub size: u64,
    pub replicas: Vec<Replica>,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SegmentStatus {
    pub segment: u32,
    pub rank: u32,
    pub create_id: i32,
    pub media: u16,
    pub capacity: u64,
    pub used: u64,
    pub objects: u64,
    pub alive: bool,
    pub host: String,
    pub data_endpoint: String,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Status {
    pub segments: Vec<SegmentStatus>,
    pub objects: u64,
    pub pending: u64,
    pub leases: u64,
    pub evicted_total: u64,
    pub evict_threshold_high: u16,
    pub evict_threshold_low: u16,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Reply {
    Registered {
        rank: u32,
        incarnation: u64,
        /// Segment ids in the order of the registered specs.
        segments: Vec<u32>,
        heartbeat_ms: u64,
    },
    /// A heartbeat was accepted: index changes numbered `index_first_seq`, `+1`, ... (at most
    /// [`INDEX_CHANGES_MAX`]), none of them acknowledged yet.
    Heartbeat {
        index_first_seq: u64,
        index_changes: Vec<IndexChange>,
        /// More changes wait: heartbeat again soon.
        index_more: bool,
        /// Replicas to copy here (at most [`REPAIRS_MAX`]).
        repairs: Vec<RepairTask>,
    },
    /// Unregister outcome, or a refused heartbeat (`code != 0`: unknown rank or incarnation).
    Ack {
        code: i32,
    },
    Alloc {
        items: Vec<AllocItem>,
        services: Vec<ServiceAddr>,
    },
    Commit {
        codes: Vec<i32>,
    },
    Lookup {
        lease_ms: u64,
        items: Vec<LookupItem>,
        services: Vec<ServiceAddr>,
    },
    Query {
        items: Vec<QueryItem>,
    },
    Codes {
        codes: Vec<i32>,
    },
    Status(Status),
    /// `RemoveAll` unlinked this many objects.
    Removed {
        count: u64,
    },
    /// Not now: try the same request again after `retry_ms` (within the caller's deadline).
    /// Answered while a restarted meta service rebuilds its directory, to requests whose answer
    /// depends on keys it does not know yet.
    Busy {
        retry_ms: u64,
        message: String,
    },
    /// The whole request was refused.
    Error {
        code: i32,
        message: String,
    },
    /// Slots granted to a [`Request::LeaseSlots`] (`code` 0 each; fewer than asked, or none,
    /// when the pool is short or the client holds many already). Each is usable until
    /// `lease_ms` after the request was sent; the client stops using one at half of that.
    Slots {
        lease_ms: u64,
        items: Vec<AllocItem>,
        services: Vec<ServiceAddr>,
    },
}

/// One contiguous range of one segment.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct Piece {
    pub segment: u32,
    pub offset: u64,
    pub len: u64,
}

/// A transfer on a local service's TCP data endpoint. Every request carries the (rank,
/// incarnation) the meta service named with the placement or lookup: the service refuses it
/// (-3018, "fence") unless it is that rank at that incarnation and every segment is one of that
/// incarnation's, and it holds its epoch fence across the copy.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum DataRequest {
    /// Raw bytes (sum of lens) follow the frame, in piece order.
    Write {
        rank: u32,
        incarnation: u64,
        pieces: Vec<Piece>,
    },
    /// The reply carries the raw bytes, in piece order, then a second [`DataReply`] (same request
    /// id, no raw bytes) that says whether the fence held until the last byte was copied: bytes
    /// followed by a failed check are not the object's.
    Read {
        rank: u32,
        incarnation: u64,
        pieces: Vec<Piece>,
    },
    /// Connect an RDMA queue pair: the client's endpoint; the reply ([`DataReply`], code 0) is
    /// followed by an encoded [`RdmaHello`] as its raw bytes. Refused (-3014, link not found)
    /// by a service without an RDMA device on the client's fabric.
    RdmaConnect {
        rank: u32,
        incarnation: u64,
        peer: RdmaPeer,
    },
}

/// One side of an RDMA connection: its queue pair and port, and its device's fabric.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RdmaPeer {
    pub qpn: u32,
    pub psn: u32,
    pub lid: u16,
    pub gid: [u8; 16],
    /// Devices on the same fabric reach each other (`ib:<subnet prefix>`, `sim:<host>`).
    pub fabric: String,
}

/// A memory region of a local service that peers reach with one-sided verbs.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct RdmaMr {
    /// The pool (segment) it lies in, and where in it (`u32::MAX`: the fence page).
    pub segment: u32,
    pub seg_offset: u64,
    /// Its address in the service's address space, length and rkey.
    pub addr: u64,
    pub len: u64,
    pub rkey: u32,
}

/// A local service's answer to [`DataRequest::RdmaConnect`]: its queue pair, connected to the
/// client's, and its registered memory: every pool (split into MRs at the device's limit) and the
/// fence page (the epoch fence word: incarnation at byte 0, copies in flight at byte 8, which the
/// client enters and leaves with FETCH_ADD).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RdmaHello {
    pub peer: RdmaPeer,
    pub mrs: Vec<RdmaMr>,
    pub fence: RdmaMr,
}

/// What a local service sends a same-host client on its shm socket, with one descriptor attached
/// (`SCM_RIGHTS`) per pool that is host memory or a device pool exported as a descriptor, in pool
/// order, then the memfd of its fence page.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ShmHello {
    pub rank: u32,
    pub incarnation: u64,
    /// (segment id, pool bytes), one per pool.
    pub segments: Vec<(u32, u64)>,
    /// Per pool, in the same order: -1 for host memory (its memfd is attached), else the device
    /// id of a pool in device memory, reached through `device_backend`'s IPC: its handle is in
    /// `handles` (empty when the handle is a descriptor, attached like a host pool's memfd).
    pub devices: Vec<i32>,
    /// Per pool: a device pool's opaque IPC handle (CUDA, Ascend), else empty.
    pub handles: Vec<Vec<u8>>,
    /// The service's device backend (`none`, `sim`, `cuda`, `ascend`): a client maps device pools
    /// only with the same one.
    pub device_backend: String,
    /// Bytes of the fence page (its descriptor is the last one attached): the client enters the
    /// service's epoch fence there around every copy.
    pub fence_bytes: u64,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct DataReply {
    pub code: i32,
    pub message: String,
}
