//! Getting a peer's folder (or one of its files) by path: the index's listing paged through
//! with `Browse` (docs/PROTOCOL.md §7.9), every file's sources looked up (every live peer
//! with its content id, not only the one browsed), and the structure recreated under the
//! target directory, each component sanitized and no symbolic link followed.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::{GetError, GetOptions, LOOKUP_BATCH, download_stream_into, lookup_many};
use crate::content::ContentId;
use crate::download::{
    DirIdentity, DownloadError, DownloadReport, open_subdirs, publish, sanitize_relative_path,
    still_subdir, through_handle,
};
use crate::index::{IndexClient, IndexClientError};
use crate::protocol::{Browse, MAX_BROWSE_LIMIT};

/// Most files one folder `get` takes from a listing; a longer one is refused before anything
/// is downloaded.
pub const MAX_FOLDER_FILES: usize = 1_000_000;

/// `PEER:PATH`: a peer's id at the index and a path in its share (`3:docs/python3`; `3:` is
/// its whole share).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderSpec {
    /// The peer.
    pub peer: u64,
    /// The path, as typed (the index normalizes it).
    pub path: String,
}

impl FolderSpec {
    /// `PEER:PATH` if `s` is one (1 to 18 digits, a colon, anything), else `None`.
    pub fn parse(s: &str) -> Option<FolderSpec> {
        let (peer, path) = s.split_once(':')?;
        if !(1..=18).contains(&peer.len()) || !peer.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(FolderSpec {
            peer: peer.parse().ok()?,
            path: path.to_string(),
        })
    }
}

/// A file of a folder listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderFile {
    /// Its path as the index lists it (untrusted), starting with the folder's own name (for
    /// `3:docs/python3`, `python3/…`; for a peer's whole share, the path in it; for a file,
    /// its name).
    pub path: String,
    /// Size in bytes, as listed.
    pub size: u64,
    /// The content id.
    pub content_id: ContentId,
}

/// Why a folder could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    /// The index refused, or the connection failed.
    #[error(transparent)]
    Index(#[from] IndexClientError),
    /// More files than [`MAX_FOLDER_FILES`].
    #[error("{path:?} of peer {peer} holds more than {MAX_FOLDER_FILES} files; get a subdirectory")]
    TooMany {
        /// The peer.
        peer: u64,
        /// The path.
        path: String,
    },
    /// A task on the blocking pool (making directories, copying) failed.
    #[error("a task making the folder's directories or copies failed")]
    TaskFailed,
    /// The index's pages do not add up (a page without files that points further on, or
    /// one pointing back).
    #[error("the index's listing of peer {0} does not page forward")]
    BadPaging(u64),
}

