//! Framing, sans-IO: a fixed 32-byte header, an rkyv payload validated on receipt, and optionally raw
//! bytes that follow the payload (the data path reads those straight into pools or caller buffers).
//!
//! ```text
//! 0      4      6      8         12         16        24         32
//! | magic | kind | flags | meta_len | reserved | req_id | raw_len | payload (meta_len) | raw (raw_len)
//! ```
//! All integers are little-endian. A frame that breaks any limit is an error on its connection: the
//! reader returns [`WireError`] and the caller closes the connection; nothing panics, nothing waits
//! for bytes that a limit already ruled out.

use std::io::{self, Read, Write};

use rkyv::rancor;
use rkyv::util::AlignedVec;

/// "MMC1" in little-endian byte order.
pub const MAGIC: u32 = u32::from_le_bytes(*b"MMC1");
pub const HEADER_BYTES: usize = 32;
/// The largest rkyv payload a peer may send (a batch of 16384 keys of 255 bytes with replicas fits).
pub const META_BYTES_MAX: u32 = 64 * 1024 * 1024;
/// The largest raw byte run that may follow one frame.
pub const RAW_BYTES_MAX: u64 = 64 * 1024 * 1024 * 1024;
/// A payload buffer grows by at most this much beyond its capacity before the bytes to fill it
/// have arrived: memory follows the bytes a peer sent, never the length its header claims.
pub const READ_STEP_BYTES: usize = 64 * 1024;
/// How long a server waits for the next byte of a frame it has begun to receive (or for a peer to
/// take the bytes of a reply) before it cuts the peer off. A peer idle between frames is not cut
/// off. Servers set it as their sockets' read and write timeouts.
pub const FRAME_IDLE_MS: u64 = 30_000;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Kind {
    /// Client or local service -> meta service: a [`crate::msg::Request`].
    MetaRequest = 1,
    /// Meta service -> caller: a [`crate::msg::Reply`].
    MetaReply = 2,
    /// Fire-and-forget request to the meta service (no reply is sent), e.g. lease release.
    MetaOneway = 3,
    /// Client -> local service: a [`crate::msg::DataRequest`], raw bytes follow for writes.
    DataRequest = 4,
    /// Local service -> client: a [`crate::msg::DataReply`], raw bytes follow for reads.
    DataReply = 5,
}

impl Kind {
    pub fn from_u16(v: u16) -> Option<Kind> {
        Some(match v {
            1 => Kind::MetaRequest,
            2 => Kind::MetaReply,
            3 => Kind::MetaOneway,
            4 => Kind::DataRequest,
            5 => Kind::DataReply,
            _ => return None,
        })
    }
}

/// Why a frame was refused.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("bad magic {0:#010x}: not a MemCache peer")]
    BadMagic(u32),
    #[error("unknown frame kind {0}")]
    BadKind(u16),
    #[error("reserved header bytes must be zero, got {0:#x}")]
    BadReserved(u32),
    #[error("payload of {len} bytes exceeds the limit of {max}")]
    MetaTooLarge { len: u32, max: u32 },
    #[error("raw run of {len} bytes exceeds the limit of {max}")]
    RawTooLarge { len: u64, max: u64 },
    #[error("expected a {expected:?} frame, got {got:?}")]
    UnexpectedKind { expected: Kind, got: Kind },
    #[error("malformed payload: {0}")]
    Payload(String),
    #[error("connection closed by peer")]
    Closed,
    /// A server's read timed out in the middle of a frame (see [`read_request`]).
    #[error("peer sent {got} bytes of a {want}-byte frame, then nothing until the read timeout")]
    Stalled { got: u64, want: u64 },
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

impl WireError {
    /// True when the socket timed out (the caller maps it to the timeout code).
    pub fn is_timeout(&self) -> bool {
        match self {
            WireError::Io(e) => is_timeout_io(e),
            WireError::Stalled { .. } => true,
            _ => false,
        }
    }
}

