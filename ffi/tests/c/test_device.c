/* Device memory through the C API, on the simulated device backend (run with
 * MMC_DEVICE_BACKEND=sim): mmc_device.h helpers, MEDIA_HBM buffers (device memory) for
 * mmcc_put / mmcc_get (1D and 2D layers) and batches mixing host and device buffers, and a local
 * service with an HBM pool in device memory.
 *
 *   test_device inproc PORT   meta service and a local service (DRAM + HBM) in this process
 *   test_device remote URL    against mmc-meta / mmc-local processes
 *
 * Prints "N passed, N failed". */
#include "mmc.h"
#include "mmc_device.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed = 0;
static int failed = 0;

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

static mmc_buffer dev1d(uint64_t addr, uint64_t len)
{
    mmc_buffer b;
    memset(&b, 0, sizeof b);
    b.addr = addr;
    b.type = MEDIA_HBM;
    b.dimType = MMC_DIM_1D;
    b.len = len;
    return b;
}

static mmc_put_options options(uint16_t media)
{
    mmc_put_options o;
    memset(&o, 0, sizeof o);
    o.mediaType = media;
    o.policy = NATIVE_AFFINITY;
    o.replicaNum = 1;
    memset(o.preferredLocalServiceIDs, 0xff, sizeof o.preferredLocalServiceIDs);
    return o;
}

/* A device buffer holding `n` bytes of `host`. */
static uint64_t upload(const unsigned char *host, size_t n)
{
    uint64_t d = 0;
    CHECK_EQ(mmc_device_alloc(&d, n, 0), MMC_OK);
    CHECK_EQ(mmc_device_memcpy(d, (uint64_t)(uintptr_t)host, n, MMC_DEVICE_H2D), MMC_OK);
    return d;
}

static int same(uint64_t dev, const unsigned char *want, size_t n)
{
    unsigned char *got = malloc(n);
    int ok;
    CHECK_EQ(mmc_device_memcpy((uint64_t)(uintptr_t)got, dev, n, MMC_DEVICE_D2H), MMC_OK);
    ok = memcmp(got, want, n) == 0;
    free(got);
    return ok;
}

static void test_helpers(void)
{
    unsigned char h[64];
    uint64_t d = 0;
    CHECK_EQ(strcmp(mmc_device_backend(), "sim"), 0);
    CHECK_EQ(mmc_device_alloc(NULL, 16, 0), MMC_INVALID_PARAM);
    CHECK_EQ(mmc_device_alloc(&d, 0, 0), MMC_INVALID_PARAM);
    CHECK_EQ(mmc_device_alloc(&d, 16, 99), MMC_INVALID_PARAM);
    fill(h, sizeof h, 1);
    d = upload(h, sizeof h);
    CHECK_EQ(same(d, h, sizeof h), 1);
    CHECK_EQ(mmc_device_memcpy(d, d, 16, 7), MMC_INVALID_PARAM);
    CHECK_EQ(mmc_device_memcpy(d, (uint64_t)(uintptr_t)h, 128, MMC_DEVICE_H2D), MMC_INVALID_PARAM);
    CHECK_EQ(mmc_device_free(d), MMC_OK);
    CHECK_EQ(mmc_device_free(d), MMC_INVALID_PARAM);
}

static void test_put_get(uint16_t media, size_t n)
{
    unsigned char *h = malloc(n), *back = malloc(n);
    uint64_t src, dst = 0;
    char key[64];
    mmc_buffer b, o;
    mmc_data_info info;
    sprintf(key, "dev-%u-%zu", (unsigned)media, n);
    fill(h, n, (unsigned)n);
    src = upload(h, n);
    CHECK_EQ(mmc_device_alloc(&dst, n, 0), MMC_OK);
    b = dev1d(src, n);
    CHECK_EQ(mmcc_put(key, &b, options(media), 0), MMC_OK);
    if (media != MEDIA_NONE) {
        CHECK_EQ(mmcc_query(key, &info, 0), MMC_OK);
        CHECK_EQ(info.types[0], media);
    }
    o = dev1d(dst, n);
    CHECK_EQ(mmcc_get(key, &o, 0), MMC_OK);
    CHECK_EQ(same(dst, h, n), 1);
    /* Host buffer out. */
    memset(back, 0, n);
    o.addr = (uint64_t)(uintptr_t)back;
    o.type = MEDIA_DRAM;
    CHECK_EQ(mmcc_get(key, &o, 0), MMC_OK);
    CHECK_EQ(memcmp(back, h, n), 0);
    CHECK_EQ(mmcc_remove(key, 0), MMC_OK);
    /* 2D: layers of a device buffer, out to another device buffer's layers. */
    if (n >= 4096) {
        mmc_buffer l;
        uint32_t width = (uint32_t)(n / 4);
        memset(&l, 0, sizeof l);
        l.addr = src;
        l.type = MEDIA_HBM;
        l.dimType = MMC_DIM_2D;
        l.dpitch = width;
        l.width = width;
        l.layerNum = 4;
        l.layerOffset = 1;
        l.layerCount = 3;
        CHECK_EQ(mmcc_put(key, &l, options(media), 0), MMC_OK);
        l.addr = dst;
        CHECK_EQ(mmc_device_memcpy(dst, (uint64_t)(uintptr_t)back, n, MMC_DEVICE_H2D), MMC_OK);
        memset(back, 0, n);
        CHECK_EQ(mmc_device_memcpy(dst, (uint64_t)(uintptr_t)back, n, MMC_DEVICE_H2D), MMC_OK);
        CHECK_EQ(mmcc_get(key, &l, 0), MMC_OK);
        CHECK_EQ(same(dst + width, h + width, 3 * (size_t)width), 1);
        CHECK_EQ(mmcc_remove(key, 0), MMC_OK);
    }
    CHECK_EQ(mmc_device_free(src), MMC_OK);
    CHECK_EQ(mmc_device_free(dst), MMC_OK);
    free(h);
    free(back);
}

