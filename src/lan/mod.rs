//! LAN discovery: a sharing peer announces itself on the local network with mDNS/DNS-SD
//! (docs/PROTOCOL.md §13), and a searcher browses for such announcements, checks each, and asks
//! the peers found directly (their catalogs, or whether they have a file), requiring each to
//! prove the key it announced. No index and no internet are needed.
//!
//! Everything heard on the LAN is hostile until checked: an announcement is kept only when its
//! TXT record is well formed ([`check`]), its addresses are usable unicast addresses, and (for
//! a member of a private group) it announces our group; at most [`MAX_LAN_PEERS`] peers and
//! [`MAX_ADDRS_PER_PEER`] addresses each are kept, and every peer asked has [`PROBE_TIMEOUT`]
//! to answer.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mdns_sd::{IfKind, ResolvedService, ServiceDaemon, ServiceEvent, ServiceInfo};
use tracing::{debug, warn};

use crate::content::{ContentId, Digest};
use crate::identity::Fingerprint;
use crate::peer::ask::{Answer, ask_catalog, probe_all};
use crate::protocol::{CatalogEntry, CatalogQuery};
use crate::tls::Tls;

/// The DNS-SD service type peershare peers announce themselves under.
pub const SERVICE_TYPE: &str = "_peershare._tcp.local.";
/// The version of the TXT record (its `v` key) this build writes and reads.
pub const TXT_VERSION: &str = "1";
/// TXT key: the version, [`TXT_VERSION`].
pub const TXT_V: &str = "v";
/// TXT key: the peer's key, as a 52-character fingerprint.
pub const TXT_KEY: &str = "key";
/// TXT key: for a member of a private group, the group's key (its index's), as a fingerprint.
pub const TXT_GROUP: &str = "group";
/// Most TXT entries an announcement may have (ours has 2 or 3); more and it is ignored.
pub const MAX_TXT_ENTRIES: usize = 8;
/// Most peers kept from one browse (distinct keys); later ones are ignored.
pub const MAX_LAN_PEERS: usize = 64;
/// Most addresses kept per peer (tried in turn until one proves the key).
pub const MAX_ADDRS_PER_PEER: usize = 4;
/// How long `search --lan` and `get --lan` listen for announcements by default.
pub const DEFAULT_LAN_WAIT: Duration = Duration::from_millis(1500);
/// Longest a LAN peer may take to be reached, prove its key and answer one question, over all
/// its addresses (peers on the LAN answer in milliseconds).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long withdrawing an announcement may wait for its goodbye packets to be sent.
pub const WITHDRAW_WAIT: Duration = Duration::from_secs(1);

/// Why LAN discovery could not run.
#[derive(Debug, thiserror::Error)]
pub enum LanError {
    /// The mDNS responder could not start or was refused a request (no usable interface, the
    /// mDNS port unavailable...).
    #[error("mDNS: {0}")]
    Mdns(#[from] mdns_sd::Error),
}

/// A peer that announced itself on the LAN, as checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanPeer {
    /// The key it announced (and must prove when asked).
    pub key: Digest,
    /// The private group it announced, if any.
    pub group: Option<Digest>,
    /// Where it says it serves, at most [`MAX_ADDRS_PER_PEER`].
    pub addrs: Vec<SocketAddr>,
}

/// Why an announcement was ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ignored {
    /// More TXT entries than [`MAX_TXT_ENTRIES`].
    #[error("{0} TXT entries (at most {MAX_TXT_ENTRIES})")]
    TooManyEntries(usize),
    /// No `v` entry, or another version.
    #[error("TXT version {0:?}, not {TXT_VERSION:?}")]
    Version(String),
    /// No `key` entry, or not a fingerprint.
    #[error("no valid key in TXT ({0:?})")]
    BadKey(String),
    /// A `group` entry that is not a fingerprint.
    #[error("group in TXT is not a key ({0:?})")]
    BadGroup(String),
    /// Port 0.
    #[error("port 0")]
    NoPort,
    /// No address another host can connect to (loopback, unspecified, multicast, broadcast,
    /// link-local IPv6 needing a scope).
    #[error("no usable address (announced: {0})")]
    NoAddress(String),
    /// Our own announcement.
    #[error("our own announcement")]
    Own,
    /// We are a member of a private group, and it announced another one or none.
    #[error("not of our private group (announced: {})", .0.map_or("none".to_string(), |g| Fingerprint(g).to_string()))]
    OtherGroup(Option<Digest>),
    /// We are in no group, and it serves its private group's members only.
    #[error("in a private group ({}) we are not a member of", Fingerprint(*.0))]
    PrivateGroup(Digest),
}

