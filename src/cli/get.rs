//! `peershare get`: look content ids up (index, DHT), then download them all, small files in pipelined batches.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use tokio::sync::mpsc;

use super::commands::{connect, parse_host_port};
use super::{DhtArgs, IndexAddr, output};
use crate::content::ContentId;
use crate::download::{
    DownloadReport, Downloader, LinkConfig, Progress, SmallFetchError, SmallFileFetcher, Source,
};
use crate::index::IndexClient;
use crate::peer::{PartialSharing, Partials};
use crate::protocol::{FileHit, SearchResults};
use crate::rate::RateLimiter;

/// Ids looked up at the index per pipelined batch; downloads start after the first batch.
const LOOKUP_BATCH: usize = 256;
/// Small files fetched and not yet written, at most.
const MAX_SMALL_IN_FLIGHT: usize = 512;

/// What `peershare get` was asked.
#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// Content ids (64 hex characters, as `search` and `b3sum` print them)
    #[arg(required = true, value_name = "HASH")]
    pub hashes: Vec<String>,
    #[command(flatten)]
    pub dht: DhtArgs,
    #[command(flatten)]
    pub index: IndexAddr,
    /// Directory to download into
    #[arg(short, long, default_value = ".", value_name = "DIR")]
    pub output: PathBuf,
    /// Download only from this peer
    #[arg(long, value_name = "ID")]
    pub peer: Option<u64>,
    /// Most peers to download one file from at once
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub max_peers: usize,
    /// Limit on total download bandwidth, e.g. 10MiB (per second)
    #[arg(long, value_parser = crate::rate::parse_rate, value_name = "RATE")]
    pub max_download_rate: Option<u64>,
    /// Most files downloaded at once (files of at most 256 KiB are not counted: they go
    /// as pipelined requests over at most 2 connections per source)
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub parallel: usize,
    /// Do not serve the verified pieces of the downloads in progress to other peers
    #[arg(long)]
    pub no_share: bool,
    /// Address to serve the downloads in progress on (port 0: any free port)
    #[arg(long, default_value = "0.0.0.0:0")]
    pub listen: SocketAddr,
    /// Address other peers must use, when it differs from --listen (NAT, proxy)
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// Give up on a file when no source has sent a verified piece for this long (before the
    /// first piece can be asked for: no block of 16384 piece hashes)
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, value_name = "TIME")]
    pub stall_timeout: std::time::Duration,
    /// Give up on a source that keeps answering that all its upload slots are taken for this long
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, value_name = "TIME")]
    pub max_queue_wait: std::time::Duration,
    /// Print one JSON document
    #[arg(long)]
    pub json: bool,
}

/// Runs `peershare get`: every id is looked up and downloaded; downloads start while later
/// ids are still being looked up. Exits non-zero if any failed.
pub async fn run_get(a: GetArgs) -> anyhow::Result<()> {
    let mut ids = a
        .hashes
        .iter()
        .map(|h| h.parse::<ContentId>())
        .collect::<Result<Vec<_>, _>>()?;
    // An id given twice is downloaded once.
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(*id));
    crate::protocol::raise_open_file_limit();
    let index = a.index.resolve(a.dht.dht);
    let client = match &index {
        Some(addr) if a.dht.dht => match connect(addr).await {
            Ok(c) => Some(c),
            Err(e) => {
                let e = format!("{e:#}");
                eprintln!(
                    "peershare: index unavailable, using the DHT only: {}",
                    crate::text::Escaped(&e)
                );
                None
            }
        },
        Some(addr) => Some(connect(addr).await?),
        None => None,
    };
    let node = super::dht::get_client(&a.dht)?;
    let advertise = a.advertise.map(|s| parse_host_port(&s)).transpose()?;
    let sharing = match (&index, a.no_share) {
        (Some(addr), false) => Some(PartialSharing::start(addr, a.listen, advertise).await?),
        _ => None,
    };
    let opts = GetOptions {
        only_peer: a.peer,
        max_peers: a.max_peers,
        rate: a.max_download_rate.map(|r| Arc::new(RateLimiter::new(r))),
        bars: (!a.json && std::io::stderr().is_terminal()).then(indicatif::MultiProgress::new),
        partials: sharing.as_ref().map(|s| s.partials.clone()),
        stall_timeout: Some(a.stall_timeout),
        max_queue_wait: Some(a.max_queue_wait),
    };
    let count = ids.len();
    let (tx, rx) = mpsc::channel(LOOKUP_BATCH * 4);
    let resolver = tokio::spawn(resolve(ids, index.clone(), client, node, tx));
    let results = download_stream(rx, count, &a.output, &opts, a.parallel).await;
    let _ = resolver.await;
    if let Some(s) = sharing {
        s.stop().await;
    }
    report(&results, a.json)
}

