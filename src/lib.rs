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
pub mod query;
pub mod rate;
pub mod text;

/// Gives memory freed by the allocator back to the system (glibc keeps freed memory of large
/// short-lived structures otherwise). Cheap enough to call after each large batch of work.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
