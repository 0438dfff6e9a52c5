//! The `cuda` and `ascend` backends against fake runtimes (`fake/*.c`: the same C API on host
//! memory, stricter than the real ones about contexts, streams and synchronization), compiled
//! here with `cc` and loaded in place of `libcuda.so.1` / `libascendcl.so`. So the backends' symbol
//! loading, argument passing, context handling, error messages and IPC run on every machine,
//! including CI, which has no GPU.

use std::ffi::c_int;
use std::path::PathBuf;
use std::process::Command;

use super::*;
use crate::device::ascend::Ascend;
use crate::device::cuda::Cuda;

/// Where the child processes find the library their parent built.
const FAKE_LIB_ENV: &str = "MMC_TEST_FAKE_RUNTIME";
/// Set in a child that checks a driver without devices.
const NO_DEVICE_ENV: &str = "MMC_TEST_FAKE_NO_DEVICE";

/// A fake runtime built from `fake/<name>.c` for this process (or the parent's, in a child).
struct FakeLib {
    path: PathBuf,
    owned: bool,
}

impl FakeLib {
    fn get(name: &str) -> FakeLib {
        if let Ok(p) = std::env::var(FAKE_LIB_ENV) {
            return FakeLib {
                path: p.into(),
                owned: false,
            };
        }
        // `<file>_old`: the same source without the optional symbols (-DFAKE_ACL_OLD).
        let (file, old) = match name.strip_suffix("_old") {
            Some(f) => (f, true),
            None => (name, false),
        };
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("src/device/fake")
            .join(format!("{file}.c"));
        let path = std::env::temp_dir().join(format!(
            "mmc-{name}-{}-{:?}.so",
            std::process::id(),
            std::thread::current().id()
        ));
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let out = Command::new(&cc)
            .args(["-shared", "-fPIC", "-O1", "-Wall", "-o"])
            .arg(&path)
            .args(old.then_some("-DFAKE_ACL_OLD"))
            .arg(&src)
            .arg("-lpthread")
            .output()
            .unwrap_or_else(|e| panic!("{cc} (a C compiler, for the fake runtime): {e}"));
        assert!(
            out.status.success(),
            "compiling {}: {}",
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        FakeLib { path, owned: true }
    }

    fn name(&self) -> &str {
        self.path.to_str().unwrap()
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![(FAKE_LIB_ENV, self.name().to_owned())]
    }

    /// A function the fake exports for tests (`int f(void)`).
    fn probe(&self, symbol: &str) -> c_int {
        // SAFETY: the fake's test hooks named here are `int f(void)`; the library is the one the
        // backend loaded (dlopen hands back the same instance) and stays loaded (`lib` lives
        // here).
        unsafe {
            let lib = libloading::Library::new(&self.path).unwrap();
            let f = lib
                .get::<unsafe extern "C" fn() -> c_int>(symbol.as_bytes())
                .unwrap();
            f()
        }
    }

    /// `fake_acl_foreign_alloc`: device memory the backend did not allocate.
    fn foreign_alloc(&self) -> u64 {
        // SAFETY: `unsigned long long fake_acl_foreign_alloc(void)`; the library stays loaded as
        // in `probe`.
        unsafe {
            let lib = libloading::Library::new(&self.path).unwrap();
            let f = lib
                .get::<unsafe extern "C" fn() -> u64>(b"fake_acl_foreign_alloc")
                .unwrap();
            f()
        }
    }
}

impl Drop for FakeLib {
    fn drop(&mut self) {
        if self.owned {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Run this test again in a child with `env`; its stderr must contain `marker`.
fn child(test: &str, env: &[(&str, String)], marker: &str) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("start the child");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && log.contains(marker), "child: {log}");
}

const FAKE_CUDA_TEST: &str = "device::real_tests::fake_tests::fake_cuda_driver";

#[test]
fn fake_cuda_driver() {
    let fake = FakeLib::get("fake_cuda");
    if std::env::var(NO_DEVICE_ENV).is_ok() {
        // cuInit answers CUDA_ERROR_NO_DEVICE: the backend loads and counts none.
        let d = Cuda::load_from(&[fake.name()]).unwrap();
        assert_eq!(d.device_count().unwrap(), 0);
        assert_eq!(d.classify(0x1000), PtrKind::Host);
        let e = d.alloc(0, 16).unwrap_err();
        assert!(e.to_string().contains("invalid device 0: 0 devices"), "{e}");
        // SAFETY: nothing to register (the backend answers that it cannot).
        assert!(!unsafe { d.register_host(0x1000, 16) }.unwrap());
        eprintln!("no-device child passed");
        return;
    }
    let d = Cuda::load_from(&[fake.name()]).unwrap();
    if let Some(h) = ipc_child_handle() {
        return ipc_child(&d, &h);
    }
    assert_eq!(d.device_count().unwrap(), 2);
    checks_with_ipc_child(&d, FAKE_CUDA_TEST, &fake.env());

    // The caller's context is put back after every call; `bind` sets it.
    let current = || fake.probe("fake_cuda_current_device");
    d.bind(1).unwrap();
    assert_eq!(current(), 1);
    let a = d.alloc(0, 4096).unwrap();
    assert_eq!(
        current(),
        1,
        "alloc on device 0 left device 0's context current"
    );
    let src = pattern(4096, 7);
    let mut out = vec![0u8; 4096];
    // SAFETY: live vectors.
    unsafe { d.copy(&[h2d(a, &src), d2h(&mut out, a)]) }.unwrap();
    assert_eq!(out, src);
    assert_eq!(
        current(),
        1,
        "a copy on device 0 left device 0's context current"
    );
    // A thread without a context classifies from device 0's and keeps it.
    let kind = std::thread::scope(|s| s.spawn(|| (d.classify(a), current())).join().unwrap());
    assert_eq!(kind, (PtrKind::Device(0), 0));

    // The driver's errors come back named.
    // SAFETY: live vector; the copy runs past the allocation and is refused by the driver.
    let e = unsafe { d.copy(&[h2d(a + 4090, &src[..16])]) }.unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("cuMemcpyHtoDAsync_v2"), "{msg}");
    assert!(
        msg.contains("CUDA_ERROR_INVALID_VALUE (1): fake driver error"),
        "{msg}"
    );
    // CUDA cannot open a handle in the process that exported it; a malformed handle is refused.
    let h = d.export(a).unwrap();
    let e = d.import(&h, 0).unwrap_err();
    assert!(e.to_string().contains("CUDA_ERROR_INVALID_CONTEXT"), "{e}");
    let short = IpcHandle::Opaque {
        bytes: vec![0; 63],
        len: 4096,
    };
    assert!(d
        .import(&short, 0)
        .unwrap_err()
        .to_string()
        .contains("64 bytes"));
    d.free(a).unwrap();

