//! Wishlists: searches saved in the state directory and repeated now and then (by a running
//! share, or `wish run`), each new match downloaded once into the wish's directory.
//!
//! The list is one JSON file ([`WISHES_FILE`]), rewritten whole (temporary file, fsync,
//! rename) under an exclusive lock beside it, so that `wish add` while a share runs loses
//! nothing. Each wish keeps the content ids it already fetched, in a file of its own under
//! [`FETCHED_DIR`] (32 bytes per id, appended and synced after each batch of downloads): a
//! file downloaded once is never downloaded for that wish again, even after the user deleted
//! it. The JSON list stays small however much was fetched.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{GetError, GetOptions, KnownIndexes, ShareStatus, download_all};
use crate::content::{ContentId, Digest};
use crate::download::DownloadReport;
use crate::identity::Fingerprint;
use crate::index::{IndexClient, IndexClientError};
use crate::protocol::{FileHit, MAX_QUERY_LEN, MAX_SEARCH_LIMIT, ProtocolError, Search};
use crate::query::{Filters, Query};
use crate::tls::Tls;

/// The wish list's file in the state directory.
pub const WISHES_FILE: &str = "wishes.json";
/// The directory, in the state directory, of the content ids each wish fetched: one file per
/// wish, named by its number, of 32-byte ids, oldest first.
pub const FETCHED_DIR: &str = "wishes-fetched";
/// Most wishes in one list (each round searches once per wish).
pub const MAX_WISHES: usize = 256;
/// Most matches of one wish looked at per round, best first (the rest wait until these are
/// fetched or the query is narrowed).
pub const MAX_WISH_MATCHES: usize = 1000;
/// Most new files downloaded for one wish per round, by default (the rest come next round).
pub const MAX_WISH_NEW: usize = 100;
/// Most content ids remembered as fetched per wish; past it the oldest are forgotten.
pub const MAX_FETCHED_IDS: usize = 100_000;
/// How often a share repeats the wishes, by default.
pub const WISH_INTERVAL: Duration = Duration::from_secs(15 * 60);
/// Longest wait of a share's first round for its registration with the index (at most the
/// interval between rounds).
pub const WISH_FIRST_WAIT: Duration = Duration::from_secs(30);
/// Files downloaded per pipeline call: the successes of each batch are recorded before the
/// next one starts, so a crash loses the record of at most this many files.
pub const WISH_BATCH: usize = 16;
/// The largest wish file read ([`MAX_WISHES`] wishes of long queries fit in a few hundred KiB).
pub const MAX_WISHES_FILE: u64 = 16 * 1024 * 1024;

/// Why the wish list could not be read, changed or run.
#[derive(Debug, thiserror::Error)]
pub enum WishError {
    /// The file cannot be read or written.
    #[error("{}: {source}", file.display())]
    Io {
        /// The wish file.
        file: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The file is not a wish list.
    #[error("{} is not a wish list ({source}); fix or remove it", file.display())]
    Corrupt {
        /// The wish file.
        file: PathBuf,
        /// Where it stops making sense.
        source: serde_json::Error,
    },
    /// No wish has this number.
    #[error("no wish {0}")]
    NoSuchWish(u32),
    /// The same wish (query, filters, directory) is in the list already.
    #[error("wish {0} looks for that already")]
    Duplicate(u32),
    /// The list is full.
    #[error("the wish list holds {MAX_WISHES} wishes already, the most it may")]
    Full,
    /// The query or the filters cannot be searched for.
    #[error("{0}")]
    BadWish(String),
    /// Another process is running a round now.
    #[error(
        "the wishes are being run already (by `peershare share` or another `wish run`); \
         try again when that round ends"
    )]
    Busy,
    /// The index could not be asked.
    #[error(transparent)]
    Index(#[from] IndexClientError),
}

/// How `Filters` are written in the wish file.
#[derive(Serialize, Deserialize)]
#[serde(remote = "Filters")]
struct FiltersDef {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    exts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    newer: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    older: Option<i64>,
}

