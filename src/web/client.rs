//! A client of a running node's API, found through its state directory ([`super::NODE_FILE`]
//! and [`super::auth::TOKEN_FILE`]): what `peershare get` and `peershare status` use.

use std::path::Path;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use super::NodeFile;

/// How long connecting to the node may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest answer read.
pub const MAX_ANSWER: usize = 64 * 1024 * 1024;

/// Why a request to the node failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens where the node file says (the node stopped, or was killed).
    #[error("no node listening at {0}")]
    NotRunning(String),
    /// The connection or the exchange failed.
    #[error("talking to the node at {addr}: {why}")]
    Http {
        /// Where.
        addr: String,
        /// Why.
        why: String,
    },
    /// The node answered with an error.
    #[error("the node refused: {message} (HTTP {status})")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// Its one-line error.
        message: String,
    },
}

/// A running node's API.
#[derive(Debug, Clone)]
pub struct NodeClient {
    /// `HOST:PORT`.
    pub addr: String,
    token: String,
}

impl NodeClient {
    /// The node whose state directory is `state_dir`, if its files are there (it may still
    /// have stopped: a request then fails with [`ClientError::NotRunning`]).
    pub fn find(state_dir: &Path) -> Option<NodeClient> {
        let file: NodeFile =
            serde_json::from_slice(&std::fs::read(state_dir.join(super::NODE_FILE)).ok()?).ok()?;
        let token = std::fs::read_to_string(state_dir.join(super::auth::TOKEN_FILE)).ok()?;
        let addr = file
            .url
            .strip_prefix("http://")?
            .trim_end_matches('/')
            .to_string();
        Some(NodeClient {
            addr,
            token: token.trim().to_string(),
        })
    }

    /// A client of the node at `addr` (`HOST:PORT`) with `token`.
    pub fn new(addr: String, token: String) -> NodeClient {
        NodeClient { addr, token }
    }

    /// `method path` with a JSON body (or none); the JSON answer of a 2xx (null when empty).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, ClientError> {
        let http = |why: String| ClientError::Http {
            addr: self.addr.clone(),
            why,
        };
        let stream =
            match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&self.addr))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return Err(ClientError::NotRunning(self.addr.clone()));
                }
                Ok(Err(e)) => return Err(http(e.to_string())),
                Err(_) => return Err(http("connection timed out".into())),
            };
        let exchange = async {
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| http(e.to_string()))?;
            tokio::spawn(conn);
            let data = match body {
                Some(b) => Bytes::from(serde_json::to_vec(b).map_err(|e| http(e.to_string()))?),
                None => Bytes::new(),
            };
            let mut req = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header(hyper::header::HOST, &self.addr)
                .header(
                    hyper::header::AUTHORIZATION,
                    format!("Bearer {}", self.token),
                );
            if body.is_some() {
                req = req.header(hyper::header::CONTENT_TYPE, "application/json");
            }
            let req = req.body(Full::new(data)).map_err(|e| http(e.to_string()))?;
            let res = send
                .send_request(req)
                .await
                .map_err(|e| http(e.to_string()))?;
            let status = res.status().as_u16();
            let bytes = Limited::new(res.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| http(e.to_string()))?
                .to_bytes();
            Ok::<_, ClientError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| http("no answer in time".into()))??;
        let value: serde_json::Value = match bytes.is_empty() {
            true => serde_json::Value::Null,
            false => serde_json::from_slice(&bytes)
                .map_err(|e| http(format!("an answer that is not JSON: {e}")))?,
        };
        if !(200..300).contains(&status) {
            let message = value
                .get("error")
                .and_then(|m| m.as_str())
                .unwrap_or("no reason given")
                .to_string();
            return Err(ClientError::Refused { status, message });
        }
        Ok(value)
    }
}
