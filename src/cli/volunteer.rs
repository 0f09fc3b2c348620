//! The volunteer-relay flags of `share` and `node` (`--relay`, `--relay-rate`).

use clap::Args;
use peershare::peer::RelayDesk;
use peershare::splice::SpliceLimits;

/// Volunteering as a relay for the other members (docs/PROTOCOL.md §7.10).
#[derive(Debug, Args, Clone)]
pub struct VolunteerArgs {
    /// Volunteer as a relay for the other members of the index: carry, through this peer's
    /// port, the connections between members that cannot reach each other (end-to-end
    /// encrypted between them: this peer sees neither names nor contents). The index takes
    /// only a peer it reaches directly
    #[arg(long)]
    pub relay: bool,
    /// With --relay: limit on all the traffic relayed for others, e.g. 10MiB (per second; 0:
    /// none); each member's relayed connections get at most a quarter of it
    #[arg(long, default_value = "10MiB", value_parser = super::parse_relay_rate, value_name = "RATE", requires = "relay")]
    pub relay_rate: u64,
}

impl VolunteerArgs {
    /// The share's setting.
    pub fn config(&self) -> Option<SpliceLimits> {
        self.relay
            .then(|| RelayDesk::default_limits(self.relay_rate))
    }
}
