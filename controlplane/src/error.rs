//! The documented error codes (CONTRACT.md "Error codes") and the typed error every layer returns.
//!
//! The C and Python boundaries map [`Error`] to an `i32` through [`Error::code`]; the table of
//! codes lives here once, in [`Code`], and a test checks it against the contract's list.

use std::fmt;

/// Every documented return code, with the original's names and values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Code {
    Ok = 0,
    Error = -1,
    InvalidParam = -3000,
    MallocFailed = -3001,
    NewObjectFailed = -3002,
    NotStarted = -3003,
    Timeout = -3004,
    RepeatCall = -3005,
    DuplicatedObject = -3006,
    ObjectNotExists = -3007,
    NotInitialized = -3008,
    NetSeqDup = -3009,
    NetSeqNoFound = -3010,
    AlreadyNotified = -3011,
    ExceedCapacity = -3013,
    LinkNotFound = -3014,
    NetReqHandleNoFound = -3015,
    NotEnoughMemory = -3016,
    NotConnectMeta = -3017,
    NotConnectLocal = -3018,
    ClientNotInit = -3019,
    UnmatchedState = -3101,
    UnmatchedKey = -3102,
    UnmatchedRet = -3103,
    LeaseNotExpired = -3104,
}

impl Code {
    /// All codes, in the contract's order: `(C name, value)`.
    pub const TABLE: [(Code, &'static str); 25] = [
        (Code::Ok, "MMC_OK"),
        (Code::Error, "MMC_ERROR"),
        (Code::InvalidParam, "MMC_INVALID_PARAM"),
        (Code::MallocFailed, "MMC_MALLOC_FAILED"),
        (Code::NewObjectFailed, "MMC_NEW_OBJECT_FAILED"),
        (Code::NotStarted, "MMC_NOT_STARTED"),
        (Code::Timeout, "MMC_TIMEOUT"),
        (Code::RepeatCall, "MMC_REPEAT_CALL"),
        (Code::DuplicatedObject, "MMC_DUPLICATED_OBJECT"),
        (Code::ObjectNotExists, "MMC_OBJECT_NOT_EXISTS"),
        (Code::NotInitialized, "MMC_NOT_INITIALIZED"),
        (Code::NetSeqDup, "MMC_NET_SEQ_DUP"),
        (Code::NetSeqNoFound, "MMC_NET_SEQ_NO_FOUND"),
        (Code::AlreadyNotified, "MMC_ALREADY_NOTIFIED"),
        (Code::ExceedCapacity, "MMC_EXCEED_CAPACITY"),
        (Code::LinkNotFound, "MMC_LINK_NOT_FOUND"),
        (Code::NetReqHandleNoFound, "MMC_NET_REQ_HANDLE_NO_FOUND"),
        (Code::NotEnoughMemory, "MMC_NOT_ENOUGH_MEMORY"),
        (Code::NotConnectMeta, "MMC_NOT_CONNET_META"),
        (Code::NotConnectLocal, "MMC_NOT_CONNET_LOCAL"),
        (Code::ClientNotInit, "MMC_CLIENT_NOT_INIT"),
        (Code::UnmatchedState, "MMC_UNMATCHED_STATE"),
        (Code::UnmatchedKey, "MMC_UNMATCHED_KEY"),
        (Code::UnmatchedRet, "MMC_UNMATCHED_RET"),
        (Code::LeaseNotExpired, "MMC_LEASE_NOT_EXPIRED"),
    ];

    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The code with this value; unknown values (from a newer peer) become `Error`.
    pub fn from_i32(value: i32) -> Code {
        Code::TABLE
            .iter()
            .map(|(c, _)| *c)
            .find(|c| c.as_i32() == value)
            .unwrap_or(Code::Error)
    }

    pub fn name(self) -> &'static str {
        Code::TABLE
            .iter()
            .find(|(c, _)| *c == self)
            .map(|(_, n)| *n)
            .unwrap_or("MMC_ERROR")
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.as_i32())
    }
}

