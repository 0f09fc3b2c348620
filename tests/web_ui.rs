//! The web UI in a real browser: the real binary runs an index, a second node sharing files
//! (one named `<img src=x onerror=alert(1)>`) and the node under test; `tests/web/e2e.mjs`
//! (playwright-core driving Debian's chromium, headless) opens the UI with the token URL,
//! searches by keyboard, downloads a file and its folder, pauses and resumes a rate-limited
//! download, checks the HTML-like name shows as text, a phone-sized screen and the login
//! form. Then the downloaded files are checked here with b3sum. `tests/web/restart.mjs`: a
//! page open while its node is killed and started again.
//!
//! Needs `node`, `npm ci --prefix tests/web` and chromium (scripts/test installs them); without
//! them it says "SKIPPED web_ui: ..." and passes, unless `PEERSHARE_REQUIRE_ROOT_TESTS` is set
//! (not empty, not "0"): then it fails. The screenshot goes to `target/web-ui.png` (and
//! `target/web-ui-phone.png`); with `PEERSHARE_UPDATE_SCREENSHOT=1` to `docs/web-ui.png`.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_peershare");

/// The browser test must end within this long (it takes some 20 s).
const E2E_TIMEOUT: Duration = Duration::from_secs(180);

const XSS: &str = "<img src=x onerror=alert(1)>";

/// Another name that would be markup, breaking out of an attribute.
const XSS2: &str = "\"><svg onload=alert(2)>.txt";

fn required() -> bool {
    std::env::var("PEERSHARE_REQUIRE_ROOT_TESTS").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// What is missing to run the browser, if anything.
fn missing(web: &Path, chromium: &Path) -> Option<String> {
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !node.is_ok_and(|s| s.success()) {
        return Some("node is not installed (Debian package nodejs)".into());
    }
    if !web
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        return Some(format!(
            "playwright-core is not installed (npm ci --prefix {})",
            web.display()
        ));
    }
    if !chromium.exists() {
        return Some(format!(
            "{} is missing (Debian package chromium)",
            chromium.display()
        ));
    }
    None
}

/// `peershare ARGS` with `home` as its state directory, its output lines read.
fn spawn(args: &[&str], home: &Path) -> Running {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("PEERSHARE_HOME", home)
        .env_remove("PEERSHARE_INDEX")
        .env_remove("PEERSHARE_CONFIG")
        .env("RUST_LOG", "warn");
    Running::spawn_lines(cmd, None, Lines::Both)
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let p = e.expect("entry").path();
        match p.is_dir() {
            true => found.extend(files_under(&p)),
            false => found.push(p),
        }
    }
    found
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    std::fs::write(path, bytes).expect("write");
}

/// `tests/web` and the browser, or `None` (the test is skipped) when something is missing.
fn browser() -> Option<(PathBuf, PathBuf)> {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web");
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if let Some(why) = missing(&web, &chromium) {
        assert!(
            !required(),
            "web_ui: {why}, and PEERSHARE_REQUIRE_ROOT_TESTS is set"
        );
        eprintln!("SKIPPED web_ui: {why} (set PEERSHARE_REQUIRE_ROOT_TESTS=1 to fail instead)");
        return None;
    }
    Some((web, chromium))
}

