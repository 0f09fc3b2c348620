//! `BatchWriter`: many small verified files made durable and named together, one sync per batch.
//!
//! Writing small files one by one costs a sync, a directory sync and two directory updates
//! each, and parallel writers spin on the directory's lock. One thread here takes every file
//! queued so far, writes each into an unnamed file in its target directory (`O_TMPFILE`; a
//! hidden `.<id>.peershare-part` where the filesystem cannot), syncs the filesystem once, then
//! links each under its final name (never replacing anything) and syncs each directory once.
//! A file therefore appears under its final name only with its bytes on disk, and a crash
//! leaves no visible trace of files not yet named.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::names::{place, rename_noreplace};
use super::writeback::start_writeback;

/// Files taken into one batch at most.
const MAX_BATCH: usize = 256;
/// Directories a batch syncs one by one; past this, one sync of their filesystem instead.
const FEW_DIRS: usize = 4;
/// Files waiting for the writer at most (beyond it, submitting waits).
const QUEUE: usize = 1024;

struct Job {
    dir: PathBuf,
    /// The hidden name used where unnamed files are not supported.
    temp: PathBuf,
    name: String,
    data: Bytes,
    done: oneshot::Sender<io::Result<PathBuf>>,
}

/// A file written but not yet named.
enum Staged {
    Unnamed(File),
    Hidden(File, PathBuf),
}

impl Staged {
    fn file(&self) -> &File {
        match self {
            Staged::Unnamed(f) | Staged::Hidden(f, _) => f,
        }
    }
}

/// The writer thread's handle; the thread ends when the last handle is dropped.
#[derive(Clone)]
pub struct BatchWriter {
    jobs: mpsc::Sender<Job>,
}

impl BatchWriter {
    /// Starts `threads` writer threads (each takes its own batches; file system work on
    /// different files proceeds in parallel).
    pub fn spawn(threads: usize) -> io::Result<BatchWriter> {
        let (jobs, rx) = mpsc::channel(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name("peershare-writer".into())
                .spawn(move || run(&rx))?;
        }
        Ok(BatchWriter { jobs })
    }

    /// Writes `data` durably as `dir/name` (sanitized, numbered if taken); `temp` is the hidden
    /// name to use if the filesystem has no unnamed files. Returns the final path.
    pub async fn write(
        &self,
        dir: &Path,
        temp: PathBuf,
        name: &str,
        data: Bytes,
    ) -> io::Result<PathBuf> {
        let (done, result) = oneshot::channel();
        let job = Job {
            dir: dir.to_path_buf(),
            temp,
            name: name.to_string(),
            data,
            done,
        };
        let gone = || io::Error::other("the writer thread stopped");
        self.jobs.send(job).await.map_err(|_| gone())?;
        result.await.map_err(|_| gone())?
    }
}

fn run(rx: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        let batch = {
            let mut rx = rx.lock().unwrap_or_else(|p| p.into_inner());
            let Some(first) = rx.blocking_recv() else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            batch
        };
        write_batch(batch);
    }
}

