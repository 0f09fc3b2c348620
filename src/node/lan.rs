//! A share's LAN announcement: started with the share, withdrawn when it stops.

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::lan::Announcement;
use crate::tls::Tls;

/// Announces the peer holding `tls`'s key (and its group) serving on `local_addr`, until
/// `shutdown`; the announcement's name, or why there is none (the share goes on without).
pub(super) fn announce(
    tls: &Tls,
    local_addr: SocketAddr,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<String, String> {
    let group = tls.group().map(|g| g.group());
    match Announcement::start(tls.public_key(), group, local_addr) {
        Ok(a) => {
            let name = a.name().to_string();
            info!("announced on the LAN as {name}");
            tasks.spawn(async move {
                shutdown.cancelled().await;
                a.withdraw().await;
            });
            Ok(name)
        }
        Err(e) => {
            warn!("not announced on the LAN: {e}");
            Err(e.to_string())
        }
    }
}
