//! What the node shows of itself: the share, run in the background and watched for its view,
//! and the node at a glance.

use tokio::net::TcpListener;

use super::start_share;
use super::{
    ItemView, MAX_PARALLEL, NodeError, NodeEvent, NodeHandle, NodeStatus, ShareView, SourceView,
    lock,
};
use crate::node::queue::ItemState;
use crate::node::{ShareConfig, ShareHandle};

impl NodeHandle {
    pub(super) async fn run_share(self, config: ShareConfig, listener: TcpListener) {
        let started = tokio::select! {
            r = start_share(config, listener) => r,
            () = self.inner.stop.cancelled() => return,
        };
        let mut share = match started {
            Ok(s) => s,
            Err(e) => {
                let e = crate::text::error_chain(&e);
                tracing::error!("the share did not start: {e}");
                lock(&self.inner.share).error = Some(e);
                self.share_changed();
                return;
            }
        };
        {
            let mut v = lock(&self.inner.share);
            v.started = true;
            v.listen = Some(share.local_addr.to_string());
            v.status = Some((&*share.status.borrow()).into());
        }
        self.share_changed();
        loop {
            tokio::select! {
                changed = share.status.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let st = (&*share.status.borrow_and_update()).into();
                    lock(&self.inner.share).status = Some(st);
                    self.share_changed();
                }
                () = self.inner.stop.cancelled() => break,
            }
        }
        ShareHandle::shutdown(share).await;
    }

    fn share_changed(&self) {
        let share = Box::new(self.share_view());
        let _ = self.inner.events.send(NodeEvent::Share { share });
    }

    fn share_view(&self) -> ShareView {
        let mut v = lock(&self.inner.share).clone();
        v.hashing = *lock(&self.inner.hashing);
        v
    }

    /// The node at a glance.
    pub fn status(&self) -> Result<NodeStatus, NodeError> {
        let (running, _) = self
            .inner
            .queue
            .list(Some(ItemState::Running), 0, MAX_PARALLEL)?;
        let transfers: Vec<ItemView> = running.into_iter().map(|i| self.view(i)).collect();
        let mut peers: Vec<SourceView> = Vec::new();
        for t in &transfers {
            for s in &t.sources {
                if !peers.iter().any(|p| p.address == s.address) {
                    peers.push(s.clone());
                }
            }
        }
        Ok(NodeStatus {
            queue: self.inner.queue.counts()?,
            transfers,
            share: self.share_view(),
            peers,
            uploads: self.inner.uploads.list(),
            settings: self.settings(),
            index: self.inner.index.clone(),
            dht: self.inner.dht.is_some(),
            private: self.inner.private,
            output: self.inner.output.display().to_string(),
        })
    }

    /// The share's status.
    pub fn share(&self) -> ShareView {
        self.share_view()
    }
}
