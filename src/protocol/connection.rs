//! `Connection`: reads and writes framed messages over any byte stream, with time limits.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};

use super::{
    ErrorReply, Frame, Hello, LENGTH_PREFIX_LEN, Message, PROTOCOL_VERSION, ProtocolError, Welcome,
    code,
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

/// A framed, buffered connection. Reads are cancel-safe: a partly read frame stays buffered.
pub struct Connection<S> {
    stream: BufWriter<S>,
    buf: BytesMut,
    limits: Limits,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    pub fn new(stream: S, limits: Limits) -> Self {
        Connection {
            stream: BufWriter::with_capacity(64 * 1024, stream),
            buf: BytesMut::with_capacity(64 * 1024),
            limits,
        }
    }

    pub fn get_ref(&self) -> &S {
        self.stream.get_ref()
    }

    /// Reads one frame; `Ok(None)` when the peer closed the stream cleanly between frames.
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, ProtocolError> {
        let secs = self.limits.read_timeout.as_secs();
        match tokio::time::timeout(self.limits.read_timeout, self.read_frame_inner()).await {
            Ok(r) => r,
            Err(_) => Err(ProtocolError::Timeout { secs }),
        }
    }

    async fn read_frame_inner(&mut self) -> Result<Option<Frame>, ProtocolError> {
        loop {
            if let Some(frame) = Frame::parse(&mut self.buf)? {
                return Ok(Some(frame));
            }
            if self.buf.capacity() - self.buf.len() < 8 * 1024 {
                self.buf.reserve(64 * 1024);
            }
            if self.stream.get_mut().read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ProtocolError::TruncatedFrame {
                        buffered: self.buf.len(),
                    })
                };
            }
        }
    }

    /// Server side: the next request if it is already buffered whole, without reading the
    /// stream or answering anything (a malformed one is returned as its error, for the caller
    /// to answer in turn through [`Connection::refuse`]). Lets a server look at pipelined
    /// requests before answering the first.
    pub fn buffered_request(&mut self) -> Option<Result<Message, ProtocolError>> {
        match Frame::parse(&mut self.buf) {
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
    pub async fn send_error(&mut self, code: u16, message: impl Into<String>) {
        let _ = self
            .send(&Message::Error(ErrorReply::new(code, message)))
            .await;
    }

    /// Client side of the opening exchange: `Hello`, then the server's `Welcome`.
    pub async fn client_handshake(&mut self) -> Result<Welcome, ProtocolError> {
        let hello = Message::Hello(Hello {
            version_min: PROTOCOL_VERSION,
            version_max: PROTOCOL_VERSION,
            agent: agent(),
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

    /// Server side of the opening exchange: waits for `Hello`, answers `Welcome` with `nonce`.
    /// `Ok(None)` if the client closed before saying anything.
    pub async fn server_handshake(
        &mut self,
        nonce: Digest,
    ) -> Result<Option<Hello>, ProtocolError> {
        let hello = match self.read_message().await? {
            None => return Ok(None),
            Some(Message::Hello(h)) => h,
            Some(other) => {
                self.send_error(code::BAD_REQUEST, "the first message must be Hello")
                    .await;
                return Err(ProtocolError::Unexpected {
                    expected: "Hello",
                    received: other.name(),
                });
            }
        };
        if hello.version_min > PROTOCOL_VERSION || hello.version_max < PROTOCOL_VERSION {
            self.send_error(
                code::UNSUPPORTED_VERSION,
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
        self.send(&Message::Welcome(Welcome {
            version: PROTOCOL_VERSION,
            agent: agent(),
            nonce,
        }))
        .await?;
        Ok(Some(hello))
    }
}

/// This build's agent string, e.g. `peershare/0.1.0`.
pub fn agent() -> String {
    format!("peershare/{}", env!("CARGO_PKG_VERSION"))
}
