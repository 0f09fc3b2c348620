//! The streams a peer connection runs on: a direct TLS connection, or the peers' own TLS
//! inside a connection the index relays (docs/PROTOCOL.md §7.10), which the index's TLS wraps
//! in turn.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::SecureStream;

/// A connection to the index after `Relayed`: what the index forwards from the other peer,
/// starting with the bytes already read past the `Relayed` frame.
pub struct RelayIo {
    stream: SecureStream,
    rest: BytesMut,
}

impl RelayIo {
    /// `stream` with `rest` read from it already (to be read first).
    pub fn new(stream: SecureStream, rest: BytesMut) -> RelayIo {
        RelayIo { stream, rest }
    }
}

impl AsyncRead for RelayIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.rest.is_empty() {
            let n = self.rest.len().min(buf.remaining());
            buf.put_slice(&self.rest[..n]);
            self.rest.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for RelayIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The secure stream of a peer connection, either end.
// Direct connections, the common case, stay unboxed: the stream lives once per connection,
// beside buffers far larger than it.
#[allow(clippy::large_enum_variant)]
pub enum PeerStream {
    /// TLS over TCP straight to the other peer.
    Direct(SecureStream),
    /// The peers' TLS end to end, inside the relaying index's TLS.
    Relayed(Box<tokio_rustls::TlsStream<RelayIo>>),
    /// A QUIC stream (TLS 1.3 inside QUIC, §1.2): direct or after a hole punch.
    Quic(super::quic::QuicStream),
}

impl PeerStream {
    /// The TLS cipher suite the two peers agreed, e.g. `TLS13_AES_128_GCM_SHA256`.
    pub fn cipher_suite(&self) -> &'static str {
        let conn = match self {
            PeerStream::Direct(s) => s.get_ref().1,
            PeerStream::Relayed(s) => s.get_ref().1,
            // quinn does not tell which of the suites offered (§1.1) was agreed.
            PeerStream::Quic(_) => return "TLS13 over QUIC",
        };
        conn.negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str())
            .unwrap_or("unknown")
    }

    /// Whether the connection goes through a relay.
    pub fn is_relayed(&self) -> bool {
        matches!(self, PeerStream::Relayed(_))
    }

    /// Whether this is the UDP transport (QUIC).
    pub fn is_quic(&self) -> bool {
        matches!(self, PeerStream::Quic(_))
    }
}

macro_rules! both {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            PeerStream::Direct($s) => {
                let $s = Pin::new($s);
                $e
            }
            PeerStream::Relayed($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
            PeerStream::Quic($s) => {
                let $s = Pin::new($s);
                $e
            }
        }
    };
}

impl AsyncRead for PeerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        both!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        both!(self, s => s.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        both!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        both!(self, s => s.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        both!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            PeerStream::Direct(s) => s.is_write_vectored(),
            PeerStream::Relayed(s) => s.is_write_vectored(),
            PeerStream::Quic(s) => s.is_write_vectored(),
        }
    }
}