/// Why [`matching_files`] lists nothing.
#[derive(Debug, thiserror::Error)]
pub enum MatchError {
    /// The index refused, or the connection failed.
    #[error(transparent)]
    Index(#[from] IndexClientError),
    /// More files match than allowed (nothing is downloaded then).
    #[error("{}{total} files match {query:?}, more than {max}", if *.estimated { "about " } else { "" })]
    TooMany {
        /// The query, as sent.
        query: String,
        /// How many match, as the index counted (or more, when its count fell short).
        total: u64,
        /// The index's count is an estimate.
        estimated: bool,
        /// The limit.
        max: usize,
    },
    /// Nothing matches.
    #[error("no file matches {0:?}")]
    None(String),
}

/// Every file matching `search` (its `offset` and `limit` are the pages' own), best first,
/// paging through the index, each once, at the path its first source keeps it under (what
/// `get --query` and a node's query item download); refused when more than `max` match.
pub async fn matching_files(
    client: &mut IndexClient,
    mut search: crate::protocol::Search,
    max: usize,
) -> Result<Vec<FolderFile>, MatchError> {
    let mut files: Vec<FolderFile> = Vec::new();
    search.offset = 0;
    search.limit = crate::protocol::MAX_SEARCH_LIMIT;
    loop {
        let page = client.search_with(search.clone()).await?;
        if page.total as usize > max || files.len() + page.files.len() > max {
            return Err(MatchError::TooMany {
                query: search.query,
                total: page.total.max((files.len() + page.files.len()) as u64),
                estimated: page.estimated,
                max,
            });
        }
        let got = page.files.len() as u32;
        for f in page.files {
            if files.iter().any(|x| x.content_id == f.content_id) {
                continue;
            }
            files.push(FolderFile {
                path: f
                    .peers
                    .first()
                    .and_then(|p| p.path.clone())
                    .unwrap_or_else(|| f.name.clone()),
                size: f.size,
                content_id: f.content_id,
            });
        }
        if !page.truncated || got == 0 {
            break;
        }
        search.offset += got;
    }
    if files.is_empty() {
        return Err(MatchError::None(search.query));
    }
    Ok(files)
}

/// What happened to one file of a folder.
#[derive(Debug)]
pub struct FolderOutcome {
    /// Its path under the target directory, sanitized.
    pub path: PathBuf,
    /// The download (or the copy, or the file found already there, with no source), or why
    /// not ([`GetError::InFolder`], naming the path).
    pub result: Result<DownloadReport, GetError>,
}

/// Every file under `spec` (or the one file it names), paging through the index's listing.
pub async fn list_folder(
    client: &mut IndexClient,
    spec: &FolderSpec,
) -> Result<Vec<FolderFile>, FolderError> {
    let mut files = Vec::new();
    let mut offset = 0;
    // Each page brings at least one file, so this is bounded by MAX_FOLDER_FILES pages.
    loop {
        let page = client
            .browse(Browse {
                peer_id: spec.peer,
                path: spec.path.clone(),
                recursive: true,
                offset,
                limit: MAX_BROWSE_LIMIT,
            })
            .await?;
        if page.file {
            return Ok(page
                .files
                .into_iter()
                .take(1)
                .map(|f| FolderFile {
                    path: f.path,
                    size: f.size,
                    content_id: f.content_id,
                })
                .collect());
        }
        let top = page.path.rsplit('/').next().unwrap_or("");
        let got = page.files.len();
        for f in page.files {
            if files.len() >= MAX_FOLDER_FILES {
                return Err(FolderError::TooMany {
                    peer: spec.peer,
                    path: spec.path.clone(),
                });
            }
            files.push(FolderFile {
                path: match top {
                    "" => f.path,
                    top => format!("{top}/{}", f.path),
                },
                size: f.size,
                content_id: f.content_id,
            });
        }
        match page.next {
            None => return Ok(files),
            Some(n) if n > offset && got > 0 => offset = n,
            Some(_) => return Err(FolderError::BadPaging(spec.peer)),
        }
    }
}

/// What the first file of a content id needs, found before any lookup.
enum Plan {
    /// It is already at its path.
    Have(DownloadReport),
    /// Download it into this directory (made, with this identity, and open).
    Fetch(PathBuf, DirIdentity, std::fs::File),
    /// Its directory could not be made.
    Failed(GetError),
}

/// Where one listed file goes: its directories (sanitized components) and name.
struct Place {
    dirs: Vec<String>,
    name: String,
}

impl Place {
    fn rel(&self) -> PathBuf {
        self.dirs.iter().chain([&self.name]).collect()
    }
}

fn target_err(path: PathBuf, source: std::io::Error) -> GetError {
    GetError::Download(DownloadError::Target { path, source })
}

/// Downloads `spec` into `out`, recreating its structure: `3:docs/python3` makes
/// `out/python3/…`. Each file comes from every live source of its content id, at most
/// `parallel` full downloads at once (small files pipelined beside them); a content id listed
/// at several paths is downloaded once and copied; a file already at its path with the same
/// content is left as it is. Outcomes in listing order.
pub async fn get_folder(
    client: &mut IndexClient,
    spec: &FolderSpec,
    out: &Path,
    opts: &GetOptions,
    parallel: usize,
) -> Result<Vec<FolderOutcome>, FolderError> {
    let listed = list_folder(client, spec).await?;
    get_tree(client, listed, out, opts, parallel).await
}

/// Downloads files into `out` at their (untrusted) relative paths, as [`get_folder`] does with
/// a listing: every source of each content id, each component sanitized, no link followed, a
/// content id at several paths fetched once and copied. Also what `get --query` uses to keep
/// the paths of a result set.
pub async fn get_tree(
    client: &mut IndexClient,
    listed: Vec<FolderFile>,
    out: &Path,
    opts: &GetOptions,
    parallel: usize,
) -> Result<Vec<FolderOutcome>, FolderError> {
    let mut results: Vec<Option<Result<DownloadReport, GetError>>> =
        listed.iter().map(|_| None).collect();
    let mut places = Vec::with_capacity(listed.len());
    for (i, f) in listed.iter().enumerate() {
        match sanitize_relative_path(&f.path) {
            Ok(mut parts) => {
                let name = parts.pop().unwrap_or_else(|| "download".into());
                places.push(Place { dirs: parts, name });
            }
            Err(e) => {
                results[i] = Some(Err(target_err(out.to_path_buf(), e)));
                places.push(Place {
                    dirs: Vec::new(),
                    name: String::new(),
                });
            }
        }
    }
    // The first file of each content id is fetched; the others are copied from it.
    let mut first_of: HashMap<ContentId, usize> = HashMap::new();
    let mut fetch = Vec::new();
    for (i, f) in listed.iter().enumerate() {
        if results[i].is_none() && *first_of.entry(f.content_id).or_insert(i) == i {
            fetch.push(i);
        }
    }
    let (listed, places) = (Arc::new(listed), Arc::new(places));
    // Directories made (without following links) and files already there, before any lookup,
    // on the blocking pool (it may hash large files).
    let planned = {
        let (listed, places, out) = (listed.clone(), places.clone(), out.to_path_buf());
        tokio::task::spawn_blocking(move || {
            fetch
                .into_iter()
                .map(|i| {
                    let plan = match open_subdirs(&out, &places[i].dirs) {
                        Ok((dir, id, handle)) => {
                            match already_there(&dir.join(&places[i].name), &listed[i]) {
                                Some(r) => Plan::Have(r),
                                None => Plan::Fetch(dir, id, handle),
                            }
                        }
                        Err(e) => Plan::Failed(target_err(out.join(places[i].rel()), e)),
                    };
                    (i, plan)
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|_| FolderError::TaskFailed)?
    };
    let mut made: HashMap<usize, DirIdentity> = HashMap::new();
    // Each directory stays open until its downloads are done, and they write through its
    // handle: a directory swapped for a link meanwhile cannot send the bytes elsewhere.
    let mut handles: HashMap<DirIdentity, (std::fs::File, Option<PathBuf>)> = HashMap::new();
    let mut real: HashMap<usize, PathBuf> = HashMap::new();
    let mut wanted = Vec::new();
    for (i, plan) in planned {
        match plan {
            Plan::Have(r) => results[i] = Some(Ok(r)),
            Plan::Fetch(dir, id, handle) => {
                made.insert(i, id);
                let (_, via) = handles.entry(id).or_insert_with(|| {
                    let via = through_handle(&handle);
                    (handle, via)
                });
                wanted.push((i, via.clone().unwrap_or_else(|| dir.clone())));
                real.insert(i, dir);
            }
            Plan::Failed(e) => results[i] = Some(Err(e)),
        }
    }
    let (tx, rx) = mpsc::channel(LOOKUP_BATCH * 2);
    let count = wanted.len();
    let lookups = async {
        let tx = tx;
        for (b, batch) in wanted.chunks(LOOKUP_BATCH).enumerate() {
            let ids: Vec<ContentId> = batch.iter().map(|(i, _)| listed[*i].content_id).collect();
            let found = match lookup_many(client, &ids).await {
                Ok(found) => found,
                Err(e) => {
                    let why = crate::text::error_chain(&e);
                    ids.iter()
                        .map(|_| Err(GetError::IndexLost(why.clone())))
                        .collect()
                }
            };
            for (k, ((i, dir), hit)) in batch.iter().zip(found).enumerate() {
                // Saved under the name it has in this folder, not the index's pick.
                let item = hit.map(|mut h| {
                    h.name = places[*i].name.clone();
                    (h, dir.clone())
                });
                if tx.send((b * LOOKUP_BATCH + k, item)).await.is_err() {
                    return;
                }
            }
        }
    };
    let (fetched, ()) = tokio::join!(
        download_stream_into(rx, count, out, opts, parallel),
        lookups
    );
    // Then, on the blocking pool: each download's directory checked again, and the other
    // paths of each content id made as copies of the file fetched.
    let finished = {
        let (listed, places, out) = (listed.clone(), places.clone(), out.to_path_buf());
        tokio::task::spawn_blocking(move || {
            for ((i, _), r) in wanted.iter().zip(fetched) {
                let r = r.map(|mut r| {
                    // Reported under its real path, not the handle's.
                    if let (Some(dir), Some(name)) = (real.get(i), r.path.file_name()) {
                        r.path = dir.join(name);
                    }
                    r
                });
                results[*i] = Some(r.and_then(|r| checked(&out, &places[*i], made[i], r)));
            }
            for (i, f) in listed.iter().enumerate() {
                if results[i].is_some() {
                    continue;
                }
                let src = first_of.get(&f.content_id).copied().unwrap_or(i);
                let from = match results.get(src) {
                    Some(Some(Ok(r))) => r.path.clone(),
                    Some(Some(Err(e))) => {
                        let why = crate::text::error_chain(e);
                        results[i] = Some(Err(GetError::SameContent {
                            path: places[src].rel(),
                            why,
                        }));
                        continue;
                    }
                    _ => {
                        results[i] = Some(Err(GetError::TaskFailed));
                        continue;
                    }
                };
                results[i] = Some(copy_to(&out, &places[i], &from, f));
            }
            results
        })
        .await
        .map_err(|_| FolderError::TaskFailed)?
    };
    Ok(places
        .iter()
        .zip(finished)
        .map(|(p, r)| {
            let path = p.rel();
            let result = r
                .unwrap_or(Err(GetError::TaskFailed))
                .map_err(|e| GetError::InFolder {
                    path: path.clone(),
                    source: Box::new(e),
                });
            FolderOutcome { path, result }
        })
        .collect())
}

/// A download whose directory is no longer the one made for it (swapped for a link while it
/// ran) is reported as failed: its file may not be where it should.
fn checked(
    out: &Path,
    place: &Place,
    made: DirIdentity,
    r: DownloadReport,
) -> Result<DownloadReport, GetError> {
    if still_subdir(out, &place.dirs, made) {
        return Ok(r);
    }
    Err(target_err(
        out.join(place.rel()),
        std::io::Error::other("the directory was replaced while the file was downloaded"),
    ))
}

/// A report for `path` if it is a regular file (not a link) with `f`'s size and content.
fn already_there(path: &Path, f: &FolderFile) -> Option<DownloadReport> {
    let started = Instant::now();
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.file_type().is_file() || meta.len() != f.size {
        return None;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .ok()?;
    let mut h = blake3::Hasher::new();
    h.update_reader(file).ok()?;
    (ContentId::from_bytes(*h.finalize().as_bytes()) == f.content_id).then(|| DownloadReport {
        content_id: f.content_id,
        path: path.to_path_buf(),
        size: f.size,
        seconds: started.elapsed().as_secs_f64(),
        bytes_fetched: 0,
        bytes_resumed: 0,
        pieces_rejected: 0,
        sources: Vec::new(),
        already_had: true,
    })
}

/// Copies the verified file `from` to `place` under `out` (directories made without following
/// links; the name numbered if taken), unless the same content is already there.
fn copy_to(
    out: &Path,
    place: &Place,
    from: &Path,
    f: &FolderFile,
) -> Result<DownloadReport, GetError> {
    let started = Instant::now();
    let err = |e| target_err(out.join(place.rel()), e);
    let (real, _, handle) = open_subdirs(out, &place.dirs).map_err(err)?;
    if let Some(r) = already_there(&real.join(&place.name), f) {
        return Ok(r);
    }
    // Written through the directory's handle, as downloads are.
    let dir = through_handle(&handle).unwrap_or_else(|| real.clone());
    let temp = dir.join(format!(".{}.peershare-copy", f.content_id.to_hex()));
    let copy = || -> std::io::Result<PathBuf> {
        let mut src = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(from)?;
        let mut dst = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&temp)?;
        std::io::copy(&mut src, &mut dst)?;
        dst.flush()?;
        dst.sync_all()?;
        publish(&temp, &dir, &place.name)
    };
    let path = copy().map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        err(e)
    })?;
    let path = match path.file_name() {
        Some(name) => real.join(name),
        None => path,
    };
    drop(handle);
    Ok(DownloadReport {
        content_id: f.content_id,
        path,
        size: f.size,
        seconds: started.elapsed().as_secs_f64(),
        bytes_fetched: 0,
        bytes_resumed: 0,
        pieces_rejected: 0,
        sources: Vec::new(),
        already_had: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_specs_are_peer_colon_path() {
        let spec = |peer, path: &str| {
            Some(FolderSpec {
                peer,
                path: path.into(),
            })
        };
        assert_eq!(FolderSpec::parse("3:docs/python3"), spec(3, "docs/python3"));
        assert_eq!(FolderSpec::parse("12:"), spec(12, ""));
        assert_eq!(FolderSpec::parse("3:a:b"), spec(3, "a:b"));
        for not in [
            "docs:x",
            ":x",
            "3",
            "0x3:a",
            &"a".repeat(64),
            "99999999999999999999999:a",
        ] {
            assert_eq!(FolderSpec::parse(not), None, "{not}");
        }
    }
}
