//! The index's check of a registering peer's address: before listing `host:port`, it connects
//! there and requires the registering key in a TLS handshake, so that no one lists someone
//! else's address. Bounded so that the check cannot be turned against others: one deadline for
//! connect and handshake, a limit at once and per registrant address, and no targets inside the
//! index's own networks for registrants from outside them.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::content::Digest;
use crate::protocol::connect_tcp;
use crate::tls::Tls;

/// Checks under way at once, in all; beyond it a registration is answered `BUSY`.
pub const MAX_ADDRESS_CHECKS: usize = 64;
/// Checks under way at once for registrants from one IP address.
pub const MAX_ADDRESS_CHECKS_PER_IP: usize = 4;
/// Failed checks after which a connection's further registrations are refused unchecked.
pub const MAX_FAILED_CHECKS: u32 = 4;
/// Longest time for one check: connecting and the TLS handshake together.
pub const ADDRESS_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an address was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckError {
    /// Too many checks under way (in all, or from this address): try again later.
    Busy,
    /// The address is inside a network the registrant is not in (loopback, private,
    /// link-local): the index does not connect there for it.
    OutOfScope,
    /// Nothing holding the key answered there (for the index's log only).
    Failed(String),
}

/// How far an address reaches: loopback (0) < private or link-local (1) < public (2).
fn scope(ip: IpAddr) -> u8 {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() || v4.is_unspecified() => 0,
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            // RFC 1918, link-local, and shared address space (carrier-grade NAT).
            let local =
                v4.is_private() || v4.is_link_local() || (a == 100 && (64..128).contains(&b));
            if local { 1 } else { 2 }
        }
        IpAddr::V6(v6) if v6.is_loopback() || v6.is_unspecified() => 0,
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            // Unique local (fc00::/7) and link-local (fe80::/10).
            let local = (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80;
            if local { 1 } else { 2 }
        }
    }
}

/// Whether `ip` is on the public internet (not loopback, private, shared, link-local or
/// unique local; an IPv4-mapped address counts as its IPv4 address).
pub fn is_public(ip: IpAddr) -> bool {
    scope(ip) == 2
}

/// The index's address checks, shared by its connections.
#[derive(Clone)]
pub struct AddressChecks {
    tls: Tls,
    running: Arc<Mutex<Running>>,
}

#[derive(Default)]
struct Running {
    all: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// A check's place among those under way; given back when dropped.
struct Turn {
    running: Arc<Mutex<Running>>,
    from: IpAddr,
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut r = self.running.lock().unwrap_or_else(|p| p.into_inner());
        r.all = r.all.saturating_sub(1);
        if let Some(n) = r.per_ip.get_mut(&self.from) {
            *n -= 1;
            if *n == 0 {
                r.per_ip.remove(&self.from);
            }
        }
    }
}

impl AddressChecks {
    /// Checks made with the index's TLS setup.
    pub fn new(tls: Tls) -> AddressChecks {
        AddressChecks {
            tls,
            running: Arc::new(Mutex::new(Running::default())),
        }
    }

    fn take_turn(&self, from: IpAddr) -> Option<Turn> {
        let mut r = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let mine = r.per_ip.get(&from).copied().unwrap_or(0);
        if r.all >= MAX_ADDRESS_CHECKS || mine >= MAX_ADDRESS_CHECKS_PER_IP {
            return None;
        }
        r.all += 1;
        *r.per_ip.entry(from).or_insert(0) += 1;
        Some(Turn {
            running: self.running.clone(),
            from,
        })
    }

    /// Whether `key` answers at `target`, for a registrant connected from `from`.
    pub async fn check(
        &self,
        from: IpAddr,
        target: SocketAddr,
        key: Digest,
    ) -> Result<(), CheckError> {
        if scope(target.ip()) < scope(from) {
            return Err(CheckError::OutOfScope);
        }
        let from = match from {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(from, IpAddr::V4),
            v4 => v4,
        };
        let _turn = self.take_turn(from).ok_or(CheckError::Busy)?;
        let attempt = async {
            let tcp = connect_tcp(&target.to_string(), ADDRESS_CHECK_TIMEOUT)
                .await
                .map_err(|e| CheckError::Failed(e.to_string()))?;
            let mut secured = self
                .tls
                .connect(tcp, Some(key), ADDRESS_CHECK_TIMEOUT)
                .await
                .map_err(|e| CheckError::Failed(e.to_string()))?;
            // Seen: close cleanly (close_notify), without waiting on the peer.
            let _ = tokio::time::timeout(
                Duration::from_millis(100),
                tokio::io::AsyncWriteExt::shutdown(&mut secured.stream),
            )
            .await;
            Ok(())
        };
        tokio::time::timeout(ADDRESS_CHECK_TIMEOUT, attempt)
            .await
            .unwrap_or_else(|_| Err(CheckError::Failed("timed out".into())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrants_reach_no_network_closer_than_their_own() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let allowed = |from: &str, to: &str| scope(ip(to)) >= scope(ip(from));
        // From outside: public targets only.
        assert!(allowed("203.0.113.7", "198.51.100.1"));
        for inside in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "169.254.1.1",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!allowed("203.0.113.7", inside), "{inside}");
        }
        // From the LAN: the LAN and the internet, not the index's own loopback.
        assert!(allowed("192.168.1.5", "10.0.0.9"));
        assert!(allowed("192.168.1.5", "203.0.113.7"));
        assert!(!allowed("192.168.1.5", "127.0.0.1"));
        // From the index's machine: anything.
        assert!(allowed("127.0.0.1", "127.0.0.2"));
        assert!(allowed("::1", "203.0.113.7"));
        // IPv4-mapped IPv6 addresses (an IPv4 client of a dual-stack socket) are IPv4.
        assert!(allowed("::ffff:192.168.1.5", "10.0.0.9"));
        assert!(!allowed("::ffff:203.0.113.7", "::ffff:10.0.0.1"));
        assert!(!allowed("::ffff:192.168.1.5", "127.0.0.1"));
        assert!(allowed("::ffff:127.0.0.1", "::1"));
    }

    #[test]
    fn turns_are_bounded_in_all_and_per_address_and_given_back() {
        let checks = AddressChecks::new(Tls::ephemeral().unwrap());
        let a: IpAddr = "203.0.113.1".parse().unwrap();
        let turns: Vec<_> = (0..MAX_ADDRESS_CHECKS_PER_IP)
            .map(|_| checks.take_turn(a).unwrap())
            .collect();
        assert!(
            checks.take_turn(a).is_none(),
            "one address holds at most its share"
        );
        let others: Vec<_> = (0..MAX_ADDRESS_CHECKS - MAX_ADDRESS_CHECKS_PER_IP)
            .map(|n| {
                checks
                    .take_turn(IpAddr::from([198, 51, 100, n as u8]))
                    .unwrap()
            })
            .collect();
        assert!(
            checks.take_turn("192.0.2.1".parse().unwrap()).is_none(),
            "all taken"
        );
        drop(turns);
        drop(others);
        assert!(checks.take_turn(a).is_some());
    }
}
