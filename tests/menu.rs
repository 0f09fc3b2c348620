//! The original menu (the binary with no arguments) driven over a pipe as a script drives it:
//! the original's lines in order through index, register and search-and-download flows, in
//! three processes; several matches; the CLI's search; truncation; end of input; quit; host
//! names; downloads into the current directory; hostile names; no log line among the prompts.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{b3sum, data, run_peershare};

const BIN: &str = env!("CARGO_BIN_EXE_peershare");

/// Longest any one wait in these tests may take.
const WAIT: Duration = Duration::from_secs(30);

/// A running `peershare` whose stdout and stderr go to one pipe, in the order written (as
/// on a terminal), read line by line in the background.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    /// Starts `peershare ARGS` (the menu when `args` is empty) with `home` as its state
    /// directory, no index from the environment, and `script` written to its stdin, which
    /// is then closed.
    fn start(args: &[&str], home: &Path, script: &str, setup: impl FnOnce(&mut Command)) -> Proc {
        let (reader, writer) = std::io::pipe().expect("pipe");
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("PEERSHARE_HOME", home)
            .env_remove("PEERSHARE_INDEX")
            .env_remove("PEERSHARE_DOWNLOAD_DIR")
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(writer.try_clone().expect("pipe"))
            .stderr(writer);
        setup(&mut cmd);
        let mut child = cmd.spawn().expect("spawn peershare");
        // Our copies of the pipe's write end go with `cmd`: the reader sees the end when the
        // child exits.
        drop(cmd);
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(script.as_bytes())
            .expect("write the script");
        drop(stdin);
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The menu with `script`, run from `cwd`.
    fn menu(home: &Path, cwd: &Path, script: &str) -> Proc {
        Proc::start(&[], home, script, |c| {
            c.current_dir(cwd);
        })
    }

    /// Waits (at most [`WAIT`]) for a line containing `needle`; returns it.
    fn wait_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no line with {needle:?}; saw:\n{}", self.seen.join("\n"));
    }

    /// Waits (at most [`WAIT`]) for the process to exit; its status and every line it wrote.
    fn finish(mut self) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the menu did not exit; saw:\n{}", self.seen.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The writer ends are closed: the reader thread ends after the last line.
        while let Ok(l) = self.lines.recv_timeout(WAIT) {
            self.seen.push(l);
        }
        (status, std::mem::take(&mut self.seen))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the menu from `cwd` with `script` to its end.
fn run_menu_in(home: &Path, cwd: &Path, script: &str) -> (ExitStatus, Vec<String>) {
    Proc::menu(home, cwd, script).finish()
}

/// Whether `l` is a log line (`2026-01-02T03:04:05.123456Z  INFO ...`).
fn is_log(l: &str) -> bool {
    let b = l.as_bytes();
    b.len() > 20
        && b[4] == b'-'
        && b[10] == b'T'
        && [" TRACE ", " DEBUG ", " INFO ", " WARN ", " ERROR "]
            .iter()
            .any(|k| l.contains(k))
}

/// Asserts that `lines` holds each of `want` as a whole line, in this order (other lines
/// may come between).
fn assert_in_order(lines: &[String], want: &[&str]) {
    let mut at = 0;
    for w in want {
        match lines[at..].iter().position(|l| l == w) {
            Some(i) => at += i + 1,
            None => panic!(
                "missing {w:?} (in this order) after line {at} of:\n{}",
                lines.join("\n")
            ),
        }
    }
}

/// Asserts that no log line comes before the line `until` (or in all of `lines`).
fn assert_no_log_before(lines: &[String], until: Option<&str>) {
    for l in lines {
        if until.is_some_and(|u| l == u) {
            return;
        }
        assert!(
            !is_log(l),
            "a log line among the prompts: {l:?} in:\n{}",
            lines.join("\n")
        );
    }
    assert!(
        until.is_none(),
        "no line {until:?} in:\n{}",
        lines.join("\n")
    );
}

/// The value after `prefix` in the line that starts with it.
fn after<'a>(lines: &'a [String], prefix: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{}", lines.join("\n")))
}

/// The content ids of the matches the menu listed, in order.
fn listed_ids(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l.starts_with("Match "))
        .map(|l| l.rsplit(' ').next().expect("id").to_string())
        .collect()
}

