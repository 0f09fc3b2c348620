//! Keeping the name index compact: renumbering the files once removed ones hold most of the
//! records or postings, compacting the names, and giving back spare capacity.

use super::exact::ExactNames;
use super::{NONE, NameIndex, Slot};

impl NameIndex {
    /// Gives back spare capacity (after loading or a rebuild).
    pub fn shrink(&mut self) {
        self.trigrams.shrink();
        self.names.shrink();
        self.contents.shrink();
        self.paths.shrink(&self.files);
        let mut by_name = std::mem::take(&mut self.by_name);
        by_name.shrink(&*self);
        self.by_name = by_name;
    }

    /// Renumbers the files and rebuilds the postings once removed files hold most of them
    /// (postings or records); otherwise compacts the names once garbage is most of them.
    pub fn maybe_rebuild(&mut self) {
        let dead = self.files.len() - self.live;
        if self.trigrams.mostly_stale() || (dead >= 1024 && dead * 2 >= self.files.len()) {
            self.rebuild();
        } else if self.names.garbage() >= 1 << 16 && self.names.garbage() * 2 >= self.names.len() {
            let in_order = self
                .names
                .in_order(self.files.iter().filter(|r| r.live()).map(|r| r.name));
            let live = self
                .files
                .iter_mut()
                .filter(|r| r.live())
                .map(|r| &mut r.name);
            self.names.compact(live, in_order);
        }
    }

    /// Drops the dead records (live ones keep their order), the garbage names and the stale
    /// postings.
    pub(super) fn rebuild(&mut self) {
        let mut map = vec![NONE; self.files.len()];
        let mut n: Slot = 0;
        for (old, r) in self.files.iter().enumerate() {
            if r.live() {
                map[old] = n;
                n += 1;
            }
        }
        let m = |s: Slot| map.get(s as usize).copied().unwrap_or(NONE);
        let mut w = 0;
        for old in 0..self.files.len() {
            let mut r = self.files[old];
            if !r.live() {
                continue;
            }
            r.cprev = m(r.cprev);
            r.cnext = m(r.cnext);
            r.pprev = m(r.pprev);
            r.pnext = m(r.pnext);
            self.files[w] = r;
            w += 1;
        }
        self.files.truncate(w);
        self.contents.renumber_heads(m);
        self.peers.renumber_heads(m);
        self.paths.renumber(m);
        self.by_name = ExactNames::default();
        self.epoch += 1;
        self.order.forget();
        self.haves = std::mem::take(&mut self.haves)
            .into_iter()
            .map(|(s, h)| (m(s), h))
            .collect();
        drop(map);
        let in_order = self.names.in_order(self.files.iter().map(|r| r.name));
        self.names
            .compact(self.files.iter_mut().map(|r| &mut r.name), in_order);
        self.trigrams.clear();
        for slot in 0..self.files.len() as Slot {
            self.index_name(slot);
            self.index_exact(slot);
        }
        self.shrink();
    }
}
