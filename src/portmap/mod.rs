//! Port mapping on the home router: a sharing peer behind a NAT asks its gateway to forward
//! its port (PCP, then NAT-PMP, then UPnP-IGD), renews the mapping before it lapses and
//! removes it when the peer stops, so that others reach it directly without a hand-made
//! port forward.
//!
//! Everything here is bounded: the whole attempt at startup takes at most [`MAP_TIMEOUT`]
//! (a LAN without such a gateway costs that once, and sharing does not wait for it), each
//! renewal and the removal at exit as long. What the gateway says (its external address) is
//! only a claim: the index checks the registered address like any other (§7.1).

mod route;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::num::NonZeroU16;
use std::time::Duration;

use crab_nat::{InternetProtocol, PortMapping, PortMappingOptions, TimeoutConfig};
use igd_next::PortMappingProtocol;
use igd_next::aio::Gateway;
use igd_next::aio::tokio::Tokio;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use route::default_gateway;

/// Longest time one mapping attempt takes at startup: PCP/NAT-PMP and UPnP together.
pub const MAP_TIMEOUT: Duration = Duration::from_millis(1800);
/// How long PCP/NAT-PMP waits for the gateway's first answer (then once more, twice as long).
pub const PMP_TIMEOUT: Duration = Duration::from_millis(250);
/// How long the UPnP search (SSDP) waits for a gateway to answer.
pub const UPNP_SEARCH_TIMEOUT: Duration = Duration::from_secs(1);
/// The lease asked for (`--port-mapping-lease`); the mapping is renewed at half of what the
/// gateway grants.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(3600);
/// Shortest wait between renewals, whatever lease the gateway grants.
pub const MIN_RENEW: Duration = Duration::from_secs(1);
/// The gateway's PCP and NAT-PMP port (RFC 6887, RFC 6886).
const PMP_PORT: u16 = 5351;
/// The mapping's description on a UPnP gateway (what its admin page shows).
const DESCRIPTION: &str = "peershare";

/// How a port was mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// UPnP Internet Gateway Device (SOAP over HTTP after an SSDP search).
    Upnp,
    /// Port Control Protocol (RFC 6887).
    Pcp,
    /// NAT Port Mapping Protocol (RFC 6886).
    NatPmp,
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Upnp => "UPnP",
            Method::Pcp => "PCP",
            Method::NatPmp => "NAT-PMP",
        })
    }
}

/// A port mapped on the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    /// Where others reach the peer's TCP port: the gateway's external address and port.
    pub external: SocketAddr,
    /// The external UDP port mapped to the same port number, when the gateway gave one.
    pub udp_port: Option<u16>,
    /// How it was mapped.
    pub method: Method,
    /// The lease the gateway granted (zero: until removed).
    pub lease: Duration,
}

impl fmt::Display for Mapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (port mapped by {} on the router)",
            self.external, self.method
        )
    }
}

/// What to map.
#[derive(Debug, Clone)]
pub struct PortMapConfig {
    /// The lease to ask for. Default: [`DEFAULT_LEASE`].
    pub lease: Duration,
    /// Also map the UDP port of the same number. Default: true.
    pub udp: bool,
    /// The gateway to ask; `None`: the IPv4 default route's. Default: `None`.
    pub gateway: Option<Ipv4Addr>,
}

impl Default for PortMapConfig {
    fn default() -> Self {
        PortMapConfig {
            lease: DEFAULT_LEASE,
            udp: true,
            gateway: None,
        }
    }
}

/// A mapping held on the gateway: renewed by [`Lease::keep`] until it is told to stop, then
/// removed.
pub struct Lease {
    mapped: Mapped,
    local: SocketAddrV4,
    config: PortMapConfig,
    held: Held,
}

enum Held {
    /// TCP, and UDP when mapped.
    Pmp(Box<(PortMapping, Option<PortMapping>)>),
    Upnp(Box<Gateway<Tokio>>),
}

