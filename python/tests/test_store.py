"""DistributedObjectStore against a real cluster: every method, byte-exact, with numpy buffers."""

import numpy as np
import pytest

import mmc

KIB = 1 << 10
MIB = 1 << 20
OK = 0
INVALID = -3000
# A put of a key that exists: 0 in the Python layer (the original's convention; C says -3006).
EXISTS = OK
MISSING = -3007

SIZES = [1, 7, 4096, 65537, MIB + 3, 64 * MIB]


def rand(n, seed):
    return np.random.default_rng(seed).integers(0, 256, size=n, dtype=np.uint8)


def ptr(a):
    return a.ctypes.data


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s}B")
def test_single_key_methods(store, key, size):
    src = rand(size, size)
    k1, k2, k3 = f"{key}-from", f"{key}-put", f"{key}-layers"

    assert store.put_from(k1, ptr(src), size) == OK
    assert store.put(k2, src.tobytes()) == OK
    half = size // 2
    if half:
        pieces = ([ptr(src), ptr(src) + half], [half, size - half])
    else:
        pieces = ([ptr(src)], [size])
    assert store.put_from_layers(k3, *pieces) == OK

    for k in (k1, k2, k3):
        assert store.is_exist(k) == 1
        dst = np.zeros(size, dtype=np.uint8)
        assert store.get_into(k, ptr(dst), size) == OK
        assert np.array_equal(dst, src)
        out = np.zeros(size, dtype=np.uint8)
        third = size // 3
        if third:
            parts = [ptr(out), ptr(out) + third], [third, size - third]
        else:
            parts = [ptr(out)], [size]
        assert store.get_into_layers(k, *parts) == OK
        assert np.array_equal(out, src)
    assert store.get(k1) == src.tobytes()

    assert store.remove_batch([k2, k3]) == [OK, OK]
    assert store.remove(k1) == OK
    assert store.batch_is_exist([k1, k2, k3]) == [0, 0, 0]
    assert store.is_exist(k1) == 0
    assert store.get(k1) == b""
    assert store.remove(k1) == MISSING


