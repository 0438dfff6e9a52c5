//! Turning C arguments into checked Rust values. Every pointer is checked for NULL and every
//! length for overflow before a byte is touched.

use std::ffi::c_char;

use tracing::warn;

use crate::types::*;

/// A key: NUL-terminated within 256 bytes, 1..255 bytes long, UTF-8.
pub(crate) fn key(ptr: *const c_char) -> Result<String, i32> {
    if ptr.is_null() {
        warn!("key is NULL");
        return Err(MMC_INVALID_PARAM);
    }
    let mut bytes = Vec::with_capacity(32);
    for i in 0..=MMC_KEY_BYTES_MAX as usize {
        // SAFETY: the caller passes a NUL-terminated string; we read byte by byte and stop at the
        // NUL or after 256 bytes, so we never read past a properly terminated key.
        let b = unsafe { *ptr.add(i) } as u8;
        if b == 0 {
            break;
        }
        bytes.push(b);
    }
    if bytes.is_empty() || bytes.len() > MMC_KEY_BYTES_MAX as usize {
        warn!(
            len = bytes.len(),
            "invalid key: must be 1 to 255 bytes, NUL-terminated"
        );
        return Err(MMC_INVALID_PARAM);
    }
    String::from_utf8(bytes).map_err(|_| {
        warn!("invalid key: not UTF-8");
        MMC_INVALID_PARAM
    })
}

/// `count` keys from `keys`; a bad key is an `Err` in its slot.
pub(crate) fn keys(
    keys: *mut *const c_char,
    count: usize,
) -> Result<Vec<Result<String, i32>>, i32> {
    if keys.is_null() || count == 0 || count > MAX_BATCH_OP_COUNT as usize {
        warn!(
            count,
            max = MAX_BATCH_OP_COUNT,
            "batch refused: NULL keys, or count 0 or over the maximum"
        );
        return Err(MMC_INVALID_PARAM);
    }
    // SAFETY: non-null, and the caller passes an array of `count` key pointers.
    let ptrs = unsafe { std::slice::from_raw_parts(keys, count) };
    Ok(ptrs.iter().map(|p| key(*p)).collect())
}

/// A fixed-size char array field: text up to its first NUL (which must be inside the array).
pub(crate) fn field(name: &str, arr: &[c_char]) -> Result<String, i32> {
    let bytes: Vec<u8> = arr.iter().map(|c| *c as u8).collect();
    let Some(end) = bytes.iter().position(|b| *b == 0) else {
        warn!(
            field = name,
            "string field is not NUL-terminated within its size"
        );
        return Err(MMC_INVALID_PARAM);
    };
    String::from_utf8(bytes[..end].to_vec()).map_err(|_| {
        warn!(field = name, "string field is not UTF-8");
        MMC_INVALID_PARAM
    })
}

/// The TLS settings of a C `mmc_tls_config` (every path field NUL-terminated UTF-8), checked:
/// with `tlsEnable`, the CA, certificate and key paths must be set.
/// With `tlsEnable` false the path fields are not read (as before TLS existed).
pub(crate) fn tls(c: &mmc_tls_config) -> Result<mmc_config::TlsConfig, i32> {
    if !c.tlsEnable {
        return Ok(mmc_config::TlsConfig::default());
    }
    let t = mmc_config::TlsConfig {
        enable: c.tlsEnable,
        ca_path: field("tlsConfig.caPath", &c.caPath)?,
        crl_path: field("tlsConfig.crlPath", &c.crlPath)?,
        cert_path: field("tlsConfig.certPath", &c.certPath)?,
        key_path: field("tlsConfig.keyPath", &c.keyPath)?,
        key_pass_path: field("tlsConfig.keyPassPath", &c.keyPassPath)?,
        package_path: field("tlsConfig.packagePath", &c.packagePath)?,
        decrypter_lib_path: field("tlsConfig.decrypterLibPath", &c.decrypterLibPath)?,
    };
    t.validate().map_err(|e| {
        warn!(error = %e, "tlsConfig refused");
        MMC_INVALID_PARAM
    })?;
    Ok(t)
}

