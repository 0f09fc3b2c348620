//! The subcommands: index, share, search, get, peers.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{Command, output};
use crate::content::ContentId;
use crate::download::{DownloadReport, Downloader, LinkConfig, Progress, SmallFileFetcher, Source};
use crate::index::{CacheConfig, IndexClient, IndexConfig, IndexServer, IndexStore};
use crate::peer::{PartialSharing, Partials, ShareConfig, start_share};
use crate::protocol::{FileHit, Limits, SearchResults};
use crate::rate::RateLimiter;

/// Cancelled on Ctrl-C or SIGTERM.
pub fn interrupt_token() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
        }
        t.cancel();
    });
    token
}

pub async fn run(cmd: Command, state: PathBuf) -> anyhow::Result<()> {
    match cmd {
        Command::Index {
            listen,
            db,
            lease,
            max_connections,
            search_cache,
        } => {
            let db = db.unwrap_or_else(|| state.join("index.sqlite"));
            let config = IndexConfig {
                lease,
                max_connections,
                search_cache: CacheConfig {
                    max_entries: search_cache,
                    ..CacheConfig::default()
                },
                ..IndexConfig::default()
            };
            run_index(listen, &db, config).await
        }
        Command::Share {
            dirs,
            dht,
            index,
            listen,
            advertise,
            hidden,
            rescan,
            no_index,
            upload_slots,
            max_upload_rate,
        } => {
            let index = if no_index {
                None
            } else {
                index.resolve(dht.dht)
            };
            let mut config = ShareConfig::new(dirs, index, state);
            config.dht = dht.config(true);
            config.advertise = advertise.map(|a| parse_host_port(&a)).transpose()?;
            config.scan.include_hidden = hidden;
            config.scan.progress = std::io::stderr().is_terminal();
            config.rescan_interval = rescan;
            config.peer.upload_slots = upload_slots.max(1);
            config.peer.upload_rate = max_upload_rate.map(|r| Arc::new(RateLimiter::new(r)));
            run_share(config, listen).await
        }
        Command::Search {
            query,
            dht,
            index,
            limit,
            json,
        } => {
            let query = query.join(" ");
            if dht.dht {
                return super::dht::search(&query, index.resolve(true), &dht, limit, json).await;
            }
            let mut client = connect(&index.resolve(false).unwrap_or_default()).await?;
            let results = client.search(&query, limit).await?;
            output::search(&mut std::io::stdout().lock(), &query, &results, json)?;
            if results.files.is_empty() {
                bail!("no file matches {query:?}");
            }
            Ok(())
        }
        Command::Dht {
            command:
                super::DhtCommand::Node {
                    listen,
                    bootstrap,
                    no_bootstrap,
                },
        } => super::dht::run_node(listen, bootstrap, no_bootstrap).await,
        Command::Bench { command } => match command {
            super::BenchCommand::Populate {
                index,
                files,
                peers,
            } => {
                super::bench::populate(&index.resolve(false).unwrap_or_default(), files, peers)
                    .await
            }
            super::BenchCommand::Search {
                index,
                clients,
                duration,
                lookup,
                files,
                json,
            } => {
                let addr = index.resolve(false).unwrap_or_default();
                let r = super::bench::load(&addr, clients, duration, lookup, files).await?;
                let rps = r.requests as f64 / r.seconds;
                if json {
                    let doc = serde_json::json!({
                        "requests": r.requests, "errors": r.errors, "seconds": r.seconds,
                        "requests_per_sec": rps, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms,
                    });
                    println!("{doc:#}");
                } else {
                    println!(
                        "{} {} clients: {rps:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
                        if lookup { "lookup" } else { "search" },
                        clients,
                        r.p50_ms,
                        r.p99_ms,
                        r.errors
                    );
                }
                Ok(())
            }
        },
        Command::Peers { index, json } => {
            let mut client = connect(&index.resolve(false).unwrap_or_default()).await?;
            let list = client.list_peers().await?;
            output::peers(&mut std::io::stdout().lock(), &list, json)?;
            Ok(())
        }
        Command::Get {
            hashes,
            dht,
            index,
            output: dir,
            peer,
            max_peers,
            max_download_rate,
            parallel,
            no_share,
            listen,
            advertise,
            json,
        } => {
            let ids = hashes
                .iter()
                .map(|h| h.parse::<ContentId>())
                .collect::<Result<Vec<_>, _>>()?;
            let index = index.resolve(dht.dht);
            let mut client = match &index {
                Some(addr) if dht.dht => match connect(addr).await {
                    Ok(c) => Some(c),
                    Err(e) => {
                        eprintln!("peershare: index unavailable, using the DHT only: {e:#}");
                        None
                    }
                },
                Some(addr) => Some(connect(addr).await?),
                None => None,
            };
            let node = super::dht::get_client(&dht)?;
            let mut from_index = match client.as_mut() {
                Some(c) => match lookup_many(c, &ids).await {
                    Ok(found) => found.into_iter().map(Some).collect(),
                    Err(e) if node.is_some() => {
                        eprintln!("peershare: index lookup failed, using the DHT only: {e:#}");
                        Vec::new()
                    }
                    Err(e) => return Err(e),
                },
                None => Vec::new(),
            };
            from_index.resize_with(ids.len(), || None);
            let mut hits = Vec::new();
            for (id, found) in ids.into_iter().zip(from_index) {
                let from_index = match found {
                    Some(r) if node.is_some() => r.ok(),
                    Some(r) => Some(r?),
                    None => None,
                };
                let hit = match &node {
                    Some(n) => super::dht::add_dht_sources(n, id, from_index).await,
                    None => from_index.context("no index")?,
                };
                if hit.peers.is_empty() {
                    bail!("no live peer shares {id}");
                }
                hits.push(hit);
            }
            drop(client);
            let advertise = advertise.map(|a| parse_host_port(&a)).transpose()?;
            let sharing = match (&index, no_share) {
                (Some(addr), false) => Some(PartialSharing::start(addr, listen, advertise).await?),
                _ => None,
            };
            let opts = GetOptions {
                only_peer: peer,
                max_peers,
                rate: max_download_rate.map(|r| Arc::new(RateLimiter::new(r))),
                bars: (!json && std::io::stderr().is_terminal())
                    .then(indicatif::MultiProgress::new),
                partials: sharing.as_ref().map(|s| s.partials.clone()),
            };
            let results = download_all(&hits, &dir, &opts, parallel).await;
            if let Some(s) = sharing {
                s.stop().await;
            }
            let failed: Vec<String> = results
                .iter()
                .filter_map(|r| r.as_ref().err().map(|e| format!("{e:#}")))
                .collect();
            let reports: Vec<&DownloadReport> =
                results.iter().filter_map(|r| r.as_ref().ok()).collect();
            if json {
                let doc = output::GetJson {
                    downloads: reports
                        .iter()
                        .map(|r| output::DownloadJson::new(r))
                        .collect(),
                    failed: &failed,
                };
                // Written in one piece: stdout is line-buffered, so printing it directly would
                // cost a system call per line (tens per download).
                let mut text = serde_json::to_vec_pretty(&doc)?;
                text.push(b'\n');
                std::io::stdout().lock().write_all(&text)?;
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
                        eprintln!("peershare: {f}");
                    }
                    bail!("{n} of {} downloads failed", results.len())
                }
            }
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
}

