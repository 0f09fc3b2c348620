//! A member volunteering as a relay (`share --relay`, docs/PROTOCOL.md §7.10): the relayed
//! connections the index assigned it (`Incoming {kind: "carry"}` on its control channel),
//! each waiting for its two ends to send `RelayAccept` to this peer's port, then spliced
//! within the volunteer's own bounds ([`crate::splice`]).
//!
//! Only the index's orders open a splice, and only between the two keys it named: a stranger
//! holds no token, and a token is refused to any third key. The volunteer carries the peers'
//! own TLS and sees neither names nor contents.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::content::Digest;
use crate::identity::Fingerprint;
use crate::protocol::relay::{
    CARRY_TIMEOUT, Incoming, MAX_CARRY_ORDERS, MAX_CARRY_ORDERS_PER_KEY, RelayToken, Relayed,
    incoming_kind,
};
use crate::protocol::{Connection, ErrorCode, Message, ProtocolError};
use crate::splice::{SpliceLimits, Splicer};
use crate::tls::PeerStream;

/// One end that came first, waiting for the other's connection.
struct Waiter {
    key: Digest,
    tx: oneshot::Sender<End>,
}

/// An end's connection, handed to the task of the end that came first.
struct End {
    conn: Connection<PeerStream>,
    addr: SocketAddr,
}

struct Order {
    from: Digest,
    to: Digest,
    expires: Instant,
    waiter: Option<Waiter>,
}

struct Inner {
    splicer: Splicer,
    orders: Mutex<HashMap<RelayToken, Order>>,
    /// Woken when an order comes, for the ends that came before theirs.
    arrived: Notify,
}

/// Where a `RelayAccept` stands.
enum Step {
    /// No such order (yet).
    Unknown,
    /// Expired, not for this key, or this end is waiting already.
    Refused,
    /// The first end: wait for the other's connection.
    Wait {
        rx: oneshot::Receiver<End>,
        expires: Instant,
        from: Digest,
        to: Digest,
    },
    /// The second end: hand the connection to the first end's task.
    Second(oneshot::Sender<End>),
}

/// A volunteer's relay: its orders and its bounds. Cheap to clone.
#[derive(Clone)]
pub struct RelayDesk {
    inner: Arc<Inner>,
}

/// The refusal of a token that is not (or no longer) one for this key: the index's words.
const UNKNOWN_TOKEN: &str = "unknown or expired relay token (or not issued to this key)";
/// The refusal of an end waiting when the volunteer stops.
const SHUTTING_DOWN: &str = "the volunteer relay is shutting down";
/// Default of a volunteer's relayed connections at once, in all (`share --relay`): its ends
/// share the peer server's connection table (`MAX_CONNECTIONS`, 256) with its own serving,
/// so with [`MAX_CARRY_ORDERS`] orders waiting they take at most half of it.
pub const VOLUNTEER_MAX_RELAYED: usize = 32;
/// Default of a volunteer's relayed connections one key is an end of at once.
pub const VOLUNTEER_MAX_RELAYED_PER_MEMBER: usize = 8;

/// How long an end whose order has not come yet waits for it before it is refused.
pub const ORDER_GRACE: Duration = Duration::from_secs(2);

impl RelayDesk {
    /// A volunteer's default bounds, with `rate` (`share --relay-rate`; 0: none).
    pub fn default_limits(rate: u64) -> SpliceLimits {
        SpliceLimits {
            rate,
            max_relayed: VOLUNTEER_MAX_RELAYED,
            max_relayed_per_member: VOLUNTEER_MAX_RELAYED_PER_MEMBER,
        }
    }

    /// A volunteer relay within `limits` (`share --relay-rate` sets the rate).
    pub fn new(limits: SpliceLimits) -> RelayDesk {
        RelayDesk {
            inner: Arc::new(Inner {
                splicer: Splicer::new(limits),
                orders: Mutex::new(HashMap::new()),
                arrived: Notify::new(),
            }),
        }
    }

    fn orders(&self) -> std::sync::MutexGuard<'_, HashMap<RelayToken, Order>> {
        self.inner.orders.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Relayed connections carried now.
    pub fn relayed(&self) -> usize {
        self.inner.splicer.relayed()
    }