/// A decoded, validated frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub flags: u16,
    pub meta_len: u32,
    pub req_id: u64,
    pub raw_len: u64,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut b = [0u8; HEADER_BYTES];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..6].copy_from_slice(&(self.kind as u16).to_le_bytes());
        b[6..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..12].copy_from_slice(&self.meta_len.to_le_bytes());
        // 12..16 reserved, zero.
        b[16..24].copy_from_slice(&self.req_id.to_le_bytes());
        b[24..32].copy_from_slice(&self.raw_len.to_le_bytes());
        b
    }

    /// Decode and check every limit before the caller reads a byte more.
    pub fn decode(b: &[u8; HEADER_BYTES]) -> Result<Header, WireError> {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        let magic = u32_at(0);
        if magic != MAGIC {
            return Err(WireError::BadMagic(magic));
        }
        let kind_raw = u16::from_le_bytes([b[4], b[5]]);
        let kind = Kind::from_u16(kind_raw).ok_or(WireError::BadKind(kind_raw))?;
        let reserved = u32_at(12);
        if reserved != 0 {
            return Err(WireError::BadReserved(reserved));
        }
        let meta_len = u32_at(8);
        if meta_len > META_BYTES_MAX {
            return Err(WireError::MetaTooLarge {
                len: meta_len,
                max: META_BYTES_MAX,
            });
        }
        let raw_len = u64_at(24);
        if raw_len > RAW_BYTES_MAX {
            return Err(WireError::RawTooLarge {
                len: raw_len,
                max: RAW_BYTES_MAX,
            });
        }
        Ok(Header {
            kind,
            flags: u16::from_le_bytes([b[6], b[7]]),
            meta_len,
            req_id: u64_at(16),
            raw_len,
        })
    }
}

/// Serialize `msg` into `out` (cleared first; its capacity is reused across calls).
pub fn encode_payload<T>(msg: &T, out: &mut AlignedVec) -> Result<(), WireError>
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rancor::Error,
        >,
    >,
{
    out.clear();
    let buf = std::mem::take(out);
    match rkyv::api::high::to_bytes_in::<_, rancor::Error>(msg, buf) {
        Ok(buf) => {
            *out = buf;
            if out.len() > META_BYTES_MAX as usize {
                return Err(WireError::MetaTooLarge {
                    len: u32::try_from(out.len()).unwrap_or(u32::MAX),
                    max: META_BYTES_MAX,
                });
            }
            Ok(())
        }
        Err(e) => Err(WireError::Payload(e.to_string())),
    }
}

/// Validate (bytecheck) and deserialize a payload. `bytes` must be 16-byte aligned ([`AlignedVec`]).
pub fn decode_payload<T>(bytes: &[u8]) -> Result<T, WireError>
where
    T: rkyv::Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rancor::Error>>
        + rkyv::Deserialize<T, rkyv::rancor::Strategy<rkyv::de::Pool, rancor::Error>>,
{
    rkyv::from_bytes::<T, rancor::Error>(bytes).map_err(|e| WireError::Payload(e.to_string()))
}

/// Validate (bytecheck) a payload and borrow its archived form, without deserializing it: a
/// reader that only looks at it copies nothing. `bytes` must be 16-byte aligned.
pub fn access_payload<T>(bytes: &[u8]) -> Result<&T::Archived, WireError>
where
    T: rkyv::Archive,
    T::Archived: rkyv::Portable
        + for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rancor::Error>>,
{
    rkyv::access::<T::Archived, rancor::Error>(bytes).map_err(|e| WireError::Payload(e.to_string()))
}

/// Deserialize a payload [`access_payload`] validated.
pub fn deserialize_archived<T>(archived: &T::Archived) -> Result<T, WireError>
where
    T: rkyv::Archive,
    T::Archived: rkyv::Deserialize<T, rkyv::rancor::Strategy<rkyv::de::Pool, rancor::Error>>,
{
    rkyv::deserialize::<T, rancor::Error>(archived).map_err(|e| WireError::Payload(e.to_string()))
}

/// Write one frame: header, then the encoded payload. Raw bytes, if any, are the caller's to write.
pub fn write_frame<W: Write>(
    w: &mut W,
    kind: Kind,
    req_id: u64,
    payload: &[u8],
    raw_len: u64,
) -> Result<(), WireError> {
    let header = Header {
        kind,
        flags: 0,
        meta_len: u32::try_from(payload.len()).map_err(|_| WireError::MetaTooLarge {
            len: u32::MAX,
            max: META_BYTES_MAX,
        })?,
        req_id,
        raw_len,
    };
    let head = header.encode();
    let mut slices = [io::IoSlice::new(&head), io::IoSlice::new(payload)];
    write_all_vectored(w, &mut slices)?;
    Ok(())
}