/// Looks every id up, in order, and sends each with its position: from the index in pipelined
/// batches, then (with `--dht`) with the DHT's sources added.
async fn resolve(
    ids: Vec<ContentId>,
    index: Option<String>,
    mut client: Option<IndexClient>,
    node: Option<mainline::async_dht::AsyncDht>,
    tx: mpsc::Sender<(usize, anyhow::Result<FileHit>)>,
) {
    // Once the index is lost (after one new connection was tried), why.
    let mut lost: Option<String> = None;
    let mut reconnected = false;
    for (b, batch) in ids.chunks(LOOKUP_BATCH).enumerate() {
        let mut from_index: Vec<Option<anyhow::Result<FileHit>>> = Vec::new();
        if let Some(c) = client.as_mut() {
            let mut found = lookup_many(c, batch).await;
            if let (Err(_), Some(addr), false) = (&found, &index, reconnected) {
                // The connection broke: one new connection, and this batch again.
                reconnected = true;
                client = None;
                found = match connect(addr).await {
                    Ok(mut c) => {
                        let again = lookup_many(&mut c, batch).await;
                        client = Some(c);
                        again
                    }
                    Err(e) => Err(e),
                };
            }
            match found {
                Ok(found) => from_index = found.into_iter().map(Some).collect(),
                Err(e) => {
                    if node.is_some() {
                        let e = format!("{e:#}");
                        eprintln!(
                            "peershare: index lookup failed, using the DHT only: {}",
                            crate::text::Escaped(&e)
                        );
                    }
                    client = None;
                    lost = Some(format!("index lookup failed: {e:#}"));
                }
            }
        }
        from_index.resize_with(batch.len(), || None);
        for (k, (&id, found)) in batch.iter().zip(from_index).enumerate() {
            let hit = match (&node, found) {
                (Some(n), found) => {
                    let known = found.and_then(Result::ok);
                    Ok(super::dht::add_dht_sources(n, id, known).await)
                }
                (None, Some(found)) => found,
                (None, None) => Err(anyhow::anyhow!("{}", lost.as_deref().unwrap_or("no index"))),
            };
            let hit = hit.and_then(|h| match h.peers.is_empty() {
                true => bail!("no live peer shares {id}"),
                false => Ok(h),
            });
            if tx.send((b * LOOKUP_BATCH + k, hit)).await.is_err() {
                return;
            }
        }
    }
}

/// Prints what was downloaded (paths, or the `--json` document) and turns failures into the
/// exit status: one failed download is its error, several are counted.
fn report(results: &[anyhow::Result<DownloadReport>], json: bool) -> anyhow::Result<()> {
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| format!("{e:#}")))
        .collect();
    let reports: Vec<&DownloadReport> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    if json {
        let doc = output::GetJson {
            downloads: reports
                .iter()
                .map(|r| output::DownloadJson::new(r))
                .collect(),
            failed: &failed,
        };
        // Written in one piece: stdout is line-buffered, so printing it directly would cost
        // a system call per line (tens per download).
        let text = serde_json::to_string_pretty(&doc)?;
        let mut text = crate::text::json_safe(&text).into_owned();
        text.push('\n');
        std::io::stdout().lock().write_all(text.as_bytes())?;
    } else {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for r in &reports {
            writeln!(out, "{}", r.path.display())?;
        }
        out.flush()?;
    }
    match failed.len() {
        0 => Ok(()),
        1 if results.len() == 1 => bail!("{}", failed[0]),
        n => {
            for f in &failed {
                eprintln!("peershare: {}", crate::text::Escaped(f));
            }
            bail!("{n} of {} downloads failed", results.len())
        }
    }
}

/// How `get` downloads.
#[derive(Default, Clone)]
pub struct GetOptions {
    /// Only this peer.
    pub only_peer: Option<u64>,
    /// Most sources per file (0: no limit).
    pub max_peers: usize,
    pub rate: Option<Arc<RateLimiter>>,
    /// Progress bars, when shown.
    pub bars: Option<indicatif::MultiProgress>,
    /// Where downloads in progress are published to be served.
    pub partials: Option<Partials>,
    /// `--stall-timeout` (default: the downloader's, 60 s).
    pub stall_timeout: Option<std::time::Duration>,
    /// `--max-queue-wait` (default: the downloader's, 60 s).
    pub max_queue_wait: Option<std::time::Duration>,
}

