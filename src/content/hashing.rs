//! Hashing a file into its content id and piece hashes, through a memory map or by reading, in parallel.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use blake3::hazmat::ChainingValue;
use rayon::prelude::*;
use tracing::debug;

use super::mapped::{self, MapError};
use super::tree::{PieceLayout, hash_piece, root_from_piece_hashes};
use super::{ContentId, PIECE_SIZE};

/// Files from this size on are hashed through a memory map, which saves copying them out of the
/// page cache; smaller ones are read. A mapping has a fixed cost (mmap, page faults, munmap with
/// its TLB shootdown) that outweighs the copy it saves for files below about 200 KiB.
const MAP_MIN_SIZE: u64 = PIECE_SIZE;

/// Hashes a file: its content id and its piece hashes (empty for a single-piece file).
/// Pieces are hashed in parallel; `progress` is called with each piece's byte count.
///
/// Hashes the first `size` bytes. A file found shorter than that (it shrank since `size` was
/// taken) gives an error of kind [`io::ErrorKind::UnexpectedEof`]. A file written in place while
/// it is hashed may give a hash of neither version: the caller must check that its size and
/// modification time did not change meanwhile.
pub fn hash_file(
    path: &Path,
    size: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> io::Result<(ContentId, Vec<ChainingValue>)> {
    // Non-blocking: should the path have become a FIFO since it was listed, opening it must
    // not wait for a writer (reads of a regular file ignore the flag).
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    hash_open_file(&file, size, progress)
}

/// [`hash_file`] of a file already open (a sharing peer opens what it hashes beneath its
/// shared directory's handle, never by path).
pub fn hash_open_file(
    file: &File,
    size: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> io::Result<(ContentId, Vec<ChainingValue>)> {
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file any more",
        ));
    }
    if size >= MAP_MIN_SIZE {
        match hash_mapped(file, size, progress) {
            Ok(hashed) => return Ok(hashed),
            Err(MapError::Changed) => return Err(shrank()),
            Err(MapError::Unavailable(e)) => {
                debug!("reading a file of {size} bytes instead of mapping it: {e}");
            }
        }
    }
    hash_read(file, size, progress)
}

/// The error of a file found shorter than the size it was to be hashed at.
fn shrank() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the file shrank while it was hashed",
    )
}

