//! Tests of the arena: creation, copies, vectored I/O through sockets.

use super::*;
use memmap2::MmapOptions;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

fn arena(bytes: u64) -> Arena {
    Arena::new("mmc-hal-test", bytes, true).expect("arena")
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn arena_is_send_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Arena>();
}

#[test]
fn zero_size_rejected() {
    assert!(matches!(
        Arena::new("z", 0, false),
        Err(HalError::InvalidSize(_))
    ));
    assert!(matches!(
        Arena::new("big", u64::MAX, false),
        Err(HalError::InvalidSize(_))
    ));
    assert!(matches!(
        Arena::new("a\0b", 4096, false),
        Err(HalError::InvalidSize(_))
    ));
}

#[test]
fn creates_with_and_without_prefault() {
    for prefault in [false, true] {
        let a = Arena::new("mmc-hal-create", 3 * 1024 * 1024 + 5, prefault).unwrap();
        assert!(a.len() >= 3 * 1024 * 1024 + 5);
        assert_eq!(a.len() % BASE_PAGE_BYTES, 0);
        assert!(!a.is_empty());
        assert_eq!(a.name(), "mmc-hal-create");
        assert!(a.as_raw_fd() >= 0);
        eprintln!("page kind observed: {}", a.page_kind());
        // Fresh memory reads as zero.
        let mut buf = vec![1u8; 4096];
        a.copy_out(a.len() - 4096, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
    }
}

#[test]
fn long_name_is_truncated() {
    let name = "é".repeat(200);
    let a = Arena::new(&name, 4096, false).unwrap();
    assert_eq!(a.name(), name);
}

#[test]
fn plain_fallback_paths_do_not_crash() {
    // Exercise the hugetlb attempt directly: it may fail (empty pool)
    // but must not crash as long as nothing is touched.
    let cname = memfd_name("mmc-hal-huge").unwrap();
    match Arena::try_hugetlb(&cname, "mmc-hal-huge", HUGE_PAGE_BYTES, true) {
        Ok(a) => {
            a.copy_in(0, b"huge").unwrap();
            assert_eq!(a.page_kind(), PageKind::Huge2M);
        }
        Err(e) => eprintln!("hugetlb unavailable (expected here): {e}"),
    }
    let file = create_memfd(&cname, libc::MFD_CLOEXEC, 8192).unwrap();
    let map = map_shared(&file, 8192).unwrap();
    touch_range(&map, 0, 8192);
    prefault_map(&map, true).unwrap();
    let _ = map.advise(Advice::HugePage);
}

#[test]
fn parallel_touch_covers_large_maps() {
    let cname = memfd_name("mmc-hal-touch").unwrap();
    let len = PARALLEL_TOUCH_MIN_BYTES + 3 * BASE_PAGE_BYTES;
    let file = create_memfd(&cname, libc::MFD_CLOEXEC, len).unwrap();
    let map = map_shared(&file, len).unwrap();
    prefault_map(&map, true).unwrap();
    prefault_map(&map, false).unwrap();
    touch_range(&map, 0, map.len());
}

#[test]
fn hugetlb_decision_from_meminfo() {
    let text = "MemTotal:       16000000 kB\n\
                HugePages_Total:     512\n\
                HugePages_Free:      100\n\
                HugePages_Rsvd:       20\n\
                HugePages_Surp:        0\n\
                Hugepagesize:       2048 kB\n";
    assert_eq!(hugetlb_available_bytes(text), 80 * HUGE_PAGE_BYTES);

    let empty = "HugePages_Total: 0\nHugePages_Free: 0\nHugePages_Rsvd: 0\nHugepagesize: 2048 kB\n";
    assert_eq!(hugetlb_available_bytes(empty), 0);

    let gig = "HugePages_Free: 100\nHugepagesize: 1048576 kB\n";
    assert_eq!(
        hugetlb_available_bytes(gig),
        0,
        "1 GiB default pages are not used"
    );

    assert_eq!(hugetlb_available_bytes(""), 0);
    assert_eq!(hugetlb_available_bytes("garbage\nHugePages_Free: x\n"), 0);

    let over_reserved = "HugePages_Free: 2\nHugePages_Rsvd: 5\nHugepagesize: 2048 kB\n";
    assert_eq!(hugetlb_available_bytes(over_reserved), 0);
}

#[test]
fn shmem_thp_mode_parsing() {
    assert!(!shmem_thp_mode_allows(
        "always within_size advise [never] deny force"
    ));
    assert!(!shmem_thp_mode_allows(
        "always within_size advise never [deny] force"
    ));
    assert!(shmem_thp_mode_allows(
        "always within_size [advise] never deny force"
    ));
    assert!(shmem_thp_mode_allows(
        "[always] within_size advise never deny force"
    ));
}

#[test]
fn page_kind_display() {
    assert_eq!(PageKind::Huge2M.to_string(), "hugetlb 2MiB pages");
    assert!(PageKind::Transparent.to_string().contains("transparent"));
    assert_eq!(PageKind::Normal.to_string(), "normal pages");
}

#[test]
fn copy_round_trip() {
    let a = arena(1 << 20);
    let data = pattern(10_000, 7);
    a.copy_in(12_345, &data).unwrap();
    let mut out = vec![0u8; data.len()];
    a.copy_out(12_345, &mut out).unwrap();
    assert_eq!(out, data);
    // Edges.
    a.copy_in(a.len() - 3, b"end").unwrap();
    let mut e = [0u8; 3];
    a.copy_out(a.len() - 3, &mut e).unwrap();
    assert_eq!(&e, b"end");
    a.copy_in(a.len(), &[]).unwrap();
    a.copy_out(a.len(), &mut []).unwrap();
}

#[test]
fn out_of_bounds_rejected() {
    let a = arena(4096);
    let len = a.len();
    let err = a.copy_in(len - 1, b"ab").unwrap_err();
    assert!(
        matches!(err, HalError::OutOfBounds { offset, len: 2, arena_bytes } if offset == len - 1 && arena_bytes == len)
    );
    assert!(a.copy_in(len + 1, &[]).is_err());
    let mut buf = [0u8; 8];
    assert!(a.copy_out(u64::MAX - 2, &mut buf).is_err(), "overflow");
    assert!(a.copy_out(len, &mut buf).is_err());
    let (mut r, mut w) = UnixStream::pair().unwrap();
    w.write_all(&[0u8; 16]).unwrap();
    assert!(matches!(
        a.fill_from(&[(0, 8), (u64::MAX, 2)], &mut r),
        Err(HalError::OutOfBounds { .. })
    ));
    assert!(a.drain_to(&[(0, 8), (len - 4, 8)], &mut w).is_err());
    drop(w);
    let mut left = Vec::new();
    r.read_to_end(&mut left).unwrap();
    assert_eq!(
        left.len(),
        16,
        "nothing read or written before bounds are checked"
    );
}

#[test]
fn overlapping_fill_ranges_rejected() {
    let a = arena(4096);
    let (mut r, mut w) = UnixStream::pair().unwrap();
    w.write_all(&[0u8; 64]).unwrap();
    assert!(matches!(
        a.fill_from(&[(0, 16), (8, 16)], &mut r),
        Err(HalError::OverlappingRanges { .. })
    ));
    // Empty ranges never overlap; adjacent ranges are fine.
    a.fill_from(&[(0, 16), (8, 0), (16, 16)], &mut r).unwrap();
    // Overlap allowed for draining (read only).
    a.drain_to(&[(0, 16), (8, 16)], &mut w).unwrap();
    let mut back = [0u8; 64];
    r.read_exact(&mut back).unwrap();
}

/// Builds `n` disjoint ranges with varying lengths (some zero) in
/// shuffled order.
fn many_ranges(n: usize) -> Vec<(u64, u64)> {
    let mut ranges = Vec::new();
    let mut off = 0u64;
    for i in 0..n {
        let len = if i % 17 == 5 {
            0
        } else {
            (i as u64 * 37) % 300 + 1
        };
        ranges.push((off, len));
        off += len + (i as u64 % 3) * 64;
    }
    // Reverse pairs so the order is not monotonic.
    ranges.chunks_mut(2).for_each(|c| c.reverse());
    ranges
}

#[test]
fn fill_and_drain_through_socket_pair() {
    let src = arena(1 << 20);
    let dst = arena(1 << 20);
    let ranges = many_ranges(200);
    let total: u64 = ranges.iter().map(|r| r.1).sum();
    let data = pattern(total as usize, 3);
    // Put the data into `src` range by range.
    let mut pos = 0usize;
    for &(off, len) in &ranges {
        src.copy_in(off, &data[pos..pos + len as usize]).unwrap();
        pos += len as usize;
    }
    let (mut a, mut b) = UnixStream::pair().unwrap();
    std::thread::scope(|s| {
        let ranges = &ranges;
        let src = &src;
        s.spawn(move || src.drain_to(ranges, &mut a).unwrap());
        dst.fill_from(ranges, &mut b).unwrap();
    });
    let mut pos = 0usize;
    for &(off, len) in &ranges {
        let mut buf = vec![0u8; len as usize];
        dst.copy_out(off, &mut buf).unwrap();
        assert_eq!(buf, &data[pos..pos + len as usize], "range at {off}");
        pos += len as usize;
    }
}

/// The peer sends one byte per write and reads 1 KiB at a time, so reads
/// return partial windows and a 4 MiB drain fills the socket buffer (partial
/// writes).
#[test]
fn partial_reads_and_writes() {
    let a = arena(8 << 20);
    let ranges = many_ranges(150);
    let total: u64 = ranges.iter().map(|r| r.1).sum();
    let data = pattern(total as usize, 9);
    let (mut r, mut w) = UnixStream::pair().unwrap();
    std::thread::scope(|s| {
        let data = &data;
        s.spawn(move || {
            for b in data {
                w.write_all(&[*b]).unwrap();
            }
        });
        a.fill_from(&ranges, &mut r).unwrap();
    });
    let mut back = vec![0u8; total as usize];
    let mut pos = 0usize;
    for &(off, len) in &ranges {
        a.copy_out(off, &mut back[pos..pos + len as usize]).unwrap();
        pos += len as usize;
    }
    assert_eq!(back, data);

    let big = 4u64 << 20;
    let data = pattern(big as usize, 5);
    a.copy_in(0, &data).unwrap();
    let (mut out, mut peer) = UnixStream::pair().unwrap();
    let got = std::thread::scope(|s| {
        let reader = s.spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while got.len() < big as usize {
                let n = peer.read(&mut buf).unwrap();
                assert!(n > 0);
                got.extend_from_slice(&buf[..n]);
            }
            got
        });
        a.drain_to(&[(0, big / 2), (big / 2, big / 2)], &mut out)
            .unwrap();
        reader.join().unwrap()
    });
    assert!(got == data, "drained bytes differ");
}

