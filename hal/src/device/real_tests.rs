//! Checks every backend must pass (round trip, offsets, classification, refusals, pinning, IPC),
//! run here against `sim`, and against a real GPU/NPU when `MMC_DEVICE_BACKEND` names `cuda` or
//! `ascend` and the runtime sees a device (`scripts/gpu-check.sh`); plus the loading tests of the
//! real backends, which run everywhere.
//!
//! The real-device test prints why it skips when there is no device; with
//! `MMC_DEVICE_REQUIRED=1` (gpu-check.sh sets it) a missing runtime or device fails it instead.

use super::ascend::Ascend;
use super::cuda::Cuda;
use super::sim::SimDevice;
use super::*;

#[path = "fake_tests.rs"]
mod fake_tests;

/// Set in the child process of the IPC check: `<handle hex>:<len>`.
const IPC_CHILD_ENV: &str = "MMC_DEVICE_IPC_CHILD";
/// This test's name, for the child process to run.
const REAL_TEST: &str = "device::real_tests::real_device_round_trip_offsets_ipc";

pub(super) fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(31).wrapping_add(seed) % 251) as u8)
        .collect()
}

pub(super) fn h2d(dst: u64, src: &[u8]) -> DeviceCopy {
    DeviceCopy {
        dst,
        src: src.as_ptr() as u64,
        len: src.len() as u64,
        kind: CopyKind::HostToDevice,
    }
}

pub(super) fn d2h(dst: &mut [u8], src: u64) -> DeviceCopy {
    DeviceCopy {
        dst: dst.as_mut_ptr() as u64,
        src,
        len: dst.len() as u64,
        kind: CopyKind::DeviceToHost,
    }
}

/// Bytes through host -> device -> (other) device -> host, at offsets, in one batch and in
/// several; sizes from 1 byte to 4 MiB; classification of every pointer.
pub(super) fn check_round_trip(d: &dyn Device) {
    let n = d.device_count().unwrap();
    assert!(n > 0, "{} sees no device", d.kind());
    let last = n - 1;
    let a = d.alloc(0, 10_000).unwrap();
    let b = d.alloc(last, 10_000).unwrap();
    assert_eq!(d.classify(a), PtrKind::Device(0));
    assert_eq!(d.classify(a + 9_999), PtrKind::Device(0));
    assert_eq!(d.classify(b + 5), PtrKind::Device(last));
    let host = [7u8; 16];
    assert_eq!(d.classify(host.as_ptr() as u64), PtrKind::Host);
    let heap = vec![0u8; 1 << 20];
    assert_eq!(d.classify(heap.as_ptr() as u64), PtrKind::Host);

    let src = pattern(4096, 1);
    let mut out = vec![0u8; 4096];
    // SAFETY: every host range is a live vector of the copy's length.
    unsafe {
        d.copy(&[
            h2d(a + 100, &src),
            DeviceCopy {
                dst: b + 7,
                src: a + 100,
                len: 4096,
                kind: CopyKind::DeviceToDevice,
            },
            d2h(&mut out, b + 7),
        ])
        .unwrap();
    }
    assert!(
        out == src,
        "h2d -> d2d (device 0 -> {last}) -> d2h: bytes differ"
    );

    // One byte, an odd size, and a large buffer, each at an offset; a batch of many copies.
    for (len, off) in [(1usize, 0u64), (1, 4095), (777, 3), (4 << 20, 1 << 20)] {
        let buf = d.alloc(last, off + len as u64 + 1).unwrap();
        let src = pattern(len, len as u32);
        let mut back = vec![0u8; len];
        // SAFETY: live vectors.
        unsafe { d.copy(&[h2d(buf + off, &src), d2h(&mut back, buf + off)]) }.unwrap();
        assert!(back == src, "{len} bytes at offset {off}: bytes differ");
        d.free(buf).unwrap();
    }
    let pieces: Vec<Vec<u8>> = (0..64).map(|i| pattern(97 + i, i as u32)).collect();
    let big = d.alloc(0, 1 << 20).unwrap();
    let mut at = Vec::new();
    let mut off = 0;
    for p in &pieces {
        at.push(big + off);
        off += p.len() as u64 + 13;
    }
    let up: Vec<DeviceCopy> = pieces.iter().zip(&at).map(|(p, &o)| h2d(o, p)).collect();
    // SAFETY: live vectors.
    unsafe { d.copy(&up) }.unwrap();
    let mut backs: Vec<Vec<u8>> = pieces.iter().map(|p| vec![0u8; p.len()]).collect();
    let down: Vec<DeviceCopy> = backs.iter_mut().zip(&at).map(|(b, &o)| d2h(b, o)).collect();
    // SAFETY: live vectors, not otherwise referenced until the copy returns.
    unsafe { d.copy(&down) }.unwrap();
    assert!(
        backs == pieces,
        "a batch of 64 copies at uneven offsets: bytes differ"
    );
    d.free(big).unwrap();

    d.bind(last).unwrap();
    d.free(a).unwrap();
    d.free(b).unwrap();
}

