//! Rendezvous and relay (docs/PROTOCOL.md §7.10): the registered peers the index knows by key,
//! the control channels of those that listen (`Listen`, `Incoming`), the members volunteering
//! as relays, the relay requests waiting for their peer (`RelayConnect`, `RelayAccept`), and
//! the splice of two connections once both ends are there ([`crate::splice`]).
//!
//! A relay request goes to a volunteer when one is listening (`RelayVia`), else the index
//! relays it itself unless it runs with `--no-relay`. Either relays bytes only: the two peers
//! run the peer protocol's own TLS inside the splice, so it sees neither names nor contents.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::content::Digest;
use crate::identity::{Fingerprint, random_bytes};
use crate::metrics::IndexMetrics;
use crate::protocol::relay::{
    Incoming, MAX_CARRY_ORDERS, MAX_RELAY_AVOID, RelayConnect, RelayToken, RelayVia, incoming_kind,
};
use crate::protocol::{Ack, Connection, ErrorCode, Message, ProtocolError};
pub use crate::splice::{
    MAX_RELAYED, MAX_RELAYED_PER_MEMBER, RELAY_IDLE_TIMEOUT, RELAY_MEMBER_SHARE, RELAY_RATE,
};
use crate::splice::{SpliceLimits, SpliceSlot, Splicer};
use crate::tls::SecureStream;

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
/// Settings of the index's relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Whether the index relays itself (`index --no-relay` turns it off: a peer it cannot
    /// reach is then refused with `UNREACHABLE`, as before relays, unless a member volunteers
    /// as a relay). Default: on.
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
    /// A volunteer relay's checked peer address, `IP:PORT`.
    volunteer: Option<String>,
    /// It accepts relayed connections at a volunteer (`Register.via`).
    via: bool,
}

struct Listener {
    id: u64,
    tx: mpsc::Sender<Incoming>,
}

/// A relay request: waiting at the index for its peer's `RelayAccept` (`tx`), or sent to a
/// volunteer (no `tx`), counted against the bounds on requests until it expires.
struct Pending {
    target: Digest,
    ip: IpAddr,
    tx: Option<oneshot::Sender<Accepted>>,
    /// The volunteer it was sent to.
    via: Option<Digest>,
    expires: Instant,
}

#[derive(Default)]
struct State {
    keys: HashMap<Digest, Registered>,
    ids: HashMap<u64, Digest>,
    /// The volunteers' keys, by peer id (the order they are taken in turn).
    volunteers: std::collections::BTreeMap<u64, Digest>,
    /// The peer id of the volunteer given last.
    last_volunteer: u64,
    pending: HashMap<RelayToken, Pending>,
    pending_per_ip: HashMap<IpAddr, usize>,
}

/// Where a relay request goes.
pub(super) enum Routed {
    /// The index relays it: wait for the peer.
    Here(Waiting),
    /// A volunteer relays it: the answer to the requester.
    Via(RelayVia),
}

/// The relay's shared state. Cheap to clone.
#[derive(Clone)]
pub(super) struct RelayHub {
    inner: Arc<Inner>,
}

struct Inner {
    config: RelayConfig,
    state: Mutex<State>,
    splicer: Splicer,
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
                splicer: Splicer::new(SpliceLimits {
                    rate: config.rate,
                    max_relayed: config.max_relayed,
                    max_relayed_per_member: config.max_relayed_per_member,
                }),
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

    /// Whether the index relays itself.
    pub(super) fn enabled(&self) -> bool {
        self.inner.config.enabled
    }

    /// Whether a peer the index cannot reach can be relayed now: by the index, or (when the
    /// peer accepts relayed connections at a volunteer, `via`) by a volunteer listening on its
    /// control channel.
    pub(super) fn can_relay(&self, via: bool) -> bool {
        if self.enabled() {
            return true;
        }
        if !via {
            return false;
        }
        let s = self.state();
        s.volunteers
            .values()
            .any(|k| s.keys.get(k).is_some_and(|r| r.listener.is_some()))
    }

