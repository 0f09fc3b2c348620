//! `peershare get`: arguments, progress bars and the report over the library's download pipeline ([`peershare::node`]).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tokio::sync::mpsc;

use super::{DhtArgs, IndexAddr, connect, output, parse_host_port};
use peershare::content::ContentId;
use peershare::download::DownloadReport;
use peershare::group::{LINK_PREFIX, ShareLink};
use peershare::node::{
    EventSink, FolderSpec, GetError, GetEvent, GetOptions, HaveAlready, LOOKUP_BATCH, Lookup,
};
use peershare::peer::PartialSharing;
use peershare::rate::RateLimiter;

/// What `peershare get` was asked.
#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// Content ids (64 hex characters, as `search` and `b3sum` print them), share links
    /// (`peershare link`; quote them; a link's index is used unless --index is given, and a
    /// link's invite is used to join first), or PEER_ID:PATH for a peer's file or whole
    /// directory (as `browse` lists it), recreated under --output from every source of each file
    #[arg(
        required_unless_present = "query",
        value_name = "HASH|LINK|PEER_ID:PATH"
    )]
    pub hashes: Vec<String>,
    /// Download every file matching these words (as `search` reads them; with the filters
    /// below), paging through all the index's results
    #[arg(long, num_args = 1.., value_name = "WORDS")]
    pub query: Vec<String>,
    #[command(flatten)]
    pub filters: super::filters::FilterArgs,
    /// With --query: refuse (and download nothing) when more files than this match
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub max_files: usize,
    /// With --query: save every file directly in --output under its name, instead of at the
    /// path (directories and name) a source keeps it under
    #[arg(long, requires = "query")]
    pub flat: bool,
    #[command(flatten)]
    pub dht: DhtArgs,
    #[command(flatten)]
    pub lan: super::lan::LanArgs,
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
    #[arg(long, value_parser = peershare::rate::parse_rate, value_name = "RATE")]
    pub max_download_rate: Option<u64>,
    /// Most files downloaded at once (files of at most 256 KiB are not counted: they go
    /// as pipelined requests over at most 2 connections per source)
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub parallel: usize,
    /// Do not serve the verified pieces of the downloads in progress to other peers
    #[arg(long)]
    pub no_share: bool,
    /// Never hole-punch (QUIC over UDP through the index) to a source that cannot be reached
    /// over TCP: go through the index's relay at once
    #[arg(long)]
    pub no_punch: bool,
    /// Address to serve the downloads in progress on (port 0: any free port)
    #[arg(long, default_value = "[::]:0")]
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
    /// With a node running for this state directory: follow the items added to its queue
    /// until they end (without: add them and return)
    #[arg(long)]
    pub wait: bool,
    /// Also look in this directory (recursively; repeatable) for files already downloaded:
    /// a file whose content id is already in --output or here is not downloaded again, and
    /// where it is is printed. Only files of the wanted size are hashed, once (cached in the
    /// state directory); symbolic links are not followed
    #[arg(long, value_name = "DIR")]
    pub look_in: Vec<PathBuf>,
    /// Download files even when they are already in --output or a --look-in directory
    #[arg(long)]
    pub redownload: bool,
}

