//! Device memory end to end, on the simulated device (`sim`; or the backend `MMC_DEVICE_BACKEND`
//! names, as on a GPU host): puts from and gets into device
//! buffers (whose pointers fault if the host dereferences them), and HBM pools in device memory,
//! on every placement (the client's embedded service, a same-host service's mapped pools, TCP),
//! every call form (single, batch, layers), byte-exact, from 1 byte to 64 MiB.

mod common;

use common::{pattern, Cluster};
use mmc_config::{DataOpType, LocalConfig};
use mmc_controlplane::msg::{MEDIA_DRAM, MEDIA_HBM};
use mmc_core::transport::DevSpan;
use mmc_dataplane::{Client, Code, PutOptions};
use mmc_hal::device::{self, BackendChoice, BackendKind, Batch};

const MIB: u64 = 1 << 20;

/// The test process's backend: `sim`, unless `MMC_DEVICE_BACKEND` names another (so
/// `scripts/gpu-check.sh` runs these tests on a GPU; the services follow the same variable).
fn sim() -> &'static dyn device::Device {
    let d = device::init(BackendChoice::Only(BackendKind::Sim)).expect("the backend starts");
    assert_ne!(d.kind(), BackendKind::None, "a device backend");
    d
}

/// A device buffer holding `bytes`.
fn upload(bytes: &[u8]) -> DevSpan {
    let d = sim();
    let addr = d.alloc(0, bytes.len().max(1) as u64).expect("device alloc");
    let mut b = Batch::new();
    b.to_device(addr, bytes);
    b.run(d).expect("h2d");
    DevSpan {
        addr,
        len: bytes.len() as u64,
    }
}

/// A zeroed device buffer of `len` bytes.
fn dev_zeroed(len: u64) -> DevSpan {
    upload(&vec![0u8; len as usize])
}

fn download(s: DevSpan) -> Vec<u8> {
    let mut out = vec![0u8; s.len as usize];
    let mut b = Batch::new();
    b.to_host(&mut out, s.addr);
    b.run(sim()).expect("d2h");
    out
}

fn free(s: DevSpan) {
    sim().free(s.addr).expect("device free");
}

fn opts(media: u16) -> PutOptions {
    PutOptions {
        media,
        ..PutOptions::default()
    }
}

/// Split `s` into three uneven layers.
fn layers(s: DevSpan) -> [DevSpan; 3] {
    let a = s.len / 5;
    let b = s.len / 2;
    [
        DevSpan {
            addr: s.addr,
            len: a,
        },
        DevSpan {
            addr: s.addr + a,
            len: b - a,
        },
        DevSpan {
            addr: s.addr + b,
            len: s.len - b,
        },
    ]
}