/// Asks the gateway to forward the port of `listen` (a wildcard address: the one facing the
/// gateway). `None` when there is nothing to ask (a loopback or IPv6 listener, no IPv4 default
/// route) or no gateway mapped it within [`MAP_TIMEOUT`]: the peer then goes on unmapped.
pub async fn map_port(listen: SocketAddr, config: PortMapConfig) -> Option<Lease> {
    let ip = listen.ip().to_canonical();
    if ip.is_loopback() || listen.port() == 0 {
        return None;
    }
    let gateway = match config.gateway {
        Some(g) => g,
        None => match default_gateway() {
            Some(g) => g,
            None => {
                debug!("port mapping: no IPv4 default route, nothing to ask");
                return None;
            }
        },
    };
    // The address facing the gateway: asked of the routing table (nothing is sent).
    let local_ip = match ip {
        IpAddr::V4(v4) if !v4.is_unspecified() => v4,
        // Only a wildcard listener also listens on the IPv4 address facing the gateway.
        IpAddr::V6(v6) if !v6.is_unspecified() => return None,
        _ => facing(gateway)?,
    };
    let local = SocketAddrV4::new(local_ip, listen.port());
    match tokio::time::timeout(MAP_TIMEOUT, first_mapping(gateway, local, &config)).await {
        Ok(Some((mapped, held))) => Some(Lease {
            mapped,
            local,
            config,
            held,
        }),
        Ok(None) => None,
        Err(_) => {
            debug!("port mapping: no gateway mapped the port within {MAP_TIMEOUT:?}");
            None
        }
    }
}

/// Our IPv4 address on the way to `gateway`.
fn facing(gateway: Ipv4Addr) -> Option<Ipv4Addr> {
    let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    s.connect((gateway, PMP_PORT)).ok()?;
    match s.local_addr().ok()? {
        SocketAddr::V4(a) => Some(*a.ip()),
        SocketAddr::V6(_) => None,
    }
}

/// PCP/NAT-PMP first (one UDP exchange with the known gateway), then UPnP (a multicast
/// search and HTTP): one after the other, so that the gateway never holds two mappings made
/// by different protocols for one port.
async fn first_mapping(
    gateway: Ipv4Addr,
    local: SocketAddrV4,
    config: &PortMapConfig,
) -> Option<(Mapped, Held)> {
    match map_pmp(gateway, local, config).await {
        Ok(m) => return Some(m),
        Err(e) => debug!("port mapping: PCP/NAT-PMP at {gateway}: {e}"),
    }
    match map_upnp(local, config).await {
        Ok(m) => Some(m),
        Err(e) => {
            debug!("port mapping: UPnP: {e}");
            None
        }
    }
}

fn pmp_options(external_port: Option<u16>, lease: Duration) -> PortMappingOptions {
    PortMappingOptions {
        external_port: external_port.and_then(NonZeroU16::new),
        lifetime_seconds: Some(lease.as_secs().clamp(1, u32::MAX as u64) as u32),
        timeout_config: Some(TimeoutConfig {
            initial_timeout: PMP_TIMEOUT,
            max_retries: 1,
            max_retry_timeout: Some(PMP_TIMEOUT * 2),
        }),
    }
}

