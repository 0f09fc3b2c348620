//! What every server and client of the protocol shares: the accept loop with its connection
//! limits and eviction, the request loop's read, and connecting.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use super::{Connection, ErrorCode, ErrorReply, Message, MessageSet, ProtocolError};

/// Longest wait for a new connection's `Hello` (§4): a connection that says nothing, or
/// dribbles its `Hello` in byte by byte, holds its place no longer than this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// How many connections a server holds, and from whom.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Most connections open at once. A new connection beyond it closes the one that has
    /// waited longest for its next request (not yet `Hello`d first, then not authenticated,
    /// then any); only when every connection is being served is the new one refused.
    pub max_connections: usize,
    /// Most connections from one source address once the server is half full (below that,
    /// any number: the test suite and benchmarks run hundreds of clients from 127.0.0.1).
    /// A new connection beyond it closes that address's connection waiting longest instead.
    pub max_per_ip: usize,
    /// Longest wait for `Hello`. Default: [`HANDSHAKE_TIMEOUT`].
    pub handshake_timeout: Duration,
    /// How long shutdown waits for open connections.
    pub grace: Duration,
}

/// Where a connection is in its life, for choosing whom to evict (lowest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Standing {
    /// Has not sent `Hello` yet.
    Fresh,
    /// Past the handshake.
    Greeted,
    /// Proved who it is (a registered peer at the index).
    Trusted,
}

#[derive(Debug)]
struct Entry {
    ip: IpAddr,
    standing: Standing,
    /// A request is being answered: never evicted then.
    busy: bool,
    /// When it last began waiting for a request (or was accepted).
    waiting_since: Instant,
    evict: CancellationToken,
}

/// The open connections of one listener.
#[derive(Debug)]
struct Table {
    limits: ServeLimits,
    state: Mutex<TableState>,
}

#[derive(Debug, Default)]
struct TableState {
    conns: HashMap<u64, Entry>,
    per_ip: HashMap<IpAddr, usize>,
    next_id: u64,
    evicted: u64,
    refused: u64,
}

impl TableState {
    /// The connection to close to make room, among those `from` selects: the lowest
    /// standing, then the one waiting longest; never one being served.
    fn victim(&self, from: impl Fn(&Entry) -> bool) -> Option<u64> {
        self.conns
            .iter()
            .filter(|(_, e)| !e.busy && from(e))
            .min_by_key(|(_, e)| (e.standing, e.waiting_since))
            .map(|(id, _)| *id)
    }

    fn remove(&mut self, id: u64) -> Option<Entry> {
        let e = self.conns.remove(&id)?;
        if let Some(n) = self.per_ip.get_mut(&e.ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&e.ip);
            }
        }
        Some(e)
    }

    fn evict(&mut self, id: u64) {
        if let Some(e) = self.remove(id) {
            self.evicted += 1;
            e.evict.cancel();
        }
    }
}

impl Table {
    fn lock(&self) -> std::sync::MutexGuard<'_, TableState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes room for a connection from `ip` (evicting as needed) and admits it, or `None`
    /// when every connection that could make room is being served.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Admission> {
        let mut s = self.lock();
        let (max, per_ip) = (
            self.limits.max_connections.max(1),
            self.limits.max_per_ip.max(1),
        );
        if s.conns.len() >= max / 2 && s.per_ip.get(&ip).copied().unwrap_or(0) >= per_ip {
            match s.victim(|e| e.ip == ip) {
                Some(v) => s.evict(v),
                None => {
                    s.refused += 1;
                    return None;
                }
            }
        }
        if s.conns.len() >= max {
            match s.victim(|_| true) {
                Some(v) => s.evict(v),
                None => {
                    s.refused += 1;
                    return None;
                }
            }
        }
        let id = s.next_id;
        s.next_id += 1;
        let evict = CancellationToken::new();
        s.conns.insert(
            id,
            Entry {
                ip,
                standing: Standing::Fresh,
                busy: false,
                waiting_since: Instant::now(),
                evict: evict.clone(),
            },
        );
        *s.per_ip.entry(ip).or_default() += 1;
        Some(Admission {
            table: self.clone(),
            id,
            evicted: evict,
            handshake_timeout: self.limits.handshake_timeout,
            accepted: Instant::now(),
        })
    }
}

