//! Observability shared by the meta service and the local services: a lock-free latency
//! histogram, helpers that encode scrape-time values with `prometheus-client`, and the small HTTP
//! endpoint that serves `GET /metrics` (OpenMetrics text) and `GET /health`: plain HTTP, or with
//! `[tls]` on HTTPS with the process's mutual TLS (a scraper presents a certificate of the CA).
//!
//! Hot paths only touch atomics (counters, histogram buckets); everything else (capacities,
//! object counts, members) is read when a scrape comes, by a [`Collector`].

use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use mmc_tls::{Stream, TlsContext};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tracing::{info, warn};

/// Upper bounds of the latency buckets: 10 us, 20 us, ... doubling 20 times (about 5.2 s), and
/// +Inf.
const BUCKETS: usize = 20;
const BUCKET_BASE_US: u64 = 10;

/// A latency histogram of atomics: observing is a few relaxed adds, no lock, no allocation.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Observations per bucket (not cumulative); the last is +Inf.
    counts: [AtomicU64; BUCKETS + 1],
    sum_ns: AtomicU64,
}

impl LatencyHistogram {
    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let us = ns / 1_000;
        let mut i = 0;
        let mut bound = BUCKET_BASE_US;
        while i < BUCKETS && us > bound {
            bound *= 2;
            i += 1;
        }
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// (sum in seconds, count, per-bucket counts by upper bound) as the encoder takes them (it
    /// accumulates them into the exposition's cumulative buckets).
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut buckets = Vec::with_capacity(BUCKETS + 1);
        let mut total = 0u64;
        let mut bound = BUCKET_BASE_US;
        for (i, c) in self.counts.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            total += n;
            let le = if i == BUCKETS {
                f64::INFINITY
            } else {
                bound as f64 / 1e6
            };
            buckets.push((le, n));
            bound *= 2;
        }
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        (sum, total, buckets)
    }
}

/// Labels of scrape-time samples: `(name, value)` pairs.
pub type Labels = Vec<(&'static str, String)>;

/// Writes one metric family per call into a scrape (see [`FnCollector`]).
pub struct Scrape<'a, 'e> {
    enc: &'a mut DescriptorEncoder<'e>,
}

impl Scrape<'_, '_> {
    /// An unlabelled gauge.
    pub fn gauge(&mut self, name: &str, help: &str, v: i64) -> fmt::Result {
        let m = self
            .enc
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        ConstGauge::new(v).encode(m)
    }

    /// A gauge with one sample per label set.
    pub fn gauges(&mut self, name: &str, help: &str, samples: &[(Labels, i64)]) -> fmt::Result {
        let mut m = self
            .enc
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, v) in samples {
            ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
        }
        Ok(())
    }

    /// An unlabelled counter (`NAME_total` in the exposition).
    pub fn counter(&mut self, name: &str, help: &str, v: u64) -> fmt::Result {
        let m = self
            .enc
            .encode_descriptor(name, help, None, MetricType::Counter)?;
        ConstCounter::new(v).encode(m)
    }

    /// A counter with one sample per label set.
    pub fn counters(&mut self, name: &str, help: &str, samples: &[(Labels, u64)]) -> fmt::Result {
        let mut m = self
            .enc
            .encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, v) in samples {
            ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
        }
        Ok(())
    }

    /// Histograms (seconds), one per label set; empty ones are left out.
    pub fn histograms(
        &mut self,
        name: &str,
        help: &str,
        samples: &[(Labels, &LatencyHistogram)],
    ) -> fmt::Result {
        let mut m = self
            .enc
            .encode_descriptor(name, help, None, MetricType::Histogram)?;
        for (labels, h) in samples {
            let (sum, count, buckets) = h.snapshot();
            if count == 0 {
                continue;
            }
            m.encode_family(labels)?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    sum, count, &buckets, None,
                )?;
        }
        Ok(())
    }

    /// Any metric `prometheus-client` can encode (a `Family`, ...).
    pub fn metric(
        &mut self,
        name: &str,
        help: &str,
        metric: &(impl EncodeMetric + ?Sized),
    ) -> fmt::Result {
        let m = self
            .enc
            .encode_descriptor(name, help, None, metric.metric_type())?;
        metric.encode(m)
    }
}

