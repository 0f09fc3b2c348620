//! Starting the write-back of bytes just written, so the disk works while more arrive and the sync that makes them durable finds little left.

use std::fs::File;
#[cfg(target_os = "linux")]
use std::os::unix::io::AsRawFd;

/// Starts writing `len` bytes of `file` from `offset` to the disk, without waiting for them.
/// An optimization only: should it fail, the pages are left to the sync that follows.
pub fn start_writeback(file: &File, offset: u64, len: usize) {
    #[cfg(target_os = "linux")]
    // SAFETY: sync_file_range on an open descriptor; it only schedules the writing of pages.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}