#[test]
fn web_ui_in_a_browser() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let Some((web, chromium)) = browser() else {
        return;
    };

    let tmp = tempfile::tempdir().expect("tempdir");
    let t = tmp.path();
    // The second node's share: a file in a folder with another one, a larger file, and one
    // whose name is HTML.
    let (small, folder, big) = ("quarterly-report.pdf", "papers", "holiday-movie.mkv");
    let other = "notes.txt";
    let share2 = t.join("share2");
    write(&share2.join(folder).join(small), &data(300 * 1024, 1));
    write(&share2.join(folder).join(other), &data(40 * 1024, 2));
    write(&share2.join("video").join(big), &data(2 * 1024 * 1024, 3));
    write(&share2.join(XSS), &data(10 * 1024, 4));
    write(&share2.join("odd").join(XSS2), &data(1024, 5));
    let mine = t.join("mine");
    write(&mine.join("mine.txt"), b"the node's own file\n");
    let out = t.join("out");
    std::fs::create_dir_all(&out).expect("mkdir out");

    let mut index = spawn(
        &["index", "--listen", "127.0.0.1:0"],
        &t.join("index-state"),
    );
    let index_addr = index.listening();
    let mut second = spawn(
        &[
            "share",
            share2.to_str().expect("utf8"),
            "--index",
            &index_addr,
            "--listen",
            "127.0.0.1:0",
            "--no-wishes",
        ],
        &t.join("second-state"),
    );
    let registered = second.wait_line("registered with index");
    assert!(registered.contains("5 files"), "{registered}");
    let mut node = spawn(
        &[
            "node",
            mine.to_str().expect("utf8"),
            "-o",
            out.to_str().expect("utf8"),
            "--index",
            &index_addr,
            "--listen",
            "127.0.0.1:0",
        ],
        &t.join("node-state"),
    );
    let url = node.word("web UI at", "http://");

    let screenshot = match std::env::var("PEERSHARE_UPDATE_SCREENSHOT").is_ok_and(|v| v == "1") {
        true => root.join("docs/web-ui.png"),
        false => root.join("target/web-ui.png"),
    };
    let small_id = b3sum(&share2.join(folder).join(small));
    let mut e2e = Command::new("node")
        .arg(web.join("e2e.mjs"))
        .current_dir(&web)
        .env("PEERSHARE_UI_URL", &url)
        .env("PEERSHARE_SMALL", small)
        .env("PEERSHARE_SMALL_ID", &small_id)
        .env("PEERSHARE_FOLDER", folder)
        .env("PEERSHARE_BIG", big)
        .env("PEERSHARE_XSS", XSS)
        .env("PEERSHARE_XSS2", XSS2)
        .env("PEERSHARE_SCREENSHOT", &screenshot)
        .env(
            "PEERSHARE_SCREENSHOT_PHONE",
            root.join("target/web-ui-phone.png"),
        )
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node tests/web/e2e.mjs");
    // Its steps, read as they come (a full pipe would stop it) and printed through the test
    // harness: shown when the test fails.
    let readers: Vec<_> = [
        e2e.stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
        e2e.stderr
            .take()
            .map(|e| Box::new(e) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut r| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = r.read_to_string(&mut text);
            text
        })
    })
    .collect();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = e2e.try_wait().expect("wait for node") {
            break s;
        }
        if started.elapsed() > E2E_TIMEOUT {
            let _ = e2e.kill();
            let _ = e2e.wait();
            panic!("tests/web/e2e.mjs took more than {E2E_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    for r in readers {
        println!("{}", r.join().unwrap_or_default());
    }
    assert!(status.success(), "tests/web/e2e.mjs failed: {status}");
    eprintln!(
        "web UI: the browser test took {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // What the browser asked for is on disk, byte for byte.
    let found = |name: &str| -> PathBuf {
        let all = files_under(&out);
        all.iter()
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().contains(name))
            })
            .cloned()
            .unwrap_or_else(|| panic!("{name} not in {}: {all:?}", out.display()))
    };
    assert_eq!(b3sum(&found(small)), small_id);
    assert_eq!(
        b3sum(&found(other)),
        b3sum(&share2.join(folder).join(other)),
        "the folder's other file"
    );
    assert_eq!(
        b3sum(&found(big)),
        b3sum(&share2.join("video").join(big)),
        "the file paused and resumed"
    );
    // Saved under a name made safe for the file system (`<` and `>` dropped).
    assert_eq!(b3sum(&found("img src=x onerror")), b3sum(&share2.join(XSS)));
    drop((node, second, index));
}

