//! High availability: two or three `mmc-meta` with the same `etcd_url` elect one leader through an
//! etcd lease; only the leader serves.
//!
//! - **Campaign**: grant a lease of `etcd_lease_s`, start a [`MetaServer`] (its listener bound, its
//!   directory empty), then put the leader key (`/PREFIX/meta/leader` = the advertised
//!   `tcp://host:port`) under the lease if no one holds it. Lost: stop the server, revoke the
//!   lease, stand by.
//! - **Stand by**: read the leader key every [`STANDBY_POLL`]; when it is gone (the leader's lease
//!   expired, or it stepped down and revoked it) campaign again. A standby does not listen, so a
//!   client that reaches its address is refused at once and asks etcd again.
//! - **Lead**: renew the lease every third of its TTL. A renewal answered with TTL 0 (the lease
//!   expired), or no renewal for two thirds of the TTL (etcd unreachable), stops the server before
//!   the lease can expire and a standby take over: then campaign again. The server itself refuses
//!   (closes) requests past two thirds of the lease since its last renewal, so a leader frozen
//!   past its lease (SIGSTOP, swap) answers nothing on waking. A stop signal revokes the lease,
//!   so a standby takes over at once.
//! - **Epoch**: incarnations, put tokens and lease ids start at `epoch << 16`. A leader starts at
//!   `max(its clock, the epoch key + 1)`, writes that to the epoch key, and while it leads keeps
//!   the key above `epoch + ms served + TTL` (raising it a minute ahead when it gets close), so
//!   the next leader's numbers are above every one this leader handed out even when the two
//!   hosts' clocks disagree.
//!
//! A new leader rebuilds its directory from the local services' rejoins, as after a restart.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use mmc_config::{parse_etcd_url, parse_tcp_url, MetaConfig};
use mmc_controlplane::error::{Error, Result};
use mmc_controlplane::meta::EPOCH_MAX;

use crate::etcd::{Etcd, EtcdError};
use crate::server::{epoch_now, MetaServer};

/// How often a standby reads the leader key.
pub const STANDBY_POLL: Duration = Duration::from_millis(100);
/// How far ahead of the numbers it hands out a leader keeps the epoch key (see [`lead`]).
const EPOCH_AHEAD_MS: u64 = 60_000;
/// Pause after a failed etcd call before the next attempt.
const RETRY: Duration = Duration::from_millis(250);

/// What [`run`] reports as its role changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Elected: serving at this bound address.
    Leader(SocketAddr),
    /// Not serving (before the first election, or after stepping down).
    Standby,
}

/// Run leader election (see the module documentation) until `stop` is set; `on_role` hears each
/// change of role. Returns an error only for a config that cannot work (no etcd URL, an address
/// that does not parse); etcd being unreachable is waited out.
pub fn run(config: &MetaConfig, stop: &AtomicBool, mut on_role: impl FnMut(Role)) -> Result<()> {
    let url = parse_etcd_url(&config.etcd_url).map_err(|e| Error::Config(e.to_string()))?;
    // With [tls]: etcd over HTTPS with this service's CA, certificate and key.
    let tls =
        mmc_tls::TlsContext::from_config(&config.tls).map_err(|e| Error::Config(e.to_string()))?;
    let etcd = Etcd::with_tls(url, tls.as_deref());
    let ttl_s = config.etcd_lease_s.max(1);
    let mut last_leader: Option<Vec<u8>> = None;
    // Whether the last etcd call failed (warn once per outage, not at every retry).
    let mut etcd_down = false;
    info!(etcd = %config.etcd_url, lease_s = ttl_s, https = etcd.is_tls(),
        "meta service standing by: campaigning through etcd");
    while !stop.load(Ordering::Acquire) {
        // Stand by while someone holds the leader key.
        match etcd.get(&etcd.url().leader_key(), deadline(ttl_s)) {
            Ok(Some(kv)) => {
                if std::mem::take(&mut etcd_down) {
                    info!("etcd answers again");
                }
                if last_leader.as_ref() != Some(&kv.value) {
                    info!(leader = %String::from_utf8_lossy(&kv.value), "standing by: another meta service leads");
                    last_leader = Some(kv.value);
                }
                sleep_unless(stop, STANDBY_POLL);
                continue;
            }
            Ok(None) => etcd_down = false,
            Err(e) => {
                if !std::mem::replace(&mut etcd_down, true) {
                    warn!(error = %e, "standing by: etcd unreachable (trying every 250 ms)");
                }
                sleep_unless(stop, RETRY);
                continue;
            }
        }
        match campaign(config, &etcd, ttl_s) {
            Ok(Some((server, lease, epoch, granted))) => {
                last_leader = None;
                let addr = server.local_addr();
                on_role(Role::Leader(addr));
                let term = Term {
                    lease,
                    epoch,
                    ttl_s,
                    granted,
                };
                lead(&etcd, server, term, stop);
                on_role(Role::Standby);
                if !stop.load(Ordering::Acquire) {
                    // Lost: release the key at once if etcd answers again (best effort).
                    let _ = etcd.revoke(lease, deadline(ttl_s));
                }
            }
            Ok(None) => {}
            Err(CampaignError::Fatal(e)) => return Err(e),
            Err(CampaignError::Etcd(e)) => {
                if !std::mem::replace(&mut etcd_down, true) {
                    warn!(error = %e, "campaign failed: etcd unreachable (trying every 250 ms)");
                }
                sleep_unless(stop, RETRY);
            }
        }
    }
    Ok(())
}

