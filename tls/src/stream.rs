//! [`Stream`]: one blocking connection, plain or TLS, as `Read + Write`.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd};

use rustls::{ClientConnection, ServerConnection, StreamOwned};

/// A blocking connection: a plain socket, or a TLS session over one (either side). Timeouts,
/// `TCP_NODELAY` and readiness are the socket's ([`Stream::tcp`]).
pub enum Stream {
    Plain(TcpStream),
    Server(Box<StreamOwned<ServerConnection, BufSock>>),
    Client(Box<StreamOwned<ClientConnection, BufSock>>),
}

/// Bytes a TLS session's socket reads at once. rustls asks for at most 4 KiB per read; reading
/// ahead into this buffer makes a bulk transfer cost one `read` per 64 KiB instead.
const READ_AHEAD: usize = 64 << 10;

/// The socket under a TLS session: reads ahead (the buffer is allocated at the first read),
/// writes straight through.
pub struct BufSock {
    tcp: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl BufSock {
    pub(crate) fn new(tcp: TcpStream) -> BufSock {
        BufSock {
            tcp,
            buf: Vec::new(),
            start: 0,
            end: 0,
        }
    }

    pub(crate) fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    fn buffered(&self) -> usize {
        self.end - self.start
    }
}

impl Read for BufSock {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.start == self.end {
            if out.len() >= READ_AHEAD {
                return self.tcp.read(out);
            }
            if self.buf.is_empty() {
                self.buf = vec![0; READ_AHEAD];
            }
            let n = self.tcp.read(&mut self.buf)?;
            self.start = 0;
            self.end = n;
        }
        let n = out.len().min(self.buffered());
        out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        Ok(n)
    }
}

impl Write for BufSock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tcp.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.tcp.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl From<TcpStream> for Stream {
    fn from(s: TcpStream) -> Stream {
        Stream::Plain(s)
    }
}

/// Run `$body` with `$s` bound to the TLS stream of either side.
macro_rules! tls {
    ($self:expr, $plain:pat => $p:expr, $s:ident => $body:expr) => {
        match $self {
            Stream::Plain($plain) => $p,
            Stream::Server($s) => $body,
            Stream::Client($s) => $body,
        }
    };
}

impl Stream {
    pub(crate) fn server(s: StreamOwned<ServerConnection, BufSock>) -> Stream {
        Stream::Server(Box::new(s))
    }

    pub(crate) fn client(s: StreamOwned<ClientConnection, BufSock>) -> Stream {
        Stream::Client(Box::new(s))
    }

    /// The socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        tls!(self, s => s, s => &s.sock.tcp)
    }

    pub fn is_tls(&self) -> bool {
        !matches!(self, Stream::Plain(_))
    }

    /// Whether bytes wait inside the TLS session or its read-ahead (read from the socket
    /// already, so the socket does not show them as readable). Always false for a plain stream.
    /// A session in error answers true, so that the next read reports the error.
    pub fn has_buffered(&mut self) -> bool {
        tls!(self, _ => false, s => s.sock.buffered() > 0 || match s.conn.process_new_packets() {
            Ok(state) => state.plaintext_bytes_to_read() > 0,
            Err(_) => true,
        })
    }

    /// Tell the peer the session ends (TLS close_notify; nothing for a plain stream), without
    /// waiting for anything.
    pub fn close_notify(&mut self) {
        tls!(self, _ => {}, s => {
            s.conn.send_close_notify();
            let _ = s.conn.write_tls(&mut s.sock);
        })
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        tls!(self, s => s.read(buf), s => s.read(buf))
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        tls!(self, s => s.read_vectored(bufs), s => {
            // rustls hands out what it holds decrypted; fill the buffers in turn from it.
            let mut total = 0;
            for b in bufs.iter_mut().filter(|b| !b.is_empty()) {
                let n = if total == 0 {
                    s.read(b)?
                } else {
                    match s.conn.reader().read(b) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                        Err(_) => 0, // reported by the next call
                    }
                };
                total += n;
                if n < b.len() {
                    break;
                }
            }
            Ok(total)
        })
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        tls!(self, s => s.write(buf), s => s.write(buf))
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        tls!(self, s => s.write_vectored(bufs), s => {
            let s = &mut **s;
            rustls::Stream::new(&mut s.conn, &mut s.sock).write_vectored(bufs)
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        tls!(self, s => s.flush(), s => s.flush())
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.tcp().as_fd()
    }
}
