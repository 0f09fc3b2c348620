//! The queue as the API changes it: add (items checked first), list, pause, cancel, resume,
//! move and remove items.

use super::search::blank;
use super::{ItemView, NodeError, NodeEvent, NodeHandle, Page, lock};
use crate::content::ContentId;
use crate::node::FolderSpec;
use crate::node::queue::{ItemKind, ItemState, NewItem};

/// The longest target or name of a queue item, in characters (the API document's `maxLength`).
pub const MAX_TEXT: usize = 4096;

impl NodeHandle {
    /// Adds items at the end of the queue; their ids.
    pub fn add(&self, items: Vec<NewItem>) -> Result<Vec<i64>, NodeError> {
        if items.len() > crate::node::queue::MAX_ADD {
            return Err(NodeError::BadValue(format!(
                "at most {} items at once",
                crate::node::queue::MAX_ADD
            )));
        }
        for it in &items {
            check_new(it)?;
        }
        let ids = self.inner.queue.add(&items)?;
        let _ = self
            .inner
            .events
            .send(NodeEvent::Added { ids: ids.clone() });
        self.inner.wake.notify_one();
        Ok(ids)
    }

    /// One item.
    pub fn item(&self, id: i64) -> Result<ItemView, NodeError> {
        Ok(self.view(self.inner.queue.get(id)?))
    }

    /// A page of the queue (only items in `state`, if given).
    pub fn list(
        &self,
        state: Option<ItemState>,
        offset: usize,
        limit: usize,
    ) -> Result<Page, NodeError> {
        let (items, total) = self.inner.queue.list(state, offset, limit)?;
        Ok(Page {
            items: items.into_iter().map(|i| self.view(i)).collect(),
            total,
            offset,
        })
    }

    /// Stops a running item, or sets one aside: `to` is paused or cancelled. Its partial
    /// files stay (a paused item resumes from them).
    fn stop_item(&self, id: i64, to: ItemState) -> Result<ItemView, NodeError> {
        let task = lock(&self.inner.running).remove(&id);
        if let Some(task) = &task {
            task.abort();
        }
        let live = lock(&self.inner.live).remove(&id);
        if let Some(l) = live {
            let _ = self.inner.queue.set_progress(
                id,
                l.bytes_done(),
                l.bytes_total,
                l.files_done,
                l.files_total,
            );
        }
        let item = self.inner.queue.set_state(id, to)?;
        if task.is_some() {
            self.inner.wake.notify_one();
        }
        self.item_changed(id);
        Ok(self.view(item))
    }

    /// Pauses item `id` (queued or running).
    pub fn pause(&self, id: i64) -> Result<ItemView, NodeError> {
        self.stop_item(id, ItemState::Paused)
    }

    /// Cancels item `id` (queued, running, paused or failed).
    pub fn cancel(&self, id: i64) -> Result<ItemView, NodeError> {
        self.stop_item(id, ItemState::Cancelled)
    }

    /// Queues item `id` again (paused, or failed: a retry).
    pub fn resume(&self, id: i64) -> Result<ItemView, NodeError> {
        let item = self.inner.queue.set_state(id, ItemState::Queued)?;
        self.item_changed(id);
        self.inner.wake.notify_one();
        Ok(self.view(item))
    }

    /// Moves item `id` to `position` in the queue (0: first).
    pub fn move_to(&self, id: i64, position: usize) -> Result<ItemView, NodeError> {
        self.inner.queue.move_to(id, position)?;
        self.item_changed(id);
        Ok(self.view(self.inner.queue.get(id)?))
    }

    /// Removes a finished item.
    pub fn remove(&self, id: i64) -> Result<(), NodeError> {
        self.inner.queue.remove(id)?;
        let _ = self.inner.events.send(NodeEvent::Removed {
            ids: vec![id],
            finished: false,
        });
        Ok(())
    }

    /// Removes every finished item; how many.
    pub fn remove_finished(&self) -> Result<usize, NodeError> {
        let n = self.inner.queue.remove_finished()?;
        let _ = self.inner.events.send(NodeEvent::Removed {
            ids: Vec::new(),
            finished: true,
        });
        Ok(n)
    }
}

fn check_new(it: &NewItem) -> Result<(), NodeError> {
    let bad = |m: String| Err(NodeError::BadValue(m));
    match it.kind {
        ItemKind::File if it.target.parse::<ContentId>().is_err() => bad(format!(
            "{:?} is not a content id (64 hex digits)",
            it.target
        )),
        ItemKind::Folder if FolderSpec::parse(&it.target).is_none() => {
            bad(format!("{:?} is not PEER:PATH", it.target))
        }
        ItemKind::Query if blank(&it.target) => bad("the query is empty".into()),
        _ if it.target.chars().count() > MAX_TEXT || it.name.chars().count() > MAX_TEXT => bad(
            format!("a target or name is longer than {MAX_TEXT} characters"),
        ),
        _ if it.sources.len() > 256 => bad("more than 256 sources".into()),
        _ => Ok(()),
    }
}
