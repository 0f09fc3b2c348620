//! Wishlists with the real binary: `wish add/list/remove/run`, and a running `share` that
//! repeats the wishes on its own; every match fetched once, filters and exclusions honoured,
//! deleted files not fetched again, broken lists and unreachable indexes said clearly.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

/// The source peer's tree: what `changelog -old --ext gz` must fetch, and what it must not.
fn tree(root: &Path) {
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("doc/python3/changelog.gz", b"python3 changes".to_vec()),
        ("doc/bash/changelog.gz", b"bash changes".to_vec()),
        // More than a piece: the full downloader.
        ("doc/big/changelog.gz", data(600_000, 3)),
        // Excluded by -old, by the extension, by the words.
        ("doc/bash/old/changelog.gz", b"old bash changes".to_vec()),
        ("doc/zsh/changelog.txt", b"zsh changes".to_vec()),
        ("other/readme.gz", b"a readme".to_vec()),
    ];
    for (path, bytes) in files {
        write(&root.join(path), &bytes);
    }
}

fn write(p: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, bytes).expect("write");
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failed(out: &std::process::Output) -> String {
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What `b3sum` prints for each published file directly in `dir` (none if it does not exist):
/// hidden files (downloads in progress) are left out, as are files gone while it looks (a
/// running share may be publishing one).
fn sums(dir: &Path) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeSet::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter_map(|p| {
            let out = Command::new("b3sum")
                .arg("--no-names")
                .arg(&p)
                .output()
                .expect("b3sum must be installed (Debian package b3sum)");
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        })
        .collect()
}

fn sums_of(root: &Path, paths: &[&str]) -> BTreeSet<String> {
    paths.iter().map(|p| b3sum(&root.join(p))).collect()
}

fn list_json(home: &Path) -> serde_json::Value {
    serde_json::from_str(&ok(&run_peershare(&["wish", "list", "--json"], home))).expect("json")
}

/// Waits until the peer's index entry holds `files` files.
async fn registered(peer: &mut peershare::node::ShareHandle, files: u64) {
    peer.wait_for(Duration::from_secs(20), |s| {
        s.in_sync && s.files_registered == Some(files)
    })
    .await
    .expect("the new catalog registered");
}

