//! The index's answers to `Listen`, `RelayConnect` and `RelayAccept` (docs/PROTOCOL.md §7.10):
//! each takes its connection over (a control channel, or one end of a splice) unless refused,
//! or sent to a volunteer relay (`RelayVia`).

use tokio_util::sync::CancellationToken;
use tracing::info;

use super::super::relay::{self, Accepted, Routed};
use super::{Handler, RequestError, code_kind, request_kind};
use crate::content::Digest;
use crate::identity::Fingerprint;
use crate::protocol::relay::{RelayAccept, RelayConnect, Relayed};
use crate::protocol::{ErrorCode, ErrorReply, IndexRequest, Message};

impl Handler {
    /// Answers a relay request: `Ok(Some(self))` to go on reading requests (it was refused),
    /// `Ok(None)` when the connection was taken over and has ended.
    pub(super) async fn relay_request(
        self,
        request: IndexRequest,
        shutdown: &CancellationToken,
    ) -> Result<Option<Handler>, RequestError> {
        self.metrics.requests.get(request_kind(&request)).inc();
        if let Some(g) = &self.group {
            let revoked = g.is_revoked(&self.key);
            if revoked || !self.member {
                let (code, why) = super::super::group::forbidden(revoked);
                return self.refuse(code, why).await;
            }
        }
        match request {
            IndexRequest::Listen => self.listen(shutdown).await,
            IndexRequest::RelayConnect(rc) => self.relay_connect(rc, shutdown).await,
            IndexRequest::RelayAccept(ra) => self.relay_accept(ra).await,
            _ => {
                self.refuse(ErrorCode::Internal, "not a relay request")
                    .await
            }
        }
    }

    /// Sends an error reply; the connection goes on.
    async fn refuse(
        mut self,
        code: ErrorCode,
        why: impl Into<String>,
    ) -> Result<Option<Handler>, RequestError> {
        self.metrics.errors.get(code_kind(code)).inc();
        self.conn
            .reply(&Message::Error(ErrorReply::new(code, why)))
            .await?;
        Ok(Some(self))
    }

    async fn listen(
        mut self,
        shutdown: &CancellationToken,
    ) -> Result<Option<Handler>, RequestError> {
        let (peer_id, id, rx) = match self.relay.listen(&self.key) {
            Ok(l) => l,
            Err((code, why)) => return self.refuse(code, why).await,
        };
        // A registered peer's channel: closed to make room only after strangers' connections.
        if let Some(a) = self.conn.admission() {
            a.trusted();
        }
        info!(peer_id, addr = %self.addr, "control channel open");
        let r = relay::control_channel(&mut self.conn, rx, shutdown).await;
        self.relay.unlisten(&self.key, id);
        info!(peer_id, addr = %self.addr, "control channel closed");
        r?;
        Ok(None)
    }

    async fn relay_connect(
        mut self,
        rc: RelayConnect,
        shutdown: &CancellationToken,
    ) -> Result<Option<Handler>, RequestError> {
        let group = self.group.clone();
        let revoked = |k: &Digest| group.as_ref().is_some_and(|g| g.is_revoked(k));
        let mut waiting = match self.relay.request(self.key, self.addr.ip(), &rc, revoked) {
            Ok(Routed::Here(w)) => w,
            Ok(Routed::Via(via)) => {
                info!(
                    from = %self.addr,
                    key = %Fingerprint(self.key),
                    via = %via.addr,
                    "relay request sent to a volunteer"
                );
                self.conn.reply(&Message::RelayVia(via)).await?;
                return Ok(Some(self));
            }
            Err((code, why)) => return self.refuse(code, why).await,
        };
        let peer_id = waiting.peer_id;
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            a = waiting.accepted() => a,
        };
        let Some(Accepted { mut conn, addr }) = accepted else {
            let secs = self.relay.pending_timeout().as_secs();
            drop(waiting);
            return self
                .refuse(
                    ErrorCode::Unreachable,
                    format!("peer {peer_id} did not accept the relayed connection within {secs} s"),
                )
                .await;
        };
        let target = waiting.target;
        let Some(slot) = waiting.take_slot() else {
            return self
                .refuse(ErrorCode::Internal, "relay slot already taken")
                .await;
        };
        drop(waiting);
        // The reached peer first: it must be ready before the requester's TLS reaches it.
        let to_target = Relayed {
            peer: self.key,
            addr: Some(self.addr.to_string()),
        };
        if let Err(e) = conn.send(&Message::Relayed(to_target)).await {
            return self
                .refuse(
                    ErrorCode::Unreachable,
                    format!("peer {peer_id}'s relayed connection failed: {e}"),
                )
                .await;
        }
        let to_requester = Relayed {
            peer: target,
            addr: None,
        };
        self.conn.send(&Message::Relayed(to_requester)).await?;
        info!(
            peer_id,
            from = %self.addr,
            key = %Fingerprint(self.key),
            to = %addr,
            "relaying"
        );
        let (a, a_rest, _a_admission) = self.conn.into_parts();
        let (b, b_rest, _b_admission) = conn.into_parts();
        relay::splice(&self.relay, slot, (a, a_rest), (b, b_rest), shutdown).await;
        info!(peer_id, from = %self.addr, "relayed connection closed");
        Ok(None)
    }

    async fn relay_accept(self, ra: RelayAccept) -> Result<Option<Handler>, RequestError> {
        let tx = match self.relay.accept(&self.key, &ra.token) {
            Ok(tx) => tx,
            Err((code, why)) => return self.refuse(code, why).await,
        };
        let accepted = Accepted {
            conn: self.conn,
            addr: self.addr,
        };
        if let Err(back) = tx.send(accepted) {
            // The requester gave up in the same instant.
            let mut conn = back.conn;
            conn.send_error(ErrorCode::Unreachable, "the requester is gone")
                .await;
        }
        Ok(None)
    }
}
