//! Who may use the node's HTTP server, and from where: the token (a Bearer header, or a
//! session cookie it was exchanged for), the Host and Origin checks against DNS rebinding and
//! cross-site requests, and the rate limit on failed logins.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::api::ApiError;

/// The token file in the state directory (mode 0600).
pub const TOKEN_FILE: &str = "web-token";

/// The session cookie's name.
pub const COOKIE: &str = "peershare_session";

/// Failed logins (wrong tokens) from one address within [`FAILED_WINDOW`] before its further
/// attempts are refused until the window ends.
pub const MAX_FAILED_LOGINS: u32 = 5;

/// The window [`MAX_FAILED_LOGINS`] counts in.
pub const FAILED_WINDOW: Duration = Duration::from_secs(60);

/// Sessions kept at once; a new one past this ends the oldest.
pub const MAX_SESSIONS: usize = 64;

/// Addresses whose failed logins are remembered at once (the oldest entries go first).
const MAX_TRACKED: usize = 4096;

/// The node's token: read from `state_dir`, or made (32 random bytes, hex) and written there
/// readable by its owner only. Also whether it was made now.
pub fn load_or_create_token(state_dir: &Path) -> std::io::Result<(String, bool)> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = state_dir.join(TOKEN_FILE);
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim().to_string();
        if t.len() >= 32 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok((t, false));
        }
    }
    let token = random_hex()?;
    let tmp = state_dir.join(format!("{TOKEN_FILE}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(token.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok((token, true))
}

fn random_hex() -> std::io::Result<String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Equal, in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// What a request proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// Neither a token nor a session cookie.
    None,
    /// The token, or a live session.
    Valid,
    /// A token that is not the node's: counts as a failed login.
    Wrong,
    /// A session cookie that is no (longer a) session, e.g. from before the node restarted:
    /// refused but not counted as a failed login (sessions are 128-bit random, nothing to
    /// guess; counting them would lock out a browser left open across a restart).
    Stale,
}

/// Sessions and failed logins.
pub struct Guard {
    token: String,
    /// Host names (lowercase, without the port) accepted besides IP addresses and `localhost`.
    names: Vec<String>,
    /// The port the server listens on: a Host or Origin must name it.
    port: u16,
    sessions: Mutex<Vec<String>>,
    failed: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Guard {
    /// A guard for a server on `port` with this token; `names` are extra host names allowed.
    pub fn new(token: String, port: u16, names: Vec<String>) -> Guard {
        Guard {
            token,
            names: names.into_iter().map(|n| n.to_ascii_lowercase()).collect(),
            port,
            sessions: Mutex::default(),
            failed: Mutex::default(),
        }
    }

    /// Whether `host` (a Host header, or an origin's authority) is this server: an IP address
    /// or `localhost` or an allowed name, with the server's port. A DNS name an attacker
    /// controls (rebinding) is none of these.
    pub fn own_host(&self, host: &str) -> bool {
        let Some((name, port)) = host.rsplit_once(':') else {
            return false;
        };
        if port.parse::<u16>().ok() != Some(self.port) {
            return false;
        }
        let name = name.to_ascii_lowercase();
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        bare.parse::<IpAddr>().is_ok() || name == "localhost" || self.names.contains(&name)
    }

    /// Whether `origin` is this server's own (`http://` + the Host the request came with).
    fn own_origin(&self, origin: &str, host: &str) -> bool {
        origin
            .strip_prefix("http://")
            .is_some_and(|o| o.eq_ignore_ascii_case(host) && self.own_host(o))
    }

    /// Whether `ip` is refused for now after too many failed logins.
    pub fn locked_out(&self, ip: IpAddr) -> bool {
        let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        failed
            .get(&ip)
            .is_some_and(|(n, since)| *n >= MAX_FAILED_LOGINS && since.elapsed() < FAILED_WINDOW)
    }

    /// Counts a failed login from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        if failed.len() >= MAX_TRACKED {
            failed.retain(|_, (_, since)| since.elapsed() < FAILED_WINDOW);
            if failed.len() >= MAX_TRACKED {
                // Still full (a flood from many addresses): forget the oldest.
                if let Some(oldest) = failed.iter().min_by_key(|(_, (_, s))| *s).map(|(k, _)| *k) {
                    failed.remove(&oldest);
                }
            }
        }
        let e = failed.entry(ip).or_insert((0, Instant::now()));
        if e.1.elapsed() >= FAILED_WINDOW {
            *e = (0, Instant::now());
        }
        e.0 += 1;
    }

    /// Whether `token` is the node's token.
    pub fn token_ok(&self, token: &str) -> bool {
        same(token, &self.token)
    }

    /// A new session (the token was shown); its cookie value.
    pub fn new_session(&self) -> std::io::Result<String> {
        let s = random_hex()?;
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if sessions.len() >= MAX_SESSIONS {
            sessions.remove(0);
        }
        sessions.push(s.clone());
        Ok(s)
    }

    fn session_ok(&self, cookie: &str) -> bool {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.iter().any(|s| same(s, cookie))
    }

    /// Whether the request carries the token or a session, none, or a wrong one.
    pub fn authorized(&self, headers: &HeaderMap) -> Credential {
        if let Some(auth) = headers.get(header::AUTHORIZATION) {
            let token = auth.to_str().ok().and_then(|a| {
                a.strip_prefix("Bearer ")
                    .or_else(|| a.strip_prefix("bearer "))
            });
            return match token.is_some_and(|t| self.token_ok(t.trim())) {
                true => Credential::Valid,
                false => Credential::Wrong,
            };
        }
        for cookies in headers.get_all(header::COOKIE) {
            let Ok(cookies) = cookies.to_str() else {
                continue;
            };
            for c in cookies.split(';') {
                if let Some((name, value)) = c.trim().split_once('=')
                    && name == COOKIE
                {
                    return match self.session_ok(value) {
                        true => Credential::Valid,
                        false => Credential::Stale,
                    };
                }
            }
        }
        Credential::None
    }

    /// The `Set-Cookie` value for a session: HttpOnly, SameSite=Strict, for the whole site.
    pub fn cookie(session: &str) -> String {
        format!("{COOKIE}={session}; HttpOnly; SameSite=Strict; Path=/")
    }
}

