//! The indexing server: which peers share which files, durable in SQLite, searched by name or content id.
//!
//! - `server`, `client`: the index protocol's two ends.
//! - `store`: [`IndexStore`], the durable state in SQLite and the in-memory name index beside
//!   it. Its module doc is the lock note: which lock guards what, and in which order they are
//!   taken.
//! - `memory`: the name index, the in-memory *name lookup* every search reads.
//! - `relay`: rendezvous and relay (§7.10): control channels, relay requests, splices.
//! - `cache`: the *reply cache*, encoded search replies kept until the index changes.
//! - `names` (the name arena), `postings` (trigram postings lists), `chunked` (the records'
//!   vector): the name index's building blocks.
//!
//! The *query rules* (how a query is read, what matches it, how matches rank) are not here but
//! in [`crate::query`], shared with the peers' catalogs and the DHT.

mod address_check;
mod cache;
mod chunked;
mod client;
mod group;
mod handler;
mod memory;
mod names;
mod postings;
mod relay;
mod relay_client;
mod server;
mod store;
mod udp;

pub use address_check::{
    ADDRESS_CHECK_TIMEOUT, AddressChecks, MAX_ADDRESS_CHECKS, MAX_ADDRESS_CHECKS_PER_IP,
    MAX_FAILED_CHECKS, is_public,
};
pub use cache::{CacheConfig, DEFAULT_CACHE_BYTES, DEFAULT_CACHE_ENTRIES, DEFAULT_CACHE_TTL};
pub use client::{IndexClient, IndexClientError, PIPELINE_WINDOW};
pub use group::{PrivateGroup, REVOKED_REFRESH};
pub use handler::MAX_FAILED_JOINS;
pub use relay::{
    LISTEN_IDLE_TIMEOUT, LISTEN_KEEPALIVE, MAX_INCOMING_QUEUED, MAX_RELAY_PENDING,
    MAX_RELAY_PENDING_PER_IP, MAX_RELAYED, MAX_RELAYED_PER_MEMBER, RELAY_IDLE_TIMEOUT,
    RELAY_MEMBER_SHARE, RELAY_PENDING_TIMEOUT, RELAY_RATE, RelayConfig,
};
pub use relay_client::{ControlChannel, ControlEvent, RelayRouted};
pub use server::{
    EPHEMERAL_PURGE_LEASES, FORGET_AFTER, FRAME_TIMEOUT, IndexConfig, IndexMetricsSource,
    IndexServer, LEASE, MAX_CONNECTIONS, MAX_CONNECTIONS_PER_IP, READ_TIMEOUT, REQUEST_MEMORY,
    SHUTDOWN_GRACE, WRITE_TIMEOUT,
};
pub use store::{
    BrowseRefused, GroupStore, IndexCounts, IndexStore, MAX_BROWSE_BYTES, MemberRow, RedeemError,
    Session, StoreError, normalize_browse_path,
};
pub use udp::{IndexUdp, MAX_RATE_ENTRIES, MAX_UDP_REQUEST, PUNCH_BURST, PUNCH_QUEUE, PUNCH_RATE};