/// Every direction and call form through `c`, with objects on `media`; `where_` names the
/// placement in messages, `rank` is where the objects must land.
fn exercise(c: &Client, where_: &str, rank: u32, media: u16) {
    for size in [1u64, 4095, MIB + 3, 64 * MIB] {
        let tag = format!("{where_}-m{media}-{size}");
        let data = pattern(&tag, size as usize);
        // Device -> pool (single), pool -> host and pool -> device.
        let src = upload(&data);
        let key = format!("{tag}-single");
        c.batch_put_device(&[&key], &[&[src]], &opts(media))
            .unwrap()[0]
            .as_ref()
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        let info = c.query(&key).unwrap();
        assert_eq!(
            (info.replicas[0].rank, info.replicas[0].media),
            (rank, media),
            "{key}"
        );
        assert!(c.get(&key).unwrap() == data, "{key}: host get");
        let dst = dev_zeroed(size);
        let got = c.batch_get_device(&[&key], &[&[dst]]).unwrap();
        assert_eq!(*got[0].as_ref().unwrap(), size, "{key}");
        assert!(download(dst) == data, "{key}: device get");
        // Layers: device layers in, uneven device layers out.
        let lkey = format!("{tag}-layers");
        if size >= 3 {
            c.batch_put_device(&[&lkey], &[&layers(src)], &opts(media))
                .unwrap()[0]
                .as_ref()
                .unwrap();
            let out = dev_zeroed(size);
            let got = c.batch_get_device(&[&lkey], &[&layers(out)]).unwrap();
            assert_eq!(*got[0].as_ref().unwrap(), size);
            assert!(download(out) == data, "{lkey}: layers");
            free(out);
            c.remove(&lkey).unwrap();
        }
        // Host -> pool, pool -> device (the other direction of each placement).
        let hkey = format!("{tag}-host");
        c.put(&hkey, &data, &opts(media)).unwrap();
        let got = c.batch_get_device(&[&hkey], &[&[dst]]).unwrap();
        assert_eq!(*got[0].as_ref().unwrap(), size);
        assert!(download(dst) == data, "{hkey}: host in, device out");
        for k in [&key, &hkey] {
            c.remove(k).unwrap();
        }
        free(src);
        free(dst);
    }
    // A batch of several keys, small and large mixed.
    let keys: Vec<String> = (0..4)
        .map(|i| format!("{where_}-m{media}-batch{i}"))
        .collect();
    let datas: Vec<Vec<u8>> = (0..4)
        .map(|i| pattern(&keys[i], [1usize, 700, 300_001, 2 << 20][i]))
        .collect();
    let srcs: Vec<DevSpan> = datas.iter().map(|d| upload(d)).collect();
    let kr: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
    let vals: Vec<[DevSpan; 1]> = srcs.iter().map(|s| [*s]).collect();
    let vr: Vec<&[DevSpan]> = vals.iter().map(|v| &v[..]).collect();
    for r in c.batch_put_device(&kr, &vr, &opts(media)).unwrap() {
        r.unwrap();
    }
    let outs: Vec<[DevSpan; 1]> = datas.iter().map(|d| [dev_zeroed(d.len() as u64)]).collect();
    let or: Vec<&[DevSpan]> = outs.iter().map(|v| &v[..]).collect();
    let got = c.batch_get_device(&kr, &or).unwrap();
    for i in 0..4 {
        assert_eq!(*got[i].as_ref().unwrap(), datas[i].len() as u64);
        assert!(download(outs[i][0]) == datas[i], "{}", keys[i]);
        free(outs[i][0]);
        free(srcs[i]);
        c.remove(&keys[i]).unwrap();
    }
}

fn sim_local_args() -> [&'static str; 6] {
    [
        "--dram",
        "256MB",
        "--hbm",
        "160MB",
        "--device-backend",
        "sim",
    ]
}

/// Same-host (mapped pools, the device pool through the sim device's IPC) and TCP (staged through
/// host buffers on both sides).
#[test]
fn device_memory_on_same_host_and_tcp_placements() {
    sim();
    let mut cluster = Cluster::start(&[], &[]);
    let rank = cluster.add_local_with(&sim_local_args()).rank;
    let shm = cluster.client();
    let tcp = cluster.client_with(30_000, Some(DataOpType::Tcp));
    for media in [MEDIA_DRAM, MEDIA_HBM] {
        exercise(&shm, "shm", rank, media);
        exercise(&tcp, "tcp", rank, media);
    }
    assert_eq!(
        shm.mapped_services(),
        vec![rank],
        "the shm client mapped the service"
    );
}

/// The client's embedded local service with an HBM pool in (simulated) device memory.
#[test]
fn device_memory_on_the_embedded_placement() {
    sim();
    let cluster = Cluster::start(&[], &[]);
    let local = LocalConfig {
        meta_url: cluster.meta_url(),
        data_url: "tcp://127.0.0.1:0".into(),
        dram_bytes: 256 * MIB,
        hbm_bytes: 160 * MIB,
        device_backend: "sim".into(),
        ..LocalConfig::default()
    };
    let c = Client::with_local_service(&cluster.client_config(), &local).unwrap();
    let rank = c.local_rank().unwrap();
    for media in [MEDIA_DRAM, MEDIA_HBM] {
        exercise(&c, "embedded", rank, media);
    }
}

