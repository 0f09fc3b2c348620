//! The queue runner: starts queued items while fewer than `parallel` run, downloads each
//! (a file, a folder, a query's files) and records how it ended.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use super::search::matching;
use super::{Live, NodeHandle, lock};
use crate::content::ContentId;
use crate::node::queue::{Item, ItemKind, ItemState};
use crate::node::{
    FolderFile, FolderSpec, GetError, GetEvent, GetOptions, add_dht_sources, download_hit,
    get_tree, lookup_many,
};
use crate::protocol::FileHit;

impl NodeHandle {
    /// Starts queued items, in order, while fewer than `parallel` run.
    pub(super) async fn run_queue(self) {
        loop {
            loop {
                let parallel = lock(&self.inner.settings).parallel;
                if lock(&self.inner.running).len() >= parallel || self.inner.stop.is_cancelled() {
                    break;
                }
                let next = match self.inner.queue.next_queued() {
                    Ok(Some(item)) => item,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!("queue: {e}");
                        break;
                    }
                };
                let item = match self.inner.queue.set_state(next.id, ItemState::Running) {
                    Ok(item) => item,
                    Err(e) => {
                        tracing::error!("queue: {e}");
                        break;
                    }
                };
                self.start_item(item);
            }
            tokio::select! {
                () = self.inner.wake.notified() => {}
                () = self.inner.stop.cancelled() => return,
            }
        }
    }

    fn start_item(&self, item: Item) {
        let id = item.id;
        lock(&self.inner.live).insert(
            id,
            Live {
                bytes_total: item.bytes_total.or(item.size),
                files_total: item.files_total,
                ..Live::default()
            },
        );
        let me = self.clone();
        // The entry goes in before the task can end (it removes it), under the same lock.
        let mut running = lock(&self.inner.running);
        let task = self.tasks.spawn(async move {
            let result = me.run_item(&item).await;
            me.end_item(id, result);
        });
        running.insert(id, task.abort_handle());
        drop(running);
        self.item_changed(id);
    }

    fn end_item(&self, id: i64, result: Result<Option<String>, String>) {
        if lock(&self.inner.running).remove(&id).is_none() {
            // Paused or cancelled meanwhile: that is its state now.
            return;
        }
        let live = lock(&self.inner.live).remove(&id);
        if let Some(l) = &live {
            let _ = self.inner.queue.set_progress(
                id,
                l.bytes_done(),
                l.bytes_total,
                l.files_done,
                l.files_total,
            );
        }
        if let Err(e) = self.inner.queue.finish(id, result) {
            tracing::warn!("queue item {id}: {e}");
        }
        self.item_changed(id);
        self.inner.wake.notify_one();
    }

    /// Download options for item `id`: its progress goes to its live figures.
    fn options(&self, id: i64) -> GetOptions {
        let weak = Arc::downgrade(&self.inner);
        let events: crate::node::EventSink = Arc::new(move |e: GetEvent<'_>| {
            let Some(inner) = weak.upgrade() else { return };
            let mut live = lock(&inner.live);
            let Some(l) = live.get_mut(&id) else { return };
            match e {
                GetEvent::Found { hit, .. } | GetEvent::Started { hit, .. } => l.add_sources(hit),
                GetEvent::Progress { n, progress } => {
                    l.files
                        .insert(n, (progress.done, progress.total, progress.sources));
                    l.sample(Instant::now());
                }
                GetEvent::Done { n, result } => {
                    l.files.remove(&n);
                    l.files_done += 1;
                    if let Ok(r) = result {
                        l.bytes_finished += r.size;
                        l.reached(&r.sources);
                    }
                    l.sample(Instant::now());
                }
                _ => {}
            }
        });
        GetOptions {
            max_peers: 16,
            rate: Some(self.inner.download_rate.clone()),
            events: Some(events),
            tls: self.inner.tls.clone(),
            have_already: Some(self.have_already()),
            // Peers the index cannot reach are reached through it (§7.10).
            relay: self
                .inner
                .index
                .clone()
                .map(|index| crate::download::RelayRoute {
                    index,
                    index_key: self.inner.index_key,
                }),
            // Sources no one can connect to are punched to through the index (§7.11).
            udp: self.inner.udp.clone(),
            ..GetOptions::default()
        }
    }

    /// Downloads one item; where it was saved (a file's path, a folder's directory).
    async fn run_item(&self, item: &Item) -> Result<Option<String>, String> {
        let opts = self.options(item.id);
        let parallel = lock(&self.inner.settings).parallel;
        let line = |e: &dyn std::error::Error| crate::text::error_chain(e);
        match item.kind {
            ItemKind::File => {
                let id: ContentId = item.target.parse().map_err(|e| format!("{e}"))?;
                let hit = self.find(id, item).await.map_err(|e| line(&e))?;
                if let Some(l) = lock(&self.inner.live).get_mut(&item.id) {
                    l.bytes_total = Some(hit.size);
                    l.files_total = Some(1);
                    l.add_sources(&hit);
                }
                let _ = self
                    .inner
                    .queue
                    .set_progress(item.id, 0, Some(hit.size), 0, Some(1));
                let _ = self.inner.queue.set_info(item.id, &hit.name, hit.size);
                let r = download_hit(&hit, 0, &self.inner.output, &opts)
                    .await
                    .map_err(|e| line(&e))?;
                if let Some(l) = lock(&self.inner.live).get_mut(&item.id) {
                    l.files.clear();
                    l.bytes_finished = r.size;
                    l.files_done = 1;
                }
                Ok(Some(r.path.display().to_string()))
            }
            ItemKind::Folder => {
                let spec = FolderSpec::parse(&item.target)
                    .ok_or_else(|| format!("{:?} is not PEER:PATH", item.target))?;
                let mut client = self.connect().await.map_err(|e| line(&e))?;
                let listed = crate::node::list_folder(&mut client, &spec)
                    .await
                    .map_err(|e| line(&e))?;
                self.listed(item.id, &listed);
                let outcomes = get_tree(&mut client, listed, &self.inner.output, &opts, parallel)
                    .await
                    .map_err(|e| line(&e))?;
                self.outcomes(item.id, outcomes.into_iter().map(|o| (o.path, o.result)))
            }
            ItemKind::Query => {
                let mut client = self.connect().await.map_err(|e| line(&e))?;
                let listed = matching(&mut client, &item.target)
                    .await
                    .map_err(|e| line(&e))?;
                self.listed(item.id, &listed);
                let outcomes = get_tree(&mut client, listed, &self.inner.output, &opts, parallel)
                    .await
                    .map_err(|e| line(&e))?;
                self.outcomes(item.id, outcomes.into_iter().map(|o| (o.path, o.result)))
            }
        }
    }

    fn listed(&self, id: i64, listed: &[FolderFile]) {
        let total: u64 = listed.iter().map(|f| f.size).sum();
        if let Some(l) = lock(&self.inner.live).get_mut(&id) {
            l.bytes_total = Some(total);
            l.files_total = Some(listed.len() as u64);
        }
        let _ = self
            .inner
            .queue
            .set_progress(id, 0, Some(total), 0, Some(listed.len() as u64));
    }

    /// A folder's or query's result: its directory when every file came, else how many failed
    /// and the first error.
    fn outcomes(
        &self,
        id: i64,
        outcomes: impl Iterator<Item = (PathBuf, Result<crate::download::DownloadReport, GetError>)>,
    ) -> Result<Option<String>, String> {
        let (mut n, mut failed, mut first, mut bytes) = (0, 0, None, 0);
        for (_, r) in outcomes {
            n += 1;
            match r {
                Ok(r) => bytes += r.size,
                Err(e) => {
                    failed += 1;
                    first.get_or_insert_with(|| crate::text::error_chain(&e));
                }
            }
        }
        // Files found already there (or copied) tell no event: count them here.
        if let Some(l) = lock(&self.inner.live).get_mut(&id) {
            l.files.clear();
            l.files_done = n - failed;
            l.bytes_finished = bytes;
        }
        match first {
            None => Ok(Some(self.inner.output.display().to_string())),
            Some(e) => Err(format!("{failed} of {n} files failed; the first: {e}")),
        }
    }

    /// The sources of `id`: the index's (and the DHT's) now, else those it was added with.
    async fn find(&self, id: ContentId, item: &Item) -> Result<FileHit, GetError> {
        let mut found: Option<FileHit> = None;
        let mut why = None;
        if self.inner.index.is_some() {
            match self.connect().await {
                Ok(mut c) => match lookup_many(&mut c, &[id]).await {
                    Ok(mut r) => match r.pop() {
                        Some(Ok(hit)) => found = Some(hit),
                        Some(Err(e)) => why = Some(e),
                        None => {}
                    },
                    Err(e) => why = Some(GetError::IndexLost(crate::text::error_chain(&e))),
                },
                Err(e) => why = Some(GetError::IndexLost(e.to_string())),
            }
        }
        if let Some(dht) = &self.inner.dht {
            found = Some(add_dht_sources(dht, id, found, self.inner.tls.as_ref()).await);
        }
        if let Some(lan) = &self.inner.lan {
            let peers = lan.peers();
            if !peers.is_empty() {
                let tls = self.inner.tls.as_ref();
                found = Some(crate::node::add_lan_sources(&peers, id, found, tls).await);
            }
        }
        let mut hit = found.unwrap_or(FileHit {
            name: String::new(),
            size: item.size.unwrap_or(0),
            content_id: id,
            peers: Vec::new(),
        });
        if hit.peers.is_empty() {
            hit.peers = item.sources.clone();
        }
        if hit.name.is_empty() {
            hit.name = item.name.clone();
        }
        if hit.size == 0 {
            hit.size = item.size.unwrap_or(0);
        }
        match hit.peers.is_empty() {
            true => Err(why.unwrap_or(GetError::NoSource(id))),
            false => Ok(hit),
        }
    }
}
