//! The LAN side of the CLI: `--lan` (browse the local network for peers before searching or
//! downloading) and what it says about the peers it found.

use std::time::Duration;

use clap::Args;
use peershare::lan::{self, Browser, DEFAULT_LAN_WAIT, LanPeer};
use peershare::tls::Tls;

/// `--lan` and how long it listens.
#[derive(Debug, Args, Clone)]
pub struct LanArgs {
    /// Find peers on the local network (mDNS/DNS-SD announcements; no index or internet
    /// needed) and ask them directly; an index is used too only when given
    #[arg(long)]
    pub lan: bool,
    /// How long --lan listens for peers' announcements
    #[arg(long, value_name = "TIME", default_value = "1500ms", value_parser = humantime::parse_duration)]
    pub lan_wait: Duration,
}

impl Default for LanArgs {
    fn default() -> Self {
        LanArgs {
            lan: false,
            lan_wait: DEFAULT_LAN_WAIT,
        }
    }
}

/// With --lan: the peers announced on the LAN that `tls` may ask, with a line on stderr when
/// none was found or some were left out.
pub async fn peers(args: &LanArgs, tls: &Tls) -> anyhow::Result<Option<Vec<LanPeer>>> {
    if !args.lan {
        return Ok(None);
    }
    let found = lan::browse(args.lan_wait, Browser::of(Some(tls))).await?;
    if found.private > 0 {
        eprintln!(
            "peershare: LAN: {} peer(s) serve a private group this key is not a member of (not asked)",
            found.private
        );
    }
    if found.peers.is_empty() {
        eprintln!(
            "peershare: LAN: no peer found within {}",
            humantime::format_duration(args.lan_wait)
        );
    }
    Ok(Some(found.peers))
}
