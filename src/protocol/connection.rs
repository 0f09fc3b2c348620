//! `Connection`: reads and writes framed messages over any byte stream, with time limits.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::serve::Admission;
use super::{
    ErrorCode, ErrorReply, Frame, Hello, LENGTH_PREFIX_LEN, MAX_FRAME_LEN, Message,
    PROTOCOL_VERSION, ProtocolError, SMALL_FRAME_LEN, Welcome, feature,
};
use crate::content::Digest;

/// Time limits of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest wait for a whole message to arrive (covers idle time and slow senders).
    pub read_timeout: Duration,
    /// Longest wait for a message to be written out.
    pub write_timeout: Duration,
}

impl Default for Limits {
    /// 60 s to receive a message, 60 s to send one.
    fn default() -> Self {
        Limits {
            read_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(60),
        }
    }
}

/// Bytes all of a server's connections may hold together in frames larger than
/// [`SMALL_FRAME_LEN`] while they arrive. A connection takes a frame's size from it once the
/// length prefix is in, before making room for the body, and gives it back when it reads its
/// next request; while the budget is used up it waits (within its read limits), leaving the
/// bytes in the kernel, so the sender is slowed down by TCP.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    bytes: Arc<Semaphore>,
    limit: usize,
}

impl MemoryBudget {
    /// A budget of `limit` bytes, raised to at least one largest frame.
    pub fn new(limit: usize) -> Self {
        let limit = limit.clamp(LENGTH_PREFIX_LEN + MAX_FRAME_LEN, Semaphore::MAX_PERMITS);
        MemoryBudget {
            bytes: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }

    /// The budget's size in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes taken right now.
    pub fn in_use(&self) -> usize {
        self.limit - self.bytes.available_permits()
    }

    async fn take(&self, bytes: usize) -> OwnedSemaphorePermit {
        match self.bytes.clone().acquire_many_owned(bytes as u32).await {
            Ok(p) => p,
            // The semaphore is never closed.
            Err(_) => std::future::pending().await,
        }
    }
}

/// What a server's end of a connection is held to, besides its [`Limits`].
#[derive(Debug)]
pub struct ServerSide {
    /// Its place in the server's table of connections (evicted when the server needs room).
    pub admission: Option<Admission>,
    /// Shared memory for large frames; `None`: every frame must fit [`SMALL_FRAME_LEN`]
    /// or `max_frame`, whichever is less.
    pub budget: Option<MemoryBudget>,
    /// Largest `length` field accepted (at most [`MAX_FRAME_LEN`]).
    pub max_frame: usize,
    /// Longest time from a frame's first byte to its last.
    pub frame_timeout: Duration,
}

/// Capacity of a server connection's own read buffer.
const SERVER_READ_BUF: usize = SMALL_FRAME_LEN;

/// A framed, buffered connection. Reads are cancel-safe: a partly read frame stays buffered.
pub struct Connection<S> {
    stream: BufWriter<S>,
    buf: BytesMut,
    limits: Limits,
    // Boxed: clients (most connections) carry only the pointer.
    server: Option<Box<ServerSide>>,
    /// The budget taken for the large frame being read (or last read).
    held: Option<OwnedSemaphorePermit>,
    /// When the first byte of the frame being read arrived.
    frame_started: Option<Instant>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// A client's connection over `stream`.
    pub fn new(stream: S, limits: Limits) -> Self {
        Connection {
            stream: BufWriter::with_capacity(64 * 1024, stream),
            buf: BytesMut::with_capacity(64 * 1024),
            limits,
            server: None,
            held: None,
            frame_started: None,
        }
    }

    /// A server's end of a connection: frames above [`SMALL_FRAME_LEN`] need room in
    /// `side.budget`, each frame must arrive within `side.frame_timeout` of its first byte,
    /// `Hello` within the admission's handshake limit, and the connection can be evicted
    /// while it waits for a request.
    pub fn server(stream: S, limits: Limits, side: ServerSide) -> Self {
        Connection {
            stream: BufWriter::with_capacity(64 * 1024, stream),
            buf: BytesMut::with_capacity(SERVER_READ_BUF),
            limits,
            server: Some(Box::new(side)),
            held: None,
            frame_started: None,
        }
    }

    /// The stream.
    pub fn get_ref(&self) -> &S {
        self.stream.get_ref()
    }

    /// The server's record of this connection, if it is a server's end.
    pub fn admission(&self) -> Option<&Admission> {
        self.server.as_ref().and_then(|s| s.admission.as_ref())
    }