/// Downloads every hit, at most `parallel` at once; results in the order of `hits`.
pub async fn download_all(
    hits: &[FileHit],
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
    let small = SmallFileFetcher::new(links, opts.rate.clone())
        .map(Arc::new)
        .map_err(|e| tracing::warn!("no batched writes for small files: {e}"))
        .ok();
    let mut tasks = tokio::task::JoinSet::new();
    for (n, hit) in hits.iter().enumerate() {
        let (hit, dir, opts, permits, small) = (
            hit.clone(),
            dir.to_path_buf(),
            opts.clone(),
            permits.clone(),
            small.clone(),
        );
        tasks.spawn(async move {
            let sources = sources_of(&hit, &opts);
            if let Some(small) = small.filter(|_| SmallFileFetcher::fits(hit.size))
                && !sources.is_empty()
            {
                // Spread files over their sources.
                let (source, started) = (&sources[n % sources.len()], Instant::now());
                let id = hit.content_id;
                let name = match hit.name.as_str() {
                    "" => id.to_hex(),
                    name => name.to_string(),
                };
                let r = match small.receive(id, source, &dir).await {
                    Ok(data) => small.store(id, source, &dir, &name, data, started).await,
                    Err(e) => Err(e),
                };
                match r {
                    Ok(r) => return (n, Ok(r)),
                    Err(e) if !e.worth_retrying() => return (n, Err(e.into())),
                    Err(e) => tracing::debug!(
                        "{id}: one-request fetch failed ({e}); using the full downloader"
                    ),
                }
            }
            let _permit = permits.acquire_owned().await;
            (n, download_hit(&hit, &dir, &opts).await)
        });
    }
    let mut results: Vec<Option<anyhow::Result<DownloadReport>>> =
        (0..hits.len()).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        if let Ok((n, r)) = joined {
            results[n] = Some(r);
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(anyhow::anyhow!("download task failed"))))
        .collect()
}