#[tokio::test(flavor = "multi_thread")]
async fn wish_run_fetches_every_match_once_and_never_again() {
    let t = tempfile::tempdir().unwrap();
    let share = t.path().join("share");
    tree(&share);
    let index = start_index(&t.path().join("ix.sqlite"), Duration::from_secs(60)).await;
    let ix = index.addr();
    let mut peer = start_peer(&share, Some(ix.clone()), &t.path().join("peer")).await;
    let home = t.path().join("client");
    let dl = t.path().join("dl");
    let want = [
        "doc/python3/changelog.gz",
        "doc/bash/changelog.gz",
        "doc/big/changelog.gz",
    ];

    let (h, d, i, s) = (home.clone(), dl.clone(), ix.clone(), share.clone());
    tokio::task::spawn_blocking(move || {
        let (home, dl, ix, share) = (h, d, i, s);
        // Typed as it reads: -old is an exclusion, not a flag.
        let said = ok(&run_peershare(
            &[
                "wish",
                "add",
                "changelog",
                "-old",
                "--ext",
                "gz",
                "-o",
                dl.to_str().unwrap(),
            ],
            &home,
        ));
        assert!(
            said.starts_with("wish 1: changelog -old (ext gz) into "),
            "{said}"
        );
        let doc = list_json(&home);
        let w = &doc["wishes"][0];
        assert_eq!(w["id"], 1);
        assert_eq!(w["query"], "changelog -old");
        assert_eq!(w["filters"]["exts"], serde_json::json!(["gz"]));
        assert_eq!(w["dir"], dl.to_str().unwrap());
        assert_eq!(w["fetched"], 0);
        assert!(w["last_run"].is_null());
        assert!(!dl.exists(), "nothing is fetched before a round");
        // A second wish matching one of the same files into the same directory.
        ok(&run_peershare(
            &["wish", "add", "python3", "-o", dl.to_str().unwrap()],
            &home,
        ));

        // The first run fetches every match, verified, and nothing else.
        let out = ok(&run_peershare(&["wish", "run", "--index", &ix], &home));
        assert!(
            out.contains("wish 1 \"changelog -old\": 3 new of 3 matching"),
            "{out}"
        );
        assert!(
            out.contains("wish 2 \"python3\": 0 new of 1 matching"),
            "{out}"
        );
        assert_eq!(sums(&dl), sums_of(&share, &want));
        assert_eq!(files_in(&dl).len(), 3, "python3's changelog is there once");
        assert_eq!(
            out.lines()
                .filter(|l| l.starts_with(dl.to_str().unwrap()))
                .count(),
            3,
            "{out}"
        );
        let doc = list_json(&home);
        assert_eq!(doc["wishes"][0]["fetched"], 3);
        assert_eq!(doc["wishes"][0]["last_outcome"], "3 new files");
        assert_eq!(doc["wishes"][1]["fetched"], 1);
        ok(&run_peershare(&["wish", "remove", "2"], &home));

        // The second finds nothing new.
        let out = ok(&run_peershare(&["wish", "run", "--index", &ix], &home));
        assert!(out.contains("0 new of 3 matching"), "{out}");
        assert_eq!(files_in(&dl).len(), 3);

        // A file deleted after it was fetched is not fetched again.
        std::fs::remove_file(
            files_in(&dl)
                .iter()
                .find(|p| b3sum(p) == b3sum(&share.join(want[1])))
                .expect("bash's"),
        )
        .unwrap();
        let out = ok(&run_peershare(&["wish", "run", "--index", &ix], &home));
        assert!(out.contains("0 new of 3 matching"), "{out}");
        assert_eq!(files_in(&dl).len(), 2);
    })
    .await
    .unwrap();

    // A file shared later is fetched by the next run, alone; one that does not match is not.
    write(&share.join("doc/perl/changelog.gz"), b"perl changes");
    write(
        &share.join("doc/perl/old/changelog.gz"),
        b"old perl changes",
    );
    registered(&mut peer, 8).await;
    let (h, d) = (home.clone(), dl.clone());
    tokio::task::spawn_blocking(move || {
        let (home, dl) = (h, d);
        let out = ok(&run_peershare(&["wish", "run", "--index", &ix], &home));
        assert!(out.contains("1 new of 4 matching"), "{out}");
        let mut expect = sums_of(
            &share,
            &["doc/python3/changelog.gz", "doc/big/changelog.gz"],
        );
        expect.insert(b3sum(&share.join("doc/perl/changelog.gz")));
        assert_eq!(sums(&dl), expect);
        assert_eq!(list_json(&home)["wishes"][0]["fetched"], 4);

        // Removed: the files stay, the wish goes, a run has nothing to do.
        let out = ok(&run_peershare(&["wish", "remove", "1"], &home));
        assert!(out.contains("removed wish 1"), "{out}");
        assert_eq!(list_json(&home)["wishes"], serde_json::json!([]));
        let err = failed(&run_peershare(&["wish", "remove", "1"], &home));
        assert!(err.contains("no wish 1"), "{err}");
        let out = ok(&run_peershare(&["wish", "run", "--index", &ix], &home));
        assert!(out.contains("no wishes"), "{out}");
        assert_eq!(files_in(&dl).len(), 3);
        // Numbers are not reused.
        let out = ok(&run_peershare(&["wish", "add", "perl"], &home));
        assert!(out.starts_with("wish 3: perl into "), "{out}");
    })
    .await
    .unwrap();
    peer.shutdown().await;
    index.stop().await;
}

