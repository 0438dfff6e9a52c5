//! The C types, constants and error codes of `mmc_def.h`, with CONTRACT.md's layouts.
#![allow(non_camel_case_types, non_snake_case)]

use std::ffi::{c_char, c_int, c_void};

pub const MEDIA_HBM: u32 = 0;
pub const MEDIA_DRAM: u32 = 1;
pub const MEDIA_SSD: u32 = 2;
/// The highest tier with room.
pub const MEDIA_NONE: u32 = 3;

pub const NATIVE_AFFINITY: u32 = 0;
pub const PREFERRED_AFFINITY: u32 = 1;

pub const MMC_DIM_1D: u32 = 0;
pub const MMC_DIM_2D: u32 = 1;

/// Flag bit 0: return a wait handle at once; complete with `mmcc_wait`.
pub const MMC_FLAG_ASYNC: u32 = 1;

pub const MAX_BLOB_COPIES: usize = 8;
pub const MAX_BATCH_OP_COUNT: u32 = 16384;
pub const MMC_KEY_BYTES_MAX: u32 = 255;
pub const DISCOVERY_URL_SIZE: usize = 1024;
pub const PATH_MAX_SIZE: usize = 1024;
pub const TLS_PATH_SIZE: usize = 256;
pub const PROTOCOL_SIZE: usize = 64;

pub const MMC_OK: i32 = 0;
pub const MMC_ERROR: i32 = -1;
pub const MMC_INVALID_PARAM: i32 = -3000;
pub const MMC_MALLOC_FAILED: i32 = -3001;
pub const MMC_NEW_OBJECT_FAILED: i32 = -3002;
pub const MMC_NOT_STARTED: i32 = -3003;
pub const MMC_TIMEOUT: i32 = -3004;
pub const MMC_REPEAT_CALL: i32 = -3005;
pub const MMC_DUPLICATED_OBJECT: i32 = -3006;
pub const MMC_OBJECT_NOT_EXISTS: i32 = -3007;
pub const MMC_NOT_INITIALIZED: i32 = -3008;
pub const MMC_NET_SEQ_DUP: i32 = -3009;
pub const MMC_NET_SEQ_NO_FOUND: i32 = -3010;
pub const MMC_ALREADY_NOTIFIED: i32 = -3011;
pub const MMC_EXCEED_CAPACITY: i32 = -3013;
pub const MMC_LINK_NOT_FOUND: i32 = -3014;
pub const MMC_NET_REQ_HANDLE_NO_FOUND: i32 = -3015;
pub const MMC_NOT_ENOUGH_MEMORY: i32 = -3016;
pub const MMC_NOT_CONNET_META: i32 = -3017;
pub const MMC_NOT_CONNET_LOCAL: i32 = -3018;
pub const MMC_CLIENT_NOT_INIT: i32 = -3019;
pub const MMC_UNMATCHED_STATE: i32 = -3101;
pub const MMC_UNMATCHED_KEY: i32 = -3102;
pub const MMC_UNMATCHED_RET: i32 = -3103;
pub const MMC_LEASE_NOT_EXPIRED: i32 = -3104;

