//! The meta service's core fed requests decoded from arbitrary bytes, as its driver feeds them
//! (`server.rs`: decode, then `MetaCore::handle`), with time passing between them.
//!
//! Input: records of `[time step][payload length, u16 LE][payload]`; the time step advances the
//! clock by that many 40 ms (up to about 10 s: leases, pending puts and member timeouts expire);
//! a payload that is not a valid `Request` is skipped, as the driver cuts off its peer.
//!
//! Checked: nothing panics; after every request every invariant of the core holds
//! (`MetaCore::check_invariants`); every reply encodes within the frame limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mmc_controlplane::meta::{MetaCore, MetaParams};
use mmc_controlplane::msg::Request;
use mmc_controlplane::wire;
use rkyv::util::AlignedVec;

mmc_fuzz::harness!();

/// Requests per input at most.
const REQUESTS_MAX: usize = 64;
const STEP_MS: u64 = 40;

fuzz_target!(|data: &[u8]| {
    // Epoch 1: ids start at 2^16 + 1, so a rejoining service's earlier incarnation can be below
    // them (a service of an earlier run: its objects rebuild the directory) or not.
    let mut core = MetaCore::new(MetaParams {
        epoch: 1,
        ..MetaParams::default()
    });
    let mut now_ms = 0u64;
    let mut rest = data;
    let mut payload = AlignedVec::<16>::new();
    let mut reply = AlignedVec::<16>::new();
    for _ in 0..REQUESTS_MAX {
        let [step, lo, hi, tail @ ..] = rest else {
            break;
        };
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
        let (bytes, next) = tail.split_at(len);
        rest = next;
        now_ms += u64::from(*step) * STEP_MS;
        payload.clear();
        payload.extend_from_slice(bytes);
        let Ok(req) = wire::decode_payload::<Request>(&payload) else {
            continue;
        };
        let answer = core.handle(now_ms, req);
        core.check_invariants();
        wire::encode_payload(&answer, &mut reply).expect("every reply encodes");
    }
    core.tick(now_ms + 60_000);
    core.check_invariants();
});
