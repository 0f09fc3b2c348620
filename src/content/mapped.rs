//! Read-only memory maps of files that may shrink while mapped: a fault past the new end of the file turns the mapping into zeros and marks it changed, instead of killing the process.
//!
//! Reading a page of a file mapping that lies past the end of the file raises SIGBUS, whose
//! default action ends the process. The files a peer shares are the user's and change at any
//! time, so a file truncated while it is being hashed must not take the peer down. This module
//! makes that case an ordinary error:
//!
//! - Every mapping made by [`with_mapped`] is registered, while it is live, in a fixed table of
//!   slots ([`TABLE`]) that a signal handler can read without locks or allocation.
//! - A process-wide SIGBUS handler ([`on_sigbus`], installed once, the first time a file is
//!   mapped) looks up the faulting address. If it lies in a registered mapping, the handler maps
//!   anonymous zero-filled memory over that whole mapping (`MAP_FIXED`, one `mmap` system call,
//!   which replaces the pages atomically), marks the slot faulted and returns: the faulting read
//!   runs again and reads zeros, and so does every later read of that mapping. Any other SIGBUS
//!   (not a fault, or outside our mappings) goes to the handler installed before ours (Rust's
//!   own, which reports stack overflows) or to the default action, as if ours were not there.
//!   (A SIGBUS handler installed later, over ours, would have to chain to ours in turn; peershare
//!   installs no other.)
//! - [`with_mapped`] checks the mark after the caller's closure has returned and then reports
//!   [`MapError::Changed`] instead of the closure's result, which was computed over zeros.
//!
//! As with any file mapping, the bytes may also change while mapped if the file is written in
//! place (a write that does not shrink it): a reader then sees a mix of old and new bytes. Plain
//! bytes have no invalid values, and the caller must treat the result as provisional: the scanner
//! hashes, then drops the file if its size or modification time changed meanwhile.

use std::cell::UnsafeCell;
use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

/// Why [`with_mapped`] gave no result.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// The file could not be mapped (or the handler not installed, or all slots are in use);
    /// the caller should read it instead.
    #[error("cannot map the file: {0}")]
    Unavailable(io::Error),
    /// Part of the mapping was past the end of the file when read: the file shrank.
    #[error("the file shrank while it was mapped")]
    Changed,
}

/// How many mappings can be live at once; a mapping beyond that is refused (the caller reads).
const SLOTS: usize = 256;

/// One live mapping, as seen by the signal handler.
///
/// `start` and `len` are written under a sequence lock: `seq` is odd while they change, so the
/// handler, which cannot wait, skips a slot that changes under it. A mapping that faults is in a
/// slot that does not change: it is registered before the closure that reads it is called and
/// removed after the closure returns.
struct Slot {
    /// Owned by one `Mapping` from before it is registered until after it is removed.
    claimed: AtomicBool,
    seq: AtomicUsize,
    start: AtomicUsize,
    /// 0: no mapping.
    len: AtomicUsize,
    /// Set by the handler when it replaced the mapping with zeros.
    faulted: AtomicBool,
}

impl Slot {
    const fn new() -> Self {
        Slot {
            claimed: AtomicBool::new(false),
            seq: AtomicUsize::new(0),
            start: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            faulted: AtomicBool::new(false),
        }
    }

    /// Publishes (or with `len` 0 withdraws) a mapping; only the slot's owner calls it.
    fn publish(&self, start: usize, len: usize) {
        self.seq.fetch_add(1, SeqCst);
        self.start.store(start, SeqCst);
        self.len.store(len, SeqCst);
        self.faulted.store(false, SeqCst);
        self.seq.fetch_add(1, SeqCst);
    }

    /// The mapping in this slot if it contains `addr` (async-signal-safe: atomics only).
    fn containing(&self, addr: usize) -> Option<(usize, usize)> {
        let seq = self.seq.load(SeqCst);
        if seq % 2 == 1 {
            return None;
        }
        let (start, len) = (self.start.load(SeqCst), self.len.load(SeqCst));
        if self.seq.load(SeqCst) != seq || len == 0 || addr.wrapping_sub(start) >= len {
            return None;
        }
        Some((start, len))
    }
}

static TABLE: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];

/// The SIGBUS disposition before ours, written once before our handler is installed.
struct Previous(UnsafeCell<MaybeUninit<libc::sigaction>>);
// SAFETY: written only inside `INSTALL.call_once`, before `PREVIOUS_SET` is set and before our
// handler is installed; only read (by the handler) after `PREVIOUS_SET` was seen set.
unsafe impl Sync for Previous {}
static PREVIOUS: Previous = Previous(UnsafeCell::new(MaybeUninit::uninit()));
static PREVIOUS_SET: AtomicBool = AtomicBool::new(false);
static INSTALL: Once = Once::new();
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Installs [`on_sigbus`] once per process; false if that failed (then nothing is mapped).
fn install_handler() -> bool {
    INSTALL.call_once(|| {
        // SAFETY: sigaction with valid pointers; `PREVIOUS` is written before it is marked set,
        // and no other thread writes it (we are inside call_once).
        unsafe {
            let prev = (*PREVIOUS.0.get()).as_mut_ptr();
            if libc::sigaction(libc::SIGBUS, std::ptr::null(), prev) != 0 {
                return;
            }
            PREVIOUS_SET.store(true, SeqCst);
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigbus as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) == 0 {
                INSTALLED.store(true, SeqCst);
            }
        }
    });
    INSTALLED.load(SeqCst)
}

