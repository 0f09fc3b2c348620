//! The node's HTTP server: the `/api/v1` JSON API over [`NodeHandle`] (documented by
//! `openapi.json`, served at `/api/v1/openapi.json`), live events as server-sent events, the
//! login page, and its security: a token, Host and Origin checks, rate-limited logins, a body
//! limit and timeouts for slow clients.
//!
//! Layering: node <- web <- cli. The web UI ([`ui`]) is served from here as embedded static
//! files and uses only `/api/v1` and its events.

pub mod api;
pub mod auth;
pub mod client;
pub mod ui;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::node::NodeHandle;
use api::ApiError;
use auth::Guard;

/// The OpenAPI 3 document of `/api/v1`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// The file in the state directory telling where a running node's API is (JSON: `url`,
/// `port`, `pid`); the token is in [`auth::TOKEN_FILE`] beside it.
pub const NODE_FILE: &str = "node.json";

/// Default address of the HTTP server (`--web`).
pub const DEFAULT_WEB: &str = "127.0.0.1:0";

/// Largest request body taken (a list of 10,000 items to add fits).
pub const BODY_LIMIT: usize = 4 * 1024 * 1024;

/// A client must send a request's headers within this long.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// A request (its body included) must be answered within this long (the event stream
/// excepted).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 256;

/// How the server is set up.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Host names accepted in `Host` besides IP addresses and `localhost` (`--web-host`).
    pub names: Vec<String>,
    /// See [`BODY_LIMIT`].
    pub body_limit: usize,
    /// See [`HEADER_TIMEOUT`].
    pub header_timeout: Duration,
    /// See [`REQUEST_TIMEOUT`].
    pub request_timeout: Duration,
    /// See [`MAX_CONNECTIONS`].
    pub max_connections: usize,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            names: Vec::new(),
            body_limit: BODY_LIMIT,
            header_timeout: HEADER_TIMEOUT,
            request_timeout: REQUEST_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The node.
    pub node: NodeHandle,
    /// Tokens, sessions, failed logins.
    pub guard: Arc<Guard>,
}

/// Where a running node's API is, as [`NODE_FILE`] holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFile {
    /// `http://HOST:PORT/` (a loopback address when the node listens on all).
    pub url: String,
    /// The port.
    pub port: u16,
    /// The node's process id.
    pub pid: u32,
}

/// The URL local clients use for a server on `addr`.
pub fn local_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
        ip if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("http://{ip}:{}/", addr.port())
}

/// Writes [`NODE_FILE`] for a server on `addr` (replacing it atomically).
pub fn write_node_file(state_dir: &Path, addr: SocketAddr) -> std::io::Result<()> {
    let file = NodeFile {
        url: local_url(addr),
        port: addr.port(),
        pid: std::process::id(),
    };
    let tmp = state_dir.join(format!("{NODE_FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(&file)?)?;
    std::fs::rename(tmp, state_dir.join(NODE_FILE))
}

/// Removes [`NODE_FILE`] if it is this process's.
pub fn remove_node_file(state_dir: &Path) {
    let path = state_dir.join(NODE_FILE);
    if let Ok(text) = std::fs::read(&path)
        && let Ok(f) = serde_json::from_slice::<NodeFile>(&text)
        && f.pid == std::process::id()
    {
        let _ = std::fs::remove_file(path);
    }
}

/// The whole router: `/api/v1`, the pages, and the checks in front of them.
pub fn router(state: AppState, config: &WebConfig) -> Router {
    Router::new()
        .merge(api::router())
        .merge(ui::router())
        .route("/", get(index))
        .route("/login", get(login_page).post(login))
        // Behind the same token as the API (Prometheus sends it as `authorization` bearer).
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(config.body_limit))
        .layer(axum::middleware::from_fn_with_state(
            config.body_limit,
            too_long,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::check,
        ))
        // Outermost: refusals get the headers too.
        .layer(axum::middleware::from_fn(ui::security_headers))
        .with_state(state)
}

/// A body declared longer than the limit is refused before any of it is read (the limit
/// also holds for a body sent without a length, as it is read).
async fn too_long(
    State(limit): State<usize>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {limit} bytes"),
        )
        .into_response();
    }
    next.run(req).await
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
}

fn login_html(message: &str) -> String {
    format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
<meta name=viewport content=\"width=device-width, initial-scale=1\"><title>peershare: log in</title>\
<link rel=icon href=/ui/icon.svg type=image/svg+xml><link rel=stylesheet href=/ui/style.css></head>\
<body><main class=login><h1>peershare node</h1><p>{message}</p><form method=post action=/login>\
<label>Token <input name=token type=password autocomplete=current-password autofocus required></label> \
<button type=submit>Log in</button></form><p class=muted>The token is in the file <code>{}</code> in the \
node's state directory, and in the URL the node printed.</p></main></body></html>",
        auth::TOKEN_FILE
    )
}

