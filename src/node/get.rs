//! Downloading many files at once: full downloads at most `parallel` at a time, files of one
//! piece in pipelined one-request fetches beside them, results in the order asked.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{GetError, HaveAlready};
use crate::download::{
    DownloadReport, Downloader, LinkConfig, Progress, RelayRoute, SmallFetchError,
    SmallFileFetcher, Source,
};
use crate::peer::Partials;
use crate::protocol::FileHit;
use crate::rate::RateLimiter;
use crate::tls::Tls;

/// Small files fetched and not yet written, at most: a fast network cannot outrun a slow disk
/// by more than this many files of at most one piece.
pub const MAX_SMALL_IN_FLIGHT: usize = 512;

/// What a download pipeline tells while it runs (for progress bars, logs, a UI). More kinds
/// of event may come: match with a wildcard arm.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum GetEvent<'a> {
    /// The `n`th file was looked up and waits for its turn ([`download_stream`] and
    /// [`download_all`] only).
    Found {
        /// The file's position in the list asked for.
        n: usize,
        /// What was found for it.
        hit: &'a FileHit,
    },
    /// The `n`th file is done with, whatever the way: downloaded (in full or in one request),
    /// found already on disk, or failed (its lookup too) ([`download_stream`] and
    /// [`download_all`] only).
    Done {
        /// The file's position in the list asked for.
        n: usize,
        /// How it ended.
        result: &'a Result<DownloadReport, GetError>,
    },
    /// The full download of the `n`th file began (a file fetched in one request has no events).
    Started {
        /// The file's position in the list asked for.
        n: usize,
        /// What was found for it.
        hit: &'a FileHit,
    },
    /// Verified bytes of the `n`th file, and its sources.
    Progress {
        /// The file's position in the list asked for.
        n: usize,
        /// How far it is.
        progress: Progress,
    },
    /// The full download of the `n`th file ended (done or failed: see its result).
    Finished {
        /// The file's position in the list asked for.
        n: usize,
    },
    /// The index could not be asked any more; the ids not yet looked up fail, or are looked up
    /// through the DHT only when it is on.
    IndexLost {
        /// Why, in one line.
        reason: &'a str,
    },
}