/// What every backend refuses: double frees, foreign pointers, bad device ids, a device
/// pointer named as the host side of a copy, unregistering what was never registered.
pub(super) fn check_refusals(d: &dyn Device) {
    let n = d.device_count().unwrap();
    let a = d.alloc(0, 4096).unwrap();
    let host = [0u8; 64];
    assert!(d.free(host.as_ptr() as u64).is_err(), "freeing host memory");
    assert!(
        d.free(a + 64).is_err(),
        "freeing the middle of an allocation"
    );
    assert!(d.alloc(n, 16).is_err(), "device {n} of {n}");
    assert!(d.alloc(0, 0).is_err(), "zero bytes");
    assert!(d.bind(n).is_err());
    // SAFETY: the copy is refused before anything is touched (and `a` is device memory).
    let e = unsafe {
        d.copy(&[DeviceCopy {
            dst: a,
            src: a,
            len: 16,
            kind: CopyKind::HostToDevice,
        }])
    }
    .unwrap_err();
    assert!(e.to_string().contains("device"), "{e}");
    assert!(d.unregister_host(host.as_ptr() as u64).is_err());
    assert!(d.close_import(a).is_err(), "an allocation is not an import");
    d.free(a).unwrap();
    assert!(d.free(a).is_err(), "double free");
    // SAFETY: empty batch.
    unsafe { d.copy(&[]) }.unwrap();
}

/// Registered host memory copies like any other (where the backend can register).
pub(super) fn check_pinned(d: &dyn Device) {
    // Page-aligned, as some runtimes want registered memory to be.
    let mut buf = memmap2::MmapMut::map_anon(1 << 20).unwrap();
    let want = pattern(1 << 20, 5);
    buf.copy_from_slice(&want);
    let ptr = buf.as_mut_ptr() as u64;
    // SAFETY: `buf` outlives the registration (unregistered below).
    let pinned = unsafe { d.register_host(ptr, buf.len() as u64) }.unwrap();
    if !pinned {
        eprintln!(
            "{}: cannot register host memory; copies use pageable memory",
            d.kind()
        );
        return;
    }
    // SAFETY: as above.
    assert!(unsafe { d.register_host(ptr, buf.len() as u64) }.is_err());
    let dev = d.alloc(0, 1 << 20).unwrap();
    // SAFETY: `buf` is live and not referenced during the copies.
    unsafe { d.copy(&[h2d(dev, &buf)]) }.unwrap();
    buf.fill(0);
    // SAFETY: as above.
    unsafe { d.copy(&[d2h(&mut buf, dev)]) }.unwrap();
    assert!(
        buf[..] == want[..],
        "bytes through registered host memory differ"
    );
    d.unregister_host(ptr).unwrap();
    assert!(d.unregister_host(ptr).is_err());
    d.free(dev).unwrap();
}

