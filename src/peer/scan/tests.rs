//! Tests of the scanner: what is shared, symlinks, a replaced shared directory, the descriptor bound of the walk.

use super::*;

#[test]
fn scan_finds_files_skips_hidden_and_outside_symlinks() {
    let share = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    fs::create_dir_all(share.path().join("sub")).unwrap();
    fs::write(share.path().join("sub/Isaac.py"), b"print(1)").unwrap();
    fs::write(share.path().join(".secret"), b"x").unwrap();
    fs::write(outside.path().join("passwd"), b"root").unwrap();
    std::os::unix::fs::symlink(outside.path().join("passwd"), share.path().join("link-out"))
        .unwrap();
    std::os::unix::fs::symlink(
        share.path().join("sub/Isaac.py"),
        share.path().join("link-in"),
    )
    .unwrap();
    let s = Scanner::new(
        &[share.path().to_path_buf()],
        state.path(),
        ScanOptions::default(),
    )
    .unwrap();
    let cat = s.scan().unwrap();
    let mut paths: Vec<_> = cat.files().map(|f| f.rel_path.clone()).collect();
    paths.sort();
    assert_eq!(paths, ["link-in", "sub/Isaac.py"]);
    let f = cat.files().find(|f| f.rel_path == "sub/Isaac.py").unwrap();
    assert_eq!(f.content_id, ContentId::from(blake3::hash(b"print(1)")));
    // Cached on the second scan; changed file rehashed.
    assert_eq!(s.scan().unwrap().digest(), cat.digest());
    fs::write(share.path().join("sub/Isaac.py"), b"print(22)").unwrap();
    let cat2 = s.scan().unwrap();
    let f = cat2.files().find(|f| f.rel_path == "sub/Isaac.py").unwrap();
    assert_eq!(f.content_id, ContentId::from(blake3::hash(b"print(22)")));
    let hidden = Scanner::new(
        &[share.path().to_path_buf()],
        state.path(),
        ScanOptions {
            include_hidden: true,
            progress: None,
        },
    )
    .unwrap();
    assert_eq!(hidden.scan().unwrap().len(), 3);
}

fn paths(cat: &Catalog) -> Vec<String> {
    let mut paths: Vec<_> = cat.files().map(|f| f.rel_path.clone()).collect();
    paths.sort();
    paths
}

#[test]
fn symlinks_to_directories_are_not_followed_and_file_symlinks_read_their_target() {
    let t = tempfile::tempdir().unwrap();
    let share = t.path().join("share");
    let outside = t.path().join("outside");
    fs::create_dir_all(share.join("sub/deep")).unwrap();
    fs::create_dir_all(&outside).unwrap();
    fs::write(share.join("sub/deep/a.txt"), b"a").unwrap();
    fs::write(outside.join("secret.txt"), b"secret").unwrap();
    let link = |to: &Path, at: &str| std::os::unix::fs::symlink(to, share.join(at)).unwrap();
    link(&outside, "out");
    link(&share.join("sub"), "alias");
    link(&share, "sub/top");
    link(Path::new(".."), "sub/deep/up");
    link(Path::new("deep/a.txt"), "sub/a-link");
    let s = Scanner::new(
        std::slice::from_ref(&share),
        &t.path().join("state"),
        ScanOptions::default(),
    )
    .unwrap();
    let cat = s.scan().unwrap();
    assert_eq!(paths(&cat), ["sub/a-link", "sub/deep/a.txt"]);
    // Both name the same bytes, opened beneath the share where the target really is.
    for f in cat.files() {
        assert_eq!(f.beneath, Path::new("sub/deep/a.txt"));
        assert_eq!(f.abs_path(), share.join("sub/deep/a.txt"));
    }
}

