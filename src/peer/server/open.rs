//! Opening shared files for serving: each beneath the handle of its shared directory (never by path) and checked to still be the file the catalog hashed; the files of several pipelined requests in one blocking task.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::PeerServer;
use crate::content::{ContentId, PieceLayout};
use crate::peer::beneath::meta_mtime_ns;
use crate::peer::{PartialFile, SharedFile};

/// A file opened for serving: a shared file checked to still be the one the catalog hashed,
/// or a download in progress (then only its verified pieces are served).
pub(super) struct OpenFile {
    pub file: Arc<File>,
    pub layout: PieceLayout,
    pub partial: Option<Arc<PartialFile>>,
}

/// A file opened, and the piece asked for (its index, what reading it gave) read along with
/// it (complete files only).
pub(super) type Opened = (OpenFile, Option<(u32, std::io::Result<Bytes>)>);

impl PeerServer {
    /// Opens the file of each `(content id, piece)` in `wanted`, reading that piece along if
    /// the file is complete: every one that is a download in progress at once, the others in
    /// one blocking task (a hand-off to another thread and back per batch, not per file).
    /// A file that is missing, outside the shared directories or changed since it was hashed
    /// is left out, and asks for a rescan.
    pub(super) async fn open_many(
        &self,
        wanted: Vec<(ContentId, u32)>,
    ) -> HashMap<ContentId, Opened> {
        let catalog = self.snapshot();
        let mut opened = HashMap::with_capacity(wanted.len());
        let mut shared: Vec<(ContentId, u32, Vec<SharedFile>)> = Vec::new();
        for (id, first) in wanted {
            let copies: Vec<SharedFile> = catalog.by_id(&id).cloned().collect();
            if !copies.is_empty() {
                shared.push((id, first, copies));
            } else if let Some(p) = self.partials.get(&id) {
                let f = OpenFile {
                    file: p.file.clone(),
                    layout: p.layout(),
                    partial: Some(p),
                };
                opened.insert(id, (f, None));
            }
        }
        if shared.is_empty() {
            return opened;
        }
        let asked = shared.len();
        let roots = self.roots.clone();
        let found = tokio::task::spawn_blocking(move || {
            shared
                .into_iter()
                .filter_map(|(id, first, copies)| {
                    let f = copies.iter().find_map(|f| open_checked(f, &roots))?;
                    let piece = (u64::from(first) < f.layout.piece_count())
                        .then(|| (first, read_piece_now(&f, first)));
                    Some((id, (f, piece)))
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        if found.len() < asked {
            self.stale.notify_one();
        }
        opened.extend(found);
        opened
    }
}

/// Opens a shared file beneath the handle of its shared directory (one of `roots`), so that no
/// symlink or `..` on the way can lead out of it whatever is renamed meanwhile, if it is still
/// the file the catalog hashed: a regular file of the same size and mtime.
fn open_checked(f: &SharedFile, roots: &[std::path::PathBuf]) -> Option<OpenFile> {
    if !roots.iter().any(|r| r == f.root.path()) {
        return None;
    }
    let file = f.root.open_file(&f.beneath).ok()?;
    let meta = file.metadata().ok()?;
    if !(meta.is_file() && meta.len() == f.size && meta_mtime_ns(&meta) == f.mtime_ns) {
        return None;
    }
    Some(OpenFile {
        file: Arc::new(file),
        layout: PieceLayout::new(f.size),
        partial: None,
    })
}

/// Reads piece `index` on the blocking pool.
pub(super) async fn read_piece(f: Arc<OpenFile>, index: u32) -> std::io::Result<Bytes> {
    tokio::task::spawn_blocking(move || read_piece_now(&f, index))
        .await
        .map_err(std::io::Error::other)?
}

/// Reads piece `index` (in range) of an open file.
fn read_piece_now(f: &OpenFile, index: u32) -> std::io::Result<Bytes> {
    let i = u64::from(index);
    let len = f.layout.piece_len(i) as usize;
    let mut buf = BytesMut::zeroed(len);
    f.file.read_exact_at(&mut buf, f.layout.piece_offset(i))?;
    Ok(buf.freeze())
}