/// Bad device memory is refused with -3000 and harms nothing else.
#[test]
fn device_errors_are_refused() {
    sim();
    let cluster = Cluster::start(&["64MB"], &[]);
    let c = cluster.client();
    let host = vec![1u8; 4096];
    // A host pointer given as device memory.
    let e = c
        .batch_put_device(
            &["h"],
            &[&[DevSpan {
                addr: host.as_ptr() as u64,
                len: 4096,
            }]],
            &PutOptions::default(),
        )
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidParam, "{e}");
    // A range past the device allocation.
    let s = upload(&[5u8; 4096]);
    let e = c
        .batch_put_device(
            &["past"],
            &[&[DevSpan {
                addr: s.addr,
                len: 4 * MIB,
            }]],
            &PutOptions::default(),
        )
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidParam, "{e}");
    // A freed buffer.
    free(s);
    let e = c
        .batch_put_device(&["freed"], &[&[s]], &PutOptions::default())
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidParam, "{e}");
    // A device buffer too small for the object.
    c.put("big", &[9u8; 8192], &PutOptions::default()).unwrap();
    let small = dev_zeroed(100);
    let got = c.batch_get_device(&["big"], &[&[small]]).unwrap();
    assert_eq!(got[0].as_ref().unwrap_err().code(), Code::InvalidParam);
    free(small);
    // Nothing else was harmed.
    assert_eq!(c.get("big").unwrap(), vec![9u8; 8192]);
    for k in ["h", "past", "freed"] {
        assert_eq!(c.exist(k).unwrap_err().code(), Code::ObjectNotExists, "{k}");
    }
}

/// `hbm_size` without a device backend is refused at start, with the reason.
#[test]
fn hbm_without_a_device_backend_is_refused() {
    let cluster = Cluster::start(&[], &[]);
    let out = std::process::Command::new(common::bin("mmc-local"))
        .args([
            "--meta",
            &cluster.meta_url(),
            "--listen",
            "tcp://127.0.0.1:0",
        ])
        .args([
            "--dram",
            "16MB",
            "--hbm",
            "16MB",
            "--device-backend",
            "none",
        ])
        .env_remove(device::BACKEND_ENV)
        .output()
        .expect("run mmc-local");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no device backend"), "{err}");
}

/// HBM full -> its least recently used objects move down to DRAM (byte-exact) -> DRAM full ->
/// DRAM's oldest are dropped; at every step each object is either whole or gone.
#[test]
fn eviction_moves_down_a_tier_then_drops() {
    use std::time::{Duration, Instant};
    sim();
    let mut cluster = Cluster::start(&[], &[]);
    cluster.add_local_with(&["--dram", "12MB", "--hbm", "8MB", "--device-backend", "sim"]);
    let c = cluster.client_with(30_000, Some(DataOpType::Tcp));
    let keys: Vec<String> = (0..28).map(|i| format!("tier-{i}")).collect();
    let data: Vec<Vec<u8>> = keys.iter().map(|k| pattern(k, MIB as usize)).collect();
    let check = |upto: usize| -> (usize, usize, usize) {
        let (mut hbm, mut dram, mut gone) = (0, 0, 0);
        for i in 0..upto {
            match c.query(&keys[i]) {
                Ok(info) => {
                    match info.replicas[0].media {
                        MEDIA_HBM => hbm += 1,
                        _ => dram += 1,
                    }
                    assert!(c.get(&keys[i]).unwrap() == data[i], "{} corrupt", keys[i]);
                }
                Err(e) => {
                    assert_eq!(e.code(), Code::ObjectNotExists, "{}", keys[i]);
                    gone += 1;
                }
            }
        }
        (hbm, dram, gone)
    };
    let mut demoted_seen = false;
    for i in 0..keys.len() {
        c.put(&keys[i], &data[i], &PutOptions::default()).unwrap();
        // Give the heartbeats (1 s) time to move objects down while HBM is over its watermark.
        if i % 7 == 6 {
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(4) {
                let (_, dram, _) = check(i + 1);
                if dram > 0 {
                    demoted_seen = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        check(i + 1);
    }
    let (hbm, dram, gone) = check(keys.len());
    println!(
        "after {} puts of 1 MiB: {hbm} on HBM, {dram} on DRAM, {gone} dropped",
        keys.len()
    );
    assert!(demoted_seen && dram > 0, "objects moved down to DRAM");
    assert!(gone > 0, "DRAM, the last tier, dropped its oldest");
    assert!(hbm > 0);
    // The newest object is still there (the checks' reads keep every object recently used, so
    // which older ones went depends on the order of the reads).
    assert!(c.exist(keys.last().unwrap()).is_ok());
}