/// Read one frame's header and payload into `payload` (reused). Raw bytes stay in the stream.
///
/// The payload buffer grows as bytes arrive (by at most [`READ_STEP_BYTES`] past its capacity
/// per read), so a header that claims a large payload and is followed by nothing costs nothing.
pub fn read_frame<R: Read>(r: &mut R, payload: &mut AlignedVec) -> Result<Header, WireError> {
    let header = read_frame_inner(r, payload, false)?;
    Ok(header.expect("a client read reports every timeout as an error"))
}

/// The server side of [`read_frame`], for sockets with a read timeout ([`FRAME_IDLE_MS`]):
/// `Ok(None)` when the timeout passed before the frame's first byte (a peer may idle between
/// frames); [`WireError::Stalled`] when it passed after it.
pub fn read_request<R: Read>(
    r: &mut R,
    payload: &mut AlignedVec,
) -> Result<Option<Header>, WireError> {
    read_frame_inner(r, payload, true)
}

fn read_frame_inner<R: Read>(
    r: &mut R,
    payload: &mut AlignedVec,
    server: bool,
) -> Result<Option<Header>, WireError> {
    let mut head = [0u8; HEADER_BYTES];
    let fail = |e: io::Error, got: usize, want: usize| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            WireError::Closed
        } else if server && is_timeout_io(&e) {
            WireError::Stalled {
                got: got as u64,
                want: want as u64,
            }
        } else {
            WireError::Io(e)
        }
    };
    match read_full(r, &mut head) {
        Ok(()) => {}
        Err((e, 0)) if server && is_timeout_io(&e) => return Ok(None),
        Err((e, got)) => return Err(fail(e, got, HEADER_BYTES)),
    }
    let header = Header::decode(&head)?;
    let want = header.meta_len as usize;
    payload.clear();
    while payload.len() < want {
        let start = payload.len();
        // Fill what is already held in one go (the steady state allocates nothing); past it, grow
        // by one step at a time, each only once the previous one has arrived.
        let end = want.min(payload.capacity().max(start + READ_STEP_BYTES));
        payload.resize(end, 0);
        if let Err((e, got)) = read_full(r, &mut payload[start..end]) {
            return Err(fail(e, HEADER_BYTES + start + got, HEADER_BYTES + want));
        }
    }
    debug_assert_eq!(payload.len(), want);
    Ok(Some(header))
}

/// `read_exact` that says how many bytes it got before an error (EOF is `UnexpectedEof`).
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<(), (io::Error, usize)> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => return Err((io::ErrorKind::UnexpectedEof.into(), got)),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((e, got)),
        }
    }
    Ok(())
}

fn is_timeout_io(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// `write_all` for vectored writes: retries partial writes and EINTR.
pub fn write_all_vectored<W: Write>(
    w: &mut W,
    mut slices: &mut [io::IoSlice<'_>],
) -> io::Result<()> {
    io::IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        match w.write_vectored(slices) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "peer stopped reading",
                ))
            }
            Ok(n) => io::IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `read_exact` for vectored reads: retries partial reads and EINTR; EOF midway is an error.
pub fn read_exact_vectored<R: Read>(
    r: &mut R,
    mut slices: &mut [io::IoSliceMut<'_>],
) -> io::Result<()> {
    io::IoSliceMut::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        match r.read_vectored(slices) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed mid-transfer",
                ))
            }
            Ok(n) => io::IoSliceMut::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// How far a socket timeout in force may be from what a call's deadline leaves before it is set
/// again: a call may end up to this much past its deadline, or give up this much short of it.
pub const SOCKET_TIMEOUT_SLACK: std::time::Duration = std::time::Duration::from_millis(20);

/// The read and write timeouts last set on one socket, so that a connection whose calls all have
/// about the same time left (the steady state: one timeout for every call) sets them once, not
/// with a `setsockopt` per request.
#[derive(Debug, Default)]
pub struct SocketTimeouts {
    read: Option<std::time::Duration>,
    write: Option<std::time::Duration>,
}

impl SocketTimeouts {
    /// Make the socket's read (and, with `write`, write) timeout `timeout`, within
    /// [`SOCKET_TIMEOUT_SLACK`].
    pub fn fit(
        &mut self,
        socket: &std::net::TcpStream,
        timeout: std::time::Duration,
        write: bool,
    ) -> io::Result<()> {
        let off = |set: Option<std::time::Duration>| {
            set.is_none_or(|set| set.abs_diff(timeout) > SOCKET_TIMEOUT_SLACK)
        };
        if write && off(self.write) {
            self.write = None;
            socket.set_write_timeout(Some(timeout))?;
            self.write = Some(timeout);
        }
        if !write && off(self.read) {
            self.read = None;
            socket.set_read_timeout(Some(timeout))?;
            self.read = Some(timeout);
        }
        Ok(())
    }
}