/// The client's address (set by the server for each connection).
pub fn client_ip(req: &Request) -> IpAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

/// Every request: the Host must be the node's own, an Origin (if any) too; then the API and
/// the pages other than the login ones need the token or a session.
pub async fn check(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let guard = &app.guard;
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !guard.own_host(host) {
        return ApiError::new(StatusCode::FORBIDDEN, "the Host header is not this node's")
            .into_response();
    }
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let ok = origin.to_str().is_ok_and(|o| guard.own_origin(o, host));
        if !ok {
            return ApiError::new(StatusCode::FORBIDDEN, "the Origin is not this node's")
                .into_response();
        }
    } else if req.method() != Method::GET
        && req.method() != Method::HEAD
        && req
            .headers()
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v != "same-origin" && v != "none")
    {
        // A browser telling the request comes from another site, without an Origin.
        return ApiError::new(StatusCode::FORBIDDEN, "cross-site request").into_response();
    }
    let path = req.uri().path();
    // The login pages, and the UI's files (no data in them; the login form uses the
    // stylesheet).
    let open = matches!(path, "/" | "/login") || super::ui::is_public(path);
    if open {
        return next.run(req).await;
    }
    let ip = client_ip(&req);
    if guard.locked_out(ip) {
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed logins; try again in a minute",
        )
        .into_response();
    }
    match guard.authorized(req.headers()) {
        Credential::Valid => next.run(req).await,
        Credential::None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "a token is needed: Authorization: Bearer TOKEN (the token is in the node's state directory)",
        )
        .into_response(),
        Credential::Wrong => {
            guard.failed(ip);
            ApiError::new(StatusCode::UNAUTHORIZED, "wrong token").into_response()
        }
        Credential::Stale => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "this session has ended (the node restarted?): log in again",
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_origins() {
        let g = Guard::new("ab".repeat(32), 8080, vec!["nas.lan".into()]);
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST:8080",
            "[::1]:8080",
            "192.168.1.5:8080",
            "nas.lan:8080",
        ] {
            assert!(g.own_host(ok), "{ok}");
        }
        for bad in [
            "127.0.0.1",
            "127.0.0.1:8081",
            "evil.example:8080",
            "localhost.evil.example:8080",
            "",
            ":8080",
            "127.0.0.1:8080:8080",
        ] {
            assert!(!g.own_host(bad), "{bad}");
        }
        assert!(g.own_origin("http://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(!g.own_origin("http://localhost:8080", "127.0.0.1:8080"));
        assert!(!g.own_origin("https://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(!g.own_origin("null", "127.0.0.1:8080"));
    }

    #[test]
    fn failed_logins_lock_an_address_out() {
        let g = Guard::new("ab".repeat(32), 1, vec![]);
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        for _ in 0..MAX_FAILED_LOGINS {
            assert!(!g.locked_out(a));
            g.failed(a);
        }
        assert!(g.locked_out(a));
        assert!(!g.locked_out(b), "only the address that failed");
    }

    #[test]
    fn tokens_and_sessions() {
        let g = Guard::new("ab".repeat(32), 1, vec![]);
        let mut h = HeaderMap::new();
        assert_eq!(g.authorized(&h), Credential::None);
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {}", "ab".repeat(32)).parse().unwrap(),
        );
        assert_eq!(g.authorized(&h), Credential::Valid);
        h.insert(header::AUTHORIZATION, "Bearer abab".parse().unwrap());
        assert_eq!(g.authorized(&h), Credential::Wrong);
        let mut h = HeaderMap::new();
        let s = g.new_session().unwrap();
        h.insert(
            header::COOKIE,
            format!("x=1; {COOKIE}={s}").parse().unwrap(),
        );
        assert_eq!(g.authorized(&h), Credential::Valid);
        h.insert(header::COOKIE, format!("{COOKIE}=00{s}").parse().unwrap());
        assert_eq!(g.authorized(&h), Credential::Stale);
        // Old sessions end when too many are made.
        for _ in 0..MAX_SESSIONS {
            g.new_session().unwrap();
        }
        h.insert(header::COOKIE, format!("{COOKIE}={s}").parse().unwrap());
        assert_eq!(g.authorized(&h), Credential::Stale);
    }
}