/// An index and a peer sharing `share`, both started as commands.
struct Setup {
    _index: Proc,
    _share: Proc,
    /// The index's port, as the menu asks it.
    port: String,
    /// The index's `127.0.0.1:PORT`.
    addr: String,
    /// The port the peer serves on.
    peer_port: String,
}

fn setup(t: &Path, share: &Path) -> Setup {
    let mut index = Proc::start(
        &["index", "--listen", "127.0.0.1:0"],
        &t.join("ix"),
        "",
        |_| {},
    );
    let l = index.wait_line("peershare index listening on");
    let addr = l.split_whitespace().nth(4).expect("address").to_string();
    let port = addr.rsplit(':').next().expect("port").to_string();
    let mut peer = Proc::start(
        &[
            "share",
            share.to_str().expect("utf-8"),
            "--index",
            &addr,
            "--listen",
            "127.0.0.1:0",
        ],
        &t.join("peer"),
        "",
        |_| {},
    );
    let l = peer.wait_line("peershare share listening on");
    let peer_port = l
        .split_whitespace()
        .nth(4)
        .and_then(|a| a.rsplit(':').next())
        .expect("port")
        .to_string();
    peer.wait_line("registered with index");
    Setup {
        _index: index,
        _share: peer,
        port,
        addr,
        peer_port,
    }
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, bytes).expect("write");
}

fn dir(p: PathBuf) -> PathBuf {
    std::fs::create_dir_all(&p).expect("mkdir");
    p
}

#[test]
fn the_whole_original_flow_in_three_processes() {
    let t = tempfile::tempdir().unwrap();
    let share = dir(t.path().join("share"));
    let content = data(300_000, 17);
    write(&share.join("code/isaac.py"), &content);

    // 1. The index, from the menu.
    let mut index = Proc::menu(&t.path().join("ix"), t.path(), "1\n0\n0\n");
    let started = index.wait_line("[*] Started listening on ");
    let port = started
        .strip_prefix("[*] Started listening on localhost : ")
        .unwrap_or_else(|| panic!("{started:?}"))
        .to_string();
    assert!(port.parse::<u16>().is_ok_and(|p| p > 0), "{started}");
    assert_in_order(
        &index.seen,
        &[
            "1 - Run Indexing Server",
            "2 - Run Peer",
            "Please select whichever you want.",
            "Please enter the IP of the server in this format XXX.XXX.XXX.XXX. Enter 0 to run as localhost",
            "Please enter the port number of which the server is going to listen to.",
            started.as_str(),
        ],
    );
    assert_no_log_before(&index.seen, Some(&started));

    // 2. A peer registering from the menu; bad answers on purpose (a port that is not a
    // number, a directory that does not exist): each is asked again. "localhost" for the
    // server's IP.
    let script = format!(
        "2\n{port}\nlocalhost\n2\nabc\n0\n0\n/does/not/exist\n{}\n",
        share.display()
    );
    let mut peer = Proc::menu(&t.path().join("peer"), t.path(), &script);
    let listening = "[*] You will now be put to the listening state.";
    peer.wait_line(listening);
    assert_in_order(
        &peer.seen,
        &[
            "1 - Run Indexing Server",
            "2 - Run Peer",
            "Please select whichever you want.",
            "Welcome Client.",
            "Please enter server's port number",
            "Please enter servers IP number in the following format XXX.XXX.XXX.XXX and 0 for localhost",
            "1 - Search for a filename and download it.",
            "2 - Register to the indexing server.",
            "Please enter your port number",
            "\"abc\" is not a port number; please enter a number from 0 to 65535 (0: any free port)",
            "Please enter your IP number in the following format XXX.XXX.XXX.XXX and 0 for localhost",
            "Please enter the directory path of which you want to share its files.",
            "\"/does/not/exist\" is not an existing directory; please enter the path of one",
            "Congratulations you have been registered successfully.",
            listening,
        ],
    );
    let n = peer.seen.len();
    assert_eq!(
        peer.seen[n - 2],
        "Congratulations you have been registered successfully."
    );
    assert_no_log_before(&peer.seen, Some(listening));
    let peer_port = after(&peer.seen, "peershare share listening on 127.0.0.1:")
        .split(' ')
        .next()
        .expect("port")
        .to_string();
    // Once listening, logs flow as `index` logs: the index said who registered.
    index.wait_line("peer registered");

    // 3. Search and download, from a third process in its own directory; again a bad
    // answer at each question.
    let cwd = dir(t.path().join("cwd"));
    let script = format!("2\nx\n{port}\n0\n5\n1\nisaac\nmaybe\nY\n42\n1\n");
    let (status, lines) = run_menu_in(&t.path().join("client"), &cwd, &script);
    assert!(status.success(), "{}", lines.join("\n"));
    assert_in_order(
        &lines,
        &[
            "Welcome Client.",
            "Please enter server's port number",
            "\"x\" is not a port number; please enter a number from 1 to 65535",
            "Please enter servers IP number in the following format XXX.XXX.XXX.XXX and 0 for localhost",
            "1 - Search for a filename and download it.",
            "2 - Register to the indexing server.",
            "\"5\" is not a choice; please enter a number from 1 to 2, or 0 to quit",
            "File isaac.py was found in the following one or more peers. Peer/s details are:",
            "Peer ID: 1",
            &format!("Peer port: {peer_port}"),
            "Peer host: 127.0.0.1",
            "-----",
            "Do you want to download it (Y/N):",
            "Please answer Y or N",
            "Please specify Peer ID",
            "\"42\" is not one of the peers listed for this file: 1",
            "Successfully got the file",
            "connection closed",
        ],
    );
    // The time as the original showed it: "2022-01-03 19:51:33" (here in UTC, said so).
    let when = after(&lines, "File shared at: ");
    assert_eq!(when.len(), 23, "{when}");
    assert!(
        when.ends_with(" UTC") && &when[10..11] == " " && &when[4..5] == "-",
        "{when}"
    );
    // The whole conversation, stderr included, holds no log line.
    assert_no_log_before(&lines, None);
    // In the current directory, as in the original; verified.
    let got = cwd.join("isaac.py");
    assert_eq!(std::fs::read(&got).unwrap(), content);
    assert_eq!(b3sum(&got), listed_ids(&lines)[0]);
    assert_eq!(common::files_in(&cwd).len(), 1);

    // The listening state ends as `share` and `index` end: on SIGTERM, cleanly.
    for (p, last) in [
        (peer, "peershare share stopped"),
        (index, "peershare index stopped"),
    ] {
        let pid = libc::pid_t::try_from(p.child.id()).expect("pid");
        // SAFETY: kill(2) with a pid of a child we spawned and have not waited for yet.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let (status, lines) = p.finish();
        assert!(status.success(), "{}", lines.join("\n"));
        assert!(lines.iter().any(|l| l == last), "{}", lines.join("\n"));
    }
}

