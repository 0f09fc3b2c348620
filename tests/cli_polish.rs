//! The real `peershare` binary as a user meets it first: one-line errors with hints, index
//! addresses without a port, output into a closed pipe, completions, the man pages, and the
//! configuration file's place in the precedence of flags, environment and defaults.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_peershare");

/// The binary with `home` as its state directory, `config_home` as its XDG configuration
/// directory (so that no file of the user running the tests is read), no index from the
/// environment.
fn peershare(args: &[&str], home: &Path, config_home: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("PEERSHARE_HOME", home)
        .env("XDG_CONFIG_HOME", config_home)
        .env_remove("PEERSHARE_INDEX")
        .env_remove("PEERSHARE_INDEX_KEY")
        .env_remove("PEERSHARE_CONFIG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    cmd
}

fn run(args: &[&str], home: &Path, config_home: &Path) -> Output {
    peershare(args, home, config_home)
        .output()
        .expect("run peershare")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The one line the binary printed on stderr for a failure (asserting that it is one).
fn error_line(o: &Output) -> String {
    assert!(!o.status.success(), "succeeded: {o:?}");
    let e = stderr(o);
    assert_eq!(e.lines().count(), 1, "not one line: {e:?}");
    assert!(e.starts_with("peershare: "), "{e:?}");
    e.trim_end().to_string()
}

/// A loopback address with nothing listening on it.
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

const NO_FILE: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[test]
fn an_unreachable_index_is_one_line_with_its_cause_once_and_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let (home, conf) = (dir.path().join("home"), dir.path().join("conf"));
    let addr = closed_port().to_string();
    for args in [
        vec!["search", "a", "b", "--index", &addr],
        vec!["peers", "--index", &addr],
        vec!["get", NO_FILE, "--index", &addr, "-o", "."],
    ] {
        let line = error_line(&run(&args, &home, &conf));
        assert!(
            line.contains(&format!("cannot reach the index at {addr}")),
            "{line}"
        );
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused).to_string();
        let cause = "Connection refused";
        assert_eq!(line.matches(cause).count(), 1, "{line} ({refused})");
        assert!(
            line.contains(
                "is `peershare index` running there? set --index HOST:PORT or PEERSHARE_INDEX"
            ),
            "{line}"
        );
        // The hint names the configuration file too, where the address can be kept.
        assert!(
            line.contains(&conf.join("peershare/config.toml").display().to_string()),
            "{line}"
        );
    }
}

#[test]
fn misleading_system_messages_are_replaced_by_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let (home, conf) = (dir.path().join("home"), dir.path().join("conf"));
    let file = dir.path().join("hostname");
    std::fs::write(&file, b"x").unwrap();
    let f = file.display().to_string();
    // Checked before anything is fetched: the index need not even be up.
    let index = closed_port().to_string();
    let line = error_line(&run(
        &["get", NO_FILE, "--index", &index, "-o", &f],
        &home,
        &conf,
    ));
    assert_eq!(
        line,
        format!("peershare: -o {f} is a file, not a directory")
    );
    let below = format!("{f}/sub");
    let line = error_line(&run(
        &["get", NO_FILE, "--index", &index, "-o", &below],
        &home,
        &conf,
    ));
    assert_eq!(
        line,
        format!("peershare: -o {below}: {f} is a file, not a directory")
    );
    // Shared directories: missing, or a file.
    let missing = dir.path().join("missing").display().to_string();
    let line = error_line(&run(&["share", &missing, "--no-index"], &home, &conf));
    assert_eq!(
        line,
        format!("peershare: cannot share {missing}: no such directory")
    );
    let line = error_line(&run(&["share", &f, "--no-index"], &home, &conf));
    assert_eq!(
        line,
        format!("peershare: cannot share {f}: it is a file, not a directory")
    );
    // A state directory or an index database below a file.
    let line = error_line(&run(
        &["peers", "--index", &index, "--state-dir", &f],
        &home,
        &conf,
    ));
    assert_eq!(
        line,
        format!("peershare: state directory {f} is a file, not a directory")
    );
    let db = format!("{f}/index.sqlite");
    let line = error_line(&run(
        &["index", "--listen", "127.0.0.1:0", "--db", &db],
        &home,
        &conf,
    ));
    assert_eq!(
        line,
        format!("peershare: --db {db}: {f} is a file, not a directory")
    );
    // An index address that cannot be one is refused by the parser, naming the flag.
    let o = run(&["peers", "--index", "127.0.0.1:0"], &home, &conf);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("has no valid port"), "{}", stderr(&o));
}

