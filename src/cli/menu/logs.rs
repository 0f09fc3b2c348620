//! The menu's logging and runtimes: no log line between the menu's questions.
//!
//! The menu runs downloads, an index or a share in this process, and their logs go to stderr,
//! the same terminal as the questions. Until the menu reaches its listening state (the index
//! or share it runs is up: no more questions), only warnings and errors are logged; from then
//! on, what `RUST_LOG` asks (by default `peershare=info`), as `peershare index` and `share`
//! log. The questions and searches run on a current-thread runtime, so that no task runs at
//! all while a question waits for its answer; the index or share runs on a multi-thread one.
//! Every thread of both logs through the menu's own subscriber (the binary's global one knows
//! nothing of the listening state).

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::runtime::Runtime;
use tracing::Dispatch;
use tracing::dispatcher::DefaultGuard;
use tracing_subscriber::filter::{EnvFilter, FilterExt, filter_fn};
use tracing_subscriber::layer::{Layer, SubscriberExt};

/// Set once the menu's index or share is up.
static LISTENING: AtomicBool = AtomicBool::new(false);

/// From now on, log at the level `RUST_LOG` asks (info by default), not just warnings.
pub fn listening() {
    LISTENING.store(true, Ordering::Relaxed);
}

/// The menu's subscriber: as the binary's (escaped, uncoloured, to stderr), quieted to
/// warnings until [`listening`].
pub fn dispatch() -> Dispatch {
    let env =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("peershare=info"));
    let gate = filter_fn(|meta| {
        LISTENING.load(Ordering::Relaxed) || *meta.level() <= tracing::Level::WARN
    });
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(|| peershare::text::EscapingWriter(std::io::stderr()))
        .with_target(false)
        .with_ansi(false)
        .with_filter(env.and(gate));
    Dispatch::new(tracing_subscriber::registry().with(layer))
}

thread_local! {
    /// A runtime thread's subscriber, set for its whole life.
    static GUARD: RefCell<Option<DefaultGuard>> = const { RefCell::new(None) };
}

/// The runtime the questions, searches and downloads run on: one thread, idle between
/// them (and its blocking threads log through `d`).
pub fn asking(d: &Dispatch) -> std::io::Result<Runtime> {
    let (start, stop) = hooks(d);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_start(start)
        .on_thread_stop(stop)
        .build()
}

/// The runtime the index or share runs on, as `peershare index` and `share` run (one worker
/// per CPU).
pub fn serving(d: &Dispatch) -> std::io::Result<Runtime> {
    let (start, stop) = hooks(d);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .enable_all()
        .on_thread_start(start)
        .on_thread_stop(stop)
        .build()
}

fn hooks(
    d: &Dispatch,
) -> (
    impl Fn() + Send + Sync + 'static,
    impl Fn() + Send + Sync + 'static,
) {
    let d = d.clone();
    let start = move || {
        GUARD.with(|g| *g.borrow_mut() = Some(tracing::dispatcher::set_default(&d)));
    };
    let stop = || {
        GUARD.with(|g| g.borrow_mut().take());
    };
    (start, stop)
}