/// A tree with many same-named files in different directories.
fn same_named_tree(share: &Path) -> Vec<Vec<u8>> {
    let mut contents = Vec::new();
    for (i, d) in ["a", "b/c", "d/e/f"].iter().enumerate() {
        let bytes = data(1000 + i * 10, 100 + i as u64);
        write(&share.join(d).join("isaac.py"), &bytes);
        contents.push(bytes);
    }
    for (i, name) in [
        "python3-changelog.txt",
        "changelog-python3.gz",
        "python2-changelog.txt",
        "changelog.txt",
        "python3-readme.txt",
    ]
    .iter()
    .enumerate()
    {
        write(
            &share.join(format!("docs/{i}/{name}")),
            &data(500, 200 + i as u64),
        );
    }
    contents
}

/// The menu example of the README, as written there.
fn readme_script() -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let section = readme
        .find("### The menu")
        .expect("the README's menu section");
    let start = section
        + readme[section..]
            .find("`printf '")
            .expect("the menu example in the README")
        + 9;
    let len = readme[start..].find("' | peershare`").expect("its end");
    readme[start..start + len].replace("\\n", "\n")
}

#[test]
fn several_matches_are_listed_and_the_readme_example_downloads_one() {
    let t = tempfile::tempdir().unwrap();
    let share = dir(t.path().join("share"));
    let contents = same_named_tree(&share);
    let s = setup(t.path(), &share);

    // The README's example, exactly, with the port this index got.
    let script = readme_script();
    assert!(script.starts_with("2\n50000\n"), "{script:?}");
    let script = script.replacen("50000", &s.port, 1);
    let cwd = dir(t.path().join("cwd"));
    let (status, lines) = run_menu_in(&t.path().join("client"), &cwd, &script);
    assert!(status.success(), "{}", lines.join("\n"));
    let ids = listed_ids(&lines);
    assert_eq!(ids.len(), 3, "{}", lines.join("\n"));
    let found = "File isaac.py was found in the following one or more peers. Peer/s details are:";
    assert_eq!(lines.iter().filter(|l| *l == found).count(), 3);
    let mut want = vec!["3 files match isaac:".to_string()];
    for (i, id) in ids.iter().enumerate() {
        let size = contents
            .iter()
            .find(|c| blake3::hash(c).to_hex().as_str() == id)
            .expect("a file of the tree")
            .len();
        want.push(format!("Match {} of 3: {size} B, content id {id}", i + 1));
        want.extend(
            [
                found,
                "Peer ID: 1",
                &format!("Peer port: {}", s.peer_port),
                "Peer host: 127.0.0.1",
            ]
            .map(String::from),
        );
        want.push("-----".into());
    }
    want.extend(
        [
            "Answer Y to download match 1, or the number of the match to download (1-3).",
            "Do you want to download it (Y/N):",
            "Please specify Peer ID",
            "Successfully got the file",
            "connection closed",
        ]
        .map(String::from),
    );
    assert_in_order(&lines, &want.iter().map(String::as_str).collect::<Vec<_>>());
    // Y: match 1, into the current directory.
    let got = cwd.join("isaac.py");
    assert_eq!(b3sum(&got), ids[0]);
    assert!(contents.contains(&std::fs::read(&got).unwrap()));

    // A match's number instead of Y picks it; PEERSHARE_DOWNLOAD_DIR sends it elsewhere.
    let elsewhere = dir(t.path().join("elsewhere"));
    let script = format!("2\n{}\n0\n1\nisaac\n4\n3\n1\n0\n", s.port);
    let (status, lines) = Proc::start(&[], &t.path().join("client"), &script, |c| {
        c.current_dir(&cwd)
            .env("PEERSHARE_DOWNLOAD_DIR", &elsewhere);
    })
    .finish();
    assert!(status.success(), "{}", lines.join("\n"));
    assert_in_order(
        &lines,
        &[
            "Do you want to download it (Y/N):",
            "Please answer Y or N, or a match number from 1 to 3",
            "Please specify Peer ID",
            "Successfully got the file",
        ],
    );
    assert_eq!(b3sum(&elsewhere.join("isaac.py")), listed_ids(&lines)[2]);
    assert_eq!(
        common::files_in(&cwd).len(),
        1,
        "nothing more in the current directory"
    );
}

