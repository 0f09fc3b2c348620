//! Ranking matching files: rows of (file, peer) grouped by content id, exact-name matches first,
//! then files whose name holds every word (not only their directories), then files with more
//! peers, then by name.

use std::collections::HashMap;
use std::hash::Hash;

use super::Query;

/// A peer as the ranking sees it: who it is and when it shared the file.
pub trait RankedPeer {
    /// The peer's id: one entry per id in a file's peer list.
    fn peer_id(&self) -> u64;
    /// When the peer first shared the file (ms since the Unix epoch).
    fn shared_at(&self) -> i64;
    /// Keeps the earliest time when the same peer is listed twice.
    fn set_shared_at(&mut self, at: i64);
}

/// One matching (file, peer) row.
#[derive(Debug, Clone)]
pub struct Row<Id, P> {
    /// The file's content id.
    pub content_id: Id,
    /// The file's name at this peer.
    pub name: String,
    /// The file's size in bytes.
    pub size: u64,
    /// The peer sharing it.
    pub peer: P,
}

/// One ranked file: its rows grouped by content id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileGroup<Id, P> {
    /// Of the group's exact-name matches, else of the names holding every word, else of all
    /// its names, the least in byte order.
    pub name: String,
    /// The size of the group's first row.
    pub size: u64,
    /// The content id shared by the group's rows.
    pub content_id: Id,
    /// One entry per peer, in peer-id order.
    pub peers: Vec<P>,
}

/// How well a name matches: exact, then holding every word, then neither (its path does).
fn tier<Id>(query: &Query<Id>, name: &str) -> u8 {
    if query.is_exact_name(name) {
        2
    } else if query.in_name(name.as_bytes()) {
        1
    } else {
        0
    }
}

/// Groups rows by content id (one entry per distinct file, one peer entry per peer), ranks
/// exact-name matches first, then files whose name holds every word, then files with more
/// peers, then by name; skips the first `offset` and keeps `limit`. Returns the files, whether
/// more matched than were kept, and how many files (content ids) matched in all.
pub fn group_and_rank<Id, P, F>(
    rows: Vec<Row<Id, P>>,
    query: &Query<Id>,
    offset: usize,
    limit: usize,
) -> (Vec<F>, bool, usize)
where
    Id: Copy + Eq + Hash + Ord,
    P: RankedPeer,
    F: From<FileGroup<Id, P>>,
{
    let mut order: Vec<Id> = Vec::new();
    let mut groups: HashMap<Id, (FileGroup<Id, P>, u8)> = HashMap::new();
    for row in rows {
        let t = tier(query, &row.name);
        let (hit, best) = groups.entry(row.content_id).or_insert_with(|| {
            order.push(row.content_id);
            (
                FileGroup {
                    name: row.name.clone(),
                    size: row.size,
                    content_id: row.content_id,
                    peers: Vec::new(),
                },
                t,
            )
        });
        if t > *best || (t == *best && row.name < hit.name) {
            hit.name = row.name.clone();
            *best = t;
        }
        match hit
            .peers
            .iter_mut()
            .find(|p| p.peer_id() == row.peer.peer_id())
        {
            Some(p) => p.set_shared_at(p.shared_at().min(row.peer.shared_at())),
            None => hit.peers.push(row.peer),
        }
    }
    let mut files: Vec<(FileGroup<Id, P>, u8)> = order
        .into_iter()
        .filter_map(|id| groups.remove(&id))
        .collect();
    files.sort_by(|(a, ta), (b, tb)| {
        tb.cmp(ta)
            .then(b.peers.len().cmp(&a.peers.len()))
            .then_with(|| a.name.cmp(&b.name))
            .then(a.content_id.cmp(&b.content_id))
    });
    let total = files.len();
    let truncated = total > offset.saturating_add(limit);
    let files = files
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|(mut f, _)| {
            f.peers.sort_by_key(|p| p.peer_id());
            F::from(f)
        })
        .collect();
    (files, truncated, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Peer {
        id: u64,
        at: i64,
    }

    impl RankedPeer for Peer {
        fn peer_id(&self) -> u64 {
            self.id
        }
        fn shared_at(&self) -> i64 {
            self.at
        }
        fn set_shared_at(&mut self, at: i64) {
            self.at = at;
        }
    }

    type Group = FileGroup<u8, Peer>;

    fn row(id: u8, name: &str, peer: u64) -> Row<u8, Peer> {
        Row {
            content_id: id,
            name: name.into(),
            size: 10,
            peer: Peer { id: peer, at: 5 },
        }
    }

    fn words(q: &str) -> Query<u8> {
        // u8 ids parse from "0".."255": keep test queries clear of numbers.
        let q = Query::parse(q);
        assert!(matches!(q, Query::Words { .. }));
        q
    }

    #[test]
    fn exact_first_then_more_peers_and_limit() {
        let q = words("isaac.py");
        let rows = vec![
            row(1, "isaac.py.bak", 1),
            row(1, "isaac.py.bak", 2),
            row(1, "isaac.py.bak", 2),
            row(2, "old isaac.py", 3),
            row(3, "Isaac.py", 4),
            row(4, "isaac.py.txt", 1),
        ];
        let (files, truncated, total): (Vec<Group>, bool, usize) =
            group_and_rank(rows.clone(), &q, 0, 10);
        assert_eq!(total, 4);
        assert!(!truncated);
        assert_eq!(files[0].name, "Isaac.py");
        assert_eq!(files[1].name, "isaac.py.bak");
        assert_eq!(files[1].peers.len(), 2, "one entry per peer");
        assert_eq!(files.len(), 4);
        let (files, truncated, _): (Vec<Group>, bool, usize) =
            group_and_rank(rows.clone(), &q, 0, 2);
        assert!(truncated);
        assert_eq!(files.len(), 2);
        let (page, truncated, total): (Vec<Group>, bool, usize) = group_and_rank(rows, &q, 2, 2);
        assert!(!truncated, "the last page");
        assert_eq!(total, 4);
        assert_eq!(page.len(), 2);
        assert_eq!(page[0].name, "isaac.py.txt");
    }

    #[test]
    fn names_holding_every_word_rank_before_paths_holding_them() {
        let q = words("stdio");
        let rows = vec![row(1, "x.h", 1), row(1, "x.h", 2), row(2, "stdio-x.h", 3)];
        let (files, _, _): (Vec<Group>, bool, usize) = group_and_rank(rows, &q, 0, 10);
        assert_eq!(files[0].name, "stdio-x.h");
    }

    #[test]
    fn a_group_keeps_its_least_exact_name_and_earliest_share() {
        let q = words("a b");
        let mut late = row(1, "x a b", 7);
        late.peer.at = 9;
        let mut early = row(1, "A B", 7);
        early.peer.at = 2;
        let rows = vec![late, row(1, "a b", 3), early, row(1, "a b c", 1)];
        let (files, _, _): (Vec<Group>, bool, usize) = group_and_rank(rows, &q, 0, 10);
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].name, "A B", "exact names win, then byte order");
        let ids: Vec<(u64, i64)> = files[0].peers.iter().map(|p| (p.id, p.at)).collect();
        assert_eq!(
            ids,
            [(1, 5), (3, 5), (7, 2)],
            "peer-id order, earliest share"
        );
    }
}
