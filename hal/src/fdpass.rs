//! Passing file descriptors between processes on one host (`SCM_RIGHTS` over a Unix socket): how a
//! local service hands its pool's memfd to a same-host client, which then maps the pool and copies
//! directly, with no socket on the data path.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use crate::HalError;

/// Most descriptors one message carries.
pub const FDS_MAX: usize = 8;

/// Send `payload` with `fds` attached, in one message.
pub fn send_with_fds(
    stream: &UnixStream,
    payload: &[u8],
    fds: &[BorrowedFd<'_>],
) -> Result<(), HalError> {
    if fds.len() > FDS_MAX {
        return Err(HalError::InvalidSize(format!(
            "{} descriptors, at most {FDS_MAX}",
            fds.len()
        )));
    }
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_MAX))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(HalError::InvalidSize("control buffer too small".into()));
    }
    let sent = sendmsg(
        stream.as_fd(),
        &[IoSlice::new(payload)],
        &mut control,
        SendFlags::NOSIGNAL,
    )
    .map_err(|e| io_error("sendmsg with descriptors", e.into()))?;
    if sent != payload.len() {
        return Err(io_error(
            "sendmsg with descriptors",
            std::io::Error::new(std::io::ErrorKind::WriteZero, "short write"),
        ));
    }
    Ok(())
}

/// Receive one message into `buf` and the descriptors attached to it. Returns the payload length.
pub fn recv_with_fds(
    stream: &UnixStream,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> Result<usize, HalError> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_MAX))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = recvmsg(
        stream.as_fd(),
        &mut [IoSliceMut::new(buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(|e| io_error("recvmsg with descriptors", e.into()))?;
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = m {
            fds.extend(received);
        }
    }
    if msg.flags.contains(rustix::net::ReturnFlags::CTRUNC) {
        return Err(HalError::InvalidSize(
            "descriptors truncated (more than FDS_MAX sent)".into(),
        ));
    }
    Ok(msg.bytes)
}

fn io_error(context: &str, source: std::io::Error) -> HalError {
    HalError::Io {
        context: context.into(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Arena;

    #[test]
    fn a_memfd_crosses_a_socket_and_maps_to_the_same_bytes() {
        let arena = Arena::new("fdpass-test", 1 << 20, false).unwrap();
        arena.copy_in(4096, b"shared bytes").unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        send_with_fds(&a, b"hello", &[arena.as_fd()]).unwrap();
        let mut buf = [0u8; 16];
        let mut fds = Vec::new();
        let n = recv_with_fds(&b, &mut buf, &mut fds).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(fds.len(), 1);
        let mapped = Arena::from_fd("mapped", fds.pop().unwrap(), arena.len()).unwrap();
        let mut out = [0u8; 12];
        mapped.copy_out(4096, &mut out).unwrap();
        assert_eq!(&out, b"shared bytes");
        mapped.copy_in(0, b"back").unwrap();
        let mut back = [0u8; 4];
        arena.copy_out(0, &mut back).unwrap();
        assert_eq!(&back, b"back");
    }

    #[test]
    fn a_mapping_longer_than_the_file_is_refused() {
        let arena = Arena::new("fdpass-short", 1 << 16, false).unwrap();
        let fd = arena.as_fd().try_clone_to_owned().unwrap();
        assert!(Arena::from_fd("too-long", fd, arena.len() + 4096).is_err());
    }

    #[test]
    fn too_many_descriptors_are_refused() {
        let arena = Arena::new("fdpass-many", 1 << 16, false).unwrap();
        let (a, _b) = UnixStream::pair().unwrap();
        let fds: Vec<BorrowedFd<'_>> = (0..FDS_MAX + 1).map(|_| arena.as_fd()).collect();
        assert!(send_with_fds(&a, b"x", &fds).is_err());
    }
}
