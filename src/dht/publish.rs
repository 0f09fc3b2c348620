//! `run_publisher`: announces a peer's content ids and keywords on the DHT, and again before they expire.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use mainline::Id;
use mainline::async_dht::AsyncDht;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::keys::{KeySpace, keywords};
use crate::peer::Catalog;

/// How a peer publishes on the DHT.
#[derive(Debug, Clone)]
pub struct PublishConfig {
    /// TCP port other peers connect to (the peer protocol).
    pub port: u16,
    /// Announce everything again this often (DHT nodes forget announcements after about
    /// 30 minutes). Default: 15 min.
    pub refresh: Duration,
    /// Announcements in flight at once. Default: 8.
    pub concurrency: usize,
    /// Where the keys live: public, or a private group's. Default: public.
    pub keys: KeySpace,
}

impl PublishConfig {
    /// Publishing the peer serving on `port`, with the defaults above.
    pub fn new(port: u16) -> Self {
        PublishConfig {
            port,
            refresh: Duration::from_secs(15 * 60),
            concurrency: 8,
            keys: KeySpace::public(),
        }
    }
}

/// Every key a catalog is announced under: each content id, and each keyword of each name.
fn keys_of(catalog: &Catalog, space: &KeySpace) -> HashSet<Id> {
    let mut keys = HashSet::new();
    for f in catalog.files() {
        keys.insert(space.content(&f.content_id));
        for w in keywords(&f.name) {
            keys.insert(space.keyword(&w));
        }
    }
    keys
}

/// Announces `keys`; returns the keys whose announcement succeeded.
async fn announce(dht: &AsyncDht, keys: Vec<Id>, config: &PublishConfig) -> Vec<Id> {
    let mut ok = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut pending = keys.into_iter();
    loop {
        while tasks.len() < config.concurrency.max(1) {
            let Some(key) = pending.next() else { break };
            let (dht, port) = (dht.clone(), config.port);
            tasks.spawn(async move { (key, dht.announce_peer(key, Some(port)).await) });
        }
        match tasks.join_next().await {
            None => return ok,
            Some(Ok((key, Ok(_)))) => ok.push(key),
            Some(Ok((_, Err(e)))) => debug!("announce failed: {e}"),
            Some(Err(e)) => debug!("announce task failed: {e}"),
        }
    }
}

/// First wait before announcing again what failed; doubles up to the refresh period.
const RETRY_FIRST: Duration = Duration::from_secs(5);

/// Announces the catalog now, its new keys whenever it changes, and all of it every
/// `refresh`. After each round `on_round(keys announced, keys in the catalog)` is called.
pub async fn run_publisher(
    dht: AsyncDht,
    config: PublishConfig,
    mut catalog: watch::Receiver<Arc<Catalog>>,
    on_round: impl Fn(usize, usize) + Send,
    shutdown: CancellationToken,
) {
    let mut announced: HashSet<Id> = HashSet::new();
    let mut retry = RETRY_FIRST;
    let mut refresh =
        tokio::time::interval_at(tokio::time::Instant::now() + config.refresh, config.refresh);
    loop {
        let current = catalog.borrow_and_update().clone();
        let keys = keys_of(&current, &config.keys);
        let todo: Vec<Id> = keys.difference(&announced).copied().collect();
        if !todo.is_empty() {
            let n = todo.len();
            let ok = announce(&dht, todo, &config).await;
            if ok.len() < n {
                warn!(
                    "DHT: {} of {n} announcements succeeded; retrying the rest in {retry:?}",
                    ok.len()
                );
            } else {
                info!("DHT: announced {n} keys for {} files", current.len());
                retry = RETRY_FIRST;
            }
            announced.extend(ok);
            announced.retain(|k| keys.contains(k));
            on_round(announced.len(), keys.len());
        }
        announced.retain(|k| keys.contains(k));
        let missing = announced.len() < keys.len();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(retry), if missing => {
                retry = (retry * 2).min(config.refresh);
            }
            _ = refresh.tick() => {
                // Announce everything again.
                announced.clear();
            }
            r = catalog.changed() => {
                if r.is_err() {
                    return;
                }
            }
        }
    }
}