/// One HTTP/1.1 request on a fresh connection; the status, the headers (lowercase names)
/// and the body.
fn http(addr: &str, request: &str) -> (u16, Vec<(String, String)>, String) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(request.as_bytes()).expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Without a browser: the page and its files as the server sends them (types, the CSP and
/// the other headers, caching, who may fetch what).
#[test]
fn ui_files_and_their_headers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = tmp.path();
    let (mine, out) = (t.join("mine"), t.join("out"));
    write(&mine.join("a.txt"), b"a\n");
    std::fs::create_dir_all(&out).expect("mkdir");
    let mut node = spawn(
        &[
            "node",
            mine.to_str().expect("utf8"),
            "-o",
            out.to_str().expect("utf8"),
            "--no-index",
            "--listen",
            "127.0.0.1:0",
        ],
        &t.join("state"),
    );
    let url = node.word("web UI at", "http://");
    let addr = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .expect("host:port")
        .to_string();
    let token = url.split("token=").nth(1).expect("a token").to_string();
    let get = |path: &str, extra: &str| {
        http(
            &addr,
            &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\r\n"),
        )
    };
    let strict = |h: &[(String, String)], what: &str| {
        let csp = header(h, "content-security-policy").unwrap_or("");
        for part in [
            "default-src 'self'",
            "script-src 'self'",
            "frame-ancestors 'none'",
            "require-trusted-types-for 'script'",
        ] {
            assert!(csp.contains(part), "{what}: {part} in {csp:?}");
        }
        assert!(!csp.contains("unsafe"), "{what}: {csp}");
        assert_eq!(
            header(h, "x-content-type-options"),
            Some("nosniff"),
            "{what}"
        );
    };

    // Without the cookie: the login form (never stored), and it loads its stylesheet.
    let (status, h, body) = get("/", "");
    assert_eq!(status, 200);
    assert!(body.contains("name=token"), "{body}");
    assert!(!body.contains("app.js"), "not the UI");
    assert_eq!(header(&h, "cache-control"), Some("no-store"));
    strict(&h, "the login form");

    // The files load without the token, with their types, revalidated by ETag.
    for (file, kind) in [
        ("/ui/app.js", "text/javascript"),
        ("/ui/transfers.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
        ("/ui/icon.svg", "image/svg+xml"),
    ] {
        let (status, h, body) = get(file, "");
        assert_eq!(status, 200, "{file}");
        assert!(
            header(&h, "content-type").is_some_and(|c| c.starts_with(kind)),
            "{file}: {h:?}"
        );
        assert!(!body.is_empty());
        assert_eq!(header(&h, "cache-control"), Some("no-cache"), "{file}");
        strict(&h, file);
        let etag = header(&h, "etag").expect("an ETag").to_string();
        let (status, _, body) = get(file, &format!("If-None-Match: {etag}\r\n"));
        assert_eq!((status, body.as_str()), (304, ""), "{file} unchanged");
        let (status, _, _) = get(file, "If-None-Match: \"other\"\r\n");
        assert_eq!(status, 200, "{file} with another ETag");
    }
    // Nothing else under /ui/ is open, and the API still needs the token.
    for path in [
        "/ui/nope.js",
        "/ui/../api/v1/status",
        "/ui/",
        "/api/v1/status",
    ] {
        let (status, _, _) = get(path, "");
        assert!(status == 401 || status == 404, "{path}: {status}");
    }
    // A rebinding name is refused for the files too.
    let (status, _, _) = http(
        &addr,
        "GET /ui/app.js HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 403);

    // With the token: the UI's page, which loads only its own files.
    let (status, h, _) = get(&format!("/?token={token}"), "");
    assert_eq!(status, 303);
    let cookie = header(&h, "set-cookie")
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_string();
    let (status, h, page) = get("/", &format!("Cookie: {cookie}\r\n"));
    assert_eq!(status, 200);
    assert!(page.contains("src=\"/ui/app.js\""), "{page}");
    assert_eq!(header(&h, "cache-control"), Some("no-store"));
    strict(&h, "the UI");
    drop(node);
}

/// A page open while its node is killed and started again: it says it is logged out (the
/// node's sessions are gone) rather than retrying for ever, and logging in again works.
#[test]
fn a_page_open_across_a_restart_logs_in_again() {
    use std::io::{BufRead, Write};
    let Some((web, chromium)) = browser() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = tmp.path();
    let (mine, out, state) = (t.join("mine"), t.join("out"), t.join("state"));
    write(&mine.join("a.txt"), b"a\n");
    std::fs::create_dir_all(&out).expect("mkdir");
    let start = |web_addr: &str| {
        spawn(
            &[
                "node",
                mine.to_str().expect("utf8"),
                "-o",
                out.to_str().expect("utf8"),
                "--no-index",
                "--listen",
                "127.0.0.1:0",
                "--web",
                web_addr,
            ],
            &state,
        )
    };
    let mut node = start("127.0.0.1:0");
    let url = node.word("web UI at", "http://");
    let web_addr = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .expect("host:port")
        .to_string();
    // Killed if the test fails before it ends (no browser left behind).
    struct Reaped(std::process::Child);
    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut page = Command::new("node")
        .arg(web.join("restart.mjs"))
        .current_dir(&web)
        .env("PEERSHARE_UI_URL", &url)
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map(Reaped)
        .expect("run node tests/web/restart.mjs");
    let mut stdin = page.0.stdin.take().expect("stdin");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = page.0.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut wait_for = |needle: &str| loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => {
                seen.push(l.clone());
                if l.contains(needle) || l.starts_with("FAILED") {
                    return l;
                }
            }
            Err(_) => panic!("no {needle:?} from restart.mjs: {seen:?}"),
        }
    };
    assert_eq!(wait_for("ready"), "ready");
    // kill -9 (dropping a Running kills it), and the same address again.
    drop(node);
    node = start(&web_addr);
    node.wait_line("web UI at");
    writeln!(stdin, "restarted").expect("tell restart.mjs");
    let last = wait_for("logging in again works");
    assert!(last.starts_with("ok:"), "{last}; {seen:?}");
    let status = page.0.wait().expect("wait for restart.mjs");
    assert!(status.success(), "restart.mjs: {status}; {seen:?}");
    drop(node);
}