/// Busy-poll `socket` for up to `spin` until bytes are ready to read (or the peer closed), so that
/// the blocking read that follows does not sleep and pay a wake-up. `spin` zero returns at once.
/// Returns true when bytes (or the end of the stream) are ready.
pub fn spin_until_readable(socket: impl std::os::fd::AsFd, spin: std::time::Duration) -> bool {
    if spin.is_zero() {
        return false;
    }
    let start = std::time::Instant::now();
    let mut probe = [0u8; 1];
    loop {
        let flags = rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT;
        match rustix::net::recv(&socket, &mut probe, flags) {
            Ok(_) => return true,
            Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => {}
            // Let the blocking read report the error.
            Err(_) => return true,
        }
        if start.elapsed() >= spin {
            return false;
        }
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{Reply, Request};

    fn frame_bytes(kind: Kind, req: &Request) -> Vec<u8> {
        let mut payload = AlignedVec::new();
        encode_payload(req, &mut payload).unwrap();
        let mut out = Vec::new();
        write_frame(&mut out, kind, 7, &payload, 0).unwrap();
        out
    }

    #[test]
    fn spinning_sees_ready_bytes_and_gives_up_in_time() {
        use std::io::Write;
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let start = std::time::Instant::now();
        assert!(!spin_until_readable(
            &b,
            std::time::Duration::from_millis(5)
        ));
        assert!(start.elapsed() >= std::time::Duration::from_millis(5));
        assert!(!spin_until_readable(&b, std::time::Duration::ZERO));
        a.write_all(b"x").unwrap();
        assert!(spin_until_readable(&b, std::time::Duration::from_secs(5)));
    }

    #[test]
    fn header_round_trip() {
        let h = Header {
            kind: Kind::DataRequest,
            flags: 3,
            meta_len: 1234,
            req_id: u64::MAX - 1,
            raw_len: 1 << 33,
        };
        assert_eq!(Header::decode(&h.encode()).unwrap(), h);
    }

    #[test]
    fn request_round_trip_through_a_stream() {
        let req = Request::Exist {
            keys: vec!["a".into(), "b".repeat(255)],
        };
        let bytes = frame_bytes(Kind::MetaRequest, &req);
        let mut cursor = io::Cursor::new(bytes);
        let mut payload = AlignedVec::new();
        let h = read_frame(&mut cursor, &mut payload).unwrap();
        assert_eq!(h.kind, Kind::MetaRequest);
        assert_eq!(h.req_id, 7);
        let back: Request = decode_payload(&payload).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn bad_magic_kind_reserved_and_sizes_are_rejected() {
        let good = Header {
            kind: Kind::MetaRequest,
            flags: 0,
            meta_len: 10,
            req_id: 1,
            raw_len: 0,
        }
        .encode();
        let mut b = good;
        b[0] ^= 0xff;
        assert!(matches!(Header::decode(&b), Err(WireError::BadMagic(_))));
        let mut b = good;
        b[4] = 99;
        assert!(matches!(Header::decode(&b), Err(WireError::BadKind(99))));
        let mut b = good;
        b[13] = 1;
        assert!(matches!(Header::decode(&b), Err(WireError::BadReserved(_))));
        let mut b = good;
        b[8..12].copy_from_slice(&(META_BYTES_MAX + 1).to_le_bytes());
        assert!(matches!(
            Header::decode(&b),
            Err(WireError::MetaTooLarge { .. })
        ));
        let mut b = good;
        b[24..32].copy_from_slice(&(RAW_BYTES_MAX + 1).to_le_bytes());
        assert!(matches!(
            Header::decode(&b),
            Err(WireError::RawTooLarge { .. })
        ));
    }

    #[test]
    fn truncated_frames_are_closed_not_hung() {
        let bytes = frame_bytes(Kind::MetaRequest, &Request::Status);
        let mut payload = AlignedVec::new();
        for cut in 0..bytes.len() {
            let mut cursor = io::Cursor::new(&bytes[..cut]);
            let r = read_frame(&mut cursor, &mut payload);
            if cut < bytes.len() {
                assert!(r.is_err(), "cut at {cut} must fail");
            }
        }
    }

    fn header_claiming(meta_len: u32) -> [u8; HEADER_BYTES] {
        Header {
            kind: Kind::MetaRequest,
            flags: 0,
            meta_len,
            req_id: 1,
            raw_len: 0,
        }
        .encode()
    }

    #[test]
    fn a_huge_claim_followed_by_eof_allocates_nothing_big() {
        let mut bytes = header_claiming(META_BYTES_MAX).to_vec();
        bytes.extend_from_slice(&[7u8; 1000]);
        let mut payload = AlignedVec::new();
        let r = read_frame(&mut io::Cursor::new(&bytes), &mut payload);
        assert!(matches!(r, Err(WireError::Closed)), "{r:?}");
        assert!(
            payload.capacity() <= READ_STEP_BYTES,
            "capacity {} after 1000 bytes of a {META_BYTES_MAX}-byte claim",
            payload.capacity()
        );
    }

    #[test]
    fn payloads_larger_than_a_step_arrive_whole_and_reuse_the_buffer() {
        let len = 3 * READ_STEP_BYTES + 123;
        let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut bytes = header_claiming(len as u32).to_vec();
        bytes.extend_from_slice(&body);
        let mut payload = AlignedVec::new();
        read_frame(&mut io::Cursor::new(&bytes), &mut payload).unwrap();
        assert_eq!(payload.as_slice(), &body[..]);
        assert!(payload.capacity() <= 2 * len);
        // The steady state: the same frame again grows nothing.
        let (ptr, cap) = (payload.as_ptr(), payload.capacity());
        read_frame(&mut io::Cursor::new(&bytes), &mut payload).unwrap();
        assert_eq!((payload.as_ptr(), payload.capacity()), (ptr, cap));
        assert_eq!(payload.as_slice(), &body[..]);
    }

    #[test]
    fn a_server_read_tells_an_idle_peer_from_a_stalled_one() {
        use std::io::Write;
        let (mut a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        b.set_read_timeout(Some(std::time::Duration::from_millis(50)))
            .unwrap();
        let mut payload = AlignedVec::new();
        // Nothing sent: idle, not an error.
        assert!(read_request(&mut b, &mut payload).unwrap().is_none());
        // Half a header, then nothing.
        let head = header_claiming(META_BYTES_MAX);
        a.write_all(&head[..16]).unwrap();
        let r = read_request(&mut b, &mut payload);
        assert!(
            matches!(r, Err(WireError::Stalled { got: 16, want: 32 })),
            "{r:?}"
        );
        // A whole header claiming the most, 100 payload bytes, then nothing.
        let (mut a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        b.set_read_timeout(Some(std::time::Duration::from_millis(50)))
            .unwrap();
        a.write_all(&head).unwrap();
        a.write_all(&[1u8; 100]).unwrap();
        let r = read_request(&mut b, &mut payload);
        let want = HEADER_BYTES as u64 + META_BYTES_MAX as u64;
        assert!(
            matches!(r, Err(WireError::Stalled { got: 132, want: w }) if w == want),
            "{r:?}"
        );
        assert!(r.unwrap_err().is_timeout());
        assert!(payload.capacity() <= READ_STEP_BYTES);
        // The peer leaves: closed.
        drop(a);
        assert!(matches!(
            read_request(&mut b, &mut payload),
            Err(WireError::Closed)
        ));
    }

    #[test]
    fn garbage_payloads_are_errors_not_panics() {
        let mut rng = crate::testrng::SeededRng::from_env("garbage_payloads", 0x5eed_1234);
        let req = Request::Remove {
            keys: vec!["key-1".into(), "key-2".into()],
        };
        let mut payload = AlignedVec::new();
        encode_payload(&req, &mut payload).unwrap();
        for _ in 0..5000 {
            let seed = rng.next_u64();
            let mut bad = AlignedVec::<16>::new();
            bad.extend_from_slice(&payload);
            let i = (seed as usize) % bad.len();
            bad[i] ^= (seed >> 32) as u8 | 1;
            // Either a clean error or some valid message: never a panic.
            let _ = decode_payload::<Request>(&bad);
            let _ = decode_payload::<Reply>(&bad);
            let cut = (seed as usize >> 8) % bad.len();
            let mut short = AlignedVec::<16>::new();
            short.extend_from_slice(&payload[..cut]);
            assert!(decode_payload::<Request>(&short).is_err() || cut == payload.len());
        }
    }
}