async fn map_pmp(
    gateway: Ipv4Addr,
    local: SocketAddrV4,
    config: &PortMapConfig,
) -> Result<(Mapped, Held), String> {
    let port = NonZeroU16::new(local.port()).ok_or("port 0")?;
    let tcp = PortMapping::new(
        gateway.into(),
        IpAddr::V4(*local.ip()),
        InternetProtocol::Tcp,
        port,
        pmp_options(Some(local.port()), config.lease),
    )
    .await
    .map_err(|e| e.to_string())?;
    let (method, external_ip) = match tcp.mapping_type() {
        crab_nat::PortMappingType::Pcp { external_ip, .. } => (Method::Pcp, external_ip),
        crab_nat::PortMappingType::NatPmp => {
            let ip = crab_nat::natpmp::external_address(
                gateway.into(),
                pmp_options(None, config.lease).timeout_config,
            )
            .await;
            match ip {
                Ok(ip) => (Method::NatPmp, IpAddr::V4(ip)),
                Err(e) => {
                    let _ = tcp.try_drop().await;
                    return Err(format!("no external address: {e}"));
                }
            }
        }
    };
    let external_ip = external_ip.to_canonical();
    if external_ip.is_unspecified() {
        let _ = tcp.try_drop().await;
        return Err("the gateway has no external address".into());
    }
    let udp = if config.udp {
        PortMapping::new(
            gateway.into(),
            IpAddr::V4(*local.ip()),
            InternetProtocol::Udp,
            port,
            pmp_options(Some(tcp.external_port().get()), config.lease),
        )
        .await
        .map_err(|e| debug!("port mapping: {method} UDP: {e}"))
        .ok()
    } else {
        None
    };
    let mapped = Mapped {
        external: SocketAddr::new(external_ip, tcp.external_port().get()),
        udp_port: udp.as_ref().map(|u| u.external_port().get()),
        method,
        lease: Duration::from_secs(tcp.lifetime().into()),
    };
    Ok((mapped, Held::Pmp(Box::new((tcp, udp)))))
}

fn upnp_lease(lease: Duration) -> u32 {
    lease.as_secs().clamp(1, u32::MAX as u64) as u32
}

async fn map_upnp(local: SocketAddrV4, config: &PortMapConfig) -> Result<(Mapped, Held), String> {
    let mut options = igd_next::SearchOptions::default();
    options.bind_addr = SocketAddr::V4(SocketAddrV4::new(*local.ip(), 0));
    options.timeout = Some(UPNP_SEARCH_TIMEOUT);
    options.single_search_timeout = Some(UPNP_SEARCH_TIMEOUT);
    let gateway = igd_next::aio::tokio::search_gateway(options)
        .await
        .map_err(|e| format!("no gateway answered: {e}"))?;
    let external_ip = gateway
        .get_external_ip()
        .await
        .map_err(|e| format!("no external address: {e}"))?
        .to_canonical();
    if external_ip.is_unspecified() {
        return Err("the gateway has no external address".into());
    }
    let mut lease = upnp_lease(config.lease);
    let mut external_port = local.port();
    let add = |proto, port, lease| {
        gateway.add_port(proto, port, SocketAddr::V4(local), lease, DESCRIPTION)
    };
    match add(PortMappingProtocol::TCP, external_port, lease).await {
        Ok(()) => {}
        // Some gateways keep only mappings without an end; this one is removed at exit.
        Err(igd_next::AddPortError::OnlyPermanentLeasesSupported) => {
            lease = 0;
            add(PortMappingProtocol::TCP, external_port, 0)
                .await
                .map_err(|e| e.to_string())?;
        }
        // The same external port number is taken (by another machine): the gateway's choice.
        Err(igd_next::AddPortError::PortInUse) => {
            external_port = gateway
                .add_any_port(
                    PortMappingProtocol::TCP,
                    SocketAddr::V4(local),
                    lease,
                    DESCRIPTION,
                )
                .await
                .map_err(|e| e.to_string())?;
        }
        Err(e) => return Err(e.to_string()),
    }
    let udp_port = if config.udp {
        match add(PortMappingProtocol::UDP, external_port, lease).await {
            Ok(()) => Some(external_port),
            Err(e) => {
                debug!("port mapping: UPnP UDP: {e}");
                None
            }
        }
    } else {
        None
    };
    let mapped = Mapped {
        external: SocketAddr::new(external_ip, external_port),
        udp_port,
        method: Method::Upnp,
        lease: Duration::from_secs(lease.into()),
    };
    Ok((mapped, Held::Upnp(Box::new(gateway))))
}

impl Lease {
    /// The mapping.
    pub fn mapped(&self) -> &Mapped {
        &self.mapped
    }

