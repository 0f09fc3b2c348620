//! The peer table of the name index: peer ids interned to small numbers, each with what a search
//! lists of the peer and the head of its list of files.
//!
//! Invariants: a number is in use exactly while `numbers` maps an id to it; a number is freed
//! (and may be handed to another id) only once its peer has neither state nor files.

use std::collections::HashMap;

use super::{NONE, Slot, reuse_or_push};
use crate::content::Digest;

/// What the index knows of a registered peer.
#[derive(Debug, Clone)]
pub struct PeerState {
    /// The host the peer serves from, as it registered it.
    pub host: Box<str>,
    /// The port the peer serves on.
    pub port: u16,
    /// The key the peer proved it holds (at registration, and at `host:port` when checked).
    pub key: Digest,
    /// When the index last heard from the peer, ms since the Unix epoch.
    pub last_seen: i64,
    /// Whether the peer is registered and has not unregistered.
    pub online: bool,
}

/// One peer number's record.
#[derive(Debug)]
pub(super) struct PeerRec {
    /// The peer's id (the store's).
    pub(super) id: u64,
    /// `None` until registered (files may be loaded before, and stay invisible).
    pub(super) state: Option<PeerState>,
    /// The first of the peer's files ([`NONE`]: it has none).
    pub(super) head: Slot,
}

/// Peers by number, and numbers by peer id.
#[derive(Debug, Default)]
pub(super) struct PeerTable {
    recs: Vec<PeerRec>,
    free: Vec<u32>,
    numbers: HashMap<u64, u32>,
}

impl PeerTable {
    /// The record of peer number `n` (`None` for [`NONE`] or a number never given).
    #[inline]
    pub(super) fn get(&self, n: u32) -> Option<&PeerRec> {
        self.recs.get(n as usize)
    }

    /// The record of peer number `n`, which must be in use.
    pub(super) fn rec_mut(&mut self, n: u32) -> &mut PeerRec {
        &mut self.recs[n as usize]
    }

    /// Sets the head of peer number `n`'s list (nothing if `n` is not a number).
    pub(super) fn set_head(&mut self, n: u32, head: Slot) {
        if let Some(p) = self.recs.get_mut(n as usize) {
            p.head = head;
        }
    }

    /// The record of the peer with this id, if it has a number.
    pub(super) fn by_id_mut(&mut self, id: u64) -> Option<&mut PeerRec> {
        let n = *self.numbers.get(&id)?;
        self.recs.get_mut(n as usize)
    }

    /// The number of the peer with this id, if it has one.
    pub(super) fn number(&self, id: u64) -> Option<u32> {
        self.numbers.get(&id).copied()
    }

    /// The peer's number, made on first sight.
    pub(super) fn number_or_insert(&mut self, id: u64) -> u32 {
        if let Some(&n) = self.numbers.get(&id) {
            return n;
        }
        let rec = PeerRec {
            id,
            state: None,
            head: NONE,
        };
        let n = reuse_or_push(&mut self.recs, &mut self.free, rec);
        self.numbers.insert(id, n);
        n
    }

    /// Frees a peer's number once it has neither state nor files.
    pub(super) fn release_if_unused(&mut self, id: u64) {
        let Some(&n) = self.numbers.get(&id) else {
            return;
        };
        if let Some(p) = self.recs.get(n as usize)
            && p.state.is_none()
            && p.head == NONE
        {
            self.numbers.remove(&id);
            self.free.push(n);
        }
    }

    /// When the first lease of a peer live now (seen at or after `live_since`) runs out, in ms.
    pub(super) fn first_expiry(&self, live_since: i64, lease_ms: i64) -> Option<i64> {
        self.recs
            .iter()
            .filter_map(|p| p.state.as_ref())
            .filter(|s| s.online && s.last_seen >= live_since)
            .map(|s| s.last_seen.saturating_add(lease_ms))
            .min()
    }

    /// Peers with a state (registered, not forgotten), and those of them online and seen at or
    /// after `live_since`.
    pub(super) fn counts(&self, live_since: i64) -> (usize, usize) {
        let states = self.recs.iter().filter_map(|p| p.state.as_ref());
        states.fold((0, 0), |(known, live), s| {
            let is_live = s.online && s.last_seen >= live_since;
            (known + 1, live + usize::from(is_live))
        })
    }

    /// Renumbers the heads of the files' lists after the files were renumbered.
    pub(super) fn renumber_heads(&mut self, m: impl Fn(Slot) -> Slot) {
        for p in &mut self.recs {
            p.head = m(p.head);
        }
    }

    /// Every (peer id, number) in use.
    #[cfg(test)]
    pub(super) fn numbers(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.numbers.iter().map(|(&id, &n)| (id, n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> PeerState {
        PeerState {
            key: Default::default(),
            host: "h".into(),
            port: 1,
            last_seen: 10,
            online: true,
        }
    }

    #[test]
    fn numbers_are_kept_while_used_and_reused_after() {
        let mut t = PeerTable::default();
        let a = t.number_or_insert(7);
        assert_eq!(t.number_or_insert(7), a, "one number per id");
        let b = t.number_or_insert(8);
        assert_ne!(a, b);
        t.rec_mut(a).state = Some(state());
        t.release_if_unused(7);
        assert_eq!(t.number(7), Some(a), "a registered peer keeps its number");
        t.rec_mut(a).state = None;
        t.rec_mut(a).head = 3;
        t.release_if_unused(7);
        assert_eq!(t.number(7), Some(a), "a peer with files keeps its number");
        t.rec_mut(a).head = NONE;
        t.release_if_unused(7);
        assert_eq!(t.number(7), None);
        assert_eq!(t.number_or_insert(9), a, "a freed number is reused");
        assert_eq!(t.get(a).map(|p| p.id), Some(9));
        assert!(t.get(NONE).is_none());
        assert!(t.by_id_mut(7).is_none());
    }

    #[test]
    fn first_expiry_counts_only_live_peers() {
        let mut t = PeerTable::default();
        for (id, seen, online) in [(1, 10, true), (2, 5, true), (3, 20, false), (4, 30, true)] {
            let n = t.number_or_insert(id);
            t.rec_mut(n).state = Some(PeerState {
                key: Default::default(),
                last_seen: seen,
                online,
                ..state()
            });
        }
        t.number_or_insert(5); // files only: not registered
        assert_eq!(t.first_expiry(0, 100), Some(105));
        assert_eq!(t.first_expiry(8, 100), Some(110), "seen before 8: not live");
        assert_eq!(t.first_expiry(31, 100), None);
    }
}
