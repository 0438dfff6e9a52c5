//! Redis and memcached, started by the benchmark on free loopback ports and driven with minimal
//! hand-written clients (RESP, memcached text + meta protocol): the same workloads and value
//! sizes as MemCache's, batches pipelined on one connection, single-key calls one at a time.

use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::cluster::{free_port, wait_port, which, Proc};
use crate::kv::{diff_blocks, KvCache, BLOCK_BYTES, LAYERS};
use crate::pattern::{fill, first_diff, seed};
use crate::progress::Progress;
use crate::report::{Row, MEMCACHED, REDIS, TCP};
use crate::workloads::{Checks, Plan};

/// One connection to a key-value server.
trait Peer {
    fn name(&self) -> &'static str;
    /// Store each key's value (its parts concatenated), pipelined.
    fn set_batch(&mut self, keys: &[String], values: &[Vec<&[u8]>]) -> io::Result<()>;
    /// Read each key's value into its parts, pipelined; returns each value's length.
    fn get_batch(&mut self, keys: &[String], bufs: &mut [Vec<&mut [u8]>]) -> io::Result<Vec<u64>>;
    /// How many of `keys` exist, in one pipelined exchange.
    fn exist_batch(&mut self, keys: &[String]) -> io::Result<usize>;
    /// Drop everything stored.
    fn flush_all(&mut self) -> io::Result<()>;
}

struct Conn {
    r: BufReader<TcpStream>,
    w: BufWriter<TcpStream>,
}

impl Conn {
    fn connect(port: u16) -> io::Result<Conn> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(Conn {
            r: BufReader::with_capacity(256 << 10, s.try_clone()?),
            w: BufWriter::with_capacity(256 << 10, s),
        })
    }

    fn line(&mut self) -> io::Result<String> {
        let mut l = String::new();
        if self.r.read_line(&mut l)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed",
            ));
        }
        Ok(l.trim_end().to_string())
    }

    fn parts(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        for p in parts {
            self.w.write_all(p)?;
        }
        Ok(())
    }

    /// Read a `len`-byte value into `parts` in order, then its "\r\n".
    fn value_into(&mut self, len: usize, parts: &mut [&mut [u8]]) -> io::Result<()> {
        let room: usize = parts.iter().map(|p| p.len()).sum();
        if room < len {
            return Err(bad(format!("value of {len} bytes, buffers hold {room}")));
        }
        let mut left = len;
        for p in parts.iter_mut() {
            let n = p.len().min(left);
            self.r.read_exact(&mut p[..n])?;
            left -= n;
            if left == 0 {
                break;
            }
        }
        let mut crlf = [0u8; 2];
        self.r.read_exact(&mut crlf)
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn plen(parts: &[&[u8]]) -> usize {
    parts.iter().map(|p| p.len()).sum()
}

// ---- Redis ----------------------------------------------------------------------------------

struct Redis(Conn);

impl Redis {
    fn cmd_head(&mut self, args: usize) -> io::Result<()> {
        write!(self.0.w, "*{args}\r\n")
    }

    fn bulk(&mut self, b: &[u8]) -> io::Result<()> {
        write!(self.0.w, "${}\r\n", b.len())?;
        self.0.w.write_all(b)?;
        self.0.w.write_all(b"\r\n")
    }
}

impl Peer for Redis {
    fn name(&self) -> &'static str {
        REDIS
    }

    fn set_batch(&mut self, keys: &[String], values: &[Vec<&[u8]>]) -> io::Result<()> {
        for (k, v) in keys.iter().zip(values) {
            self.cmd_head(3)?;
            self.bulk(b"SET")?;
            self.bulk(k.as_bytes())?;
            write!(self.0.w, "${}\r\n", plen(v))?;
            self.0.parts(v)?;
            self.0.w.write_all(b"\r\n")?;
        }
        self.0.w.flush()?;
        for k in keys {
            let l = self.0.line()?;
            if l != "+OK" {
                return Err(bad(format!("SET {k}: {l}")));
            }
        }
        Ok(())
    }

    fn get_batch(&mut self, keys: &[String], bufs: &mut [Vec<&mut [u8]>]) -> io::Result<Vec<u64>> {
        for k in keys {
            self.cmd_head(2)?;
            self.bulk(b"GET")?;
            self.bulk(k.as_bytes())?;
        }
        self.0.w.flush()?;
        let mut sizes = Vec::with_capacity(keys.len());
        for (k, b) in keys.iter().zip(bufs.iter_mut()) {
            let l = self.0.line()?;
            let len: i64 = l
                .strip_prefix('$')
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| bad(format!("GET {k}: {l}")))?;
            if len < 0 {
                return Err(bad(format!("GET {k}: missing")));
            }
            self.0.value_into(len as usize, b)?;
            sizes.push(len as u64);
        }
        Ok(sizes)
    }

    fn exist_batch(&mut self, keys: &[String]) -> io::Result<usize> {
        self.cmd_head(keys.len() + 1)?;
        self.bulk(b"EXISTS")?;
        for k in keys {
            self.bulk(k.as_bytes())?;
        }
        self.0.w.flush()?;
        let l = self.0.line()?;
        l.strip_prefix(':')
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| bad(format!("EXISTS: {l}")))
    }

    fn flush_all(&mut self) -> io::Result<()> {
        self.cmd_head(1)?;
        self.bulk(b"FLUSHALL")?;
        self.0.w.flush()?;
        let l = self.0.line()?;
        if l != "+OK" {
            return Err(bad(format!("FLUSHALL: {l}")));
        }
        Ok(())
    }
}

