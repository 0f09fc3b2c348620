//! The `/api/v1` endpoints over [`NodeHandle`](crate::node::NodeHandle): JSON in and out, every refusal a 4xx with a
//! one-line JSON error (`{"error": "..."}`).

use std::convert::Infallible;

use axum::Router;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::AppState;
use crate::node::queue::{ItemKind, ItemState, MAX_ADD, MAX_PAGE, NewItem, QueueError};
use crate::node::{NodeError, SettingsPatch};

/// Items a listing returns when no `limit` is given.
pub const DEFAULT_PAGE: usize = 100;

/// A refusal: a status and one line.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl ApiError {
    /// `status` with `message` (one line).
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into().replace(['\n', '\r'], " "),
        }
    }

    fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(ErrorBody {
                error: &self.message,
            }),
        )
            .into_response()
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> ApiError {
        let status = match &e {
            NodeError::Queue(QueueError::NotFound(_)) => StatusCode::NOT_FOUND,
            NodeError::Queue(QueueError::BadTransition { .. } | QueueError::Full) => {
                StatusCode::CONFLICT
            }
            NodeError::BadValue(_) => StatusCode::BAD_REQUEST,
            NodeError::NoIndex => StatusCode::CONFLICT,
            NodeError::Index(_) => StatusCode::BAD_GATEWAY,
            NodeError::Queue(QueueError::Db(_)) | NodeError::Io(_) => {
                tracing::error!("api: {e}");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError::new(status, crate::text::error_chain(&e))
    }
}

/// A JSON body whose refusals are JSON errors too (400 malformed, 413 too large, 415 not JSON).
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Body(v)),
            Err(e) => Err(ApiError::new(
                match &e {
                    JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    _ if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                        StatusCode::PAYLOAD_TOO_LARGE
                    }
                    _ => StatusCode::BAD_REQUEST,
                },
                e.body_text(),
            )),
        }
    }
}

/// Query parameters whose refusals are JSON errors.
pub struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Params(q.0))
            .map_err(|e: QueryRejection| ApiError::bad(e.body_text()))
    }
}

/// An item id in the path (`/transfers/{id}`), refused as JSON when it is not one.
pub struct Id(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<i64>::from_request_parts(parts, state)
            .await
            .map(|p| Id(p.0))
            .map_err(|e: PathRejection| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("no such item: {}", e.body_text()),
                )
            })
    }
}

/// Every route: method, path (as in the OpenAPI document), handler. The router is built
/// from this list, and a test checks it against the document.
pub fn routes() -> Vec<(&'static str, &'static str, MethodRouter<AppState>)> {
    vec![
        ("get", "/api/v1/transfers", get(list_transfers)),
        ("post", "/api/v1/transfers", post(add_transfers)),
        ("get", "/api/v1/transfers/{id}", get(get_transfer)),
        ("delete", "/api/v1/transfers/{id}", delete(remove_transfer)),
        ("post", "/api/v1/transfers/{id}/pause", post(pause)),
        ("post", "/api/v1/transfers/{id}/resume", post(resume)),
        ("post", "/api/v1/transfers/{id}/cancel", post(cancel)),
        ("post", "/api/v1/transfers/{id}/move", post(move_transfer)),
        (
            "post",
            "/api/v1/transfers/remove-finished",
            post(remove_finished),
        ),
        ("get", "/api/v1/status", get(status)),
        ("get", "/api/v1/shares", get(shares)),
        ("get", "/api/v1/search", get(search)),
        ("get", "/api/v1/settings", get(get_settings)),
        ("put", "/api/v1/settings", put(put_settings)),
        ("get", "/api/v1/peers", get(peers)),
        ("get", "/api/v1/group", get(group)),
        ("get", "/api/v1/events", get(events)),
        ("get", "/api/v1/openapi.json", get(openapi)),
    ]
}

/// The `/api/v1` router (the same paths merged by method).
pub fn router() -> Router<AppState> {
    let mut merged: Vec<(&str, MethodRouter<AppState>)> = Vec::new();
    for (_, path, handler) in routes() {
        match merged.iter_mut().find(|(p, _)| *p == path) {
            Some((_, m)) => *m = std::mem::take(m).merge(handler),
            None => merged.push((path, handler)),
        }
    }
    merged
        .into_iter()
        .fold(Router::new(), |r, (path, m)| r.route(path, m))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    state: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
}

async fn list_transfers(
    State(app): State<AppState>,
    Params(p): Params<ListParams>,
) -> Result<Response, ApiError> {
    let state = match p.state.as_deref() {
        None | Some("") => None,
        Some(s) => Some(ItemState::parse(s).ok_or_else(|| {
            ApiError::bad(format!(
                "state must be one of queued, running, paused, done, failed, cancelled (not {s:?})"
            ))
        })?),
    };
    let limit = p.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad(format!("limit must be 1..={MAX_PAGE}")));
    }
    let page = app.node.list(state, p.offset.unwrap_or(0), limit)?;
    Ok(axum::Json(page).into_response())
}

/// One item to add.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddItem {
    /// `file`, `folder` or `query`.
    kind: ItemKind,
    /// The content id, `PEER:PATH`, or the query.
    target: String,
    #[serde(default)]
    name: String,
    size: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    items: Vec<AddItem>,
}

