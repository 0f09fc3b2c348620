//! The wire's search hits as the query rules rank them (`crate::query` knows no wire types).

use super::{FileHit, PeerHit};
use crate::content::ContentId;
use crate::query::{FileGroup, RankedPeer};

impl RankedPeer for PeerHit {
    #[inline]
    fn peer_id(&self) -> u64 {
        self.peer_id
    }
    #[inline]
    fn shared_at(&self) -> i64 {
        self.shared_at
    }
    #[inline]
    fn set_shared_at(&mut self, at: i64) {
        self.shared_at = at;
    }
}

impl From<FileGroup<ContentId, PeerHit>> for FileHit {
    fn from(g: FileGroup<ContentId, PeerHit>) -> Self {
        FileHit {
            name: g.name,
            size: g.size,
            content_id: g.content_id,
            peers: g.peers,
        }
    }
}
