//! The indexing server: which peers share which files, durable in SQLite, searched by name or content id.

mod arena;
mod cache;
mod chunked;
mod client;
mod memory;
mod postings;
pub mod search;
mod server;
mod store;

pub use cache::CacheConfig;
pub use client::{IndexClient, IndexClientError};
pub use server::{EPHEMERAL_PURGE_LEASES, IndexConfig, IndexServer};
pub use store::{IndexStore, Session, StoreError};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
