//! `SourceLinks`: a few long-lived connections per source, each with many single-piece requests in flight.
//!
//! Fetching thousands of small files one request at a time per connection pays a round trip,
//! two wake-ups and two system calls per file, and opening a connection per file also takes an
//! upload slot each. Here every source gets at most `connections` connections; each takes up
//! to `window` queued requests at once, sends them together and hands each reply to its caller
//! in order. A request answered `BUSY` goes back to the source's queue, where a connection that
//! holds an upload slot takes it; the busy connection pauses before asking again. A source that
//! delivers nothing for several rounds in a row is given up: its requests fail at once, and the
//! caller hands them to the full downloader.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, mpsc, oneshot};

use super::Source;
use super::report::Route;
use super::settings::{LINK_BUSY_RETRY, SourceTiming};
use crate::content::{ContentId, Digest, PIECE_SIZE};
use crate::peer::{PeerClient, PeerClientError};
use crate::protocol::{ErrorCode, ProtocolError};
use crate::tls::Tls;

/// Default of [`LinkConfig::connections`].
pub const LINK_CONNECTIONS: usize = 2;
/// Default of [`LinkConfig::window`].
pub const LINK_WINDOW: usize = 32;
/// Default of [`LinkConfig::max_busy`].
pub const LINK_MAX_BUSY: u32 = 30;
/// Default of [`LinkConfig::max_fruitless`].
pub const LINK_MAX_FRUITLESS: u32 = 5;
/// Default of [`LinkConfig::idle_close`].
pub const LINK_IDLE_CLOSE: Duration = Duration::from_secs(2);

/// How the links to sources behave.
#[derive(Debug, Clone, Copy)]
pub struct LinkConfig {
    /// Connection time limits and the pause before asking a busy source again. Default:
    /// [`SourceTiming::default`] with [`LINK_BUSY_RETRY`] as the pause.
    pub timing: SourceTiming,
    /// Connections per source. Default: [`LINK_CONNECTIONS`].
    pub connections: usize,
    /// Requests in flight per connection. Default: [`LINK_WINDOW`].
    pub window: usize,
    /// `BUSY` answers one request takes before it fails. Default: [`LINK_MAX_BUSY`].
    pub max_busy: u32,
    /// Rounds in a row without a file after which a source is given up. Default:
    /// [`LINK_MAX_FRUITLESS`].
    pub max_fruitless: u32,
    /// How long a connection with nothing to send stays open. Default: [`LINK_IDLE_CLOSE`].
    pub idle_close: Duration,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            timing: SourceTiming {
                busy_retry: LINK_BUSY_RETRY,
                ..SourceTiming::default()
            },
            connections: LINK_CONNECTIONS,
            window: LINK_WINDOW,
            max_busy: LINK_MAX_BUSY,
            max_fruitless: LINK_MAX_FRUITLESS,
            idle_close: LINK_IDLE_CLOSE,
        }
    }
}

/// Why a source did not deliver a whole small file.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LinkError {
    /// The source failed (connection, protocol) or was given up.
    #[error("{0}")]
    Source(String),
    #[error("answered {code}: {message}")]
    /// The source answered with an error.
    Refused {
        /// The error code.
        code: u16,
        /// Its message.
        message: String,
    },
    #[error("sent piece {received} where 0 was due")]
    /// The source sent another piece than piece 0.
    WrongPiece {
        /// The piece it sent.
        received: u32,
    },
    #[error("sent {len} bytes that do not hash to {id}")]
    /// The bytes are not the whole file (a larger file, or wrong bytes).
    NotTheFile {
        /// The file asked for.
        id: ContentId,
        /// Bytes received.
        len: usize,
    },
    /// The link was shut down before the request was answered.
    #[error("the link to the source was closed")]
    Closed,
}

struct Job {
    id: ContentId,
    busy: u32,
    reply: oneshot::Sender<Result<(Bytes, Route), LinkError>>,
}

/// One source's queue, shared by its connections: new requests, and requests given back.
struct Queue {
    new: tokio::sync::Mutex<mpsc::Receiver<Job>>,
    again: Mutex<VecDeque<Job>>,
    given_back: Notify,
    /// Rounds in a row in which the source delivered no file, and why the last one failed.
    fruitless: Mutex<(u32, Option<String>)>,
}

impl Queue {
    fn fruitless_state(&self) -> std::sync::MutexGuard<'_, (u32, Option<String>)> {
        self.fruitless.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A round delivered nothing; after `max` in a row the source counts as dead.
    fn fruitless(&self, why: &str, max: u32) {
        let mut f = self.fruitless_state();
        f.0 = f.0.saturating_add(1);
        if f.0 >= max && f.1.is_none() {
            f.1 = Some(format!(
                "gave no file in {max} rounds in a row; last: {why}"
            ));
        }
    }

    fn fruitful(&self) {
        let mut f = self.fruitless_state();
        if f.1.is_none() {
            f.0 = 0;
        }
    }