/// Export an allocation; `open` maps the handle (in this process for sim, another process for
/// the real runtimes), checks bytes at 4096.. and writes `pattern(4096, 9)` at 8192.
pub(super) fn check_ipc(d: &dyn Device, open: impl FnOnce(&IpcHandle)) {
    let a = d.alloc(0, 1 << 20).unwrap();
    let src = pattern(4096, 3);
    // SAFETY: live vector.
    unsafe { d.copy(&[h2d(a + 4096, &src)]) }.unwrap();
    let h = d.export(a).unwrap();
    match &h {
        IpcHandle::Fd { len, .. } | IpcHandle::Opaque { len, .. } => assert!(*len >= 1 << 20),
    }
    open(&h);
    let mut out = vec![0u8; 4096];
    // SAFETY: live vector.
    unsafe { d.copy(&[d2h(&mut out, a + 8192)]) }.unwrap();
    assert!(
        out == pattern(4096, 9),
        "bytes written by the importer differ"
    );
    assert!(d.export(a + 1).is_err(), "not the start of an allocation");
    d.free(a).unwrap();
}

/// The importer's side of [`check_ipc`].
pub(super) fn ipc_importer(d: &dyn Device, h: &IpcHandle) {
    let b = d.import(h, 0).unwrap();
    assert!(d.free(b).is_err(), "an import is closed, not freed");
    let mut out = vec![0u8; 4096];
    // SAFETY: live vectors.
    unsafe { d.copy(&[d2h(&mut out, b + 4096)]) }.unwrap();
    assert!(
        out == pattern(4096, 3),
        "bytes written by the exporter differ"
    );
    let mine = pattern(4096, 9);
    // SAFETY: live vector.
    unsafe { d.copy(&[h2d(b + 8192, &mine)]) }.unwrap();
    d.close_import(b).unwrap();
    assert!(d.close_import(b).is_err());
}

#[test]
fn sim_passes_the_backend_checks() {
    let d = SimDevice::new(2, 1 << 30).unwrap();
    check_round_trip(&d);
    check_refusals(&d);
    check_pinned(&d);
    check_ipc(&d, |h| ipc_importer(&d, h));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The backend `MMC_DEVICE_BACKEND` names, if it is a real one that loads and sees a device.
fn real_backend() -> Option<Box<dyn Device>> {
    let want = std::env::var(BACKEND_ENV).unwrap_or_default();
    let kind = match want.trim().to_ascii_lowercase().as_str() {
        "cuda" => BackendKind::Cuda,
        "ascend" => BackendKind::Ascend,
        _ => {
            eprintln!(
                "skipped: {BACKEND_ENV}={want:?} names no real device backend \
                 (set it to cuda or ascend on a machine with a device)"
            );
            return None;
        }
    };
    let required = std::env::var("MMC_DEVICE_REQUIRED").is_ok_and(|v| v == "1");
    let why = match open(BackendChoice::Only(kind)) {
        Ok(d) => match d.device_count() {
            Ok(n) if n > 0 => {
                eprintln!("{kind}: {n} device(s)");
                return Some(d);
            }
            Ok(_) => format!("{kind} loaded but sees no device"),
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    };
    assert!(!required, "MMC_DEVICE_REQUIRED=1: {why}");
    eprintln!("skipped: {why}");
    None
}

/// In the IPC child process (see [`checks_with_ipc_child`]): the handle to import.
pub(super) fn ipc_child_handle() -> Option<IpcHandle> {
    let arg = std::env::var(IPC_CHILD_ENV).ok()?;
    let (h, len) = arg.split_once(':').expect("<hex>:<len>");
    Some(IpcHandle::Opaque {
        bytes: unhex(h),
        len: len.parse().unwrap(),
    })
}

/// The IPC child's work: import, check, write, close; then the line the parent looks for.
pub(super) fn ipc_child(d: &dyn Device, h: &IpcHandle) {
    ipc_importer(d, h);
    eprintln!("{IPC_CHILD_OK}");
}

const IPC_CHILD_OK: &str = "IPC child: import, read, write and close passed";

/// Run this test binary again as `test` (its full name) with `handle` and `env`.
pub(super) fn run_ipc_child(test: &str, handle: &IpcHandle, env: &[(&str, String)]) {
    let IpcHandle::Opaque { bytes, len } = handle else {
        panic!("a real backend exports opaque handles")
    };
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(IPC_CHILD_ENV, format!("{}:{len}", hex(bytes)))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("start the IPC child");
    let log = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "--- IPC child ---\n{log}{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(out.status.success(), "the IPC child failed: {}", out.status);
    assert!(log.contains(IPC_CHILD_OK), "the IPC child ran no check");
}

/// Every check against `d`. CUDA cannot open an IPC handle in the process that exported it, so
/// the importer is this test binary again (`test`, its full name), run as a child with the
/// handle and `env` in its environment.
pub(super) fn checks_with_ipc_child(d: &dyn Device, test: &str, env: &[(&str, String)]) {
    check_round_trip(d);
    check_refusals(d);
    check_pinned(d);
    check_ipc(d, |h| run_ipc_child(test, h, env));
    eprintln!(
        "{}: round trip, offsets, refusals, pinning and IPC passed",
        d.kind()
    );
}

/// The real backend's checks (scripts/gpu-check.sh runs them).
#[test]
fn real_device_round_trip_offsets_ipc() {
    if let Some(h) = ipc_child_handle() {
        let d = real_backend().expect("the IPC child needs the parent's backend");
        return ipc_child(d.as_ref(), &h);
    }
    let Some(d) = real_backend() else { return };
    checks_with_ipc_child(d.as_ref(), REAL_TEST, &[]);
}

#[test]
fn missing_runtimes_fail_to_load_naming_the_library() {
    let e = Cuda::load_from(&["libmmc-absent-cuda.so.1", "libmmc-absent-cuda.so"]).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("device backend cuda"), "{msg}");
    assert!(msg.contains("load the runtime"), "{msg}");
    assert!(msg.contains("libmmc-absent-cuda.so.1") && msg.contains("libmmc-absent-cuda.so:"));
    let e = Ascend::load_from(&["libmmc-absent-ascendcl.so"]).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("device backend ascend"), "{msg}");
    assert!(msg.contains("libmmc-absent-ascendcl.so"), "{msg}");
    // A library that loads but is not the runtime: a missing symbol is named.
    let e = Cuda::load_from(&["libc.so.6"]).unwrap_err();
    assert!(e.to_string().contains("symbol cuInit"), "{e}");
    let e = Ascend::load_from(&["libc.so.6"]).unwrap_err();
    assert!(e.to_string().contains("symbol aclInit"), "{e}");
}

