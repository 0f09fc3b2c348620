//! The IPv4 default gateway, read from the kernel's routing table (Linux: `/proc/net/route`);
//! NAT-PMP and PCP are spoken to it. Elsewhere there is none to read: only UPnP (a multicast
//! search) is tried.

use std::net::Ipv4Addr;

/// The gateway of the IPv4 default route with the lowest metric, if there is one.
pub fn default_gateway() -> Option<Ipv4Addr> {
    let table = std::fs::read_to_string("/proc/net/route").ok()?;
    parse_route_table(&table)
}

/// `RTF_UP | RTF_GATEWAY`.
const UP_GATEWAY: u32 = 0x1 | 0x2;

fn parse_route_table(table: &str) -> Option<Ipv4Addr> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            // Iface Destination Gateway Flags RefCnt Use Metric Mask ...
            let f: Vec<&str> = line.split_whitespace().collect();
            let hex = |i: usize| f.get(i).and_then(|v| u32::from_str_radix(v, 16).ok());
            let (dest, gw, flags, metric, mask) = (hex(1)?, hex(2)?, hex(3)?, f.get(6)?, hex(7)?);
            let metric: u32 = metric.parse().ok()?;
            // Addresses are in network byte order, printed as a host-order (little-endian) word.
            (dest == 0 && mask == 0 && flags & UP_GATEWAY == UP_GATEWAY && gw != 0)
                .then(|| (metric, Ipv4Addr::from(gw.to_le_bytes())))
        })
        .min_by_key(|(metric, _)| *metric)
        .map(|(_, gw)| gw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_route_with_the_lowest_metric() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
wlan0\t00000000\t0100000A\t0003\t0\t0\t600\t00000000\t0\t0\t0\n";
        assert_eq!(
            parse_route_table(table),
            Some(Ipv4Addr::new(192, 168, 1, 1))
        );
        assert_eq!(parse_route_table("Iface\tDestination\n"), None);
        assert_eq!(parse_route_table("garbage\n\u{0}\nx y z\n"), None);
    }
}