fn write_batch(batch: Vec<Job>) {
    let mut staged: Vec<(Job, Staged)> = Vec::with_capacity(batch.len());
    let mut made: HashSet<PathBuf> = HashSet::new();
    for job in batch {
        let dir_ready = match made.contains(&job.dir) {
            true => Ok(()),
            false => std::fs::create_dir_all(&job.dir).map(|()| {
                made.insert(job.dir.clone());
            }),
        };
        match dir_ready.and_then(|()| stage(&job)) {
            Ok(s) => staged.push((job, s)),
            Err(e) => {
                let _ = job.done.send(Err(e));
            }
        }
    }
    // Every staged file's bytes are on disk before any is named: one sync of each filesystem
    // where that is enough (however many directories of it the batch writes to: a folder's
    // files go to many), else each file on its own.
    let mut whole_fs: HashMap<u64, bool> = HashMap::new();
    let mut dir_fs: HashMap<PathBuf, u64> = HashMap::new();
    let mut sync_error: Option<io::Error> = None;
    for (job, s) in &staged {
        let dev = match s.file().metadata() {
            Ok(m) => m.dev(),
            Err(e) => {
                sync_error = Some(e);
                break;
            }
        };
        dir_fs.insert(job.dir.clone(), dev);
        let synced = match whole_fs.get(&dev) {
            Some(true) => Ok(()),
            Some(false) => s.file().sync_data(),
            None if syncfs_is_enough(s.file()) => {
                whole_fs.insert(dev, true);
                syncfs(s.file())
            }
            None => {
                whole_fs.insert(dev, false);
                // Each file is synced on its own: all of them start writing back first, so
                // the syncs find little left and the disk sees them all at once.
                for (other, f) in &staged {
                    start_writeback(f.file(), 0, other.data.len());
                }
                s.file().sync_data()
            }
        };
        if let Err(e) = synced {
            sync_error = Some(e);
            break;
        }
    }
    let mut named_dirs: HashSet<PathBuf> = HashSet::new();
    let mut results = Vec::with_capacity(staged.len());
    for (job, s) in staged {
        let r = match &sync_error {
            Some(e) => Err(io::Error::new(e.kind(), format!("syncing: {e}"))),
            None => name_file(&job, &s),
        };
        if r.is_err()
            && let Staged::Hidden(_, temp) = &s
        {
            let _ = std::fs::remove_file(temp);
        }
        if r.is_ok() {
            named_dirs.insert(job.dir.clone());
        }
        results.push((job.done, r));
    }
    // The new names are durable once their directories are synced: directory by directory,
    // or, for a batch named in more than a few directories (a folder's files), by one more
    // sync of each filesystem where that is enough.
    let mut dir_error: Option<io::Error> = None;
    let mut fs_synced: HashSet<u64> = HashSet::new();
    let many = named_dirs.len() > FEW_DIRS;
    for dir in &named_dirs {
        let dev = dir_fs.get(dir).copied();
        let whole = many && dev.is_some_and(|d| whole_fs.get(&d) == Some(&true));
        let r = match (whole, dev) {
            (true, Some(d)) if fs_synced.contains(&d) => Ok(()),
            (true, Some(d)) => File::open(dir).and_then(|f| {
                fs_synced.insert(d);
                syncfs(&f)
            }),
            _ => File::open(dir).and_then(|d| d.sync_all()),
        };
        if let Err(e) = r {
            dir_error = Some(e);
        }
    }
    for (done, r) in results {
        let r = match (r, &dir_error) {
            (Ok(_), Some(e)) => Err(io::Error::new(
                e.kind(),
                format!("syncing the directory: {e}"),
            )),
            (r, _) => r,
        };
        let _ = done.send(r);
    }
}

/// `syncfs` of the filesystem `f` is on.
fn syncfs(f: &File) -> io::Result<()> {
    // SAFETY: syncfs on a valid, open descriptor.
    match unsafe { libc::syncfs(f.as_raw_fd()) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Whether one `syncfs` makes a file's bytes durable and reports a failure to write them:
/// Linux 5.8 or later (before, `syncfs` reported no write-back error) on a local filesystem
/// whose `syncfs` writes everything back (ext4, XFS, Btrfs, F2FS). Elsewhere (FUSE, network
/// filesystems, older kernels) each file is synced on its own.
fn syncfs_is_enough(f: &File) -> bool {
    const LOCAL: [i64; 4] = [0xEF53, 0x5846_5342, 0x9123_683E, 0xF2F5_2010];
    static RECENT_KERNEL: OnceLock<bool> = OnceLock::new();
    let recent = *RECENT_KERNEL.get_or_init(|| {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut parts = release.trim().split(['.', '-']);
        let mut next = || {
            parts
                .next()
                .and_then(|p| p.parse::<u32>().ok())
                .unwrap_or(0)
        };
        (next(), next()) >= (5, 8)
    });
    // SAFETY: fstatfs fills a zeroed statfs from a valid, open descriptor.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let local = unsafe { libc::fstatfs(f.as_raw_fd(), &mut st) } == 0
        && LOCAL.contains(&(st.f_type as i64));
    recent && local
}

/// Writes a job's bytes into an unnamed file in its directory (or its hidden name).
fn stage(job: &Job) -> io::Result<Staged> {
    let unnamed = OpenOptions::new()
        .write(true)
        .mode(0o644)
        .custom_flags(libc::O_TMPFILE)
        .open(&job.dir);
    let staged = match unnamed {
        Ok(f) => Staged::Unnamed(f),
        // Filesystems (and kernels) without unnamed files say so in several ways.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP) | Some(libc::EISDIR) | Some(libc::EINVAL)
            ) =>
        {
            Staged::Hidden(create_hidden(&job.temp)?, job.temp.clone())
        }
        Err(e) => return Err(e),
    };
    let mut f = staged.file();
    if let Err(e) = f.write_all(&job.data) {
        if let Staged::Hidden(_, temp) = &staged {
            let _ = std::fs::remove_file(temp);
        }
        return Err(e);
    }
    // No write-back is started as each file is written: where one `syncfs` makes the batch
    // durable it writes them all back together, in requests merged across files, instead of
    // one request (and on a virtual disk an exit to the host) per file.
    Ok(staged)
}

/// Gives a staged file its final name, never replacing an existing file.
fn name_file(job: &Job, s: &Staged) -> io::Result<PathBuf> {
    match s {
        Staged::Hidden(_, temp) => place(&job.dir, &job.name, |to| rename_noreplace(temp, to)),
        Staged::Unnamed(f) => match place(&job.dir, &job.name, |to| link_unnamed(f, to)) {
            // No /proc and no right to link a descriptor: the hidden name instead.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::EPERM)) => {
                write_hidden(job)
            }
            r => r,
        },
    }
}

