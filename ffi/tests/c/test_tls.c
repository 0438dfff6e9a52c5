/* The C API with TLS on (tlsConfig in every config struct).
 *
 *   test_tls PKI inproc PORT   meta and local services in this process, mutual TLS on every channel
 *   test_tls PKI remote URL    a client of separately started mmc-meta / mmc-local with TLS
 *
 * PKI is a folder written by `mmc-testpki` (node.pem, node-enc.key, pass.txt, ca.pem, crl.pem,
 * revoked.pem, revoked.key, wrong-pass.txt). Prints "N passed, N failed". */
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

static const char *pki;

static void path(char *dst, const char *file)
{
    snprintf(dst, TLS_PATH_SIZE, "%s/%s", pki, file);
}

/* The good identity (encrypted key and its password), or `cert`/`key` instead (unencrypted). */
static mmc_tls_config tls(const char *cert, const char *key, const char *pass)
{
    mmc_tls_config t;
    memset(&t, 0, sizeof t);
    t.tlsEnable = true;
    path(t.caPath, "ca.pem");
    path(t.crlPath, "crl.pem");
    path(t.certPath, cert);
    path(t.keyPath, key);
    if (pass != NULL) {
        path(t.keyPassPath, pass);
    }
    strcpy(t.packagePath, "/unused");
    return t;
}

static mmc_tls_config good(void)
{
    return tls("node.pem", "node-enc.key", "pass.txt");
}

static int init_client(const char *url, mmc_tls_config t)
{
    mmc_client_config_t cc;
    memset(&cc, 0, sizeof cc);
    strcpy(cc.discoveryURL, url);
    cc.timeOut = 10;
    cc.logLevel = 2;
    cc.tlsConfig = t;
    return mmcc_init(&cc);
}

static void round_trip(const char *key, size_t n)
{
    unsigned char *src = (unsigned char *)malloc(n), *dst = (unsigned char *)malloc(n);
    mmc_buffer b, d;
    mmc_put_options o;
    size_t i;
    for (i = 0; i < n; i++) {
        src[i] = (unsigned char)(i * 31 + n);
    }
    memset(dst, 0, n);
    memset(&b, 0, sizeof b);
    memset(&o, 0, sizeof o);
    b.addr = (uint64_t)(uintptr_t)src;
    b.type = MEDIA_DRAM;
    b.dimType = MMC_DIM_1D;
    b.len = n;
    d = b;
    d.addr = (uint64_t)(uintptr_t)dst;
    CHECK(mmcc_put(key, &b, o, 0) == MMC_OK);
    CHECK(mmcc_get(key, &d, 0) == MMC_OK);
    CHECK(memcmp(src, dst, n) == 0);
    CHECK(mmcc_remove(key, 0) == MMC_OK);
    free(src);
    free(dst);
}

int main(int argc, char **argv)
{
    char url[64];
    mmc_meta_service_t meta = NULL;
    mmc_local_service_t local = NULL;
    int inproc;
    if (argc < 4) {
        fprintf(stderr, "usage: %s PKI inproc PORT | PKI remote URL\n", argv[0]);
        return 2;
    }
    pki = argv[1];
    inproc = strcmp(argv[2], "inproc") == 0;
    if (inproc) {
        mmc_meta_service_config_t mc;
        mmc_local_service_config_t lc;
        sprintf(url, "tcp://127.0.0.1:%s", argv[3]);
        memset(&mc, 0, sizeof mc);
        strcpy(mc.discoveryURL, url);
        mc.logLevel = 2;
        /* TLS on without a certificate: refused. A wrong key password: refused. */
        mc.tlsConfig = good();
        mc.tlsConfig.certPath[0] = '\0';
        CHECK(mmcs_meta_service_start(&mc) == NULL);
        mc.tlsConfig = tls("node.pem", "node-enc.key", "wrong-pass.txt");
        CHECK(mmcs_meta_service_start(&mc) == NULL);
        mc.tlsConfig = good();
        meta = mmcs_meta_service_start(&mc);
        CHECK(meta != NULL);
        memset(&lc, 0, sizeof lc);
        strcpy(lc.discoveryURL, url);
        strcpy(lc.bmHcomUrl, "tcp://127.0.0.1:0");
        strcpy(lc.dataOpType, "host_tcp");
        lc.rankId = 3;
        lc.worldSize = 1;
        lc.localDRAMSize = 32u << 20;
        lc.logLevel = 2;
        lc.tlsConfig = good();
        local = mmcs_local_service_start(&lc);
        CHECK(local != NULL);
    } else {
        snprintf(url, sizeof url, "%s", argv[3]);
    }
    /* A revoked certificate: the client cannot initialize (the meta service refuses it). */
    CHECK(init_client(url, tls("revoked.pem", "revoked.key", NULL)) == MMC_NOT_CONNET_META);
    /* Without TLS: the meta service refuses the plaintext client at its first call. */
    if (init_client(url, (mmc_tls_config){0}) == MMC_OK) {
        CHECK(mmcc_exist("x", 0) == MMC_NOT_CONNET_META);
        mmcc_uninit();
    } else {
        passed++;
    }
    CHECK(init_client(url, good()) == MMC_OK);
    round_trip("tls-small", 4096);
    round_trip("tls-big", 8u << 20);
    mmcc_uninit();
    if (inproc) {
        mmcs_local_service_stop(local);
        mmcs_meta_service_stop(meta);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
