//! The meta service's own rows: requests per second of put (`Alloc` + `Commit`), get (`Lookup` +
//! `Release`) and exist, one key per call, from 1, 4 and 16 client threads, each with its own
//! connection, against a real `mmc-meta` process started here (one fake local service registered
//! and heartbeating, so no data moves); and the in-process fill of [`crate::meta_scale`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use mmc_controlplane::msg::{self, AllocRequest, CommitItem, Reply, Request, SegmentSpec};
use mmc_meta_service::rpc::MetaConn;

use crate::cluster::{bin_dir, free_port, wait_port, Proc, TempDir};
use crate::meta_scale;
use crate::progress::Progress;
use crate::report::{Row, MMC, TCP};

pub const NAME: &str = "meta-ops";
/// Client threads of the rows.
const THREADS: [usize; 3] = [1, 4, 16];
const OBJECT_BYTES: u64 = 4096;
const DEADLINE: Duration = Duration::from_secs(30);

/// Take the meta workloads out of `names` (they have no placement and no peers).
pub fn take(names: &mut Vec<&str>) -> Vec<&'static str> {
    let mine: Vec<&'static str> = [meta_scale::NAME, NAME]
        .into_iter()
        .filter(|n| names.contains(n))
        .collect();
    names.retain(|n| !mine.contains(n));
    mine
}

/// Rows and notes of the meta workloads in `names`.
pub fn run(names: &[&str], quick: bool, progress: &Progress) -> (Vec<Row>, Vec<String>) {
    let (mut rows, mut notes) = (Vec::new(), Vec::new());
    if names.contains(&NAME) {
        match ops(quick, progress) {
            Ok((r, n)) => {
                rows.extend(r);
                notes.extend(n);
            }
            Err(e) => notes.push(format!("{NAME} failed: {e}")),
        }
    }
    if names.contains(&meta_scale::NAME) {
        let (r, n) = meta_scale::run(quick, progress);
        rows.extend(r);
        notes.extend(n);
    }
    (rows, notes)
}

fn deadline() -> Instant {
    Instant::now() + DEADLINE
}

fn call(conn: &mut MetaConn, req: &Request) -> Result<Reply, String> {
    conn.call(req, deadline()).map_err(|e| e.to_string())
}

/// One fake local service: registered, heartbeating (acknowledging its index changes) until
/// `stop`.
fn fake_member(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, String> {
    let mut conn = MetaConn::connect(addr, deadline()).map_err(|e| e.to_string())?;
    let reply = call(
        &mut conn,
        &Request::Register(msg::Register {
            rank: None,
            create_id: 0,
            host: "meta-ops-host".into(),
            data_endpoint: "127.0.0.1:9".into(),
            shm_endpoint: String::new(),
            segments: vec![SegmentSpec {
                media: msg::MEDIA_DRAM,
                capacity: 64 << 30,
            }],
        }),
    )?;
    let Reply::Registered {
        rank, incarnation, ..
    } = reply
    else {
        return Err(format!("registration refused: {reply:?}"));
    };
    Ok(std::thread::spawn(move || {
        let mut seq = 0u64;
        while !stop.load(Ordering::Acquire) {
            let hb = Request::Heartbeat {
                rank,
                incarnation,
                index_seq: seq,
                index_resync: false,
                repaired: Vec::new(),
            };
            match conn.call(&hb, deadline()) {
                Ok(Reply::Heartbeat {
                    index_first_seq,
                    index_changes,
                    ..
                }) => seq = index_first_seq + index_changes.len() as u64 - 1,
                other => tracing::warn!(?other, "meta-ops heartbeat"),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }))
}

/// One client thread's calls of `op` on its keys; per-call latencies.
fn client(addr: SocketAddr, op: &str, keys: &[String]) -> Result<Vec<Duration>, String> {
    let mut conn = MetaConn::connect(addr, deadline()).map_err(|e| e.to_string())?;
    let mut times = Vec::with_capacity(keys.len());
    for key in keys {
        let t = Instant::now();
        match op {
            "put" => {
                let alloc = Request::Alloc(AllocRequest {
                    writer_rank: None,
                    client_id: 7,
                    media: msg::MEDIA_DRAM,
                    policy: msg::NATIVE_AFFINITY,
                    replicas: 1,
                    preferred: Vec::new(),
                    items: vec![(key.clone(), OBJECT_BYTES)],
                });
                let Reply::Alloc { items, .. } = call(&mut conn, &alloc)? else {
                    return Err("alloc refused".into());
                };
                if items[0].code != 0 {
                    return Err(format!("alloc of {key}: code {}", items[0].code));
                }
                let item = CommitItem {
                    token: items[0].token,
                    ok: true,
                    crc: 0,
                };
                let commit = Request::Commit {
                    items: vec![(key.clone(), item)],
                };
                match call(&mut conn, &commit)? {
                    Reply::Commit { codes } if codes == [0] => {}
                    other => return Err(format!("commit of {key}: {other:?}")),
                }
            }
            "get" => {
                let lookup = Request::Lookup {
                    keys: vec![key.clone()],
                };
                let Reply::Lookup { items, .. } = call(&mut conn, &lookup)? else {
                    return Err("lookup refused".into());
                };
                if items[0].code != 0 {
                    return Err(format!("lookup of {key}: code {}", items[0].code));
                }
                let release = Request::Release {
                    leases: vec![items[0].lease],
                };
                conn.send_oneway(&release, deadline())
                    .map_err(|e| e.to_string())?;
            }
            _ => {
                let exist = Request::Exist {
                    keys: vec![key.clone()],
                };
                match call(&mut conn, &exist)? {
                    Reply::Codes { codes } if codes == [0] => {}
                    other => return Err(format!("exist of {key}: {other:?}")),
                }
            }
        }
        times.push(t.elapsed());
    }
    Ok(times)
}

/// `threads` clients of `op` at once, over `keys` split between them; (wall time, latencies).
fn round(
    addr: SocketAddr,
    op: &'static str,
    threads: usize,
    keys: &[String],
) -> Result<(Duration, Vec<Duration>), String> {
    let per = keys.len() / threads;
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let mine: Vec<String> = keys[t * per..(t + 1) * per].to_vec();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                client(addr, op, &mine)
            })
        })
        .collect();
    barrier.wait();
    let t = Instant::now();
    let mut all = Vec::with_capacity(keys.len());
    let mut failed = None;
    for h in handles {
        match h.join() {
            Ok(Ok(times)) => all.extend(times),
            Ok(Err(e)) => failed = Some(e),
            Err(_) => failed = Some("a client thread panicked".into()),
        }
    }
    let wall = t.elapsed();
    failed.map_or(Ok((wall, all)), Err)
}