/// Who is browsing: our key (to skip our own announcement) and our group, if any.
#[derive(Debug, Clone, Copy, Default)]
pub struct Browser {
    /// Our key.
    pub own: Option<Digest>,
    /// Our private group's key.
    pub group: Option<Digest>,
}

impl Browser {
    /// The browser of a process connecting as `tls`.
    pub fn of(tls: Option<&Tls>) -> Browser {
        Browser {
            own: tls.map(Tls::public_key),
            group: tls.and_then(|t| t.group()).map(|g| g.group()),
        }
    }
}

/// An address a peer on the LAN can be asked at.
fn usable(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_loopback() || v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast())
        }
        // Link-local IPv6 needs the interface's scope, which an address string does not carry.
        IpAddr::V6(v6) => {
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unicast_link_local()
                || v6.to_ipv4_mapped().is_some())
        }
    }
}

/// Checks one announcement's TXT entries, port and addresses (as `(key, value)` pairs and
/// IP addresses) for `browser`.
pub fn check(
    txt: &[(&str, Option<&[u8]>)],
    port: u16,
    ips: &[IpAddr],
    browser: &Browser,
) -> Result<LanPeer, Ignored> {
    if txt.len() > MAX_TXT_ENTRIES {
        return Err(Ignored::TooManyEntries(txt.len()));
    }
    let get = |k: &str| {
        txt.iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(k))
            .map(|(_, v)| String::from_utf8_lossy(v.unwrap_or_default()).into_owned())
    };
    let shown = |s: String| s.chars().take(60).collect::<String>();
    match get(TXT_V) {
        Some(v) if v == TXT_VERSION => {}
        v => return Err(Ignored::Version(shown(v.unwrap_or_default()))),
    }
    let key = get(TXT_KEY).unwrap_or_default();
    let key = key
        .parse::<Fingerprint>()
        .map_err(|_| Ignored::BadKey(shown(key)))?
        .0;
    let group = match get(TXT_GROUP) {
        None => None,
        Some(g) => Some(
            g.parse::<Fingerprint>()
                .map_err(|_| Ignored::BadGroup(shown(g)))?
                .0,
        ),
    };
    if port == 0 {
        return Err(Ignored::NoPort);
    }
    if browser.own == Some(key) {
        return Err(Ignored::Own);
    }
    match (browser.group, group) {
        (Some(ours), theirs) if theirs != Some(ours) => return Err(Ignored::OtherGroup(theirs)),
        (None, Some(theirs)) => return Err(Ignored::PrivateGroup(theirs)),
        _ => {}
    }
    let mut usable_ips: Vec<IpAddr> = ips.iter().copied().filter(usable).collect();
    usable_ips.sort();
    usable_ips.dedup();
    if usable_ips.is_empty() {
        let all: Vec<String> = ips.iter().take(4).map(IpAddr::to_string).collect();
        return Err(Ignored::NoAddress(all.join(", ")));
    }
    Ok(LanPeer {
        key,
        group,
        addrs: usable_ips
            .into_iter()
            .take(MAX_ADDRS_PER_PEER)
            .map(|ip| SocketAddr::new(ip, port))
            .collect(),
    })
}

fn check_resolved(s: &ResolvedService, browser: &Browser) -> Result<LanPeer, Ignored> {
    let txt: Vec<(&str, Option<&[u8]>)> = s
        .get_properties()
        .iter()
        .map(|p| (p.key(), p.val()))
        .collect();
    let ips: Vec<IpAddr> = s.get_addresses().iter().map(|a| a.to_ip_addr()).collect();
    check(&txt, s.get_port(), &ips, browser)
}

