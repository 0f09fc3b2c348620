//! What every server and client of the protocol shares: the accept loop, the request loop's read, and connecting.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use super::{Connection, Message, ProtocolError, code};

/// Accepts connections until `shutdown`, running `handler` for each with at most
/// `max_connections` at once (a permit is taken before `accept`, so extra clients wait in the
/// listen queue), then waits up to `grace` for the open ones.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    max_connections: usize,
    grace: Duration,
    shutdown: CancellationToken,
    handler: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(max_connections));
    let tracker = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (stream, addr) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let work = handler(stream, addr);
        tracker.spawn(async move {
            let _permit = permit;
            work.await
        });
    }
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        warn!("shutdown: connections still open after {grace:?}");
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
            Err(e) => Err(self.refuse(e).await),
            ok => ok,
        }
    }

    /// Answers a malformed request with `BAD_REQUEST`; returns its error, which closes the
    /// connection.
    pub async fn refuse(&mut self, e: ProtocolError) -> ProtocolError {
        self.send_error(code::BAD_REQUEST, e.to_string()).await;
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
