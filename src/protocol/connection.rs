//! `Connection`: reads and writes framed messages over any byte stream, with time limits.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::serve::Admission;
use super::{
    ErrorCode, ErrorReply, Frame, LENGTH_PREFIX_LEN, MAX_FRAME_LEN, Message, ProtocolError,
    SMALL_FRAME_LEN,
};

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

    /// Ends the framing: the stream, the bytes already read past the last frame returned, and
    /// the server's record of the connection (keep it to keep the connection counted). Flush
    /// first: what [`Connection::queue`] held back is dropped. (A relay splices the stream.)
    pub fn into_parts(self) -> (S, BytesMut, Option<Admission>) {
        let admission = self.server.and_then(|s| s.admission);
        (self.stream.into_inner(), self.buf, admission)
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
                // TLS reports a close without `close_notify` so; between frames it is a close
                // like any other (frames carry their length: a cut one is still caught below).
                Ok(Err(e))
                    if e.kind() == std::io::ErrorKind::UnexpectedEof && self.buf.is_empty() =>
                {
                    return Ok(None);
                }
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
}