/// What one browse found.
#[derive(Debug, Default)]
pub struct Found {
    /// The peers kept, in the order they were first heard.
    pub peers: Vec<LanPeer>,
    /// Announcements of a private group we are not a member of (not asked).
    pub private: usize,
    /// Announcements ignored as malformed, of another group, or ours.
    pub ignored: usize,
    /// Announcements past [`MAX_LAN_PEERS`] (ignored).
    pub over_limit: usize,
}

/// Listens for peers' announcements on every interface for `wait`, and keeps the ones that
/// pass [`check`] for `browser`, merged by key.
pub async fn browse(wait: Duration, browser: Browser) -> Result<Found, LanError> {
    let daemon = ServiceDaemon::new()?;
    let events = daemon.browse(SERVICE_TYPE);
    let mut found = Found::default();
    // Per key: its index in found.peers.
    let mut by_key: HashMap<Digest, usize> = HashMap::new();
    // Private groups' peers not asked, by name: a peer resolved again (another address, an
    // update) counts once. Bounded like the peers kept.
    let mut private: std::collections::HashSet<String> = Default::default();
    if let Ok(events) = events {
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Ok(event)) = tokio::time::timeout_at(deadline, events.recv_async()).await {
            let ServiceEvent::ServiceResolved(s) = event else {
                continue;
            };
            let name = crate::text::Escaped(s.get_fullname()).to_string();
            match check_resolved(&s, &browser) {
                Ok(peer) => match by_key.get(&peer.key) {
                    Some(&i) => {
                        let known = &mut found.peers[i];
                        for a in peer.addrs {
                            if known.addrs.len() < MAX_ADDRS_PER_PEER && !known.addrs.contains(&a) {
                                known.addrs.push(a);
                            }
                        }
                    }
                    None if found.peers.len() >= MAX_LAN_PEERS => {
                        found.over_limit += 1;
                        debug!("LAN: ignoring {name}: already {MAX_LAN_PEERS} peers");
                    }
                    None => {
                        debug!(
                            "LAN: found {name}: key {} at {:?}",
                            Fingerprint(peer.key),
                            peer.addrs
                        );
                        by_key.insert(peer.key, found.peers.len());
                        found.peers.push(peer);
                    }
                },
                Err(Ignored::PrivateGroup(g)) => {
                    if private.len() < MAX_LAN_PEERS {
                        private.insert(name.clone());
                    }
                    found.private = private.len();
                    debug!("LAN: not asking {name}: {}", Ignored::PrivateGroup(g));
                }
                Err(Ignored::Own) => {}
                Err(why) => {
                    found.ignored += 1;
                    debug!("LAN: ignoring announcement {name}: {why}");
                }
            }
        }
    } else if let Err(e) = events {
        shut(daemon);
        return Err(e.into());
    }
    if found.over_limit > 0 {
        warn!(
            "LAN: more than {MAX_LAN_PEERS} peers announced themselves; {} ignored",
            found.over_limit
        );
    }
    shut(daemon);
    Ok(found)
}

/// Stops a daemon without waiting for its thread.
fn shut(daemon: ServiceDaemon) {
    if let Err(e) = daemon.shutdown() {
        debug!("LAN: mDNS daemon shutdown: {e}");
    }
}

/// Runs `ask` on a peer's addresses in turn until one answers, within [`PROBE_TIMEOUT`]
/// over all; says why a peer did not.
async fn ask_peer<T, F, Fut>(peer: LanPeer, ask: F) -> Option<(SocketAddr, T)>
where
    F: Fn(SocketAddr, Digest) -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::peer::PeerClientError>>,
{
    let fp = Fingerprint(peer.key);
    let all = async {
        let mut last = None;
        for &addr in &peer.addrs {
            match ask(addr, peer.key).await {
                Ok(t) => return Ok((addr, t)),
                Err(e) => last = Some(e),
            }
        }
        Err(last)
    };
    match tokio::time::timeout(PROBE_TIMEOUT, all).await {
        Ok(Ok(x)) => Some(x),
        Ok(Err(Some(e))) => {
            let e = crate::text::error_chain(&e);
            warn!("LAN: peer {fp} did not answer as announced: {e}");
            None
        }
        Ok(Err(None)) => None,
        Err(_) => {
            warn!(
                "LAN: peer {fp} did not answer within {PROBE_TIMEOUT:?} at {:?}",
                peer.addrs
            );
            None
        }
    }
}

