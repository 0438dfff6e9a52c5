use super::sim::SimDevice;
use super::*;

fn h2d(dst: u64, src: &[u8]) -> DeviceCopy {
    DeviceCopy {
        dst,
        src: src.as_ptr() as u64,
        len: src.len() as u64,
        kind: CopyKind::HostToDevice,
    }
}

fn d2h(dst: &mut [u8], src: u64) -> DeviceCopy {
    DeviceCopy {
        dst: dst.as_mut_ptr() as u64,
        src,
        len: dst.len() as u64,
        kind: CopyKind::DeviceToHost,
    }
}

#[test]
fn sim_round_trip_and_offsets() {
    let d = SimDevice::new(2, 1 << 30).unwrap();
    let a = d.alloc(1, 10_000).unwrap();
    let b = d.alloc(0, 10_000).unwrap();
    assert_eq!(d.classify(a), PtrKind::Device(1));
    assert_eq!(d.classify(a + 9_999), PtrKind::Device(1));
    assert_eq!(d.classify(b + 5), PtrKind::Device(0));
    let host = [7u8; 16];
    assert_eq!(d.classify(host.as_ptr() as u64), PtrKind::Host);
    let src: Vec<u8> = (0..4096u32).map(|i| (i * 31 % 251) as u8).collect();
    let mut out = vec![0u8; 4096];
    // SAFETY: host ranges are live vectors.
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
    assert_eq!(out, src);
    d.free(a).unwrap();
    d.free(b).unwrap();
}

#[test]
fn sim_fails_where_hardware_would() {
    let d = SimDevice::new(1, 1 << 20).unwrap();
    let a = d.alloc(0, 4096).unwrap();
    let mut buf = vec![0u8; 8192];
    // SAFETY: host ranges are live vectors (the copies are refused before touching them anyway).
    unsafe {
        // Past the allocation.
        let e = d.copy(&[d2h(&mut buf, a)]).unwrap_err();
        assert!(e.to_string().contains("not inside one allocation"), "{e}");
        // A device pointer named as the host side.
        let e = d
            .copy(&[DeviceCopy {
                dst: a,
                src: a,
                len: 16,
                kind: CopyKind::HostToDevice,
            }])
            .unwrap_err();
        assert!(e.to_string().contains("is device memory"), "{e}");
    }
    // Capacity, device ids, double free, stale pointers.
    let e = d.alloc(0, 2 << 20).unwrap_err();
    assert!(e.to_string().contains("out of memory"), "{e}");
    assert!(d.alloc(1, 16).is_err());
    assert!(d.bind(1).is_err());
    d.bind(0).unwrap();
    d.free(a).unwrap();
    assert!(d.free(a).is_err());
    assert_eq!(d.classify(a), PtrKind::Device(0));
    // SAFETY: as above.
    let e = unsafe { d.copy(&[d2h(&mut buf[..16], a)]) }.unwrap_err();
    assert!(e.to_string().contains("not device memory") || e.to_string().contains("allocation"));
    // Space is given back on free.
    let b = d.alloc(0, 1 << 20).unwrap();
    d.free(b).unwrap();
}

#[test]
fn sim_export_import_shares_bytes() {
    let d = SimDevice::new(1, 1 << 30).unwrap();
    let a = d.alloc(0, 1 << 16).unwrap();
    let h = d.export(a).unwrap();
    let b = d.import(&h, 0).unwrap();
    assert_ne!(a, b);
    // SAFETY: live host vectors.
    unsafe { d.copy(&[h2d(a + 5, b"hello")]).unwrap() };
    let mut out = [0u8; 5];
    // SAFETY: as above.
    unsafe { d.copy(&[d2h(&mut out, b + 5)]).unwrap() };
    assert_eq!(&out, b"hello");
    assert!(d.free(b).is_err(), "an import is closed, not freed");
    d.close_import(b).unwrap();
    assert!(d.close_import(a).is_err());
    d.free(a).unwrap();
    assert!(d.export(a).is_err());
}

/// A device pointer dereferenced on the host faults, as on a GPU: a forgotten device copy
/// cannot pass by accident.
#[test]
fn sim_pointer_faults_on_the_host() {
    let d = SimDevice::new(1, 1 << 30).unwrap();
    let a = d.alloc(0, 4096).unwrap();
    // SAFETY: fork; the child only reads one byte (faulting) and exits, calling nothing that
    // could deadlock on a lock held by another thread of the parent.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: deliberately invalid: this read must fault.
        let v = unsafe { std::ptr::read_volatile(a as *const u8) };
        // SAFETY: exiting the child without running the parent's destructors.
        unsafe { libc::_exit(v as i32 + 100) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(
        libc::WIFSIGNALED(status),
        "the child exited normally: {status:#x}"
    );
    assert_eq!(libc::WTERMSIG(status), libc::SIGSEGV);
}

#[test]
fn none_refuses_with_a_reason() {
    let d = none::NoDevice;
    let e = d.alloc(0, 16).unwrap_err();
    assert!(e.to_string().contains("no device backend"), "{e}");
    assert_eq!(d.classify(0x1000), PtrKind::Host);
    assert_eq!(d.device_count().unwrap(), 0);
}

#[test]
fn choices_parse() {
    assert_eq!(
        "auto".parse::<BackendChoice>().unwrap(),
        BackendChoice::Auto
    );
    assert_eq!(
        "SIM".parse::<BackendChoice>().unwrap(),
        BackendChoice::Only(BackendKind::Sim)
    );
    assert!("gpu".parse::<BackendChoice>().is_err());
    assert_eq!("d2h".parse::<CopyKind>().unwrap(), CopyKind::DeviceToHost);
    assert!("h2h".parse::<CopyKind>().is_err());
}
