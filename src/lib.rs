//! peershare: peer-to-peer file sharing with an indexing server and BLAKE3-verified downloads.
//!
//! The crate is layered; each layer uses only the ones below it:
//!
//! - [`node`]: what a user runs: a sharing node ([`node::start_share`]: scan, serve, register
//!   with an index, publish on the DHT) and the download pipeline ([`node::download_all`],
//!   [`node::Lookup`]). A command-line tool, a daemon or an HTTP API builds on this.
//! - [`index`] (the indexing server and its client), [`peer`] (scanning, serving pieces, the
//!   peer client), [`download`] (one file from many sources, verified piece by piece) and
//!   [`dht`] (the Mainline DHT as a serverless index), [`portmap`] (port mapping on the home
//!   router: PCP, NAT-PMP, UPnP-IGD).
//! - [`lan`] (LAN discovery with mDNS/DNS-SD: announcing a share, finding peers nearby),
//!   beside [`dht`].
//! - [`metrics`] (Prometheus counters the layers above count into, and their text).
//! - [`protocol`] (frames, messages, connections, serving limits), [`content`] (content ids
//!   and pieces), [`query`] (the search rules), [`identity`], [`group`] (private groups'
//!   certificates, invites and share links), [`rate`], [`text`].
//!
//! - [`web`]: the node's HTTP API (`/api/v1`, its events and its security) over [`node`].
//!
//! The `peershare` binary is a thin command line over [`node`] and [`web`].
//!
//! # Example
//!
//! An index, a peer sharing a directory through it, and a search and download by name:
//!
//! ```
//! use std::time::Duration;
//!
//! use peershare::identity::Identity;
//! use peershare::index::{IndexClient, IndexConfig, IndexServer, IndexStore};
//! use peershare::node::{GetOptions, ShareConfig, download_all, start_share};
//! use peershare::protocol::Limits;
//! use peershare::tls::Tls;
//! use tokio::net::TcpListener;
//! use tokio_util::sync::CancellationToken;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tmp = tempfile::tempdir()?;
//!
//! // An indexing server on a free port, its database in a file, which also keeps its key:
//! // every connection is TLS 1.3, each end proving its Ed25519 key.
//! let store = IndexStore::open(&tmp.path().join("index.sqlite"))?;
//! let index_tls = Tls::new(&Identity::from_secret(store.index_secret()?))?;
//! let index_key = index_tls.public_key();
//! let listener = TcpListener::bind("127.0.0.1:0").await?;
//! let index = listener.local_addr()?.to_string();
//! let stop = CancellationToken::new();
//! let server = IndexServer::new(store, IndexConfig::default(), index_tls);
//! tokio::spawn(server.run(listener, stop.clone()));
//!
//! // A peer sharing a directory, registered with the index.
//! let shared = tmp.path().join("shared");
//! std::fs::create_dir(&shared)?;
//! std::fs::write(shared.join("hello.txt"), "hello, peers")?;
//! let mut config = ShareConfig::new(vec![shared], Some(index.clone()), tmp.path().join("state"));
//! config.index_key = Some(index_key);
//! let mut share = start_share(config, TcpListener::bind("127.0.0.1:0").await?).await?;
//! share
//!     .wait_for(Duration::from_secs(10), |status| status.in_sync)
//!     .await
//!     .map_err(|status| format!("not registered: {status:?}"))?;
//!
//! // Another peer (a fresh anonymous key: `None`) searches the index, requiring its key, and
//! // downloads what it found, verified piece by piece, from sources holding the keys listed.
//! let mut client = IndexClient::connect(&index, None, Some(index_key), Limits::default()).await?;
//! let found = client.search("hello", 10).await?;
//! let downloads = tmp.path().join("downloads");
//! let results = download_all(&found.files, &downloads, &GetOptions::default(), 1).await;
//! let report = results.into_iter().next().ok_or("nothing found")??;
//! assert_eq!(report.path, downloads.join("hello.txt"));
//! assert_eq!(std::fs::read_to_string(&report.path)?, "hello, peers");
//!
//! share.shutdown().await;
//! stop.cancel();
//! # Ok(())
//! # }
//! ```
#![deny(clippy::unwrap_used)]
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod content;
pub mod dht;
pub mod download;
pub mod group;
pub mod identity;
pub mod index;
pub mod lan;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod portmap;
pub mod protocol;
pub mod query;
pub mod rate;
pub mod splice;
pub mod text;
pub mod tls;
pub mod web;

/// Gives memory freed by the allocator back to the system (glibc keeps freed memory of large
/// short-lived structures otherwise). Cheap enough to call after each large batch of work.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
