//! The index's UDP side (docs/PROTOCOL.md §7.11): QUIC on the same port number as its TCP
//! listener. A sharing peer keeps a connection open to it from the socket it serves on
//! (`PunchListen`), so the index sees that socket's NAT mapping; a downloader asks for a hole
//! punch to a peer (`PunchRequest`) from the socket it will connect from, and both are told
//! each other's address at once (`PunchGo`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::{IndexConfig, IndexStore, PrivateGroup};
use crate::content::Digest;
use crate::protocol::{
    Connection, Connections, ErrorCode, Message, ProtocolError, PunchGo, PunchListen, PunchRequest,
    ServerSide, UdpIndexRequest, WelcomeExtra,
};
use crate::tls::Tls;
use crate::tls::quic::{QuicStream, accept_loop};

/// Punch requests one address may make in a burst.
pub const PUNCH_BURST: f64 = 10.0;
/// Punch requests one address may make per second, after the burst.
pub const PUNCH_RATE: f64 = 1.0;
/// Addresses whose punch-request rate is tracked at once; past it the stalest are forgotten.
pub const MAX_RATE_ENTRIES: usize = 4096;
/// Punches waiting to be sent to one listening peer; more are refused `BUSY`.
pub const PUNCH_QUEUE: usize = 8;
/// Largest request frame accepted on the UDP side: its requests are a few dozen bytes
/// (a `Hello` with a membership certificate the largest).
pub const MAX_UDP_REQUEST: usize = 4096;

/// Who listens for punches: a peer's key, its address as seen, and where to tell it.
#[derive(Default)]
struct Hub {
    listeners: Mutex<HashMap<Digest, Listener>>,
    rates: Mutex<HashMap<IpAddr, (f64, Instant)>>,
    next: AtomicU64,
}

struct Listener {
    id: u64,
    observed: SocketAddr,
    tx: mpsc::Sender<PunchGo>,
}