/// Runs `peershare get`: every id is looked up and downloaded; downloads start while later
/// ids are still being looked up. Exits non-zero if any failed.
pub async fn run_get(mut a: GetArgs) -> anyhow::Result<()> {
    for dir in &a.look_in {
        if !dir.is_dir() {
            bail!("--look-in {} is not a directory", dir.display());
        }
    }
    let mut ids = Vec::new();
    let (mut link_index, mut link_invite) = (None, None);
    let mut folders = Vec::new();
    for h in &a.hashes {
        if let Some(spec) = FolderSpec::parse(h) {
            folders.push(spec);
        } else if h.starts_with(LINK_PREFIX) {
            let link: ShareLink = h.parse()?;
            ids.push(link.content_id);
            link_index = link_index.or(link.index);
            link_invite = link_invite.or(link.invite);
        } else {
            ids.push(h.parse::<ContentId>()?);
        }
    }
    // A link with an invite: join its group first (once; a member already is one).
    if let Some(invite) = link_invite
        && super::client_context()?.member.is_none()
    {
        super::group::join(&invite.to_string()).await?;
    }
    if a.index.addr.is_none() {
        a.index.addr = link_index;
    }
    // An id given twice is downloaded once.
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(*id));
    // (`seen` goes on with the ids of `--query`.)
    peershare::protocol::raise_open_file_limit();
    let serverless = a.dht.dht || a.lan.lan;
    let index = a.index.resolve(serverless);
    let client = match &index {
        Some(addr) if serverless => match connect(addr).await {
            Ok(c) => Some(c),
            Err(e) => {
                let e = super::errors::error_line(&e);
                let only = if a.dht.dht { "the DHT" } else { "the LAN" };
                eprintln!(
                    "peershare: index unavailable, using {only} only: {}",
                    peershare::text::Escaped(&e)
                );
                None
            }
        },
        Some(addr) => Some(connect(addr).await?),
        None => None,
    };
    let mut client = client;
    // `get --query` keeps the paths of what it found (unless --flat).
    let mut tree = Vec::new();
    if !a.query.is_empty() {
        let Some(c) = client.as_mut() else {
            bail!("get --query searches an index: give --index (or leave out --dht)");
        };
        let files = super::get_query::matching(c, &a.filters, &a.query, a.max_files).await?;
        if a.flat {
            ids.extend(files.iter().map(|f| f.content_id));
        } else {
            tree = files;
        }
        ids.retain(|id| seen.insert(*id));
    }
    let node = super::dht::get_client(&a.dht)?;
    let advertise = a.advertise.map(|s| parse_host_port(&s)).transpose()?;
    // Downloads in progress are served under a throw-away key, which is no member of a
    // private group: a member does not serve them.
    let member = super::client_context()?.tls.group().is_some();
    let sharing = match (&index, a.no_share || member) {
        (Some(spec), false) => {
            let (addr, _) = peershare::identity::split_address(spec)?;
            let key = client.as_ref().map(|c| c.server_key());
            Some(PartialSharing::start(addr, key, a.listen, advertise).await?)
        }
        _ => None,
    };
    let bars = (!a.json && std::io::stderr().is_terminal()).then(MultiProgress::new);
    let count = ids.len();
    let overall = Arc::new(Mutex::new(Overall::new(count)));
    if let (Some(m), true) = (&bars, count > 1) {
        lock(&overall).bar = Some(m.add(overall_bar()));
    }
    let have_already = (!a.redownload)
        .then(|| {
            anyhow::Ok(Arc::new(HaveAlready::new(
                std::mem::take(&mut a.look_in),
                Some(&super::client_context()?.state),
            )))
        })
        .transpose()?;
    let opts = GetOptions {
        only_peer: a.peer,
        max_peers: a.max_peers,
        rate: a.max_download_rate.map(|r| Arc::new(RateLimiter::new(r))),
        partials: sharing.as_ref().map(|s| s.partials.clone()),
        stall_timeout: Some(a.stall_timeout),
        max_queue_wait: Some(a.max_queue_wait),
        events: Some(events(bars.clone(), overall.clone())),
        tls: Some(super::client_context()?.tls.clone()),
        have_already,
        udp: match a.no_punch {
            true => None,
            false => udp_route(index.as_deref(), client.as_ref().map(|c| c.server_key())),
        },
        // Peers the index cannot reach are reached through it (§7.10).
        relay: match (&index, client.as_ref()) {
            (Some(spec), Some(c)) => Some(peershare::download::RelayRoute {
                index: peershare::identity::split_address(spec)?.0.to_string(),
                index_key: Some(c.server_key()),
            }),
            _ => None,
        },
    };
    let mut results = Vec::new();
    for spec in &folders {
        let Some(c) = client.as_mut() else {
            bail!(
                "{}:{} needs an index (browsing is the index's)",
                spec.peer,
                spec.path
            );
        };
        let got = peershare::node::get_folder(c, spec, &a.output, &opts, a.parallel).await?;
        results.extend(got.into_iter().map(|o| o.result));
    }
    if !tree.is_empty() {
        let Some(c) = client.as_mut() else {
            bail!("get --query searches an index: give --index (or leave out --dht)");
        };
        let got = peershare::node::get_tree(c, tree, &a.output, &opts, a.parallel).await?;
        results.extend(got.into_iter().map(|o| o.result));
    }
    let (tx, rx) = mpsc::channel(LOOKUP_BATCH * 4);
    let lookup = Lookup {
        index: match &index {
            Some(spec) => Some(peershare::identity::split_address(spec)?.0.to_string()),
            None => None,
        },
        client,
        dht: node,
        lan: super::lan::peers(&a.lan, &super::client_context()?.tls).await?,
    };
    let resolver = tokio::spawn({
        let opts = opts.clone();
        async move { lookup.run(ids, &opts, tx).await }
    });
    // Not on a terminal (a log, a pipe): the overall progress as a line every few seconds.
    let ticker = (!std::io::stderr().is_terminal()).then(|| {
        let overall = overall.clone();
        tokio::spawn(async move {
            let every = progress_interval();
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tick.tick().await;
                let line = lock(&overall).line();
                eprintln!("peershare: {line}");
            }
        })
    });
    results.extend(peershare::node::download_stream(rx, count, &a.output, &opts, a.parallel).await);
    if let Some(t) = ticker {
        t.abort();
    }
    if let Some(bar) = lock(&overall).bar.take() {
        bar.finish_and_clear();
    }
    let _ = resolver.await;
    if let Some(s) = sharing {
        s.stop().await;
    }
    report(&results, a.json)
}

