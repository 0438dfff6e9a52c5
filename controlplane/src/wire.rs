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
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

impl WireError {
    /// True when the socket timed out (the caller maps it to the timeout code).
    pub fn is_timeout(&self) -> bool {
        matches!(self, WireError::Io(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
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
pub fn read_frame<R: Read>(r: &mut R, payload: &mut AlignedVec) -> Result<Header, WireError> {
    let mut head = [0u8; HEADER_BYTES];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(WireError::Closed),
        Err(e) => return Err(WireError::Io(e)),
    }
    let header = Header::decode(&head)?;
    payload.clear();
    payload.resize(header.meta_len as usize, 0);
    r.read_exact(payload.as_mut_slice()).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            WireError::Closed
        } else {
            WireError::Io(e)
        }
    })?;
    Ok(header)
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
