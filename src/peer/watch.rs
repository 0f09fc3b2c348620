//! Filesystem watching: turns `notify` events under the shared directories into "rescan soon" signals.

use std::path::PathBuf;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Starts watching `roots` recursively. Each burst of events yields at least one `()` on the
/// receiver (coalesced: a full channel drops the extra signal). The watcher stops when dropped.
pub fn watch_roots(
    roots: &[PathBuf],
) -> Result<(notify::RecommendedWatcher, mpsc::Receiver<()>), notify::Error> {
    let (tx, rx) = mpsc::channel(1);
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && !ev.kind.is_access()
        {
            let _ = tx.try_send(());
        }
    })?;
    for r in roots {
        watcher.watch(r, RecursiveMode::Recursive)?;
    }
    Ok((watcher, rx))
}
