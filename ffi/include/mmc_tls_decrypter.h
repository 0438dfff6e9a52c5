/* The key-password decrypter a MemCache process loads when tlsConfig.decrypterLibPath (TOML
 * tls.decrypter_lib_path, ock.mmc.tls.decrypter.path, --tls-decrypter) names a shared library.
 * Written by hand (not generated); the contract is README "Security".
 *
 * The library exports this one function. MemCache reads keyPassPath (one trailing newline
 * dropped) and calls it once at start-up, before it decrypts the private key (encrypted PKCS#8).
 *
 *   cipher, cipher_len  the stored bytes (not NUL-terminated)
 *   plain               a buffer of *plain_len bytes (4096)
 *   plain_len           in: the buffer's size; out: the password's length
 *   return              0 on success; anything else fails the start with that value logged
 */
#ifndef MMC_TLS_DECRYPTER_H
#define MMC_TLS_DECRYPTER_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

int mmc_tls_decrypt(const char *cipher, size_t cipher_len, char *plain, size_t *plain_len);

#ifdef __cplusplus
}
#endif

#endif /* MMC_TLS_DECRYPTER_H */