#[test]
fn permission_denied_names_the_path() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        eprintln!("skipped: running as root, which may write anywhere");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (home, conf) = (dir.path().join("home"), dir.path().join("conf"));
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o500)).unwrap();
    let index = closed_port().to_string();
    let target = locked.join("new").display().to_string();
    let line = error_line(&run(
        &["get", NO_FILE, "--index", &index, "-o", &target],
        &home,
        &conf,
    ));
    assert!(
        line.contains(&target)
            && line.contains("permission denied")
            && line.contains(&locked.display().to_string()),
        "{line}"
    );
    let unreadable = dir.path().join("unreadable");
    std::fs::create_dir(&unreadable).unwrap();
    std::fs::set_permissions(&unreadable, std::fs::Permissions::from_mode(0o000)).unwrap();
    let u = unreadable.display().to_string();
    let line = error_line(&run(&["share", &u, "--no-index"], &home, &conf));
    assert!(
        line.contains(&u) && line.contains("permission denied"),
        "{line}"
    );
    std::fs::set_permissions(&unreadable, std::fs::Permissions::from_mode(0o700)).unwrap();
}

/// An index on port 50000 of a loopback address nobody else uses (127.0.0.0/8 has many).
async fn index_on_default_port(db: &Path) -> Option<TestIndex> {
    for i in 0..20u32 {
        let n = std::process::id().wrapping_add(i);
        let ip = format!(
            "127.{}.{}.{}",
            100 + (n >> 16) % 100,
            (n >> 8) % 250,
            1 + n % 250
        );
        let addr: SocketAddr = format!("{ip}:50000").parse().unwrap();
        if std::net::TcpListener::bind(addr).is_ok() {
            return Some(start_index_with(db, addr, Default::default()).await);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_address_without_a_port_means_port_50000() {
    let dir = tempfile::tempdir().unwrap();
    let (home, conf) = (dir.path().join("home"), dir.path().join("conf"));
    let Some(index) = index_on_default_port(&dir.path().join("index.sqlite")).await else {
        eprintln!("skipped: no loopback address has port 50000 free");
        return;
    };
    let ip = index.addr.ip().to_string();
    let o = tokio::task::spawn_blocking({
        let (home, conf, ip) = (home.clone(), conf.clone(), ip.clone());
        move || run(&["peers", "--index", &ip, "--json"], &home, &conf)
    })
    .await
    .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("peers --json");
    assert!(doc.is_object() || doc.is_array(), "{doc}");
    // The key pinned on that first connection is pinned for HOST:50000: the same index when
    // written with its port, and a wrong key given with the port-less form is refused.
    let o = tokio::task::spawn_blocking({
        let (home, conf, ip) = (home.clone(), conf.clone(), ip.clone());
        move || run(&["peers", "--index", &format!("{ip}:50000")], &home, &conf)
    })
    .await
    .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let wrong = "a".repeat(52);
    let o = tokio::task::spawn_blocking({
        let (home, conf, ip) = (home.clone(), conf.clone(), ip.clone());
        move || {
            run(
                &["peers", "--index", &format!("{ip}#{wrong}")],
                &home,
                &conf,
            )
        }
    })
    .await
    .unwrap();
    let line = error_line(&o);
    assert!(line.contains(&format!("{ip}:50000")), "{line}");
    index.stop().await;
}

/// Waits (at most 20 s) for `child` to end.
fn wait(mut child: std::process::Child) -> Output {
    for _ in 0..2000 {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    panic!("still running after 20 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_into_a_closed_pipe_ends_quietly_with_status_0() {
    let dir = tempfile::tempdir().unwrap();
    let (home, conf) = (dir.path().join("home"), dir.path().join("conf"));
    let index = start_index(&dir.path().join("index.sqlite"), Duration::from_secs(60)).await;
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    // Long names, many matches: more output than a pipe holds, so that the writer is still
    // writing when its reader goes.
    let pad = "x".repeat(150);
    for i in 0..600 {
        std::fs::write(shared.join(format!("a b {pad} {i}.txt")), format!("{i}")).unwrap();
    }
    let peer = start_peer(&shared, Some(index.addr()), &dir.path().join("peer")).await;
    let addr = index.addr();
    let one = shared.join(format!("a b {pad} 7.txt"));
    let id = b3sum(&one);
    tokio::task::spawn_blocking(move || {
        // `peershare search a b | head -2`.
        let mut child = peershare(
            &["search", "a", "b", "--limit", "1000", "--index", &addr],
            &home,
            &conf,
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        for _ in 0..2 {
            let mut line = String::new();
            assert!(out.read_line(&mut line).expect("read") > 0, "no output");
        }
        drop(out);
        let o = wait(child);
        assert_eq!((o.status.code(), stderr(&o)), (Some(0), String::new()));
        // Every command, its reader gone before it writes a byte.
        let out_dir = dir.path().join("dl/new/deeper");
        let out_dir = out_dir.display().to_string();
        for args in [
            vec![
                "search", "a", "b", "--limit", "1000", "--json", "--index", &addr,
            ],
            vec!["peers", "--index", &addr],
            vec!["peers", "--json", "--index", &addr],
            vec![
                "get",
                &id,
                "--json",
                "--no-share",
                "--index",
                &addr,
                "-o",
                &out_dir,
            ],
            vec!["completions", "bash"],
        ] {
            let mut child = peershare(&args, &home, &conf)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn");
            drop(child.stdout.take());
            let o = wait(child);
            assert_eq!(
                (o.status.code(), stderr(&o)),
                (Some(0), String::new()),
                "{args:?}"
            );
        }
        // The download went through all the same, into a directory `get` made.
        let got = Path::new(&out_dir).join(format!("a b {pad} 7.txt"));
        assert_eq!(std::fs::read(got).expect("downloaded"), b"7");
    })
    .await
    .unwrap();
    peer.shutdown().await;
    index.stop().await;
}

#[test]
fn completions_are_printed_for_each_shell() {
    let dir = tempfile::tempdir().unwrap();
    let (home, conf) = (dir.path().join("home"), dir.path().join("conf"));
    let o = run(&["completions", "bash"], &home, &conf);
    assert!(o.status.success(), "{}", stderr(&o));
    let bash = String::from_utf8(o.stdout).unwrap();
    assert!(bash.contains("complete -F _peershare"), "{bash}");
    for sub in [
        "index",
        "share",
        "search",
        "get",
        "peers",
        "completions",
        "--index",
        "--state-dir",
    ] {
        assert!(bash.contains(sub), "no {sub} in the bash completions");
    }
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let o = run(&["completions", shell], &home, &conf);
        assert!(
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains("search"),
            "{shell}"
        );
    }
    let o = run(&["completions", "tcsh"], &home, &conf);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn the_committed_man_pages_are_those_of_this_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let (home, conf) = (dir.path().join("home"), dir.path().join("conf"));
    // A configuration file must not leak into the pages.
    std::fs::create_dir_all(conf.join("peershare")).unwrap();
    std::fs::write(
        conf.join("peershare/config.toml"),
        "index = \"192.0.2.1:7\"\n",
    )
    .unwrap();
    let out = dir.path().join("man");
    let o = run(&["man", &out.display().to_string()], &home, &conf);
    assert!(o.status.success(), "{}", stderr(&o));
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/man");
    let names = |d: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let made = names(&out);
    assert!(made.contains(&"peershare.1".into()) && made.contains(&"peershare-search.1".into()));
    assert_eq!(
        names(&committed),
        made,
        "docs/man is out of date: run scripts/man"
    );
    for n in &made {
        let (a, b) = (
            std::fs::read(out.join(n)).unwrap(),
            std::fs::read(committed.join(n)).unwrap(),
        );
        assert!(a == b, "docs/man/{n} is out of date: run scripts/man");
    }
    assert!(
        !String::from_utf8_lossy(&std::fs::read(out.join("peershare-search.1")).unwrap())
            .contains("192.0.2.1")
    );
}

fn write_config(conf: &Path, text: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(conf.join("peershare")).unwrap();
    let path = conf.join("peershare/config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn flags_override_the_environment_which_overrides_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let (home, conf) = (dir.path().join("home"), dir.path().join("conf"));
    let (file_addr, env_addr, flag_addr) = (closed_port(), closed_port(), closed_port());
    write_config(&conf, &format!("index = \"{file_addr}\"\n"));
    let used = |o: &Output| {
        let line = error_line(o);
        [file_addr, env_addr, flag_addr]
            .into_iter()
            .find(|a| line.contains(&format!("at {a}:")))
            .unwrap_or_else(|| panic!("no address: {line}"))
    };
    assert_eq!(used(&run(&["peers"], &home, &conf)), file_addr);
    let env = |extra: &[&str]| {
        let mut args = vec!["peers"];
        args.extend_from_slice(extra);
        peershare(&args, &home, &conf)
            .env("PEERSHARE_INDEX", env_addr.to_string())
            .output()
            .unwrap()
    };
    assert_eq!(used(&env(&[])), env_addr);
    assert_eq!(used(&env(&["--index", &flag_addr.to_string()])), flag_addr);

    // The download directory, the state directory, rates and slots.
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let state = dir.path().join("state-from-file");
    write_config(
        &conf,
        &format!(
            "index = \"{file_addr}\"\ndownload_dir = \"{}\"\nstate_dir = \"{}\"\n\
             max_upload_rate = \"3MiB\"\nupload_slots = 7\nmax_download_rate = 4096\n\
             bootstrap = [\"192.0.2.9:6881\"]\n",
            file.display(),
            state.display()
        ),
    );
    let line = error_line(&run(&["get", NO_FILE], &home, &conf));
    assert_eq!(
        line,
        format!(
            "peershare: -o {} is a file, not a directory",
            file.display()
        )
    );
    let o = run(
        &["get", NO_FILE, "-o", &dir.path().display().to_string()],
        &home,
        &conf,
    );
    assert!(error_line(&o).contains(&file_addr.to_string()));
    let help = String::from_utf8(run(&["share", "--help"], &home, &conf).stdout).unwrap();
    assert!(
        help.contains("[default: 3MiB]") && help.contains("[default: 7]"),
        "{help}"
    );
    let help = String::from_utf8(run(&["get", "--help"], &home, &conf).stdout).unwrap();
    assert!(
        help.contains("[default: 4096]") && help.contains("[default: 192.0.2.9:6881]"),
        "{help}"
    );
    // The state directory: PEERSHARE_HOME over the file.
    let o = run(&["peers"], &home, &conf);
    assert!(!o.status.success());
    assert!(
        home.join("identity.key").exists() || home.read_dir().is_ok_and(|mut d| d.next().is_some())
    );
    assert!(
        !state.exists(),
        "PEERSHARE_HOME is set: the file's state_dir is not used"
    );
    let o = peershare(&["peers"], &home, &conf)
        .env_remove("PEERSHARE_HOME")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        state.read_dir().is_ok_and(|mut d| d.next().is_some()),
        "nothing in the file's state_dir"
    );
}

#[test]
fn a_bad_config_file_is_one_line_naming_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let (home, conf) = (dir.path().join("home"), dir.path().join("conf"));
    let path = write_config(&conf, "index = \"127.0.0.1:1\"\nindx = \"x\"\n");
    let p = path.display().to_string();
    let line = error_line(&run(&["peers"], &home, &conf));
    assert!(
        line.starts_with(&format!("peershare: config file {p}: unknown key \"indx\"")),
        "{line}"
    );
    write_config(&conf, "upload_slots = \"many\"\n");
    let line = error_line(&run(&["peers"], &home, &conf));
    assert!(
        line.starts_with(&format!("peershare: config file {p}: upload_slots: ")),
        "{line}"
    );
    write_config(&conf, "index = [\n");
    let line = error_line(&run(&["peers"], &home, &conf));
    assert!(
        line.starts_with(&format!("peershare: config file {p} on line ")),
        "{line}"
    );
    // --config and PEERSHARE_CONFIG choose another file, which must then exist.
    let other = dir.path().join("other.toml");
    std::fs::write(&other, "index = \"127.0.0.1:9\"\n").unwrap();
    let o = &other.display().to_string();
    let line = error_line(&run(
        &[
            "peers",
            "--config",
            o,
            "--index",
            &closed_port().to_string(),
        ],
        &home,
        &conf,
    ));
    assert!(!line.contains("config file"), "{line}");
    let o2 = peershare(&["peers"], &home, &conf)
        .env("PEERSHARE_CONFIG", &other)
        .output()
        .unwrap();
    assert!(error_line(&o2).contains("127.0.0.1:9"));
    let missing = dir.path().join("missing.toml").display().to_string();
    let line = error_line(&run(&["peers", "--config", &missing], &home, &conf));
    assert!(
        line.starts_with(&format!("peershare: config file {missing}: ")),
        "{line}"
    );
}
