//! Manage announced peers for info_hashes

use std::{
    net::SocketAddrV4,
    num::NonZeroUsize,
    time::{Duration, Instant},
};

use crate::common::Id;

use lru::LruCache;

/// How long an announced peer is kept without being announced again (BEP 5 peers announce
/// about every 15 to 30 minutes; libtorrent forgets them after a similar time).
pub const PEER_EXPIRY: Duration = Duration::from_secs(30 * 60);

/// Most peers in one `get_peers` answer (libtorrent answers with up to 100; 50 compact peers
/// and 20 nodes keep the answer near 1,000 bytes).
pub const MAX_PEERS_REPLY: usize = 50;

#[derive(Debug, Clone)]
/// An LRU cache of "Peers" per info hashes.
///
/// A peer is one address: announcing again from the same address (under any node id) renews
/// it rather than adding a duplicate. The total of peers over all info hashes is bounded too,
/// so the memory a flood of announcements can take is `max_total_peers` entries.
///
/// Read [BEP_0005](https://www.bittorrent.org/beps/bep_0005.html) for more information.
pub struct PeersStore {
    info_hashes: LruCache<Id, Vec<(SocketAddrV4, Instant)>>,
    max_peers: NonZeroUsize,
    max_total: usize,
    total: usize,
}

impl PeersStore {
    /// Create a new store of peers announced on info hashes.
    #[allow(dead_code)] // used by tests and kept for callers
    pub fn new(max_info_hashes: NonZeroUsize, max_peers: NonZeroUsize) -> Self {
        Self::with_total(
            max_info_hashes,
            max_peers,
            max_info_hashes.get().saturating_mul(max_peers.get()),
        )
    }

    /// Like [`PeersStore::new`], with at most `max_total` peers over all info hashes.
    pub fn with_total(
        max_info_hashes: NonZeroUsize,
        max_peers: NonZeroUsize,
        max_total: usize,
    ) -> Self {
        Self {
            info_hashes: LruCache::new(max_info_hashes),
            max_peers,
            max_total: max_total.max(1),
            total: 0,
        }
    }

