//! Network topologies built from Linux network namespaces for tests that need real routers:
//! a "public" internet, home networks each behind its own NAT, LANs without a router, IPv6.
//!
//! Use it from a test file with `#[path = "common/netns.rs"] mod netns;` (it needs nothing from
//! `common/mod.rs`). Everything it creates has a name unique to the process and the topology
//! (`ps<pid>x<n>-…`, so tests may run in parallel) and is deleted when the [`Topology`] is
//! dropped, panics included: killing a namespace's processes first, then the namespaces, which
//! takes their interfaces, bridges and nftables rules with them.
//!
//! ```text
//!   public host ──┐                         ┌── home host 192.168.K.10, .11, …
//!   public host ──┤ bridge "inet"   router ─┤   (default route: the router, 192.168.K.1)
//!  203.0.113.0/24 ┴──── 203.0.113.(100+K) ──┘   nftables masquerade on the router's "wan"
//!  2001:db8:1::/64 (IPv6, when enabled)
//!
//!   LAN host 10.77.K.10, .11, … on a bridge of their own, no router (fd77:K::/64 with IPv6)
//! ```
//!
//! 203.0.113.0/24 (TEST-NET-3) counts as a public network to the index's address check (§7.1),
//! 192.168.0.0/16 and 10.0.0.0/8 as private ones. Home networks are IPv4 only (no NAT66).
//!
//! Privileges: creating namespaces needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN), `ip` (iproute2)
//! and, for NATs, `nft` (nftables). [`Topology::new`] returns `None` after printing
//! `SKIPPED <test>: <why>` when they are missing, and panics instead when
//! `PEERSHARE_REQUIRE_ROOT_TESTS` is set (not empty, not "0"), as CI sets it.
#![allow(dead_code)]

use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// How a home network's router maps its hosts' connections to its public address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nat {
    /// nftables `masquerade`: a socket keeps its source port (endpoint-independent mapping, as
    /// most home routers do) while conntrack still filters replies by address and port: hole
    /// punching through two of these works when both sides send.
    EndpointIndependent,
    /// nftables `masquerade random`: a new random source port for every destination, a
    /// symmetric NAT: the port the index sees is not the one another peer sees, so hole
    /// punching fails and only a relay gets through.
    Symmetric,
}

/// Which address families the public net and LANs get (home nets are IPv4 only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    /// IPv6 only: hosts get no IPv4 address (besides loopback).
    V6,
    Dual,
}

impl Family {
    fn v4(self) -> bool {
        self != Family::V6
    }
    fn v6(self) -> bool {
        self != Family::V4
    }
}

/// A host: a network namespace with one interface, `eth0`, and loopback.
#[derive(Clone, Debug)]
pub struct Host {
    /// The namespace's name, for `ip netns exec`.
    pub ns: String,
    /// Its IPv4 address, when its network has IPv4.
    pub ip: Option<Ipv4Addr>,
    /// Its IPv6 address, when its network has IPv6.
    pub ip6: Option<Ipv6Addr>,
}

