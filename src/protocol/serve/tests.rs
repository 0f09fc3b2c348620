//! Tests of the connection table: admission, eviction order, per-address limits.

use super::*;

fn table(max: usize, per_ip: usize) -> Arc<Table> {
    Connections::new(ServeLimits {
        max_connections: max,
        max_per_ip: per_ip,
        handshake_timeout: HANDSHAKE_TIMEOUT,
        grace: Duration::ZERO,
    })
    .0
}

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

#[test]
fn a_full_server_evicts_the_lowest_standing_then_the_longest_waiting() {
    let t = table(3, 100);
    let trusted = t.admit(ip(1)).unwrap();
    trusted.trusted();
    let greeted = t.admit(ip(2)).unwrap();
    greeted.greeted();
    let fresh = t.admit(ip(3)).unwrap();
    let _a = t.admit(ip(4)).unwrap();
    assert!(
        fresh.evicted().is_cancelled(),
        "the one without Hello goes first"
    );
    assert!(!greeted.evicted().is_cancelled());
    let b = t.admit(ip(4)).unwrap();
    // _a (fresh, ip 4) goes before the greeted one.
    assert!(_a.evicted().is_cancelled());
    assert!(!greeted.evicted().is_cancelled());
    b.greeted();
    std::thread::sleep(Duration::from_millis(2));
    // Two greeted: the one waiting longest goes; the trusted one stays.
    let _c = t.admit(ip(5)).unwrap();
    assert!(greeted.evicted().is_cancelled());
    assert!(!b.evicted().is_cancelled());
    assert!(!trusted.evicted().is_cancelled());
    assert_eq!(t.lock().conns.len(), 3);
}

#[test]
fn connections_being_served_are_never_evicted_and_the_newcomer_is_refused() {
    let t = table(2, 100);
    let a = t.admit(ip(1)).unwrap();
    let b = t.admit(ip(1)).unwrap();
    assert!(a.serving() && b.serving());
    assert!(t.admit(ip(2)).is_none());
    b.waiting();
    assert!(t.admit(ip(2)).is_some());
    assert!(b.evicted().is_cancelled());
    assert!(
        !b.serving(),
        "an evicted connection learns it when its request arrives"
    );
    assert!(!a.evicted().is_cancelled());
    assert_eq!(t.lock().refused, 1);
}

#[test]
fn one_address_is_held_to_its_share_only_once_the_server_is_half_full() {
    let t = table(8, 2);
    let mine: Vec<_> = (0..4).map(|_| t.admit(ip(1)).unwrap()).collect();
    assert!(
        mine.iter().all(|a| !a.evicted().is_cancelled()),
        "below half: any number"
    );
    let fifth = t.admit(ip(1)).unwrap();
    assert!(
        mine[0].evicted().is_cancelled(),
        "half full: its own oldest goes"
    );
    let other = t.admit(ip(2)).unwrap();
    assert!(!other.evicted().is_cancelled());
    assert_eq!(t.lock().per_ip.get(&ip(1)), Some(&4));
    drop(fifth);
    drop(mine);
    assert_eq!(t.lock().conns.len(), 1);
    assert_eq!(t.lock().per_ip.get(&ip(1)), None);
}