/// The (address, length) pieces a buffer describes, in object order.
pub(crate) fn pieces(buf: &mmc_buffer) -> Result<Vec<(usize, usize)>, i32> {
    match buf.r#type {
        // Host memory, or device memory of the device backend (checked when it is used).
        MEDIA_DRAM | MEDIA_HBM => {}
        other => {
            warn!(
                media = other,
                "buffer type must be MEDIA_DRAM (host) or MEDIA_HBM (device)"
            );
            return Err(MMC_INVALID_PARAM);
        }
    }
    if buf.addr == 0 {
        warn!("buffer address is NULL");
        return Err(MMC_INVALID_PARAM);
    }
    let bad = |why: &str| {
        warn!(why, ?buf, "invalid buffer");
        MMC_INVALID_PARAM
    };
    match buf.dimType {
        MMC_DIM_1D => {
            if buf.len == 0 {
                return Err(bad("zero length"));
            }
            let start = buf
                .addr
                .checked_add(buf.offset)
                .ok_or_else(|| bad("address overflow"))?;
            start
                .checked_add(buf.len)
                .ok_or_else(|| bad("address overflow"))?;
            let len = usize::try_from(buf.len).map_err(|_| bad("length too large"))?;
            if len > isize::MAX as usize {
                return Err(bad("length too large"));
            }
            Ok(vec![(start as usize, len)])
        }
        MMC_DIM_2D => {
            if buf.width == 0 || buf.layerCount == 0 {
                return Err(bad("zero width or layer count"));
            }
            if buf.layerOffset as u64 + buf.layerCount as u64 > buf.layerNum as u64 {
                return Err(bad("layerOffset + layerCount exceeds layerNum"));
            }
            if buf.layerCount > 1 && (buf.width as u64) > buf.dpitch {
                return Err(bad("width exceeds dpitch: layers would overlap"));
            }
            let mut out = Vec::with_capacity(buf.layerCount as usize);
            for i in 0..buf.layerCount as u64 {
                let at = (buf.layerOffset as u64 + i)
                    .checked_mul(buf.dpitch)
                    .and_then(|o| buf.addr.checked_add(o))
                    .ok_or_else(|| bad("address overflow"))?;
                at.checked_add(buf.width as u64)
                    .ok_or_else(|| bad("address overflow"))?;
                out.push((at as usize, buf.width as usize));
            }
            Ok(out)
        }
        other => {
            warn!(dim = other, "dimType must be MMC_DIM_1D or MMC_DIM_2D");
            Err(MMC_INVALID_PARAM)
        }
    }
}

/// Whether a buffer is device memory (`MEDIA_HBM`).
pub(crate) fn is_device(buf: &mmc_buffer) -> bool {
    buf.r#type == MEDIA_HBM
}

/// The pieces of each buffer of a batch; a key whose buffer is invalid gets the error in its slot
/// (and no pieces), so the other keys still go ahead.
pub(crate) fn batch_pieces(
    checked: &mut [Result<String, i32>],
    bufs: &[mmc_buffer],
) -> Vec<Vec<(usize, usize)>> {
    checked
        .iter_mut()
        .zip(bufs)
        .map(|(k, b)| match pieces(b) {
            Ok(p) => p,
            Err(code) => {
                *k = Err(code);
                Vec::new()
            }
        })
        .collect()
}

/// Destination pieces of one call must not overlap (they become distinct `&mut` slices).
pub(crate) fn check_disjoint<'a>(all: impl Iterator<Item = &'a (usize, usize)>) -> Result<(), i32> {
    let mut v: Vec<(usize, usize)> = all.copied().collect();
    v.sort_unstable();
    for w in v.windows(2) {
        if w[0].0 + w[0].1 > w[1].0 {
            warn!("destination buffers of one call overlap");
            return Err(MMC_INVALID_PARAM);
        }
    }
    Ok(())
}

pub(crate) fn put_options(o: &mmc_put_options) -> Result<mmc_dataplane::PutOptions, i32> {
    if o.mediaType as u32 > MEDIA_NONE
        || o.policy as u32 > PREFERRED_AFFINITY
        || o.replicaNum as usize > MAX_BLOB_COPIES
    {
        warn!(
            ?o,
            "invalid put options: media 0..3, policy 0..1, replicaNum 0..8"
        );
        return Err(MMC_INVALID_PARAM);
    }
    Ok(mmc_dataplane::PutOptions {
        media: o.mediaType,
        policy: o.policy,
        replicas: o.replicaNum,
        preferred: o.preferredLocalServiceIDs.to_vec(),
    })
}

/// The byte slices of source pieces.
///
/// # Safety
/// Every piece must be readable memory of its length for as long as the slices live.
pub(crate) unsafe fn slices<'a>(pieces: &[(usize, usize)]) -> Vec<&'a [u8]> {
    pieces
        .iter()
        // SAFETY: non-null (checked by `pieces`), length within isize, validity promised by the caller.
        .map(|(p, l)| unsafe { std::slice::from_raw_parts(*p as *const u8, *l) })
        .collect()
}

/// The byte slices of destination pieces.
///
/// # Safety
/// Every piece must be writable memory of its length, not aliased, for as long as they live.
pub(crate) unsafe fn slices_mut<'a>(pieces: &[(usize, usize)]) -> Vec<&'a mut [u8]> {
    pieces
        .iter()
        // SAFETY: non-null, disjoint (`check_disjoint`), validity promised by the caller.
        .map(|(p, l)| unsafe { std::slice::from_raw_parts_mut(*p as *mut u8, *l) })
        .collect()
}
