//! Private groups: membership certificates, invite tokens and share links.
//!
//! A private index admits only its members. A user joins with an [`Invite`] (a one-word token
//! holding the index's address, its key and a secret the index stores only a hash of), and the
//! index then issues the member short-lived [`Membership`] certificates that sharing peers
//! check before they serve. A [`ShareLink`] names one file, and may carry the index to find it
//! through and an invite to join it.

mod invite;
mod link;
mod membership;
mod state;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use invite::{INVITE_PREFIX, Invite, InviteError, invite_hash};
pub use link::{LINK_PREFIX, LinkError, MAX_LINK_LEN, MAX_NAME_BYTES, ShareLink};
pub use membership::{MEMBERSHIP_CONTEXT, MEMBERSHIP_LIFETIME, Membership, MembershipError};
pub use state::{AdmitError, GroupState};

/// BLAKE3 key-derivation context of a private group's DHT secret, from its index's secret key
/// (docs/PROTOCOL.md §10.7).
pub const GROUP_DHT_CONTEXT: &str = "peershare 2026 group dht secret v1";

/// The last millisecond RFC 3339 can show (9999-12-31T23:59:59.999Z).
const LAST_SHOWABLE_MS: i64 = 253_402_300_799_999;

/// Milliseconds since the Unix epoch as a [`SystemTime`], clamped to 1970..=9999 so that
/// formatting it with `humantime::format_rfc3339*` cannot fail: those panic before the epoch
/// and fail after year 9999, and times here may come from a hostile peer.
pub fn system_time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.clamp(0, LAST_SHOWABLE_MS) as u64)
}

/// Milliseconds since the Unix epoch in RFC 3339 UTC with milliseconds, never failing
/// (see [`system_time`]).
pub fn format_ms(ms: i64) -> String {
    humantime::format_rfc3339_millis(system_time(ms)).to_string()
}

/// Whether `s` is `HOST:PORT` as an index address is written: a host name (ASCII letters,
/// digits, `-`, `.`, `_`), an IPv4 address, or an IPv6 address in brackets (`[::1]:4000`), and
/// a port from 1 to 65535 in decimal. This also keeps invite tokens free of characters that
/// mean something to a shell or in a share link (`#`, `@`, `&`, `%`, spaces).
pub fn is_host_port(s: &str) -> bool {
    let host_ok = |host: &str| {
        if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            // No zone ids (`%eth0`): they only make sense on the machine that wrote them.
            return inner.parse::<std::net::Ipv6Addr>().is_ok();
        }
        !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    };
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    let port_ok = !port.is_empty()
        && port.len() <= 5
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|p| p != 0);
    port_ok && host_ok(host)
}

/// At most 80 characters of `s`, to echo in an error message (shown through
/// [`crate::text::Escaped`]).
fn echo(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ports_are_checked() {
        for good in [
            "example.org:4000",
            "10.0.0.1:1",
            "[::1]:65535",
            "a_b-c.d:80",
        ] {
            assert!(is_host_port(good), "{good}");
        }
        for bad in [
            "",
            "example.org",
            "example.org:",
            ":4000",
            "example.org:0",
            "example.org:65536",
            "example.org:+80",
            "::1:4000",
            "[::1%eth0]:4000",
            "[10.0.0.1]:4000",
            "a b:4000",
            "a#b:4000",
            "a@b:4000",
            "a;rm -rf:4000",
        ] {
            assert!(!is_host_port(bad), "{bad}");
        }
    }

    #[test]
    fn times_from_anywhere_format() {
        assert_eq!(format_ms(1_800_000_000_000), "2027-01-15T08:00:00.000Z");
        assert_eq!(format_ms(i64::MIN), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ms(i64::MAX), "9999-12-31T23:59:59.999Z");
    }
}
