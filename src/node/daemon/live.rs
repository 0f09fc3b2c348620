//! The live figures of running items (bytes, sources, rate), how an item is shown with them,
//! and the tick that sends them to event subscribers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{ItemView, MAX_PARALLEL, NodeEvent, NodeHandle, SourceView, lock};
use crate::node::queue::{Item, ItemState};
use crate::protocol::FileHit;

/// How often live progress is sent to event subscribers.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);

/// Sources of an item shown, at most.
const MAX_SOURCES_SHOWN: usize = 32;

/// Live figures of a running item.
#[derive(Default)]
pub(super) struct Live {
    /// Bytes of the files of the item still downloading, by their position.
    pub(super) files: HashMap<usize, (u64, u64, usize)>,
    /// Bytes of the files done.
    pub(super) bytes_finished: u64,
    pub(super) files_done: u64,
    pub(super) files_total: Option<u64>,
    pub(super) bytes_total: Option<u64>,
    pub(super) sources: Vec<SourceView>,
    pub(super) rate: f64,
    pub(super) sample: Option<(Instant, u64)>,
}

impl Live {
    pub(super) fn bytes_done(&self) -> u64 {
        self.bytes_finished + self.files.values().map(|f| f.0).sum::<u64>()
    }

    pub(super) fn add_sources(&mut self, hit: &FileHit) {
        for p in &hit.peers {
            if self.sources.len() >= MAX_SOURCES_SHOWN {
                return;
            }
            let address = crate::protocol::host::socket_addr(&p.host, p.port)
                .map(|a| a.to_string())
                .unwrap_or_else(|_| format!("{}:{}", p.host, p.port));
            if !self.sources.iter().any(|s| s.address == address) {
                self.sources.push(SourceView {
                    peer_id: p.peer_id,
                    address,
                    // Until connected, as the index lists it (§7.10).
                    reached: match p.reach.as_deref() {
                        Some(crate::protocol::relay::reach::RELAY) => "relayed",
                        _ => "direct",
                    },
                    path: p.path.clone(),
                });
            }
        }
    }

    /// How each source of a finished file was reached, as its download found.
    pub(super) fn reached(&mut self, sources: &[crate::download::SourceReport]) {
        for r in sources {
            let Some(how) = r.reached else { continue };
            if let Some(s) = self.sources.iter_mut().find(|s| {
                (!r.addr.is_empty() && s.address == r.addr)
                    || r.peer_id.is_some_and(|id| id != 0 && id == s.peer_id)
            }) {
                s.reached = how;
            }
        }
    }

    /// Updates the rate from the bytes done now (smoothed over samples a second or more apart).
    pub(super) fn sample(&mut self, now: Instant) {
        let done = self.bytes_done();
        match self.sample {
            Some((at, before)) if now.duration_since(at) >= Duration::from_secs(1) => {
                let r = done.saturating_sub(before) as f64 / now.duration_since(at).as_secs_f64();
                self.rate = if self.rate == 0.0 {
                    r
                } else {
                    0.5 * self.rate + 0.5 * r
                };
                self.sample = Some((now, done));
            }
            Some(_) => {}
            None => self.sample = Some((now, done)),
        }
    }
}

impl NodeHandle {
    /// Sends the running items' live figures every [`PROGRESS_INTERVAL`].
    pub(super) async fn tick(self) {
        let mut every = tokio::time::interval(PROGRESS_INTERVAL);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                () = self.inner.stop.cancelled() => return,
            }
            if self.inner.events.receiver_count() == 0 || lock(&self.inner.running).is_empty() {
                continue;
            }
            if let Ok((items, _)) = self
                .inner
                .queue
                .list(Some(ItemState::Running), 0, MAX_PARALLEL)
            {
                let items = items.into_iter().map(|i| self.view(i)).collect();
                let _ = self.inner.events.send(NodeEvent::Progress { items });
            }
        }
    }

    pub(super) fn item_changed(&self, id: i64) {
        if let Ok(item) = self.inner.queue.get(id) {
            let item = Box::new(self.view(item));
            let _ = self.inner.events.send(NodeEvent::Item { item });
        }
    }

    pub(super) fn view(&self, item: Item) -> ItemView {
        let live = lock(&self.inner.live);
        match live
            .get(&item.id)
            .filter(|_| item.state == ItemState::Running)
        {
            Some(l) => {
                let mut item = item;
                item.bytes_done = l.bytes_done();
                item.bytes_total = l.bytes_total.or(item.bytes_total);
                item.files_done = l.files_done;
                item.files_total = l.files_total.or(item.files_total);
                let rate = l.rate as u64;
                let eta_seconds = match (item.bytes_total, rate) {
                    (Some(t), r) if r > 0 => Some(t.saturating_sub(item.bytes_done) / r),
                    _ => None,
                };
                ItemView {
                    rate: Some(rate),
                    eta_seconds,
                    active_sources: l.files.values().map(|f| f.2).sum(),
                    sources: l.sources.clone(),
                    item,
                }
            }
            None => ItemView {
                item,
                rate: None,
                eta_seconds: None,
                active_sources: 0,
                sources: Vec::new(),
            },
        }
    }
}
