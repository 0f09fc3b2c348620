//! `PartialSharing`: while a process downloads, it serves the verified pieces and lists them at the index.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Catalog, Partials, PeerConfig, PeerServer};
use crate::content::Digest;
use crate::identity::{Identity, IdentityError};
use crate::index::{IndexClient, IndexClientError};
use crate::protocol::{FileEntry, Limits};
use crate::tls::{Tls, TlsError};

/// Why sharing downloads in progress could not start.
#[derive(Debug, thiserror::Error)]
pub enum PartialSharingError {
    /// The listening address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// What the system said.
        source: std::io::Error,
    },
    /// No short-lived identity could be made.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The short-lived identity cannot be used for TLS.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The index refused or could not be reached.
    #[error(transparent)]
    Index(#[from] IndexClientError),
}

/// Serves the downloads in [`PartialSharing::partials`] to other peers and keeps the index
/// told which pieces of which files this process has, under a short-lived identity (so it
/// never touches the entries of a `share` running with the user's own key).
pub struct PartialSharing {
    /// The downloads in progress served; a download registers itself here.
    pub partials: Partials,
    /// Where the server listens.
    pub local_addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl PartialSharing {
    /// Starts serving on `listen`; lists the downloads at `index` as reachable at `advertise`
    /// (default: the listening port at the address the index sees).
    /// The index must hold `index_key` when given. The downloads are listed under a fresh
    /// key of their own, not the user's: the index knows a key as one peer, and the user's
    /// may be sharing at the same time.
    pub async fn start(
        index: &str,
        index_key: Option<Digest>,
        listen: SocketAddr,
        advertise: Option<(String, u16)>,
    ) -> Result<PartialSharing, PartialSharingError> {
        let identity = Identity::ephemeral()?;
        let tls = Tls::new(&identity)?;
        let listener = crate::protocol::listen::bind_tcp(listen).map_err(|source| {
            PartialSharingError::Listen {
                addr: listen,
                source,
            }
        })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| PartialSharingError::Listen {
                addr: listen,
                source,
            })?;
        let partials = Partials::default();
        // Nothing shared: the catalog stays empty (the sender is dropped at once).
        let (_, nothing_shared) = tokio::sync::watch::channel(Arc::new(Catalog::default()));
        let server = PeerServer::new(
            nothing_shared,
            Vec::new(),
            PeerConfig::default(),
            Arc::new(Notify::new()),
            tls.clone(),
        )
        .with_partials(partials.clone());
        let (shutdown, tasks) = (CancellationToken::new(), TaskTracker::new());
        tasks.spawn(server.run(listener, shutdown.clone()));
        let (host, port) = advertise.unwrap_or_else(|| {
            let ip = local_addr.ip();
            (
                if ip.is_unspecified() {
                    String::new()
                } else {
                    ip.to_string()
                },
                local_addr.port(),
            )
        });
        let (index, p, stop) = (index.to_string(), partials.clone(), shutdown.clone());
        tasks.spawn(async move {
            while !stop.is_cancelled() {
                let to = Announce {
                    index: &index,
                    index_key,
                    identity: &identity,
                    tls: &tls,
                };
                if let Err(e) = announce(&to, &host, port, &p, &stop).await {
                    tracing::debug!("listing downloads in progress at {index}: {e}");
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        });
        Ok(PartialSharing {
            partials,
            local_addr,
            shutdown,
            tasks,
        })
    }

    /// Stops serving and unregisters from the index (bounded wait).
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tasks.wait()).await;
    }
}

/// How often the listing at the index is brought up to date.
const ANNOUNCE_EVERY: Duration = Duration::from_millis(500);

/// The index downloads are listed at, and the key they are listed under.
struct Announce<'a> {
    index: &'a str,
    index_key: Option<Digest>,
    identity: &'a Identity,
    tls: &'a Tls,
}

async fn announce(
    to: &Announce<'_>,
    host: &str,
    port: u16,
    partials: &Partials,
    stop: &CancellationToken,
) -> Result<(), IndexClientError> {
    // Registering may take the index's whole address check (5 s behind a NAT): a stop
    // meanwhile ends it at once, with nothing to unregister (the index forgets an ephemeral
    // peer when its connection closes).
    let registered = async {
        let mut client =
            IndexClient::connect(to.index, Some(to.tls), to.index_key, Limits::default()).await?;
        let reg = client
            .register_as(to.identity, host, port, Default::default(), 0, true)
            .await?;
        Ok::<_, IndexClientError>((client, reg))
    };
    let (mut client, reg) = tokio::select! {
        _ = stop.cancelled() => return Ok(()),
        r = registered => r?,
    };
    let beat = Duration::from_millis(u64::from(reg.lease_secs) * 1000 / 3);
    let mut last: Vec<FileEntry> = Vec::new();
    let mut last_sent = tokio::time::Instant::now();
    loop {
        let now: Vec<FileEntry> = partials
            .all()
            .iter()
            .map(|f| FileEntry {
                path: format!("partial/{}/{}", f.content_id, f.name),
                name: f.name.clone(),
                size: f.size,
                content_id: f.content_id,
                mtime: 0,
                have: Some(f.bitmap()),
            })
            .collect();
        if now != last {
            client
                .sync_files(true, now.clone(), Vec::new(), Default::default())
                .await?;
            last = now;
            last_sent = tokio::time::Instant::now();
        } else if last_sent.elapsed() >= beat {
            client.heartbeat().await?;
            last_sent = tokio::time::Instant::now();
        }
        tokio::select! {
            _ = stop.cancelled() => {
                let _ = tokio::time::timeout(Duration::from_secs(3), client.unregister()).await;
                return Ok(());
            }
            _ = tokio::time::sleep(ANNOUNCE_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A download ends at once even while the index has not answered the registration of its
    /// partial files (behind a NAT it checks the address for up to 5 s): the process does not
    /// wait for it.
    #[tokio::test]
    async fn stopping_does_not_wait_for_a_slow_registration() {
        // An "index" that accepts the connection and never says a word.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let index = silent.local_addr().unwrap().to_string();
        let sharing = PartialSharing::start(&index, None, "127.0.0.1:0".parse().unwrap(), None)
            .await
            .unwrap();
        let (_held, _) = tokio::time::timeout(Duration::from_secs(10), silent.accept())
            .await
            .expect("the registration started")
            .unwrap();
        let started = std::time::Instant::now();
        sharing.stop().await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "stop waited {:?} for the registration",
            started.elapsed()
        );
    }
}