#[test]
fn eof_midway_and_closed_peer_are_errors() {
    let a = arena(4096);
    let (mut r, mut w) = UnixStream::pair().unwrap();
    w.write_all(&[1u8; 10]).unwrap();
    drop(w);
    let err = a.fill_from(&[(0, 8), (100, 8)], &mut r).unwrap_err();
    match err {
        HalError::Io { source, context } => {
            assert_eq!(source.kind(), io::ErrorKind::UnexpectedEof);
            assert!(context.contains("10 of 16"), "{context}");
        }
        other => panic!("unexpected {other:?}"),
    }
    // A closed peer is an error (EPIPE), not a SIGPIPE that kills the process.
    let (mut w, r) = UnixStream::pair().unwrap();
    drop(r);
    let err = a.drain_to(&[(0, 8)], &mut w).unwrap_err();
    assert!(
        matches!(err, HalError::Io { ref source, .. } if source.kind() == io::ErrorKind::BrokenPipe)
    );
    // Not a socket: writev.
    let mut f = tempfile_in_memfd();
    a.copy_in(0, b"to a file").unwrap();
    a.drain_to(&[(0, 9)], &mut f).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 9);
}

/// A plain file to drain into (a memfd: no file system needed).
fn tempfile_in_memfd() -> File {
    let name = memfd_name("mmc-hal-drain-file").unwrap();
    create_memfd(&name, libc::MFD_CLOEXEC, 0).unwrap()
}