// ---- memcached ------------------------------------------------------------------------------

struct Memcached(Conn);

impl Peer for Memcached {
    fn name(&self) -> &'static str {
        MEMCACHED
    }

    fn set_batch(&mut self, keys: &[String], values: &[Vec<&[u8]>]) -> io::Result<()> {
        for (k, v) in keys.iter().zip(values) {
            write!(self.0.w, "set {k} 0 0 {}\r\n", plen(v))?;
            self.0.parts(v)?;
            self.0.w.write_all(b"\r\n")?;
        }
        self.0.w.flush()?;
        for k in keys {
            let l = self.0.line()?;
            if l != "STORED" {
                return Err(bad(format!("set {k}: {l}")));
            }
        }
        Ok(())
    }

    fn get_batch(&mut self, keys: &[String], bufs: &mut [Vec<&mut [u8]>]) -> io::Result<Vec<u64>> {
        write!(self.0.w, "get {}\r\n", keys.join(" "))?;
        self.0.w.flush()?;
        let mut sizes = Vec::with_capacity(keys.len());
        for (k, b) in keys.iter().zip(bufs.iter_mut()) {
            let l = self.0.line()?;
            let f: Vec<&str> = l.split(' ').collect();
            if f.len() < 4 || f[0] != "VALUE" || f[1] != k {
                return Err(bad(format!("get {k}: {l}")));
            }
            let len: usize = f[3].parse().map_err(|_| bad(format!("get {k}: {l}")))?;
            self.0.value_into(len, b)?;
            sizes.push(len as u64);
        }
        let l = self.0.line()?;
        if l != "END" {
            return Err(bad(format!("get: expected END, got {l}")));
        }
        Ok(sizes)
    }

    fn exist_batch(&mut self, keys: &[String]) -> io::Result<usize> {
        // Meta get without flags: "HD" when present, "EN" when not; no value sent.
        for k in keys {
            write!(self.0.w, "mg {k}\r\n")?;
        }
        self.0.w.flush()?;
        let mut hits = 0;
        for k in keys {
            match self.0.line()?.as_str() {
                "HD" => hits += 1,
                "EN" => {}
                l => return Err(bad(format!("mg {k}: {l}"))),
            }
        }
        Ok(hits)
    }

    fn flush_all(&mut self) -> io::Result<()> {
        self.0.w.write_all(b"flush_all\r\n")?;
        self.0.w.flush()?;
        let l = self.0.line()?;
        if l != "OK" {
            return Err(bad(format!("flush_all: {l}")));
        }
        Ok(())
    }
}

// ---- Servers --------------------------------------------------------------------------------

/// A started peer server and the port it listens on.
pub struct Server {
    /// Kept to stop it when dropped.
    _proc: Proc,
    pub port: u16,
    pub system: &'static str,
}

/// Start Redis or memcached from the apt package; `Err` says why it cannot run here.
pub fn start(system: &'static str, dir: &Path) -> Result<Server, String> {
    let port = free_port()?;
    let (bin, args): (&str, Vec<String>) = match system {
        REDIS => (
            "redis-server",
            [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--daemonize",
                "no",
                "--maxmemory",
                "0",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ),
        _ => (
            "memcached",
            [
                "-u",
                "nobody",
                "-l",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "0",
                "-I",
                "16m",
                "-m",
                "2048",
                "-t",
                "2",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ),
    };
    let path = which(bin).ok_or_else(|| {
        format!("{bin} is not installed (apt-get install -y redis-server memcached)")
    })?;
    let mut proc = Proc::spawn(system, &path, &args, dir.join(format!("{system}.log")))?;
    wait_port(&mut proc, port)?;
    Ok(Server {
        _proc: proc,
        port,
        system,
    })
}

fn elapsed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed())
}