impl Hub {
    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes one punch request from `ip`'s bucket; `false` if it is empty.
    fn allow(&self, ip: IpAddr) -> bool {
        let mut rates = Hub::lock(&self.rates);
        let now = Instant::now();
        if rates.len() >= MAX_RATE_ENTRIES && !rates.contains_key(&ip) {
            // Forget buckets that have refilled (they hold no memory of a flood).
            let full = Duration::from_secs_f64(PUNCH_BURST / PUNCH_RATE);
            rates.retain(|_, (_, t)| now.duration_since(*t) < full);
            if rates.len() >= MAX_RATE_ENTRIES {
                return false;
            }
        }
        let (tokens, last) = rates.entry(ip).or_insert((PUNCH_BURST, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * PUNCH_RATE).min(PUNCH_BURST);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The index's UDP side; made by [`super::IndexServer::udp`], sharing its store, key, group
/// and table of connections.
#[derive(Clone)]
pub struct IndexUdp {
    pub(super) store: Arc<IndexStore>,
    pub(super) tls: Tls,
    pub(super) group: Option<Arc<PrivateGroup>>,
    pub(super) connections: Connections,
    pub(super) config: IndexConfig,
    hub: Arc<Hub>,
}

/// A refusal: its code and one line saying why.
type Refusal = (ErrorCode, String);

impl IndexUdp {
    pub(super) fn new(
        store: Arc<IndexStore>,
        tls: Tls,
        group: Option<Arc<PrivateGroup>>,
        connections: Connections,
        config: IndexConfig,
    ) -> Self {
        IndexUdp {
            store,
            tls,
            group,
            connections,
            config,
            hub: Arc::default(),
        }
    }

    /// A UDP endpoint on `addr` serving as this index (the TCP listener's address: the same
    /// port number).
    pub fn bind(&self, addr: SocketAddr) -> std::io::Result<quinn::Endpoint> {
        crate::tls::quic::bind(addr, Some(&self.tls))
    }

    /// Peers listening for punches now.
    pub fn listening(&self) -> usize {
        Hub::lock(&self.hub.listeners).len()
    }

    /// Serves QUIC on `endpoint` (made with this index's key, [`crate::tls::quic::endpoint`])
    /// until `shutdown`.
    pub async fn run(self, endpoint: quinn::Endpoint, shutdown: CancellationToken) {
        let connections = self.connections.clone();
        let stop = shutdown.clone();
        accept_loop(
            endpoint,
            connections,
            shutdown,
            move |stream, addr, key, admission| {
                let (me, shutdown) = (self.clone(), stop.clone());
                async move {
                    let conn = Connection::server(
                        stream,
                        me.config.limits,
                        ServerSide {
                            admission: Some(admission),
                            budget: None,
                            max_frame: MAX_UDP_REQUEST,
                            frame_timeout: me.config.frame_timeout,
                        },
                    );
                    match me.serve(conn, addr, key, shutdown).await {
                        Ok(()) => debug!(%addr, "UDP connection closed"),
                        Err(e) => info!(%addr, "UDP connection closed: {e}"),
                    }
                }
            },
        )
        .await;
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&IndexStore) -> Result<T, super::StoreError> + Send + 'static,
    ) -> Result<T, ProtocolError> {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || f(&store)).await {
            Ok(Ok(t)) => Ok(t),
            Ok(Err(e)) => Err(ProtocolError::Io(std::io::Error::other(e))),
            Err(e) => Err(ProtocolError::Io(std::io::Error::other(e))),
        }
    }

    async fn is_member(&self, key: Digest) -> Result<bool, ProtocolError> {
        match self.group.clone() {
            None => Ok(true),
            Some(g) => self.blocking(move |s| g.is_member(s, &key)).await,
        }
    }

    async fn serve(
        &self,
        mut conn: Connection<QuicStream>,
        addr: SocketAddr,
        key: Digest,
        shutdown: CancellationToken,
    ) -> Result<(), ProtocolError> {
        // A private index answers members only, as over TCP (§4.2).
        let member = self.is_member(key).await?;
        let admit = |_: &crate::protocol::Hello| match member {
            true => Ok(()),
            false => Err("this index is private: members only".to_string()),
        };
        if conn
            .server_handshake_admitting(Digest::default(), &[], WelcomeExtra::default(), admit)
            .await?
            .is_none()
        {
            return Ok(());
        }
        let mut listening: Option<(u64, mpsc::Receiver<PunchGo>)> = None;
        let result = loop {
            let pushed = async {
                match listening.as_mut() {
                    Some((_, rx)) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            let msg = tokio::select! {
                m = conn.next_request(&shutdown) => m,
                Some(go) = pushed => {
                    if let Err(e) = conn.send(&Message::PunchGo(go)).await {
                        break Err(e);
                    }
                    continue;
                }
            };
            let msg = match msg {
                Ok(Some(m)) => m,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            };
            let request: UdpIndexRequest = match conn.request_of(msg, "the index over UDP").await {
                Ok(r) => r,
                Err(e) => break Err(e),
            };
            let reply = match request {
                UdpIndexRequest::Hello(_) => second_hello(),
                UdpIndexRequest::PunchListen(_) => {
                    let (id, rx) = self.listen(key, addr, listening.as_ref().map(|l| l.0));
                    if let Some(rx) = rx {
                        listening = Some((id, rx));
                    }
                    Ok(Message::PunchListen(PunchListen {
                        observed: Some(addr.to_string()),
                    }))
                }
                UdpIndexRequest::PunchRequest(r) => match self.punch(r, key, addr).await {
                    Ok(go) => Ok(Message::PunchGo(go)),
                    Err(e) => Err(e),
                },
            };
            let sent = match reply {
                Ok(m) => conn.reply(&m).await,
                Err(Ok((code, why))) => {
                    debug!(%addr, "punch refused: {why}");
                    conn.send_error(code, why).await;
                    Ok(())
                }
                Err(Err(e)) => {
                    conn.send_error(ErrorCode::Internal, format!("index failure: {e}"))
                        .await;
                    break Err(e);
                }
            };
            if let Err(e) = sent {
                break Err(e);
            }
        };
        if let Some((id, _)) = listening {
            let mut l = Hub::lock(&self.hub.listeners);
            if l.get(&key).is_some_and(|x| x.id == id) {
                l.remove(&key);
            }
        }
        result
    }

    /// Records `key` as listening at `addr` on this connection (replacing any other
    /// connection of the key: the newest wins). A repeated `PunchListen` on the same
    /// connection only refreshes the address.
    fn listen(
        &self,
        key: Digest,
        addr: SocketAddr,
        current: Option<u64>,
    ) -> (u64, Option<mpsc::Receiver<PunchGo>>) {
        let mut l = Hub::lock(&self.hub.listeners);
        if let Some(id) = current
            && let Some(x) = l.get_mut(&key).filter(|x| x.id == id)
        {
            x.observed = addr;
            return (id, None);
        }
        let id = self.hub.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(PUNCH_QUEUE);
        l.insert(
            key,
            Listener {
                id,
                observed: addr,
                tx,
            },
        );
        (id, Some(rx))
    }

    /// Checks a punch request and tells the target; the answer for the requester.
    async fn punch(
        &self,
        r: PunchRequest,
        requester: Digest,
        from: SocketAddr,
    ) -> Result<PunchGo, Result<Refusal, ProtocolError>> {
        if !self.hub.allow(from.ip()) {
            return Err(Ok((
                ErrorCode::Busy,
                format!(
                    "too many punch requests from {}: at most {PUNCH_BURST} at once, then \
                     {PUNCH_RATE} a second",
                    from.ip()
                ),
            )));
        }
        let peer = r.peer_id;
        let found = self
            .blocking(move |s| s.peer_key(peer))
            .await
            .map_err(Err)?;
        let Some((target, online)) = found else {
            return Err(Ok((
                ErrorCode::NotFound,
                format!("peer {peer} is not registered here"),
            )));
        };
        if !online {
            return Err(Ok((ErrorCode::NotFound, format!("peer {peer} is offline"))));
        }
        if !self.is_member(target).await.map_err(Err)? {
            return Err(Ok((
                ErrorCode::Forbidden,
                format!("peer {peer} is not a member of this index's group"),
            )));
        }
        if target == requester {
            return Err(Ok((
                ErrorCode::BadRequest,
                "a punch to oneself".to_string(),
            )));
        }
        let (tx, observed) = {
            let l = Hub::lock(&self.hub.listeners);
            match l.get(&target) {
                Some(x) => (x.tx.clone(), x.observed),
                None => {
                    return Err(Ok((
                        ErrorCode::Unreachable,
                        format!(
                            "peer {peer} does not listen for hole punching (no UDP connection to this index)"
                        ),
                    )));
                }
            }
        };
        let push = PunchGo {
            addr: from.to_string(),
            key: requester.0.to_vec(),
            observed: Some(observed.to_string()),
        };
        if tx.try_send(push).is_err() {
            return Err(Ok((
                ErrorCode::Busy,
                format!("peer {peer} has too many punches waiting; try again"),
            )));
        }
        Ok(PunchGo {
            addr: observed.to_string(),
            key: target.0.to_vec(),
            observed: Some(from.to_string()),
        })
    }
}

/// The refusal of a second `Hello`.
fn second_hello() -> Result<Message, Result<Refusal, ProtocolError>> {
    Err(Ok((ErrorCode::BadRequest, "Hello was already said".into())))
}