#[test]
fn a_multi_word_query_finds_what_search_finds_and_cut_results_are_said() {
    let t = tempfile::tempdir().unwrap();
    let share = dir(t.path().join("share"));
    same_named_tree(&share);
    for i in 0..101 {
        write(
            &share.join(format!("many/{}/many-{i}.txt", i % 7)),
            format!("file {i}").as_bytes(),
        );
    }
    let s = setup(t.path(), &share);
    let home = t.path().join("client");

    let cli = run_peershare(
        &[
            "search",
            "python3",
            "changelog",
            "--json",
            "--index",
            &s.addr,
        ],
        &home,
    );
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&cli.stdout).unwrap();
    let cli_ids: BTreeSet<String> = doc["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["content_id"].as_str().unwrap().to_string())
        .collect();
    assert!(cli_ids.len() >= 2, "{doc}");
    let script = format!("2\n{}\n0\n1\npython3 changelog\nN\n0\n", s.port);
    let (status, lines) = run_menu_in(&home, t.path(), &script);
    assert!(status.success(), "{}", lines.join("\n"));
    let menu_ids: BTreeSet<String> = listed_ids(&lines).into_iter().collect();
    assert_eq!(menu_ids, cli_ids, "{}", lines.join("\n"));
    assert!(!lines.iter().any(|l| l.starts_with("More files matched")));

    // 101 files match "many": both list 100 and say that more matched.
    let cli = run_peershare(&["search", "many", "--json", "--index", &s.addr], &home);
    let doc: serde_json::Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert_eq!(doc["truncated"], true);
    let listed = doc["files"].as_array().unwrap().len();
    let script = format!("2\n{}\n0\n1\nmany\nN\n", s.port);
    let (status, lines) = run_menu_in(&home, t.path(), &script);
    assert!(status.success(), "{}", lines.join("\n"));
    assert_eq!(listed_ids(&lines).len(), listed);
    assert_in_order(
        &lines,
        &[
            lines
                .iter()
                .find(|l| l.starts_with(&format!("Match {listed} of {listed}: ")))
                .expect("the last match"),
            &format!(
                "More files matched than the {listed} listed ({} in all); add words to narrow the search.",
                listed + 1
            ),
            "Do you want to download it (Y/N):",
        ],
    );
}

