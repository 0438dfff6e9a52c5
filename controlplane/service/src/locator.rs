//! Where clients and local services find the meta service: a fixed address (`tcp://host:port`),
//! or the leader an etcd cluster names (`etcd://host:2379,...`: see [`crate::ha`]). The leader's
//! address is cached; a connection that fails forgets it, and the next one asks etcd again, so a
//! caller follows a new leader on its next connect.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Instant;

use tracing::{debug, info};

use mmc_config::{parse_meta_url, parse_tcp_url, MetaUrl};
use mmc_controlplane::error::{Error, Result};

use crate::etcd::Etcd;
use crate::rpc::MetaConn;

/// Finds the meta service (see the module documentation).
pub struct MetaLocator {
    url: String,
    kind: Kind,
    /// `[tls]`: connections to the meta service use mutual TLS.
    tls: Option<std::sync::Arc<mmc_tls::TlsContext>>,
}

enum Kind {
    Fixed(SocketAddr),
    Etcd {
        etcd: Etcd,
        /// The leader etcd named last, until a connection to it fails.
        leader: Mutex<Option<SocketAddr>>,
        /// The last leader logged (a change is logged once, not every re-resolution).
        logged: Mutex<Option<SocketAddr>>,
    },
}

impl MetaLocator {
    /// From a `meta_url`: `tcp://host:port` or `etcd://host:port,...[/prefix]`.
    pub fn new(url: &str) -> Result<MetaLocator> {
        let kind = match parse_meta_url(url).map_err(|e| Error::Config(e.to_string()))? {
            MetaUrl::Tcp(addr) => Kind::Fixed(addr),
            MetaUrl::Etcd(u) => Kind::Etcd {
                etcd: Etcd::new(u),
                leader: Mutex::new(None),
                logged: Mutex::new(None),
            },
        };
        Ok(MetaLocator {
            url: url.trim().to_string(),
            kind,
            tls: None,
        })
    }

    /// Connect over mutual TLS with `tls` (None: plaintext); etcd, when the URL names it, is
    /// then asked over HTTPS with the same CA, certificate and key.
    pub fn with_tls(mut self, tls: Option<std::sync::Arc<mmc_tls::TlsContext>>) -> MetaLocator {
        if let Kind::Etcd { etcd, .. } = &mut self.kind {
            *etcd = Etcd::with_tls(etcd.url().clone(), tls.as_deref());
        }
        self.tls = tls;
        self
    }

    /// The URL it was made from.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether `url` names the same meta service (the same address, or the same etcd URL).
    pub fn same_as(&self, url: &str) -> bool {
        match &self.kind {
            Kind::Fixed(addr) => parse_tcp_url(url).is_ok_and(|a| a == *addr),
            Kind::Etcd { .. } => url.trim().eq_ignore_ascii_case(&self.url),
        }
    }

    /// The meta service's address: the fixed one, or the leader's (cached, else asked of etcd).
    pub fn resolve(&self, deadline: Instant) -> Result<SocketAddr> {
        match &self.kind {
            Kind::Fixed(addr) => Ok(*addr),
            Kind::Etcd {
                etcd,
                leader,
                logged,
            } => {
                if let Some(a) = *leader.lock().expect(POISONED) {
                    return Ok(a);
                }
                let addr = leader_addr(etcd, &self.url, deadline)?;
                *leader.lock().expect(POISONED) = Some(addr);
                let mut last = logged.lock().expect(POISONED);
                if *last != Some(addr) {
                    info!(leader = %addr, url = %self.url, "meta leader found through etcd");
                    *last = Some(addr);
                }
                Ok(addr)
            }
        }
    }

    /// Forget the leader `addr` (a connection to it failed): the next [`resolve`] asks etcd.
    ///
    /// [`resolve`]: MetaLocator::resolve
    pub fn forget(&self, addr: SocketAddr) {
        if let Kind::Etcd { leader, .. } = &self.kind {
            let mut cached = leader.lock().expect(POISONED);
            if *cached == Some(addr) {
                debug!(leader = %addr, "meta leader unreachable: asking etcd again");
                *cached = None;
            }
        }
    }

    /// Connect to the meta service. Behind etcd, a failed connect forgets the cached leader and
    /// tries once more with the one etcd names now.
    pub fn connect(&self, deadline: Instant) -> Result<MetaConn> {
        let addr = self.resolve(deadline)?;
        match MetaConn::connect_with(addr, self.tls.as_ref(), deadline) {
            Ok(c) => Ok(c),
            Err(e) if matches!(self.kind, Kind::Etcd { .. }) => {
                self.forget(addr);
                let again = self.resolve(deadline)?;
                if again == addr {
                    return Err(e);
                }
                MetaConn::connect_with(again, self.tls.as_ref(), deadline)
                    .inspect_err(|_| self.forget(again))
            }
            Err(e) => Err(e),
        }
    }
}

/// The leader's address as etcd names it now.
fn leader_addr(etcd: &Etcd, url: &str, deadline: Instant) -> Result<SocketAddr> {
    let key = etcd.url().leader_key();
    let unreachable = |reason: String| Error::MetaUnreachable {
        url: url.to_string(),
        reason,
    };
    let kv = etcd
        .get(&key, deadline)
        .map_err(|e| unreachable(e.to_string()))?
        .ok_or_else(|| unreachable(format!("no meta leader in etcd (key {key} is empty)")))?;
    let text = String::from_utf8_lossy(&kv.value);
    parse_tcp_url(&text).map_err(|e| unreachable(format!("etcd key {key}: {e}")))
}

const POISONED: &str = "meta locator lock poisoned";