/// Asks every peer found which of its files match `query` (all at once: there are at most
/// [`MAX_LAN_PEERS`]), requiring each to prove the key it announced. Peers that do not answer
/// are left out (with a warning).
pub async fn find_files(peers: &[LanPeer], query: &CatalogQuery, tls: Option<&Tls>) -> Vec<Answer> {
    let tls = tls.cloned();
    let q = query.clone();
    probe_all(peers.to_vec(), MAX_LAN_PEERS, move |peer| {
        let (q, tls) = (q.clone(), tls.clone());
        async move {
            ask_peer(peer, |addr, key| {
                let (q, tls) = (q.clone(), tls.clone());
                async move { ask_catalog(addr, Some(key), q, tls.as_ref()).await }
            })
            .await
        }
    })
    .await
}

/// The peers found that have the file `id`, each with the address it answered at, the key it
/// proved (the one it announced) and its catalog entry for the file (name, size, path): one
/// catalog query for the id per peer.
pub async fn find_sources(
    peers: &[LanPeer],
    id: ContentId,
    tls: Option<&Tls>,
) -> Vec<(SocketAddr, Digest, CatalogEntry)> {
    let query = CatalogQuery {
        query: id.to_hex(),
        limit: 1,
        ..CatalogQuery::default()
    };
    let mut found: Vec<(SocketAddr, Digest, CatalogEntry)> = find_files(peers, &query, tls)
        .await
        .into_iter()
        .filter_map(|(addr, (key, r))| {
            let entry = r.files.into_iter().find(|f| f.content_id == id)?;
            Some((addr, key, entry))
        })
        .collect();
    found.sort_by_key(|a| (a.0, a.1));
    found
}

/// A long-running browse (for a node): the peers announced on the LAN now, kept up to date as
/// announcements come and go, at most [`MAX_LAN_PEERS`] service instances; stopped when
/// dropped.
pub struct Watch {
    peers: std::sync::Arc<std::sync::Mutex<HashMap<String, LanPeer>>>,
    daemon: ServiceDaemon,
}

impl Watch {
    /// Starts browsing for `browser` (on the current Tokio runtime).
    pub fn start(browser: Browser) -> Result<Watch, LanError> {
        let daemon = ServiceDaemon::new()?;
        let events = match daemon.browse(SERVICE_TYPE) {
            Ok(e) => e,
            Err(e) => {
                shut(daemon);
                return Err(e.into());
            }
        };
        let peers = std::sync::Arc::new(std::sync::Mutex::new(HashMap::new()));
        let table = peers.clone();
        let handle = daemon.clone();
        tokio::spawn(async move {
            let mut warned = false;
            let mut events = events;
            loop {
                while let Ok(event) = events.recv_async().await {
                    let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
                    watch_event(&mut t, event, &browser, &mut warned);
                }
                // The subscription ended: the daemon stopped (the watch was dropped), or it
                // dropped a subscriber that fell behind; then, once a second at most, again.
                tokio::time::sleep(Duration::from_secs(1)).await;
                match handle.browse(SERVICE_TYPE) {
                    Ok(e) => events = e,
                    Err(_) => return,
                }
            }
        });
        Ok(Watch { peers, daemon })
    }

    /// The peers announced now, merged by key (at most [`MAX_ADDRS_PER_PEER`] addresses each).
    pub fn peers(&self) -> Vec<LanPeer> {
        let t = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<LanPeer> = Vec::new();
        for p in t.values() {
            match out.iter_mut().find(|o| o.key == p.key) {
                Some(o) => {
                    for a in &p.addrs {
                        if o.addrs.len() < MAX_ADDRS_PER_PEER && !o.addrs.contains(a) {
                            o.addrs.push(*a);
                        }
                    }
                }
                None => out.push(p.clone()),
            }
        }
        out
    }
}