/// Downloads every hit, at most `parallel` at once; results in the order of `hits`.
pub async fn download_all(
    hits: &[FileHit],
    dir: &Path,
    opts: &GetOptions,
    parallel: usize,
) -> Vec<anyhow::Result<DownloadReport>> {
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
    mut found: mpsc::Receiver<(usize, anyhow::Result<FileHit>)>,
    count: usize,
    dir: &Path,
    opts: &GetOptions,
    parallel: usize,
) -> Vec<anyhow::Result<DownloadReport>> {
    let permits = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    // Files of one piece: one pipelined request each, over at most `parallel` (up to 2)
    // connections per source; only full downloads count against `parallel`.
    let links = LinkConfig {
        connections: parallel.clamp(1, 2),
        ..LinkConfig::default()
    };
    let small = SmallFileFetcher::new(links, opts.rate.clone(), dir)
        .map(Arc::new)
        .map_err(|e| tracing::warn!("no batched writes for small files: {e}"))
        .ok();
    // Bounds the small files fetched but not yet written (at most 256 KiB each), so a fast
    // network cannot outrun a slow disk by more than this many.
    let small_in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_SMALL_IN_FLIGHT));
    let mut results: Vec<Option<anyhow::Result<DownloadReport>>> =
        (0..count).map(|_| None).collect();
    let mut tasks = tokio::task::JoinSet::new();
    while let Some((n, hit)) = found.recv().await {
        let hit = match hit {
            Ok(hit) => hit,
            Err(e) => {
                if let Some(slot) = results.get_mut(n) {
                    *slot = Some(Err(e));
                }
                continue;
            }
        };
        let (dir, opts, permits, small, in_flight) = (
            dir.to_path_buf(),
            opts.clone(),
            permits.clone(),
            small.clone(),
            small_in_flight.clone(),
        );
        tasks.spawn(async move {
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
            (n, download_hit(&hit, &dir, &opts).await)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        if let Ok((n, r)) = joined
            && let Some(slot) = results.get_mut(n)
        {
            *slot = Some(r);
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(anyhow::anyhow!("download task failed"))))
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
    let sources = sources_of(hit, opts);
    let source = sources.get(n % sources.len().max(1))?;
    let (id, started) = (hit.content_id, Instant::now());
    let name = match hit.name.as_str() {
        "" => id.to_hex(),
        name => name.to_string(),
    };
    Some(match small.receive(id, source, dir).await {
        Ok(data) => small.store(id, source, dir, &name, data, started).await,
        Err(e) => Err(e),
    })
}

/// The index's entries for many ids, looked up over one connection with requests pipelined;
/// the outer error is the connection's, an inner one says nobody shares that id.
pub async fn lookup_many(
    client: &mut IndexClient,
    ids: &[ContentId],
) -> anyhow::Result<Vec<anyhow::Result<FileHit>>> {
    let queries: Vec<String> = ids.iter().map(ContentId::to_hex).collect();
    let replies = client.search_many(&queries, 1).await?;
    Ok(replies
        .into_iter()
        .zip(ids)
        .map(|(r, &id)| match r {
            Ok(r) => hit_for(r, id),
            Err(e) => Err(anyhow::anyhow!("the index refused to look {id} up: {e}")),
        })
        .collect())
}

/// The index's entry for `id` in a reply, with the live peers that have it.
fn hit_for(r: SearchResults, id: ContentId) -> anyhow::Result<FileHit> {
    match r.files.into_iter().find(|f| f.content_id == id) {
        Some(hit) if !hit.peers.is_empty() => Ok(hit),
        _ => bail!("no live peer shares {id}"),
    }
}

/// The peers of a search hit to download from (only `opts.only_peer`, if set). A peer whose
/// host is not an IP address is left out with a warning: a name from the network is never
/// looked up.
fn sources_of(hit: &FileHit, opts: &GetOptions) -> Vec<Source> {
    hit.peers
        .iter()
        .filter(|p| opts.only_peer.is_none_or(|id| id == p.peer_id))
        .filter_map(
            |p| match crate::protocol::host::socket_addr(&p.host, p.port) {
                Ok(addr) => Some(Source {
                    peer_id: (p.peer_id != 0).then_some(p.peer_id),
                    addr: addr.to_string(),
                }),
                Err(e) => {
                    tracing::warn!("peer {} left out: {e}", p.peer_id);
                    None
                }
            },
        )
        .collect()
}

/// Downloads a search hit into `dir` from its peers (or only `opts.only_peer`), all at once.
pub async fn download_hit(
    hit: &FileHit,
    dir: &Path,
    opts: &GetOptions,
) -> anyhow::Result<DownloadReport> {
    let sources = sources_of(hit, opts);
    if let (Some(id), true) = (opts.only_peer, sources.is_empty()) {
        bail!("peer {id} does not share {}", hit.content_id);
    }
    let mut d = Downloader {
        rate: opts.rate.clone(),
        partials: opts.partials.clone(),
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
    let bar = opts.bars.as_ref().map(|m| {
        let bar = m.add(indicatif::ProgressBar::new(hit.size));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} {bar:25} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_prefix(crate::download::sanitize_file_name(&hit.name));
        bar
    });
    if let Some(bar) = bar.clone() {
        d.progress = Some(Arc::new(move |p: Progress| {
            bar.set_length(p.total);
            bar.set_position(p.done);
            bar.set_message(match p.queued {
                Some(0) => format!("{} sources, waiting for an upload slot", p.sources),
                Some(n) => format!("{} sources, number {n} in a queue", p.sources),
                None => format!("{} sources", p.sources),
            });
        }));
    }
    let r = d
        .download(
            hit.content_id,
            &sources,
            dir,
            (!hit.name.is_empty()).then_some(hit.name.as_str()),
        )
        .await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(r?)
}