#[test]
fn zero_length_ranges_are_fine() {
    let a = arena(4096);
    let (mut r, mut w) = UnixStream::pair().unwrap();
    a.fill_from(&[], &mut r).unwrap();
    a.fill_from(&[(0, 0), (4096, 0), (5, 0)], &mut r).unwrap();
    a.drain_to(&[(0, 0), (a.len(), 0)], &mut w).unwrap();
    w.write_all(b"xy").unwrap();
    a.fill_from(&[(0, 0), (10, 1), (0, 0), (11, 1), (0, 0)], &mut r)
        .unwrap();
    let mut out = [0u8; 2];
    a.copy_out(10, &mut out).unwrap();
    assert_eq!(&out, b"xy");
}

#[test]
fn fd_can_be_mapped_again() {
    let a = arena(1 << 20);
    a.copy_in(4000, b"shared bytes").unwrap();
    let len = a.len() as usize;
    // SAFETY: the arena's memfd stays open for the whole test; the bytes
    // are only mutated through the second mapping below while `a` is not
    // writing, and memmap2 bounds the map to `len`.
    let mut second = unsafe { MmapOptions::new().len(len).map_mut(a.as_raw_fd()) }.unwrap();
    assert_eq!(&second[4000..4012], b"shared bytes");
    second[0..5].copy_from_slice(b"hello");
    let mut out = [0u8; 5];
    a.copy_out(0, &mut out).unwrap();
    assert_eq!(&out, b"hello");
}