/// One event of a [`Watch`]'s browse, applied to its table (instance name to peer).
fn watch_event(
    t: &mut HashMap<String, LanPeer>,
    event: ServiceEvent,
    browser: &Browser,
    warned: &mut bool,
) {
    match event {
        ServiceEvent::ServiceResolved(s) => {
            let name = s.get_fullname().to_string();
            match check_resolved(&s, browser) {
                Ok(peer) if t.contains_key(&name) || t.len() < MAX_LAN_PEERS => {
                    t.insert(name, peer);
                }
                Ok(_) if !*warned => {
                    warn!(
                        "LAN: more than {MAX_LAN_PEERS} peers announced themselves; the others are ignored"
                    );
                    *warned = true;
                }
                Ok(_) | Err(Ignored::Own) => {}
                Err(why) => {
                    let name = crate::text::Escaped(&name).to_string();
                    debug!("LAN: ignoring announcement {name}: {why}");
                }
            }
        }
        // A peer that withdrew (or whose records expired).
        ServiceEvent::ServiceRemoved(_, name) => {
            t.remove(&name);
        }
        _ => {}
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Err(e) = self.daemon.shutdown() {
            debug!("LAN: mDNS daemon shutdown: {e}");
        }
    }
}

/// A running announcement of this peer on the LAN; [`Announcement::withdraw`] ends it.
pub struct Announcement {
    daemon: ServiceDaemon,
    fullname: String,
}

impl Announcement {
    /// Announces a peer holding `key` (in the private group `group`, if any) serving on
    /// `listen`: on every interface when it is a wildcard address (IPv4 ones only for
    /// `0.0.0.0`), else on that address only.
    pub fn start(
        key: Digest,
        group: Option<Digest>,
        listen: SocketAddr,
    ) -> Result<Announcement, LanError> {
        let fp = Fingerprint(key).to_string();
        let mut txt = vec![(TXT_V, TXT_VERSION.to_string()), (TXT_KEY, fp.clone())];
        if let Some(g) = group {
            txt.push((TXT_GROUP, Fingerprint(g).to_string()));
        }
        // The instance is named after the key (unique, 52 characters: within a DNS label), the
        // host after its first 16 characters.
        let host = format!("peershare-{}.local.", &fp[..16]);
        let ip = listen.ip();
        let daemon = ServiceDaemon::new()?;
        let mut info = if ip.is_unspecified() {
            if ip.is_ipv4() {
                daemon.disable_interface(IfKind::IPv6)?;
            }
            ServiceInfo::new(SERVICE_TYPE, &fp, &host, "", listen.port(), &txt[..])?
                .enable_addr_auto()
        } else {
            daemon.disable_interface(IfKind::All)?;
            daemon.enable_interface(IfKind::Addr(ip))?;
            ServiceInfo::new(SERVICE_TYPE, &fp, &host, ip, listen.port(), &txt[..])?
        };
        // No probing for a unique name: the name is our key, which only we hold; announcing at
        // once makes us visible at once.
        info.set_requires_probe(false);
        let fullname = info.get_fullname().to_string();
        if let Err(e) = daemon.register(info) {
            shut(daemon);
            return Err(e.into());
        }
        Ok(Announcement { daemon, fullname })
    }

    /// The announced instance's full name.
    pub fn name(&self) -> &str {
        &self.fullname
    }

