//! The blocking client against a meta service that answers `Busy` (as a restarted one does while
//! it rebuilds its directory): every call sends its request again after the back-off, and answers
//! once the meta service does; a call still refused at its deadline fails with -3004 naming the
//! rebuild, near its timeout (not at once with -3007, and not after it).
//!
//! The meta service here is a scripted stand-in on a real socket speaking the real protocol, so
//! the test can say exactly how many `Busy` answers each request gets.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mmc_controlplane::msg::{AllocItem, LookupItem, QueryItem, Reply, Request};
use mmc_controlplane::wire::{self, Kind};
use mmc_dataplane::{Client, ClientConfig, Code, PutOptions};
use rkyv::util::AlignedVec;

const RETRY_MS: u64 = 20;

/// A stand-in meta service: the session hello (an allocation of no keys) is accepted; every other
/// request is answered `Busy { retry_ms: RETRY_MS }` `busy_first` times in all, then "not found"
/// (an allocation: "no room", -3013), never for `busy_first = usize::MAX`. Counts the requests it
/// answered `Busy`.
struct FakeMeta {
    url: String,
    busy: Arc<AtomicUsize>,
}

impl FakeMeta {
    fn start(busy_first: usize) -> FakeMeta {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("tcp://{}", listener.local_addr().expect("address"));
        let busy = Arc::new(AtomicUsize::new(0));
        let counter = busy.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let counter = counter.clone();
                std::thread::spawn(move || serve(stream, busy_first, &counter));
            }
        });
        FakeMeta { url, busy }
    }

    fn busy_answers(&self) -> usize {
        self.busy.load(Ordering::SeqCst)
    }
}

fn serve(mut stream: TcpStream, busy_first: usize, busy: &AtomicUsize) {
    let mut payload = AlignedVec::new();
    let mut out = AlignedVec::new();
    while let Ok(header) = wire::read_frame(&mut stream, &mut payload) {
        if header.kind != Kind::MetaRequest {
            continue; // one-way: nothing to answer
        }
        let req: Request = wire::decode_payload(&payload).expect("a request");
        let reply = match req {
            Request::Alloc(a) if a.items.is_empty() => Reply::Alloc {
                items: Vec::new(),
                services: Vec::new(),
            },
            // As a rebuilding meta service answers a slot lease (never `Busy`): no slots here,
            // so a small put goes the normal way and meets the `Busy` answers below.
            Request::LeaseSlots(_) => Reply::Slots {
                lease_ms: 30_000,
                items: Vec::new(),
                services: Vec::new(),
            },
            _ if busy.load(Ordering::SeqCst) < busy_first => {
                busy.fetch_add(1, Ordering::SeqCst);
                Reply::Busy {
                    retry_ms: RETRY_MS,
                    message: "rebuilding: 1 of 2 members rejoined".into(),
                }
            }
            Request::Lookup { keys } => Reply::Lookup {
                items: keys
                    .iter()
                    .map(|_| LookupItem {
                        code: Code::ObjectNotExists.as_i32(),
                        size: 0,
                        crc: 0,
                        lease: 0,
                        replicas: Vec::new(),
                    })
                    .collect(),
                services: Vec::new(),
                lease_ms: 1000,
            },
            Request::Query { keys } => Reply::Query {
                items: keys
                    .iter()
                    .map(|_| QueryItem {
                        code: Code::ObjectNotExists.as_i32(),
                        size: 0,
                        replicas: Vec::new(),
                    })
                    .collect(),
            },
            Request::Alloc(a) => Reply::Alloc {
                items: a
                    .items
                    .iter()
                    .map(|_| AllocItem {
                        code: Code::ExceedCapacity.as_i32(),
                        retry: false,
                        token: 0,
                        replicas: Vec::new(),
                    })
                    .collect(),
                services: Vec::new(),
            },
            Request::Exist { keys } | Request::Remove { keys } => Reply::Codes {
                codes: vec![Code::ObjectNotExists.as_i32(); keys.len()],
            },
            other => Reply::Error {
                code: Code::Error.as_i32(),
                message: format!("the stand-in does not serve {other:?}"),
            },
        };
        wire::encode_payload(&reply, &mut out).expect("encode");
        if wire::write_frame(&mut stream, Kind::MetaReply, header.req_id, &out, 0).is_err()
            || stream.flush().is_err()
        {
            return;
        }
    }
}

fn client(meta: &FakeMeta, timeout_ms: u64) -> Client {
    Client::connect(&ClientConfig {
        meta_url: meta.url.clone(),
        timeout_ms,
        ..ClientConfig::default()
    })
    .expect("client connects")
}

#[test]
fn every_call_asks_again_while_the_meta_service_is_busy() {
    type Call = fn(&Client) -> Result<(), mmc_dataplane::Error>;
    let calls: [(&str, Call, Code); 6] = [
        ("get", |c| c.get("k").map(drop), Code::ObjectNotExists),
        (
            "get_into",
            |c| c.get_into("k", &mut [0u8; 8]).map(drop),
            Code::ObjectNotExists,
        ),
        ("exist", |c| c.exist("k"), Code::ObjectNotExists),
        ("query", |c| c.query("k").map(drop), Code::ObjectNotExists),
        ("remove", |c| c.remove("k"), Code::ObjectNotExists),
        (
            "put",
            |c| c.put("k", b"bytes", &PutOptions::default()),
            Code::ExceedCapacity,
        ),
    ];
    for (name, call, code) in calls {
        let meta = FakeMeta::start(3);
        let c = client(&meta, 10_000);
        let started = Instant::now();
        let r = call(&c);
        let took = started.elapsed();
        assert_eq!(
            r.unwrap_err().code(),
            code,
            "{name}: the answer after the rebuild"
        );
        assert_eq!(meta.busy_answers(), 3, "{name}");
        assert!(
            took >= Duration::from_millis(3 * RETRY_MS),
            "{name}: waited as told: {took:?}"
        );
        println!("busy: {name} answered after 3 Busy replies in {took:?}");
    }
}

#[test]
fn a_call_still_refused_at_its_deadline_times_out_naming_the_rebuild() {
    let meta = FakeMeta::start(usize::MAX);
    let timeout = Duration::from_millis(400);
    let c = client(&meta, timeout.as_millis() as u64);
    type Call = fn(&Client) -> Result<(), mmc_dataplane::Error>;
    let calls: [(&str, Call); 4] = [
        ("get", |c| c.get("k").map(drop)),
        ("put", |c| c.put("k", b"bytes", &PutOptions::default())),
        ("exist", |c| c.exist("k")),
        ("query", |c| c.query("k").map(drop)),
    ];
    for (name, call) in calls {
        let before = meta.busy_answers();
        let started = Instant::now();
        let e = call(&c).unwrap_err();
        let took = started.elapsed();
        assert_eq!(e.code(), Code::Timeout, "{name}: {e}");
        assert!(e.to_string().contains("rebuilding its directory"), "{e}");
        assert!(
            // The operations' clock counts whole milliseconds.
            took + Duration::from_millis(2) >= timeout && took < timeout + Duration::from_secs(2),
            "{name}: bounded by its timeout: {took:?}"
        );
        let asked = meta.busy_answers() - before;
        assert!(asked >= 2, "{name}: asked again, {asked} times");
        println!(
            "busy: {name} gave up after {asked} Busy replies in {took:?} (timeout {timeout:?})"
        );
    }
}
