//! Serverless mode on the BitTorrent Mainline DHT: publishing content ids and name keywords, finding sources and files.

mod find;
mod keys;
mod node;
mod publish;

pub use find::{DhtFile, DhtPeer, find_files, find_sources, merge_results};
pub use keys::{KeySpace, MAX_KEYWORDS, MIN_KEYWORD_CHARS, content_key, keyword_key, keywords};
pub use node::{DhtConfig, start_node};
pub use publish::{PublishConfig, run_publisher};
