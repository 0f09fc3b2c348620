//! The indexing server: which peers share which files, durable in SQLite, searched by name or content id.

mod cache;
mod chunked;
mod client;
mod handler;
mod memory;
mod names;
mod postings;
mod server;
mod store;

pub use cache::CacheConfig;
pub use client::{IndexClient, IndexClientError};
pub use server::{EPHEMERAL_PURGE_LEASES, IndexConfig, IndexServer};
pub use store::{IndexStore, Session, StoreError};