    /// Takes an order of the index (an `Incoming {kind: "carry"}` from its control channel),
    /// or says in one line why not.
    pub fn order(&self, i: &Incoming) -> Result<(), String> {
        if i.kind != incoming_kind::CARRY {
            return Err(format!("not a carry order: {:?}", i.kind));
        }
        let Some(to) = i.to else {
            return Err("a carry order names no peer to carry to".into());
        };
        if to == i.from {
            return Err("a carry order names the same key at both ends".into());
        }
        let now = Instant::now();
        let mut orders = self.orders();
        // Expired orders whose first end still waits are withdrawn by that end's task.
        orders.retain(|_, o| o.expires > now || o.waiter.is_some());
        if orders.contains_key(&i.token) {
            return Err("a carry order repeats a token".into());
        }
        if orders.len() >= MAX_CARRY_ORDERS {
            return Err(format!("{MAX_CARRY_ORDERS} carry orders wait already"));
        }
        if orders.values().filter(|o| o.from == i.from).count() >= MAX_CARRY_ORDERS_PER_KEY {
            return Err(format!(
                "{MAX_CARRY_ORDERS_PER_KEY} carry orders of {} wait already",
                Fingerprint(i.from)
            ));
        }
        orders.insert(
            i.token,
            Order {
                from: i.from,
                to,
                expires: now + CARRY_TIMEOUT,
                waiter: None,
            },
        );
        drop(orders);
        self.inner.arrived.notify_waiters();
        Ok(())
    }

    /// Where `key`'s `RelayAccept` of `token` stands, taken under the lock: the first end
    /// waits, the second takes the first's sender.
    fn step(&self, token: &RelayToken, key: Digest) -> Step {
        let mut orders = self.orders();
        let Some(o) = orders.get_mut(token) else {
            return Step::Unknown;
        };
        // Another key's refusal does not use the token up.
        if o.expires <= Instant::now() || (key != o.from && key != o.to) {
            return Step::Refused;
        }
        match o.waiter.take() {
            None => {
                let (tx, rx) = oneshot::channel();
                o.waiter = Some(Waiter { key, tx });
                Step::Wait {
                    rx,
                    expires: o.expires,
                    from: o.from,
                    to: o.to,
                }
            }
            Some(w) if w.key != key => {
                orders.remove(token);
                Step::Second(w.tx)
            }
            // The same end twice: the first keeps its place.
            Some(w) => {
                o.waiter = Some(w);
                Step::Refused
            }
        }
    }

    /// A `RelayAccept {token}` on `conn` (after its `Hello`) from `key` at `addr`: the first
    /// end waits for the other, then splices the two; the second hands its connection over.
    /// Refusals (`FORBIDDEN`, `UNREACHABLE`, `BUSY`) close the connection.
    pub async fn accept(
        &self,
        mut conn: Connection<PeerStream>,
        addr: SocketAddr,
        key: Digest,
        token: RelayToken,
        shutdown: CancellationToken,
    ) -> Result<(), ProtocolError> {
        // An end may come before its order (the order waits in the volunteer's control
        // channel): an unknown token is held for a moment before it is refused.
        let grace = Instant::now() + ORDER_GRACE;
        let step = loop {
            let arrived = self.inner.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            match self.step(&token, key) {
                Step::Unknown if Instant::now() < grace => {
                    tokio::select! {
                        _ = shutdown.cancelled() => {
                            return refuse(&mut conn, ErrorCode::Unreachable, SHUTTING_DOWN).await;
                        }
                        () = &mut arrived => {}
                        () = tokio::time::sleep_until(grace) => {}
                    }
                }
                step => break step,
            }
        };
        let (rx, expires, from, to) = match step {
            Step::Wait {
                rx,
                expires,
                from,
                to,
            } => (rx, expires, from, to),
            Step::Second(tx) => {
                // The second end: the first end's task splices.
                return match tx.send(End { conn, addr }) {
                    Ok(()) => Ok(()),
                    Err(mut back) => {
                        refuse(
                            &mut back.conn,
                            ErrorCode::Unreachable,
                            "the other end is gone",
                        )
                        .await
                    }
                };
            }
            Step::Unknown | Step::Refused => {
                return refuse(&mut conn, ErrorCode::Forbidden, UNKNOWN_TOKEN).await;
            }
        };
        let other = tokio::select! {
            _ = shutdown.cancelled() => Err(SHUTTING_DOWN.to_string()),
            r = tokio::time::timeout_at(expires, rx) => r.ok().and_then(Result::ok).ok_or_else(|| {
                format!("the other end did not come within {} s", CARRY_TIMEOUT.as_secs())
            }),
        };
        let other = match other {
            Ok(other) => other,
            Err(why) => {
                self.orders().remove(&token);
                return refuse(&mut conn, ErrorCode::Unreachable, &why).await;
            }
        };
        let mine = End { conn, addr };
        let (mut requester, mut listener) = match key == from {
            true => (mine, other),
            false => (other, mine),
        };
        let slot = match self
            .inner
            .splicer
            .reserve(from, to, |k| format!("key {}", Fingerprint(*k)))
        {
            Ok(slot) => slot,
            Err(e) => {
                let why = e.to_string();
                requester
                    .conn
                    .send_error(ErrorCode::Busy, why.clone())
                    .await;
                return refuse(&mut listener.conn, ErrorCode::Busy, &why).await;
            }
        };
        // The listening peer first: it must be ready before the requester's TLS reaches it.
        let to_listener = Relayed {
            peer: from,
            addr: Some(requester.addr.to_string()),
        };
        if let Err(e) = listener.conn.send(&Message::Relayed(to_listener)).await {
            let why = format!("the listening peer's connection failed: {e}");
            return refuse(&mut requester.conn, ErrorCode::Unreachable, &why).await;
        }
        requester
            .conn
            .send(&Message::Relayed(Relayed {
                peer: to,
                addr: None,
            }))
            .await?;
        info!(
            from = %requester.addr,
            to = %listener.addr,
            "relaying for two members"
        );
        let (a, a_rest, _a_admission) = requester.conn.into_parts();
        let (b, b_rest, _b_admission) = listener.conn.into_parts();
        let record = |bytes: &[u8]| {
            crate::metrics::node()
                .bytes_relayed
                .inc_by(bytes.len() as u64);
            #[cfg(test)]
            tap::record(bytes);
        };
        crate::splice::splice(slot, (a, a_rest), (b, b_rest), &record, &shutdown).await;
        info!(from = %requester.addr, to = %listener.addr, "relayed connection closed");
        Ok(())
    }
}

