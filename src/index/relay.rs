//! Rendezvous and relay (docs/PROTOCOL.md §7.10): the registered peers the index knows by key,
//! the control channels of those that listen (`Listen`, `Incoming`), the relay requests
//! waiting for their peer (`RelayConnect`, `RelayAccept`), and the splice of two connections
//! once both ends are there, within the relay's bounds (connections, rate, idle time).
//!
//! The index relays bytes only: the two peers run the peer protocol's own TLS inside the
//! splice, so it sees neither names nor contents.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::content::Digest;
use crate::identity::{Fingerprint, random_bytes};
use crate::metrics::IndexMetrics;
use crate::protocol::relay::{Incoming, RelayConnect, RelayToken, incoming_kind};
use crate::protocol::{Ack, Connection, ErrorCode, Message, ProtocolError};
use crate::rate::RateLimiter;
use crate::tls::SecureStream;

/// Default of [`RelayConfig::rate`]: bytes per second across all relayed traffic (10 MiB/s).
pub const RELAY_RATE: u64 = 10 * 1024 * 1024;
/// One member's relayed connections together get at most this share of [`RelayConfig::rate`]
/// (a quarter), whichever end of them it is: so a few members never take the whole relay.
pub const RELAY_MEMBER_SHARE: u64 = 4;
/// Default of [`RelayConfig::max_relayed`]: relayed connections at once, in all.
pub const MAX_RELAYED: usize = 256;
/// Default of [`RelayConfig::max_relayed_per_member`]: relayed connections one key is an end
/// of at once.
pub const MAX_RELAYED_PER_MEMBER: usize = 16;
/// Default of [`RelayConfig::pending_timeout`]: how long a `RelayConnect` waits for its
/// peer's `RelayAccept`; the token is worthless afterwards.
pub const RELAY_PENDING_TIMEOUT: Duration = Duration::from_secs(10);
/// Relay requests waiting for their peer at once, in all (beyond: `BUSY`).
pub const MAX_RELAY_PENDING: usize = 256;
/// Relay requests waiting at once from one IP address (beyond: `BUSY`).
pub const MAX_RELAY_PENDING_PER_IP: usize = 8;
/// `Incoming` frames queued for one control channel (beyond: `BUSY` to the requester).
pub const MAX_INCOMING_QUEUED: usize = 16;
/// How often a listening peer sends `Heartbeat` on its control channel: often enough that
/// NATs keep the TCP mapping (many drop idle ones after a few minutes) and that a dead
/// channel is noticed within a minute.
pub const LISTEN_KEEPALIVE: Duration = Duration::from_secs(25);
/// The index closes a control channel it heard nothing on for this long.
pub const LISTEN_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// A relayed connection on which no byte passed, either way, for this long is closed.
pub const RELAY_IDLE_TIMEOUT: Duration = Duration::from_secs(180);

/// Bytes read at once from one end of a splice.
const SPLICE_BUF: usize = 64 * 1024;

/// Settings of the index's relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Whether the index relays (`index --no-relay` turns it off: a peer it cannot reach is
    /// then refused with `UNREACHABLE`, as before relays). Default: on.
    pub enabled: bool,
    /// Bytes per second across all relayed traffic (`index --relay-rate`), 0 for no limit;
    /// each member gets at most a [`RELAY_MEMBER_SHARE`]th of it. Default: [`RELAY_RATE`].
    pub rate: u64,
    /// Default: [`MAX_RELAYED`].
    pub max_relayed: usize,
    /// Default: [`MAX_RELAYED_PER_MEMBER`].
    pub max_relayed_per_member: usize,
    /// Default: [`RELAY_PENDING_TIMEOUT`].
    pub pending_timeout: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            enabled: true,
            rate: RELAY_RATE,
            max_relayed: MAX_RELAYED,
            max_relayed_per_member: MAX_RELAYED_PER_MEMBER,
            pending_timeout: RELAY_PENDING_TIMEOUT,
        }
    }
}

/// A refusal: the error reply's code and message.
pub(super) type Refusal = (ErrorCode, String);

