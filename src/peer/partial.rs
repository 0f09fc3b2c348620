//! `PartialFile`: a file still downloading whose verified pieces this peer already serves.

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
    pub content_id: ContentId,
    pub name: String,
    pub size: u64,
    pub piece_hashes: Arc<Vec<ChainingValue>>,
    pub file: Arc<File>,
    have: Vec<AtomicBool>,
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

    pub fn has(&self, i: u32) -> bool {
        self.have
            .get(i as usize)
            .is_some_and(|h| h.load(Ordering::Acquire))
    }

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
    pub fn insert(&self, f: Arc<PartialFile>) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(f.content_id, f);
    }

    pub fn remove(&self, id: &ContentId) {
        self.0.write().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    pub fn get(&self, id: &ContentId) -> Option<Arc<PartialFile>> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

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
