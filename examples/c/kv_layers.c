/* The shortest useful MemCache program: start a cluster in this process, put one KV-cache block
 * that is spread over 61 layers (one call, scatter-gather), read it back into another layout,
 * check it, stop.
 *
 *   gcc -std=c99 kv_layers.c $(pkg-config --cflags --libs mmc) -o kv_layers && ./kv_layers */
#include "mmc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { LAYERS = 61, BLOCK_BYTES = 144 * 1024, BLOCKS_PER_LAYER = 4 };

int main(int argc, char **argv)
{
    mmc_meta_service_config_t meta_cfg;
    mmc_local_service_config_t local_cfg;
    mmc_client_config_t client_cfg;
    mmc_put_options options;
    mmc_buffer src, dst;
    mmc_meta_service_t meta;
    mmc_local_service_t local;
    /* Each layer holds BLOCKS_PER_LAYER blocks; our block is block 2 of every layer. */
    size_t pitch = (size_t)BLOCKS_PER_LAYER * BLOCK_BYTES;
    unsigned char *kv = malloc(pitch * LAYERS), *back = calloc(LAYERS, BLOCK_BYTES);
    size_t i;
    int rc, same = 1;
    /* The meta service's address: the first argument, or a fixed local port. */
    const char *url = argc > 1 ? argv[1] : "tcp://127.0.0.1:57400";

    for (i = 0; i < pitch * LAYERS; i++) {
        kv[i] = (unsigned char)(i * 7 + i / 4096);
    }
    memset(&meta_cfg, 0, sizeof meta_cfg);
    snprintf(meta_cfg.discoveryURL, sizeof meta_cfg.discoveryURL, "%s", url);
    meta = mmcs_meta_service_start(&meta_cfg);

    memset(&local_cfg, 0, sizeof local_cfg);
    snprintf(local_cfg.discoveryURL, sizeof local_cfg.discoveryURL, "%s", url);
    local_cfg.localDRAMSize = 256u << 20;
    local = mmcs_local_service_start(&local_cfg);

    memset(&client_cfg, 0, sizeof client_cfg);
    snprintf(client_cfg.discoveryURL, sizeof client_cfg.discoveryURL, "%s", url);
    if (meta == NULL || local == NULL || mmcc_init(&client_cfg) != MMC_OK) {
        fprintf(stderr, "start failed\n");
        return 1;
    }

    /* Block 2 of every layer: piece i is at kv + 2*BLOCK_BYTES + i*pitch. */
    memset(&src, 0, sizeof src);
    src.addr = (uint64_t)(uintptr_t)(kv + 2 * BLOCK_BYTES);
    src.type = MEDIA_DRAM;
    src.dimType = MMC_DIM_2D;
    src.dpitch = pitch;
    src.width = BLOCK_BYTES;
    src.layerNum = LAYERS;
    src.layerCount = LAYERS;
    memset(&options, 0, sizeof options);
    rc = mmcc_put("prefix-hash-0001", &src, options, 0);
    printf("put  %d layers x %d KiB: %d\n", LAYERS, BLOCK_BYTES / 1024, rc);

    /* Read it back contiguously: layer i lands at back + i*BLOCK_BYTES. */
    memset(&dst, 0, sizeof dst);
    dst.addr = (uint64_t)(uintptr_t)back;
    dst.type = MEDIA_DRAM;
    dst.dimType = MMC_DIM_2D;
    dst.dpitch = BLOCK_BYTES;
    dst.width = BLOCK_BYTES;
    dst.layerNum = LAYERS;
    dst.layerCount = LAYERS;
    rc = rc == MMC_OK ? mmcc_get("prefix-hash-0001", &dst, 0) : rc;
    for (i = 0; i < LAYERS; i++) {
        same &= memcmp(back + i * BLOCK_BYTES, kv + 2 * BLOCK_BYTES + i * pitch, BLOCK_BYTES) == 0;
    }
    printf("get: %d, bytes %s\n", rc, same ? "identical" : "DIFFER");

    mmcc_uninit();
    mmcs_local_service_stop(local);
    mmcs_meta_service_stop(meta);
    free(kv);
    free(back);
    return rc == MMC_OK && same ? 0 : 1;
}
