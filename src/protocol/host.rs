//! Hosts on the wire are IP literals: what an index records and hands out, and all a client connects to, so nothing from the network reaches the system resolver.

use std::net::{IpAddr, SocketAddr};

/// A host from the network that is not an IP address (a client never looks such a name up).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("host \"{}\" is not an IP address", crate::text::Escaped(.host))]
pub struct NotAnIp {
    /// The host as received.
    pub host: String,
}

/// The IP address a host string stands for: IPv4 dotted quad, or IPv6 with or without one
/// pair of brackets (`::1`, `[::1]`); an IPv4-mapped IPv6 address (`::ffff:192.0.2.1`) is the
/// IPv4 address it carries. Names, zone ids (`fe80::1%eth0`) and anything else: `None`.
pub fn parse_ip(host: &str) -> Option<IpAddr> {
    let ip = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        // Brackets are for IPv6 only: `[127.0.0.1]` is refused.
        Some(inner) => inner.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6),
        None => host.parse().ok(),
    };
    ip.map(|ip| ip.to_canonical())
}

/// Where to connect for a `host` and `port` received from the network.
pub fn socket_addr(host: &str, port: u16) -> Result<SocketAddr, NotAnIp> {
    parse_ip(host)
        .map(|ip| SocketAddr::new(ip, port))
        .ok_or_else(|| NotAnIp { host: host.into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_literals_only_with_or_without_brackets() {
        assert_eq!(
            socket_addr("127.0.0.1", 5).unwrap().to_string(),
            "127.0.0.1:5"
        );
        assert_eq!(socket_addr("::1", 5).unwrap().to_string(), "[::1]:5");
        assert_eq!(socket_addr("[::1]", 5).unwrap().to_string(), "[::1]:5");
        assert_eq!(
            socket_addr("2001:DB8:0:0::1", 5).unwrap().to_string(),
            "[2001:db8::1]:5"
        );
        // An IPv4-mapped IPv6 address is the IPv4 address (what a dual-stack socket reports).
        for mapped in ["::ffff:192.0.2.1", "[::ffff:192.0.2.1]", "::FFFF:c000:201"] {
            assert_eq!(
                socket_addr(mapped, 5).unwrap().to_string(),
                "192.0.2.1:5",
                "{mapped}"
            );
        }
        for bad in [
            "evil.example",
            "localhost",
            "",
            "[[::1]]",
            "[127.0.0.1",
            "[127.0.0.1]",
            "fe80::1%eth0",
            "1.2.3.4:80",
            "1.2.3.4\n",
        ] {
            assert!(socket_addr(bad, 5).is_err(), "{bad:?}");
        }
        let e = socket_addr("a\x1b[2Jb", 1).unwrap_err().to_string();
        assert!(!e.contains('\x1b'), "{e}");
    }
}
