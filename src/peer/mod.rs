//! The sharing peer: scans and hashes its shared directories, serves pieces, keeps the index up to date.

pub mod ask;
mod beneath;
mod catalog;
mod client;
mod partial;
mod partial_sharing;
pub(crate) mod relay_desk;
mod scan;
mod server;
mod slots;
mod watch;

pub(crate) use beneath::meta_mtime_ns;
pub use beneath::{ShareRoot, force_component_walk};
pub use catalog::{Catalog, SharedFile};
pub use client::{PeerClient, PeerClientError, Reach};
pub use partial::{PartialFile, Partials};
pub use partial_sharing::{PartialSharing, PartialSharingError};
pub use relay_desk::{
    ORDER_GRACE, RelayDesk, VOLUNTEER_MAX_RELAYED, VOLUNTEER_MAX_RELAYED_PER_MEMBER,
};
pub(crate) use scan::open_hash_cache;
pub use scan::{
    HASH_CACHE_FILE, HASH_PROGRESS_STEP, HashProgress, HashStatus, PARTIAL_SUFFIX, ScanError,
    ScanOptions, Scanner,
};
pub use server::{
    FRAME_TIMEOUT, MAX_CONNECTIONS, MAX_CONNECTIONS_PER_IP, PeerConfig, PeerServer, UPLOAD_SLOTS,
    UploadNow, UploadsNow,
};
pub use slots::{QUEUE_STALE, SLOT_IDLE, SLOT_TURN, SLOTS_PER_IP, SlotPolicy, UploadSlots};
pub use watch::watch_roots;
