//! The port-mapping flags of `share` and `node`.

use std::time::Duration;

use clap::Args;
use peershare::portmap::PortMapConfig;

/// Port mapping on the router (UPnP-IGD, PCP, NAT-PMP).
#[derive(Debug, Args, Clone)]
pub struct PortMapArgs {
    /// Do not ask the router to forward the listening port (UPnP-IGD, PCP, NAT-PMP). Without
    /// it, a peer listening on a non-loopback address and given no --advertise asks at
    /// startup (at most 1.8 s, sharing does not wait), registers the mapped address, renews
    /// it and removes it on exit
    #[arg(long)]
    pub no_port_mapping: bool,
    /// Lease asked for a port mapping; it is renewed at half of what the router grants
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = humantime::parse_duration)]
    pub port_mapping_lease: Duration,
}

impl PortMapArgs {
    /// The share's setting.
    pub fn config(&self) -> Option<PortMapConfig> {
        (!self.no_port_mapping).then(|| PortMapConfig {
            lease: self.port_mapping_lease.max(Duration::from_secs(1)),
            ..PortMapConfig::default()
        })
    }
}