/// Prints what was downloaded (paths, or the `--json` document) and turns failures into the
/// exit status: one failed download is its error, several are counted.
fn report(results: &[Result<DownloadReport, GetError>], json: bool) -> anyhow::Result<()> {
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| peershare::text::error_chain(e)))
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
        let mut text = peershare::text::json_safe(&text).into_owned();
        text.push('\n');
        std::io::stdout().lock().write_all(text.as_bytes())?;
    } else {
        // stdout: where each file is, one path a line (for scripts); stderr says which were
        // there already.
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for r in &reports {
            writeln!(out, "{}", r.path.display())?;
        }
        out.flush()?;
        print_reached(&reports);
        let mut already = 0;
        for r in reports.iter().filter(|r| r.already_had) {
            already += 1;
            eprintln!(
                "peershare: already have {} at {}",
                r.content_id,
                peershare::text::Escaped(&r.path.display().to_string())
            );
        }
        match already {
            0 => {}
            1 => eprintln!("peershare: not downloaded again (--redownload fetches a copy)"),
            n => {
                eprintln!("peershare: {n} files not downloaded again (--redownload fetches copies)")
            }
        }
    }
    match failed.len() {
        0 => Ok(()),
        1 if results.len() == 1 => bail!("{}", failed[0]),
        n => {
            for f in &failed {
                eprintln!("peershare: {}", peershare::text::Escaped(f));
            }
            bail!("{n} of {} downloads failed", results.len())
        }
    }
}

/// Progress bars (when stderr is a terminal) and warnings, from the pipeline's events; the
/// overall progress is kept in `overall`.
fn events(bars: Option<MultiProgress>, overall: Arc<Mutex<Overall>>) -> EventSink {
    let shown: Mutex<HashMap<usize, ProgressBar>> = Mutex::default();
    Arc::new(move |event| match event {
        GetEvent::IndexLost { reason } => eprintln!(
            "peershare: index lookup failed, using the DHT only: {}",
            peershare::text::Escaped(reason)
        ),
        GetEvent::Found { n, hit } => lock(&overall).found(n, hit.size),
        GetEvent::Done { n, result } => lock(&overall).done(n, result),
        GetEvent::Started { n, hit } => {
            if let Some(m) = &bars {
                let bar = m.add(ProgressBar::new(hit.size));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix} {bar:25} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.set_prefix(peershare::download::sanitize_file_name(&hit.name));
                lock(&shown).insert(n, bar);
            }
        }
        GetEvent::Progress { n, progress: p } => {
            lock(&overall).progress(n, p.done);
            if let Some(bar) = lock(&shown).get(&n) {
                bar.set_length(p.total);
                bar.set_position(p.done);
                bar.set_message(match p.queued {
                    Some(0) => format!("{} sources, waiting for an upload slot", p.sources),
                    Some(n) => format!("{} sources, number {n} in a queue", p.sources),
                    None => format!("{} sources", p.sources),
                });
            }
        }
        GetEvent::Finished { n } => {
            if let Some(bar) = lock(&shown).remove(&n) {
                bar.finish_and_clear();
            }
        }
        _ => {}
    })
}

/// Default of how often progress is told when stderr is not a terminal (a log, a pipe).
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// How often progress is told when stderr is not a terminal: `PEERSHARE_PROGRESS_INTERVAL`
/// (e.g. `500ms`, `10s`), else [`PROGRESS_INTERVAL`]; at least 1 ms.
pub fn progress_interval() -> Duration {
    std::env::var("PEERSHARE_PROGRESS_INTERVAL")
        .ok()
        .and_then(|v| humantime::parse_duration(&v).ok())
        .unwrap_or(PROGRESS_INTERVAL)
        .max(Duration::from_millis(1))
}

/// The overall progress of a `get`: files done of all asked for, and bytes to download (files
/// found already on disk are left out, so the rate and ETA are of the downloading).
struct Overall {
    files: usize,
    done: usize,
    already: usize,
    failed: usize,
    /// Bytes of the files looked up so far, less those found on disk or failed.
    bytes_total: u64,
    /// Bytes of the files downloaded.
    bytes_done: u64,
    /// Size of each file looked up and not done yet, and its verified bytes.
    running: HashMap<usize, (u64, u64)>,
    started: Instant,
    /// The bar above the per-file bars, on a terminal.
    bar: Option<ProgressBar>,
}

impl Overall {
    fn new(files: usize) -> Self {
        Overall {
            files,
            done: 0,
            already: 0,
            failed: 0,
            bytes_total: 0,
            bytes_done: 0,
            running: HashMap::new(),
            started: Instant::now(),
            bar: None,
        }
    }