    /// Renews the mapping at half its lease until `stop`, then removes it from the gateway
    /// (within [`MAP_TIMEOUT`]). A renewal that fails is retried at the next half of what is
    /// left; a gateway that forgot the mapping (rebooted) gets it asked for again.
    pub async fn keep(mut self, stop: CancellationToken) {
        loop {
            let wait = if self.mapped.lease.is_zero() {
                None
            } else {
                Some((self.mapped.lease / 2).max(MIN_RENEW))
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = async {
                    match wait {
                        Some(w) => tokio::time::sleep(w).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
            match tokio::time::timeout(MAP_TIMEOUT, self.renew()).await {
                Ok(Ok(())) => debug!("port mapping renewed: {}", self.mapped),
                Ok(Err(e)) => warn!("port mapping: renewing {} failed: {e}", self.mapped),
                Err(_) => warn!("port mapping: renewing {} timed out", self.mapped),
            }
        }
        let external = self.mapped.external;
        match tokio::time::timeout(MAP_TIMEOUT, self.remove()).await {
            Ok(Ok(())) => info!("port mapping removed: {external}"),
            Ok(Err(e)) => warn!("port mapping: could not remove {external}: {e}"),
            Err(_) => warn!("port mapping: removing {external} timed out"),
        }
    }

    async fn renew(&mut self) -> Result<(), String> {
        match &mut self.held {
            Held::Pmp(pair) => {
                let (tcp, udp) = &mut **pair;
                tcp.renew().await.map_err(|e| e.to_string())?;
                if let Some(u) = udp {
                    u.renew().await.map_err(|e| format!("UDP: {e}"))?;
                }
                self.mapped.lease = Duration::from_secs(tcp.lifetime().into());
                Ok(())
            }
            Held::Upnp(gateway) => {
                let lease = upnp_lease(self.mapped.lease);
                gateway
                    .add_port(
                        PortMappingProtocol::TCP,
                        self.mapped.external.port(),
                        SocketAddr::V4(self.local),
                        lease,
                        DESCRIPTION,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                if self.mapped.udp_port.is_some() && self.config.udp {
                    gateway
                        .add_port(
                            PortMappingProtocol::UDP,
                            self.mapped.external.port(),
                            SocketAddr::V4(self.local),
                            lease,
                            DESCRIPTION,
                        )
                        .await
                        .map_err(|e| format!("UDP: {e}"))?;
                }
                Ok(())
            }
        }
    }

    async fn remove(self) -> Result<(), String> {
        match self.held {
            Held::Pmp(pair) => {
                let (tcp, udp) = *pair;
                let mut errors = Vec::new();
                if let Some(u) = udp
                    && let Err((e, _)) = u.try_drop().await
                {
                    errors.push(format!("UDP: {e}"));
                }
                if let Err((e, _)) = tcp.try_drop().await {
                    errors.push(e.to_string());
                }
                if errors.is_empty() {
                    Ok(())
                } else {
                    Err(errors.join("; "))
                }
            }
            Held::Upnp(gateway) => {
                let port = self.mapped.external.port();
                let udp = match self.mapped.udp_port {
                    Some(_) => gateway
                        .remove_port(PortMappingProtocol::UDP, port)
                        .await
                        .map_err(|e| format!("UDP: {e}")),
                    None => Ok(()),
                };
                gateway
                    .remove_port(PortMappingProtocol::TCP, port)
                    .await
                    .map_err(|e| e.to_string())?;
                udp
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn nothing_is_asked_for_loopback_or_port_0() {
        for listen in ["127.0.0.1:4000", "[::1]:4000", "0.0.0.0:0"] {
            let started = std::time::Instant::now();
            assert!(
                map_port(listen.parse().unwrap(), PortMapConfig::default())
                    .await
                    .is_none()
            );
            assert!(started.elapsed() < Duration::from_millis(100), "{listen}");
        }
    }

    #[test]
    fn the_message_says_where_and_how() {
        let m = Mapped {
            external: "198.51.100.7:4000".parse().unwrap(),
            udp_port: Some(4000),
            method: Method::Upnp,
            lease: DEFAULT_LEASE,
        };
        assert_eq!(
            m.to_string(),
            "198.51.100.7:4000 (port mapped by UPnP on the router)"
        );
    }
}