pub async fn connect(addr: &str) -> anyhow::Result<IndexClient> {
    Ok(IndexClient::connect(addr, Limits::default()).await?)
}

fn parse_host_port(s: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = s
        .rsplit_once(':')
        .with_context(|| format!("{s:?} is not HOST:PORT"))?;
    let port: u16 = port.parse().with_context(|| format!("bad port in {s:?}"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 {
        bail!("{s:?} is not HOST:PORT");
    }
    Ok((host.to_string(), port))
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
        .map(|(r, &id)| hit_for(r, id))
        .collect())
}

/// The index's entry for `id` in a reply, with the live peers that have it.
fn hit_for(r: SearchResults, id: ContentId) -> anyhow::Result<FileHit> {
    match r.files.into_iter().find(|f| f.content_id == id) {
        Some(hit) if !hit.peers.is_empty() => Ok(hit),
        _ => bail!("no live peer shares {id}"),
    }
}

/// The peers of a search hit to download from (only `opts.only_peer`, if set).
fn sources_of(hit: &FileHit, opts: &GetOptions) -> Vec<Source> {
    hit.peers
        .iter()
        .filter(|p| opts.only_peer.is_none_or(|id| id == p.peer_id))
        .map(|p| Source {
            peer_id: (p.peer_id != 0).then_some(p.peer_id),
            addr: if p.host.contains(':') {
                format!("[{}]:{}", p.host, p.port)
            } else {
                format!("{}:{}", p.host, p.port)
            },
        })
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
            bar.set_message(format!("{} sources", p.sources));
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

pub async fn run_index(
    listen: std::net::SocketAddr,
    db: &Path,
    config: IndexConfig,
) -> anyhow::Result<()> {
    let store = tokio::task::spawn_blocking({
        let db = db.to_path_buf();
        move || IndexStore::open(&db)
    })
    .await??;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let lease = config.lease;
    println!(
        "peershare index listening on {addr} (store {}, lease {})",
        db.display(),
        humantime::format_duration(lease)
    );
    std::io::stdout().flush()?;
    IndexServer::new(store, config)
        .run(listener, interrupt_token())
        .await;
    println!("peershare index stopped");
    Ok(())
}

pub async fn run_share(config: ShareConfig, listen: std::net::SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let index = config.index.clone();
    let mut handle = start_share(config, listener).await?;
    let status = handle.status.borrow().clone();
    println!(
        "peershare share listening on {} ({} files)",
        handle.local_addr, status.files_shared
    );
    if let Some(a) = handle.dht_addr {
        println!("DHT node on udp {a}");
    }
    std::io::stdout().flush()?;
    let stop = interrupt_token();
    let mut last = status;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            r = handle.status.changed() => {
                if r.is_err() { break; }
                let s = handle.status.borrow_and_update().clone();
                if let (Some(addr), Some(id), Some(files), true) = (&index, s.peer_id, s.files_registered, s.in_sync)
                    && (last.peer_id != s.peer_id || last.files_registered != s.files_registered || !last.in_sync)
                {
                    println!("registered with index {addr} as peer {id}: {files} files");
                    std::io::stdout().flush()?;
                }
                if let Some(n) = s.dht_announced && last.dht_announced != s.dht_announced {
                    println!("published on the DHT: {n} of {} keys ({} files)", s.dht_keys, s.files_shared);
                    std::io::stdout().flush()?;
                }
                if let Some(e) = &s.last_error && last.last_error.as_ref() != Some(e) {
                    eprintln!("peershare: index unreachable, retrying: {e}");
                }
                last = s;
            }
        }
    }
    handle.shutdown().await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    println!("peershare share stopped");
    Ok(())
}