    fn found(&mut self, n: usize, size: u64) {
        self.running.insert(n, (size, 0));
        self.bytes_total += size;
        self.show();
    }

    fn progress(&mut self, n: usize, done: u64) {
        if let Some((size, d)) = self.running.get_mut(&n) {
            *d = done.min(*size);
        }
        self.show();
    }

    fn done(&mut self, n: usize, result: &Result<DownloadReport, GetError>) {
        let size = self.running.remove(&n).map_or(0, |(size, _)| size);
        self.done += 1;
        match result {
            Ok(r) if r.already_had => {
                self.already += 1;
                self.bytes_total = self.bytes_total.saturating_sub(size);
            }
            Ok(_) => self.bytes_done += size,
            Err(_) => {
                self.failed += 1;
                self.bytes_total = self.bytes_total.saturating_sub(size);
            }
        }
        self.show();
    }

    /// Bytes verified: of the files downloaded, and so far of those downloading.
    fn bytes(&self) -> u64 {
        self.bytes_done + self.running.values().map(|(_, d)| d).sum::<u64>()
    }

    /// Files done out of all, what of them was already here or failed.
    fn files_text(&self) -> String {
        let mut t = format!("{} of {} files", self.done, self.files);
        if self.already > 0 {
            t.push_str(&format!(", {} already here", self.already));
        }
        if self.failed > 0 {
            t.push_str(&format!(", {} failed", self.failed));
        }
        t
    }

    /// The line told when stderr is not a terminal.
    fn line(&self) -> String {
        let (bytes, secs) = (self.bytes(), self.started.elapsed().as_secs_f64());
        let rate = if secs > 0.0 { bytes as f64 / secs } else { 0.0 };
        let left = self.bytes_total.saturating_sub(bytes);
        let eta = match (left, rate > 0.0) {
            (0, _) => "0s".to_string(),
            (_, true) => {
                humantime::format_duration(Duration::from_secs((left as f64 / rate).ceil() as u64))
                    .to_string()
            }
            (_, false) => "unknown".to_string(),
        };
        format!(
            "{}, {} of {}, {}/s, eta {eta}",
            self.files_text(),
            output::size(bytes),
            output::size(self.bytes_total),
            output::size(rate as u64),
        )
    }

    /// Updates the bar, if any.
    fn show(&self) {
        if let Some(bar) = &self.bar {
            bar.set_length(self.bytes_total);
            bar.set_position(self.bytes());
            bar.set_message(self.files_text());
        }
    }
}

/// The bar of the overall progress of a multi-file `get`, above the per-file bars.
fn overall_bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "total {bar:25} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The UDP socket a download reaches sources through when TCP cannot (hole punching through
/// the index, docs/PROTOCOL.md §7.11); none without an index, or when no socket can be bound.
fn udp_route(
    index: Option<&str>,
    key: Option<peershare::content::Digest>,
) -> Option<Arc<peershare::download::udp::UdpRoute>> {
    peershare::download::udp::UdpRoute::for_index(index?, key)
}

/// Files whose sources are listed one line each on stderr at most; `--json` lists them all.
const MAX_REACHED_LINES: usize = 20;

/// Says on stderr, per file downloaded, how each source that sent something was reached
/// (direct, punched §7.11, or relayed §7.10, and through which relay) and how much it sent.
fn print_reached(reports: &[&DownloadReport]) {
    let fetched: Vec<&&DownloadReport> = reports
        .iter()
        .filter(|r| !r.already_had && r.sources.iter().any(|s| s.bytes > 0))
        .collect();
    for r in fetched.iter().take(MAX_REACHED_LINES) {
        let name = r
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let sources: Vec<String> = r
            .sources
            .iter()
            .filter(|s| s.bytes > 0)
            .map(|s| {
                let who = match (s.peer_id, s.addr.as_str()) {
                    (Some(id), _) => format!("peer {id}"),
                    (None, addr) => addr.to_string(),
                };
                match (s.reached, &s.relay) {
                    (Some(how), Some(relay)) => {
                        format!("{who} ({how} via {relay}, {})", output::size(s.bytes))
                    }
                    (Some(how), None) => format!("{who} ({how}, {})", output::size(s.bytes)),
                    (None, _) => format!("{who} ({})", output::size(s.bytes)),
                }
            })
            .collect();
        eprintln!(
            "peershare: {}: from {}",
            peershare::text::Escaped(&name),
            peershare::text::Escaped(&sources.join(", "))
        );
    }
    if fetched.len() > MAX_REACHED_LINES {
        eprintln!(
            "peershare: and {} more files (--json says how each source was reached)",
            fetched.len() - MAX_REACHED_LINES
        );
    }
}
