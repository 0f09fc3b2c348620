//! A sharing node's registration with its index: register, send the file list, heartbeat, follow catalog changes, reconnect with backoff.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{ShareConfig, ShareStatus};
use crate::content::Digest;
use crate::identity::Identity;
use crate::index::{IndexClient, IndexClientError};
use crate::peer::Catalog;
use crate::protocol::{ErrorCode, ProtocolError};
use crate::tls::Tls;

/// One peer's registration with one index, kept up for as long as the share runs.
pub(super) struct Registration {
    /// The index's `HOST:PORT`.
    pub index: String,
    /// The key the index must hold: as configured, else the one it showed first.
    pub index_key: Option<Digest>,
    pub identity: Identity,
    /// The identity's TLS setup: the index checks that `Register` comes from its key.
    pub tls: Tls,
    pub config: ShareConfig,
    /// The address the peer serves on (registered unless `config.advertise` says otherwise).
    pub local_addr: SocketAddr,
    pub catalog: watch::Receiver<Arc<Catalog>>,
    pub status: Arc<watch::Sender<ShareStatus>>,
    pub shutdown: CancellationToken,
}

impl Registration {
    /// Registers, and registers again after every failure (backoff with jitter), until shutdown.
    pub async fn run(mut self) {
        let (host, port) = self.config.advertise.clone().unwrap_or_else(|| {
            let ip = self.local_addr.ip();
            let host = if ip.is_unspecified() {
                String::new()
            } else {
                ip.to_string()
            };
            (host, self.local_addr.port())
        });
        let index = self.index.clone();
        let mut backoff = RECONNECT_MIN;
        loop {
            let mut progress = SessionProgress::default();
            let r = self.session(&host, port, &mut progress).await;
            let e = match r {
                Ok(()) => return,
                Err(e) => e,
            };
            // A session that got as far as registering its files proves the index is back: the next
            // outage starts from the shortest wait again (else every restart of the index would
            // double it for good, up to 30 s per re-sync). One that failed before keeps doubling,
            // so an index that takes registrations but fails every sync is not asked again and again.
            if progress.in_sync {
                backoff = RECONNECT_MIN;
            }
            let wait = match progress.lease {
                // Refused after registering: another process registered with this identity since
                // (the index keeps the newest session only). Taking the registration straight back
                // would make two such processes overwrite each other's files all the time; one lease
                // lets a process that merely restarted elsewhere, or left, settle first.
                Some(lease) if is_unauthorized(&e) => {
                    let lease = lease.clamp(RECONNECT_MIN, TAKEN_OVER_MAX);
                    warn!(
                        "index {index}: this session was refused ({e}): another process may be \
                     using this identity; registering again in {lease:?}"
                    );
                    lease
                }
                _ => {
                    let wait = jittered(backoff);
                    warn!("index {index}: {e}; retrying in {wait:?}");
                    backoff = (backoff * 2).min(RECONNECT_MAX);
                    wait
                }
            };
            self.status.send_modify(|s| {
                s.in_sync = false;
                s.last_error = Some(e.to_string());
            });
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// The first wait before reconnecting to the index after a failure; it doubles with each
/// failure in a row, up to [`RECONNECT_MAX`], and starts again here after a registration.
pub const RECONNECT_MIN: Duration = Duration::from_millis(500);
/// The longest wait before reconnecting to the index.
pub const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// The longest wait before registering again after the index refused a session it had
/// registered (normally one lease).
pub const TAKEN_OVER_MAX: Duration = Duration::from_secs(600);

/// A wait drawn uniformly from `[d/2, d]`, so the peers of an index that restarts do not all
/// come back at the same instant.
fn jittered(d: Duration) -> Duration {
    let mut b = [0u8; 8];
    let r = getrandom::fill(&mut b).map_or(u64::MAX, |()| u64::from_le_bytes(b));
    let half = d / 2;
    half + Duration::from_nanos(r % (half.as_nanos() as u64 + 1))
}

/// How far one session with the index got.
#[derive(Default)]
struct SessionProgress {
    /// The lease the index gave, once registered.
    lease: Option<Duration>,
    /// The index acknowledged the whole catalog.
    in_sync: bool,
}

fn is_unauthorized(e: &IndexClientError) -> bool {
    matches!(
        e,
        IndexClientError::Protocol {
            source: ProtocolError::Remote(r),
            ..
        } if r.code == ErrorCode::Unauthorized
    )
}

impl Registration {
    /// One session: connect, register, send the file list, then heartbeat and send changes
    /// until shutdown (`Ok`) or a failure (`Err`); `progress` says how far it got.
    async fn session(
        &mut self,
        host: &str,
        port: u16,
        progress: &mut SessionProgress,
    ) -> Result<(), IndexClientError> {
        let (index, identity, config, status, shutdown) = (
            &self.index,
            &self.identity,
            &self.config,
            &self.status,
            &self.shutdown,
        );
        let catalog_rx = &mut self.catalog;
        let mut client =
            IndexClient::connect(index, Some(&self.tls), self.index_key, config.index_limits)
                .await?;
        self.index_key = Some(client.server_key());
        // A private index that knows us as a member: sharing open there would serve strangers.
        if client.welcome().membership.is_some() && self.tls.group().is_none() {
            return Err(IndexClientError::Protocol {
                addr: index.clone(),
                source: ProtocolError::Refused(
                    "this index is private and this peer is a member: share as a member of its group".into(),
                ),
            });
        }
        let mut synced = catalog_rx.borrow_and_update().clone();
        let (digest, count) = (synced.digest(), synced.len() as u64);
        let reg = match config.relay.is_some() {
            true => {
                client
                    .register_volunteer(identity, host, port, digest, count)
                    .await?
            }
            false => client.register(identity, host, port, digest, count).await?,
        };
        let lease = Duration::from_secs(u64::from(reg.lease_secs));
        progress.lease = Some(lease);
        let files = if reg.in_sync {
            synced.len() as u64
        } else {
            let entries = synced.files().map(|f| f.entry()).collect();
            client
                .sync_files(true, entries, Vec::new(), synced.digest())
                .await?
        };
        let relayed = reg.reach.as_deref() == Some(crate::protocol::relay::reach::RELAY);
        let reachable_at = (!relayed).then(|| match reg.host.contains(':') {
            true => format!("[{}]:{port}", reg.host),
            false => format!("{}:{port}", reg.host),
        });
        match &reachable_at {
            Some(at) => info!(
                "registered with index {index} as peer {}, reachable at {at}: {files} files",
                reg.peer_id
            ),
            None => info!(
                "registered with index {index} as peer {}, reachable through the index's relay \
                 (the index could not connect to its port {port}; it sees this peer at {}): {files} files",
                reg.peer_id,
                reg.observed.as_deref().unwrap_or("?"),
            ),
        }
        match reg.relay {
            Some(true) => info!("relaying for the other members of index {index} (--relay)"),
            Some(false) => warn!(
                "not relaying for others: index {index} takes as a relay only a peer it reaches directly"
            ),
            None => {}
        }
        let index_key = client.server_key();
        status.send_modify(|s| {
            s.volunteer = reg.relay;
            s.reach = reg
                .reach
                .clone()
                .or(Some(crate::protocol::relay::reach::DIRECT.into()));
            s.reachable_at = reachable_at;
            s.observed = reg.observed.clone();
            s.index_key = Some(index_key);
        });
        // The file list just sent (and its encoding) was the largest allocation a sharing peer makes.
        crate::release_free_memory();
        // A member learns at once who was removed from its group (and renews its certificate),
        // not a heartbeat period later.
        if self.tls.group().is_some() {
            client.heartbeat().await?;
        }
        progress.in_sync = true;
        status.send_modify(|s| {
            s.peer_id = Some(reg.peer_id);
            s.files_registered = Some(files);
            s.in_sync = true;
            s.last_error = None;
        });
        let period = (lease / 3).max(Duration::from_millis(200));
        let mut beat = tokio::time::interval(period);
        beat.tick().await;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    match tokio::time::timeout(Duration::from_secs(3), client.unregister()).await {
                        Ok(Ok(())) => info!("unregistered from index {index}"),
                        _ => warn!("could not unregister from index {index}"),
                    }
                    return Ok(());
                }
                _ = beat.tick() => client.heartbeat().await?,
                r = catalog_rx.changed() => {
                    if r.is_err() {
                        // The scanner stopped: only shutdown does that. Unregister on the next turn.
                        shutdown.cancelled().await;
                        continue;
                    }
                    let next = catalog_rx.borrow_and_update().clone();
                    let (upsert, remove) = next.diff(&synced);
                    let (nu, nr) = (upsert.len(), remove.len());
                    status.send_modify(|s| s.in_sync = false);
                    let files = client.sync_files(false, upsert, remove, next.digest()).await?;
                    info!("index updated: {nu} added or changed, {nr} removed, {files} files");
                    synced = next;
                    status.send_modify(|s| {
                        s.files_registered = Some(files);
                        s.in_sync = true;
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_waits_are_spread_over_the_upper_half_of_the_step() {
        let step = Duration::from_millis(800);
        let waits: Vec<Duration> = (0..200).map(|_| jittered(step)).collect();
        assert!(
            waits.iter().all(|w| *w >= step / 2 && *w <= step),
            "{waits:?}"
        );
        let (lo, hi) = (waits.iter().min().unwrap(), waits.iter().max().unwrap());
        assert!(*hi - *lo > step / 4, "spread out: {lo:?}..{hi:?}");
        assert_eq!(jittered(Duration::ZERO), Duration::ZERO);
    }
}