    /// Records a successful `Register` of `key` (its control channel, if any, carries over);
    /// `volunteer` is its checked peer address when it volunteers as a relay, `via` whether it
    /// accepts relayed connections at a volunteer.
    pub(super) fn registered(
        &self,
        key: Digest,
        peer_id: u64,
        session: u64,
        volunteer: Option<String>,
        via: bool,
    ) {
        let mut s = self.state();
        let listener = s.keys.remove(&key).and_then(|r| r.listener);
        s.ids.insert(peer_id, key);
        match volunteer.is_some() {
            true => s.volunteers.insert(peer_id, key),
            false => s.volunteers.remove(&peer_id),
        };
        s.keys.insert(
            key,
            Registered {
                peer_id,
                session,
                listener,
                volunteer,
                via,
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
            s.volunteers.remove(&r.peer_id);
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

    /// A `RelayConnect` from `from` at `ip`: checks it, then routes it through a volunteer
    /// (telling it and the target, `Incoming`) or, when none is listening, reserves a
    /// relayed connection at the index for both ends, tells the target and returns what to
    /// wait on.
    pub(super) fn request(
        &self,
        from: Digest,
        ip: IpAddr,
        rc: &RelayConnect,
        revoked: impl Fn(&Digest) -> bool,
    ) -> Result<Routed, Refusal> {
        let config = &self.inner.config;
        if rc.avoid.len() > MAX_RELAY_AVOID {
            return Err((
                ErrorCode::BadRequest,
                format!(
                    "RelayConnect avoids {} volunteers; at most {MAX_RELAY_AVOID}",
                    rc.avoid.len()
                ),
            ));
        }
        let mut s = self.state();
        let now = Instant::now();
        // Requests sent to volunteers count against the bounds until they expire.
        let expired: Vec<RelayToken> = s
            .pending
            .iter()
            .filter(|(_, p)| p.via.is_some() && p.expires <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in expired {
            if let Some(p) = s.pending.remove(&t) {
                dec_ip(&mut s.pending_per_ip, p.ip);
            }
        }
        let target = resolve(&s, rc)?;
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
        // Both ends must know volunteers for one to carry the connection.
        let via_ok = rc.via && reg.via;
        let Some(listener) = reg.listener.as_ref().map(|l| l.tx.clone()) else {
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
        let token = RelayToken(random_token().map_err(|e| (ErrorCode::Internal, e))?);
        let expires = now + config.pending_timeout;
        let names = |k: &Digest| match *k == from {
            true => "this key".to_string(),
            false => format!("peer {peer_id}"),
        };
        let busy = || {
            (
                ErrorCode::Busy,
                format!("peer {peer_id} has too many relay requests waiting; try again later"),
            )
        };
        // A place in the target's channel first: a request refused BUSY leaves no order at a
        // volunteer behind.
        let permit = listener.try_reserve().map_err(|_| busy())?;
        // Volunteers first; once one failed this requester (`avoid`), the index's own relay
        // when it has one. At most `max_relayed_per_member` requests routed to volunteers wait
        // for one target (each costs it a connection to the volunteer).
        let routed_to_target = s
            .pending
            .values()
            .filter(|p| p.via.is_some() && p.target == target)
            .count();
        let via = match via_ok
            && (rc.avoid.is_empty() || !config.enabled)
            && routed_to_target < config.max_relayed_per_member
        {
            true => self.volunteer(&mut s, token, from, target, &rc.avoid, revoked),
            false => None,
        };
        if let Some((key, addr)) = via {
            permit.send(Incoming {
                token,
                from,
                kind: incoming_kind::RELAY.into(),
                to: None,
                via: Some(addr.clone()),
                via_key: Some(key),
            });
            s.pending.insert(
                token,
                Pending {
                    target,
                    ip,
                    tx: None,
                    via: Some(key),
                    expires,
                },
            );
            *s.pending_per_ip.entry(ip).or_default() += 1;
            return Ok(Routed::Via(RelayVia { token, addr, key }));
        }
        if !config.enabled && routed_to_target >= config.max_relayed_per_member {
            return Err(busy());
        }
        if !config.enabled {
            return Err((
                ErrorCode::Unreachable,
                "this index does not relay (it runs with --no-relay), and no member \
                 volunteering as a relay can carry this connection now"
                    .into(),
            ));
        }
        // Reserved under the same lock as the checks: concurrent requests cannot pass a bound.
        let slot = self
            .inner
            .splicer
            .reserve(from, target, names)
            .map_err(|e| (ErrorCode::Busy, e.to_string()))?;
        let incoming = Incoming {
            token,
            from,
            kind: incoming_kind::RELAY.into(),
            to: None,
            via: None,
            via_key: None,
        };
        permit.send(incoming);
        let (tx, rx) = oneshot::channel();
        s.pending.insert(
            token,
            Pending {
                target,
                ip,
                tx: Some(tx),
                via: None,
                expires,
            },
        );
        *s.pending_per_ip.entry(ip).or_default() += 1;
        drop(s);
        Ok(Routed::Here(Waiting {
            hub: self.clone(),
            token,
            target,
            peer_id,
            rx,
            slot: Some(slot),
        }))
    }

    /// The next volunteer in turn that listens, is neither end, is not avoided, is still a
    /// member and holds fewer than [`MAX_CARRY_ORDERS`] of our requests, once it took the
    /// request (`Incoming {kind: "carry"}`): its key and address. One whose channel is full is
    /// passed over.
    fn volunteer(
        &self,
        s: &mut State,
        token: RelayToken,
        from: Digest,
        to: Digest,
        avoid: &[Digest],
        revoked: impl Fn(&Digest) -> bool,
    ) -> Option<(Digest, String)> {
        let last = s.last_volunteer;
        let order: Vec<(u64, Digest)> = s
            .volunteers
            .range(last + 1..)
            .chain(s.volunteers.range(..=last))
            .map(|(id, k)| (*id, *k))
            .collect();
        for (id, key) in order {
            if key == from || key == to || avoid.contains(&key) || revoked(&key) {
                continue;
            }
            let orders = s.pending.values().filter(|p| p.via == Some(key)).count();
            if orders >= MAX_CARRY_ORDERS {
                continue;
            }
            let Some(reg) = s.keys.get(&key) else {
                continue;
            };
            let (Some(listener), Some(addr)) = (&reg.listener, &reg.volunteer) else {
                continue;
            };
            let carry = Incoming {
                token,
                from,
                kind: incoming_kind::CARRY.into(),
                to: Some(to),
                via: None,
                via_key: None,
            };
            if listener.tx.try_send(carry).is_ok() {
                let addr = addr.clone();
                s.last_volunteer = id;
                return Some((key, addr));
            }
        }
        None
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
            Some(p) if p.target == *key && p.tx.is_some() => {}
            // Another key's token is not consumed: its peer may still accept it. A token sent
            // with a volunteer's address is accepted there, not here.
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
        p.tx.ok_or((ErrorCode::Internal, "relay token vanished".to_string()))
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

/// The key a `RelayConnect` names.
fn resolve(s: &State, rc: &RelayConnect) -> Result<Digest, Refusal> {
    match (rc.peer_id, rc.key) {
        (None, None) => Err((
            ErrorCode::BadRequest,
            "RelayConnect names no peer: give peer_id or key".into(),
        )),
        (Some(id), key) => match s.ids.get(&id) {
            Some(k) if key.is_none_or(|key| key == *k) => Ok(*k),
            Some(_) => Err((
                ErrorCode::BadRequest,
                format!("peer {id} does not hold the key given"),
            )),
            None => Err((
                ErrorCode::NotFound,
                format!("no peer {id} is online at this index"),
            )),
        },
        (None, Some(k)) => match s.keys.contains_key(&k) {
            true => Ok(k),
            false => Err((
                ErrorCode::NotFound,
                format!(
                    "no peer with key {} is online at this index",
                    Fingerprint(k)
                ),
            )),
        },
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

/// A relay request waiting for its peer: its token is withdrawn when this is dropped.
pub(super) struct Waiting {
    hub: RelayHub,
    token: RelayToken,
    pub(super) target: Digest,
    pub(super) peer_id: u64,
    rx: oneshot::Receiver<Accepted>,
    slot: Option<SpliceSlot>,
}

impl Waiting {
    /// The peer's connection, once it accepted; `None` after the pending timeout.
    pub(super) async fn accepted(&mut self) -> Option<Accepted> {
        let limit = self.hub.inner.config.pending_timeout;
        tokio::time::timeout(limit, &mut self.rx).await.ok()?.ok()
    }

    pub(super) fn take_slot(&mut self) -> Option<SpliceSlot> {
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

/// Splices two connections (the index's relay, [`crate::splice::splice`]), counting every
/// byte in the index's `relay_bytes`.
pub(super) async fn splice(
    hub: &RelayHub,
    slot: SpliceSlot,
    a: (SecureStream, BytesMut),
    b: (SecureStream, BytesMut),
    shutdown: &CancellationToken,
) {
    crate::splice::splice(slot, a, b, &|bytes| hub.record(bytes), shutdown).await;
}