    fn max_frame(&self) -> usize {
        match &self.server {
            None => MAX_FRAME_LEN,
            Some(s) if s.budget.is_none() => s.max_frame.min(SMALL_FRAME_LEN - LENGTH_PREFIX_LEN),
            Some(s) => s.max_frame,
        }
    }

    /// The next whole frame already buffered, if any.
    fn parse_buffered(&mut self) -> Result<Option<Frame>, ProtocolError> {
        let max = self.max_frame();
        let frame = Frame::parse_max(&mut self.buf, max)?;
        if frame.is_some() {
            self.frame_started = None;
            // A large frame had a buffer of its own, exactly its size: the next ones go back
            // to a small one (its memory is freed once the frame is handled).
            if self.held.is_some() && self.buf.capacity() == self.buf.len() {
                let rest =
                    std::mem::replace(&mut self.buf, BytesMut::with_capacity(SERVER_READ_BUF));
                self.buf.extend_from_slice(&rest);
            }
        }
        Ok(frame)
    }

    /// Reads one frame; `Ok(None)` when the peer closed the stream cleanly between frames.
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, ProtocolError> {
        // The previous frame has been handled: its memory goes back to the budget.
        self.held = None;
        let r = match self.parse_buffered()? {
            Some(frame) => Ok(Some(frame)),
            None => {
                let idle_until = Instant::now() + self.limits.read_timeout;
                match self.admission().map(|a| a.evicted().clone()) {
                    None => self.read_frame_inner(idle_until).await,
                    Some(evicted) => {
                        if let Some(a) = self.admission() {
                            a.waiting();
                        }
                        tokio::select! {
                            biased;
                            _ = evicted.cancelled() => Err(ProtocolError::Evicted),
                            r = self.read_frame_inner(idle_until) => r,
                        }
                    }
                }
            }
        };
        if let Ok(Some(_)) = &r
            && self.admission().is_some_and(|a| !a.serving())
        {
            return Err(ProtocolError::Evicted);
        }
        r
    }