/// One saved search.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Wish {
    /// Its number in the list (never reused).
    pub id: u32,
    /// The query, as `search` reads it (words, `-word`, `"phrases"`, or a content id).
    pub query: String,
    /// The filters beside the words.
    #[serde(with = "FiltersDef", default)]
    pub filters: Filters,
    /// Where its files are downloaded (absolute).
    pub dir: PathBuf,
    /// When it was added, seconds since the Unix epoch.
    pub created: i64,
    /// When a round last searched for it, seconds since the Unix epoch.
    #[serde(default)]
    pub last_run: Option<i64>,
    /// What that round did, in a few words.
    #[serde(default)]
    pub last_outcome: Option<String>,
    /// Files downloaded for it in all (the ids themselves: [`WishList::fetched`]).
    #[serde(default)]
    pub fetched_total: u64,
}

/// The wish file's contents.
#[derive(Debug, Default, Serialize, Deserialize)]
struct WishFile {
    /// The number the next wish gets.
    #[serde(default)]
    next_id: u32,
    #[serde(default)]
    wishes: Vec<Wish>,
}

/// The wish list of one state directory.
#[derive(Debug, Clone)]
pub struct WishList {
    file: PathBuf,
}

fn now_secs() -> i64 {
    crate::query::now_ms() / 1000
}

impl WishList {
    /// The list kept in `state_dir`.
    pub fn new(state_dir: &Path) -> WishList {
        WishList {
            file: state_dir.join(WISHES_FILE),
        }
    }

    /// The file it is kept in.
    pub fn file(&self) -> &Path {
        &self.file
    }

    fn io(&self, source: std::io::Error) -> WishError {
        WishError::Io {
            file: self.file.clone(),
            source,
        }
    }