/// A connection's place in its server's table of open connections: lets the server evict it
/// while it waits for a request. Dropping it frees the place.
#[derive(Debug)]
pub struct Admission {
    table: Arc<Table>,
    id: u64,
    evicted: CancellationToken,
    handshake_timeout: Duration,
    accepted: Instant,
}

impl Admission {
    /// The longest a new connection has, from its acceptance, for its TLS handshake and its
    /// `Hello` together.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// What is left of [`Admission::handshake_timeout`] now.
    pub fn handshake_time_left(&self) -> Duration {
        self.handshake_timeout
            .saturating_sub(self.accepted.elapsed())
    }

    /// Cancelled when the server closes this connection to make room for another.
    pub fn evicted(&self) -> &CancellationToken {
        &self.evicted
    }

    /// The connection waits for its next request (it may be evicted from now on).
    pub(super) fn waiting(&self) {
        let mut s = self.table.lock();
        if let Some(e) = s.conns.get_mut(&self.id)
            && e.busy
        {
            e.busy = false;
            e.waiting_since = Instant::now();
        }
    }

    /// A request arrived: the connection is being served. `false` if it was evicted first.
    pub(super) fn serving(&self) -> bool {
        let mut s = self.table.lock();
        match s.conns.get_mut(&self.id) {
            Some(e) => {
                e.busy = true;
                true
            }
            None => false,
        }
    }

    /// The client said `Hello`.
    pub(super) fn greeted(&self) {
        self.raise(Standing::Greeted);
    }

    /// The client proved who it is (the index calls this after a valid `Register`):
    /// evicted only after every connection that has not.
    pub fn trusted(&self) {
        self.raise(Standing::Trusted);
    }

    fn raise(&self, to: Standing) {
        if let Some(e) = self.table.lock().conns.get_mut(&self.id) {
            e.standing = e.standing.max(to);
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.table.lock().remove(self.id);
    }
}

/// Counts of a server's connections, for tests and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServeStats {
    /// Connections open now.
    pub open: usize,
    /// Connections closed to make room, in all.
    pub evicted: u64,
    /// Connections refused (no room, or too many from one address), in all.
    pub refused: u64,
}

/// The open connections of one server, within its [`ServeLimits`]: handed to
/// [`accept_loop`], and kept by the server to read its [`ServeStats`].
#[derive(Debug, Clone)]
pub struct Connections(Arc<Table>);

impl Connections {
    /// An empty table with these limits.
    pub fn new(limits: ServeLimits) -> Self {
        Connections(Arc::new(Table {
            limits,
            state: Mutex::new(TableState::default()),
        }))
    }

    /// Makes room for a connection from `ip` and admits it (the UDP transport's accept loop,
    /// `crate::tls::quic`, shares the table with TCP's); `None` when no room can be made.
    pub fn admit(&self, ip: IpAddr) -> Option<Admission> {
        self.0.admit(canonical_ip(ip))
    }

    /// How long shutdown waits for open connections.
    pub fn grace(&self) -> Duration {
        self.0.limits.grace
    }

    /// The counts now.
    pub fn stats(&self) -> ServeStats {
        let s = self.0.lock();
        ServeStats {
            open: s.conns.len(),
            evicted: s.evicted,
            refused: s.refused,
        }
    }
}