    /// Reads until a whole frame is buffered, the stream closes, or a limit is reached:
    /// `idle_until` for the whole frame, the frame timeout from its first byte.
    async fn read_frame_inner(
        &mut self,
        idle_until: Instant,
    ) -> Result<Option<Frame>, ProtocolError> {
        let secs = |d: Duration| d.as_secs();
        loop {
            if let Some(frame) = self.parse_buffered()? {
                return Ok(Some(frame));
            }
            let (deadline, limit) = match (&self.server, self.buf.is_empty()) {
                (Some(side), false) => {
                    let started = *self.frame_started.get_or_insert_with(Instant::now);
                    let frame_until = started + side.frame_timeout;
                    match frame_until < idle_until {
                        true => (frame_until, side.frame_timeout),
                        false => (idle_until, self.limits.read_timeout),
                    }
                }
                _ => (idle_until, self.limits.read_timeout),
            };
            self.make_room(deadline, secs(limit)).await?;
            let read =
                tokio::time::timeout_at(deadline, self.stream.get_mut().read_buf(&mut self.buf));
            match read.await {
                Err(_) => return Err(ProtocolError::Timeout { secs: secs(limit) }),
                Ok(Err(e)) => return Err(e.into()),
                Ok(Ok(0)) => {
                    return if self.buf.is_empty() {
                        Ok(None)
                    } else {
                        Err(ProtocolError::TruncatedFrame {
                            buffered: self.buf.len(),
                        })
                    };
                }
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Makes room in the read buffer for the frame being read: its whole length once the
    /// prefix is in, taken from the budget first for a large frame on a server.
    async fn make_room(&mut self, deadline: Instant, secs: u64) -> Result<(), ProtocolError> {
        let need = Frame::pending_len(&self.buf, self.max_frame())?.map(|n| LENGTH_PREFIX_LEN + n);
        let budget = self.server.as_ref().and_then(|s| s.budget.clone());
        match (need, budget) {
            (Some(need), Some(budget)) if need > SMALL_FRAME_LEN && self.held.is_none() => {
                let Ok(permit) = tokio::time::timeout_at(deadline, budget.take(need)).await else {
                    return Err(ProtocolError::NoMemory { bytes: need, secs });
                };
                self.held = Some(permit);
                let mut own = BytesMut::with_capacity(need);
                own.extend_from_slice(&self.buf);
                self.buf = own;
            }
            // Already taken from the budget: the buffer has the room.
            (Some(need), Some(_)) if need > SMALL_FRAME_LEN => {}
            (Some(need), _) if self.buf.capacity() < need => {
                self.buf.reserve(need - self.buf.len());
            }
            _ => {}
        }
        let spare = self.buf.capacity() - self.buf.len();
        match self.server.is_some() {
            // Room for a few pipelined requests; a frame being read has all it needs.
            true if spare == 0 => self.buf.reserve(SERVER_READ_BUF),
            false if spare < 8 * 1024 => self.buf.reserve(64 * 1024),
            _ => {}
        }
        Ok(())
    }

    /// Server side: the next request if it is already buffered whole, without reading the
    /// stream or answering anything (a malformed one is returned as its error, for the caller
    /// to answer in turn through [`Connection::refuse`]). Lets a server look at pipelined
    /// requests before answering the first.
    pub fn buffered_request(&mut self) -> Option<Result<Message, ProtocolError>> {
        match self.parse_buffered() {
            Ok(Some(frame)) => Some(Message::decode(frame)),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// Reads and decodes one message; `Ok(None)` on a clean close.
    pub async fn read_message(&mut self) -> Result<Option<Message>, ProtocolError> {
        match self.read_frame().await? {
            Some(frame) => Message::decode(frame).map(Some),
            None => Ok(None),
        }
    }

    /// Reads one message as a reply: a close is an error, an `Error` message becomes `Remote`.
    pub async fn recv(&mut self) -> Result<Message, ProtocolError> {
        match self.read_message().await? {
            None => Err(ProtocolError::Closed),
            Some(Message::Error(e)) => Err(ProtocolError::Remote(e)),
            Some(m) => Ok(m),
        }
    }

    /// Writes a message into the send buffer without flushing.
    pub async fn queue(&mut self, msg: &Message) -> Result<(), ProtocolError> {
        match msg {
            Message::Piece(p) => {
                self.queue_parts(msg.tag(), &p.index.to_be_bytes(), &p.data)
                    .await
            }
            _ => {
                self.queue_parts(msg.tag(), &msg.encode_payload()?, &[])
                    .await
            }
        }
    }

    /// Writes one frame whose payload is `head` then `tail` into the send buffer.
    async fn queue_parts(
        &mut self,
        tag: u8,
        head: &[u8],
        tail: &[u8],
    ) -> Result<(), ProtocolError> {
        let secs = self.limits.write_timeout.as_secs();
        let header = Frame::header(tag, head.len() + tail.len())?;
        let write = async {
            self.stream.write_all(&header).await?;
            self.stream.write_all(head).await?;
            self.stream.write_all(tail).await?;
            Ok::<(), ProtocolError>(())
        };
        match tokio::time::timeout(self.limits.write_timeout, write).await {
            Ok(r) => r,
            Err(_) => Err(ProtocolError::Timeout { secs }),
        }
    }

    /// Whether another whole request is already buffered: a client pipelining requests sent
    /// it, so a reply may wait in the send buffer and go out with the next ones.
    pub fn request_pending(&self) -> bool {
        self.buf.len() >= LENGTH_PREFIX_LEN
            && u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize
                <= self.buf.len() - LENGTH_PREFIX_LEN
    }

    /// Sends a reply; flushed at once unless another request is already waiting (then it goes
    /// out with that one's reply: one write for a whole pipelined batch).
    pub async fn reply(&mut self, msg: &Message) -> Result<(), ProtocolError> {
        self.queue(msg).await?;
        self.flush_unless_pending().await
    }

    /// [`Connection::reply`] with an already encoded payload.
    pub async fn reply_encoded(&mut self, tag: u8, payload: &[u8]) -> Result<(), ProtocolError> {
        self.queue_parts(tag, payload, &[]).await?;
        self.flush_unless_pending().await
    }

    async fn flush_unless_pending(&mut self) -> Result<(), ProtocolError> {
        match self.request_pending() {
            true => Ok(()),
            false => self.flush().await,
        }
    }

    /// Sends what [`Connection::queue`] held back.
    pub async fn flush(&mut self) -> Result<(), ProtocolError> {
        let secs = self.limits.write_timeout.as_secs();
        match tokio::time::timeout(self.limits.write_timeout, self.stream.flush()).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(ProtocolError::Timeout { secs }),
        }
    }

    /// Writes a message and flushes it.
    pub async fn send(&mut self, msg: &Message) -> Result<(), ProtocolError> {
        self.queue(msg).await?;
        self.flush().await
    }

    /// Sends a request and reads its reply.
    pub async fn request(&mut self, msg: &Message) -> Result<Message, ProtocolError> {
        self.send(msg).await?;
        self.recv().await
    }

    /// Sends an error reply (best effort: the connection is usually closed next).
    pub async fn send_error(&mut self, code: ErrorCode, message: impl Into<String>) {
        let _ = self
            .send(&Message::Error(ErrorReply::new(code, message)))
            .await;
    }

    /// Client side of the opening exchange: `Hello` asking for every feature this build knows,
    /// then the server's `Welcome`, whose `features` are the ones agreed.
    pub async fn client_handshake(&mut self) -> Result<Welcome, ProtocolError> {
        let hello = Message::Hello(Hello {
            version_min: PROTOCOL_VERSION,
            version_max: PROTOCOL_VERSION,
            agent: agent(),
            features: feature::ALL.iter().map(|f| f.to_string()).collect(),
        });
        match self.request(&hello).await? {
            Message::Welcome(w) if w.version == PROTOCOL_VERSION => Ok(w),
            Message::Welcome(w) => Err(ProtocolError::Version {
                ours_min: PROTOCOL_VERSION,
                ours_max: PROTOCOL_VERSION,
                theirs_min: w.version,
                theirs_max: w.version,
            }),
            other => Err(ProtocolError::Unexpected {
                expected: "Welcome",
                received: other.name(),
            }),
        }
    }

    /// Server side of the opening exchange: waits for `Hello`, answers `Welcome` with `nonce`
    /// and the features of the `Hello` that are in `supported`; returns the `Hello` and the
    /// `Welcome`. `Ok(None)` if the client closed before saying anything.
    pub async fn server_handshake(
        &mut self,
        nonce: Digest,
        supported: &[&str],
    ) -> Result<Option<(Hello, Welcome)>, ProtocolError> {
        let first = match self.admission().map(|a| a.handshake_timeout()) {
            None => self.read_message().await,
            Some(limit) => match tokio::time::timeout(limit, self.read_message()).await {
                Ok(r) => r,
                Err(_) => Err(ProtocolError::Handshake {
                    millis: limit.as_millis() as u64,
                }),
            },
        };
        let hello = match first? {
            None => return Ok(None),
            Some(Message::Hello(h)) => h,
            Some(other) => {
                self.send_error(ErrorCode::BadRequest, "the first message must be Hello")
                    .await;
                return Err(ProtocolError::Unexpected {
                    expected: "Hello",
                    received: other.name(),
                });
            }
        };
        if hello.version_min > PROTOCOL_VERSION || hello.version_max < PROTOCOL_VERSION {
            self.send_error(
                ErrorCode::UnsupportedVersion,
                format!("this server speaks protocol version {PROTOCOL_VERSION}"),
            )
            .await;
            return Err(ProtocolError::Version {
                ours_min: PROTOCOL_VERSION,
                ours_max: PROTOCOL_VERSION,
                theirs_min: hello.version_min,
                theirs_max: hello.version_max,
            });
        }
        if let Some(a) = self.admission() {
            a.greeted();
        }
        let welcome = Welcome {
            version: PROTOCOL_VERSION,
            agent: agent(),
            nonce,
            features: agreed(&hello.features, supported),
        };
        self.send(&Message::Welcome(welcome.clone())).await?;
        Ok(Some((hello, welcome)))
    }
}

/// The features of a `Hello` that the server supports, each once, in the server's order (a
/// client may list at most [`MAX_FEATURES`] features of at most [`MAX_FEATURE_LEN`] bytes that
/// matter; the rest are ignored, so a long list cannot cost the server anything).
fn agreed(asked: &[String], supported: &[&str]) -> Vec<String> {
    let asked = &asked[..asked.len().min(MAX_FEATURES)];
    supported
        .iter()
        .filter(|f| asked.iter().any(|a| a.len() <= MAX_FEATURE_LEN && a == *f))
        .map(|f| f.to_string())
        .collect()
}

/// Features of a `Hello` a server looks at; later ones are ignored.
pub const MAX_FEATURES: usize = 32;
/// Longest feature name a server looks at.
pub const MAX_FEATURE_LEN: usize = 64;

/// This build's agent string, e.g. `peershare/0.1.0`.
pub fn agent() -> String {
    format!("peershare/{}", env!("CARGO_PKG_VERSION"))
}