    fn read(&self) -> Result<WishFile, WishError> {
        use std::io::Read;
        let f = match std::fs::File::open(&self.file) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(WishFile {
                    next_id: 1,
                    wishes: Vec::new(),
                });
            }
            Err(e) => return Err(self.io(e)),
        };
        let mut bytes = Vec::new();
        f.take(MAX_WISHES_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| self.io(e))?;
        if bytes.len() as u64 > MAX_WISHES_FILE {
            return Err(self.io(std::io::Error::other(format!(
                "larger than {MAX_WISHES_FILE} bytes"
            ))));
        }
        let list: WishFile =
            serde_json::from_slice(&bytes).map_err(|source| WishError::Corrupt {
                file: self.file.clone(),
                source,
            })?;
        Ok(list)
    }

    /// The wishes, in the order they were added.
    pub fn load(&self) -> Result<Vec<Wish>, WishError> {
        Ok(self.read()?.wishes)
    }

    /// Reads the list, changes it and writes it back, all under the lock.
    fn update<R>(
        &self,
        change: impl FnOnce(&mut WishFile) -> Result<R, WishError>,
    ) -> Result<R, WishError> {
        let _lock = super::trust::lock_beside(&self.file).map_err(|e| self.io(e))?;
        let mut list = self.read()?;
        let r = change(&mut list)?;
        let mut bytes = serde_json::to_vec_pretty(&list).map_err(|e| self.io(e.into()))?;
        bytes.push(b'\n');
        replace_durably(&self.file, &bytes).map_err(|e| self.io(e))?;
        Ok(r)
    }

    /// Adds a wish: `query` with `filters`, downloaded into `dir` (made absolute against the
    /// current directory).
    pub fn add(&self, query: &str, filters: Filters, dir: &Path) -> Result<Wish, WishError> {
        let query = query.trim().to_string();
        check_wish(&query, &filters)?;
        let dir = std::path::absolute(dir).map_err(|e| {
            WishError::BadWish(format!("cannot make {} absolute: {e}", dir.display()))
        })?;
        if dir.to_str().is_none() {
            return Err(WishError::BadWish(format!(
                "{} is not UTF-8; choose another directory",
                dir.display()
            )));
        }
        if dir.exists() && !dir.is_dir() {
            return Err(WishError::BadWish(format!(
                "{} is a file, not a directory",
                dir.display()
            )));
        }
        self.update(|list| {
            if let Some(same) = list
                .wishes
                .iter()
                .find(|w| w.query == query && w.filters == filters && w.dir == dir)
            {
                return Err(WishError::Duplicate(same.id));
            }
            if list.wishes.len() >= MAX_WISHES {
                return Err(WishError::Full);
            }
            let id = list
                .next_id
                .max(list.wishes.iter().map(|w| w.id + 1).max().unwrap_or(1));
            list.next_id = id + 1;
            let wish = Wish {
                id,
                query,
                filters,
                dir,
                created: now_secs(),
                last_run: None,
                last_outcome: None,
                fetched_total: 0,
            };
            // A number is never reused, unless the list was deleted by hand: then the ids
            // fetched for an old wish of that number are not this one's.
            match std::fs::remove_file(self.fetched_file(id)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(self.io(e)),
                _ => {}
            }
            list.wishes.push(wish.clone());
            Ok(wish)
        })
    }

    /// Removes wish `id`; returns it.
    pub fn remove(&self, id: u32) -> Result<Wish, WishError> {
        self.update(|list| {
            let at = list
                .wishes
                .iter()
                .position(|w| w.id == id)
                .ok_or(WishError::NoSuchWish(id))?;
            let wish = list.wishes.remove(at);
            match std::fs::remove_file(self.fetched_file(id)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(self.io(e)),
                _ => Ok(wish),
            }
        })
    }

    fn fetched_file(&self, id: u32) -> PathBuf {
        self.file
            .parent()
            .unwrap_or(Path::new("."))
            .join(FETCHED_DIR)
            .join(id.to_string())
    }

    /// The content ids fetched for wish `id`, oldest first (at most [`MAX_FETCHED_IDS`]).
    pub fn fetched(&self, id: u32) -> Result<Vec<ContentId>, WishError> {
        use std::io::Read;
        let file = self.fetched_file(id);
        let io = |source| WishError::Io {
            file: file.clone(),
            source,
        };
        let f = match std::fs::File::open(&file) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(e)),
        };
        let mut bytes = Vec::new();
        // It never holds more than the bound; anything past twice that is not read.
        f.take(2 * 32 * MAX_FETCHED_IDS as u64)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        let ids: Vec<ContentId> = bytes
            .chunks_exact(32)
            .map(|c| {
                let mut b = [0u8; 32];
                b.copy_from_slice(c);
                ContentId::from_bytes(b)
            })
            .collect();
        let over = ids.len().saturating_sub(MAX_FETCHED_IDS);
        Ok(ids[over..].to_vec())
    }

    /// Records files downloaded for wish `id`, synced to disk (nothing if it was removed
    /// meanwhile); past [`MAX_FETCHED_IDS`], the oldest ids are forgotten.
    pub fn record_fetched(&self, id: u32, ids: &[ContentId]) -> Result<(), WishError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.update(|list| {
            let Some(w) = list.wishes.iter_mut().find(|w| w.id == id) else {
                return Ok(());
            };
            let mut known: HashSet<ContentId> = self.fetched(id)?.into_iter().collect();
            let new: Vec<ContentId> = ids.iter().copied().filter(|i| known.insert(*i)).collect();
            w.fetched_total += new.len() as u64;
            self.append_fetched(id, &new)
        })
    }

    /// Appends ids to a wish's fetched file (first cutting a record half-written by a crash),
    /// or rewrites it with the newest [`MAX_FETCHED_IDS`] when it would hold more.
    fn append_fetched(&self, id: u32, new: &[ContentId]) -> Result<(), WishError> {
        let file = self.fetched_file(id);
        let io = |source| WishError::Io {
            file: file.clone(),
            source,
        };
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .append(true)
            .open(&file)
            .map_err(io)?;
        let len = f.metadata().map_err(io)?.len();
        let held = (len / 32) as usize;
        if held + new.len() > MAX_FETCHED_IDS {
            let mut all = self.fetched(id)?;
            all.extend_from_slice(new);
            let keep = &all[all.len().saturating_sub(MAX_FETCHED_IDS)..];
            let bytes: Vec<u8> = keep.iter().flat_map(|i| *i.as_bytes()).collect();
            return replace_durably(&file, &bytes).map_err(io);
        }
        if len % 32 != 0 {
            f.set_len(len - len % 32).map_err(io)?;
        }
        let bytes: Vec<u8> = new.iter().flat_map(|i| *i.as_bytes()).collect();
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)
    }

    /// Records when wish `id` was last run and what came of it.
    pub fn record_run(&self, id: u32, at: i64, outcome: &str) -> Result<(), WishError> {
        self.update(|list| {
            if let Some(w) = list.wishes.iter_mut().find(|w| w.id == id) {
                w.last_run = Some(at);
                w.last_outcome = Some(outcome.to_string());
            }
            Ok(())
        })
    }

    /// An exclusive hold on running the wishes, or [`WishError::Busy`] if another process
    /// runs them now.
    fn hold_round(&self) -> Result<std::fs::File, WishError> {
        use std::os::fd::AsRawFd;
        let path = self.file.with_extension("running");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| self.io(e))?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| self.io(e))?;
        // SAFETY: flock on a descriptor this function owns; no memory is passed.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(match e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                true => WishError::Busy,
                false => self.io(e),
            });
        }
        Ok(f)
    }
}