/// A won election: the lease, the epoch the server started with, when the lease was asked for.
struct Term {
    lease: i64,
    epoch: u64,
    ttl_s: u64,
    granted: Instant,
}

enum CampaignError {
    Etcd(EtcdError),
    Fatal(Error),
}

impl From<EtcdError> for CampaignError {
    fn from(e: EtcdError) -> Self {
        CampaignError::Etcd(e)
    }
}

/// One attempt at the leader key. Some((server, lease, epoch, when the lease was asked for))
/// when won.
fn campaign(
    config: &MetaConfig,
    etcd: &Etcd,
    ttl_s: u64,
) -> std::result::Result<Option<(MetaServer, i64, u64, Instant)>, CampaignError> {
    let epoch_key = etcd.url().epoch_key();
    let stored = etcd.get(&epoch_key, deadline(ttl_s))?;
    let (floor, rev) = match &stored {
        Some(kv) => (parse_epoch(&kv.value), kv.mod_revision),
        None => (0, 0),
    };
    let epoch = epoch_now().max(floor.saturating_add(1)).min(EPOCH_MAX);
    let granted = Instant::now();
    let lease = etcd.grant(ttl_s, deadline(ttl_s))?;
    let server = match MetaServer::start_with_epoch(config, epoch) {
        Ok(s) => {
            s.serve_until(granted + Duration::from_secs(ttl_s) * 2 / 3);
            s
        }
        Err(e) => {
            let _ = etcd.revoke(lease, deadline(ttl_s));
            return Err(CampaignError::Fatal(e));
        }
    };
    let advertised = advertised_url(config, server.local_addr());
    let won = etcd.put_if_absent(
        &etcd.url().leader_key(),
        advertised.as_bytes(),
        lease,
        deadline(ttl_s),
    );
    let give_up = |server: MetaServer| {
        server.stop();
        let _ = etcd.revoke(lease, deadline(ttl_s));
    };
    match won {
        Ok(None) => {}
        Ok(Some(_)) => {
            give_up(server);
            return Ok(None);
        }
        Err(e) => {
            give_up(server);
            return Err(e.into());
        }
    }
    // Won: record the epoch, so that the next leader starts above it.
    match etcd.compare_and_put(
        &epoch_key,
        rev,
        epoch.to_string().as_bytes(),
        deadline(ttl_s),
    ) {
        Ok(true) => {}
        Ok(false) => {
            warn!("the epoch key changed during the campaign: stepping down to start again");
            give_up(server);
            return Ok(None);
        }
        Err(e) => {
            give_up(server);
            return Err(e.into());
        }
    }
    info!(advertised = %advertised, epoch, lease_s = ttl_s, "elected meta leader: serving (directory rebuilt from the local services' rejoins)");
    Ok(Some((server, lease, epoch, granted)))
}