/// The SIGBUS handler. Async-signal-safe: it reads atomics, makes raw system calls and calls the
/// previous handler; it takes no lock and does not allocate.
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: with SA_SIGINFO the kernel passes a valid siginfo_t; si_addr is meaningful for
    // the kernel-generated BUS_ADRERR checked first (a signal sent by kill has si_code <= 0).
    let addr = unsafe {
        if (*info).si_code == libc::BUS_ADRERR {
            Some((*info).si_addr() as usize)
        } else {
            None
        }
    };
    if let Some((slot, start, len)) = addr.and_then(|a| {
        TABLE
            .iter()
            .find_map(|s| s.containing(a).map(|(st, l)| (s, st, l)))
    }) {
        // SAFETY: [start, start + len) is one of our mappings, live until its owner removes it
        // from the table, which it does only after every read of it has returned; this thread
        // is inside such a read. Other live mappings are disjoint from it, so the address
        // cannot match a slot other than its own. MAP_FIXED replaces exactly that range, in
        // one step, by readable zero-filled memory: concurrent readers of it see file bytes or
        // zeros, never an unmapped hole, and the owner's munmap later removes it as usual.
        // errno is saved and restored around the raw system call.
        let replaced = unsafe {
            let errno = *libc::__errno_location();
            let r = libc::syscall(
                libc::SYS_mmap,
                start,
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1 as libc::c_long,
                0 as libc::c_long,
            );
            *libc::__errno_location() = errno;
            r as usize == start
        };
        if replaced {
            slot.faulted.store(true, SeqCst);
            return;
        }
        // Out of memory for the zero pages: nothing sound is left to do but the default action.
    }
    // SAFETY: `sig`, `info` and `ctx` are passed on unchanged to the previous handler.
    unsafe { chain(sig, info, ctx) }
}

/// Hands a SIGBUS that is not ours to the disposition that was in place before ours.
///
/// # Safety
/// Called only from [`on_sigbus`], with the arguments it received.
unsafe fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: `PREVIOUS` was written before `PREVIOUS_SET` was set and is never written again.
    let prev = PREVIOUS_SET
        .load(SeqCst)
        .then(|| unsafe { (*PREVIOUS.0.get()).assume_init_ref() });
    let handler = prev.map_or(libc::SIG_DFL, |p| p.sa_sigaction);
    // SAFETY: sigaction, raise and the previous handler are async-signal-safe; a handler
    // installed with SA_SIGINFO takes (sig, info, ctx), any other takes (sig).
    unsafe {
        if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
            let fault = (*info).si_code > 0;
            if handler == libc::SIG_IGN && !fault {
                return; // a sent SIGBUS that was ignored stays ignored
            }
            // Default action: restore it and re-raise. SIGBUS is blocked while this handler
            // runs, so the pending signal ends the process as soon as it returns.
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut());
            libc::raise(libc::SIGBUS);
        } else if prev.is_some_and(|p| p.sa_flags & libc::SA_SIGINFO != 0) {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                std::mem::transmute(handler);
            f(sig, info, ctx);
        } else {
            let f: extern "C" fn(libc::c_int) = std::mem::transmute(handler);
            f(sig);
        }
    }
}

/// A registered read-only mapping of the first `len` bytes of a file; removed and unmapped on drop.
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
    slot: &'static Slot,
}

impl Mapping {
    fn new(file: &File, len: usize) -> Result<Mapping, MapError> {
        let busy = || MapError::Unavailable(io::Error::other("no free mapping slot"));
        if !install_handler() {
            return Err(MapError::Unavailable(io::Error::other(
                "cannot install the SIGBUS handler",
            )));
        }
        let slot = TABLE
            .iter()
            .find(|s| {
                s.claimed
                    .compare_exchange(false, true, SeqCst, SeqCst)
                    .is_ok()
            })
            .ok_or_else(busy)?;
        // SAFETY: a new shared read-only mapping of an open descriptor, at an address the kernel
        // chooses (no existing memory is affected). It is unmapped in Drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            slot.claimed.store(false, SeqCst);
            return Err(MapError::Unavailable(e));
        }
        slot.publish(ptr as usize, len);
        Ok(Mapping { ptr, len, slot })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `len` readable bytes at `ptr` stay mapped while `self` lives (after a fault,
        // as zeros). u8 has no invalid values; concurrent changes of the file are the caller's
        // to detect (see the module documentation).
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // Withdrawn from the table before unmapping: the handler never acts on an address
        // range that is no longer ours.
        self.slot.publish(0, 0);
        // SAFETY: unmaps exactly the range mapped in `new`; no reference from `bytes` outlives
        // `self`.
        unsafe { libc::munmap(self.ptr, self.len) };
        self.slot.claimed.store(false, SeqCst);
    }
}

/// Maps the first `len` bytes (`len` > 0) of `file` read-only and calls `f` with them.
///
/// If the file is shorter than `len`, or shrinks while `f` runs, `f` reads zeros where the file
/// ended and the result is [`MapError::Changed`] instead of `f`'s. `f` may read from several
/// threads (e.g. with rayon), but must not keep the bytes.
pub fn with_mapped<R>(file: &File, len: u64, f: impl FnOnce(&[u8]) -> R) -> Result<R, MapError> {
    let len = usize::try_from(len)
        .ok()
        .filter(|&l| l > 0)
        .ok_or_else(|| MapError::Unavailable(io::Error::from(io::ErrorKind::InvalidInput)))?;
    let map = Mapping::new(file, len)?;
    let r = f(map.bytes());
    if map.slot.faulted.load(SeqCst) {
        return Err(MapError::Changed);
    }
    Ok(r)
}

#[cfg(test)]
mod tests;