#[test]
fn the_end_of_input_mid_flow_fails_saying_so_and_quitting_does_not() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("home");
    // Mid-flow: non-zero, and the message says what was being asked.
    for (script, asked) in [
        ("2\n", "Please enter server's port number"),
        (
            "2\n50000\n",
            "Please enter servers IP number in the following format XXX.XXX.XXX.XXX and 0 for localhost",
        ),
        (
            "1\n",
            "Please enter the IP of the server in this format XXX.XXX.XXX.XXX. Enter 0 to run as localhost",
        ),
        (
            "1\n0\n",
            "Please enter the port number of which the server is going to listen to.",
        ),
        (
            "2\n50000\n0\n2\n0\n0\n",
            "Please enter the directory path of which you want to share its files.",
        ),
        (
            "2\n50000\n0\n1\n",
            "Please enter the filename to search for (one or more words)",
        ),
    ] {
        let (status, lines) = run_menu_in(&home, t.path(), script);
        assert_eq!(status.code(), Some(1), "{script:?}: {}", lines.join("\n"));
        assert_eq!(
            lines.last().map(String::as_str),
            Some(format!("peershare: end of input while the menu asked \"{asked}\"").as_str()),
            "{script:?}"
        );
    }
    // Quitting, or the input ending where a menu waits for a choice: status 0, nothing more
    // asked.
    let menu = [
        "1 - Run Indexing Server",
        "2 - Run Peer",
        "0 - Quit",
        "Please select whichever you want.",
    ];
    for script in ["", "0\n", "q\n", "7\nquit\n"] {
        let (status, lines) = run_menu_in(&home, t.path(), script);
        assert!(status.success(), "{script:?}: {}", lines.join("\n"));
        let want: Vec<&str> = match script {
            "7\nquit\n" => {
                let mut w = menu.to_vec();
                w.push("\"7\" is not a choice; please enter a number from 1 to 2, or 0 to quit");
                w
            }
            _ => menu.to_vec(),
        };
        assert_eq!(lines, want, "{script:?}");
    }
    let (status, lines) = run_menu_in(&home, t.path(), "2\n50000\n0\nq\n");
    assert!(status.success(), "{}", lines.join("\n"));
    assert_eq!(
        lines.last().map(String::as_str),
        Some("Please select whichever you want.")
    );

    // A search mid-flow, against a real index: the input ends at the download question.
    let share = dir(t.path().join("share"));
    write(&share.join("isaac.py"), b"print('menu')\n");
    let s = setup(t.path(), &share);
    let (status, lines) = run_menu_in(&home, t.path(), &format!("2\n{}\n0\n1\nisaac\n", s.port));
    assert_eq!(status.code(), Some(1));
    assert_eq!(
        lines.last().map(String::as_str),
        Some("peershare: end of input while the menu asked \"Do you want to download it (Y/N):\"")
    );
    // A search that finds nothing makes the final quit fail, so a script can tell.
    let (status, lines) = run_menu_in(
        &home,
        t.path(),
        &format!("2\n{}\n0\n1\nnothing-like-it\n0\n", s.port),
    );
    assert_eq!(status.code(), Some(1), "{}", lines.join("\n"));
    assert_in_order(
        &lines,
        &[
            "File nothing-like-it was not found in any peer.",
            "peershare: 1 search(es) or download(s) failed (see above)",
        ],
    );
}

/// A name other than localhost that /etc/hosts gives a loopback address, if any.
fn loopback_name() -> Option<String> {
    let hosts = std::fs::read_to_string("/etc/hosts").ok()?;
    hosts.lines().find_map(|l| {
        let mut words = l.split('#').next()?.split_whitespace();
        let ip = words.next()?;
        if !ip.starts_with("127.") {
            return None;
        }
        words
            .find(|w| !w.eq_ignore_ascii_case("localhost") && !w.contains("localhost"))
            .map(String::from)
    })
}