#[derive(Deserialize)]
struct TokenParam {
    token: Option<String>,
}

/// A token shown (in `/?token=` or the login form): a session cookie and back to `/`; a
/// wrong one counts as a failed login.
fn exchange(app: &AppState, ip: std::net::IpAddr, token: &str) -> Response {
    if app.guard.locked_out(ip) {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            Html(login_html("Too many failed logins; try again in a minute.")),
        )
            .into_response();
    }
    if !app.guard.token_ok(token) {
        app.guard.failed(ip);
        return (StatusCode::UNAUTHORIZED, Html(login_html("Wrong token."))).into_response();
    }
    match app.guard.new_session() {
        Ok(session) => (
            [(header::SET_COOKIE, Guard::cookie(&session))],
            Redirect::to("/"),
        )
            .into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The node's counters in the Prometheus text format (docs/METRICS.md).
async fn metrics() -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        crate::metrics::node_text(),
    )
        .into_response()
}

async fn index(State(app): State<AppState>, Query(q): Query<TokenParam>, req: Request) -> Response {
    let ip = auth::client_ip(&req);
    if let Some(token) = q.token {
        return exchange(&app, ip, &token);
    }
    match app.guard.authorized(req.headers()) {
        auth::Credential::Valid => ui::page(),
        _ => Html(login_html("Log in with the node's token.")).into_response(),
    }
}

async fn login_page() -> Response {
    Html(login_html("Log in with the node's token.")).into_response()
}

async fn login(State(app): State<AppState>, req: Request) -> Response {
    let ip = auth::client_ip(&req);
    let form = axum::Form::<TokenParam>::from_request(req, &()).await;
    match form {
        Ok(axum::Form(TokenParam { token: Some(t) })) => exchange(&app, ip, &t),
        _ => (
            StatusCode::BAD_REQUEST,
            Html(login_html("Send the token in the form.")),
        )
            .into_response(),
    }
}

use axum::extract::FromRequest;

/// Serves `router` on `listener` until `stop`: HTTP/1.1, each connection with a deadline on
/// its headers, each request (but the event stream) with a deadline on its answer, at most
/// `max_connections` at once.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: WebConfig,
    stop: CancellationToken,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(config.max_connections.max(1)));
    let conns = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors and the like: a pause, not a busy loop.
                    tracing::warn!("web: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let (router, stop, request_timeout) =
            (router.clone(), stop.clone(), config.request_timeout);
        let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
            let router = router.clone();
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            async move {
                let req = req.map(axum::body::Body::new);
                if req.uri().path() == "/api/v1/events" {
                    return router.oneshot(req).await;
                }
                match tokio::time::timeout(request_timeout, router.oneshot(req)).await {
                    Ok(r) => r,
                    Err(_) => Ok(ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "the request took too long",
                    )
                    .into_response()),
                }
            }
        });
        let header_timeout = config.header_timeout;
        conns.spawn(async move {
            let _permit = permit;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
                }
            }
        });
    }
    conns.close();
    let _ = tokio::time::timeout(Duration::from_secs(3), conns.wait()).await;
}

/// The address a server listening on `addr` is reached at from elsewhere without TLS: a
/// warning when it is not a loopback address.
pub fn exposed_warning(addr: SocketAddr) -> Option<String> {
    (!addr.ip().is_loopback()).then(|| {
        format!(
            "the web API listens on {addr}, beyond this machine, without TLS: the token and \
             everything else cross the network in the clear; put it behind a TLS proxy or an SSH tunnel"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route of the router is in the OpenAPI document, and every operation of the
    /// document is a route.
    #[test]
    fn openapi_matches_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        assert_eq!(doc["openapi"].as_str().map(|v| &v[..2]), Some("3."));
        let mut documented = Vec::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for method in ops.as_object().unwrap().keys() {
                if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                    documented.push((method.clone(), path.clone()));
                }
            }
        }
        let mut routed: Vec<(String, String)> = api::routes()
            .into_iter()
            .map(|(m, p, _)| (m.to_string(), p.to_string()))
            .collect();
        documented.sort();
        routed.sort();
        assert_eq!(documented, routed);
    }

    #[test]
    fn local_urls() {
        assert_eq!(
            local_url("0.0.0.0:80".parse().unwrap()),
            "http://127.0.0.1:80/"
        );
        assert_eq!(
            local_url("[::1]:8080".parse().unwrap()),
            "http://[::1]:8080/"
        );
        assert!(exposed_warning("127.0.0.1:1".parse().unwrap()).is_none());
        assert!(exposed_warning("0.0.0.0:1".parse().unwrap()).is_some());
    }
}