#[test]
fn concurrent_disjoint_copies() {
    let a = arena(1 << 20);
    let chunk = 4096u64;
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let a = &a;
            s.spawn(move || {
                let data = vec![t as u8 + 1; chunk as usize];
                for round in 0..16u64 {
                    let off = (round * 8 + t) * chunk;
                    a.copy_in(off, &data).unwrap();
                }
            });
        }
    });
    for i in 0..128u64 {
        let mut buf = vec![0u8; chunk as usize];
        a.copy_out(i * chunk, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == (i % 8) as u8 + 1));
    }
}

/// Minor faults this thread has taken so far.
fn thread_minor_faults() -> i64 {
    // SAFETY: an all-zero rusage is a valid value; getrusage only writes into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage for the duration of the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    assert_eq!(rc, 0, "getrusage: {}", io::Error::last_os_error());
    ru.ru_minflt
}

/// Map `owner`'s memfd again (as a same-host client does), populated `how`, wait for the
/// populate, then write every page of it: the minor faults that write took.
fn faults_writing_a_second_mapping(owner: &Arena, how: Populate) -> i64 {
    let fd = owner.as_fd().try_clone_to_owned().unwrap();
    let mapped = Arena::from_fd_populate("second-mapping", fd, owner.len(), how).unwrap();
    let t = std::time::Instant::now();
    while !mapped.populated() {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(60),
            "populate did not finish"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let src = pattern(owner.len() as usize, 7);
    let before = thread_minor_faults();
    mapped.copy_in(0, &src).unwrap();
    let faults = thread_minor_faults() - before;
    let mut back = vec![0u8; src.len()];
    owner.copy_out(0, &mut back).unwrap();
    assert!(
        back == src,
        "the owner sees the bytes written through the second mapping"
    );
    faults
}

#[test]
fn a_populated_second_mapping_takes_no_write_faults() {
    let owner = arena(32 << 20);
    let pages = (owner.len() / BASE_PAGE_BYTES) as i64;
    for how in [Populate::Read, Populate::Write] {
        let faults = faults_writing_a_second_mapping(&owner, how);
        assert!(
            faults <= pages / 8,
            "{how:?}: {faults} faults writing {pages} populated pages"
        );
    }
    if owner.page_kind() == PageKind::Normal {
        // The control: without populate, every 4 KiB page faults on its first write.
        let faults = faults_writing_a_second_mapping(&owner, Populate::Off);
        assert!(
            faults >= pages / 2,
            "Off: only {faults} faults writing {pages} unpopulated pages"
        );
    }
}

#[test]
fn dropping_a_mapping_cancels_its_populate() {
    let owner = arena(256 << 20);
    for _ in 0..(MAX_POPULATE_THREADS + 2) {
        let fd = owner.as_fd().try_clone_to_owned().unwrap();
        let mapped = Arena::from_fd_populate("dropped", fd, owner.len(), Populate::Write).unwrap();
        mapped.copy_in(0, b"early write").unwrap();
        drop(mapped); // cancels and joins; the next one gets a slot
    }
    let fd = owner.as_fd().try_clone_to_owned().unwrap();
    let last = Arena::from_fd_populate("last", fd, owner.len(), Populate::Read).unwrap();
    let mut out = [0u8; 11];
    last.copy_out(0, &mut out).unwrap();
    assert_eq!(&out, b"early write");
}
