//! The name index's file records: one cache line per file, numbered by slot, each linked into
//! the list of its content id's files and the list of its peer's files.
//!
//! Invariants: a live record is on exactly one content list and one peer list, and the lists'
//! heads are kept in [`ContentIds`](super::contents::ContentIds) and
//! [`PeerTable`](super::peers::PeerTable).

use super::{NONE, NameIndex};
use crate::content::ContentId;
use crate::index::names::NameSpan;
use crate::index::postings::Slot;

/// One cache line per file (aligned, so a search reading a record touches one line).
#[derive(Debug, Clone, Copy)]
#[repr(align(64))]
pub(super) struct FileRec {
    /// The keyed hash of (peer id, path): see [`NameIndex::path_key`].
    pub(super) key: [u64; 2],
    /// The file's size in bytes.
    pub(super) size: u64,
    /// When the peer first shared this content under this path (ms since the Unix epoch).
    pub(super) shared_at: i64,
    /// The file's name in the name arena.
    pub(super) name: NameSpan,
    /// The peer's number ([`NONE`]: the file was removed).
    pub(super) peer: u32,
    /// The content id's number.
    pub(super) content: u32,
    /// Neighbours among the files of the same content id.
    pub(super) cprev: Slot,
    pub(super) cnext: Slot,
    /// Neighbours among the files of the same peer.
    pub(super) pprev: Slot,
    pub(super) pnext: Slot,
}

const _: () = assert!(std::mem::size_of::<FileRec>() == 64);

/// What fills unused records.
pub(super) const DEAD: FileRec = FileRec {
    key: [0; 2],
    size: 0,
    shared_at: 0,
    name: NameSpan::EMPTY,
    peer: NONE,
    content: NONE,
    cprev: NONE,
    cnext: NONE,
    pprev: NONE,
    pnext: NONE,
};

impl FileRec {
    /// Whether the record holds a file (not removed).
    pub(super) fn live(&self) -> bool {
        self.peer != NONE
    }

    /// Whether no other file has this content id.
    pub(super) fn alone(&self) -> bool {
        self.cprev == NONE && self.cnext == NONE
    }
}

impl NameIndex {
    /// Puts `slot` at the head of its content id's list (the content interned if new).
    pub(super) fn link_content(&mut self, slot: Slot, id: ContentId) {
        let c = self.contents.intern(id);
        let head = self.contents.get(c).map_or(NONE, |r| r.head);
        if let Some(r) = self.files.get_mut(head as usize) {
            r.cprev = slot;
        }
        let r = &mut self.files[slot as usize];
        r.content = c;
        r.cprev = NONE;
        r.cnext = head;
        self.contents.set_head(c, slot);
    }

    /// Takes `slot` out of its content id's list (freeing the content number when it empties).
    pub(super) fn unlink_content(&mut self, slot: Slot) {
        let r = self.files[slot as usize];
        if let Some(p) = self.files.get_mut(r.cprev as usize) {
            p.cnext = r.cnext;
        } else {
            self.contents.set_head(r.content, r.cnext);
        }
        if let Some(n) = self.files.get_mut(r.cnext as usize) {
            n.cprev = r.cprev;
        }
        self.contents.release_if_empty(r.content);
    }

    /// Puts `slot` at the head of its peer's list.
    pub(super) fn link_peer(&mut self, slot: Slot, peer: u32) {
        let head = self.peers.rec_mut(peer).head;
        if let Some(r) = self.files.get_mut(head as usize) {
            r.pprev = slot;
        }
        let r = &mut self.files[slot as usize];
        r.peer = peer;
        r.pprev = NONE;
        r.pnext = head;
        self.peers.rec_mut(peer).head = slot;
    }

    /// Takes `slot` out of its peer's list.
    pub(super) fn unlink_peer(&mut self, slot: Slot) {
        let r = self.files[slot as usize];
        if let Some(p) = self.files.get_mut(r.pprev as usize) {
            p.pnext = r.pnext;
        } else {
            self.peers.set_head(r.peer, r.pnext);
        }
        if let Some(n) = self.files.get_mut(r.pnext as usize) {
            n.pprev = r.pprev;
        }
    }
}