/// Whose fault an error is, and why: the typed error of every MemCache layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller passed something the contract forbids (bad key, null or short buffer, ...).
    #[error("invalid parameter: {0}")]
    InvalidParam(String),
    #[error("object {key:?} already exists")]
    Exists { key: String },
    #[error("object {key:?} does not exist")]
    NotFound { key: String },
    #[error("no space for {bytes} bytes on {media} even after eviction")]
    NoSpace { bytes: u64, media: &'static str },
    #[error("timed out after {ms} ms: {what}")]
    Timeout { ms: u64, what: String },
    #[error("meta service unreachable at {url}: {reason}")]
    MetaUnreachable { url: String, reason: String },
    #[error("local service unreachable at {endpoint}: {reason}")]
    LocalUnreachable { endpoint: String, reason: String },
    #[error("client is not initialized")]
    ClientNotInit,
    #[error("{0} was already called")]
    RepeatCall(&'static str),
    /// The peer broke the protocol (malformed frame, unexpected reply).
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The remote side answered with a documented code.
    #[error("remote returned {code}: {context}")]
    Remote { code: Code, context: String },
    #[error("configuration: {0}")]
    Config(String),
    #[error("memory: {0}")]
    Memory(String),
    #[error("i/o: {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("internal error: {0}")]
    Internal(String),
    /// A read's bytes do not match the object's checksum (`verify_reads`): the replica is corrupt.
    #[error(
        "object {key:?}: replica on rank {rank} (segment {segment}, offset {offset}) has CRC-32C \
         {actual:#010x}, the object's is {expected:#010x}"
    )]
    Checksum {
        key: String,
        rank: u32,
        segment: u32,
        offset: u64,
        expected: u32,
        actual: u32,
    },
}

impl Error {
    /// The documented code this error maps to at the C and Python boundaries.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidParam(_) => Code::InvalidParam,
            Error::Exists { .. } => Code::DuplicatedObject,
            Error::NotFound { .. } => Code::ObjectNotExists,
            Error::NoSpace { .. } => Code::ExceedCapacity,
            Error::Timeout { .. } => Code::Timeout,
            Error::MetaUnreachable { .. } => Code::NotConnectMeta,
            Error::LocalUnreachable { .. } => Code::NotConnectLocal,
            Error::ClientNotInit => Code::ClientNotInit,
            Error::RepeatCall(_) => Code::RepeatCall,
            Error::Protocol(_) => Code::Error,
            Error::Remote { code, .. } => *code,
            Error::Config(_) => Code::InvalidParam,
            Error::Memory(_) => Code::NotEnoughMemory,
            Error::Io { .. } => Code::Error,
            Error::Internal(_) => Code::Error,
            Error::Checksum { .. } => Code::UnmatchedRet,
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract's list, as written in CONTRACT.md "Error codes".
    const CONTRACT: &str = "0 ok; -1 error; -3000 invalid parameter; -3001 allocation failed; -3002 \
        object creation failed; -3003 service not started; -3004 timeout; -3005 repeated call; -3006 \
        object exists; -3007 object does not exist; -3008 not initialized; -3009 duplicate network \
        sequence; -3010 network sequence not found; -3011 already notified; -3013 over capacity; -3014 \
        connection not found; -3015 request handle not found; -3016 out of memory; -3017 not connected \
        to the meta service; -3018 not connected to the local service; -3019 client not initialized; \
        -3101 state mismatch; -3102 key mismatch; -3103 return mismatch; -3104 lease not expired.";

    #[test]
    fn table_matches_contract_values_in_order() {
        let values: Vec<i32> = CONTRACT
            .split(';')
            .map(|item| item.split_whitespace().next().unwrap().parse().unwrap())
            .collect();
        let ours: Vec<i32> = Code::TABLE.iter().map(|(c, _)| c.as_i32()).collect();
        assert_eq!(values, ours);
    }

    #[test]
    fn names_are_unique_and_round_trip() {
        for (code, name) in Code::TABLE {
            assert_eq!(Code::from_i32(code.as_i32()), code);
            assert_eq!(code.name(), name);
            assert!(name.starts_with("MMC_"));
        }
        assert_eq!(Code::from_i32(-4242), Code::Error);
    }

    #[test]
    fn errors_map_to_documented_codes() {
        assert_eq!(Error::InvalidParam("k".into()).code().as_i32(), -3000);
        assert_eq!(Error::Exists { key: "k".into() }.code().as_i32(), -3006);
        assert_eq!(Error::NotFound { key: "k".into() }.code().as_i32(), -3007);
        let no_space = Error::NoSpace {
            bytes: 1,
            media: "DRAM",
        };
        assert_eq!(no_space.code().as_i32(), -3013);
        let meta = Error::MetaUnreachable {
            url: "u".into(),
            reason: "r".into(),
        };
        assert_eq!(meta.code().as_i32(), -3017);
        let local = Error::LocalUnreachable {
            endpoint: "e".into(),
            reason: "r".into(),
        };
        assert_eq!(local.code().as_i32(), -3018);
        assert_eq!(Error::ClientNotInit.code().as_i32(), -3019);
        let corrupt = Error::Checksum {
            key: "k".into(),
            rank: 1,
            segment: 2,
            offset: 3,
            expected: 4,
            actual: 5,
        };
        assert_eq!(corrupt.code().as_i32(), -3103);
        assert_eq!(
            Error::Timeout {
                ms: 1,
                what: "x".into()
            }
            .code()
            .as_i32(),
            -3004
        );
    }
}
