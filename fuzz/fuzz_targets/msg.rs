//! Every message type decoded from arbitrary payload bytes, as its receiver decodes it: rkyv's
//! validated access (bytecheck), then deserialization. The payload sits in a 16-byte aligned
//! buffer, as the readers' `AlignedVec` holds it.
//!
//! Checked, for `Request`, `Reply`, `DataRequest`, `DataReply`, `ShmHello` and `RdmaHello` alike: nothing
//! panics; validation in place and deserialization agree; what decodes re-encodes, decodes back
//! to the same message and encodes to the same bytes again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mmc_controlplane::msg::{DataReply, DataRequest, RdmaHello, Reply, Request, ShmHello};
use mmc_controlplane::wire;
use rkyv::util::AlignedVec;

mmc_fuzz::harness!();

fuzz_target!(|data: &[u8]| {
    let mut payload = AlignedVec::<16>::with_capacity(data.len());
    payload.extend_from_slice(data);
    check::<Request>(&payload);
    check::<Reply>(&payload);
    check::<DataRequest>(&payload);
    check::<DataReply>(&payload);
    check::<ShmHello>(&payload);
    check::<RdmaHello>(&payload);
});

fn check<T>(payload: &AlignedVec)
where
    T: rkyv::Archive + PartialEq + std::fmt::Debug + mmc_fuzz::Encode,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
        + rkyv::Deserialize<T, rkyv::rancor::Strategy<rkyv::de::Pool, rkyv::rancor::Error>>,
{
    let valid = rkyv::access::<T::Archived, rkyv::rancor::Error>(payload).is_ok();
    let decoded = wire::decode_payload::<T>(payload);
    assert_eq!(
        valid,
        decoded.is_ok(),
        "{}: validation and deserialization disagree",
        std::any::type_name::<T>()
    );
    if let Ok(msg) = decoded {
        mmc_fuzz::assert_round_trip(&msg);
    }
}
