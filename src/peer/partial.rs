//! `PartialFile`: a file still downloading whose verified pieces this peer already serves.
//!
//! # Locks
//!
//! - [`Partials`] is an `RwLock` over the map from content id to partial file: a download
//!   takes it for writing only to insert itself when its swarm is set up and to remove itself
//!   when it ends; the server takes it for reading to look a file up or list them all. It is
//!   held for the map operation alone (what callers keep is a cloned `Arc<PartialFile>`), never
//!   across an `.await`, and no other lock is taken while it is held.
//! - A [`PartialFile`] takes no lock: which pieces are verified is one atomic flag per piece.
//!   The download sets a flag ([`PartialFile::mark`], release ordering) only after the piece is
//!   written; the server reads it ([`PartialFile::has`], acquire ordering) before reading the
//!   piece, so it never sends bytes not yet on disk. The count of verified pieces is for
//!   display and may lag the flags.

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, RwLock};

use blake3::hazmat::ChainingValue;

use crate::content::{ContentId, PieceLayout, PieceVerifier};
use crate::protocol::bitmap_from;

/// A download in progress, as other peers see it: its size, hashes and verified pieces.
#[derive(Debug)]
pub struct PartialFile {
    /// The file being downloaded.
    pub content_id: ContentId,
    /// The name it will be published under (sanitized).
    pub name: String,
    /// Its size in bytes, proven by the piece hashes.
    pub size: u64,
    /// Its verified piece hashes.
    pub piece_hashes: Arc<Vec<ChainingValue>>,
    /// The partial file being written; only verified pieces are read from it.
    pub file: Arc<File>,
    /// One flag per piece: verified and written.
    have: Vec<AtomicBool>,
    /// How many flags are set.
    count: AtomicU32,
}

impl PartialFile {
    /// `done[i]` says piece `i` is already verified in `file`.
    pub fn new(name: &str, verifier: &PieceVerifier, file: Arc<File>, done: &[bool]) -> Self {
        PartialFile {
            content_id: verifier.content_id(),
            name: name.to_string(),
            size: verifier.layout().size,
            piece_hashes: Arc::new(verifier.piece_hashes().to_vec()),
            file,
            have: done.iter().map(|d| AtomicBool::new(*d)).collect(),
            count: AtomicU32::new(done.iter().filter(|d| **d).count() as u32),
        }
    }

    /// How the file is cut into pieces.
    pub fn layout(&self) -> PieceLayout {
        PieceLayout::new(self.size)
    }

    /// Records that piece `i` is verified and written.
    pub fn mark(&self, i: u32) {
        if let Some(h) = self.have.get(i as usize)
            && !h.swap(true, Ordering::AcqRel)
        {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether piece `i` is verified and written.
    pub fn has(&self, i: u32) -> bool {
        self.have
            .get(i as usize)
            .is_some_and(|h| h.load(Ordering::Acquire))
    }

    /// How many pieces are verified and written.
    pub fn have_count(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }

    /// The verified pieces as a `Have` bitmap.
    pub fn bitmap(&self) -> Vec<u8> {
        bitmap_from(self.have.iter().map(|h| h.load(Ordering::Acquire)))
    }
}

/// The partial files a peer serves, shared by its downloads and its server.
#[derive(Debug, Clone, Default)]
pub struct Partials(Arc<RwLock<HashMap<ContentId, Arc<PartialFile>>>>);

impl Partials {
    /// Lists a download in progress (replacing one of the same content id).
    pub fn insert(&self, f: Arc<PartialFile>) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(f.content_id, f);
    }

    /// Takes a download off the list.
    pub fn remove(&self, id: &ContentId) {
        self.0.write().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    /// The download in progress of `id`, if there is one.
    pub fn get(&self, id: &ContentId) -> Option<Arc<PartialFile>> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Every download in progress, in content-id order.
    pub fn all(&self) -> Vec<Arc<PartialFile>> {
        let mut v: Vec<_> = self
            .0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by_key(|f| f.content_id);
        v
    }
}
