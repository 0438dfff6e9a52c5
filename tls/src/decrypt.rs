//! The key-password decrypter (`decrypter_lib_path`): a user's shared library, loaded at start-up,
//! that turns the stored (enciphered) password into the real one. It exports one C function
//! (also in `ffi/include/mmc_tls_decrypter.h`):
//!
//! ```c
//! /* cipher: the bytes of key_pass_path (one trailing newline dropped), cipher_len of them.
//!  * plain: a buffer of *plain_len bytes (DECRYPT_PLAIN_MAX). On success write the password
//!  * there, set *plain_len to its length and return 0; any other return value is a failure. */
//! int mmc_tls_decrypt(const char *cipher, size_t cipher_len, char *plain, size_t *plain_len);
//! ```

use std::os::raw::{c_char, c_int};

use zeroize::Zeroizing;

use crate::TlsError;

/// The symbol the decrypter library must export.
pub const DECRYPT_SYMBOL: &str = "mmc_tls_decrypt";
/// Size of the buffer the decrypter writes the password into.
pub const DECRYPT_PLAIN_MAX: usize = 4096;

type DecryptFn = unsafe extern "C" fn(*const c_char, usize, *mut c_char, *mut usize) -> c_int;

/// Run `lib`'s `mmc_tls_decrypt` on `cipher`; the library is unloaded afterwards.
pub(crate) fn decrypt(lib: &str, cipher: &[u8]) -> Result<Zeroizing<Vec<u8>>, TlsError> {
    let fail = |reason: String| TlsError::Decrypter {
        path: lib.to_string(),
        reason,
    };
    // SAFETY: loading a library runs its initialisers; the operator named this library in the
    // TLS settings as trusted code to run in this process (like an OpenSSL engine in the
    // original), which is the documented contract of `decrypter_lib_path`.
    let library = unsafe { libloading::Library::new(lib) }.map_err(|e| fail(e.to_string()))?;
    // SAFETY: the documented signature of `mmc_tls_decrypt` is `DecryptFn`; a library exporting
    // the symbol with another signature breaks that contract.
    let func: libloading::Symbol<'_, DecryptFn> = unsafe { library.get(DECRYPT_SYMBOL.as_bytes()) }
        .map_err(|e| fail(format!("no function {DECRYPT_SYMBOL}: {e}")))?;
    let mut plain = Zeroizing::new(vec![0u8; DECRYPT_PLAIN_MAX]);
    let mut plain_len = DECRYPT_PLAIN_MAX;
    // SAFETY: `cipher` is valid for `cipher.len()` bytes, `plain` for `plain_len` writable bytes,
    // `plain_len` is a valid pointer; all outlive the call, and the library stays loaded during it.
    let rc = unsafe {
        func(
            cipher.as_ptr().cast(),
            cipher.len(),
            plain.as_mut_ptr().cast(),
            &mut plain_len,
        )
    };
    if rc != 0 {
        return Err(fail(format!("{DECRYPT_SYMBOL} returned {rc}")));
    }
    if plain_len > DECRYPT_PLAIN_MAX {
        return Err(fail(format!(
            "{DECRYPT_SYMBOL} reported {plain_len} bytes, the buffer holds {DECRYPT_PLAIN_MAX}"
        )));
    }
    plain.truncate(plain_len);
    Ok(plain)
}