    /// Why the source is given up, if it is: its requests then fail at once (and go to the
    /// full downloader, which tries every source and handles `BUSY` with its queue place).
    fn dead(&self) -> Option<String> {
        self.fruitless_state().1.clone()
    }

    fn again(&self) -> std::sync::MutexGuard<'_, VecDeque<Job>> {
        self.again.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn give_back(&self, jobs: Vec<Job>) {
        self.again().extend(jobs);
        self.given_back.notify_one();
    }

    /// Up to `window` jobs, given-back ones first; waits for one; `None` once the queue is
    /// closed and empty.
    async fn take(&self, window: usize) -> Option<Vec<Job>> {
        loop {
            let mut batch: Vec<Job> = {
                let mut again = self.again();
                let n = again.len().min(window);
                again.drain(..n).collect()
            };
            if !batch.is_empty() {
                // Top up with new ones unless another connection is waiting on them.
                if let Ok(mut rx) = self.new.try_lock() {
                    fill(&mut batch, &mut rx, window);
                }
                return Some(batch);
            }
            let mut rx = self.new.lock().await;
            if !self.again().is_empty() {
                continue;
            }
            tokio::select! {
                job = rx.recv() => match job {
                    Some(job) => batch.push(job),
                    None if self.again().is_empty() => return None,
                    None => continue,
                },
                () = self.given_back.notified() => continue,
            }
            fill(&mut batch, &mut rx, window);
            return Some(batch);
        }
    }
}