/// Where [`GetEvent`]s go; called from download tasks, so it must be quick.
pub type EventSink = Arc<dyn Fn(GetEvent<'_>) + Send + Sync>;

/// How files are downloaded. `Default` downloads from every source with the downloader's own
/// limits and reports nothing.
#[derive(Default, Clone)]
pub struct GetOptions {
    /// Download only from this peer id.
    pub only_peer: Option<u64>,
    /// Most sources per file (0: the downloader's default, [`Downloader::max_sources`]).
    pub max_peers: usize,
    /// Shared limit on download bandwidth.
    pub rate: Option<Arc<RateLimiter>>,
    /// Where downloads in progress are published, to be served to other peers.
    pub partials: Option<Partials>,
    /// Give up on a file with no verified piece for this long (`None`: [`Downloader::stall_timeout`]).
    pub stall_timeout: Option<Duration>,
    /// Give up on a source that stays busy for this long (`None`: [`Downloader::max_queue_wait`]).
    pub max_queue_wait: Option<Duration>,
    /// Where progress goes.
    pub events: Option<EventSink>,
    /// The key the index and sources see: a member's in a private group (`None`: fresh
    /// anonymous keys).
    pub tls: Option<Tls>,
    /// The index the hits came from, which relays to the peers it cannot reach (§7.10).
    /// `None`: no relay (peers listed as reached through one are left out).
    pub relay: Option<RelayRoute>,
    /// Where to look for files already on disk before downloading them: a file whose content
    /// id is found there is not downloaded, its report says where it is
    /// ([`DownloadReport::already_had`]). `None`: every file is downloaded.
    pub have_already: Option<Arc<HaveAlready>>,
    /// A UDP socket for QUIC and hole punching through the index (docs/PROTOCOL.md §7.11).
    /// Default: none, TCP only.
    pub udp: Option<Arc<crate::download::udp::UdpRoute>>,
}

impl GetOptions {
    pub(super) fn tell(&self, event: GetEvent<'_>) {
        if let Some(sink) = &self.events {
            sink(event);
        }
    }
}

/// Downloads every hit into `dir`, at most `parallel` full downloads at once; results in the
/// order of `hits`.
pub async fn download_all(
    hits: &[FileHit],
    dir: &Path,
    opts: &GetOptions,
    parallel: usize,
) -> Vec<Result<DownloadReport, GetError>> {
    let (tx, rx) = mpsc::channel(hits.len().max(1));
    for (n, hit) in hits.iter().enumerate() {
        // Cannot fail: the channel has room for every hit and the receiver is alive.
        let _ = tx.try_send((n, Ok(hit.clone())));
    }
    drop(tx);
    download_stream(rx, hits.len(), dir, opts, parallel).await
}

/// Downloads files as their lookups arrive (`(position, hit or why there is none)`), at most
/// `parallel` full downloads at once; returns `count` results in position order.
pub async fn download_stream(
    mut found: mpsc::Receiver<(usize, Result<FileHit, GetError>)>,
    count: usize,
    dir: &Path,
    opts: &GetOptions,
    parallel: usize,
) -> Vec<Result<DownloadReport, GetError>> {
    let (tx, rx) = mpsc::channel(64);
    let to = dir.to_path_buf();
    let forward = async move {
        while let Some((n, hit)) = found.recv().await {
            if tx.send((n, hit.map(|h| (h, to.clone())))).await.is_err() {
                return;
            }
        }
    };
    let (results, ()) = tokio::join!(
        download_stream_into(rx, count, dir, opts, parallel),
        forward
    );
    results
}

/// A file to download and the directory it goes in.
pub type Placed = (FileHit, PathBuf);

/// [`download_stream`] with a directory of its own for each file (a folder's structure, made
/// beforehand); `dir` is the top one. Returns `count` results in position order.
pub async fn download_stream_into(
    mut found: mpsc::Receiver<(usize, Result<Placed, GetError>)>,
    count: usize,
    dir: &Path,
    opts: &GetOptions,
    parallel: usize,
) -> Vec<Result<DownloadReport, GetError>> {
    let permits = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    // Files of one piece: one pipelined request each, over at most `parallel` (up to 2)
    // connections per source; only full downloads count against `parallel`.
    let links = LinkConfig {
        connections: parallel.clamp(1, 2),
        ..LinkConfig::default()
    };
    let small = SmallFileFetcher::new(links, opts.tls.clone(), opts.rate.clone(), dir)
        .map(|s| s.with_relay(opts.relay.clone()).with_udp(opts.udp.clone()))
        .map(Arc::new)
        .map_err(|e| tracing::warn!("no batched writes for small files: {e}"))
        .ok();
    let small_in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_SMALL_IN_FLIGHT));
    let mut results: Vec<Option<Result<DownloadReport, GetError>>> =
        (0..count).map(|_| None).collect();
    let mut tasks = tokio::task::JoinSet::new();
    while let Some((n, hit)) = found.recv().await {
        let (hit, dir) = match hit {
            Ok(hit) => hit,
            Err(e) => {
                let r = Err(e);
                opts.tell(GetEvent::Done { n, result: &r });
                if let Some(slot) = results.get_mut(n) {
                    *slot = Some(r);
                }
                continue;
            }
        };
        opts.tell(GetEvent::Found { n, hit: &hit });
        let (opts, permits, small, in_flight) = (
            opts.clone(),
            permits.clone(),
            small.clone(),
            small_in_flight.clone(),
        );
        tasks.spawn(async move {
            if let Some(r) = already_have(&hit, &dir, &opts).await {
                return (n, Ok(r));
            }
            crate::metrics::node().downloads_started.inc();
            if let Some(small) = small.filter(|_| SmallFileFetcher::fits(hit.size)) {
                let _in_flight = in_flight.acquire_owned().await;
                match fetch_small(&small, &hit, n, &dir, &opts).await {
                    Some(Ok(r)) => return (n, Ok(r)),
                    Some(Err(e)) if !e.worth_retrying() => return (n, Err(e.into())),
                    Some(Err(e)) => tracing::debug!(
                        "{}: one-request fetch failed ({e}); using the full downloader",
                        hit.content_id
                    ),
                    None => {}
                }
            }
            let _permit = permits.acquire_owned().await;
            (n, download_full(&hit, n, &dir, &opts).await)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        if let Ok((n, r)) = joined {
            count_end(&r);
            opts.tell(GetEvent::Done { n, result: &r });
            if let Some(slot) = results.get_mut(n) {
                *slot = Some(r);
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or(Err(GetError::TaskFailed)))
        .collect()
}

/// A file of one piece in one request from one of its sources (the `n`th file uses source
/// `n` modulo their number, spreading files over sources); `None` if it has no source.
async fn fetch_small(
    small: &SmallFileFetcher,
    hit: &FileHit,
    n: usize,
    dir: &Path,
    opts: &GetOptions,
) -> Option<Result<DownloadReport, SmallFetchError>> {
    let sources = sources_via(hit, opts.only_peer, opts.relay.as_ref());
    let source = sources.get(n % sources.len().max(1))?;
    let (id, started) = (hit.content_id, Instant::now());
    let name = match hit.name.as_str() {
        "" => id.to_hex(),
        name => name.to_string(),
    };
    Some(match small.receive(id, source, dir).await {
        Ok(fetched) => small.store(id, source, dir, &name, fetched, started).await,
        Err(e) => Err(e),
    })
}

/// The peers of a search hit to download from (only `only_peer`, if set). A peer whose host is
/// not an IP address is left out with a warning: a name from the network is never looked up.
pub fn sources_of(hit: &FileHit, only_peer: Option<u64>) -> Vec<Source> {
    sources_via(hit, only_peer, None)
}

/// [`sources_of`], with the index that relays to the peers it lists as reached through it
/// (`PeerHit.reach`, §7.10), which is also tried when connecting to another peer fails. A peer
/// reached only through a relay is left out without one.
pub fn sources_via(
    hit: &FileHit,
    only_peer: Option<u64>,
    relay: Option<&RelayRoute>,
) -> Vec<Source> {
    let relayed = |p: &crate::protocol::PeerHit| {
        p.reach.as_deref() == Some(crate::protocol::relay::reach::RELAY)
    };
    hit.peers
        .iter()
        .filter(|p| only_peer.is_none_or(|id| id == p.peer_id))
        .filter_map(|p| {
            // Relayed by key: an index lists the peer by its key only.
            let route = relay.filter(|_| p.key.is_some() && p.peer_id != 0);
            let addr = match relayed(p) {
                true if route.is_some() => String::new(),
                true => {
                    tracing::warn!(
                        "peer {} left out: reached only through its index's relay",
                        p.peer_id
                    );
                    return None;
                }
                false => match crate::protocol::host::socket_addr(&p.host, p.port) {
                    Ok(addr) => addr.to_string(),
                    Err(e) => {
                        tracing::warn!("peer {} left out: {e}", p.peer_id);
                        return None;
                    }
                },
            };
            Some(Source {
                peer_id: (p.peer_id != 0).then_some(p.peer_id),
                addr,
                key: p.key,
            })
        })
        .collect()
}

/// Where a file of `hit`'s content id already is, as a report of nothing downloaded, when
/// `opts.have_already` finds one (in `dir` or a look-in directory).
pub async fn already_have(hit: &FileHit, dir: &Path, opts: &GetOptions) -> Option<DownloadReport> {
    let have = opts.have_already.clone()?;
    let held = have.clone();
    let _turn = held.checks.acquire().await.ok()?;
    let (id, size, target, started) = (hit.content_id, hit.size, dir.to_path_buf(), Instant::now());
    let path = tokio::task::spawn_blocking(move || have.find(&id, size, &target))
        .await
        .ok()??;
    tracing::info!("already have {id} at {}", path.display());
    Some(DownloadReport {
        content_id: id,
        path,
        size,
        seconds: started.elapsed().as_secs_f64(),
        bytes_fetched: 0,
        bytes_resumed: 0,
        pieces_rejected: 0,
        sources: Vec::new(),
        already_had: true,
    })
}

/// Downloads a search hit into `dir` from its peers (or only `opts.only_peer`), all at once;
/// `n` is its position, for the events. A file already on disk where `opts.have_already`
/// looks is not downloaded (see [`already_have`]).
pub async fn download_hit(
    hit: &FileHit,
    n: usize,
    dir: &Path,
    opts: &GetOptions,
) -> Result<DownloadReport, GetError> {
    if let Some(r) = already_have(hit, dir, opts).await {
        return Ok(r);
    }
    crate::metrics::node().downloads_started.inc();
    let r = download_full(hit, n, dir, opts).await;
    count_end(&r);
    r
}

/// Counts the end of a download that was started in the node's metrics.
fn count_end(r: &Result<DownloadReport, GetError>) {
    let m = crate::metrics::node();
    match r {
        Ok(r) if r.already_had => {}
        Ok(_) => {
            m.downloads_finished.inc();
        }
        Err(_) => {
            m.downloads_failed.inc();
        }
    }
}

/// [`download_hit`] without looking for the file on disk first.
async fn download_full(
    hit: &FileHit,
    n: usize,
    dir: &Path,
    opts: &GetOptions,
) -> Result<DownloadReport, GetError> {
    let sources = sources_via(hit, opts.only_peer, opts.relay.as_ref());
    if let (Some(peer), true) = (opts.only_peer, sources.is_empty()) {
        return Err(GetError::NotOnPeer {
            peer,
            id: hit.content_id,
        });
    }
    let mut d = Downloader {
        rate: opts.rate.clone(),
        partials: opts.partials.clone(),
        tls: opts.tls.clone(),
        udp: opts.udp.clone(),
        relay: opts.relay.clone(),
        ..Downloader::default()
    };
    if opts.max_peers > 0 {
        d.max_sources = opts.max_peers;
    }
    if let Some(t) = opts.stall_timeout {
        d.stall_timeout = t;
    }
    if let Some(t) = opts.max_queue_wait {
        d.max_queue_wait = t;
    }
    if let Some(sink) = opts.events.clone() {
        d.progress = Some(Arc::new(move |progress: Progress| {
            sink(GetEvent::Progress { n, progress })
        }));
    }
    opts.tell(GetEvent::Started { n, hit });
    let r = d
        .download(
            hit.content_id,
            &sources,
            dir,
            (!hit.name.is_empty()).then_some(hit.name.as_str()),
        )
        .await;
    opts.tell(GetEvent::Finished { n });
    Ok(r?)
}