    /// Withdraws the announcement (goodbye packets, so that browsers forget it at once), waiting
    /// at most [`WITHDRAW_WAIT`], and stops the responder.
    pub async fn withdraw(self) {
        match self.daemon.unregister(&self.fullname) {
            Ok(rx) => {
                if tokio::time::timeout(WITHDRAW_WAIT, rx.recv_async())
                    .await
                    .is_err()
                {
                    debug!("LAN: withdrawing the announcement timed out");
                }
            }
            Err(e) => debug!("LAN: cannot withdraw the announcement: {e}"),
        }
        if let Ok(rx) = self.daemon.shutdown() {
            let _ = tokio::time::timeout(WITHDRAW_WAIT, rx.recv_async()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(b: u8) -> String {
        Fingerprint(Digest([b; 32])).to_string()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_good_announcement_passes_and_bad_ones_say_why() {
        let key = fp(1);
        let me = Browser::default();
        let good = [("v", Some(&b"1"[..])), ("key", Some(key.as_bytes()))];
        let peer = check(&good, 4000, &[ip("10.0.0.2"), ip("127.0.0.1")], &me).unwrap();
        assert_eq!(peer.key, Digest([1; 32]));
        assert_eq!(peer.addrs, vec!["10.0.0.2:4000".parse().unwrap()]);

        let no_v = [("key", Some(key.as_bytes()))];
        assert!(matches!(
            check(&no_v, 1, &[ip("10.0.0.2")], &me),
            Err(Ignored::Version(_))
        ));
        let v2 = [("v", Some(&b"2"[..])), ("key", Some(key.as_bytes()))];
        assert!(matches!(
            check(&v2, 1, &[ip("10.0.0.2")], &me),
            Err(Ignored::Version(_))
        ));
        let garbage = [("v", Some(&b"1"[..])), ("key", Some(&[0xff, 0, 1][..]))];
        assert!(matches!(
            check(&garbage, 1, &[ip("10.0.0.2")], &me),
            Err(Ignored::BadKey(_))
        ));
        let no_key = [("v", Some(&b"1"[..])), ("key", None)];
        assert!(matches!(
            check(&no_key, 1, &[ip("10.0.0.2")], &me),
            Err(Ignored::BadKey(_))
        ));
        let long = "a".repeat(250);
        let bad_group = [
            ("v", Some(&b"1"[..])),
            ("key", Some(key.as_bytes())),
            ("group", Some(long.as_bytes())),
        ];
        match check(&bad_group, 1, &[ip("10.0.0.2")], &me) {
            Err(Ignored::BadGroup(shown)) => assert_eq!(shown.len(), 60),
            other => panic!("{other:?}"),
        }
        let many: Vec<(&str, Option<&[u8]>)> = (0..9).map(|_| ("x", None)).collect();
        assert_eq!(
            check(&many, 1, &[ip("10.0.0.2")], &me),
            Err(Ignored::TooManyEntries(9))
        );
        assert_eq!(
            check(&good, 0, &[ip("10.0.0.2")], &me),
            Err(Ignored::NoPort)
        );
        for bad in [
            "127.0.0.1",
            "0.0.0.0",
            "224.0.0.251",
            "255.255.255.255",
            "::1",
            "fe80::1",
            "::",
            "::ffff:10.0.0.1",
        ] {
            assert!(
                matches!(check(&good, 1, &[ip(bad)], &me), Err(Ignored::NoAddress(_))),
                "{bad}"
            );
        }
        // Addresses are bounded and deduplicated.
        let ips: Vec<IpAddr> = (1..=20)
            .map(|i| ip(&format!("10.0.0.{i}")))
            .chain([ip("10.0.0.1")])
            .collect();
        assert_eq!(
            check(&good, 1, &ips, &me).unwrap().addrs.len(),
            MAX_ADDRS_PER_PEER
        );
        // Our own.
        let me_too = Browser {
            own: Some(Digest([1; 32])),
            group: None,
        };
        assert_eq!(
            check(&good, 1, &[ip("10.0.0.2")], &me_too),
            Err(Ignored::Own)
        );
    }

    #[test]
    fn private_groups_see_their_own_only() {
        let (key, group, other) = (fp(1), fp(7), fp(8));
        let public = [("v", Some(&b"1"[..])), ("key", Some(key.as_bytes()))];
        let ours = [
            ("v", Some(&b"1"[..])),
            ("key", Some(key.as_bytes())),
            ("group", Some(group.as_bytes())),
        ];
        let theirs = [
            ("v", Some(&b"1"[..])),
            ("key", Some(key.as_bytes())),
            ("group", Some(other.as_bytes())),
        ];
        let a = [ip("10.0.0.2")];
        let member = Browser {
            own: None,
            group: Some(Digest([7; 32])),
        };
        assert_eq!(
            check(&ours, 1, &a, &member).unwrap().group,
            Some(Digest([7; 32]))
        );
        assert_eq!(
            check(&public, 1, &a, &member),
            Err(Ignored::OtherGroup(None))
        );
        assert_eq!(
            check(&theirs, 1, &a, &member),
            Err(Ignored::OtherGroup(Some(Digest([8; 32]))))
        );
        let stranger = Browser::default();
        assert!(check(&public, 1, &a, &stranger).is_ok());
        assert_eq!(
            check(&ours, 1, &a, &stranger),
            Err(Ignored::PrivateGroup(Digest([7; 32])))
        );
    }
}
