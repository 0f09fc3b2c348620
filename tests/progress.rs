//! The real binary: files already on disk are not downloaded again (`get`, `--look-in`, `--redownload`); progress of scans and multi-file gets when not on a terminal (and on one, through tmux); `share` logging its uploads.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_peershare");

/// A running binary whose stdout and stderr lines are collected in the background.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<(bool, String)>,
    out: Vec<String>,
    err: Vec<String>,
}

impl Proc {
    fn start(args: &[&str], home: &Path, env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("PEERSHARE_HOME", home)
            .env_remove("PEERSHARE_INDEX")
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn peershare");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        for (is_err, pipe) in [
            (false, Box::new(stdout) as Box<dyn std::io::Read + Send>),
            (true, Box::new(stderr)),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if tx.send((is_err, line)).is_err() {
                        break;
                    }
                }
            });
        }
        Proc {
            child,
            lines,
            out: Vec::new(),
            err: Vec::new(),
        }
    }

    /// A line (stdout or stderr) containing every one of `needles`: one seen already, else
    /// the next one (waiting at most 30 s).
    fn wait_line(&mut self, needles: &[&str]) -> String {
        if let Some(l) = self
            .out
            .iter()
            .chain(&self.err)
            .find(|l| needles.iter().all(|n| l.contains(n)))
        {
            return l.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok((is_err, l)) => {
                    if is_err {
                        self.err.push(l.clone());
                    } else {
                        self.out.push(l.clone());
                    }
                    if needles.iter().all(|n| l.contains(n)) {
                        return l;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "no line with {needles:?}; stdout {:?}, stderr {:?}",
            self.out, self.err
        );
    }

    /// Ends the process and collects the rest of its output.
    fn finish(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The readers end at end of file; bounded in time all the same.
        while let Ok((is_err, l)) = self.lines.recv_timeout(Duration::from_secs(10)) {
            if is_err {
                self.err.push(l);
            } else {
                self.out.push(l);
            }
        }
    }

    /// The `127.0.0.1:PORT` in the "listening on" line.
    fn listening(&mut self) -> String {
        let l = self.wait_line(&["listening on"]);
        l.split_whitespace()
            .find(|w| w.starts_with("127.0.0.1:"))
            .expect("address in line")
            .to_string()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// An index and a peer sharing `share` registered with it (logging at info); the index address.
fn index_and_peer(t: &Path, share: &Path) -> (Proc, Proc, String) {
    let mut index = Proc::start(
        &["index", "--listen", "127.0.0.1:0"],
        &t.join("ix-home"),
        &[],
    );
    let ix = index.listening();
    let mut peer = Proc::start(
        &["share", s(share), "--index", &ix, "--listen", "127.0.0.1:0"],
        &t.join("peer-home"),
        &[("RUST_LOG", "peershare=info")],
    );
    peer.wait_line(&["registered with index"]);
    (index, peer, ix)
}

fn get(args: &[&str], ix: &str, home: &Path, env: &[(&str, &str)]) -> std::process::Output {
    Command::new(BIN)
        .arg("get")
        .args(args)
        .args(["--index", ix])
        .env("PEERSHARE_HOME", home)
        .env_remove("PEERSHARE_INDEX")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run peershare get")
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).expect("canonical path")
}

#[test]
fn a_file_already_there_is_not_downloaded_again_and_the_output_says_where() {
    let t = tempfile::tempdir().unwrap();
    let share = t.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("stdio.h"), data(9_000, 1)).unwrap();
    std::fs::write(share.join("big.bin"), data(3 * 262_144 + 5, 2)).unwrap();
    std::fs::write(share.join("same.bin"), data(5_000, 3)).unwrap();
    let (stdio, big, same) = (
        b3sum(&share.join("stdio.h")),
        b3sum(&share.join("big.bin")),
        b3sum(&share.join("same.bin")),
    );
    let (_index, _peer, ix) = index_and_peer(t.path(), &share);
    let home = t.path().join("client");
    let dl = t.path().join("dl");

    // First time: downloaded.
    let out = get(&[&stdio, "-o", s(&dl)], &ix, &home, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(files_in(&dl), vec![dl.join("stdio.h")]);

    // Again: not downloaded; stdout has where it is, stderr says it was there already.
    let out = get(&[&stdio, "-o", s(&dl)], &ix, &home, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let at = canonical(&dl.join("stdio.h"));
    assert_eq!(text(&out.stdout).trim(), at.display().to_string());
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("already have {stdio} at {}", at.display())),
        "{err}"
    );
    assert_eq!(files_in(&dl), vec![dl.join("stdio.h")], "no copy written");

    // In JSON, with a file that is not there yet: one already there, one downloaded.
    let out = get(&[&stdio, &big, "-o", s(&dl), "--json"], &ix, &home, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let d = &doc["downloads"];
    assert_eq!(d[0]["status"], "already_have", "{doc:#}");
    assert_eq!(d[0]["already_at"], at.display().to_string());
    assert_eq!(d[0]["bytes_fetched"], 0);
    assert_eq!(d[1]["status"], "downloaded", "{doc:#}");
    assert!(d[1].get("already_at").is_none());
    assert_eq!(b3sum(&dl.join("big.bin")), big);

    // --look-in: found beneath another directory (recursively), nothing written to -o.
    let library = t.path().join("library");
    std::fs::create_dir_all(library.join("a/b")).unwrap();
    std::fs::rename(dl.join("big.bin"), library.join("a/b/kept.bin")).unwrap();
    let dl2 = t.path().join("dl2");
    let out = get(
        &[&big, "-o", s(&dl2), "--look-in", s(&library), "--json"],
        &ix,
        &home,
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        doc["downloads"][0]["already_at"],
        canonical(&library.join("a/b/kept.bin"))
            .display()
            .to_string()
    );
    assert!(!dl2.exists() || files_in(&dl2).is_empty(), "written to -o");
    // Without --look-in it is downloaded.
    let out = get(&[&big, "-o", s(&dl2)], &ix, &home, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(b3sum(&dl2.join("big.bin")), big);

    // A file of the same name and size but other bytes is no reason not to download.
    let dl3 = t.path().join("dl3");
    std::fs::create_dir_all(&dl3).unwrap();
    std::fs::write(dl3.join("same.bin"), data(5_000, 4)).unwrap();
    let out = get(&[&same, "-o", s(&dl3)], &ix, &home, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(b3sum(&dl3.join("same (1).bin")), same);
    assert!(!text(&out.stderr).contains("already have"));

    // --redownload fetches a copy anyway.
    let out = get(&[&stdio, "-o", s(&dl), "--redownload"], &ix, &home, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(b3sum(&dl.join("stdio (1).h")), stdio);

    // A --look-in that is not a directory is one clear line.
    let out = get(
        &[&stdio, "--look-in", s(&t.path().join("nope"))],
        &ix,
        &home,
        &[],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("is not a directory"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn a_scan_tells_files_and_bytes_hashed_in_lines_when_stderr_is_not_a_terminal() {
    let t = tempfile::tempdir().unwrap();
    let share = t.path().join("share");
    for d in 0..20 {
        let dir = share.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            std::fs::write(dir.join(format!("f{f}.txt")), data(2048, d * 100 + f)).unwrap();
        }
    }
    let mut peer = Proc::start(
        &["share", s(&share), "--no-index", "--listen", "127.0.0.1:0"],
        &t.path().join("home"),
        &[("PEERSHARE_PROGRESS_INTERVAL", "1ms")],
    );
    // Told while hashing, and once at the end (before the share starts listening).
    let line = peer.wait_line(&["peershare: hashing: ", " of 2000 files, "]);
    assert!(line.contains("/s, eta "), "{line}");
    assert!(line.contains(" of 3.9 MiB"), "{line}");
    peer.wait_line(&["peershare: hashed 2000 files (3.9 MiB) in "]);
    peer.listening();
    // The second run finds every id in the cache: nothing to hash, nothing told.
    drop(peer);
    let mut again = Proc::start(
        &["share", s(&share), "--no-index", "--listen", "127.0.0.1:0"],
        &t.path().join("home"),
        &[("PEERSHARE_PROGRESS_INTERVAL", "1ms")],
    );
    again.listening();
    again.finish();
    assert!(
        !again.err.iter().any(|l| l.contains("hashing")),
        "{:?}",
        again.err
    );
}

#[test]
fn a_multi_file_get_tells_overall_progress_and_share_logs_each_upload() {
    let t = tempfile::tempdir().unwrap();
    let share = t.path().join("share");
    std::fs::create_dir_all(share.join("sub")).unwrap();
    let names = ["one.txt", "two.txt", "sub/three.bin"];
    let sizes = [1_000usize, 2_000, 3 * 262_144 + 7];
    for (i, (n, len)) in names.iter().zip(sizes).enumerate() {
        std::fs::write(share.join(n), data(len, 10 + i as u64)).unwrap();
    }
    let ids: Vec<String> = names.iter().map(|n| b3sum(&share.join(n))).collect();
    let (_index, mut peer, ix) = index_and_peer(t.path(), &share);
    let dl = t.path().join("dl");
    let mut args: Vec<&str> = ids.iter().map(String::as_str).collect();
    args.extend(["-o", s(&dl)]);
    let out = get(
        &args,
        &ix,
        &t.path().join("client"),
        &[("PEERSHARE_PROGRESS_INTERVAL", "1ms")],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    let overall: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("peershare: ") && l.contains(" of 3 files, "))
        .collect();
    assert!(!overall.is_empty(), "no overall line: {err}");
    assert!(overall.iter().all(|l| l.contains("/s, eta ")), "{err}");
    // The peer logs each upload: to whom, which file, how many bytes.
    for ((n, len), _) in names.iter().zip(sizes).zip(&ids) {
        let name = n.rsplit('/').next().unwrap();
        let l = peer.wait_line(&[&format!("uploaded \"{name}\" to 127.0.0.1:")]);
        let pieces = len.div_ceil(262_144);
        assert!(
            l.contains(&format!(": {len} bytes, {pieces} of {pieces} pieces, in ")),
            "{l}"
        );
        assert!(l.contains("(key "), "{l}");
    }
}

/// The interactive display, in a terminal tmux provides: the overall bar above the per-file
/// bars of a multi-file get.
#[test]
fn a_multi_file_get_on_a_terminal_shows_an_overall_bar() {
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("skipped: tmux is not installed (apt-get install tmux)");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let share = t.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    for n in ["a.bin", "b.bin"] {
        std::fs::write(
            share.join(n),
            data(1536 * 1024, n.len() as u64 + n.as_bytes()[0] as u64),
        )
        .unwrap();
    }
    let ids = [b3sum(&share.join("a.bin")), b3sum(&share.join("b.bin"))];
    let (_index, _peer, ix) = index_and_peer(t.path(), &share);
    let dl = t.path().join("dl");
    let done = t.path().join("done");
    // Slowed down so that the display can be seen (about 3 s).
    let script = format!(
        "env -u PEERSHARE_INDEX PEERSHARE_HOME='{}' '{BIN}' get {} {} -o '{}' --index {ix} --max-download-rate 1MiB; echo $? > '{}'; sleep 30",
        s(&t.path().join("client")),
        ids[0],
        ids[1],
        s(&dl),
        s(&done),
    );
    let socket = format!("peershare-test-{}", std::process::id());
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .args(["-L", &socket])
            .args(args)
            .output()
            .expect("run tmux")
    };
    struct Server<'a>(&'a dyn Fn(&[&str]) -> std::process::Output);
    impl Drop for Server<'_> {
        fn drop(&mut self) {
            (self.0)(&["kill-server"]);
        }
    }
    let started = tmux(&[
        "new-session",
        "-d",
        "-s",
        "get",
        "-x",
        "160",
        "-y",
        "30",
        &script,
    ]);
    assert!(started.status.success(), "{}", text(&started.stderr));
    let _server = Server(&tmux);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut screens = Vec::new();
    let mut seen = None;
    // The overall bar, once bytes have come, and below it a file's own bar (each named by
    // its file).
    let shown = |pane: &str| {
        let lines: Vec<&str> = pane.lines().collect();
        let total = lines
            .iter()
            .position(|l| l.starts_with("total ") && !l.contains(" 0 B/"))?;
        lines[total + 1..]
            .iter()
            .any(|l| l.starts_with("a.bin ") || l.starts_with("b.bin "))
            .then(|| lines[total].to_string())
    };
    while Instant::now() < deadline && !done.exists() {
        let pane = text(&tmux(&["capture-pane", "-p", "-t", "get"]).stdout);
        if let Some(total) = shown(&pane) {
            seen = Some((pane, total));
            break;
        }
        screens.push(pane);
        std::thread::sleep(Duration::from_millis(50));
    }
    let (pane, total) =
        seen.unwrap_or_else(|| panic!("no overall bar above a file's; screens: {screens:?}"));
    eprintln!("the display:\n{pane}");
    assert!(total.contains(" of 2 files"), "{pane}");
    assert!(total.contains("MiB"), "{pane}");
    // And the get ends well.
    let ok = eventually_file(&done, Duration::from_secs(30));
    assert_eq!(ok.trim(), "0", "{pane}");
    assert_eq!(b3sum(&dl.join("a.bin")), ids[0]);
}

/// The contents of `path` once it exists and is not empty (waiting at most `limit`).
fn eventually_file(path: &Path, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(s) = std::fs::read_to_string(path)
            && !s.trim().is_empty()
        {
            return s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{} never written", path.display());
}

/// The library's pipeline, as a program built on it uses it: with `GetOptions::have_already`
/// a file already on disk is reported where it is, its source never asked (here it is gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_pipeline_reports_files_already_there_without_asking_a_source() {
    use peershare::index::IndexClient;
    use peershare::node::{GetEvent, GetOptions, HaveAlready, download_all, download_hit};
    use peershare::protocol::Limits;
    use std::sync::{Arc, Mutex};

    let t = tempfile::tempdir().unwrap();
    let share = t.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    let (big, small) = (data(300_000, 21), data(700, 22));
    std::fs::write(share.join("f.bin"), &big).unwrap();
    std::fs::write(share.join("s.txt"), &small).unwrap();
    let ix = start_index(&t.path().join("ix.sqlite"), Duration::from_secs(60)).await;
    let peer = start_peer(&share, Some(ix.addr()), &t.path().join("p")).await;
    let mut c = IndexClient::connect(&ix.addr(), None, None, Limits::default())
        .await
        .unwrap();
    let mut hits = Vec::new();
    for name in ["f.bin", "s.txt"] {
        hits.push(c.search(name, 10).await.unwrap().files.remove(0));
    }
    // The files are already here, under other names; their only source goes away.
    let out = t.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("mine.bin"), &big).unwrap();
    std::fs::write(out.join("mine.txt"), &small).unwrap();
    peer.shutdown().await;

    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let opts = GetOptions {
        have_already: Some(Arc::new(HaveAlready::new(Vec::new(), None))),
        events: Some(Arc::new(move |e: GetEvent<'_>| match e {
            GetEvent::Found { n, .. } => sink.lock().unwrap().push(format!("found {n}")),
            GetEvent::Done { n, result } => sink
                .lock()
                .unwrap()
                .push(format!("done {n} {}", result.is_ok())),
            _ => {}
        })),
        ..GetOptions::default()
    };
    let results = download_all(&hits, &out, &opts, 2).await;
    let canonical_out = canonical(&out);
    for (r, want) in results.iter().zip(["mine.bin", "mine.txt"]) {
        let r = r.as_ref().expect("found on disk");
        assert!(r.already_had);
        assert_eq!(r.path, canonical_out.join(want));
        assert_eq!(r.bytes_fetched, 0);
        assert!(r.sources.is_empty());
    }
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen, ["done 0 true", "done 1 true", "found 0", "found 1"]);
    // One file, the same way.
    let r = download_hit(&hits[0], 0, &out, &opts).await.unwrap();
    assert!(r.already_had);
    // Without it: downloaded, that is here failed, the source being gone.
    let r = download_hit(&hits[0], 0, &out, &GetOptions::default()).await;
    assert!(r.is_err(), "{r:?}");
    assert_eq!(files_in(&out).len(), 2);
}
