//! Binding TCP listeners: the wildcard `[::]` listens on IPv6 and IPv4 at once (dual stack),
//! whatever the system's default, and falls back to `0.0.0.0` on a host without IPv6.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

/// Connections a listener lets wait to be accepted (what tokio's own `bind` uses).
const BACKLOG: i32 = 1024;

/// The listening address used when none is given: every address of both families.
pub const DUAL_STACK: &str = "[::]";

/// Listens on `addr`. For the IPv6 wildcard `[::]:PORT` the socket accepts IPv4 connections
/// too (`IPV6_V6ONLY` off; they arrive as IPv4-mapped addresses `::ffff:a.b.c.d`, which
/// [`canonical`] turns back into IPv4), and on a host where IPv6 is unavailable (disabled in
/// the kernel) it listens on `0.0.0.0:PORT` instead. Any other address is bound as given:
/// `0.0.0.0:PORT` stays IPv4 only, `[2001:db8::1]:PORT` IPv6 only.
pub fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let wildcard_v6 = matches!(addr, SocketAddr::V6(a) if a.ip().is_unspecified());
    match bind_socket(addr, wildcard_v6) {
        Err(e) if wildcard_v6 && no_ipv6(&e) => bind_socket(
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port())),
            false,
        ),
        r => r,
    }
}

fn bind_socket(addr: SocketAddr, dual: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if dual {
        socket.set_only_v6(false)?;
    }
    // As tokio's `TcpListener::bind`: a restarted server gets its port back at once.
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// The errors of a host without IPv6: no such address family, or no address to bind.
fn no_ipv6(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL) | Some(libc::EPROTONOSUPPORT)
    )
}

/// An address as a dual-stack socket reports it, with an IPv4 client's IPv4-mapped IPv6
/// address (`::ffff:192.0.2.1`) turned back into the IPv4 address it is (`192.0.2.1`).
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether this host has `::1` (an IPv6-less kernel or container has not).
    fn has_ipv6_loopback() -> bool {
        std::net::TcpListener::bind("[::1]:0").is_ok()
    }

    #[tokio::test]
    async fn the_v6_wildcard_takes_both_families_and_v4_stays_v4() {
        if !has_ipv6_loopback() {
            eprintln!("SKIPPED the_v6_wildcard_takes_both_families: no ::1 on this host");
            return;
        }
        let l = bind_tcp("[::]:0".parse().unwrap()).unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(l.local_addr().unwrap().is_ipv6());
        for to in [format!("127.0.0.1:{port}"), format!("[::1]:{port}")] {
            let c = tokio::net::TcpStream::connect(&to).await.unwrap();
            let (_s, from) = l.accept().await.unwrap();
            assert_eq!(canonical(from), c.local_addr().unwrap(), "{to}");
        }
        let v4 = bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = v4.local_addr().unwrap().port();
        assert!(
            tokio::net::TcpStream::connect(format!("[::1]:{port}"))
                .await
                .is_err(),
            "an IPv4 address given is IPv4 only"
        );
    }

    #[test]
    fn mapped_addresses_become_ipv4() {
        let a: SocketAddr = "[::ffff:192.0.2.1]:7".parse().unwrap();
        assert_eq!(canonical(a).to_string(), "192.0.2.1:7");
        let b: SocketAddr = "[2001:db8::1]:7".parse().unwrap();
        assert_eq!(canonical(b), b);
    }
}