/// A `peershare share` process; its output (stdout and stderr) collected as it runs; killed
/// when dropped.
struct Running {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Running {
    fn start(args: &[&str], home: &Path) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_peershare"))
            .args(args)
            .env("PEERSHARE_HOME", home)
            .env_remove("PEERSHARE_INDEX")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn peershare");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipes: [Box<dyn std::io::Read + Send>; 2] = [
            Box::new(child.stdout.take().expect("stdout")),
            Box::new(child.stderr.take().expect("stderr")),
        ];
        for pipe in pipes {
            let log = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        Running { child, stderr }
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn appears(timeout: Duration, f: impl Fn() -> bool) -> bool {
    eventually(timeout, || {
        let r = f();
        async move { r.then_some(()) }
    })
    .await
    .is_some()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_share_fetches_new_matches_on_its_own() {
    let t = tempfile::tempdir().unwrap();
    let share = t.path().join("share");
    tree(&share);
    let index = start_index(&t.path().join("ix.sqlite"), Duration::from_secs(60)).await;
    let ix = index.addr();
    let mut peer = start_peer(&share, Some(ix.clone()), &t.path().join("peer")).await;
    let home = t.path().join("client");
    let dl = t.path().join("dl");
    // The client shares a matching file of its own: it is no source, and not fetched.
    let mine = t.path().join("mine");
    write(&mine.join("mine/changelog.gz"), b"my own changes");
    let out = run_peershare(
        &[
            "wish",
            "add",
            "changelog",
            "-old",
            "--ext",
            "gz",
            "-o",
            dl.to_str().unwrap(),
        ],
        &home,
    );
    ok(&out);
    let mut running = Running::start(
        &[
            "share",
            mine.to_str().unwrap(),
            "--index",
            &ix,
            "--listen",
            "127.0.0.1:0",
            "--wish-interval",
            "1s",
        ],
        &home,
    );
    let want = [
        "doc/python3/changelog.gz",
        "doc/bash/changelog.gz",
        "doc/big/changelog.gz",
    ];
    let expect = sums_of(&share, &want);
    assert!(
        appears(Duration::from_secs(20), || sums(&dl) == expect).await,
        "the first round fetched the matches: {:?}\n{}",
        sums(&dl),
        running.log()
    );
    // A file shared later, with no other command.
    write(&share.join("doc/perl/changelog.gz"), b"perl changes");
    write(
        &share.join("doc/perl/changelog.txt"),
        b"perl changes, not gz",
    );
    registered(&mut peer, 8).await;
    let perl = b3sum(&share.join("doc/perl/changelog.gz"));
    assert!(
        appears(Duration::from_secs(20), || sums(&dl).contains(&perl)).await,
        "the new file fetched\n{}",
        running.log()
    );
    // A wish added while the share runs counts from its next round.
    let readme = t.path().join("readme");
    ok(&run_peershare(
        &["wish", "add", "readme", "-o", readme.to_str().unwrap()],
        &home,
    ));
    let want_readme = b3sum(&share.join("other/readme.gz"));
    assert!(
        appears(Duration::from_secs(20), || sums(&readme)
            .contains(&want_readme))
        .await,
        "the added wish ran\n{}",
        running.log()
    );
    // A few more rounds: nothing else arrives (the own file, the .txt, the old one).
    let rounds = |log: &str| log.matches("wish 1 ").count();
    let before = list_json(&home)["wishes"][0]["last_run"].clone();
    assert!(
        appears(Duration::from_secs(10), || {
            list_json(&home)["wishes"][0]["last_run"] != before
        })
        .await
    );
    let mut expect = expect;
    expect.insert(perl);
    assert_eq!(sums(&dl), expect, "only the matches, each once");
    assert!(running.alive());
    let log = running.log();
    assert!(
        log.contains("wish 1 \"changelog -old\": 3 new files, downloading"),
        "{log}"
    );
    assert!(log.contains("wish 1: downloaded "), "{log}");
    assert!(rounds(&log) >= 2, "{log}");
    drop(running);

    // --no-wishes: registered, and a few intervals later the wish has not run.
    let quiet = t.path().join("quiet");
    let other = t.path().join("other");
    ok(&run_peershare(
        &["wish", "add", "readme", "-o", other.to_str().unwrap()],
        &quiet,
    ));
    let mut running = Running::start(
        &[
            "share",
            mine.to_str().unwrap(),
            "--index",
            &ix,
            "--listen",
            "127.0.0.1:0",
            "--wish-interval",
            "1s",
            "--no-wishes",
        ],
        &quiet,
    );
    assert!(
        appears(Duration::from_secs(20), || running
            .log()
            .contains("registered with index"))
        .await,
        "{}",
        running.log()
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(running.alive());
    assert!(!other.exists(), "{}", running.log());
    assert!(list_json(&quiet)["wishes"][0]["last_run"].is_null());
    drop(running);
    peer.shutdown().await;
    index.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_lists_and_unreachable_indexes_are_said_clearly() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("client");
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap().to_string();
    drop(closed);
    ok(&run_peershare(&["wish", "add", "anything"], &home));
    let err = failed(&run_peershare(&["wish", "run", "--index", &dead], &home));
    assert!(
        err.contains(&format!("cannot reach the index at {dead}")),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // A round already running elsewhere (a share's, say): said, not run twice at once.
    {
        use std::os::fd::AsRawFd;
        let hold = std::fs::File::create(home.join("wishes.running")).unwrap();
        // SAFETY: flock on a descriptor this test owns.
        assert_eq!(unsafe { libc::flock(hold.as_raw_fd(), libc::LOCK_EX) }, 0);
        let index = start_index(&t.path().join("ix.sqlite"), Duration::from_secs(60)).await;
        let ix = index.addr();
        let h = home.clone();
        let err = tokio::task::spawn_blocking(move || {
            failed(&run_peershare(&["wish", "run", "--index", &ix], &h))
        })
        .await
        .unwrap();
        assert!(err.contains("the wishes are being run already"), "{err}");
        index.stop().await;
    }

    // share: a log line per round, and it goes on serving.
    let mine = t.path().join("mine");
    write(&mine.join("a.txt"), b"a");
    let mut running = Running::start(
        &[
            "share",
            mine.to_str().unwrap(),
            "--index",
            &dead,
            "--listen",
            "127.0.0.1:0",
            "--wish-interval",
            "1s",
        ],
        &home,
    );
    assert!(
        appears(Duration::from_secs(15), || running
            .log()
            .matches("wishes not run")
            .count()
            >= 2)
        .await,
        "{}",
        running.log()
    );
    assert!(running.alive(), "{}", running.log());
    drop(running);

    // A wish file that is not one: one line naming it, and it is left as it was.
    let file: PathBuf = home.join("wishes.json");
    std::fs::write(&file, b"{\"wishes\": [{\"id\": \"x\"").unwrap();
    for args in [
        &["wish", "list"][..],
        &["wish", "add", "more"],
        &["wish", "run", "--index", &dead],
    ] {
        let err = failed(&run_peershare(args, &home));
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!("{} is not a wish list", file.display())),
            "{err}"
        );
    }
    assert_eq!(
        std::fs::read(&file).unwrap(),
        b"{\"wishes\": [{\"id\": \"x\""
    );
    // Nothing to look for.
    std::fs::remove_file(&file).unwrap();
    let err = failed(&run_peershare(&["wish", "add", "--", "-old"], &home));
    assert!(err.contains("at least one word"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lying_source_fails_the_download_and_the_next_round_tries_again() {
    use peershare::content::ContentId;
    use peershare::identity::Identity;
    use peershare::index::IndexClient;
    use peershare::protocol::{FileEntry, Limits};
    let t = tempfile::tempdir().unwrap();
    let bytes = data(600_000, 9);
    let id = ContentId::from(blake3::hash(&bytes));
    // A peer that flips a byte of every piece it sends, registered with the file.
    let (liar, _) = fake_peer(
        bytes.clone(),
        Behaviour {
            corrupt: Some(|_| true),
            name: "lie changelog.gz".into(),
            secret: Some([7; 32]),
            ..Default::default()
        },
    )
    .await;
    let index = start_index(&t.path().join("ix.sqlite"), Duration::from_secs(60)).await;
    let ix = index.addr();
    let me = Identity::from_secret([7; 32]);
    let tls = peershare::tls::Tls::new(&me).unwrap();
    let mut c = IndexClient::connect(&ix, Some(&tls), None, Limits::default())
        .await
        .unwrap();
    let port: u16 = liar.rsplit(':').next().unwrap().parse().unwrap();
    c.register(&me, "127.0.0.1", port, Default::default(), 1)
        .await
        .unwrap();
    let entry = FileEntry {
        path: "lie changelog.gz".into(),
        name: "lie changelog.gz".into(),
        size: bytes.len() as u64,
        content_id: id,
        mtime: 0,
        have: None,
    };
    c.sync_files(true, vec![entry], vec![], Default::default())
        .await
        .unwrap();
    let home = t.path().join("client");
    let dl = t.path().join("dl");
    let (h, d, i) = (home.clone(), dl.clone(), ix.clone());
    tokio::task::spawn_blocking(move || {
        let (home, dl, ix) = (h, d, i);
        ok(&run_peershare(
            &["wish", "add", "changelog", "-o", dl.to_str().unwrap()],
            &home,
        ));
        let err = failed(&run_peershare(&["wish", "run", "--index", &ix], &home));
        assert!(
            err.contains("1 downloads failed; the next round tries them again"),
            "{err}"
        );
        assert!(sums(&dl).is_empty(), "nothing unverified is published");
        let w = &list_json(&home)["wishes"][0];
        assert_eq!(w["fetched"], 0);
        assert_eq!(w["last_outcome"], "0 new files, 1 failed");
    })
    .await
    .unwrap();
    // An honest source appears: the next round fetches the file, verified.
    let share = t.path().join("share");
    write(&share.join("honest changelog.gz"), &bytes);
    let peer = start_peer(&share, Some(ix.clone()), &t.path().join("peer")).await;
    tokio::task::spawn_blocking(move || {
        let out = ok(&run_peershare(&["wish", "run", "--index", &ix], &home));
        assert!(out.contains("1 new of 1 matching"), "{out}");
        assert_eq!(sums(&dl), BTreeSet::from([id.to_hex()]));
        assert_eq!(list_json(&home)["wishes"][0]["fetched"], 1);
        // A directory that cannot be made: one line for the wish, the others still run.
        let file = dl.join("a file");
        std::fs::write(&file, b"x").unwrap();
        let bad = file.join("sub");
        ok(&run_peershare(
            &["wish", "add", "honest", "-o", bad.to_str().unwrap()],
            &home,
        ));
        let run = run_peershare(&["wish", "run", "--index", &ix], &home);
        let err = failed(&run);
        assert!(
            err.contains("peershare: wish 2 not run: cannot make "),
            "{err}"
        );
        assert!(err.contains("1 wishes could not be run"), "{err}");
        assert_eq!(err.trim().lines().count(), 2, "{err}");
        let out = String::from_utf8_lossy(&run.stdout);
        assert!(
            out.contains("wish 1 \"changelog\": 0 new of 1 matching"),
            "{out}"
        );
        assert!(
            list_json(&home)["wishes"][1]["last_outcome"]
                .as_str()
                .unwrap()
                .starts_with("cannot make ")
        );
    })
    .await
    .unwrap();
    drop(c);
    peer.shutdown().await;
    index.stop().await;
}