/// The reached peer's connection, handed to the requester's task, which splices it.
pub(super) struct Accepted {
    pub(super) conn: Connection<SecureStream>,
    pub(super) addr: SocketAddr,
}

/// What the index knows of one registered key.
struct Registered {
    peer_id: u64,
    /// The session number of the registration (a newer one replaces the entry).
    session: u64,
    /// Its control channel, if it listens.
    listener: Option<Listener>,
}

struct Listener {
    id: u64,
    tx: mpsc::Sender<Incoming>,
}

struct Pending {
    target: Digest,
    ip: IpAddr,
    tx: oneshot::Sender<Accepted>,
}

#[derive(Default)]
struct State {
    keys: HashMap<Digest, Registered>,
    ids: HashMap<u64, Digest>,
    pending: HashMap<RelayToken, Pending>,
    pending_per_ip: HashMap<IpAddr, usize>,
    relayed: usize,
    members: HashMap<Digest, MemberUse>,
}

/// One key's relayed connections, and the share of the rate they draw from.
struct MemberUse {
    relayed: usize,
    limiter: Option<Arc<RateLimiter>>,
}

/// The relay's shared state. Cheap to clone.
#[derive(Clone)]
pub(super) struct RelayHub {
    inner: Arc<Inner>,
}

struct Inner {
    config: RelayConfig,
    state: Mutex<State>,
    rate: Option<Arc<RateLimiter>>,
    metrics: IndexMetrics,
    next_listener: AtomicU64,
    /// Tests: every byte the index forwards, to show what a relay sees.
    #[cfg(test)]
    tap: Mutex<Option<Arc<Mutex<Vec<u8>>>>>,
}

