//! A dead writer: when every meta connection of a client closes, the keys of its pending puts are
//! free at once, nobody else's; their space is held until the pending deadline (bytes it sent may
//! still be on their way).

use super::*;

fn alloc_as(core: &mut MetaCore, now: u64, client_id: u64, keys: &[&str]) -> Vec<u64> {
    let req = AllocRequest {
        client_id,
        ..alloc_req(&keys.iter().map(|k| (*k, 4096)).collect::<Vec<_>>(), None)
    };
    alloc(core, now, req)
        .into_iter()
        .map(|i| {
            assert_eq!(i.code, 0);
            i.token
        })
        .collect()
}

fn commit(core: &mut MetaCore, now: u64, key: &str, token: u64) -> i32 {
    let req = Request::Commit {
        items: vec![(
            key.to_string(),
            CommitItem {
                token,
                ok: true,
                crc: 0,
            },
        )],
    };
    match core.handle(now, req) {
        Reply::Commit { codes } => codes[0],
        other => panic!("{other:?}"),
    }
}

fn pending(core: &MetaCore) -> usize {
    core.pending.len()
}

#[test]
fn a_gone_clients_pending_puts_are_reclaimed_at_once() {
    let mut c = core();
    register(&mut c, None, 64 * MIB);
    let used0 = used(&c);
    // Client 7: one committed object, two pending. Client 9: one pending. Unknown (0): one pending.
    let t = alloc_as(&mut c, 0, 7, &["done"]);
    assert_eq!(commit(&mut c, 0, "done", t[0]), 0);
    let dead = alloc_as(&mut c, 1, 7, &["a", "b"]);
    let other = alloc_as(&mut c, 1, 9, &["c"]);
    alloc_as(&mut c, 1, 0, &["d"]);
    assert_eq!(pending(&c), 4);
    c.check_invariants();

    assert_eq!(c.client_gone(2, 7), 2);
    c.check_invariants();
    assert_eq!(
        pending(&c),
        4,
        "abandoned puts hold their space until their deadline"
    );
    assert!(exists(&mut c, 2, "done"), "committed objects untouched");
    assert_eq!(
        used(&c),
        used0 + 5 * 4096,
        "the gone client's space is still held"
    );
    // Its keys are free at once, long before the pending timeout.
    alloc_as(&mut c, 3, 11, &["a", "b"]);
    // A late commit of a reclaimed put answers as for any reclaimed put.
    assert_eq!(commit(&mut c, 3, "a", dead[0]), Code::Timeout.as_i32());
    // The other client commits as usual.
    assert_eq!(commit(&mut c, 3, "c", other[0]), 0);
    c.check_invariants();
    // At the pending deadline the abandoned space comes back (and "d", never committed, goes).
    let deadline = c.params().pending_timeout_ms + 1;
    c.tick(deadline);
    c.check_invariants();
    assert_eq!(used(&c), used0 + 4 * 4096, "done, c and the new a and b");
    assert!(!exists(&mut c, deadline, "d"));
}

#[test]
fn unknown_or_repeated_gone_is_a_no_op() {
    let mut c = core();
    register(&mut c, None, 64 * MIB);
    alloc_as(&mut c, 0, 0, &["x"]);
    alloc_as(&mut c, 0, 5, &["y"]);
    assert_eq!(c.client_gone(1, 0), 0, "id 0 is unknown: timeout only");
    assert_eq!(c.client_gone(1, 6), 0);
    assert_eq!(c.client_gone(1, 5), 1);
    assert_eq!(c.client_gone(2, 5), 0);
    assert_eq!(pending(&c), 2, "y's space is held until its deadline");
    c.check_invariants();
    // The unknown writer's put still goes at the pending timeout.
    c.tick(c.params().pending_timeout_ms + 10);
    assert_eq!(pending(&c), 0);
    c.check_invariants();
}