def test_batch_methods_all_sizes(store, key):
    keys = [f"{key}-{s}" for s in SIZES]
    srcs = [rand(s, i) for i, s in enumerate(SIZES)]
    assert store.batch_put_from(keys, [ptr(a) for a in srcs], SIZES) == [OK] * len(SIZES)
    assert store.batch_is_exist(keys) == [1] * len(SIZES)
    dsts = [np.zeros(s, dtype=np.uint8) for s in SIZES]
    assert store.batch_get_into(keys, [ptr(a) for a in dsts], SIZES) == [OK] * len(SIZES)
    for s, d in zip(srcs, dsts):
        assert np.array_equal(s, d)

    lkeys = [f"{k}-l" for k in keys]
    ptr_lists = [[ptr(a), ptr(a) + len(a) // 2] if len(a) > 1 else [ptr(a)] for a in srcs]
    size_lists = [[len(a) // 2, len(a) - len(a) // 2] if len(a) > 1 else [1] for a in srcs]
    assert store.batch_put_from_layers(lkeys, ptr_lists, size_lists) == [OK] * len(SIZES)
    outs = [np.zeros(s, dtype=np.uint8) for s in SIZES]
    out_ptrs = [[ptr(a)] for a in outs]
    out_sizes = [[len(a)] for a in outs]
    assert store.batch_get_into_layers(lkeys, out_ptrs, out_sizes) == [OK] * len(SIZES)
    for s, d in zip(srcs, outs):
        assert np.array_equal(s, d)
    assert store.remove_batch(keys + lkeys) == [OK] * (2 * len(SIZES))


def test_cross_client(embedded, remote, key):
    """Bytes written by one client are read by the other (embedded pool <-> TCP)."""
    a, b = rand(3 * MIB + 1, 1), rand(5 * MIB + 7, 2)
    assert embedded.put_from(f"{key}-a", ptr(a), a.nbytes) == OK
    assert remote.put_from(f"{key}-b", ptr(b), b.nbytes) == OK
    da, db = np.zeros_like(a), np.zeros_like(b)
    assert remote.get_into(f"{key}-a", ptr(da), da.nbytes) == OK
    assert embedded.get_into(f"{key}-b", ptr(db), db.nbytes) == OK
    assert np.array_equal(a, da) and np.array_equal(b, db)
    assert embedded.remove_batch([f"{key}-a", f"{key}-b"]) == [OK, OK]


# DeepSeek-R1: 61 layers, each with a 128 KiB K piece and a 16 KiB V piece per KV block.
LAYERS, K_BYTES, V_BYTES = 61, 128 * KIB, 16 * KIB


def test_layers_deepseek_block(store, key):
    """One KV block (122 pieces) put from one layout and read into another."""
    blocks = 4
    # Source: per-layer K and V caches of `blocks` blocks each; this key is block 1.
    k_src = rand(LAYERS * blocks * K_BYTES, 11).reshape(LAYERS, blocks, K_BYTES)
    v_src = rand(LAYERS * blocks * V_BYTES, 12).reshape(LAYERS, blocks, V_BYTES)
    ptrs, sizes = [], []
    for layer in range(LAYERS):
        ptrs += [ptr(k_src[layer, 1]), ptr(v_src[layer, 1])]
        sizes += [K_BYTES, V_BYTES]
    assert len(ptrs) == 122
    assert store.put_from_layers(key, ptrs, sizes) == OK
    expected = b"".join(
        k_src[layer, 1].tobytes() + v_src[layer, 1].tobytes() for layer in range(LAYERS)
    )
    assert store.get(key) == expected

    # Destination: a different layout (block 3 of caches with another block count), 122 pieces.
    k_dst = np.zeros((LAYERS, 5, K_BYTES), dtype=np.uint8)
    v_dst = np.zeros((LAYERS, 5, V_BYTES), dtype=np.uint8)
    dptrs, dsizes = [], []
    for layer in range(LAYERS):
        dptrs += [ptr(k_dst[layer, 3]), ptr(v_dst[layer, 3])]
        dsizes += [K_BYTES, V_BYTES]
    assert store.get_into_layers(key, dptrs, dsizes) == OK
    assert np.array_equal(k_dst[:, 3], k_src[:, 1])
    assert np.array_equal(v_dst[:, 3], v_src[:, 1])
    assert not k_dst[:, [0, 1, 2, 4]].any() and not v_dst[:, [0, 1, 2, 4]].any()

    # And into a third split: one contiguous piece per layer.
    flat = np.zeros((LAYERS, K_BYTES + V_BYTES), dtype=np.uint8)
    assert store.get_into_layers(key, [ptr(flat[i]) for i in range(LAYERS)],
                                 [K_BYTES + V_BYTES] * LAYERS) == OK
    assert flat.tobytes() == expected
    assert store.remove(key) == OK


def test_layers_batch_blocks_mixed(store, key):
    """Several KV blocks in one batch, read back with a missing block among them."""
    blocks = 3
    k_src = rand(LAYERS * blocks * K_BYTES, 21).reshape(LAYERS, blocks, K_BYTES)
    v_src = rand(LAYERS * blocks * V_BYTES, 22).reshape(LAYERS, blocks, V_BYTES)

    def block_ptrs(k, v, b):
        ps, ss = [], []
        for layer in range(LAYERS):
            ps += [ptr(k[layer, b]), ptr(v[layer, b])]
            ss += [K_BYTES, V_BYTES]
        return ps, ss

    keys = [f"{key}-blk{b}" for b in range(blocks)]
    pl, sl = zip(*(block_ptrs(k_src, v_src, b) for b in range(blocks)))
    assert store.batch_put_from_layers(keys, list(pl), list(sl)) == [OK] * blocks

    k_dst = np.zeros((LAYERS, blocks + 1, K_BYTES), dtype=np.uint8)
    v_dst = np.zeros((LAYERS, blocks + 1, V_BYTES), dtype=np.uint8)
    get_keys = [keys[2], f"{key}-missing", keys[0], keys[1]]
    pl, sl = zip(*(block_ptrs(k_dst, v_dst, b) for b in range(blocks + 1)))
    assert store.batch_get_into_layers(get_keys, list(pl), list(sl)) == [OK, MISSING, OK, OK]
    assert np.array_equal(k_dst[:, 0], k_src[:, 2]) and np.array_equal(v_dst[:, 0], v_src[:, 2])
    assert not k_dst[:, 1].any() and not v_dst[:, 1].any()
    assert np.array_equal(k_dst[:, 2], k_src[:, 0]) and np.array_equal(v_dst[:, 3], v_src[:, 1])
    assert store.remove_batch(keys) == [OK] * blocks


def test_batch_mixed_present_missing(store, key):
    present = [f"{key}-p{i}" for i in range(3)]
    srcs = [rand(1000 + i, i) for i in range(3)]
    assert store.batch_put_from(present, [ptr(a) for a in srcs], [a.nbytes for a in srcs]) == [OK] * 3
    keys = [present[0], f"{key}-m0", present[1], f"{key}-m1", present[2]]
    assert store.batch_is_exist(keys) == [1, 0, 1, 0, 1]
    dsts = [np.zeros(2000, dtype=np.uint8) for _ in keys]
    assert store.batch_get_into(keys, [ptr(d) for d in dsts], [2000] * 5) == [
        OK, MISSING, OK, MISSING, OK]
    for i, j in ((0, 0), (2, 1), (4, 2)):
        assert np.array_equal(dsts[i][: srcs[j].nbytes], srcs[j])
        assert not dsts[i][srcs[j].nbytes:].any()  # bytes past the object are untouched
    assert not dsts[1].any() and not dsts[3].any()
    # A batch put where one key exists already: per-key codes (0 for it: the value is kept).
    new = rand(10, 9)
    assert store.batch_put_from([present[1], f"{key}-new"], [ptr(new), ptr(new)], [10, 10]) == [
        EXISTS, OK]
    assert store.get(present[1]) == srcs[1].tobytes()
    assert store.remove_batch(keys + [f"{key}-new"]) == [OK, MISSING, OK, MISSING, OK, OK]


def test_duplicate_put(store, key):
    a, b = rand(4096, 1), rand(4096, 2)
    assert store.put_from(key, ptr(a), a.nbytes) == OK
    assert store.put_from(key, ptr(b), b.nbytes) == EXISTS
    assert store.put(key, b.tobytes()) == EXISTS
    assert store.put_from_layers(key, [ptr(b)], [b.nbytes]) == EXISTS
    assert store.get(key) == a.tobytes()
    assert store.remove(key) == OK
    assert store.put_from(key, ptr(b), b.nbytes) == OK
    assert store.get(key) == b.tobytes()
    assert store.remove(key) == OK


def test_too_small_buffer(store, key):
    a = rand(10000, 3)
    assert store.put_from(key, ptr(a), a.nbytes) == OK
    dst = np.full(10000, 0xAB, dtype=np.uint8)
    assert store.get_into(key, ptr(dst), 9999) == INVALID
    assert (dst == 0xAB).all()  # nothing copied
    other = np.zeros(10000, dtype=np.uint8)
    assert store.batch_get_into([key, key + "-x"], [ptr(dst), ptr(other)], [9999, 9999]) == [
        INVALID, MISSING]
    assert (dst == 0xAB).all()
    assert store.get_into_layers(key, [ptr(dst), ptr(dst) + 5000], [5000, 4999]) == INVALID
    assert (dst == 0xAB).all()
    # A larger buffer is fine.
    big = np.full(20000, 0xCD, dtype=np.uint8)
    assert store.get_into(key, ptr(big), big.nbytes) == OK
    assert np.array_equal(big[:10000], a) and (big[10000:] == 0xCD).all()
    assert store.remove(key) == OK


def test_key_lengths(store, key):
    k255 = (key + "x" * 255)[:255]
    k256 = (key + "y" * 256)[:256]
    a = rand(100, 4)
    assert store.put_from(k255, ptr(a), 100) == OK
    assert store.is_exist(k255) == 1
    assert store.get(k255) == a.tobytes()
    assert store.put_from(k256, ptr(a), 100) == INVALID
    assert store.put(k256, b"abc") == INVALID
    assert store.is_exist(k256) == INVALID
    assert store.get(k256) == b""
    dst = np.zeros(100, dtype=np.uint8)
    assert store.get_into(k256, ptr(dst), 100) == INVALID
    assert store.remove(k256) == INVALID
    assert store.batch_is_exist([k255, k256]) == [1, INVALID]
    assert store.batch_put_from([k256, key + "-ok"], [ptr(a), ptr(a)], [100, 100]) == [INVALID, OK]
    other = np.zeros(100, dtype=np.uint8)
    assert store.batch_get_into([k256, k255], [ptr(other), ptr(dst)], [100, 100]) == [INVALID, OK]
    assert np.array_equal(dst, a)
    # Length is in UTF-8 bytes: 85 x 3-byte characters = 255 bytes, 86 = 258.
    assert store.put("€" * 85, b"e") == OK
    assert store.put("€" * 86, b"e") == INVALID
    assert store.put("", b"e") == INVALID
    assert store.remove_batch([k255, k256, key + "-ok", "€" * 85]) == [OK, INVALID, OK, OK]


def test_buffer_protocol_objects(store, key):
    data = rand(3000, 5)
    assert store.put(f"{key}-1", bytearray(data.tobytes())) == OK
    assert store.put(f"{key}-2", memoryview(data.tobytes())) == OK
    assert store.put(f"{key}-3", data) == OK
    assert store.put_from(f"{key}-4", data) == OK  # size defaults to the whole buffer
    assert store.put_from(f"{key}-5", data.tobytes(), 1000) == OK  # the first 1000 bytes
    f32 = np.arange(750, dtype=np.float32)  # any dtype: its bytes
    assert store.put_from(f"{key}-6", f32) == OK
    assert store.batch_put_from([f"{key}-7", f"{key}-8"], [data, bytearray(b"hello")]) == [OK, OK]
    assert store.put_from_layers(f"{key}-9", [data[:1000], data[1000:]]) == OK

    for i in (1, 2, 3, 4, 9):
        out = bytearray(3000)
        assert store.get_into(f"{key}-{i}", out) == OK
        assert bytes(out) == data.tobytes()
    out = np.zeros(1000, dtype=np.uint8)
    assert store.get_into(f"{key}-5", out) == OK
    assert np.array_equal(out, data[:1000])
    g = np.zeros(750, dtype=np.float32)
    assert store.get_into(f"{key}-6", g) == OK
    assert np.array_equal(g, f32)
    m = memoryview(bytearray(3000))
    assert store.get_into_layers(f"{key}-7", [m[:10], m[10:]]) == OK
    assert bytes(m) == data.tobytes()
    outs = [bytearray(3000), bytearray(5)]
    assert store.batch_get_into([f"{key}-7", f"{key}-8"], outs) == [OK, OK]
    assert outs[1] == b"hello"
    assert store.batch_get_into_layers([f"{key}-8"], [[outs[1]]]) == [OK]
    assert store.remove_batch([f"{key}-{i}" for i in range(1, 10)]) == [OK] * 9


def test_bad_arguments_never_crash(store, key):
    a = rand(64, 6)
    assert store.put_from(key, ptr(a), 64) == OK
    dst = np.zeros(64, dtype=np.uint8)
    bad_ptrs = [None, "abc", 1.5, -1, 0, [1], True, object(), 2**64]
    for p in bad_ptrs:
        assert store.put_from(f"{key}-n", p, 64) == INVALID, p
        assert store.get_into(key, p, 64) == INVALID, p
    for s in [-1, 0, None, "64", 1.0, -(2**70), 2**70, True]:
        assert store.put_from(f"{key}-n", ptr(a), s) == INVALID, s
        assert store.get_into(key, ptr(dst), s) == INVALID, s
    assert store.put_from(f"{key}-n", ptr(a), 2**63) == INVALID  # above isize::MAX
    assert store.put_from(f"{key}-n", 2**64 - 8, 64) == INVALID  # the range wraps around
    assert store.put_from(f"{key}-n", a, 65) == INVALID  # more than the buffer holds
    for k in [None, 5, b"\xff\xfe", ["k"]]:
        assert store.put_from(k, ptr(a), 64) == INVALID
        assert store.is_exist(k) == INVALID
        assert store.remove(k) == INVALID
        assert store.get(k) == b""
    assert store.put(f"{key}-n", None) == INVALID
    assert store.put(f"{key}-n", "a str is not bytes") == INVALID
    assert store.put(f"{key}-n", b"") == INVALID
    # A read-only or non-contiguous destination.
    assert store.get_into(key, b"\0" * 64) == INVALID
    assert store.get_into(key, np.zeros(128, dtype=np.uint8)[::2]) == INVALID
    ro = np.zeros(64, dtype=np.uint8)
    ro.flags.writeable = False
    assert store.get_into(key, ro) == INVALID
    # Mismatched list lengths, non-lists.
    assert store.batch_put_from([f"{key}-a", f"{key}-b"], [ptr(a)], [64, 64]) == [INVALID] * 2
    assert store.batch_get_into([key, key], [ptr(dst), ptr(dst)], [64]) == [INVALID] * 2
    assert store.batch_get_into([key], None, [64]) == [INVALID]
    assert store.batch_is_exist(None) == [INVALID]
    assert store.remove_batch("abc") == [INVALID]
    assert store.batch_put_from(None, None, None) == [INVALID]
    assert store.batch_is_exist([key, None, 3]) == [1, INVALID, INVALID]
    assert store.batch_put_from([], [], []) == []
    assert store.batch_is_exist([]) == []
    # Layers: inner lists that do not match, empty layer lists, nested garbage.
    assert store.put_from_layers(f"{key}-l", [ptr(a), ptr(a)], [64]) == INVALID
    assert store.put_from_layers(f"{key}-l", [], []) == INVALID
    assert store.put_from_layers(f"{key}-l", None, None) == INVALID
    assert store.get_into_layers(key, [ptr(dst)], [[64]]) == INVALID
    assert store.batch_put_from_layers([f"{key}-l"], [[ptr(a)], [ptr(a)]], [[64]]) == [INVALID]
    assert store.batch_put_from_layers([f"{key}-l", f"{key}-l2"], [[ptr(a)], 5],
                                       [[64], [64]]) == [OK, INVALID]
    assert store.batch_get_into_layers([key], [[ptr(dst)]], [[64, 1]]) == [INVALID]
    # Overlapping destinations in one call are refused before any copy.
    big = np.zeros(200, dtype=np.uint8)
    assert store.get_into_layers(key, [ptr(big), ptr(big) + 32], [64, 64]) == INVALID
    assert store.batch_get_into([key, key], [ptr(big), ptr(big) + 63], [64, 64]) == [INVALID] * 2
    assert not big.any()
    assert store.batch_get_into([key, key], [ptr(big), ptr(big) + 64], [64, 64]) == [OK, OK]
    assert np.array_equal(big[:64], a) and np.array_equal(big[64:128], a)
    assert store.remove_batch([key, f"{key}-l"]) == [OK, OK]


def test_directions(store, key):
    a = rand(128, 7)
    dst = np.zeros(128, dtype=np.uint8)
    assert mmc.SMEMB_COPY_L2G.value == 0 and mmc.SMEMB_COPY_G2L.value == 1
    assert mmc.SMEMB_COPY_G2H.value == 2 and mmc.SMEMB_COPY_H2G.value == 3
    # Host directions, as enum members or ints.
    assert store.put_from(key, ptr(a), 128, mmc.SMEMB_COPY_H2G) == OK
    assert store.get_into(key, ptr(dst), 128, mmc.MmcCopyDirect.SMEMB_COPY_G2H) == OK
    assert store.get_into(key, ptr(dst), 128, direct=2) == OK
    assert np.array_equal(a, dst)
    # Device directions given host memory: refused (the sim device backend runs in the tests).
    L2G, G2L = mmc.SMEMB_COPY_L2G, mmc.SMEMB_COPY_G2L
    assert store.put_from(f"{key}-d", ptr(a), 128, L2G) == INVALID
    assert store.put_from(f"{key}-d", ptr(a), 128, 0) == INVALID
    assert store.put_from_layers(f"{key}-d", [ptr(a)], [128], L2G) == INVALID
    assert store.batch_put_from([f"{key}-d", f"{key}-e"], [ptr(a)] * 2, [128] * 2, L2G) == [
        INVALID] * 2
    assert store.batch_put_from_layers([f"{key}-d"], [[ptr(a)]], [[128]], L2G) == [INVALID]
    assert store.get_into(key, ptr(dst), 128, G2L) == INVALID
    assert store.get_into(key, ptr(dst), 128, 1) == INVALID
    assert store.get_into_layers(key, [ptr(dst)], [128], G2L) == INVALID
    assert store.batch_get_into([key], [ptr(dst)], [128], G2L) == [INVALID]
    assert store.batch_get_into_layers([key], [[ptr(dst)]], [[128]], G2L) == [INVALID]
    assert store.is_exist(f"{key}-d") == 0 and store.is_exist(f"{key}-e") == 0
    # A direction of the wrong kind, or not a direction.
    assert store.put_from(f"{key}-d", ptr(a), 128, mmc.SMEMB_COPY_G2H) == INVALID
    assert store.get_into(key, ptr(dst), 128, mmc.SMEMB_COPY_H2G) == INVALID
    for d in (7, -1, "H2G", 2.0, True):
        assert store.put_from(f"{key}-d", ptr(a), 128, d) == INVALID
    assert store.remove(key) == OK


def test_batch_key_limit(remote, key):
    """At most 16384 keys in one batch call: more is one [-3000] (the original's answer)."""
    keys = [f"{key}-{i}" for i in range(16384)]
    assert remote.batch_is_exist(keys) == [0] * 16384
    assert remote.batch_is_exist(keys + [f"{key}-x"]) == [INVALID]
    assert remote.remove_batch(keys + [f"{key}-x"]) == [INVALID]
