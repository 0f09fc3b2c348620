//! `run_publisher`: announces a peer's content ids and keywords on the DHT, and again before they expire.

use std::collections::{HashSet, VecDeque};
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
    /// Most announcements started per second. Each one is a lookup and a message to each of
    /// the closest nodes (some 40 datagrams on a small network, more on the public one);
    /// started all at once, thousands of keys overflow UDP receive buffers along the way and
    /// are lost. Default: [`DEFAULT_ANNOUNCE_RATE`].
    pub rate: f64,
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
            rate: DEFAULT_ANNOUNCE_RATE,
            keys: KeySpace::public(),
        }
    }
}

/// Default [`PublishConfig::rate`], in announcements per second: 5,000 files (some 8,000 keys
/// with their words) are announced in under three minutes.
pub const DEFAULT_ANNOUNCE_RATE: f64 = 50.0;

/// Every key a catalog is announced under, each once: the keywords of the names first (a few
/// thousand even for a large share, and what word searches need), then each content id.
fn keys_of(catalog: &Catalog, space: &KeySpace) -> Vec<Id> {
    let mut seen = HashSet::new();
    let mut words = Vec::new();
    let mut contents = Vec::new();
    for f in catalog.files() {
        for w in keywords(&f.name) {
            let k = space.keyword(&w);
            if seen.insert(k) {
                words.push(k);
            }
        }
        let k = space.content(&f.content_id);
        if seen.insert(k) {
            contents.push(k);
        }
    }
    words.extend(contents);
    words
}

/// Whether an announcement took: at least one node stored it, and at least half of the
/// closest nodes it was sent to. With fewer, it may sit on nodes a lookup does not reach.
fn took(stored_at: u32, sent_to: u32) -> bool {
    stored_at >= 1 && stored_at * 2 >= sent_to
}

/// What one round of announcements did.
#[derive(Debug, Default)]
struct Round {
    /// Keys that took.
    ok: Vec<Id>,
    /// Acknowledgements and nodes asked, per key that reached any node.
    acks: Vec<(u32, u32)>,
}

/// Announces `keys`, at most `config.concurrency` at once and `config.rate` started per second,
/// until done or `shutdown` (a large share's round takes minutes).
async fn announce(
    dht: &AsyncDht,
    keys: Vec<Id>,
    config: &PublishConfig,
    shutdown: &CancellationToken,
) -> Round {
    let mut round = Round::default();
    let mut tasks = tokio::task::JoinSet::new();
    let mut pending: VecDeque<Id> = keys.into();
    let rate = if config.rate.is_finite() && config.rate > 0.0 {
        config.rate
    } else {
        DEFAULT_ANNOUNCE_RATE
    };
    let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if shutdown.is_cancelled() {
            return round;
        }
        if tasks.len() < config.concurrency.max(1) && !pending.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => return round,
                _ = pace.tick() => {
                    if let Some(key) = pending.pop_front() {
                        let (dht, port) = (dht.clone(), config.port);
                        tasks.spawn(async move {
                            (key, dht.announce_peer_outcome(key, Some(port)).await)
                        });
                    }
                    continue;
                }
                done = tasks.join_next(), if !tasks.is_empty() => note(&mut round, done),
            }
        } else {
            tokio::select! {
                _ = shutdown.cancelled() => return round,
                done = tasks.join_next() => match done {
                    None => return round,
                    done => note(&mut round, done),
                },
            }
        }
    }
}

type Announced = Result<
    (
        Id,
        Result<mainline::PutOutcome, mainline::errors::PutQueryError>,
    ),
    tokio::task::JoinError,
>;

fn note(round: &mut Round, done: Option<Announced>) {
    match done {
        None => {}
        Some(Ok((key, Ok(outcome)))) => {
            round.acks.push((outcome.stored_at, outcome.sent_to));
            if took(outcome.stored_at, outcome.sent_to) {
                round.ok.push(key);
            } else {
                debug!(
                    "announcement stored at {} of {} nodes",
                    outcome.stored_at, outcome.sent_to
                );
            }
        }
        Some(Ok((_, Err(e)))) => debug!("announce failed: {e}"),
        Some(Err(e)) => debug!("announce task failed: {e}"),
    }
}

/// "stored at a median of M of N nodes" for a log line.
fn ack_summary(acks: &mut [(u32, u32)]) -> String {
    if acks.is_empty() {
        return "no node reached".into();
    }
    acks.sort_unstable_by_key(|(s, _)| *s);
    let (s, n) = acks[acks.len() / 2];
    format!("median {s} of {n} nodes acknowledged")
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
        let ordered = keys_of(&current, &config.keys);
        let keys: HashSet<Id> = ordered.iter().copied().collect();
        let todo: Vec<Id> = ordered
            .into_iter()
            .filter(|k| !announced.contains(k))
            .collect();
        if !todo.is_empty() {
            let (n, started) = (todo.len(), tokio::time::Instant::now());
            let mut round = announce(&dht, todo, &config, &shutdown).await;
            if shutdown.is_cancelled() {
                return;
            }
            let acks = ack_summary(&mut round.acks);
            if round.ok.len() < n {
                warn!(
                    "DHT: {} of {n} announcements took ({acks}); retrying the rest in {retry:?}",
                    round.ok.len()
                );
            } else {
                info!(
                    "DHT: announced {n} keys for {} files in {:.1?} ({acks})",
                    current.len(),
                    started.elapsed()
                );
                retry = RETRY_FIRST;
            }
            announced.extend(round.ok);
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