/// Serve until the lease is lost or `stop` is set; stops the server. On a stop, revokes the lease
/// (a standby takes over at once); after losing it, the caller revokes it once it has heard.
fn lead(etcd: &Etcd, server: MetaServer, term: Term, stop: &AtomicBool) {
    let Term {
        lease,
        epoch,
        ttl_s,
        granted,
    } = term;
    let ttl = Duration::from_secs(ttl_s);
    let started = Instant::now();
    let renew_every = ttl / 3;
    // Counted from before the request was sent, so etcd's own expiry is later still.
    let mut renewed = granted;
    let mut failing = false;
    // The epoch key is kept this far ahead of the numbers handed out, so that it is written
    // about once a minute (every write is an etcd revision), not at every renewal.
    let mut floor = epoch;
    loop {
        let step_down_at = renewed + ttl * 2 / 3;
        let next = if failing {
            Instant::now() + RETRY.min(renew_every)
        } else {
            renewed + renew_every
        };
        sleep_unless(
            stop,
            next.min(step_down_at)
                .saturating_duration_since(Instant::now()),
        );
        if stop.load(Ordering::Acquire) {
            server.stop();
            match etcd.revoke(lease, Instant::now() + Duration::from_secs(1)) {
                Ok(()) => info!("stopped: leader key released"),
                Err(e) => {
                    warn!(error = %e, "stopped: lease not revoked (a standby takes over when it expires)")
                }
            }
            return;
        }
        let sent = Instant::now();
        if sent >= step_down_at {
            warn!(
                lease_s = ttl_s,
                "leader lease not renewed for two thirds of its TTL: stepping down"
            );
            break;
        }
        match etcd.keep_alive(lease, (sent + renew_every).min(step_down_at)) {
            Ok(left) if left > 0 => {
                renewed = sent;
                server.serve_until(sent + ttl * 2 / 3);
                failing = false;
                let reach = epoch + started.elapsed().as_millis() as u64 + 1000 * ttl_s;
                if reach >= floor {
                    floor = reach + EPOCH_AHEAD_MS;
                    raise_epoch_floor(etcd, floor, ttl_s);
                }
            }
            Ok(_) => {
                warn!("leader lease expired: stepping down");
                break;
            }
            Err(e) => {
                failing = true;
                warn!(error = %e, "leader lease renewal failed: trying again");
            }
        }
    }
    server.stop();
}

/// Raise the epoch key to at least `floor` (best effort: a failure only narrows the margin).
fn raise_epoch_floor(etcd: &Etcd, floor: u64, ttl_s: u64) {
    let key = etcd.url().epoch_key();
    for _ in 0..3 {
        let (current, rev) = match etcd.get(&key, deadline(ttl_s)) {
            Ok(Some(kv)) => (parse_epoch(&kv.value), kv.mod_revision),
            Ok(None) => (0, 0),
            Err(_) => return,
        };
        if current >= floor {
            return;
        }
        match etcd.compare_and_put(&key, rev, floor.to_string().as_bytes(), deadline(ttl_s)) {
            Ok(true) | Err(_) => return,
            Ok(false) => continue,
        }
    }
}

/// The URL the leader publishes: `advertise_url`, else the bound address.
fn advertised_url(config: &MetaConfig, bound: SocketAddr) -> String {
    if !config.advertise_url.is_empty() {
        if let Ok(a) = parse_tcp_url(&config.advertise_url) {
            return format!("tcp://{a}");
        }
    }
    format!("tcp://{bound}")
}

fn parse_epoch(v: &[u8]) -> u64 {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn deadline(ttl_s: u64) -> Instant {
    Instant::now() + Duration::from_millis(ttl_s * 1000 / 3).max(Duration::from_millis(300))
}

/// Sleep `d`, waking early when `stop` is set.
fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while !stop.load(Ordering::Acquire) {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(20)));
    }
}
