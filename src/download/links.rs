//! `SourceLinks`: a few long-lived connections per source, each with many single-piece requests in flight.
//!
//! Fetching thousands of small files one request at a time per connection pays a round trip,
//! two wake-ups and two system calls per file, and opening a connection per file also takes an
//! upload slot each. Here every source gets at most `connections` connections; each takes up
//! to `window` queued requests at once, sends them together and hands each reply to its caller
//! in order. A request answered `BUSY` goes back to the source's queue, where a connection that
//! holds an upload slot takes it; the busy connection pauses before asking again.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::content::{ContentId, PIECE_SIZE};
use crate::peer::{PeerClient, PeerClientError};
use crate::protocol::{Limits, ProtocolError, code};

/// How the links to sources behave.
#[derive(Debug, Clone, Copy)]
pub struct LinkConfig {
    /// Connection time limits. Default: 15 s to receive a reply, 30 s to send.
    pub limits: Limits,
    /// Connections per source. Default: 2.
    pub connections: usize,
    /// Requests in flight per connection. Default: 32.
    pub window: usize,
    /// Pause before asking a busy source again. Default: 1 s.
    pub busy_retry: Duration,
    /// `BUSY` answers one request takes before it fails. Default: 30.
    pub max_busy: u32,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            limits: Limits {
                read_timeout: Duration::from_secs(15),
                write_timeout: Duration::from_secs(30),
            },
            connections: 2,
            window: 32,
            busy_retry: Duration::from_secs(1),
            max_busy: 30,
        }
    }
}

/// Why a source did not deliver a whole small file.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LinkError {
    #[error("{0}")]
    Source(String),
    #[error("answered {code}: {message}")]
    Refused { code: u16, message: String },
    #[error("sent piece {received} where 0 was due")]
    WrongPiece { received: u32 },
    #[error("sent {len} bytes that do not hash to {id}")]
    NotTheFile { id: ContentId, len: usize },
    #[error("the link to the source was closed")]
    Closed,
}

struct Job {
    id: ContentId,
    busy: u32,
    reply: oneshot::Sender<Result<Bytes, LinkError>>,
}

/// One source's queue, shared by its connections: new requests, and requests given back.
struct Queue {
    new: tokio::sync::Mutex<mpsc::Receiver<Job>>,
    again: Mutex<VecDeque<Job>>,
    given_back: Notify,
}

impl Queue {
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
    queues: Mutex<HashMap<String, mpsc::Sender<Job>>>,
}

impl SourceLinks {
    pub fn new(config: LinkConfig) -> Self {
        SourceLinks {
            config,
            queues: Mutex::new(HashMap::new()),
        }
    }

    /// Fetches piece 0 of `id` from `addr` and returns it if it is the whole file `id` (its
    /// bytes hash to `id` as a root, which a piece of a larger file never does).
    pub async fn fetch_whole(&self, addr: &str, id: ContentId) -> Result<Bytes, LinkError> {
        let queue = self.queue(addr);
        let (reply, answer) = oneshot::channel();
        let job = Job { id, busy: 0, reply };
        queue.send(job).await.map_err(|_| LinkError::Closed)?;
        answer.await.map_err(|_| LinkError::Closed)?
    }

    fn queue(&self, addr: &str) -> mpsc::Sender<Job> {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(q) = queues.get(addr) {
            return q.clone();
        }
        let (tx, rx) = mpsc::channel(self.config.window * self.config.connections.max(1) * 4);
        let queue = Arc::new(Queue {
            new: tokio::sync::Mutex::new(rx),
            again: Mutex::new(VecDeque::new()),
            given_back: Notify::new(),
        });
        for _ in 0..self.config.connections.max(1) {
            tokio::spawn(run_link(addr.to_string(), queue.clone(), self.config));
        }
        queues.insert(addr.to_string(), tx.clone());
        tx
    }
}

/// One connection to `addr`, serving queued jobs in batches of up to `window` until the
/// queue closes. A broken connection fails the jobs in flight and is reopened for the next.
async fn run_link(addr: String, queue: Arc<Queue>, config: LinkConfig) {
    let mut client: Option<PeerClient> = None;
    while let Some(batch) = queue.take(config.window.max(1)).await {
        let c = match client.take() {
            Some(c) => c,
            None => match PeerClient::connect(&addr, config.limits).await {
                Ok(c) => c,
                Err(e) => {
                    fail_all(batch, &e.to_string());
                    continue;
                }
            },
        };
        let (c, busy) = exchange(c, batch, &config).await;
        client = c;
        if !busy.is_empty() {
            // Another connection may hold a slot: it takes them; this one waits its turn.
            queue.give_back(busy);
            tokio::time::sleep(config.busy_retry).await;
        }
    }
}

fn fail_all(jobs: Vec<Job>, why: &str) {
    for job in jobs {
        let _ = job.reply.send(Err(LinkError::Source(why.to_string())));
    }
}

/// Sends every job's request, then answers each in order. Returns the connection if it is
/// still in step, and the jobs to ask again (busy).
async fn exchange(
    mut c: PeerClient,
    batch: Vec<Job>,
    config: &LinkConfig,
) -> (Option<PeerClient>, Vec<Job>) {
    for job in &batch {
        if let Err(e) = c.request_piece(job.id, 0).await {
            fail_all(batch, &e.to_string());
            return (None, Vec::new());
        }
    }
    if let Err(e) = c.flush().await {
        fail_all(batch, &e.to_string());
        return (None, Vec::new());
    }
    let mut again = Vec::new();
    let mut jobs = batch.into_iter();
    while let Some(mut job) = jobs.next() {
        let answer = match c.next_piece().await {
            Ok(p) if p.index != 0 => Err(LinkError::WrongPiece { received: p.index }),
            Ok(p) => whole_file(job.id, &p.data),
            Err(PeerClientError::Protocol(ProtocolError::Remote(e)))
                if e.code == code::BUSY && job.busy < config.max_busy =>
            {
                job.busy += 1;
                again.push(job);
                continue;
            }
            Err(PeerClientError::Protocol(ProtocolError::Remote(e))) => Err(LinkError::Refused {
                code: e.code,
                message: e.message,
            }),
            Err(e) => {
                // Out of step or gone: this and every later job fail; the link reconnects.
                let why = e.to_string();
                let _ = job.reply.send(Err(LinkError::Source(why.clone())));
                fail_all(jobs.collect(), &why);
                return (None, again);
            }
        };
        let _ = job.reply.send(answer);
    }
    (Some(c), again)
}

/// The bytes as a file of their own if they hash to `id`; copied, so the connection's read
/// buffer is free again at once (holding a slice of it would make every next read fault in
/// fresh pages).
fn whole_file(id: ContentId, data: &Bytes) -> Result<Bytes, LinkError> {
    if data.len() as u64 > PIECE_SIZE || ContentId::from(blake3::hash(data)) != id {
        return Err(LinkError::NotTheFile {
            id,
            len: data.len(),
        });
    }
    Ok(Bytes::copy_from_slice(data))
}