    child(
        FAKE_CUDA_TEST,
        &[
            (FAKE_LIB_ENV, fake.name().to_owned()),
            (NO_DEVICE_ENV, "1".into()),
            ("FAKE_CUDA_DEVICES", "0".into()),
        ],
        "no-device child passed",
    );
}

const FAKE_ASCEND_TEST: &str = "device::real_tests::fake_tests::fake_ascend_runtime";

#[test]
fn fake_ascend_runtime() {
    let fake = FakeLib::get("fake_ascend");
    let d = Ascend::load_from(&[fake.name()]).unwrap();
    if let Some(h) = ipc_child_handle() {
        return ipc_child(&d, &h);
    }
    assert_eq!(d.device_count().unwrap(), 2);
    // A second start answers ACL_ERROR_REPEAT_INITIALIZE, which is fine.
    let again = Ascend::load_from(&[fake.name()]).unwrap();
    assert_eq!(again.device_count().unwrap(), 2);
    checks_with_ipc_child(&d, FAKE_ASCEND_TEST, &fake.env());

    // The caller's device is put back after every call; `bind` sets it.
    let current = || fake.probe("fake_acl_current_device");
    d.bind(1).unwrap();
    let a = d.alloc(0, 4096).unwrap();
    assert_eq!(current(), 1, "alloc on device 0 left device 0 current");
    let src = pattern(4096, 7);
    let mut out = vec![0u8; 4096];
    // SAFETY: live vectors.
    unsafe { d.copy(&[h2d(a, &src), d2h(&mut out, a)]) }.unwrap();
    assert_eq!(out, src);
    assert_eq!(current(), 1, "a copy on device 0 left device 0 current");
    // Errors carry aclGetRecentErrMsg's text.
    // SAFETY: live vector; the copy runs past the allocation and is refused by the runtime.
    let e = unsafe { d.copy(&[h2d(a + 4090, &src[..16])]) }.unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("aclrtMemcpyAsync: aclError 107000"), "{msg}");
    assert!(msg.contains("fake: copy outside an allocation"), "{msg}");
    // Memory the backend did not allocate (torch_npu's): classified by aclrtPointerGetAttributes,
    // and copied on its own device.
    let foreign = fake.foreign_alloc();
    assert_ne!(foreign, 0);
    assert_eq!(d.classify(foreign + 100), PtrKind::Device(1));
    d.bind(0).unwrap();
    // SAFETY: live vectors.
    unsafe { d.copy(&[h2d(foreign, &src), d2h(&mut out, foreign)]) }.unwrap();
    assert_eq!(out, src);
    // aclrtSetDevice counts references: the backend sets a device only when another is current.
    d.bind(0).unwrap();
    let before = fake.probe("fake_acl_set_device_calls");
    for _ in 0..50 {
        // SAFETY: live vectors.
        unsafe { d.copy(&[h2d(a, &src), d2h(&mut out, a)]) }.unwrap();
    }
    let calls = fake.probe("fake_acl_set_device_calls") - before;
    assert!(
        calls == 0,
        "50 copies on the current device called aclrtSetDevice {calls} times"
    );
    // Freeing an exported allocation closes its key first (the runtime refuses otherwise).
    let _ = d.export(a).unwrap();
    assert_eq!(fake.probe("fake_acl_open_keys"), 1);
    d.free(a).unwrap();
    assert_eq!(fake.probe("fake_acl_open_keys"), 0);
}

#[test]
fn fake_ascend_runtime_without_optional_symbols() {
    // Built without IPC, host registration and pointer attributes (an older CANN).
    let fake = FakeLib::get("fake_ascend_old");
    let d = Ascend::load_from(&[fake.name()]).unwrap();
    let a = d.alloc(1, 4096).unwrap();
    // Classification falls back to the backend's own table.
    assert_eq!(d.classify(a + 10), PtrKind::Device(1));
    assert_eq!(d.classify(&d as *const _ as u64), PtrKind::Host);
    let e = d.export(a).unwrap_err();
    assert!(e.to_string().contains("aclrtIpcMemGetExportKey"), "{e}");
    let h = IpcHandle::Opaque {
        bytes: b"key".to_vec(),
        len: 4096,
    };
    let e = d.import(&h, 0).unwrap_err();
    assert!(e.to_string().contains("aclrtIpcMemImportByKey"), "{e}");
    let buf = vec![0u8; 4096];
    // SAFETY: `buf` outlives the (refused) registration.
    assert!(!unsafe { d.register_host(buf.as_ptr() as u64, 4096) }.unwrap());
    check_round_trip(&d);
    check_refusals(&d);
    d.free(a).unwrap();
}
