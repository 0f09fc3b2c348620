//! The web UI: its files (plain HTML, CSS and JavaScript modules in `src/web/ui/`, embedded in
//! the binary) and how they are served: the right `Content-Type`, a strict
//! Content-Security-Policy on every answer (no inline script, nothing from elsewhere, no
//! framing), `nosniff`, and caching that never shows a stale UI after an upgrade (every asset
//! is revalidated against its BLAKE3 ETag; pages are never stored).
//!
//! The assets hold no data and are the same in every copy of the binary, so they load
//! without the token (the login form uses the stylesheet too); everything the UI shows comes
//! from `/api/v1`, which needs it.

use std::sync::OnceLock;

use axum::Router;
use axum::extract::{Path, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use super::api::ApiError;

/// Where the assets are served (`/ui/NAME`).
pub const PREFIX: &str = "/ui/";

/// The Content-Security-Policy of every answer: scripts, styles, images and connections from
/// the node only (no inline script or style, no `eval`), no plugins, no `<base>`, forms post
/// to the node only, no page may frame the UI (clickjacking), and (Trusted Types, in Chromium)
/// no string is ever parsed as HTML by a script: the UI builds its DOM from text nodes only.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; \
require-trusted-types-for 'script'; trusted-types 'none'";

/// The UI's page, served at `/` to a logged-in browser.
pub const INDEX_HTML: &str = include_str!("ui/index.html");

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

/// The files under [`PREFIX`].
const ASSETS: &[Asset] = &[
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("ui/style.css"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("ui/app.js"),
    },
    Asset {
        name: "api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("ui/api.js"),
    },
    Asset {
        name: "dom.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("ui/dom.js"),
    },
    Asset {
        name: "transfers.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("ui/transfers.js"),
    },
    Asset {
        name: "search.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("ui/search.js"),
    },
    Asset {
        name: "node.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("ui/node.js"),
    },
    Asset {
        name: "icon.svg",
        content_type: "image/svg+xml",
        body: include_str!("ui/icon.svg"),
    },
];

/// Each asset's ETag (a quoted BLAKE3 prefix of its bytes), by its position in [`ASSETS`].
fn etags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| format!("\"{}\"", &blake3::hash(a.body.as_bytes()).to_hex()[..32]))
            .collect()
    })
}

/// Whether `path` is one anyone may fetch (an asset), without the token.
pub fn is_public(path: &str) -> bool {
    path.strip_prefix(PREFIX)
        .is_some_and(|name| ASSETS.iter().any(|a| a.name == name))
}

/// The asset routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/ui/{name}", get(asset))
}

/// The UI's page (for a logged-in browser; `/` shows the login form otherwise).
pub fn page() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        INDEX_HTML,
    )
        .into_response()
}

async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.name == name) else {
        return ApiError::new(StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let (a, tag) = (&ASSETS[i], &etags()[i]);
    // `no-cache`: kept, but asked again each time (a 304 when unchanged), so an upgraded
    // node never runs with old scripts.
    let common = [
        (header::ETAG, tag.as_str()),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    let matches = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == tag
        });
    if matches {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (common, [(header::CONTENT_TYPE, a.content_type)], a.body).into_response()
}

/// Every answer: the [`CSP`], `nosniff`, no referrer to other sites (a URL may hold the
/// token; `same-origin`, not `no-referrer`, which would make the browser send the login
/// form with `Origin: null`, refused as cross-site), no framing,
/// and pages (HTML: the UI or the login form, which differ by cookie at one URL) never
/// stored.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    let html = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    if html {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file in `src/web/ui/` is served, and the page loads only what is served, from
    /// the node, with no inline script or style (the CSP would block them).
    #[test]
    fn assets_are_complete_and_the_page_needs_nothing_inline() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/web/ui");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "index.html")
            .collect();
        let mut served: Vec<String> = ASSETS.iter().map(|a| a.name.to_string()).collect();
        on_disk.sort();
        served.sort();
        assert_eq!(on_disk, served);
        for a in ASSETS {
            assert!(is_public(&format!("/ui/{}", a.name)));
        }
        assert!(!is_public("/ui/"));
        assert!(!is_public("/ui/../api/v1/status"));
        assert!(!is_public("/api/v1/status"));
        let page = INDEX_HTML.to_ascii_lowercase();
        assert!(!page.contains("<style"), "no inline style element");
        assert!(!page.contains(" style="), "no style attribute");
        for (i, _) in page.match_indices(" on") {
            let rest = &page[i + 3..];
            let word: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect();
            assert!(
                !rest[word.len()..].starts_with('='),
                "no inline event handler: on{word}="
            );
        }
        for script in page.split("<script").skip(1) {
            let tag = &script[..script.find('>').unwrap()];
            assert!(tag.contains("src=\"/ui/"), "scripts come from /ui/: {tag}");
            assert!(tag.contains("type=\"module\""), "{tag}");
        }
        // Nothing parses strings as HTML or code (file names come from the network).
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            for bad in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
                "createContextualFragment",
            ] {
                assert!(!a.body.contains(bad), "{}: {bad}", a.name);
            }
        }
        // Every module a module imports is served.
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            for line in a.body.lines().filter(|l| l.starts_with("import ")) {
                let from = line.rsplit_once("from '").map(|(_, f)| f).unwrap();
                let name = from.trim_end_matches("';").trim_start_matches("./");
                assert!(
                    ASSETS.iter().any(|x| x.name == name),
                    "{}: imports {name}",
                    a.name
                );
            }
        }
    }

    #[test]
    fn etags_differ_by_content() {
        let tags = etags();
        assert_eq!(tags.len(), ASSETS.len());
        for (i, t) in tags.iter().enumerate() {
            assert!(t.starts_with('"') && t.ends_with('"') && t.len() == 34);
            assert!(!tags[i + 1..].contains(t));
        }
    }
}