/// Whether a query and filters can be a wish: something to look for, within the index's limits.
pub fn check_wish(query: &str, filters: &Filters) -> Result<(), WishError> {
    if query.len() > MAX_QUERY_LEN {
        return Err(WishError::BadWish(format!(
            "the query is {} bytes long; at most {MAX_QUERY_LEN}",
            query.len()
        )));
    }
    if let Query::Words { words, .. } = Query::<ContentId>::parse(query)
        && words.is_empty()
    {
        return Err(WishError::BadWish(
            "a wish needs at least one word to look for (or a content id)".into(),
        ));
    }
    filters
        .check()
        .map_err(|e| WishError::BadWish(format!("bad filters: {e}")))
}

/// Writes `bytes` to a new file beside `file`, flushed to disk, and renames it over `file`
/// (then flushes the directory), so that the list is the old one or the new one, whole, even
/// after a crash.
fn replace_durably(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = file.with_extension(format!("{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, file)
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Some(dir) = file.parent() {
        // The rename is durable once the directory is; a failure here loses nothing yet.
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// How a round runs.
#[derive(Clone)]
pub struct WishOptions {
    /// How files are downloaded (the pipeline's own limits by default).
    pub get: GetOptions,
    /// Most full downloads at once.
    pub parallel: usize,
    /// Most new files per wish per round (default [`MAX_WISH_NEW`]).
    pub max_new: usize,
    /// This user's key: its own share is no source, and a file only it shares is skipped.
    pub own_key: Option<Digest>,
}

impl Default for WishOptions {
    fn default() -> Self {
        WishOptions {
            get: GetOptions::default(),
            parallel: 3,
            max_new: MAX_WISH_NEW,
            own_key: None,
        }
    }
}

/// What a round tells while it runs.
#[derive(Debug)]
pub enum WishEvent<'a> {
    /// A wish was searched for.
    Searched {
        /// The wish.
        wish: &'a Wish,
        /// Matches looked at (at most [`MAX_WISH_MATCHES`]).
        matches: usize,
        /// Matches the index counted in all.
        total: u64,
        /// New files to download now.
        new: usize,
        /// More new files than [`WishOptions::max_new`]: the rest come next round.
        more: bool,
    },
    /// A wish was not run this round (the index refused its search, its directory cannot be
    /// made): the other wishes go on.
    Skipped {
        /// The wish.
        wish: &'a Wish,
        /// Why, in one line.
        error: String,
    },
    /// A file was downloaded and verified.
    Fetched {
        /// The wish.
        wish: &'a Wish,
        /// The download.
        report: &'a DownloadReport,
    },
    /// A file could not be downloaded: it is tried again next round.
    Failed {
        /// The wish.
        wish: &'a Wish,
        /// The file.
        hit: &'a FileHit,
        /// Why.
        error: &'a GetError,
    },
}

/// What a round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WishRound {
    /// Wishes searched for.
    pub wishes: usize,
    /// Files downloaded.
    pub fetched: usize,
    /// Downloads failed (tried again next round).
    pub failed: usize,
    /// Wishes not run ([`WishEvent::Skipped`]).
    pub skipped: usize,
}

/// Runs every wish once: searches for it over `client`, and downloads into its directory the
/// matches not fetched for it before (at most `opts.max_new` of the best
/// [`MAX_WISH_MATCHES`]), recording each batch of successes before the next. A broken index
/// connection ends the round with its error (what was fetched is recorded).
pub async fn run_round(
    list: &WishList,
    client: &mut IndexClient,
    opts: &WishOptions,
    on: &(dyn Fn(WishEvent<'_>) + Send + Sync),
) -> Result<WishRound, WishError> {
    let _hold = list.hold_round()?;
    let mut round = WishRound::default();
    // Files this round put in each directory: a second wish matching one of them into the
    // same directory has it already.
    let mut placed: HashSet<(PathBuf, ContentId)> = HashSet::new();
    for wish in list.load()? {
        round.wishes += 1;
        let started = now_secs();
        let (hits, total) = match wish_matches(client, &wish).await {
            Ok(found) => found,
            Err(
                e @ IndexClientError::Protocol {
                    source: ProtocolError::Remote(_),
                    ..
                },
            ) => {
                // The index refused this query only: the others may do.
                let error = format!("search refused: {}", crate::text::error_chain(&e));
                round.skipped += 1;
                list.record_run(wish.id, started, &error)?;
                on(WishEvent::Skipped { wish: &wish, error });
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let matches = hits.len();
        let done: HashSet<ContentId> = list.fetched(wish.id)?.into_iter().collect();
        let mut seen = HashSet::new();
        let mut new: Vec<FileHit> = hits
            .into_iter()
            .filter(|h| !done.contains(&h.content_id) && seen.insert(h.content_id))
            .filter_map(|mut h| {
                // This user's own share is no source; a file only it has is had already.
                if let Some(own) = opts.own_key {
                    h.peers.retain(|p| p.key != Some(own));
                }
                (!h.peers.is_empty()).then_some(h)
            })
            .collect();
        let here: Vec<ContentId> = new
            .iter()
            .map(|h| h.content_id)
            .filter(|&id| placed.contains(&(wish.dir.clone(), id)))
            .collect();
        new.retain(|h| !here.contains(&h.content_id));
        list.record_fetched(wish.id, &here)?;
        let more = new.len() > opts.max_new;
        new.truncate(opts.max_new);
        on(WishEvent::Searched {
            wish: &wish,
            matches,
            total,
            new: new.len(),
            more,
        });
        if !new.is_empty()
            && let Err(e) = std::fs::create_dir_all(&wish.dir)
        {
            // One line, not one per file.
            let error = format!("cannot make {}: {e}", wish.dir.display());
            round.skipped += 1;
            list.record_run(wish.id, started, &error)?;
            on(WishEvent::Skipped { wish: &wish, error });
            continue;
        }
        let (mut fetched, mut failed) = (0, 0);
        for batch in new.chunks(WISH_BATCH) {
            let results = download_all(batch, &wish.dir, &opts.get, opts.parallel).await;
            let mut ok = Vec::new();
            for (hit, r) in batch.iter().zip(&results) {
                match r {
                    Ok(report) => {
                        ok.push(hit.content_id);
                        placed.insert((wish.dir.clone(), hit.content_id));
                        on(WishEvent::Fetched {
                            wish: &wish,
                            report,
                        });
                    }
                    Err(error) => {
                        failed += 1;
                        on(WishEvent::Failed {
                            wish: &wish,
                            hit,
                            error,
                        });
                    }
                }
            }
            fetched += ok.len();
            list.record_fetched(wish.id, &ok)?;
        }
        round.fetched += fetched;
        round.failed += failed;
        let outcome = match (fetched, failed) {
            (0, 0) => "nothing new".to_string(),
            (n, 0) => format!("{n} new files"),
            (n, f) => format!("{n} new files, {f} failed"),
        };
        list.record_run(wish.id, started, &outcome)?;
    }
    Ok(round)
}

/// The best matches of a wish (at most [`MAX_WISH_MATCHES`], paging through the index), and
/// how many matched in all.
async fn wish_matches(
    client: &mut IndexClient,
    wish: &Wish,
) -> Result<(Vec<FileHit>, u64), IndexClientError> {
    let mut hits: Vec<FileHit> = Vec::new();
    let mut total = 0;
    while hits.len() < MAX_WISH_MATCHES {
        let want = (MAX_WISH_MATCHES - hits.len()).min(MAX_SEARCH_LIMIT as usize);
        let mut search = Search {
            query: wish.query.clone(),
            limit: want as u32,
            offset: hits.len() as u32,
            ..Search::default()
        };
        search.set_filters(wish.filters.clone());
        let page = client.search_with(search).await?;
        total = page.total;
        let got = page.files.len().min(want);
        hits.extend(page.files.into_iter().take(want));
        if !page.truncated || got == 0 {
            break;
        }
    }
    Ok((hits, total))
}

/// How a share runs the wishes.
#[derive(Debug, Clone)]
pub struct WishSchedule {
    /// Time between rounds (default [`WISH_INTERVAL`]).
    pub interval: Duration,
    /// Most new files per wish per round (default [`MAX_WISH_NEW`]).
    pub max_new: usize,
}

impl Default for WishSchedule {
    fn default() -> Self {
        WishSchedule {
            interval: WISH_INTERVAL,
            max_new: MAX_WISH_NEW,
        }
    }
}

/// Where a share's wish rounds search.
pub(super) struct WishRunner {
    pub list: WishList,
    /// The index's `HOST:PORT`.
    pub index: String,
    /// The key it must hold (else the one pinned in `known`, else the first one seen).
    pub index_key: Option<Digest>,
    pub known: KnownIndexes,
    pub tls: Tls,
    pub schedule: WishSchedule,
}

impl WishRunner {
    /// Runs a round once the share registered (or after [`WISH_FIRST_WAIT`] or the interval,
    /// whichever is shorter), then one every
    /// interval, until `shutdown`; the list is read again each round. Failures are logged,
    /// once per round.
    pub async fn run(self, mut status: watch::Receiver<ShareStatus>, shutdown: CancellationToken) {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::timeout(
                WISH_FIRST_WAIT.min(self.schedule.interval),
                status.wait_for(|s| s.peer_id.is_some()),
            ) => {}
        }
        let opts = WishOptions {
            get: GetOptions {
                tls: Some(self.tls.clone()),
                ..GetOptions::default()
            },
            max_new: self.schedule.max_new,
            own_key: Some(self.tls.public_key()),
            ..WishOptions::default()
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.round(&opts) => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.schedule.interval) => {}
            }
        }
    }

    async fn round(&self, opts: &WishOptions) {
        match self.list.load() {
            Ok(w) if w.is_empty() => return,
            Ok(_) => {}
            Err(e) => {
                warn!("wishes not run: {e}");
                return;
            }
        }
        let spec = match self.index_key {
            Some(k) => format!("{}#{}", self.index, Fingerprint(k)),
            None => self.index.clone(),
        };
        let mut client = match self
            .known
            .connect(&spec, Some(&self.tls), crate::protocol::Limits::default())
            .await
        {
            Ok(c) => c,
            Err(e) => {
                warn!(
                    "wishes not run, trying again in {}: {}",
                    humantime::format_duration(self.schedule.interval),
                    crate::text::error_chain(&e)
                );
                return;
            }
        };
        match run_round(&self.list, &mut client, opts, &log_event).await {
            Ok(r) if r.fetched + r.failed > 0 => info!(
                "wishes: {} new files downloaded, {} failed (tried again next round)",
                r.fetched, r.failed
            ),
            Ok(_) => debug!("wishes: nothing new"),
            Err(WishError::Busy) => debug!("{}", WishError::Busy),
            Err(e) => warn!(
                "wishes round stopped, trying again in {}: {}",
                humantime::format_duration(self.schedule.interval),
                crate::text::error_chain(&e)
            ),
        }
    }
}

/// A round's events as log lines.
fn log_event(e: WishEvent<'_>) {
    match e {
        WishEvent::Searched {
            wish,
            new: 0,
            matches,
            ..
        } => debug!(
            "wish {} {:?}: {matches} matches, nothing new",
            wish.id, wish.query
        ),
        WishEvent::Searched {
            wish,
            new,
            more,
            total,
            ..
        } => info!(
            "wish {} {:?}: {new} new files, downloading{}",
            wish.id,
            wish.query,
            match (more, total > MAX_WISH_MATCHES as u64) {
                (true, _) => " (more next round)".to_string(),
                (false, true) => format!(
                    " ({total} match: only the best {MAX_WISH_MATCHES} are looked at; narrow it)"
                ),
                _ => String::new(),
            }
        ),
        WishEvent::Skipped { wish, error } => {
            warn!("wish {} {:?} not run: {error}", wish.id, wish.query)
        }
        WishEvent::Fetched { wish, report } => {
            info!("wish {}: downloaded {}", wish.id, report.path.display())
        }
        WishEvent::Failed { wish, hit, error } => warn!(
            "wish {}: {} not downloaded (tried again next round): {}",
            wish.id,
            hit.name,
            crate::text::error_chain(error)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ContentId {
        ContentId::from_bytes([n; 32])
    }

    #[test]
    fn add_remove_record_and_bounds() {
        let t = tempfile::tempdir().expect("tempdir");
        let list = WishList::new(t.path());
        assert!(list.load().expect("empty").is_empty());
        let f = Filters {
            exts: vec!["gz".into()],
            min_size: Some(10),
            ..Filters::default()
        };
        let a = list
            .add("changelog -old", f.clone(), t.path())
            .expect("add");
        let b = list
            .add("stdio.h", Filters::default(), Path::new("rel"))
            .expect("add");
        assert_eq!((a.id, b.id), (1, 2));
        assert!(b.dir.is_absolute());
        let loaded = list.load().expect("load");
        assert_eq!(loaded[0].filters, f);
        assert_eq!(loaded[0].query, "changelog -old");
        list.record_fetched(1, &[id(1), id(2), id(1)])
            .expect("record");
        list.record_fetched(1, &[id(2), id(3)]).expect("record");
        assert_eq!(list.fetched(1).expect("ids"), [id(1), id(2), id(3)]);
        assert_eq!(list.load().expect("load")[0].fetched_total, 3);
        // A record half-written by a crash is cut before the next.
        let file = list.fetched_file(1);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .and_then(|mut f| f.write_all(&[7; 5]))
            .expect("append");
        list.record_fetched(1, &[id(4)]).expect("record");
        assert_eq!(list.fetched(1).expect("ids"), [id(1), id(2), id(3), id(4)]);
        assert_eq!(list.remove(1).expect("remove").query, "changelog -old");
        assert!(!file.exists());
        assert!(list.fetched(1).expect("none").is_empty());
        assert!(matches!(list.remove(1), Err(WishError::NoSuchWish(1))));
        // The same wish twice is one.
        assert!(matches!(
            list.add("stdio.h", Filters::default(), Path::new("rel")),
            Err(WishError::Duplicate(2))
        ));
        // Numbers are not reused.
        assert_eq!(
            list.add("x", Filters::default(), t.path()).expect("add").id,
            3
        );
        // Nothing to look for, or too much.
        assert!(list.add("-old", Filters::default(), t.path()).is_err());
        assert!(
            list.add(&"a".repeat(2000), Filters::default(), t.path())
                .is_err()
        );
        let bad = Filters {
            exts: vec!["a.b".into()],
            ..Filters::default()
        };
        assert!(list.add("x", bad, t.path()).is_err());
    }

    #[test]
    fn the_fetched_set_forgets_the_oldest() {
        let t = tempfile::tempdir().expect("tempdir");
        let list = WishList::new(t.path());
        list.add("x", Filters::default(), t.path()).expect("add");
        let many: Vec<ContentId> = (0..MAX_FETCHED_IDS as u32 + 5)
            .map(|n| {
                let mut b = [0u8; 32];
                b[..4].copy_from_slice(&n.to_le_bytes());
                ContentId::from_bytes(b)
            })
            .collect();
        let (first, rest) = many.split_at(MAX_FETCHED_IDS - 2);
        list.record_fetched(1, first).expect("record");
        list.record_fetched(1, rest).expect("record");
        let ids = list.fetched(1).expect("ids");
        assert_eq!(ids.len(), MAX_FETCHED_IDS);
        assert_eq!(ids[0], many[5]);
        assert_eq!(ids[MAX_FETCHED_IDS - 1], many[many.len() - 1]);
        let w = &list.load().expect("load")[0];
        assert_eq!(w.fetched_total, many.len() as u64);
        let len = std::fs::metadata(list.fetched_file(1)).expect("file").len();
        assert_eq!(len, 32 * MAX_FETCHED_IDS as u64);
    }

    #[test]
    fn a_corrupt_file_is_named_and_left_alone() {
        let t = tempfile::tempdir().expect("tempdir");
        let list = WishList::new(t.path());
        std::fs::write(list.file(), b"{\"wishes\": [oops").expect("write");
        let e = list.load().expect_err("corrupt").to_string();
        assert!(
            e.contains(WISHES_FILE) && e.contains("not a wish list"),
            "{e}"
        );
        assert!(list.add("x", Filters::default(), t.path()).is_err());
        assert_eq!(
            std::fs::read(list.file()).expect("read"),
            b"{\"wishes\": [oops"
        );
    }

    #[test]
    fn one_round_at_a_time() {
        let t = tempfile::tempdir().expect("tempdir");
        let list = WishList::new(t.path());
        let hold = list.hold_round().expect("hold");
        assert!(matches!(list.hold_round(), Err(WishError::Busy)));
        drop(hold);
        assert!(list.hold_round().is_ok());
    }
}