static void test_batch_mixed(void)
{
    enum { N = 4 };
    const char *keys[N] = {"mix-0", "mix-1", "mix-2", "mix-3"};
    size_t sizes[N] = {1, 700, 300001, 2u << 20};
    unsigned char *h[N], *out[N];
    uint64_t dev[N], devout[N];
    mmc_buffer in[N], o[N];
    int32_t res[N];
    mmc_put_options opt = options(MEDIA_NONE);
    int i;
    for (i = 0; i < N; i++) {
        h[i] = malloc(sizes[i]);
        out[i] = calloc(1, sizes[i]);
        fill(h[i], sizes[i], 70 + i);
        dev[i] = upload(h[i], sizes[i]);
        CHECK_EQ(mmc_device_alloc(&devout[i], sizes[i], 0), MMC_OK);
        /* Even keys from device memory, odd keys from host memory; reads the other way round. */
        if (i % 2 == 0) {
            in[i] = dev1d(dev[i], sizes[i]);
            o[i] = dev1d((uint64_t)(uintptr_t)out[i], sizes[i]);
            o[i].type = MEDIA_DRAM;
        } else {
            in[i] = dev1d((uint64_t)(uintptr_t)h[i], sizes[i]);
            in[i].type = MEDIA_DRAM;
            o[i] = dev1d(devout[i], sizes[i]);
        }
    }
    CHECK_EQ(mmcc_batch_put_with_results(keys, N, in, &opt, 0, res), MMC_OK);
    CHECK_EQ(mmcc_batch_get_with_results(keys, N, o, 0, res), MMC_OK);
    for (i = 0; i < N; i++) {
        CHECK_EQ(res[i], MMC_OK);
        if (i % 2 == 0) {
            CHECK_EQ(memcmp(out[i], h[i], sizes[i]), 0);
        } else {
            CHECK_EQ(same(devout[i], h[i], sizes[i]), 1);
        }
        CHECK_EQ(mmcc_remove(keys[i], 0), MMC_OK);
        CHECK_EQ(mmc_device_free(dev[i]), MMC_OK);
        CHECK_EQ(mmc_device_free(devout[i]), MMC_OK);
        free(h[i]);
        free(out[i]);
    }
    /* A MEDIA_HBM buffer that is host memory is refused; the key is not created. */
    {
        unsigned char x[32] = {0};
        mmc_buffer bad = dev1d((uint64_t)(uintptr_t)x, sizeof x);
        CHECK_EQ(mmcc_put("bad-hbm", &bad, opt, 0), MMC_INVALID_PARAM);
        CHECK_EQ(mmcc_exist("bad-hbm", 0), MMC_OBJECT_NOT_EXISTS);
    }
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "inproc";
    char meta_url[64];
    const char *url = meta_url;
    mmc_meta_service_t meta = NULL;
    mmc_local_service_t local = NULL;
    mmc_client_config_t cc;
    int inproc = strcmp(mode, "inproc") == 0;

    test_helpers();
    if (inproc) {
        mmc_meta_service_config_t mc;
        mmc_local_service_config_t lc;
        sprintf(meta_url, "tcp://127.0.0.1:%s", argc > 2 ? argv[2] : "57331");
        memset(&mc, 0, sizeof mc);
        strcpy(mc.discoveryURL, meta_url);
        mc.logLevel = 2;
        meta = mmcs_meta_service_start(&mc);
        memset(&lc, 0, sizeof lc);
        strcpy(lc.discoveryURL, meta_url);
        strcpy(lc.bmHcomUrl, "tcp://127.0.0.1:0");
        strcpy(lc.dataOpType, "host_tcp");
        lc.worldSize = 1;
        lc.localDRAMSize = 96u << 20;
        lc.localHBMSize = 96u << 20;
        lc.logLevel = 2;
        local = mmcs_local_service_start(&lc);
        CHECK_EQ(meta != NULL && local != NULL, 1);
    } else {
        if (argc < 3) {
            fprintf(stderr, "usage: %s remote tcp://ip:port\n", argv[0]);
            return 2;
        }
        url = argv[2];
    }
    memset(&cc, 0, sizeof cc);
    strcpy(cc.discoveryURL, url);
    cc.timeOut = 20;
    cc.logLevel = 2;
    CHECK_EQ(mmcc_init(&cc), MMC_OK);
    test_put_get(MEDIA_NONE, 1);
    test_put_get(MEDIA_NONE, 5000);
    test_put_get(inproc ? MEDIA_HBM : MEDIA_NONE, 8u << 20);
    test_put_get(inproc ? MEDIA_DRAM : MEDIA_NONE, 8u << 20);
    test_batch_mixed();
    mmcc_uninit();
    if (inproc) {
        mmcs_local_service_stop(local);
        mmcs_meta_service_stop(meta);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
