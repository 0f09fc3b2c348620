//! Serverless mode on the BitTorrent Mainline DHT: publishing content ids and name keywords, finding sources and files.

mod find;
mod keys;
mod node;
mod publish;

pub use find::{DhtFile, DhtPeer, VALUES_GRACE, find_files, find_sources, merge_results};
pub use keys::{
    KeySpace, MAX_KEYWORDS, MIN_KEYWORD_CHARS, STOP_WORDS, content_key, keyword_key, keywords,
    worth_a_key,
};
pub use node::{
    DEFAULT_MAX_KEYS, DEFAULT_REQUEST_TIMEOUT, DhtConfig, MAX_PEERS_PER_KEY, MAX_STORED_PEERS,
    start_node,
};
pub use publish::{DEFAULT_ANNOUNCE_RATE, PublishConfig, run_publisher};