fn ops(quick: bool, progress: &Progress) -> Result<(Vec<Row>, Vec<String>), String> {
    let dir = TempDir::new()?;
    let port = free_port()?;
    let mut meta = Proc::spawn(
        "mmc-meta",
        &bin_dir().join("mmc-meta"),
        &[
            "--listen".into(),
            format!("tcp://127.0.0.1:{port}"),
            "--log-level".into(),
            "warn".into(),
        ],
        dir.0.join("meta-ops.log"),
    )?;
    wait_port(&mut meta, port)?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let stop = Arc::new(AtomicBool::new(false));
    let member = fake_member(addr, stop.clone())?;
    let per_thread_total = if quick { 8_000 } else { 48_000 };
    let mut rows = Vec::new();
    let mut result = Ok(());
    for threads in THREADS {
        let n = per_thread_total / threads * threads;
        let keys: Vec<String> = (0..n as u64)
            .map(|i| format!("{}-t{threads}", meta_scale::block_key(i)))
            .collect();
        for op in ["put", "get", "exist"] {
            progress.say(format!("{NAME}: {n} {op} calls from {threads} threads"));
            match round(addr, op, threads, &keys) {
                Ok((wall, times)) => {
                    let shape = format!("1 key/call, {threads} threads");
                    let mut row =
                        Row::from_calls(NAME, op, MMC, TCP, &shape, n as u64, 0, &times, false);
                    row.seconds = wall.as_secs_f64();
                    row.rate = n as f64 / row.seconds.max(1e-9);
                    rows.push(row);
                }
                Err(e) => {
                    result = Err(format!("{op} with {threads} threads: {e}"));
                    break;
                }
            }
        }
        if result.is_err() {
            break;
        }
        let mut conn = MetaConn::connect(addr, deadline()).map_err(|e| e.to_string())?;
        call(&mut conn, &Request::RemoveAll)?;
    }
    stop.store(true, Ordering::Release);
    let _ = member.join();
    meta.check_alive()?;
    result?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let notes = vec![format!(
        "{NAME}: one mmc-meta process, one key per call (put = Alloc + Commit, get = Lookup + \
         one-way Release), each client thread on its own connection; {cores} cores on this \
         machine shared by the clients and the service"
    )];
    Ok((rows, notes))
}
