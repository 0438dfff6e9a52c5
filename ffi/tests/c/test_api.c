/* The MemCache C API, exercised function by function.
 *
 *   test_api inproc          start the meta service and a local service in this process
 *   test_api remote URL      use a separately started mmc-meta (with mmc-local processes)
 *
 * Set MMC_TEST_SMALL=1 to shrink data sizes (for valgrind). Prints "N passed, N failed". */
#include "mmc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed = 0;
static int failed = 0;

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (cond) {                                                                   \
            passed++;                                                                 \
        } else {                                                                      \
            failed++;                                                                 \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);          \
        }                                                                             \
    } while (0)

#define CHECK_EQ(a, b)                                                                \
    do {                                                                              \
        long long va_ = (long long)(a), vb_ = (long long)(b);                         \
        if (va_ == vb_) {                                                             \
            passed++;                                                                 \
        } else {                                                                      \
            failed++;                                                                 \
            fprintf(stderr, "FAIL %s:%d: %s == %s (%lld != %lld)\n", __FILE__,        \
                    __LINE__, #a, #b, va_, vb_);                                      \
        }                                                                             \
    } while (0)

static volatile int log_count = 0;
static volatile int log_bad_level = 0;

static void logger(int level, const char *msg)
{
    if (level < 0 || level > 3 || msg == NULL || msg[0] == '\0') {
        __sync_fetch_and_add(&log_bad_level, 1);
    }
    __sync_fetch_and_add(&log_count, 1);
}

static void fill(unsigned char *p, size_t n, unsigned seed)
{
    size_t i;
    unsigned x = seed * 2654435761u + 1u;
    for (i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (unsigned char)x;
    }
}

static mmc_buffer buf1d(void *p, uint64_t len)
{
    mmc_buffer b;
    memset(&b, 0, sizeof b);
    b.addr = (uint64_t)(uintptr_t)p;
    b.type = MEDIA_DRAM;
    b.dimType = MMC_DIM_1D;
    b.len = len;
    return b;
}

static mmc_buffer buf2d(void *p, uint64_t dpitch, uint32_t width, uint16_t layer_num,
                        uint32_t layer_offset, uint16_t layer_count)
{
    mmc_buffer b;
    memset(&b, 0, sizeof b);
    b.addr = (uint64_t)(uintptr_t)p;
    b.type = MEDIA_DRAM;
    b.dimType = MMC_DIM_2D;
    b.dpitch = dpitch;
    b.width = width;
    b.layerNum = layer_num;
    b.layerOffset = layer_offset;
    b.layerCount = layer_count;
    return b;
}

static mmc_put_options default_options(void)
{
    mmc_put_options o;
    memset(&o, 0, sizeof o);
    return o;
}

static void test_before_init(void)
{
    mmc_buffer b;
    mmc_data_info info;
    mmc_location_t loc;
    char data[4] = "abc";
    const char *keys[1] = {"k"};
    int32_t res[1];
    b = buf1d(data, 3);
    CHECK_EQ(mmcc_put("k", &b, default_options(), 0), MMC_CLIENT_NOT_INIT);
    CHECK_EQ(mmcc_get("k", &b, 0), MMC_CLIENT_NOT_INIT);
    CHECK_EQ(mmcc_query("k", &info, 0), MMC_CLIENT_NOT_INIT);
    CHECK_EQ(mmcc_remove("k", 0), MMC_CLIENT_NOT_INIT);
    CHECK_EQ(mmcc_exist("k", 0), MMC_CLIENT_NOT_INIT);
    loc = mmcc_get_location("k", 0);
    CHECK_EQ(loc.result, MMC_CLIENT_NOT_INIT);
    CHECK_EQ(mmcc_batch_exist(keys, 1, res, 0), MMC_CLIENT_NOT_INIT);
    CHECK_EQ(mmcc_wait(123456, 0), MMC_NET_REQ_HANDLE_NO_FOUND);
}

static void test_logging(void)
{
    CHECK_EQ(mmc_set_log_level(7), MMC_INVALID_PARAM);
    CHECK_EQ(mmc_set_log_level(-1), MMC_INVALID_PARAM);
    CHECK_EQ(mmc_set_log_level(1), MMC_OK);
    CHECK_EQ(mmc_set_extern_logger(logger), MMC_OK);
}

static mmc_meta_service_t start_meta(const char *url)
{
    mmc_meta_service_config_t mc;
    memset(&mc, 0, sizeof mc);
    strcpy(mc.discoveryURL, url);
    mc.logLevel = 1;
    return mmcs_meta_service_start(&mc);
}

static mmc_local_service_t start_local(const char *meta_url, uint64_t dram)
{
    mmc_local_service_config_t lc;
    memset(&lc, 0, sizeof lc);
    strcpy(lc.discoveryURL, meta_url);
    strcpy(lc.bmHcomUrl, "tcp://127.0.0.1:0");
    strcpy(lc.dataOpType, "host_tcp");
    lc.rankId = 7;
    lc.worldSize = 1;
    lc.createId = 42;
    lc.localDRAMSize = dram;
    lc.logLevel = 1;
    return mmcs_local_service_start(&lc);
}

static int init_client(const char *url, uint32_t timeout)
{
    mmc_client_config_t cc;
    memset(&cc, 0, sizeof cc);
    strcpy(cc.discoveryURL, url);
    cc.timeOut = timeout;
    cc.logLevel = 1;
    cc.readThreadPoolNum = 2;
    cc.writeThreadPoolNum = 2;
    return mmcc_init(&cc);
}

static void test_put_get(size_t big, int inproc)
{
    size_t sizes[5];
    size_t i;
    sizes[0] = 1;
    sizes[1] = 4096;
    sizes[2] = 100000;
    sizes[3] = big;
    sizes[4] = big + 13;
    for (i = 0; i < 5; i++) {
        char key[64];
        unsigned char *src = (unsigned char *)malloc(sizes[i] + 8);
        unsigned char *dst = (unsigned char *)malloc(sizes[i] + 8);
        mmc_buffer b, d;
        mmc_data_info info;
        mmc_location_t loc;
        sprintf(key, "pg-%u", (unsigned)i);
        fill(src, sizes[i] + 8, (unsigned)i + 1);
        memset(dst, 0, sizes[i] + 8);
        b = buf1d(src, sizes[i]);
        b.offset = 8; /* the 1-D bytes are [addr+offset, addr+offset+len) */
        b.len = sizes[i];
        CHECK_EQ(mmcc_put(key, &b, default_options(), 0), MMC_OK);
        d = buf1d(dst, sizes[i] + 8);
        CHECK_EQ(mmcc_get(key, &d, 0), MMC_OK);
        CHECK(memcmp(dst, src + 8, sizes[i]) == 0);
        CHECK_EQ(mmcc_exist(key, 0), MMC_OK);
        memset(&info, 0xff, sizeof info);
        CHECK_EQ(mmcc_query(key, &info, 0), MMC_OK);
        CHECK_EQ(info.size, sizes[i]);
        CHECK_EQ(info.numBlobs, 1);
        CHECK(info.valid);
        CHECK_EQ(info.types[0], MEDIA_DRAM);
        if (inproc) {
            CHECK_EQ(info.ranks[0], 7); /* the in-process local service's rankId */
        }
        loc = mmcc_get_location(key, 0);
        CHECK_EQ(loc.result, MMC_OK);
        CHECK_EQ(loc.size, sizes[i]);
        CHECK_EQ(loc.numBlobs, 1);
        CHECK_EQ(loc.ranks[0], info.ranks[0]);
        CHECK_EQ(loc.offsets[0] % 64, 0);
        CHECK_EQ(mmcc_remove(key, 0), MMC_OK);
        CHECK_EQ(mmcc_exist(key, 0), MMC_OBJECT_NOT_EXISTS);
        CHECK_EQ(mmcc_remove(key, 0), MMC_OBJECT_NOT_EXISTS);
        free(src);
        free(dst);
    }
}

/* A KV block as layers: put from one layout (2-D), read into another (2-D, other pitch), and flat. */
static void test_layers(void)
{
    const uint16_t layers = 61;
    const uint32_t width = 4096 + 512;
    const uint64_t pitch_a = 3 * (uint64_t)width, pitch_b = (uint64_t)width + 64;
    unsigned char *a = (unsigned char *)malloc(pitch_a * (layers + 2));
    unsigned char *b = (unsigned char *)calloc(1, pitch_b * (layers + 1));
    unsigned char *flat = (unsigned char *)malloc((size_t)width * layers);
    mmc_buffer src, dst, f;
    mmc_data_info info;
    uint16_t i;
    int same = 1;
    fill(a, pitch_a * (layers + 2), 99);
    src = buf2d(a, pitch_a, width, layers + 2, 1, layers); /* layers 1..61 of 63 */
    CHECK_EQ(mmcc_put("kv-block", &src, default_options(), 0), MMC_OK);
    CHECK_EQ(mmcc_query("kv-block", &info, 0), MMC_OK);
    CHECK_EQ(info.size, (uint64_t)width * layers);
    dst = buf2d(b, pitch_b, width, layers + 1, 0, layers);
    CHECK_EQ(mmcc_get("kv-block", &dst, 0), MMC_OK);
    for (i = 0; i < layers; i++) {
        if (memcmp(b + i * pitch_b, a + (i + 1) * pitch_a, width) != 0) {
            same = 0;
        }
    }
    CHECK(same);
    f = buf1d(flat, (uint64_t)width * layers);
    CHECK_EQ(mmcc_get("kv-block", &f, 0), MMC_OK);
    CHECK(memcmp(flat + (size_t)width * 5, a + 6 * pitch_a, width) == 0);
    /* 2-D errors: layers past layerNum, width over dpitch, zero width. */
    dst = buf2d(b, pitch_b, width, 10, 5, 6);
    CHECK_EQ(mmcc_get("kv-block", &dst, 0), MMC_INVALID_PARAM);
    dst = buf2d(b, 100, width, layers, 0, layers);
    CHECK_EQ(mmcc_get("kv-block", &dst, 0), MMC_INVALID_PARAM);
    dst = buf2d(b, pitch_b, 0, layers, 0, layers);
    CHECK_EQ(mmcc_put("kv-2", &dst, default_options(), 0), MMC_INVALID_PARAM);
    CHECK_EQ(mmcc_remove("kv-block", 0), MMC_OK);
    free(a);
    free(b);
    free(flat);
}

static void test_errors(size_t pool)
{
    char data[16] = "0123456789abcde";
    char small[4] = {9, 9, 9, 9};
    char key256[257];
    char overlap[64];
    mmc_buffer b = buf1d(data, 15), s, hbm, bad, zero;
    mmc_put_options many = default_options(), pref = default_options();
    const char *keys[2];
    mmc_buffer two[2];
    unsigned char *huge;
    memset(key256, 'k', 256);
    key256[256] = '\0';
    CHECK_EQ(mmcc_put(NULL, &b, default_options(), 0), MMC_INVALID_PARAM);
    CHECK_EQ(mmcc_put("", &b, default_options(), 0), MMC_INVALID_PARAM);
    CHECK_EQ(mmcc_put(key256, &b, default_options(), 0), MMC_INVALID_PARAM);
    key256[255] = '\0'; /* 255 bytes: fine */
    CHECK_EQ(mmcc_put(key256, &b, default_options(), 0), MMC_OK);
    CHECK_EQ(mmcc_remove(key256, 0), MMC_OK);
    CHECK_EQ(mmcc_put("e", NULL, default_options(), 0), MMC_INVALID_PARAM);
    zero = buf1d(data, 0);
    CHECK_EQ(mmcc_put("e", &zero, default_options(), 0), MMC_INVALID_PARAM);
    zero = buf1d(NULL, 4);
    CHECK_EQ(mmcc_put("e", &zero, default_options(), 0), MMC_INVALID_PARAM);
    hbm = buf1d(data, 15);
    hbm.type = MEDIA_HBM; /* host memory given as device memory */
    CHECK_EQ(mmcc_put("e", &hbm, default_options(), 0), MMC_INVALID_PARAM);
    bad = buf1d(data, 15);
    bad.dimType = 7;
    CHECK_EQ(mmcc_put("e", &bad, default_options(), 0), MMC_INVALID_PARAM);
    many.replicaNum = 9;
    CHECK_EQ(mmcc_put("e", &b, many, 0), MMC_INVALID_PARAM);
    pref.policy = PREFERRED_AFFINITY;
    pref.preferredLocalServiceIDs[0] = 999;
    CHECK_EQ(mmcc_put("e", &b, pref, 0), MMC_EXCEED_CAPACITY);
    CHECK_EQ(mmcc_query("e", NULL, 0), MMC_INVALID_PARAM);

    CHECK_EQ(mmcc_put("dup", &b, default_options(), 0), MMC_OK);
    CHECK_EQ(mmcc_put("dup", &b, default_options(), 0), MMC_DUPLICATED_OBJECT);
    s = buf1d(small, 4);
    CHECK_EQ(mmcc_get("dup", &s, 0), MMC_INVALID_PARAM);
    CHECK(small[0] == 9 && small[3] == 9); /* nothing copied */
    CHECK_EQ(mmcc_get("missing", &s, 0), MMC_OBJECT_NOT_EXISTS);
    CHECK_EQ(mmcc_get_location("missing", 0).result, MMC_OBJECT_NOT_EXISTS);
    /* Overlapping destination buffers in one call. */
    keys[0] = "dup";
    keys[1] = "dup";
    two[0] = buf1d(overlap, 32);
    two[1] = buf1d(overlap + 16, 32);
    CHECK_EQ(mmcc_batch_get(keys, 2, two, 0), MMC_INVALID_PARAM);
    CHECK_EQ(mmcc_batch_get(keys, 0, two, 0), MMC_INVALID_PARAM);
    CHECK_EQ(mmcc_batch_get(NULL, 2, two, 0), MMC_INVALID_PARAM);
    CHECK_EQ(mmcc_batch_get(keys, MAX_BATCH_OP_COUNT + 1, two, 0), MMC_INVALID_PARAM);
    CHECK_EQ(mmcc_batch_put(keys, 2, two, NULL, 0), MMC_INVALID_PARAM);
    CHECK_EQ(mmcc_remove("dup", 0), MMC_OK);
    /* Larger than every pool: no eviction can make room. */
    huge = (unsigned char *)calloc(1, pool + 4096);
    b = buf1d(huge, pool + 4096);
    CHECK_EQ(mmcc_put("huge", &b, default_options(), 0), MMC_EXCEED_CAPACITY);
    free(huge);
}

static void test_batches(void)
{
    enum { N = 6 };
    const char *keys[N] = {"b0", "b1", "b2", "b3", "b4", "b5"};
    const char *mixed[N] = {"b0", "nope", "b2", "", "b4", "gone"};
    unsigned char src[N][3000], dst[N][3000];
    mmc_buffer in[N], out[N];
    int32_t res[N];
    mmc_data_info info[N];
    mmc_put_options o = default_options();
    int i, same = 1;
    for (i = 0; i < N; i++) {
        fill(src[i], sizeof src[i], 50 + i);
        in[i] = buf1d(src[i], 1000 + 300 * i);
        out[i] = buf1d(dst[i], sizeof dst[i]);
    }
    CHECK_EQ(mmcc_batch_put(keys, 4, in, &o, 0), MMC_OK);
    /* b0 exists: that key fails, the rest are stored; the first failure is returned. */
    CHECK_EQ(mmcc_batch_put_with_results(keys, N, in, &o, 0, res), MMC_DUPLICATED_OBJECT);
    CHECK_EQ(res[0], MMC_DUPLICATED_OBJECT);
    CHECK_EQ(res[4], MMC_OK);
    CHECK_EQ(res[5], MMC_OK);
    CHECK_EQ(mmcc_batch_get(keys, N, out, 0), MMC_OK);
    for (i = 0; i < N; i++) {
        if (memcmp(dst[i], src[i], 1000 + 300 * i) != 0) {
            same = 0;
        }
    }
    CHECK(same);
    CHECK_EQ(mmcc_batch_get_with_results(mixed, N, out, 0, res), MMC_OBJECT_NOT_EXISTS);
    CHECK_EQ(res[0], MMC_OK);
    CHECK_EQ(res[1], MMC_OBJECT_NOT_EXISTS);
    CHECK_EQ(res[3], MMC_INVALID_PARAM);
    CHECK_EQ(res[5], MMC_OBJECT_NOT_EXISTS);
    CHECK_EQ(mmcc_batch_exist(mixed, N, res, 0), MMC_OK);
    CHECK_EQ(res[0], MMC_OK);
    CHECK_EQ(res[1], MMC_OBJECT_NOT_EXISTS);
    CHECK_EQ(res[2], MMC_OK);
    CHECK_EQ(res[3], MMC_INVALID_PARAM);
    CHECK_EQ(mmcc_batch_query(mixed, N, info, 0), MMC_OK);
    CHECK(info[0].valid && info[0].size == 1000 && info[0].numBlobs == 1);
    CHECK(!info[1].valid && info[1].size == 0);
    CHECK(info[4].valid && info[4].size == 2200);
    /* Two keys fail to remove: the count of failures is returned. */
    CHECK_EQ(mmcc_batch_remove(mixed, N, res, 0), 3);
    CHECK_EQ(res[0], MMC_OK);
    CHECK_EQ(res[1], MMC_OBJECT_NOT_EXISTS);
    CHECK_EQ(mmcc_batch_remove(keys, N, NULL, 0), 3); /* b0, b2, b4 already gone */
    CHECK_EQ(mmcc_exist("b5", 0), MMC_OBJECT_NOT_EXISTS);
}

/* mmc_set_log_level filters what reaches the logger, from every thread. */
static void test_log_filter(void)
{
    int before;
    char data[4] = "abc";
    mmc_buffer b = buf1d(data, 3);
    CHECK_EQ(mmc_set_log_level(3), MMC_OK); /* errors only */
    before = log_count;
    CHECK_EQ(mmcc_put("", &b, default_options(), 0), MMC_INVALID_PARAM); /* logs a warning */
    CHECK_EQ(log_count, before);
    CHECK_EQ(mmc_set_log_level(0), MMC_OK);
    CHECK_EQ(mmcc_put("", &b, default_options(), 0), MMC_INVALID_PARAM);
    CHECK(log_count > before);
    CHECK_EQ(mmc_set_log_level(1), MMC_OK);
}

/* Two copies on two different local services (needs two services: the remote mode has them). */
static void test_replicas(void)
{
    char data[100];
    mmc_put_options two = default_options();
    mmc_data_info info;
    mmc_buffer b = buf1d(data, sizeof data);
    memset(data, 3, sizeof data);
    two.replicaNum = 2;
    CHECK_EQ(mmcc_put("two-copies", &b, two, 0), MMC_OK);
    CHECK_EQ(mmcc_query("two-copies", &info, 0), MMC_OK);
    CHECK_EQ(info.numBlobs, 2);
    CHECK(info.ranks[0] != info.ranks[1]);
    CHECK_EQ(mmcc_get_location("two-copies", 0).numBlobs, 2);
    CHECK_EQ(mmcc_remove("two-copies", 0), MMC_OK);
}

static void test_async(void)
{
    enum { N = 24 };
    char keys[N][16];
    const char *kp[N];
    unsigned char src[N][5000], dst[N][5000];
    mmc_buffer in[N], out[N];
    int32_t handles[N], res[N];
    mmc_data_info info;
    mmc_put_options o = default_options();
    int i, h, ok = 1;
    for (i = 0; i < N; i++) {
        sprintf(keys[i], "async-%d", i);
        kp[i] = keys[i];
        fill(src[i], sizeof src[i], 700 + i);
        memset(dst[i], 0, sizeof dst[i]);
        in[i] = buf1d(src[i], sizeof src[i]);
        out[i] = buf1d(dst[i], sizeof dst[i]);
    }
    /* Many in flight at once, completed out of order. */
    for (i = 0; i < N; i++) {
        handles[i] = mmcc_put(keys[i], &in[i], o, MMC_FLAG_ASYNC);
        CHECK(handles[i] > 0);
    }
    for (i = N - 1; i >= 0; i--) {
        CHECK_EQ(mmcc_wait(handles[i], 30), 0);
    }
    CHECK_EQ(mmcc_wait(handles[0], 1), MMC_NET_REQ_HANDLE_NO_FOUND); /* waited once already */
    for (i = 0; i < N; i++) {
        handles[i] = mmcc_get(keys[i], &out[i], MMC_FLAG_ASYNC);
    }
    for (i = 0; i < N; i++) {
        int r = mmcc_wait(handles[i], 0);
        while (r == 1) { /* timed out: the handle stays valid */
            r = mmcc_wait(handles[i], 30);
        }
        CHECK_EQ(r, 0);
        if (memcmp(dst[i], src[i], sizeof src[i]) != 0) {
            ok = 0;
        }
    }
    CHECK(ok);
    /* A failing async operation reports the negated code. */
    h = mmcc_get("async-missing", &out[0], MMC_FLAG_ASYNC);
    CHECK(h > 0);
    CHECK_EQ(mmcc_wait(h, 30), -MMC_OBJECT_NOT_EXISTS);
    h = mmcc_put(keys[0], &in[0], o, MMC_FLAG_ASYNC);
    CHECK_EQ(mmcc_wait(h, 30), -MMC_DUPLICATED_OBJECT);
    h = mmcc_query(keys[1], &info, MMC_FLAG_ASYNC);
    CHECK_EQ(mmcc_wait(h, 30), 0);
    CHECK_EQ(info.size, 5000);
    h = mmcc_batch_get_with_results(kp, N, out, MMC_FLAG_ASYNC, res);
    CHECK_EQ(mmcc_wait(h, 30), 0);
    CHECK_EQ(res[N - 1], 0);
    h = mmcc_remove(keys[2], MMC_FLAG_ASYNC);
    CHECK_EQ(mmcc_wait(h, 30), 0);
    h = mmcc_batch_remove(kp, N, res, MMC_FLAG_ASYNC);
    CHECK_EQ(mmcc_wait(h, 30), 1); /* a positive result: one key (async-2) had gone already */
    CHECK_EQ(res[2], MMC_OBJECT_NOT_EXISTS);
    h = mmcc_batch_put(kp, N, in, &o, MMC_FLAG_ASYNC);
    CHECK_EQ(mmcc_wait(h, 30), 0);
    CHECK_EQ(mmcc_batch_remove(kp, N, NULL, 0), 0);
    CHECK_EQ(mmcc_wait(-5, 0), MMC_NET_REQ_HANDLE_NO_FOUND);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "inproc";
    int small = getenv("MMC_TEST_SMALL") != NULL;
    size_t big = small ? 300000 : 8 * 1024 * 1024;
    uint64_t pool = small ? 16u << 20 : 64u << 20;
    int inproc = strcmp(mode, "inproc") == 0;
    const char *url = "tcp://127.0.0.1:0";
    char meta_url[64];
    mmc_meta_service_t meta = NULL;
    mmc_local_service_t local = NULL;

    test_before_init();
    test_logging();
    CHECK_EQ(mmcc_init(NULL), MMC_INVALID_PARAM);
    CHECK(mmcs_meta_service_start(NULL) == NULL);
    CHECK(mmcs_local_service_start(NULL) == NULL);

    if (inproc) {
        /* Port 0 is not usable for a meta service others must find: pick one from argv or 57xx. */
        sprintf(meta_url, "tcp://127.0.0.1:%s", argc > 2 ? argv[2] : "57321");
        CHECK(start_meta("not a url") == NULL);
        meta = start_meta(meta_url);
        CHECK(meta != NULL);
        CHECK(start_meta(meta_url) == NULL); /* once per process: MMC_REPEAT_CALL logged */
        local = start_local(meta_url, pool);
        CHECK(local != NULL);
        CHECK(start_local(meta_url, pool) == NULL);
        url = meta_url;
    } else {
        if (argc < 3) {
            fprintf(stderr, "usage: %s remote tcp://ip:port\n", argv[0]);
            return 2;
        }
        url = argv[2];
        (void)pool;
    }
    CHECK_EQ(init_client(url, 20), MMC_OK);
    CHECK_EQ(init_client(url, 20), MMC_REPEAT_CALL);

    test_put_get(big, inproc);
    test_layers();
    test_errors(inproc ? (size_t)pool : (size_t)(512u << 20));
    test_batches();
    test_async();
    test_log_filter();
    if (!inproc) {
        test_replicas();
    }

    /* Uninit with async operations still in flight: it finishes them; their handles stay valid. */
    {
        enum { M = 8 };
        char k[M][24];
        unsigned char v[M][20000];
        mmc_buffer b[M];
        int32_t hs[M];
        int j, done = 0;
        for (j = 0; j < M; j++) {
            sprintf(k[j], "in-flight-%d", j);
            fill(v[j], sizeof v[j], 900 + j);
            b[j] = buf1d(v[j], sizeof v[j]);
            hs[j] = mmcc_put(k[j], &b[j], default_options(), MMC_FLAG_ASYNC);
        }
        mmcc_uninit();
        for (j = 0; j < M; j++) {
            done += mmcc_wait(hs[j], 5) == 0;
        }
        CHECK_EQ(done, M);
        CHECK_EQ(init_client(url, 20), MMC_OK);
        CHECK_EQ(mmcc_exist(k[M - 1], 0), MMC_OK);
        for (j = 0; j < M; j++) {
            CHECK_EQ(mmcc_remove(k[j], 0), MMC_OK);
        }
    }
    mmcc_uninit();
    mmcc_uninit(); /* a second uninit is logged, harmless */
    CHECK_EQ(mmcc_exist("x", 0), MMC_CLIENT_NOT_INIT);
    /* Init again after uninit works. */
    CHECK_EQ(init_client(url, 20), MMC_OK);
    CHECK_EQ(mmcc_exist("x", 0), MMC_OBJECT_NOT_EXISTS);
    mmcc_uninit();
    if (inproc) {
        mmcs_local_service_stop((mmc_local_service_t)&passed); /* not a handle: ignored */
        mmcs_local_service_stop(local);
        mmcs_local_service_stop(local); /* stopped already: ignored */
        mmcs_meta_service_stop(meta);
        mmcs_meta_service_stop(meta);
    }
    CHECK(log_count > 0);
    CHECK_EQ(log_bad_level, 0);
    CHECK_EQ(mmc_set_extern_logger(NULL), MMC_OK);
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
