//! The frame decoder on a connection's byte stream, as the servers read it: frames one after
//! another with one reused payload buffer, each payload decoded as its kind says (the meta
//! service deserializes a `Request`; the data server validates a `DataRequest` in place; clients
//! deserialize replies), raw bytes skipped.
//!
//! Input: one control byte (how the stream trickles in and where reads time out, see
//! `mmc_fuzz::Trickle`; its bit 3 picks the client reader `read_frame` over the server's
//! `read_request`), then the stream.
//!
//! Checked: nothing panics; every frame returned has the payload its header announced, and its
//! header re-encodes to the bytes read; the payload buffer grows only with bytes that arrived
//! (never to a header's claim); a decoded payload re-encodes to one that decodes the same.
#![no_main]

use std::io::{self, Read};

use libfuzzer_sys::fuzz_target;
use mmc_controlplane::msg::{ArchivedDataRequest, DataReply, DataRequest, Reply, Request};
use mmc_controlplane::wire::{self, Header, Kind, WireError, HEADER_BYTES, READ_STEP_BYTES};
use mmc_fuzz::Trickle;
use rkyv::util::AlignedVec;

mmc_fuzz::harness!();

fuzz_target!(|data: &[u8]| {
    let Some((&control, stream)) = data.split_first() else {
        return;
    };
    let server = control & 0x8 == 0;
    let mut r = Trickle::new(control, stream);
    let mut payload = AlignedVec::new();
    // Each pass consumes a byte or meets a timeout, and timeouts never come twice in a row.
    for _ in 0..2 * stream.len() + 4 {
        let before = r.consumed();
        let cap_before = payload.capacity();
        let got = if server {
            wire::read_request(&mut r, &mut payload)
        } else {
            wire::read_frame(&mut r, &mut payload).map(Some)
        };
        let arrived = r.consumed() - before;
        let bound = cap_before.max((arrived + READ_STEP_BYTES).next_power_of_two());
        assert!(
            payload.capacity() <= bound,
            "payload buffer of {} bytes after {arrived} bytes arrived (bound {bound})",
            payload.capacity()
        );
        match got {
            Ok(Some(header)) => {
                check_frame(stream, before, r.consumed(), &header, &payload);
                decode_as_peer(&header, &payload);
                skip_raw(&mut r, header.raw_len);
            }
            // Idle between frames: the server reads on.
            Ok(None) => assert!(server, "only a server read reports idleness"),
            Err(WireError::Closed) if r.remaining().is_empty() => break,
            Err(e) => {
                assert!(
                    !matches!(e, WireError::Closed) || r.remaining().is_empty(),
                    "closed with {} bytes unread",
                    r.remaining().len()
                );
                break;
            }
        }
    }
});

/// The frame read from `stream[start..end]` is exactly its header and the payload it announced.
fn check_frame(stream: &[u8], start: usize, end: usize, header: &Header, payload: &[u8]) {
    assert_eq!(payload.len(), header.meta_len as usize);
    assert_eq!(end - start, HEADER_BYTES + payload.len());
    assert_eq!(&header.encode()[..], &stream[start..start + HEADER_BYTES]);
    assert_eq!(payload, &stream[start + HEADER_BYTES..end]);
    assert!(header.meta_len <= wire::META_BYTES_MAX);
    assert!(header.raw_len <= wire::RAW_BYTES_MAX);
}

/// Decodes the payload as the peer that receives this kind of frame does.
fn decode_as_peer(header: &Header, payload: &AlignedVec) {
    match header.kind {
        Kind::MetaRequest | Kind::MetaOneway => {
            round_trip::<Request>(payload);
        }
        Kind::MetaReply => {
            round_trip::<Reply>(payload);
        }
        Kind::DataRequest => {
            let in_place =
                rkyv::access::<ArchivedDataRequest, rkyv::rancor::Error>(payload).is_ok();
            let owned = round_trip::<DataRequest>(payload);
            assert_eq!(in_place, owned, "validation and deserialization disagree");
        }
        Kind::DataReply => {
            round_trip::<DataReply>(payload);
        }
    }
}

/// Decodes `payload` as `T`; a message that decodes re-encodes to bytes that decode the same.
/// Returns whether it decoded.
fn round_trip<T>(payload: &AlignedVec) -> bool
where
    T: rkyv::Archive + PartialEq + std::fmt::Debug + mmc_fuzz::Encode,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
        + rkyv::Deserialize<T, rkyv::rancor::Strategy<rkyv::de::Pool, rkyv::rancor::Error>>,
{
    let Ok(msg) = wire::decode_payload::<T>(payload) else {
        return false;
    };
    mmc_fuzz::assert_round_trip(&msg);
    true
}

/// Reads past the raw bytes that follow a frame (as a server discards a refused write's bytes).
fn skip_raw(r: &mut Trickle<'_>, raw_len: u64) {
    let mut left = raw_len;
    let mut sink = [0u8; 4096];
    while left > 0 {
        let want = sink.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        match r.read(&mut sink[..want]) {
            Ok(0) => return,
            Ok(n) => left -= n as u64,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}