#[test]
fn only_a_real_backend_fails_when_its_runtime_is_absent() {
    match Cuda::load() {
        Err(e) => {
            let Err(only) = open(BackendChoice::Only(BackendKind::Cuda)) else {
                panic!("cuda opened although it failed to load")
            };
            assert_eq!(only.to_string(), e.to_string());
            assert!(only.to_string().contains("libcuda.so.1"), "{only}");
        }
        Ok(_) => {
            let d = open(BackendChoice::Only(BackendKind::Cuda)).unwrap();
            assert_eq!(d.kind(), BackendKind::Cuda);
        }
    }
    match Ascend::load() {
        Err(e) => {
            let Err(only) = open(BackendChoice::Only(BackendKind::Ascend)) else {
                panic!("ascend opened although it failed to load")
            };
            assert_eq!(only.to_string(), e.to_string());
            assert!(only.to_string().contains("libascendcl.so"), "{only}");
        }
        Ok(_) => {
            let d = open(BackendChoice::Only(BackendKind::Ascend)).unwrap();
            assert_eq!(d.kind(), BackendKind::Ascend);
        }
    }
}

#[test]
fn auto_falls_back_to_none() {
    let sees = |r: Result<u32, HalError>| r.is_ok_and(|n| n > 0);
    let expected = if Cuda::load().is_ok_and(|c| sees(c.device_count())) {
        BackendKind::Cuda
    } else if Ascend::load().is_ok_and(|a| sees(a.device_count())) {
        BackendKind::Ascend
    } else {
        BackendKind::None
    };
    let d = open(BackendChoice::Auto).unwrap();
    assert_eq!(d.kind(), expected);
    if expected == BackendKind::None {
        let e = d.alloc(0, 16).unwrap_err();
        assert!(e.to_string().contains("no device backend"), "{e}");
    }
}