impl Host {
    /// `program` to be run inside this host's namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).arg(program);
        c
    }

    /// Runs a shell command line inside the namespace; panics (with its output) if it fails.
    pub fn sh(&self, line: &str) -> String {
        let out = self
            .command("sh")
            .args(["-c", line])
            .output()
            .expect("run sh in namespace");
        assert!(
            out.status.success(),
            "in {}: {line}: {}{}",
            self.ns,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The IPv4 address, for a host known to have one.
    pub fn v4(&self) -> Ipv4Addr {
        self.ip.expect("this host has no IPv4 address")
    }

    /// The IPv6 address, for a host known to have one.
    pub fn v6(&self) -> Ipv6Addr {
        self.ip6.expect("this host has no IPv6 address")
    }
}

/// A network hosts can be added to: a bridge in some namespace, with its addressing.
#[derive(Clone, Debug)]
pub struct Net {
    /// The namespace holding the bridge `br0` (the router's for a home net).
    bridge_ns: String,
    v4: Option<(Ipv4Addr, Option<Ipv4Addr>)>, // (network base, gateway)
    v6: Option<Ipv6Addr>,                     // network base (/64), no gateway
    /// The router of a home network.
    pub router: Option<Host>,
}

/// A set of namespaces and links, removed on drop.
pub struct Topology {
    prefix: String,
    namespaces: Vec<String>,
    family: Family,
    /// The public internet (hosts added with [`Topology::public_host`]).
    internet: Net,
    homes: u8,
    lans: u8,
    hosts_on: std::collections::HashMap<String, u8>,
    links: u32,
}

fn required() -> bool {
    std::env::var("PEERSHARE_REQUIRE_ROOT_TESTS").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Prints why `test` is skipped and returns `true`, or panics when the tests are required.
pub fn skip(test: &str, why: &str) -> bool {
    assert!(
        !required(),
        "{test}: {why}, and PEERSHARE_REQUIRE_ROOT_TESTS is set"
    );
    eprintln!("SKIPPED {test}: {why} (set PEERSHARE_REQUIRE_ROOT_TESTS=1 to fail instead)");
    true
}

/// Whether `python3` is here (tests use it as a neutral UDP/TCP tool inside namespaces);
/// prints why not, or panics when the tests are required.
pub fn has_python(test: &str) -> bool {
    runs("python3", &["--version"]) || !skip(test, "python3 is not installed")
}

fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Why namespaces cannot be made here, if they cannot.
fn missing(nat: bool) -> Option<String> {
    if !runs("ip", &["-V"]) {
        return Some("`ip` (iproute2) is not installed".into());
    }
    if nat && !runs("nft", &["--version"]) {
        return Some("`nft` (nftables) is not installed".into());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("creating network namespaces needs root".into());
    }
    None
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

static TOPOLOGIES: AtomicU32 = AtomicU32::new(0);

impl Topology {
    /// A topology with just the public internet, or `None` (after printing why) when this
    /// machine cannot build one and the test is to be skipped. `nat`: whether the test will
    /// add home networks (then `nft` is required too).
    pub fn new(test: &str, family: Family, nat: bool) -> Option<Topology> {
        if let Some(why) = missing(nat) {
            skip(test, &why);
            return None;
        }
        let n = TOPOLOGIES.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("ps{}x{n}-", std::process::id());
        let mut t = Topology {
            prefix,
            namespaces: Vec::new(),
            family,
            internet: Net {
                bridge_ns: String::new(),
                v4: family.v4().then_some((Ipv4Addr::new(203, 0, 113, 0), None)),
                v6: family
                    .v6()
                    .then_some(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0)),
                router: None,
            },
            homes: 0,
            lans: 0,
            hosts_on: Default::default(),
            links: 0,
        };
        let inet = t.namespace("inet");
        t.bridge(&inet);
        t.internet.bridge_ns = inet;
        Some(t)
    }

    fn namespace(&mut self, name: &str) -> String {
        let ns = format!("{}{name}", self.prefix);
        assert!(ns.len() <= 64, "namespace name too long: {ns}");
        ip(&["netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        // No duplicate address detection: IPv6 addresses usable at once.
        sh_in(
            &ns,
            "sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0",
        );
        ns
    }

    fn bridge(&self, ns: &str) {
        ip(&["-n", ns, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", ns, "link", "set", "br0", "up"]);
    }

    /// A veth pair: `inner` in `ns`, its peer attached to `net`'s bridge; both up.
    fn plug(&mut self, ns: &str, inner: &str, net: &Net) {
        self.links += 1;
        let outer = format!("v{}", self.links);
        ip(&[
            "-n",
            &net.bridge_ns,
            "link",
            "add",
            &outer,
            "type",
            "veth",
            "peer",
            "name",
            inner,
            "netns",
            ns,
        ]);
        ip(&["-n", &net.bridge_ns, "link", "set", &outer, "master", "br0"]);
        ip(&["-n", &net.bridge_ns, "link", "set", &outer, "up"]);
        ip(&["-n", ns, "link", "set", inner, "up"]);
    }

    /// The next host number on `net` (10, 11, …).
    fn next_on(&mut self, net: &Net) -> u8 {
        let k = self.hosts_on.entry(net.bridge_ns.clone()).or_insert(9);
        *k += 1;
        *k
    }

    fn add_host(&mut self, name: &str, net: &Net) -> Host {
        let ns = self.namespace(name);
        self.plug(&ns, "eth0", net);
        let k = self.next_on(net);
        let mut host = Host {
            ns: ns.clone(),
            ip: None,
            ip6: None,
        };
        if let Some((base, gw)) = net.v4 {
            let o = base.octets();
            let a = Ipv4Addr::new(o[0], o[1], o[2], k);
            ip(&["-n", &ns, "addr", "add", &format!("{a}/24"), "dev", "eth0"]);
            if let Some(gw) = gw {
                ip(&["-n", &ns, "route", "add", "default", "via", &gw.to_string()]);
            }
            host.ip = Some(a);
        }
        if let Some(base) = net.v6 {
            let s = base.segments();
            let a = Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, k as u16);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{a}/64"),
                "dev",
                "eth0",
                "nodad",
            ]);
            host.ip6 = Some(a);
        }
        host
    }

    /// A host on the public internet (203.0.113.10, .11, … and/or 2001:db8:1::a, …).
    pub fn public_host(&mut self, name: &str) -> Host {
        let inet = self.internet.clone();
        self.add_host(name, &inet)
    }

    /// A home network 192.168.K.0/24 behind a router doing `nat` to the internet (IPv4 only).
    pub fn home(&mut self, name: &str, nat: Nat) -> Net {
        assert!(self.family.v4(), "home networks are IPv4 only");
        self.homes += 1;
        let k = self.homes;
        let rns = self.namespace(&format!("{name}-r"));
        let inet = self.internet.clone();
        self.plug(&rns, "wan", &inet);
        let wan = Ipv4Addr::new(203, 0, 113, 100 + k);
        ip(&[
            "-n",
            &rns,
            "addr",
            "add",
            &format!("{wan}/24"),
            "dev",
            "wan",
        ]);
        self.bridge(&rns);
        let gw = Ipv4Addr::new(192, 168, k, 1);
        ip(&["-n", &rns, "addr", "add", &format!("{gw}/24"), "dev", "br0"]);
        sh_in(&rns, "sysctl -qw net.ipv4.ip_forward=1");
        let random = if nat == Nat::Symmetric { " random" } else { "" };
        let rules = format!(
            "table ip nat {{\n chain post {{\n  type nat hook postrouting priority srcnat;\n  \
             oifname \"wan\" masquerade{random}\n }}\n}}\n"
        );
        let out = Command::new("ip")
            .args(["netns", "exec", &rns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().expect("stdin").write_all(rules.as_bytes())?;
                c.wait_with_output()
            })
            .expect("run nft");
        assert!(
            out.status.success(),
            "nft in {rns}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Net {
            bridge_ns: rns.clone(),
            v4: Some((Ipv4Addr::new(192, 168, k, 0), Some(gw))),
            v6: None,
            router: Some(Host {
                ns: rns,
                ip: Some(wan),
                ip6: None,
            }),
        }
    }

    /// A LAN with no router: 10.77.K.0/24 and/or fd77:K::/64 on a bridge of its own.
    pub fn lan(&mut self, name: &str) -> Net {
        self.lans += 1;
        let k = self.lans;
        let ns = self.namespace(&format!("{name}-sw"));
        self.bridge(&ns);
        Net {
            bridge_ns: ns,
            v4: self
                .family
                .v4()
                .then_some((Ipv4Addr::new(10, 77, k, 0), None)),
            v6: self
                .family
                .v6()
                .then_some(Ipv6Addr::new(0xfd77, k as u16, 0, 0, 0, 0, 0, 0)),
            router: None,
        }
    }

    /// A host on `net` (a home network or a LAN).
    pub fn host(&mut self, name: &str, net: &Net) -> Host {
        self.add_host(name, net)
    }
}

fn sh_in(ns: &str, line: &str) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", line])
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "in {ns}: {line}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            // Processes left in a namespace would keep its network alive after `netns del`.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}