/// [`hash_file`] through a memory map of the file.
fn hash_mapped(
    file: &File,
    size: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(ContentId, Vec<ChainingValue>), MapError> {
    let hashed = mapped::with_mapped(file, size, |data| hash_bytes(data, progress))?;
    // Truncated to a size inside a page, the file reads as zeros up to the end of that page
    // without a fault: the size after hashing tells.
    match file.metadata() {
        Ok(m) if m.len() >= size => Ok(hashed),
        Ok(_) => Err(MapError::Changed),
        Err(e) => Err(MapError::Unavailable(e)),
    }
}

/// The content id and piece hashes of bytes in memory.
fn hash_bytes(data: &[u8], progress: &(dyn Fn(u64) + Sync)) -> (ContentId, Vec<ChainingValue>) {
    if data.len() as u64 <= PIECE_SIZE {
        progress(data.len() as u64);
        return (blake3::hash(data).into(), Vec::new());
    }
    let cvs: Vec<ChainingValue> = data
        .par_chunks(PIECE_SIZE as usize)
        .enumerate()
        .map(|(i, piece)| {
            let cv = hash_piece(i as u64, piece);
            progress(piece.len() as u64);
            cv
        })
        .collect();
    let id = root_from_piece_hashes(&cvs).unwrap_or_else(|| blake3::hash(data).into());
    (id, cvs)
}

/// [`hash_file`] by reading each piece into memory.
fn hash_read(
    file: &File,
    size: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> io::Result<(ContentId, Vec<ChainingValue>)> {
    let layout = PieceLayout::new(size);
    let read_piece = |index: u64| -> io::Result<Vec<u8>> {
        let len = layout.piece_len(index) as usize;
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, layout.piece_offset(index))
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => shrank(),
                _ => e,
            })?;
        progress(len as u64);
        Ok(buf)
    };
    if layout.hash_count() == 0 {
        let data = read_piece(0)?;
        return Ok((blake3::hash(&data).into(), Vec::new()));
    }
    let cvs = (0..layout.piece_count())
        .into_par_iter()
        .map(|i| read_piece(i).map(|data| hash_piece(i, &data)))
        .collect::<io::Result<Vec<_>>>()?;
    let id = root_from_piece_hashes(&cvs).ok_or_else(|| io::Error::other("piece count"))?;
    Ok((id, cvs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::{PieceError, PieceVerifier};

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn sizes() -> Vec<u64> {
        let p = PIECE_SIZE;
        vec![
            0,
            1,
            1024,
            p - 1,
            p,
            p + 1,
            2 * p,
            3 * p - 1,
            3 * p + 5,
            8 * p + 1,
            13 * p + 777,
        ]
    }

    #[test]
    fn piece_hashes_add_up_to_blake3_of_the_whole() {
        let dir = tempfile::tempdir().unwrap();
        for size in sizes() {
            let bytes = data(size as usize);
            let path = dir.path().join(format!("f{size}"));
            std::fs::write(&path, &bytes).unwrap();
            let (id, cvs) = hash_file(&path, size, &|_| {}).unwrap();
            assert_eq!(id, ContentId::from(blake3::hash(&bytes)), "size {size}");
            assert_eq!(cvs.len() as u64, PieceLayout::new(size).hash_count());
            let flat: Vec<u8> = cvs.iter().flatten().copied().collect();
            let v = PieceVerifier::new(id, size, &flat).unwrap();
            let layout = v.layout();
            for i in 0..layout.piece_count() {
                let start = layout.piece_offset(i) as usize;
                let piece = &bytes[start..start + layout.piece_len(i) as usize];
                v.verify(i, piece).unwrap();
                if !piece.is_empty() {
                    let mut bad = piece.to_vec();
                    bad[piece.len() / 2] ^= 1;
                    assert_eq!(v.verify(i, &bad), Err(PieceError::Corrupt { index: i }));
                }
            }
            assert!(v.verify(layout.piece_count(), &[]).is_err());
        }
    }

    #[test]
    fn mapped_and_read_hashes_agree() {
        let dir = tempfile::tempdir().unwrap();
        for size in sizes() {
            let bytes = data(size as usize);
            let path = dir.path().join(format!("f{size}"));
            std::fs::write(&path, &bytes).unwrap();
            let file = File::open(&path).unwrap();
            let read = hash_read(&file, size, &|_| {}).unwrap();
            assert_eq!(read.0, ContentId::from(blake3::hash(&bytes)), "size {size}");
            if size > 0 {
                let mapped = hash_mapped(&file, size, &|_| {}).unwrap();
                assert_eq!(mapped, read, "size {size}");
            }
            assert_eq!(
                hash_file(&path, size, &|_| {}).unwrap(),
                read,
                "size {size}"
            );
        }
    }

    #[test]
    fn a_path_turned_into_a_fifo_is_refused_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fifo");
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = hash_file(&path, 10, &|_| {}).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    }

    #[test]
    fn file_shorter_than_its_size_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = PIECE_SIZE;
        // (actual size, size hashed at): read and mapped; ends on and inside a page.
        for (actual, claimed) in [(10, 20), (p, 2 * p), (3 * p, 8 * p), (3 * p + 100, 4 * p)] {
            let path = dir.path().join(format!("f{actual}"));
            std::fs::write(&path, data(actual as usize)).unwrap();
            let e = hash_file(&path, claimed, &|_| {}).unwrap_err();
            assert_eq!(
                e.kind(),
                io::ErrorKind::UnexpectedEof,
                "{actual} {claimed}: {e}"
            );
        }
    }

    /// Files truncated from another thread at random moments while hashed: never a crash, and
    /// either the right hash or an error.
    #[test]
    fn file_truncated_while_hashed_is_an_error_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let size = 16 * PIECE_SIZE;
        let bytes = data(size as usize);
        let whole = ContentId::from(blake3::hash(&bytes));
        let mut errors = 0;
        for round in 0..40u64 {
            let path = dir.path().join(format!("t{round}"));
            std::fs::write(&path, &bytes).unwrap();
            let r = std::thread::scope(|s| {
                s.spawn(|| {
                    std::thread::sleep(std::time::Duration::from_micros(round * 37 % 1500));
                    // New sizes on and off page boundaries.
                    let to = (round * 12_345) % size;
                    File::options()
                        .write(true)
                        .open(&path)
                        .and_then(|f| f.set_len(to))
                        .unwrap();
                });
                hash_file(&path, size, &|_| {})
            });
            match r {
                Ok((id, _)) => assert_eq!(id, whole, "round {round}"),
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "round {round}: {e}");
                    errors += 1;
                }
            }
        }
        eprintln!("{errors} of 40 hashes saw the truncation");
    }
}