/// Run every workload a peer can run; verification failures go to `checks`.
pub fn run(
    server: &Server,
    plan: &Plan,
    names: &[&str],
    checks: &mut Checks,
    progress: &Progress,
) -> Result<Vec<Row>, String> {
    let conn = Conn::connect(server.port).map_err(|e| format!("connect: {e}"))?;
    let mut peer: Box<dyn Peer> = match server.system {
        REDIS => Box::new(Redis(conn)),
        _ => Box::new(Memcached(conn)),
    };
    let sys = peer.name();
    let mut rows = Vec::new();
    let io = |e: io::Error| format!("{sys}: {e}");
    let row = |w: &str,
               op: &str,
               shape: &str,
               objects: usize,
               bytes: usize,
               calls: &[Duration],
               bulk: bool| {
        Row::from_calls(
            w,
            op,
            sys,
            TCP,
            shape,
            objects as u64,
            bytes as u64,
            calls,
            bulk,
        )
    };
    if names.contains(&"4k") {
        progress.say(format!("{sys}: 4k single-key SET / GET / exist"));
        let (n, size) = (plan.small_count, 4 << 10);
        let keys: Vec<String> = (0..n).map(|i| format!("4k/{i}")).collect();
        let mut src = vec![0u8; n * size];
        for (i, c) in src.chunks_exact_mut(size).enumerate() {
            fill(c, seed(0x4B, i as u64));
        }
        let mut puts = Vec::with_capacity(n);
        for (k, v) in keys.iter().zip(src.chunks_exact(size)) {
            let (r, t) = elapsed(|| peer.set_batch(std::slice::from_ref(k), &[vec![v]]));
            r.map_err(io)?;
            puts.push(t);
        }
        let mut gets = Vec::with_capacity(n);
        let mut buf = vec![0u8; size];
        let mut bad = 0;
        for (k, want) in keys.iter().zip(src.chunks_exact(size)) {
            buf.fill(0xA5);
            let (r, t) =
                elapsed(|| peer.get_batch(std::slice::from_ref(k), &mut [vec![&mut buf[..]]]));
            let sizes = r.map_err(io)?;
            gets.push(t);
            if sizes[0] != size as u64 || first_diff(want, &buf).is_some() {
                bad += 1;
            }
        }
        let mut exists = Vec::with_capacity(n);
        for k in &keys {
            let (r, t) = elapsed(|| peer.exist_batch(std::slice::from_ref(k)));
            if r.map_err(io)? != 1 {
                bad += 1;
            }
            exists.push(t);
        }
        if bad > 0 {
            checks.fail(format!("{sys} 4k: {bad} values or exist answers wrong"));
        }
        peer.flush_all().map_err(io)?;
        rows.push(row("4k", "put", "1 x 4 KiB", n, n * size, &puts, false));
        rows.push(row("4k", "get", "1 x 4 KiB", n, n * size, &gets, false));
        rows.push(row("4k", "exist", "1 key", n, 0, &exists, false));
        progress.step();
    }
    for (w, n, size) in [
        ("batch-1m", 64usize, 1usize << 20),
        ("batch-8m", 16, 8 << 20),
    ] {
        if !names.contains(&w) {
            continue;
        }
        progress.say(format!(
            "{sys}: {w}, pipelined SET / GET of {n} x {} MiB",
            size >> 20
        ));
        let mut src: Vec<Vec<u8>> = (0..n).map(|_| vec![0u8; size]).collect();
        let mut dst: Vec<Vec<u8>> = (0..n).map(|_| vec![0xA5u8; size]).collect();
        let (mut puts, mut gets) = (Vec::new(), Vec::new());
        for round in 0..plan.batch_rounds {
            for (i, s) in src.iter_mut().enumerate() {
                fill(s, seed(0xB16 + round as u64, i as u64));
            }
            let keys: Vec<String> = (0..n).map(|i| format!("{w}/r{round}/{i}")).collect();
            let values: Vec<Vec<&[u8]>> = src.iter().map(|s| vec![&s[..]]).collect();
            let (r, t) = elapsed(|| peer.set_batch(&keys, &values));
            r.map_err(io)?;
            puts.push(t);
            let mut bufs: Vec<Vec<&mut [u8]>> = dst.iter_mut().map(|d| vec![&mut d[..]]).collect();
            let (r, t) = elapsed(|| peer.get_batch(&keys, &mut bufs));
            let sizes = r.map_err(io)?;
            gets.push(t);
            for ((k, got), (want, have)) in keys.iter().zip(&sizes).zip(src.iter().zip(&dst)) {
                let diff = first_diff(want, have);
                if *got != size as u64 || diff.is_some() {
                    checks.fail(format!(
                        "{sys} {w}: {k}: {got} bytes, first difference at {diff:?}"
                    ));
                }
            }
            peer.flush_all().map_err(io)?;
        }
        let shape = format!("{n} x {} MiB", size >> 20);
        let (objs, bytes) = (n * plan.batch_rounds, n * size * plan.batch_rounds);
        rows.push(row(w, "put", &shape, objs, bytes, &puts, true));
        rows.push(row(w, "get", &shape, objs, bytes, &gets, true));
        progress.step();
    }
    if names.contains(&"deepseek-r1") {
        let (n, batch) = (plan.deepseek_blocks, 8usize);
        progress.say(format!(
            "{sys}: deepseek-r1, {n} blocks, SET / GET from and into 122 pieces"
        ));
        let keys: Vec<String> = (0..n).map(|b| format!("ds/blk{b}")).collect();
        let mut src = KvCache::new(n, 0, 1);
        for b in 0..n {
            src.fill_block(b, seed(0xD5, b as u64));
        }
        let mut dst = KvCache::new(n, 0xA5, 2);
        let all: Vec<usize> = (0..n).collect();
        let (mut puts, mut gets) = (Vec::new(), Vec::new());
        for b in all.chunks(batch) {
            let bkeys: Vec<String> = b.iter().map(|&i| keys[i].clone()).collect();
            let values: Vec<Vec<&[u8]>> = b.iter().map(|&i| src.parts(i)).collect();
            let (r, t) = elapsed(|| peer.set_batch(&bkeys, &values));
            r.map_err(io)?;
            puts.push(t);
        }
        for pass in 0..plan.deepseek_passes {
            dst.poison(0xA5 ^ pass as u8);
            for b in all.chunks(batch) {
                let bkeys: Vec<String> = b.iter().map(|&i| keys[i].clone()).collect();
                let mut parts = dst.parts_mut(b);
                let (r, t) = elapsed(|| peer.get_batch(&bkeys, &mut parts));
                let sizes = r.map_err(io)?;
                gets.push(t);
                if sizes.iter().any(|&s| s != BLOCK_BYTES as u64) {
                    checks.fail(format!("{sys} deepseek-r1: wrong value sizes {sizes:?}"));
                }
            }
            let (bad, msgs) = diff_blocks(&src, &dst, &keys, 3);
            if bad > 0 {
                checks.fail(format!("{sys} deepseek-r1: {bad} pieces differ: {msgs:?}"));
            }
        }
        peer.flush_all().map_err(io)?;
        let shape = format!("{batch} keys x {} pieces", 2 * LAYERS);
        let p = plan.deepseek_passes;
        rows.push(row(
            "deepseek-r1",
            "put",
            &shape,
            n,
            n * BLOCK_BYTES,
            &puts,
            true,
        ));
        rows.push(row(
            "deepseek-r1",
            "get",
            &shape,
            n * p,
            n * BLOCK_BYTES * p,
            &gets,
            true,
        ));
        progress.step();
    }
    if names.contains(&"exist") {
        let n = 1000;
        progress.say(format!("{sys}: exist, {n} keys per pipelined call"));
        let keys: Vec<String> = (0..n).map(|i| format!("ex/{i}")).collect();
        let mut data = vec![0u8; n * 64];
        fill(&mut data, 0xE7);
        let values: Vec<Vec<&[u8]>> = data.chunks_exact(64).map(|c| vec![c]).collect();
        peer.set_batch(&keys, &values).map_err(io)?;
        let mut calls = Vec::new();
        for _ in 0..plan.exist_calls {
            let (r, t) = elapsed(|| peer.exist_batch(&keys));
            let hits = r.map_err(io)?;
            calls.push(t);
            if hits != n {
                checks.fail(format!("{sys} exist: {hits} of {n} keys found"));
            }
        }
        peer.flush_all().map_err(io)?;
        rows.push(row(
            "exist",
            "batch_exist",
            &format!("{n} keys"),
            n * plan.exist_calls,
            0,
            &calls,
            false,
        ));
        progress.step();
    }
    Ok(rows)
}