/// Sends the refusal and ends the connection with it.
async fn refuse(
    conn: &mut Connection<PeerStream>,
    code: ErrorCode,
    why: &str,
) -> Result<(), ProtocolError> {
    conn.send_error(code, why).await;
    Err(ProtocolError::Refused(why.to_string()))
}

/// Tests: every byte any volunteer of this process forwards, to show what a relay sees.
#[cfg(test)]
pub(crate) mod tap {
    use std::sync::{Arc, Mutex};

    static TAP: Mutex<Option<Arc<Mutex<Vec<u8>>>>> = Mutex::new(None);

    /// Starts recording.
    pub(crate) fn start() -> Arc<Mutex<Vec<u8>>> {
        let t = Arc::new(Mutex::new(Vec::new()));
        *TAP.lock().unwrap_or_else(|p| p.into_inner()) = Some(t.clone());
        t
    }

    pub(super) fn record(bytes: &[u8]) {
        if let Some(t) = &*TAP.lock().unwrap_or_else(|p| p.into_inner()) {
            t.lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(token: u8, from: u8, to: u8) -> Incoming {
        Incoming {
            token: RelayToken([token; 16]),
            from: Digest([from; 32]),
            kind: incoming_kind::CARRY.into(),
            to: Some(Digest([to; 32])),
            via: None,
            via_key: None,
        }
    }

    /// Orders that cannot be carried out are refused, each with its reason.
    #[test]
    fn malformed_orders_are_refused() {
        let desk = RelayDesk::new(SpliceLimits::default());
        let mut relay = order(1, 2, 3);
        relay.kind = incoming_kind::RELAY.into();
        assert!(
            desk.order(&relay)
                .unwrap_err()
                .contains("not a carry order")
        );
        let mut no_to = order(1, 2, 3);
        no_to.to = None;
        assert!(desk.order(&no_to).unwrap_err().contains("no peer"));
        assert!(
            desk.order(&order(1, 2, 2))
                .unwrap_err()
                .contains("same key")
        );
        desk.order(&order(1, 2, 3)).unwrap();
        assert!(
            desk.order(&order(1, 4, 5))
                .unwrap_err()
                .contains("repeats a token")
        );
    }

    /// At most `MAX_CARRY_ORDERS_PER_KEY` orders of one requester and `MAX_CARRY_ORDERS` in all
    /// wait at once; once they expire, new ones are taken again.
    #[tokio::test(start_paused = true)]
    async fn orders_are_bounded_and_expire() {
        let desk = RelayDesk::new(SpliceLimits::default());
        for t in 0..MAX_CARRY_ORDERS_PER_KEY as u8 {
            desk.order(&order(t, 1, 2)).unwrap();
        }
        let e = desk.order(&order(100, 1, 3)).unwrap_err();
        assert!(e.contains("carry orders of"), "{e}");
        // Other requesters fill the rest.
        let mut t = MAX_CARRY_ORDERS_PER_KEY as u8;
        let mut from = 10u8;
        while desk.orders().len() < MAX_CARRY_ORDERS {
            desk.order(&order(t, from, 2)).unwrap();
            t += 1;
            from += 1;
        }
        let e = desk.order(&order(200, 250, 2)).unwrap_err();
        assert!(e.contains("carry orders wait already"), "{e}");
        tokio::time::advance(CARRY_TIMEOUT + Duration::from_millis(1)).await;
        desk.order(&order(200, 1, 2)).unwrap();
        assert_eq!(desk.orders().len(), 1);
    }
}
