//! The client's side of the TCP data path: one connection to one local service, carrying
//! scatter-gather reads and writes whose raw bytes go straight to or from the caller's buffers.

use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use mmc_controlplane::msg::{DataReply, DataRequest, Piece};
use mmc_controlplane::wire::{self, Kind, WireError};
use mmc_controlplane::{Code, Error, Result};
use mmc_meta_service::rpc::{is_timeout, remaining};
use rkyv::util::AlignedVec;

pub(crate) struct DataConn {
    stream: TcpStream,
    endpoint: String,
    buf: AlignedVec,
    next_id: u64,
    busy_poll: std::time::Duration,
}

impl DataConn {
    pub(crate) fn connect(
        endpoint: &str,
        deadline: Instant,
        busy_poll: std::time::Duration,
    ) -> Result<DataConn> {
        let addr: SocketAddr = endpoint.parse().map_err(|_| Error::LocalUnreachable {
            endpoint: endpoint.to_string(),
            reason: "not an ip:port address".into(),
        })?;
        let timeout = remaining(deadline, "connect to a local service")?;
        let stream =
            TcpStream::connect_timeout(&addr, timeout).map_err(|e| Error::LocalUnreachable {
                endpoint: endpoint.to_string(),
                reason: e.to_string(),
            })?;
        let _ = stream.set_nodelay(true);
        Ok(DataConn {
            stream,
            endpoint: endpoint.to_string(),
            buf: AlignedVec::new(),
            next_id: 1,
            busy_poll,
        })
    }

    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Write `data` (whose lengths add up to the pieces') into the pieces, in order; the service
    /// refuses it unless it is `rank` at `incarnation` (the epoch fence).
    pub(crate) fn write(
        &mut self,
        rank: u32,
        incarnation: u64,
        pieces: Vec<Piece>,
        data: &mut [IoSlice<'_>],
        deadline: Instant,
    ) -> Result<()> {
        let total: u64 = pieces.iter().map(|p| p.len).sum();
        debug_assert_eq!(total, data.iter().map(|d| d.len() as u64).sum::<u64>());
        let req = DataRequest::Write {
            rank,
            incarnation,
            pieces,
        };
        let id = self.send(req, total, deadline)?;
        wire::write_all_vectored(&mut self.stream, data).map_err(|e| self.io_error(e.into()))?;
        let raw = self.read_reply(id, deadline)?;
        if raw != 0 {
            return Err(Error::Protocol(format!(
                "write reply from {} carries {raw} raw bytes",
                self.endpoint
            )));
        }
        Ok(())
    }

    /// Read the pieces, in order, into `bufs` (whose lengths add up to the pieces'), from `rank`
    /// at `incarnation`. After the bytes the service says whether its fence held during the copy;
    /// if not, the bytes are not the object's and the read fails.
    pub(crate) fn read(
        &mut self,
        rank: u32,
        incarnation: u64,
        pieces: Vec<Piece>,
        bufs: &mut [IoSliceMut<'_>],
        deadline: Instant,
    ) -> Result<()> {
        let total: u64 = pieces.iter().map(|p| p.len).sum();
        debug_assert_eq!(total, bufs.iter().map(|d| d.len() as u64).sum::<u64>());
        let req = DataRequest::Read {
            rank,
            incarnation,
            pieces,
        };
        let id = self.send(req, 0, deadline)?;
        let raw = self.read_reply(id, deadline)?;
        if raw != total {
            return Err(Error::Protocol(format!(
                "{} sent {raw} bytes, {total} were asked",
                self.endpoint
            )));
        }
        wire::read_exact_vectored(&mut self.stream, bufs).map_err(|e| self.io_error(e.into()))?;
        match self.read_reply(id, deadline)? {
            0 => Ok(()),
            raw => Err(Error::Protocol(format!(
                "{}: the fence check after a read carries {raw} raw bytes",
                self.endpoint
            ))),
        }
    }

    fn send(&mut self, req: DataRequest, raw_len: u64, deadline: Instant) -> Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        wire::encode_payload(&req, &mut self.buf)
            .map_err(|e| Error::InvalidParam(e.to_string()))?;
        let timeout = remaining(deadline, "data transfer")?;
        self.stream
            .set_write_timeout(Some(timeout))
            .and_then(|_| self.stream.set_read_timeout(Some(timeout)))
            .map_err(|e| Error::io("set socket timeouts", e))?;
        wire::write_frame(&mut self.stream, Kind::DataRequest, id, &self.buf, raw_len)
            .map_err(|e| self.io_error(e))?;
        Ok(id)
    }

    /// Read the reply frame; returns how many raw bytes follow it.
    fn read_reply(&mut self, id: u64, deadline: Instant) -> Result<u64> {
        let timeout = remaining(deadline, "data transfer")?;
        self.stream
            .set_read_timeout(Some(timeout))
            .map_err(|e| Error::io("set read timeout", e))?;
        wire::spin_until_readable(&self.stream, self.busy_poll.min(timeout));
        let header =
            wire::read_frame(&mut self.stream, &mut self.buf).map_err(|e| self.io_error(e))?;
        if header.kind != Kind::DataReply || header.req_id != id {
            return Err(Error::Protocol(format!(
                "{}: expected data reply {id}, got {:?} {}",
                self.endpoint, header.kind, header.req_id
            )));
        }
        let reply: DataReply =
            wire::decode_payload(&self.buf).map_err(|e| Error::Protocol(e.to_string()))?;
        if reply.code == Code::NotConnectLocal.as_i32() {
            tracing::warn!(endpoint = %self.endpoint, reason = %reply.message, "transfer refused by the epoch fence");
            return Err(Error::LocalUnreachable {
                endpoint: self.endpoint.clone(),
                reason: reply.message,
            });
        }
        if reply.code != 0 {
            return Err(Error::Remote {
                code: Code::from_i32(reply.code),
                context: format!("local service {}: {}", self.endpoint, reply.message),
            });
        }
        Ok(header.raw_len)
    }

    fn io_error(&self, e: WireError) -> Error {
        match e {
            WireError::Io(ref io) if is_timeout(io) => Error::Timeout {
                ms: 0,
                what: format!("transfer with local service {}", self.endpoint),
            },
            e => Error::LocalUnreachable {
                endpoint: self.endpoint.clone(),
                reason: e.to_string(),
            },
        }
    }
}
