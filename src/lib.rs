//! peershare: peer-to-peer file sharing with an indexing server and BLAKE3-verified downloads.
#![deny(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod cli;
pub mod content;
pub mod dht;
pub mod download;
pub mod identity;
pub mod index;
pub mod peer;
pub mod protocol;
pub mod rate;