/// Something that writes its metrics when a scrape comes.
pub trait Source: Send + Sync + 'static {
    fn scrape(&self, out: &mut Scrape<'_, '_>) -> fmt::Result;
}

/// A [`Collector`] over a [`Source`].
pub struct FnCollector<S: Source>(pub Arc<S>);

impl<S: Source> fmt::Debug for FnCollector<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnCollector")
    }
}

impl<S: Source> Collector for FnCollector<S> {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        self.0.scrape(&mut Scrape { enc: &mut encoder })
    }
}

/// A registry holding one [`Source`].
pub fn registry_of<S: Source>(source: Arc<S>) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(FnCollector(source)));
    r
}

/// The answer to `GET /health`: healthy or not, and a one-line reason.
pub type Health = Box<dyn Fn() -> (bool, String) + Send + Sync>;

/// A running HTTP endpoint with `/metrics` and `/health`. Dropping it stops it.
pub struct HttpEndpoint {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpEndpoint {
    /// Bind `addr` (port 0 = any) and serve on a thread named `name`; HTTPS with mutual TLS when
    /// `tls` is set (a peer without a certificate of the CA is refused and logged).
    pub fn start(
        addr: SocketAddr,
        name: &str,
        registry: Registry,
        health: Health,
        tls: Option<Arc<TlsContext>>,
    ) -> std::io::Result<HttpEndpoint> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || serve(listener, &registry, &health, &s, tls.as_deref()))?;
        info!(%addr, tls = scheme == "https",
            "metrics and health on {scheme}://{addr}/metrics and /health");
        Ok(HttpEndpoint {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for HttpEndpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How long one request may take to arrive, and its answer to leave.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

fn serve(
    listener: TcpListener,
    registry: &Registry,
    health: &Health,
    stop: &AtomicBool,
    tls: Option<&TlsContext>,
) {
    for stream in listener.incoming() {
        if stop.load(Ordering::Acquire) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let peer = stream.peer_addr().ok();
        // With TLS: the mutual handshake first (bounded; a refusal is logged with the peer).
        let idle = Some(REQUEST_TIMEOUT);
        let Some(mut stream) = mmc_tls::secure_https(stream, tls, peer, idle, "metrics") else {
            continue;
        };
        if let Err(e) = answer(&mut stream, registry, health) {
            warn!(?peer, error = %e, "metrics request failed");
        }
        stream.close_notify();
    }
}

/// One request per connection: read the request line and headers (2 s at most), answer, close.
fn answer(stream: &mut Stream, registry: &Registry, health: &Health) -> std::io::Result<()> {
    stream.tcp().set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.tcp().set_write_timeout(Some(REQUEST_TIMEOUT))?;
    // The request line and headers up to the blank line, bounded (a scraper sends a handful).
    let mut line = String::new();
    {
        let mut reader = BufReader::new(Read::by_ref(stream).take(16 << 10));
        reader.read_line(&mut line)?;
        let mut header = String::new();
        for _ in 0..64 {
            header.clear();
            if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
                break;
            }
        }
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("/");
    let path = path.split('?').next().unwrap_or(path);
    let openmetrics = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    let (status, kind, body) = match (method, path) {
        ("GET", "/metrics") => {
            let mut body = String::new();
            match prometheus_client::encoding::text::encode(&mut body, registry) {
                Ok(()) => ("200 OK", openmetrics, body),
                Err(_) => ("500 Internal Server Error", "text/plain", "encode\n".into()),
            }
        }
        ("GET", "/health") => match health() {
            (true, why) => ("200 OK", "text/plain", format!("ok {why}\n")),
            (false, why) => ("503 Service Unavailable", "text/plain", format!("{why}\n")),
        },
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".into()),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_count_each_observation_once() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(5)); // <= 10 us
        h.observe(Duration::from_micros(15)); // <= 20 us
        h.observe(Duration::from_secs(100)); // +Inf
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 3);
        assert_eq!(buckets.len(), BUCKETS + 1);
        assert_eq!(buckets[0], (10e-6, 1));
        assert_eq!(buckets[1], (20e-6, 1));
        assert_eq!(buckets[BUCKETS - 1].1, 0);
        assert_eq!(buckets[BUCKETS], (f64::INFINITY, 1));
        assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), count);
        assert!((sum - 100.00002).abs() < 1e-6, "{sum}");
    }
}