impl RelayHub {
    pub(super) fn new(config: RelayConfig, metrics: IndexMetrics) -> RelayHub {
        RelayHub {
            inner: Arc::new(Inner {
                rate: (config.rate > 0).then(|| Arc::new(RateLimiter::new(config.rate))),
                config,
                state: Mutex::new(State::default()),
                metrics,
                next_listener: AtomicU64::new(1),
                #[cfg(test)]
                tap: Mutex::new(None),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long a relay request waits for its peer.
    pub(super) fn pending_timeout(&self) -> Duration {
        self.inner.config.pending_timeout
    }

    /// Whether the index relays at all.
    pub(super) fn enabled(&self) -> bool {
        self.inner.config.enabled
    }

    /// Records a successful `Register` of `key` (its control channel, if any, carries over).
    pub(super) fn registered(&self, key: Digest, peer_id: u64, session: u64) {
        let mut s = self.state();
        let listener = s.keys.remove(&key).and_then(|r| r.listener);
        s.ids.insert(peer_id, key);
        s.keys.insert(
            key,
            Registered {
                peer_id,
                session,
                listener,
            },
        );
    }

    /// The session `session` of `key` ended (closed or unregistered): unless a newer one
    /// replaced it, the key is forgotten and its control channel closed.
    pub(super) fn session_ended(&self, key: &Digest, session: u64) {
        let mut s = self.state();
        if s.keys.get(key).is_some_and(|r| r.session == session)
            && let Some(r) = s.keys.remove(key)
        {
            s.ids.remove(&r.peer_id);
        }
    }

    /// A `Listen` of `key`: its new control channel, which replaces any older one (closed).
    pub(super) fn listen(
        &self,
        key: &Digest,
    ) -> Result<(u64, u64, mpsc::Receiver<Incoming>), Refusal> {
        let mut s = self.state();
        let Some(r) = s.keys.get_mut(key) else {
            return Err((
                ErrorCode::Unauthorized,
                "Listen is for a registered peer: register this key first (on another connection)"
                    .into(),
            ));
        };
        let id = self.inner.next_listener.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(MAX_INCOMING_QUEUED);
        r.listener = Some(Listener { id, tx });
        Ok((r.peer_id, id, rx))
    }

    /// The control channel `id` of `key` closed.
    pub(super) fn unlisten(&self, key: &Digest, id: u64) {
        let mut s = self.state();
        if let Some(r) = s.keys.get_mut(key)
            && r.listener.as_ref().is_some_and(|l| l.id == id)
        {
            r.listener = None;
        }
    }

    /// A `RelayConnect` from `from` at `ip`: checks it, reserves a relayed connection for both
    /// ends, tells the target (`Incoming`) and returns what to wait on.
    pub(super) fn request(
        &self,
        from: Digest,
        ip: IpAddr,
        rc: &RelayConnect,
        revoked: impl Fn(&Digest) -> bool,
    ) -> Result<Waiting, Refusal> {
        let config = &self.inner.config;
        if !config.enabled {
            return Err((
                ErrorCode::Unreachable,
                "this index does not relay (it runs with --no-relay)".into(),
            ));
        }
        let mut s = self.state();
        let target = match (rc.peer_id, rc.key) {
            (None, None) => {
                return Err((
                    ErrorCode::BadRequest,
                    "RelayConnect names no peer: give peer_id or key".into(),
                ));
            }
            (Some(id), key) => match s.ids.get(&id) {
                Some(k) if key.is_none_or(|key| key == *k) => *k,
                Some(_) => {
                    return Err((
                        ErrorCode::BadRequest,
                        format!("peer {id} does not hold the key given"),
                    ));
                }
                None => {
                    return Err((
                        ErrorCode::NotFound,
                        format!("no peer {id} is online at this index"),
                    ));
                }
            },
            (None, Some(k)) => match s.keys.contains_key(&k) {
                true => k,
                false => {
                    return Err((
                        ErrorCode::NotFound,
                        format!(
                            "no peer with key {} is online at this index",
                            Fingerprint(k)
                        ),
                    ));
                }
            },
        };
        let Some(reg) = s.keys.get(&target) else {
            return Err((ErrorCode::NotFound, "no such peer online".into()));
        };
        let peer_id = reg.peer_id;
        if target == from {
            return Err((
                ErrorCode::BadRequest,
                format!("peer {peer_id} is this connection's own key"),
            ));
        }
        if revoked(&target) {
            return Err((
                ErrorCode::Forbidden,
                format!("peer {peer_id} is not a member of this group"),
            ));
        }
        let Some(listener) = &reg.listener else {
            return Err((
                ErrorCode::Unreachable,
                format!(
                    "peer {peer_id} is not listening for relayed connections \
                     (it is reached directly, or its control channel to the index is down)"
                ),
            ));
        };
        if s.pending.len() >= MAX_RELAY_PENDING
            || s.pending_per_ip.get(&ip).copied().unwrap_or(0) >= MAX_RELAY_PENDING_PER_IP
        {
            return Err((
                ErrorCode::Busy,
                "too many relay requests waiting; try again later".into(),
            ));
        }
        if s.relayed >= config.max_relayed {
            return Err((
                ErrorCode::Busy,
                format!(
                    "the relay carries its most connections ({}); try again later",
                    config.max_relayed
                ),
            ));
        }
        for k in [from, target] {
            if s.members.get(&k).map_or(0, |m| m.relayed) >= config.max_relayed_per_member {
                let who = match k == from {
                    true => "this key".to_string(),
                    false => format!("peer {peer_id}"),
                };
                return Err((
                    ErrorCode::Busy,
                    format!(
                        "{who} has its most relayed connections ({}); try again later",
                        config.max_relayed_per_member
                    ),
                ));
            }
        }
        let token = RelayToken(random_token().map_err(|e| (ErrorCode::Internal, e))?);
        let incoming = Incoming {
            token,
            from,
            kind: incoming_kind::RELAY.into(),
        };
        if listener.tx.try_send(incoming).is_err() {
            return Err((
                ErrorCode::Busy,
                format!("peer {peer_id} has too many relay requests waiting; try again later"),
            ));
        }
        let (tx, rx) = oneshot::channel();
        s.pending.insert(token, Pending { target, ip, tx });
        *s.pending_per_ip.entry(ip).or_default() += 1;
        // Reserved under the same lock as the checks: concurrent requests cannot pass a bound.
        let slot = self.slot(&mut s, from, target);
        drop(s);
        Ok(Waiting {
            hub: self.clone(),
            token,
            target,
            peer_id,
            rx,
            slot: Some(slot),
        })
    }

    /// A `RelayAccept` of `token` by `key`: the requester's sender, if the token is one
    /// waiting for this key.
    pub(super) fn accept(
        &self,
        key: &Digest,
        token: &RelayToken,
    ) -> Result<oneshot::Sender<Accepted>, Refusal> {
        let mut s = self.state();
        match s.pending.get(token) {
            Some(p) if p.target == *key => {}
            // Another key's token is not consumed: its peer may still accept it.
            _ => {
                return Err((
                    ErrorCode::Forbidden,
                    "unknown or expired relay token (or not issued to this key)".into(),
                ));
            }
        }
        let p = s
            .pending
            .remove(token)
            .ok_or((ErrorCode::Internal, "relay token vanished".to_string()))?;
        dec_ip(&mut s.pending_per_ip, p.ip);
        Ok(p.tx)
    }

    /// Reserves a relayed connection between `a` and `b` (the checks were made under the
    /// same lock, `s`, just before).
    fn slot(&self, s: &mut State, a: Digest, b: Digest) -> RelaySlot {
        s.relayed += 1;
        let share = self.inner.config.rate / RELAY_MEMBER_SHARE;
        let mut limiters = Vec::new();
        for k in [a, b] {
            let m = s.members.entry(k).or_insert_with(|| MemberUse {
                relayed: 0,
                limiter: (share > 0).then(|| Arc::new(RateLimiter::new(share))),
            });
            m.relayed += 1;
            limiters.extend(m.limiter.clone());
        }
        limiters.extend(self.inner.rate.clone());
        RelaySlot {
            hub: self.clone(),
            keys: [a, b],
            limiters,
        }
    }

    /// Tests: starts recording every byte forwarded.
    #[cfg(test)]
    pub(super) fn tap(&self) -> Arc<Mutex<Vec<u8>>> {
        let t = Arc::new(Mutex::new(Vec::new()));
        *self.inner.tap.lock().unwrap_or_else(|p| p.into_inner()) = Some(t.clone());
        t
    }

    fn record(&self, _bytes: &[u8]) {
        self.inner.metrics.relay_bytes.inc_by(_bytes.len() as u64);
        #[cfg(test)]
        if let Some(t) = &*self.inner.tap.lock().unwrap_or_else(|p| p.into_inner()) {
            t.lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(_bytes);
        }
    }
}

fn dec_ip(m: &mut HashMap<IpAddr, usize>, ip: IpAddr) {
    if let Some(n) = m.get_mut(&ip) {
        *n -= 1;
        if *n == 0 {
            m.remove(&ip);
        }
    }
}

fn random_token() -> Result<[u8; 16], String> {
    let b = random_bytes().map_err(|e| format!("no randomness: {e}"))?;
    let mut t = [0u8; 16];
    t.copy_from_slice(&b[..16]);
    Ok(t)
}

/// A relayed connection reserved (counted in all and for both keys) until dropped.
pub(super) struct RelaySlot {
    hub: RelayHub,
    keys: [Digest; 2],
    /// Both keys' shares and the relay's whole rate: every byte takes from each.
    limiters: Vec<Arc<RateLimiter>>,
}

impl Drop for RelaySlot {
    fn drop(&mut self) {
        let mut s = self.hub.state();
        s.relayed = s.relayed.saturating_sub(1);
        for k in &self.keys {
            if let Some(m) = s.members.get_mut(k) {
                m.relayed = m.relayed.saturating_sub(1);
                if m.relayed == 0 {
                    s.members.remove(k);
                }
            }
        }
    }
}

/// A relay request waiting for its peer: its token is withdrawn when this is dropped.
pub(super) struct Waiting {
    hub: RelayHub,
    token: RelayToken,
    pub(super) target: Digest,
    pub(super) peer_id: u64,
    rx: oneshot::Receiver<Accepted>,
    slot: Option<RelaySlot>,
}

impl Waiting {
    /// The peer's connection, once it accepted; `None` after the pending timeout.
    pub(super) async fn accepted(&mut self) -> Option<Accepted> {
        let limit = self.hub.inner.config.pending_timeout;
        tokio::time::timeout(limit, &mut self.rx).await.ok()?.ok()
    }

    pub(super) fn take_slot(&mut self) -> Option<RelaySlot> {
        self.slot.take()
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut s = self.hub.state();
        if let Some(p) = s.pending.remove(&self.token) {
            dec_ip(&mut s.pending_per_ip, p.ip);
        }
    }
}

/// Serves a control channel after its `Listen` was accepted: answers `Ack`, then pushes each
/// `Incoming` and answers each `Heartbeat` with `Ack`, until the peer leaves, goes silent for
/// [`LISTEN_IDLE_TIMEOUT`], sends anything else, or a newer channel replaces this one.
pub(super) async fn control_channel(
    conn: &mut Connection<SecureStream>,
    mut rx: mpsc::Receiver<Incoming>,
    shutdown: &CancellationToken,
) -> Result<(), ProtocolError> {
    let ack = Message::Ack(Ack {
        files: 0,
        membership: None,
        revoked: None,
    });
    conn.send(&ack).await?;
    let mut heard = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            m = rx.recv() => match m {
                Some(incoming) => conn.send(&Message::Incoming(incoming)).await?,
                // Replaced by a newer channel, or the registration ended.
                None => return Ok(()),
            },
            () = tokio::time::sleep_until(heard + LISTEN_IDLE_TIMEOUT) => {
                return Err(ProtocolError::Timeout { secs: LISTEN_IDLE_TIMEOUT.as_secs() });
            }
            m = conn.read_message() => match m? {
                None => return Ok(()),
                Some(Message::Heartbeat) => {
                    heard = Instant::now();
                    conn.send(&ack).await?;
                }
                Some(other) => {
                    let why = format!(
                        "{} is not answered on a control channel (only Heartbeat)",
                        other.name()
                    );
                    conn.send_error(ErrorCode::BadRequest, why).await;
                    return Err(ProtocolError::Unexpected {
                        expected: "Heartbeat",
                        received: other.name(),
                    });
                }
            },
        }
    }
}

/// Splices two connections byte for byte, each end's bytes already read past its last frame
/// first, until both directions end, one fails, nothing passes for [`RELAY_IDLE_TIMEOUT`], or
/// shutdown. Every byte passes the slot's rate limits and is counted.
pub(super) async fn splice(
    hub: &RelayHub,
    slot: RelaySlot,
    a: (SecureStream, BytesMut),
    b: (SecureStream, BytesMut),
    shutdown: &CancellationToken,
) {
    let (ar, aw) = tokio::io::split(a.0);
    let (br, bw) = tokio::io::split(b.0);
    let pumps = async {
        tokio::try_join!(
            pump(hub, &slot, ar, bw, a.1, RELAY_IDLE_TIMEOUT),
            pump(hub, &slot, br, aw, b.1, RELAY_IDLE_TIMEOUT),
        )
    };
    tokio::select! {
        _ = shutdown.cancelled() => {}
        r = pumps => if let Err(e) = r {
            debug!("relayed connection ended: {e}");
        },
    }
}

async fn pump<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    hub: &RelayHub,
    slot: &RelaySlot,
    mut r: R,
    mut w: W,
    first: BytesMut,
    idle: Duration,
) -> std::io::Result<()> {
    let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "relay idle");
    let mut buf = vec![0u8; SPLICE_BUF];
    let mut pending: &[u8] = &first;
    loop {
        if !pending.is_empty() {
            for l in &slot.limiters {
                l.take(pending.len() as u64).await;
            }
            let write = async {
                w.write_all(pending).await?;
                w.flush().await
            };
            tokio::time::timeout(idle, write)
                .await
                .map_err(|_| timed_out())??;
            hub.record(pending);
        }
        let n = match tokio::time::timeout(idle, r.read(&mut buf)).await {
            Err(_) => return Err(timed_out()),
            Ok(Ok(n)) => n,
            // A TLS stream closed without close_notify: the end of this direction.
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Ok(Err(e)) => return Err(e),
        };
        if n == 0 {
            // The other end learns it with a close_notify; the other direction goes on.
            let _ = w.shutdown().await;
            return Ok(());
        }
        pending = &buf[..n];
    }
}