/// A caller buffer. 1-D: the bytes `[addr+offset, addr+offset+len)`. 2-D (layered): `layerCount`
/// pieces of `width` bytes, piece `i` at `addr + (layerOffset+i)*dpitch`; the object's bytes are the
/// pieces concatenated.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct mmc_buffer {
    pub addr: u64,
    /// Media of `addr`: `MEDIA_HBM` (device memory) or `MEDIA_DRAM` (host memory).
    pub r#type: u32,
    /// `MMC_DIM_1D` or `MMC_DIM_2D`.
    pub dimType: u32,
    pub offset: u64,
    pub len: u64,
    pub dpitch: u64,
    pub layerOffset: u32,
    pub width: u32,
    pub layerNum: u16,
    pub layerCount: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct mmc_put_options {
    pub mediaType: u16,
    /// `NATIVE_AFFINITY` (a zeroed struct) or `PREFERRED_AFFINITY`.
    pub policy: u16,
    /// 0 or 1 = one copy; at most `MAX_BLOB_COPIES`, each on a different local service.
    pub replicaNum: u16,
    /// For `PREFERRED_AFFINITY`: the local services to use; negative entries are ignored.
    pub preferredLocalServiceIDs: [i32; MAX_BLOB_COPIES],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct mmc_data_info {
    pub size: u64,
    pub prot: u16,
    pub numBlobs: u8,
    pub valid: bool,
    pub ranks: [u32; MAX_BLOB_COPIES],
    pub types: [u16; MAX_BLOB_COPIES],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct mmc_location_t {
    /// 0, or the error code.
    pub result: i32,
    pub numBlobs: u8,
    pub ranks: [u32; MAX_BLOB_COPIES],
    pub types: [u16; MAX_BLOB_COPIES],
    /// Each replica's offset inside its local service's pool.
    pub offsets: [u64; MAX_BLOB_COPIES],
    pub size: u64,
}

/// Mutual TLS 1.3 on every TCP channel (README "Security"). Paths are PEM files; with `tlsEnable`,
/// `caPath`, `certPath` and `keyPath` are required. `keyPassPath` holds an encrypted PKCS#8 key's
/// password; `decrypterLibPath` names a library whose `mmc_tls_decrypt` (mmc_tls_decrypter.h)
/// turns that file's contents into the password; `packagePath` is accepted and unused.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct mmc_tls_config {
    pub tlsEnable: bool,
    pub caPath: [c_char; TLS_PATH_SIZE],
    pub crlPath: [c_char; TLS_PATH_SIZE],
    pub certPath: [c_char; TLS_PATH_SIZE],
    pub keyPath: [c_char; TLS_PATH_SIZE],
    pub keyPassPath: [c_char; TLS_PATH_SIZE],
    pub packagePath: [c_char; TLS_PATH_SIZE],
    pub decrypterLibPath: [c_char; TLS_PATH_SIZE],
}

/// The original's name for `mmc_tls_config`.
pub type tls_config = mmc_tls_config;

/// A log sink: `level` 0 debug, 1 info, 2 warn, 3 error; `msg` is valid during the call only.
pub type mmc_log_func = Option<unsafe extern "C" fn(level: c_int, msg: *const c_char)>;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct mmc_client_config_t {
    /// The meta service, `tcp://ip:port`.
    pub discoveryURL: [c_char; DISCOVERY_URL_SIZE],
    pub rankId: u32,
    /// Seconds; 0 = 60.
    pub timeOut: u32,
    pub logLevel: i32,
    pub logFunc: mmc_log_func,
    pub tlsConfig: mmc_tls_config,
    /// Workers for async gets; 0 = default.
    pub readThreadPoolNum: u32,
    /// Workers for async puts and other async calls; 0 = default.
    pub writeThreadPoolNum: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct mmc_meta_service_config_t {
    /// Where the meta service listens, `tcp://ip:port`.
    pub discoveryURL: [c_char; DISCOVERY_URL_SIZE],
    pub logLevel: i32,
    /// Percent; 0 = 90.
    pub evictThresholdHigh: u16,
    /// Percent; 0 = 80.
    pub evictThresholdLow: u16,
    pub tlsConfig: mmc_tls_config,
    /// `ip:port` for HTTP `/metrics` and `/health`; empty = off.
    pub metricsURL: [c_char; DISCOVERY_URL_SIZE],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct mmc_local_service_config_t {
    /// The meta service, `tcp://ip:port`.
    pub discoveryURL: [c_char; DISCOVERY_URL_SIZE],
    pub deviceId: u32,
    /// This service's id (fixed by the caller).
    pub rankId: u32,
    pub worldSize: u32,
    /// The address other hosts use to reach the data endpoint; empty = the listen address.
    pub bmIpPort: [c_char; DISCOVERY_URL_SIZE],
    /// Where the data endpoint listens, `tcp://ip:port`; port 0 = any free port; empty = 127.0.0.1:0.
    pub bmHcomUrl: [c_char; DISCOVERY_URL_SIZE],
    pub createId: i32,
    /// `tcp`, `shm`, `rdma` or `host_tcp`, `host_shm`, `host_rdma`; empty = tcp.
    pub dataOpType: [c_char; PROTOCOL_SIZE],
    pub localDRAMSize: u64,
    pub localHBMSize: u64,
    pub flags: u32,
    pub tlsConfig: mmc_tls_config,
    pub logLevel: i32,
    pub logFunc: mmc_log_func,
}

/// A running meta service started by `mmcs_meta_service_start`.
pub type mmc_meta_service_t = *mut c_void;
/// A running local service started by `mmcs_local_service_start`.
pub type mmc_local_service_t = *mut c_void;

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// The layouts CONTRACT.md fixes (x86_64 / aarch64 LP64 alignment).
    #[test]
    fn layouts_match_the_contract() {
        assert_eq!(offset_of!(mmc_buffer, addr), 0);
        assert_eq!(offset_of!(mmc_buffer, r#type), 8);
        assert_eq!(offset_of!(mmc_buffer, dimType), 12);
        assert_eq!(offset_of!(mmc_buffer, offset), 16);
        assert_eq!(offset_of!(mmc_buffer, len), 24);
        assert_eq!(offset_of!(mmc_buffer, dpitch), 32);
        assert_eq!(offset_of!(mmc_buffer, layerOffset), 40);
        assert_eq!(offset_of!(mmc_buffer, width), 44);
        assert_eq!(offset_of!(mmc_buffer, layerNum), 48);
        assert_eq!(offset_of!(mmc_buffer, layerCount), 50);
        assert_eq!(size_of::<mmc_buffer>(), 56);
        assert_eq!(offset_of!(mmc_put_options, preferredLocalServiceIDs), 8);
        assert_eq!(size_of::<mmc_put_options>(), 40);
        assert_eq!(offset_of!(mmc_data_info, numBlobs), 10);
        assert_eq!(offset_of!(mmc_data_info, valid), 11);
        assert_eq!(offset_of!(mmc_data_info, ranks), 12);
        assert_eq!(offset_of!(mmc_data_info, types), 44);
        assert_eq!(offset_of!(mmc_location_t, ranks), 8);
        assert_eq!(offset_of!(mmc_location_t, offsets), 56);
        assert_eq!(offset_of!(mmc_location_t, size), 120);
        assert_eq!(size_of::<mmc_tls_config>(), 1 + 7 * 256);
        assert_eq!(offset_of!(mmc_client_config_t, rankId), 1024);
        assert_eq!(offset_of!(mmc_client_config_t, logFunc), 1040);
        assert_eq!(offset_of!(mmc_local_service_config_t, localDRAMSize), 3152);
    }
}
