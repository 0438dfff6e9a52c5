//! Readiness polling through io_uring (`IORING_OP_POLL_ADD`): the io_uring counterpart of the mio
//! (epoll) poller that the local service's shard loops can use. A poll is armed once per wait
//! (one-shot), and completions come back as the tokens they were armed with.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use io_uring::{opcode, types, IoUring};

/// A ring that reports which armed descriptors became readable.
pub struct UringPoller {
    ring: IoUring,
}

impl UringPoller {
    /// A ring with room for `entries` armed polls between waits.
    pub fn new(entries: u32) -> io::Result<UringPoller> {
        Ok(UringPoller {
            ring: IoUring::new(entries.max(8))?,
        })
    }

    /// Arm a one-shot poll for readability of `fd`; `token` comes back from [`Self::wait`] once.
    pub fn arm(&mut self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        let entry = opcode::PollAdd::new(types::Fd(fd.as_raw_fd()), libc::POLLIN as u32)
            .build()
            .user_data(token);
        for _ in 0..2 {
            // SAFETY: a poll entry refers to no user memory, only to the descriptor, which is open
            // now (the borrow proves it); should it close before the poll completes, the kernel
            // still holds its own reference for the request and completes it.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return Ok(());
            }
            // The submission queue is full: hand what is there to the kernel, then retry.
            self.ring.submit()?;
        }
        Err(io::Error::other("io_uring submission queue stays full"))
    }

    /// Submit the armed polls and wait up to `timeout` (zero: do not wait) for completions; the
    /// tokens of descriptors that became readable (or failed) are appended to `ready`.
    pub fn wait(&mut self, timeout: Duration, ready: &mut Vec<u64>) -> io::Result<()> {
        if timeout.is_zero() {
            self.ring.submit()?;
        } else {
            let ts = types::Timespec::new()
                .sec(timeout.as_secs())
                .nsec(timeout.subsec_nanos());
            let args = types::SubmitArgs::new().timespec(&ts);
            match self.ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME) | Some(libc::EINTR)) => {}
                Err(e) => return Err(e),
            }
        }
        ready.extend(self.ring.completion().map(|cqe| cqe.user_data()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_readable_socket_comes_back_with_its_token() {
        let mut p = match UringPoller::new(16) {
            Ok(p) => p,
            Err(e) => {
                println!("skipped: io_uring unavailable here ({e})");
                return;
            }
        };
        let (mut a, b) = UnixStream::pair().unwrap();
        p.arm(b.as_fd(), 7).unwrap();
        let mut ready = Vec::new();
        p.wait(Duration::from_millis(20), &mut ready).unwrap();
        assert!(ready.is_empty(), "nothing written yet");
        a.write_all(b"x").unwrap();
        p.wait(Duration::from_secs(5), &mut ready).unwrap();
        assert_eq!(ready, vec![7]);
        // One-shot: no second completion until armed again.
        ready.clear();
        p.wait(Duration::from_millis(20), &mut ready).unwrap();
        assert!(ready.is_empty());
        p.arm(b.as_fd(), 8).unwrap();
        p.wait(Duration::from_secs(5), &mut ready).unwrap();
        assert_eq!(ready, vec![8]);
    }

    #[test]
    fn many_armed_polls_overflow_the_queue_gracefully() {
        let Ok(mut p) = UringPoller::new(8) else {
            println!("skipped: io_uring unavailable here");
            return;
        };
        let pairs: Vec<(UnixStream, UnixStream)> =
            (0..40).map(|_| UnixStream::pair().unwrap()).collect();
        for (i, (_, b)) in pairs.iter().enumerate() {
            p.arm(b.as_fd(), i as u64).unwrap();
        }
        for (a, _) in &pairs {
            (&*a).write_all(b"y").unwrap();
        }
        let mut ready = Vec::new();
        for _ in 0..100 {
            p.wait(Duration::from_millis(50), &mut ready).unwrap();
            if ready.len() == 40 {
                break;
            }
        }
        ready.sort_unstable();
        assert_eq!(ready, (0..40).collect::<Vec<u64>>());
    }
}