#[test]
fn a_shared_directory_replaced_after_start_is_still_the_one_scanned() {
    let t = tempfile::tempdir().unwrap();
    let share = t.path().join("share");
    fs::create_dir_all(&share).unwrap();
    fs::write(share.join("mine.txt"), b"mine").unwrap();
    let s = Scanner::new(
        std::slice::from_ref(&share),
        &t.path().join("state"),
        ScanOptions::default(),
    )
    .unwrap();
    assert_eq!(paths(&s.scan().unwrap()), ["mine.txt"]);
    // The path now names another directory (here a symlink to one holding other files).
    fs::rename(&share, t.path().join("moved")).unwrap();
    let other = t.path().join("other");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("theirs.txt"), b"theirs").unwrap();
    std::os::unix::fs::symlink(&other, &share).unwrap();
    let cat = s.scan().unwrap();
    assert_eq!(paths(&cat), ["mine.txt"]);
    let f = cat.files().next().unwrap();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut f.root.open_file(&f.beneath).unwrap(), &mut bytes).unwrap();
    assert_eq!(bytes, b"mine");
}

/// A directory of many sub-directories scans with few descriptors (one per directory on
/// the way down, not one per directory waiting its turn): in a child process of this test
/// binary whose descriptor limit is 64.
#[test]
fn many_sub_directories_scan_within_a_small_descriptor_limit() {
    const DIRS: usize = 300;
    if std::env::var_os("PEERSHARE_SCAN_FD_CHILD").is_some() {
        let t = tempfile::tempdir().unwrap();
        let share = t.path().join("share");
        for i in 0..DIRS {
            fs::create_dir_all(share.join(format!("d{i}/e"))).unwrap();
            fs::write(share.join(format!("d{i}/e/f.txt")), i.to_string()).unwrap();
        }
        let s = Scanner::new(
            std::slice::from_ref(&share),
            &t.path().join("state"),
            ScanOptions::default(),
        )
        .unwrap();
        assert_eq!(s.scan().unwrap().len(), DIRS);
        return;
    }
    let name = "peer::scan::tests::many_sub_directories_scan_within_a_small_descriptor_limit";
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 64 && exec \"$0\" --exact \"$1\" --test-threads 1")
        .arg(std::env::current_exe().unwrap())
        .arg(name)
        .env("PEERSHARE_SCAN_FD_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn hashing_progress_is_told_in_steps_and_once_complete() {
    let t = tempfile::tempdir().unwrap();
    let share = t.path().join("share");
    fs::create_dir_all(&share).unwrap();
    let big = HASH_PROGRESS_STEP as usize * 2 + 5;
    fs::write(share.join("big.bin"), vec![7u8; big]).unwrap();
    fs::write(share.join("small.txt"), b"x").unwrap();
    let told = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = told.clone();
    let options = ScanOptions {
        include_hidden: false,
        progress: Some(Arc::new(move |st: crate::peer::HashStatus| {
            sink.lock().unwrap().push(st)
        })),
    };
    let state = t.path().join("state");
    let s = Scanner::new(std::slice::from_ref(&share), &state, options.clone()).unwrap();
    assert_eq!(s.scan().unwrap().len(), 2);
    let total = big as u64 + 1;
    let seen = told.lock().unwrap().clone();
    let end = crate::peer::HashStatus {
        files_done: 2,
        files: 2,
        bytes_done: total,
        bytes: total,
    };
    assert_eq!(seen.last(), Some(&end), "{seen:?}");
    assert_eq!(seen.iter().filter(|s| s.finished()).count(), 1, "{seen:?}");
    // Two steps of bytes, a file done (the other is the end), and the end.
    assert!(seen.len() >= 4, "{seen:?}");
    assert!(seen.iter().any(|s| s.files_done == 1), "{seen:?}");
    assert!(
        seen.iter().all(|s| s.bytes == total
            && s.bytes_done <= total
            && s.files == 2
            && s.files_done <= 2)
    );
    // Nothing to hash the second time (the ids are cached): nothing told.
    told.lock().unwrap().clear();
    let again = Scanner::new(std::slice::from_ref(&share), &state, options).unwrap();
    assert_eq!(again.scan().unwrap().len(), 2);
    assert!(told.lock().unwrap().is_empty());
}
