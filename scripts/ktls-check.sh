#!/usr/bin/env bash
# Does this kernel offer kernel TLS (kTLS), which the TLS data path could hand its session keys to
# (rustls secret extraction) instead of encrypting in user space? Prints what the kernel says at
# each step; exit 0 when TLS 1.3 AES-GCM offload can be set up on a TCP socket, 1 when not.
#   scripts/ktls-check.sh
set -u
echo "kernel: $(uname -r)"
echo "tcp_available_ulp: $(cat /proc/sys/net/ipv4/tcp_available_ulp 2>&1)"
if [ -r /proc/config.gz ]; then
    echo "config: $(zcat /proc/config.gz | grep -E '^(# )?CONFIG_TLS[ =]' || echo 'CONFIG_TLS absent')"
fi
echo "/proc/net/tls_stat: $( [ -e /proc/net/tls_stat ] && echo present || echo absent)"
command -v modprobe >/dev/null && { modprobe tls 2>&1 | sed 's/^/modprobe tls: /'; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat > "$dir/probe.c" <<'C'
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <linux/tls.h>
#ifndef TCP_ULP
#define TCP_ULP 31
#endif
#ifndef SOL_TLS
#define SOL_TLS 282
#endif
int main(void) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (bind(l, (void *)&a, sizeof a) || listen(l, 1) || getsockname(l, (void *)&a, &al)) {
        perror("listen");
        return 2;
    }
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c, (void *)&a, sizeof a)) {
        perror("connect");
        return 2;
    }
    if (setsockopt(c, IPPROTO_TCP, TCP_ULP, "tls", sizeof "tls")) {
        printf("setsockopt(TCP_ULP, \"tls\"): %s (errno %d)\n", strerror(errno), errno);
        return 1;
    }
    printf("setsockopt(TCP_ULP, \"tls\"): ok\n");
    struct tls12_crypto_info_aes_gcm_128 ci;
    memset(&ci, 0, sizeof ci);
    ci.info.version = TLS_1_3_VERSION;
    ci.info.cipher_type = TLS_CIPHER_AES_GCM_128;
    for (int dir = TLS_TX; dir <= TLS_RX; dir++) {
        if (setsockopt(c, SOL_TLS, dir, &ci, sizeof ci)) {
            printf("setsockopt(SOL_TLS, %s, TLS 1.3 AES-GCM-128): %s (errno %d)\n",
                   dir == TLS_TX ? "TLS_TX" : "TLS_RX", strerror(errno), errno);
            return 1;
        }
        printf("setsockopt(SOL_TLS, %s, TLS 1.3 AES-GCM-128): ok\n", dir == TLS_TX ? "TLS_TX" : "TLS_RX");
    }
    return 0;
}
C
if ! gcc -O1 -o "$dir/probe" "$dir/probe.c" 2>"$dir/cc.err"; then
    echo "probe not built: $(head -3 "$dir/cc.err")"
    exit 1
fi
if "$dir/probe"; then
    echo "kTLS: available"
else
    echo "kTLS: not available"
    exit 1
fi