    /// Add a peer for an info hash (or renew it, if that address is already there).
    pub fn add_peer(&mut self, info_hash: Id, peer: (&Id, SocketAddrV4)) {
        let (_, address) = peer;
        let now = Instant::now();
        // `get_mut` also makes this info hash the most recently used, so it is not the one
        // evicted below.
        if let Some(peers) = self.info_hashes.get_mut(&info_hash) {
            if let Some(known) = peers.iter_mut().find(|(a, _)| *a == address) {
                known.1 = now;
                return;
            }
            let before = peers.len();
            peers.retain(|(_, at)| at.elapsed() < PEER_EXPIRY);
            self.total -= before - peers.len();
            if peers.len() >= self.max_peers.get() {
                // The peer not heard from for longest makes room.
                if let Some(oldest) = peers
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(i, _)| i)
                {
                    peers[oldest] = (address, now);
                }
                return;
            }
        }
        // One more peer: room is taken from the least recently used other info hashes.
        while self.total >= self.max_total && self.info_hashes.len() > 1 {
            match self.info_hashes.pop_lru() {
                Some((_, peers)) => self.total -= peers.len(),
                None => break,
            }
        }
        if self.total >= self.max_total {
            return;
        }
        if !self.info_hashes.contains(&info_hash) {
            if let Some((_, evicted)) = self.info_hashes.push(info_hash, Vec::new()) {
                self.total -= evicted.len();
            }
        }
        if let Some(peers) = self.info_hashes.get_mut(&info_hash) {
            peers.push((address, now));
            self.total += 1;
        }
    }

    /// Returns a random set of at most [`MAX_PEERS_REPLY`] live peers of an info hash.
    pub fn get_random_peers(&mut self, info_hash: &Id) -> Option<Vec<SocketAddrV4>> {
        let peers = self.info_hashes.get(info_hash)?;
        let mut live: Vec<SocketAddrV4> = peers
            .iter()
            .filter(|(_, at)| at.elapsed() < PEER_EXPIRY)
            .map(|(a, _)| *a)
            .collect();
        if live.is_empty() {
            return None;
        }
        if live.len() > MAX_PEERS_REPLY {
            // A partial Fisher-Yates shuffle picks the sample.
            let mut random = vec![0_u8; MAX_PEERS_REPLY * 4];
            getrandom::fill(random.as_mut_slice()).expect("getrandom");
            for i in 0..MAX_PEERS_REPLY {
                let r = u32::from_le_bytes(
                    random[i * 4..i * 4 + 4]
                        .try_into()
                        .expect("four bytes"),
                ) as usize;
                let j = i + r % (live.len() - i);
                live.swap(i, j);
            }
            live.truncate(MAX_PEERS_REPLY);
        }
        Some(live)
    }

    /// Number of info hashes held.
    #[allow(dead_code)] // used by tests and kept for callers
    pub fn len(&self) -> usize {
        self.info_hashes.len()
    }

    /// Number of peers held over all info hashes.
    #[allow(dead_code)] // used by tests and kept for callers
    pub fn total_peers(&self) -> usize {
        self.total
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn addr(i: u8) -> SocketAddrV4 {
        SocketAddrV4::new([127, 0, 1, i].into(), 6881)
    }

    #[test]
    fn max_info_hashes() {
        let mut store = PeersStore::new(
            NonZeroUsize::new(1).unwrap(),
            NonZeroUsize::new(100).unwrap(),
        );

        let info_hash_a = Id::random();
        let info_hash_b = Id::random();

        store.add_peer(info_hash_a, (&info_hash_a, addr(1)));
        store.add_peer(info_hash_b, (&info_hash_b, addr(1)));

        assert_eq!(store.info_hashes.len(), 1);
        assert_eq!(store.total_peers(), 1);
        assert_eq!(store.get_random_peers(&info_hash_b), Some(vec![addr(1)]));
        assert_eq!(store.get_random_peers(&info_hash_a), None);
    }

    #[test]
    fn one_entry_per_address_whatever_the_node_id() {
        let mut store = PeersStore::new(
            NonZeroUsize::new(10).unwrap(),
            NonZeroUsize::new(100).unwrap(),
        );
        let info_hash = Id::random();
        for _ in 0..5 {
            store.add_peer(info_hash, (&Id::random(), addr(1)));
        }
        store.add_peer(info_hash, (&Id::random(), addr(2)));
        let mut peers = store.get_random_peers(&info_hash).unwrap();
        peers.sort();
        assert_eq!(peers, vec![addr(1), addr(2)]);
        assert_eq!(store.total_peers(), 2);
    }

    #[test]
    fn oldest_peer_makes_room() {
        let mut store =
            PeersStore::new(NonZeroUsize::new(1).unwrap(), NonZeroUsize::new(2).unwrap());

        let info_hash = Id::random();
        store.add_peer(info_hash, (&Id::random(), addr(1)));
        store.add_peer(info_hash, (&Id::random(), addr(2)));
        store.add_peer(info_hash, (&Id::random(), addr(3)));

        let mut peers = store.get_random_peers(&info_hash).unwrap();
        peers.sort();
        assert_eq!(peers, vec![addr(2), addr(3)]);
    }

    #[test]
    fn total_is_bounded_over_info_hashes() {
        let mut store = PeersStore::with_total(
            NonZeroUsize::new(1000).unwrap(),
            NonZeroUsize::new(100).unwrap(),
            50,
        );
        for i in 0..200u8 {
            let info_hash = Id::random();
            store.add_peer(info_hash, (&info_hash, addr(i)));
            store.add_peer(info_hash, (&info_hash, addr(i.wrapping_add(1))));
            assert!(store.total_peers() <= 50, "{}", store.total_peers());
        }
        assert_eq!(store.total_peers(), 50);
        assert_eq!(store.len(), 25);
    }

    #[test]
    fn random_peers_subset() {
        let mut store = PeersStore::new(
            NonZeroUsize::new(1).unwrap(),
            NonZeroUsize::new(200).unwrap(),
        );

        let info_hash = Id::random();

        for i in 0..200 {
            store.add_peer(info_hash, (&Id::random(), addr(i)))
        }

        assert_eq!(store.info_hashes.get(&info_hash).unwrap().len(), 200);

        let sample = store.get_random_peers(&info_hash).unwrap();

        assert_eq!(sample.len(), MAX_PEERS_REPLY);
        let distinct: std::collections::HashSet<_> = sample.iter().collect();
        assert_eq!(distinct.len(), MAX_PEERS_REPLY);
    }
}