#[derive(Serialize)]
struct Added {
    ids: Vec<i64>,
}

async fn add_transfers(
    State(app): State<AppState>,
    Body(body): Body<AddBody>,
) -> Result<Response, ApiError> {
    if body.items.is_empty() || body.items.len() > MAX_ADD {
        return Err(ApiError::bad(format!("items: 1..={MAX_ADD} of them")));
    }
    let items = body
        .items
        .into_iter()
        .map(|i| {
            let target = match i.kind {
                ItemKind::File => i.target.to_ascii_lowercase(),
                _ => i.target,
            };
            NewItem {
                kind: i.kind,
                target,
                name: i.name,
                size: i.size,
                sources: Vec::new(),
            }
        })
        .collect();
    let ids = app.node.add(items)?;
    Ok((StatusCode::CREATED, axum::Json(Added { ids })).into_response())
}

async fn get_transfer(State(app): State<AppState>, Id(id): Id) -> Result<Response, ApiError> {
    Ok(axum::Json(app.node.item(id)?).into_response())
}

async fn remove_transfer(State(app): State<AppState>, Id(id): Id) -> Result<Response, ApiError> {
    app.node.remove(id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn pause(State(app): State<AppState>, Id(id): Id) -> Result<Response, ApiError> {
    Ok(axum::Json(app.node.pause(id)?).into_response())
}

async fn resume(State(app): State<AppState>, Id(id): Id) -> Result<Response, ApiError> {
    Ok(axum::Json(app.node.resume(id)?).into_response())
}

async fn cancel(State(app): State<AppState>, Id(id): Id) -> Result<Response, ApiError> {
    Ok(axum::Json(app.node.cancel(id)?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveBody {
    position: usize,
}

async fn move_transfer(
    State(app): State<AppState>,
    Id(id): Id,
    Body(body): Body<MoveBody>,
) -> Result<Response, ApiError> {
    Ok(axum::Json(app.node.move_to(id, body.position)?).into_response())
}

#[derive(Serialize)]
struct Removed {
    removed: usize,
}

async fn remove_finished(State(app): State<AppState>) -> Result<Response, ApiError> {
    let removed = app.node.remove_finished()?;
    Ok(axum::Json(Removed { removed }).into_response())
}

async fn status(State(app): State<AppState>) -> Result<Response, ApiError> {
    Ok(axum::Json(app.node.status()?).into_response())
}

async fn shares(State(app): State<AppState>) -> Result<Response, ApiError> {
    Ok(axum::Json(app.node.share()).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchParams {
    q: String,
    offset: Option<u32>,
    limit: Option<u32>,
}

async fn search(
    State(app): State<AppState>,
    Params(p): Params<SearchParams>,
) -> Result<Response, ApiError> {
    let page = app
        .node
        .search(&p.q, p.offset.unwrap_or(0), p.limit.unwrap_or(50))
        .await?;
    Ok(axum::Json(page).into_response())
}

async fn get_settings(State(app): State<AppState>) -> Response {
    axum::Json(app.node.settings()).into_response()
}

async fn put_settings(
    State(app): State<AppState>,
    Body(patch): Body<SettingsPatch>,
) -> Result<Response, ApiError> {
    Ok(axum::Json(app.node.set_settings(patch)?).into_response())
}

async fn peers(State(app): State<AppState>) -> Result<Response, ApiError> {
    Ok(axum::Json(app.node.peers().await?).into_response())
}

#[derive(Serialize)]
struct Group {
    private: bool,
    members: Vec<crate::protocol::PeerRecord>,
}

async fn group(State(app): State<AppState>) -> Result<Response, ApiError> {
    let private = app.node.private();
    let members = match private {
        true => app.node.peers().await?,
        false => Vec::new(),
    };
    Ok(axum::Json(Group { private, members }).into_response())
}

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        super::OPENAPI,
    )
        .into_response()
}

/// Server-sent events: one `data:` JSON document per [`crate::node::NodeEvent`], its `type`
/// also as the event's name; `ready` first, once subscribed; `lagged` when this client fell behind and missed some (reload).
async fn events(State(app): State<AppState>) -> Response {
    let rx = app.node.subscribe();
    let stop = app.node.stop_token();
    let stream =
        futures_lite::stream::unfold((rx, stop, true), |(mut rx, stop, first)| async move {
            if first {
                // Subscribed: changes from now on reach this client.
                let ready = Event::default().event("ready").data("{\"type\":\"ready\"}");
                return Some((Ok::<_, Infallible>(ready), (rx, stop, false)));
            }
            let ev = tokio::select! {
                r = rx.recv() => r,
                () = stop.cancelled() => return None,
            };
            let event = match ev {
                Ok(e) => {
                    let json = serde_json::to_value(&e).unwrap_or_default();
                    let name = json
                        .get("type")
                        .and_then(|t| t.as_str())
                        .unwrap_or("event")
                        .to_string();
                    Event::default().event(name).data(json.to_string())
                }
                Err(broadcast::error::RecvError::Lagged(n)) => Event::default()
                    .event("lagged")
                    .data(format!("{{\"type\":\"lagged\",\"missed\":{n}}}")),
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            Some((Ok::<_, Infallible>(event), (rx, stop, false)))
        });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}