#[test]
fn localhost_and_host_names_are_accepted_where_an_ip_is_asked() {
    let t = tempfile::tempdir().unwrap();
    // "localhost" for the index's own address, and a server's.
    let mut index = Proc::menu(&t.path().join("ix"), t.path(), "1\nlocalhost\n0\n");
    let l = index.wait_line("[*] Started listening on localhost : ");
    let port = l.rsplit(' ').next().unwrap().to_string();
    let (status, lines) = run_menu_in(
        &t.path().join("c"),
        t.path(),
        &format!("2\n{port}\nLOCALHOST\n1\nanything\n0\n"),
    );
    assert_eq!(
        status.code(),
        Some(1),
        "nothing found: {}",
        lines.join("\n")
    );
    assert!(
        lines.contains(&"File anything was not found in any peer.".to_string()),
        "{}",
        lines.join("\n")
    );

    // A host name, looked up once, where the index listens and where the peer connects.
    let Some(name) = loopback_name() else {
        eprintln!("skipped the host-name part: no loopback name but localhost in /etc/hosts");
        return;
    };
    let mut index = Proc::menu(&t.path().join("ix2"), t.path(), &format!("1\n{name}\n0\n"));
    let l = index.wait_line(&format!("[*] Started listening on {name} : "));
    let port = l.rsplit(' ').next().unwrap().to_string();
    let (status, lines) = run_menu_in(
        &t.path().join("c"),
        t.path(),
        &format!("2\n{port}\n{name}\n1\nanything\n0\n"),
    );
    assert_eq!(status.code(), Some(1), "{}", lines.join("\n"));
    assert!(
        lines.contains(&"File anything was not found in any peer.".to_string()),
        "{}",
        lines.join("\n")
    );
    // A name that cannot be one is refused before any look-up, and asked again.
    let (_, lines) = run_menu_in(&t.path().join("c"), t.path(), "2\n1\nbad name\n");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("\"bad name\" is not an IP address or host name"))
    );
}

#[test]
fn a_hostile_name_is_shown_escaped_and_downloaded_safely() {
    let t = tempfile::tempdir().unwrap();
    let share = dir(t.path().join("share"));
    let name = "evil\x1b[31mred\x1b]0;pwned\x07.txt";
    write(&share.join(name), b"hostile payload");
    let s = setup(t.path(), &share);
    let cwd = dir(t.path().join("cwd"));
    let (status, lines) = run_menu_in(
        &t.path().join("c"),
        &cwd,
        &format!("2\n{}\n0\n1\nevil\nY\n1\n", s.port),
    );
    assert!(status.success(), "{}", lines.join("\n"));
    assert_in_order(
        &lines,
        &[
            "File evil\\x1b[31mred\\x1b]0;pwned\\x07.txt was found in the following one or more peers. Peer/s details are:",
            "Successfully got the file",
        ],
    );
    assert!(
        !lines.iter().any(|l| l.chars().any(char::is_control)),
        "a control character reached the terminal: {lines:?}"
    );
    let files = common::files_in(&cwd);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(std::fs::read(&files[0]).unwrap(), b"hostile payload");
    assert_eq!(b3sum(&files[0]), listed_ids(&lines)[0]);
}

#[test]
fn registering_waits_for_the_index_and_congratulates_only_once_registered() {
    let t = tempfile::tempdir().unwrap();
    let share = dir(t.path().join("share"));
    write(&share.join("later.txt"), b"registered late");
    // A port with no index behind it (yet).
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let port = addr.port().to_string();
    let script = format!("2\n{port}\n0\n2\n0\n0\n{}\n", share.display());
    let mut peer = Proc::menu(&t.path().join("peer"), t.path(), &script);
    peer.wait_line("peershare: no registration with the index, retrying: ");
    assert!(
        !peer.seen.iter().any(|l| l.starts_with("Congratulations")),
        "{}",
        peer.seen.join("\n")
    );
    // The index comes up where the peer looks for it: the peer registers, and says so.
    let mut index = Proc::start(
        &["index", "--listen", &addr.to_string()],
        &t.path().join("ix"),
        "",
        |_| {},
    );
    index.wait_line("peershare index listening on");
    peer.wait_line("Congratulations you have been registered successfully.");
    peer.wait_line("[*] You will now be put to the listening state.");
    let out = run_peershare(
        &["search", "later", "--index", &addr.to_string()],
        &t.path().join("c"),
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("later.txt"));
}