/// Creates the hidden partial file (never an existing one, never through a symlink).
fn create_hidden(temp: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(temp)
}

/// Writes a job's bytes under its hidden name, syncs them, and renames them into place.
fn write_hidden(job: &Job) -> io::Result<PathBuf> {
    let mut f = create_hidden(&job.temp)?;
    let r = f
        .write_all(&job.data)
        .and_then(|()| f.sync_data())
        .and_then(|()| place(&job.dir, &job.name, |to| rename_noreplace(&job.temp, to)));
    if r.is_err() {
        let _ = std::fs::remove_file(&job.temp);
    }
    r
}

/// Links an `O_TMPFILE` file at `to` (fails with `AlreadyExists` if `to` exists).
fn link_unnamed(f: &File, to: &Path) -> io::Result<()> {
    let to = CString::new(to.as_os_str().as_bytes())?;
    let proc_path = CString::new(format!("/proc/self/fd/{}", f.as_raw_fd()))?;
    // SAFETY: valid NUL-terminated paths; AT_FDCWD resolves `to` as given.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc_path.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOENT) {
        return Err(err);
    }
    // No /proc: link the descriptor itself (needs CAP_DAC_READ_SEARCH).
    let empty = CString::default();
    // SAFETY: a valid descriptor and NUL-terminated paths.
    let r = unsafe {
        libc::linkat(
            f.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn files_appear_whole_under_free_names() {
        let t = tempfile::tempdir().unwrap();
        let w = BatchWriter::spawn(2).unwrap();
        std::fs::write(t.path().join("a.txt"), b"already here").unwrap();
        let mut tasks = Vec::new();
        for n in 0..40u8 {
            let (w, dir) = (w.clone(), t.path().to_path_buf());
            tasks.push(tokio::spawn(async move {
                let temp = dir.join(format!(".{n}.peershare-part"));
                let data = Bytes::from(vec![n; n as usize * 100]);
                (n, w.write(&dir, temp, "a.txt", data).await)
            }));
        }
        let mut names = HashSet::new();
        for t in tasks {
            let (n, r) = t.await.unwrap();
            let path = r.unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), vec![n; n as usize * 100]);
            assert!(names.insert(path));
        }
        assert_eq!(
            std::fs::read(t.path().join("a.txt")).unwrap(),
            b"already here",
            "nothing replaced"
        );
        let listed = std::fs::read_dir(t.path()).unwrap().count();
        assert_eq!(listed, 41, "40 new files, no leftovers");
    }

    #[test]
    fn the_hidden_name_path_never_replaces_and_leaves_nothing_behind() {
        let t = tempfile::tempdir().unwrap();
        let job = |data: &'static [u8]| {
            let (done, _) = oneshot::channel();
            Job {
                dir: t.path().to_path_buf(),
                temp: t.path().join(".x.peershare-part"),
                name: "../f.txt".into(),
                data: Bytes::from_static(data),
                done,
            }
        };
        let first = write_hidden(&job(b"one")).unwrap();
        let second = write_hidden(&job(b"two")).unwrap();
        assert_eq!(first, t.path().join("f.txt"), "the name is sanitized");
        assert_eq!(second, t.path().join("f (1).txt"));
        assert_eq!(std::fs::read(&first).unwrap(), b"one");
        assert_eq!(std::fs::read(&second).unwrap(), b"two");
        std::fs::write(t.path().join(".x.peershare-part"), b"someone else's").unwrap();
        assert!(
            write_hidden(&job(b"three")).is_err(),
            "an existing partial is not taken over"
        );
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 3);
    }

    #[tokio::test]
    async fn a_directory_that_cannot_be_made_fails_only_its_file() {
        let t = tempfile::tempdir().unwrap();
        let w = BatchWriter::spawn(2).unwrap();
        let blocker = t.path().join("not-a-dir");
        std::fs::write(&blocker, b"x").unwrap();
        let sub = blocker.join("sub");
        let bad = w.write(&sub, blocker.join(".t"), "f", Bytes::from_static(b"1"));
        let good = w.write(t.path(), t.path().join(".u"), "f", Bytes::from_static(b"2"));
        let (bad, good) = tokio::join!(bad, good);
        assert!(bad.is_err());
        assert_eq!(std::fs::read(good.unwrap()).unwrap(), b"2");
    }
}