/// Accepts connections until `shutdown`, running `handler` for each, within the limits of
/// `connections`: every
/// connection is accepted at once, and one waiting for a request is closed to make room when
/// the server is full (see [`ServeLimits`]); a connection for which no room can be made is
/// answered `BUSY` and closed. Then waits up to the grace period for the open ones.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    connections: Connections,
    shutdown: CancellationToken,
    handler: F,
) where
    F: Fn(TcpStream, SocketAddr, Admission) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    raise_open_file_limit();
    let table = connections.0;
    let grace = table.limits.grace;
    let tracker = TaskTracker::new();
    loop {
        let (stream, addr) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors (or another passing failure): make room and retry.
                    warn!("accept failed: {e}");
                    {
                        let mut s = table.lock();
                        if let Some(v) = s.victim(|_| true) {
                            s.evict(v);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let ip = canonical_ip(addr.ip());
        let Some(admission) = table.admit(ip) else {
            debug!(%addr, "refused: every connection is being served");
            refuse_full(&stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let work = handler(stream, addr, admission);
        tracker.spawn(work);
    }
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        warn!("shutdown: connections still open after {grace:?}");
    }
}

/// An IPv4 client reaching an IPv6 socket counts as its IPv4 address.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Tells a connection there is no room (best effort, without waiting: a new socket's send
/// buffer takes a small frame at once), then closes it.
fn refuse_full(stream: &TcpStream) {
    let frame = error_frame(
        ErrorCode::Busy,
        "server at its connection limit; try again later",
    );
    let _ = stream.try_write(&frame);
}

/// The bytes of an `Error` frame, for a refusal written straight to a socket.
pub fn error_frame(code: ErrorCode, message: &str) -> Vec<u8> {
    let msg = Message::Error(ErrorReply::new(code, message));
    let mut frame = Vec::new();
    if let Ok(payload) = msg.encode_payload()
        && let Ok(header) = super::Frame::header(msg.tag(), payload.len())
    {
        frame.extend_from_slice(&header);
        frame.extend_from_slice(&payload);
    }
    frame
}

/// Raises the soft limit on open files to the hard limit (at most 65,536), so a server's
/// connection limit, not the descriptor limit, decides how many it holds (and thousands of
/// small files in flight in one `get` do not fail for want of descriptors).
pub fn raise_open_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max.min(65_536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Connection<S> {
    /// Server side: the next request, `Ok(None)` on a clean close or shutdown. A malformed
    /// frame is answered with `BAD_REQUEST` and returned as the error that closes the connection.
    pub async fn next_request(
        &mut self,
        shutdown: &CancellationToken,
    ) -> Result<Option<Message>, ProtocolError> {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => {
                // Replies held back for pipelined requests still go out.
                let _ = self.flush().await;
                return Ok(None);
            }
            m = self.read_message() => m,
        };
        match msg {
            // Closed to make room: nothing to say (the client was between requests).
            Err(ProtocolError::Evicted) => Err(ProtocolError::Evicted),
            Err(e @ ProtocolError::NoMemory { .. }) => {
                self.send_error(ErrorCode::Busy, e.to_string()).await;
                Err(e)
            }
            Err(e) => Err(self.refuse(e).await),
            ok => ok,
        }
    }

    /// `msg` as a request of the server's protocol `R`. Anything else (a second `Hello`
    /// included) is answered `BAD_REQUEST` ("`<Name>` is not a request `answerer` answers") and
    /// returned as the error that closes the connection.
    pub async fn request_of<R: MessageSet>(
        &mut self,
        msg: Message,
        answerer: &str,
    ) -> Result<R, ProtocolError> {
        let received = msg.name();
        let r = match msg {
            Message::Hello(_) => Err(ProtocolError::Unexpected {
                expected: R::WHAT,
                received,
            }),
            msg => R::try_from(msg),
        };
        if let Err(ProtocolError::Unexpected { .. }) = &r {
            let why = format!("{received} is not a request {answerer} answers");
            self.send_error(ErrorCode::BadRequest, why).await;
        }
        r
    }

    /// Answers a malformed request with `BAD_REQUEST`; returns its error, which closes the
    /// connection.
    pub async fn refuse(&mut self, e: ProtocolError) -> ProtocolError {
        self.send_error(ErrorCode::BadRequest, e.to_string()).await;
        e
    }
}

/// Opens a TCP connection within `timeout`, with Nagle off.
pub async fn connect_tcp(addr: &str, timeout: Duration) -> std::io::Result<TcpStream> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(r) => r?,
        Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

#[cfg(test)]
mod tests;
