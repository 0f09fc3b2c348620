//! Tests of the SIGBUS-safe mappings: bytes as in the file, truncation seen as a change, foreign faults still fatal.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

const PAGE: u64 = 4096;

fn file_of(dir: &tempfile::TempDir, name: &str, len: usize) -> (std::path::PathBuf, Vec<u8>) {
    let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 253) as u8).collect();
    let path = dir.path().join(name);
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

fn open_rw(path: &std::path::Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap()
}

#[test]
fn mapped_bytes_are_the_files_and_slots_are_reused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, bytes) = file_of(&dir, "f", 3 * PAGE as usize + 17);
    let file = File::open(&path).unwrap();
    // More mappings one after the other than there are slots: each one frees its slot.
    for _ in 0..SLOTS + 10 {
        let copy = with_mapped(&file, bytes.len() as u64, |d| d.to_vec()).unwrap();
        assert_eq!(copy, bytes);
    }
    let head = with_mapped(&file, 5, |d| d.to_vec()).unwrap();
    assert_eq!(head, &bytes[..5]);
    assert!(matches!(
        with_mapped(&file, 0, |_| ()),
        Err(MapError::Unavailable(_))
    ));
}

#[test]
fn file_truncated_while_mapped_reads_as_changed() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..20u64 {
        let len = 64 * PAGE + round;
        let (path, _) = file_of(&dir, &format!("t{round}"), len as usize);
        let file = open_rw(&path);
        // Truncated inside the closure, after the mapping is made and before it is read:
        // every page past the new end raises SIGBUS when read.
        let r = with_mapped(&file, len, |d| {
            file.set_len(round * PAGE).unwrap();
            blake3::hash(d)
        });
        assert!(matches!(r, Err(MapError::Changed)), "round {round}: {r:?}");
        // The slot is free and clean again: the same file, now whole, maps fine.
        let len = round * PAGE;
        if len > 0 {
            let ok = with_mapped(&file, len, |d| d.len()).unwrap();
            assert_eq!(ok as u64, len);
        }
    }
}

#[test]
fn file_shorter_than_the_mapping_reads_as_changed() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = file_of(&dir, "short", PAGE as usize);
    let file = File::open(&path).unwrap();
    let r = with_mapped(&file, 8 * PAGE, |d| {
        d.iter().map(|&b| b as u64).sum::<u64>()
    });
    assert!(matches!(r, Err(MapError::Changed)), "{r:?}");
}

#[test]
fn file_truncated_from_another_thread_while_read_in_parallel() {
    use rayon::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    let len = 256 * PAGE as usize;
    for round in 0..20 {
        let (path, bytes) = file_of(&dir, &format!("p{round}"), len);
        let file = open_rw(&path);
        let r = std::thread::scope(|s| {
            let f = &file;
            s.spawn(move || {
                std::thread::sleep(std::time::Duration::from_micros(50 * round));
                f.set_len(PAGE * round).unwrap();
            });
            with_mapped(&file, len as u64, |d| {
                d.par_chunks(PAGE as usize)
                    .map(blake3::hash)
                    .collect::<Vec<_>>()
            })
        });
        // Either every page was read before the truncation, or the mapping faulted.
        match r {
            Ok(hashes) => {
                let expect: Vec<_> = bytes.chunks(PAGE as usize).map(blake3::hash).collect();
                assert_eq!(hashes, expect, "round {round}");
            }
            Err(MapError::Changed) => {}
            Err(e) => panic!("round {round}: {e}"),
        }
    }
}

const CHILD: &str = "PEERSHARE_TEST_FOREIGN_SIGBUS";

/// A SIGBUS outside our mappings still ends the process (as SIGBUS): the handler passes it
/// on. Run in a child process, this same test with `CHILD` set.
#[test]
fn sigbus_outside_our_mappings_still_ends_the_process() {
    let dir = tempfile::tempdir().unwrap();
    if std::env::var_os(CHILD).is_some() {
        foreign_fault(&dir);
        return;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "content::mapped::tests::sigbus_outside_our_mappings_still_ends_the_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Bounded: a handler that swallowed the fault would make the child fault forever.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the child did not end within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert!(stdout.contains("own fault handled"), "{stdout}");
    assert!(!stdout.contains("survived"), "{stdout}");
    assert_eq!(status.signal(), Some(libc::SIGBUS), "{status:?}");
}

fn foreign_fault(dir: &tempfile::TempDir) {
    // SAFETY: lowers this child's own core size limit so that its death leaves no core.
    unsafe {
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
    }
    // Our own mapping first: handled, and the handler is installed from here on.
    let (path, _) = file_of(dir, "own", 4 * PAGE as usize);
    let file = open_rw(&path);
    let r = with_mapped(&file, 4 * PAGE, |d| {
        file.set_len(0).unwrap();
        blake3::hash(d)
    });
    assert!(matches!(r, Err(MapError::Changed)));
    println!("own fault handled");
    // Then a mapping that is not registered: its fault is not ours to handle.
    let (path, _) = file_of(dir, "foreign", 4 * PAGE as usize);
    let file = open_rw(&path);
    // SAFETY: a new read-only mapping; read after truncation on purpose, to die of SIGBUS.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            4 * PAGE as usize,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        file.set_len(0).unwrap();
        std::ptr::read_volatile(p as *const u8);
    }
    println!("survived a foreign SIGBUS");
}
