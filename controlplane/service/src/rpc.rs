//! The blocking client side of the meta protocol: one connection, one request in flight, every call
//! bounded by a deadline. Used by clients, local services and the `mmc` tool.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mmc_tls::{Stream, TlsContext};

use rkyv::util::AlignedVec;

use mmc_controlplane::error::{Code, Error, Result};
use mmc_controlplane::msg::{Reply, Request};
use mmc_controlplane::wire::{self, Kind, WireError};

/// A connection to the meta service.
pub struct MetaConn {
    stream: Stream,
    addr: SocketAddr,
    buf: AlignedVec,
    next_id: u64,
    busy_poll: Duration,
    /// Set only when off by more than `wire::SOCKET_TIMEOUT_SLACK`: no `setsockopt` per call.
    timeouts: wire::SocketTimeouts,
}

impl MetaConn {
    /// A plaintext connection (TLS off).
    pub fn connect(addr: SocketAddr, deadline: Instant) -> Result<MetaConn> {
        MetaConn::connect_with(addr, None, deadline)
    }

    /// A connection over TLS when `tls` is set (the handshake is bounded by the deadline and by
    /// [`mmc_tls::HANDSHAKE_TIMEOUT`]; a failed one is -3017 with its reason), else plaintext.
    pub fn connect_with(
        addr: SocketAddr,
        tls: Option<&Arc<TlsContext>>,
        deadline: Instant,
    ) -> Result<MetaConn> {
        let timeout = remaining(deadline, "connect to the meta service")?;
        let stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| {
            if is_timeout(&e) {
                Error::Timeout {
                    ms: timeout.as_millis() as u64,
                    what: format!("connect to the meta service at {addr}"),
                }
            } else {
                Error::MetaUnreachable {
                    url: addr.to_string(),
                    reason: e.to_string(),
                }
            }
        })?;
        stream
            .set_nodelay(true)
            .map_err(|e| Error::io("set TCP_NODELAY", e))?;
        let stream = match tls {
            None => Stream::Plain(stream),
            Some(tls) => {
                let timeout = remaining(deadline, "TLS handshake with the meta service")?;
                tls.connect(stream, addr, timeout)
                    .map_err(|e| Error::MetaUnreachable {
                        url: addr.to_string(),
                        reason: e.to_string(),
                    })?
            }
        };
        Ok(MetaConn {
            stream,
            addr,
            buf: AlignedVec::new(),
            next_id: 1,
            busy_poll: Duration::ZERO,
            timeouts: wire::SocketTimeouts::default(),
        })
    }

    /// Busy-poll each reply this long before blocking (0 = block at once).
    pub fn set_busy_poll(&mut self, spin: Duration) {
        self.busy_poll = spin;
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Send `req` and wait for its reply until `deadline`. A `Reply::Error` becomes `Error::Remote`.
    /// After any error the connection must be dropped: its stream position is unknown.
    pub fn call(&mut self, req: &Request, deadline: Instant) -> Result<Reply> {
        let id = self.send(Kind::MetaRequest, req, deadline)?;
        let timeout = remaining(deadline, "meta reply")?;
        self.timeouts
            .fit(self.stream.tcp(), timeout, false)
            .map_err(|e| Error::io("set read timeout", e))?;
        if !self.busy_poll.is_zero() && !self.stream.has_buffered() {
            wire::spin_until_readable(&self.stream, self.busy_poll.min(timeout));
        }
        let header = wire::read_frame(&mut self.stream, &mut self.buf)
            .map_err(|e| self.wire_error(e, timeout))?;
        if header.kind != Kind::MetaReply || header.req_id != id || header.raw_len != 0 {
            return Err(Error::Protocol(format!(
                "expected reply {id} from the meta service, got {:?} {}",
                header.kind, header.req_id
            )));
        }
        let reply: Reply =
            wire::decode_payload(&self.buf).map_err(|e| Error::Protocol(e.to_string()))?;
        if let Reply::Error { code, message } = reply {
            return Err(Error::Remote {
                code: Code::from_i32(code),
                context: message,
            });
        }
        Ok(reply)
    }

    /// Send a request that gets no reply (lease release).
    pub fn send_oneway(&mut self, req: &Request, deadline: Instant) -> Result<()> {
        self.send(Kind::MetaOneway, req, deadline).map(|_| ())
    }

    fn send(&mut self, kind: Kind, req: &Request, deadline: Instant) -> Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        wire::encode_payload(req, &mut self.buf).map_err(|e| Error::InvalidParam(e.to_string()))?;
        let timeout = remaining(deadline, "meta request")?;
        self.timeouts
            .fit(self.stream.tcp(), timeout, true)
            .map_err(|e| Error::io("set write timeout", e))?;
        let r = wire::write_frame(&mut self.stream, kind, id, &self.buf, 0)
            .and_then(|_| Ok(self.stream.flush()?));
        r.map_err(|e| self.wire_error(e, timeout))?;
        Ok(id)
    }

    fn wire_error(&self, e: WireError, timeout: Duration) -> Error {
        if e.is_timeout() {
            Error::Timeout {
                ms: timeout.as_millis() as u64,
                what: format!("meta service at {}", self.addr),
            }
        } else {
            Error::MetaUnreachable {
                url: self.addr.to_string(),
                reason: e.to_string(),
            }
        }
    }
}

/// Time left until `deadline`, or a timeout error naming `what`.
pub fn remaining(deadline: Instant, what: &str) -> Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Error::Timeout {
            ms: 0,
            what: what.to_string(),
        });
    }
    Ok(left)
}

pub fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}
