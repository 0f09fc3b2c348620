//! A listener serving `GET /metrics` (and nothing else) over plain HTTP/1.1, for the index's
//! `--metrics ADDR`. The node mounts [`super::node_text`] on its own web server instead.
//!
//! Anyone who can connect may scrape: it is meant for loopback or a monitoring network. Every
//! connection is bounded in time and size, and their number is bounded: a slow or hostile
//! client holds one of [`MAX_CONNECTIONS`] places for at most [`CONNECTION_TIMEOUT`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Connections served at once; more are closed at once, unread.
pub const MAX_CONNECTIONS: usize = 16;
/// Longest wait for a request's whole head (request line and headers).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest life of a connection, from accept to the last byte of the reply.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head read (hyper's smallest buffer); a larger one is answered 431.
pub const MAX_REQUEST_HEAD: usize = 8192;

/// What renders the metrics' text (it may block briefly: it is run on the blocking pool).
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Serves `GET /metrics` on `listener` until `shutdown`: the text of `render`, one request
/// per connection. Other paths are 404, other methods 405; bodies are never read.
pub async fn serve(listener: TcpListener, render: Render, shutdown: CancellationToken) {
    let places = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, addr) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors, say: wait for some to be freed.
                    warn!("metrics listener: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(place) = places.clone().try_acquire_owned() else {
            debug!(%addr, "metrics: refused, {MAX_CONNECTIONS} connections being served");
            continue;
        };
        let (render, shutdown) = (render.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _place = place;
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(MAX_REQUEST_HEAD)
                .keep_alive(false)
                .serve_connection(
                    TokioIo::new(stream),
                    service_fn(move |req| answer(req, render.clone())),
                );
            tokio::select! {
                r = tokio::time::timeout(CONNECTION_TIMEOUT, conn) => match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => debug!(%addr, "metrics connection: {e}"),
                    Err(_) => debug!(%addr, "metrics connection: closed after {CONNECTION_TIMEOUT:?}"),
                },
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

async fn answer(
    req: Request<Incoming>,
    render: Render,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() != "/metrics" {
        return Ok(plain(
            StatusCode::NOT_FOUND,
            "not found: metrics are at /metrics\n",
        ));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        r.headers_mut()
            .insert(ALLOW, hyper::header::HeaderValue::from_static("GET, HEAD"));
        return Ok(r);
    }
    Ok(match tokio::task::spawn_blocking(move || render()).await {
        Ok(text) => {
            let mut r = Response::new(Full::new(Bytes::from(text)));
            r.headers_mut().insert(
                CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(super::CONTENT_TYPE),
            );
            r
        }
        Err(e) => {
            warn!("rendering metrics: {e}");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "metrics failed\n")
        }
    })
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