fn fill(batch: &mut Vec<Job>, rx: &mut mpsc::Receiver<Job>, window: usize) {
    while batch.len() < window {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

/// The links to every source asked so far; dropping it closes them once their queues drain.
pub struct SourceLinks {
    config: LinkConfig,
    tls: Option<Tls>,
    relay: Option<super::RelayRoute>,
    queues: Mutex<HashMap<LinkTarget, mpsc::Sender<Job>>>,
    /// A UDP socket for QUIC and hole punching, when set.
    udp: Option<Arc<super::udp::UdpRoute>>,
}

impl SourceLinks {
    /// No links yet; each source gets its connections when it is first asked. Sources see the
    /// key of `tls` (a fresh anonymous one per connection if `None`).
    pub fn new(config: LinkConfig, tls: Option<Tls>) -> Self {
        SourceLinks {
            config,
            tls,
            relay: None,
            queues: Mutex::new(HashMap::new()),
            udp: None,
        }
    }

    /// Reaches sources over this UDP socket too (QUIC, hole punching).
    pub fn with_udp(mut self, udp: Option<Arc<super::udp::UdpRoute>>) -> Self {
        self.udp = udp;
        self
    }

    /// Sources listed by the index `relay` are reached through it when they have no address,
    /// or theirs cannot be connected to (§7.10).
    pub fn with_relay(mut self, relay: Option<super::RelayRoute>) -> Self {
        self.relay = relay;
        self
    }

    /// Fetches piece 0 of `id` from `addr` and returns it if it is the whole file `id` (its
    /// bytes hash to `id` as a root, which a piece of a larger file never does).
    /// With it, how the connection reached the source.
    pub async fn fetch_whole(
        &self,
        source: &Source,
        id: ContentId,
    ) -> Result<(Bytes, Route), LinkError> {
        let queue = self.queue(source);
        let (reply, answer) = oneshot::channel();
        let job = Job { id, busy: 0, reply };
        queue.send(job).await.map_err(|_| LinkError::Closed)?;
        answer.await.map_err(|_| LinkError::Closed)?
    }

    fn queue(&self, source: &Source) -> mpsc::Sender<Job> {
        let target = (source.addr.clone(), source.key);
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(q) = queues.get(&target) {
            return q.clone();
        }
        let (tx, rx) = mpsc::channel(self.config.window * self.config.connections.max(1) * 4);
        let queue = Arc::new(Queue {
            new: tokio::sync::Mutex::new(rx),
            again: Mutex::new(VecDeque::new()),
            given_back: Notify::new(),
            fruitless: Mutex::new((0, None)),
        });
        for _ in 0..self.config.connections.max(1) {
            let link = Link {
                source: source.clone(),
                tls: self.tls.clone(),
                relay: self.relay.clone(),
                udp: self.udp.clone(),
            };
            tokio::spawn(run_link(link, queue.clone(), self.config));
        }
        queues.insert(target, tx.clone());
        tx
    }
}

/// One connection to the link's address, serving queued jobs in batches of up to `window` until the
/// queue closes. A broken connection fails the jobs in flight and is reopened for the next; a
/// reused one that fails before any reply (the peer closed it meanwhile) is reopened and the
/// batch sent again, once. An idle connection is closed (it holds an upload slot).
/// A source's address and the key it must hold: one set of links each.
type LinkTarget = (String, Option<Digest>);

/// Whom a link connects to, and as whom.
struct Link {
    source: Source,
    tls: Option<Tls>,
    relay: Option<super::RelayRoute>,
    udp: Option<Arc<super::udp::UdpRoute>>,
}

async fn run_link(link: Link, queue: Arc<Queue>, config: LinkConfig) {
    let window = config.window.max(1);
    let mut client: Option<PeerClient> = None;
    loop {
        let batch = match client {
            Some(_) => match tokio::time::timeout(config.idle_close, queue.take(window)).await {
                Ok(batch) => batch,
                Err(_) => {
                    client = None;
                    continue;
                }
            },
            None => queue.take(window).await,
        };
        let Some(mut batch) = batch else {
            return;
        };
        if let Some(why) = queue.dead() {
            fail_all(batch, &why);
            continue;
        }
        let mut reused = client.is_some();
        let outcome = loop {
            let c = match client.take() {
                Some(c) => c,
                None => match super::connect_source(
                    &link.source,
                    link.tls.as_ref(),
                    link.relay.as_ref(),
                    link.udp.as_deref(),
                    config.timing.limits,
                )
                .await
                {
                    Ok(c) => c,
                    Err(e) => break Round::Failed(batch, e.to_string()),
                },
            };
            match exchange(c, batch, &config).await {
                Round::Failed(jobs, _) if reused => {
                    reused = false;
                    batch = jobs;
                }
                other => break other,
            }
        };
        match outcome {
            Round::Failed(jobs, why) => {
                queue.fruitless(&why, config.max_fruitless);
                fail_all(jobs, &why);
            }
            Round::Done {
                client: c,
                busy,
                delivered,
            } => {
                client = c.map(|c| *c);
                match delivered {
                    0 => queue.fruitless("answered no request with a file", config.max_fruitless),
                    _ => queue.fruitful(),
                }
                if !busy.is_empty() {
                    // Another connection may hold a slot: it takes them; this one waits its turn.
                    queue.give_back(busy);
                    tokio::time::sleep(config.timing.busy_retry).await;
                }
            }
        }
    }
}

fn fail_all(jobs: Vec<Job>, why: &str) {
    for job in jobs {
        let _ = job.reply.send(Err(LinkError::Source(why.to_string())));
    }
}

/// How one batch went.
enum Round {
    /// Nothing was answered: the jobs are untouched (and may be sent again).
    Failed(Vec<Job>, String),
    /// Every job was answered or is to be asked again (`busy`); `client` if still in step.
    Done {
        // Boxed: a client (its connection and buffers) is far larger than a failure.
        client: Option<Box<PeerClient>>,
        busy: Vec<Job>,
        delivered: usize,
    },
}

/// Sends every job's request, then answers each in order.
async fn exchange(mut c: PeerClient, batch: Vec<Job>, config: &LinkConfig) -> Round {
    let route = super::route(&c);
    for job in &batch {
        if let Err(e) = c.request_piece(job.id, 0).await {
            return Round::Failed(batch, e.to_string());
        }
    }
    if let Err(e) = c.flush().await {
        return Round::Failed(batch, e.to_string());
    }
    let (mut busy, mut delivered, mut answered) = (Vec::new(), 0, 0);
    let mut jobs = batch.into_iter();
    while let Some(mut job) = jobs.next() {
        let answer = match c.next_piece().await {
            Ok(p) if p.index != 0 => Err(LinkError::WrongPiece { received: p.index }),
            Ok(p) => whole_file(job.id, &p.data).map(|b| (b, route.clone())),
            Err(PeerClientError::Protocol(ProtocolError::Remote(e)))
                if e.code == ErrorCode::Busy && job.busy < config.max_busy =>
            {
                job.busy += 1;
                busy.push(job);
                answered += 1;
                continue;
            }
            Err(PeerClientError::Protocol(ProtocolError::Remote(e))) => Err(LinkError::Refused {
                code: e.code,
                message: e.message,
            }),
            Err(e) if answered == 0 => {
                let mut all = vec![job];
                all.extend(jobs);
                return Round::Failed(all, e.to_string());
            }
            Err(e) => {
                // Out of step or gone: this and every later job fail; the link reconnects.
                let why = e.to_string();
                let _ = job.reply.send(Err(LinkError::Source(why.clone())));
                fail_all(jobs.collect(), &why);
                return Round::Done {
                    client: None,
                    busy,
                    delivered,
                };
            }
        };
        answered += 1;
        delivered += usize::from(answer.is_ok());
        let _ = job.reply.send(answer);
    }
    Round::Done {
        client: Some(Box::new(c)),
        busy,
        delivered,
    }
}

/// The bytes as a file of their own if they hash to `id`; copied, so the connection's read
/// buffer is free again at once (holding a slice of it would make every next read fault in
/// fresh pages).
fn whole_file(id: ContentId, data: &Bytes) -> Result<Bytes, LinkError> {
    if data.len() as u64 > PIECE_SIZE || ContentId::from(blake3::hash(data)) != id {
        crate::metrics::node().pieces_rejected.inc();
        return Err(LinkError::NotTheFile {
            id,
            len: data.len(),
        });
    }
    crate::metrics::node().piece_verified(data.len() as u64);
    Ok(Bytes::copy_from_slice(data))
}
