//! Port mapping through a real home router: network namespaces where the router runs
//! miniupnpd (Debian's `miniupnpd-nftables`: UPnP-IGD, NAT-PMP and PCP); a sharing peer
//! behind it maps its port, registers the mapped address, keeps it through renewals, is
//! downloaded from directly by a peer on the public net, and removes the mapping on SIGTERM.

mod common;
#[path = "common/netns.rs"]
mod netns;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use netns::{Host, Nat, Topology};

const BIN: &str = env!("CARGO_BIN_EXE_peershare");

/// The lease the peer asks for: short, so that the test sees it renewed.
const LEASE_SECS: u64 = 3;

/// miniupnpd running in a home router's namespace.
struct Miniupnpd {
    child: Child,
    log: PathBuf,
    router: Host,
}

impl Drop for Miniupnpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Miniupnpd {
    /// The mappings in the router's nftables ruleset (miniupnpd's own table).
    fn ruleset(&self) -> String {
        self.router.sh("nft list table inet miniupnpd")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Whether miniupnpd is installed (else skipped, or failed when the tests are required).
fn has_miniupnpd(test: &str) -> bool {
    Command::new("miniupnpd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
        || !netns::skip(
            test,
            "miniupnpd is not installed (Debian: miniupnpd-nftables)",
        )
}

/// The router's external address as miniupnpd reports it. miniupnpd refuses to map ports
/// when its external address is a reserved one (TEST-NET-3 included: "not public
/// routable"), so the router gets a second, ordinary-looking address on its WAN link, which
/// exists only inside these namespaces; the public hosts route it on-link.
fn external_address(router: &Host) -> Ipv4Addr {
    let [.., last] = router.v4().octets();
    Ipv4Addr::new(11, 0, 113, last)
}

/// Starts miniupnpd on the home network's router: UPnP-IGD always, NAT-PMP and PCP when
/// `pmp`. `public` hosts get a route to the router's external address.
fn start_miniupnpd(router: &Host, public: &[&Host], pmp: bool, dir: &Path) -> Miniupnpd {
    let ext = external_address(router);
    router.sh(&format!("ip addr add {ext}/32 dev wan"));
    for h in public {
        h.sh(&format!("ip route add {ext}/32 dev eth0"));
    }
    // The chains miniupnpd fills (what its nft_init.sh makes, with an accepting forward policy:
    // the router forwards everything else as before).
    router.sh("nft -f - <<'EOF'
table inet miniupnpd {
  chain miniupnpd {
  }
  chain prerouting_miniupnpd {
  }
  chain postrouting_miniupnpd {
  }
  chain forward {
    type filter hook forward priority 0; policy accept;
    jump miniupnpd
  }
  chain prerouting {
    type nat hook prerouting priority -100; policy accept;
    jump prerouting_miniupnpd
  }
  chain postrouting {
    type nat hook postrouting priority 100; policy accept;
    jump postrouting_miniupnpd
  }
}
EOF");
    let conf = dir.join("miniupnpd.conf");
    std::fs::write(
        &conf,
        format!(
            "ext_ifname=wan\next_ip={ext}\nlistening_ip=br0\nhttp_port=0\n\
             enable_upnp=yes\nenable_natpmp={}\nsecure_mode=yes\nsystem_uptime=yes\n\
             min_lifetime=1\n\
             upnp_table_name=miniupnpd\nupnp_nat_table_name=miniupnpd\n\
             upnp_forward_chain=miniupnpd\nupnp_nat_chain=prerouting_miniupnpd\n\
             upnp_nat_postrouting_chain=postrouting_miniupnpd\n\
             uuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07b\n\
             allow 1024-65535 192.168.0.0/16 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n",
            if pmp { "yes" } else { "no" }
        ),
    )
    .unwrap();
    let log = dir.join("miniupnpd.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = router
        .command("miniupnpd")
        .arg("-f")
        .arg(&conf)
        .arg("-P")
        .arg(dir.join("miniupnpd.pid"))
        .arg("-d")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("spawn miniupnpd");
    let d = Miniupnpd {
        child,
        log,
        router: router.clone(),
    };
    let ready = if pmp {
        "Listening for NAT-PMP/PCP traffic"
    } else {
        "HTTP listening on port"
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.log().contains(ready) {
        assert!(
            Instant::now() < deadline,
            "miniupnpd not ready: {}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    d
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn in_ns(host: &Host, args: &[&str], home: &Path) -> Command {
    let mut cmd = host.command(BIN);
    cmd.args(args)
        .env("PEERSHARE_HOME", home)
        .env_remove("PEERSHARE_INDEX");
    cmd
}

/// Sends SIGTERM to `run`'s process and waits (at most 15 s) for it to end.
/// `peershare index` on port 50000 of `host`, once it listens, and its `HOST:PORT`.
fn index_on(host: &Host, home: &Path) -> (Running, String) {
    let mut index = Running::spawn_lines(
        in_ns(host, &["index", "--listen", "0.0.0.0:50000"], home),
        None,
        Lines::Stdout,
    );
    index.wait_line("listening on");
    (index, format!("{}:50000", host.v4()))
}

/// Starts `args` (a share behind a NAT that maps nothing) on `host`, and checks it serves at
/// once and has its index's answer within the mapping attempt's bound (under 2 s) plus the
/// index's address check, which a router dropping new connections from outside lets run to
/// its 5 s deadline. Its lines never claim a mapped address.
fn unmapped_share_registers(test: &str, host: &Host, args: &[&str], home: &Path) -> Running {
    let started = Instant::now();
    let mut peer = Running::spawn_lines(in_ns(host, args, home), None, Lines::Both);
    peer.wait_line("listening on");
    let serving = started.elapsed();
    let mut answered = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while answered.is_none() && Instant::now() < deadline {
        let l = peer.wait_line("");
        if l.contains("registered with index") || l.contains("no registration") {
            answered = Some(started.elapsed());
        }
        assert!(!l.contains("reachable at"), "{l}");
    }
    let answered = answered.unwrap_or_else(|| panic!("index never asked: {:?}", peer.seen));
    eprintln!("{test} {args:?}: serving after {serving:?}, index answered after {answered:?}");
    assert!(serving < Duration::from_secs(3), "{serving:?}");
    assert!(answered < Duration::from_secs(9), "{answered:?}");
    peer
}

fn terminate(run: &mut Running) {
    // `ip netns exec` runs the program in its own process (exec), so this is peershare.
    let pid = run.child.id() as libc::pid_t;
    // SAFETY: kill has no memory-safety preconditions; the pid is our own child's.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if run.child.try_wait().unwrap().is_some() {
            return;
        }
        assert!(Instant::now() < deadline, "share did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A peer behind the router shares; a public peer downloads from it directly at the mapped
/// address; the mapping outlives several leases (renewed) and is gone after SIGTERM.
/// Returns the method the share printed.
fn mapped_share_is_downloaded_directly(test: &str, pmp: bool) -> Option<String> {
    if !has_miniupnpd(test) {
        return None;
    }
    let mut t = Topology::new(test, netns::Family::V4, true)?;
    let ix_host = t.public_host("ix");
    let dl_host = t.public_host("dl");
    let home = t.home("home", Nat::EndpointIndependent);
    let peer_host = t.host("peer", &home);
    let router = home.router.clone().expect("a home net has a router");
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_miniupnpd(&router, &[&ix_host, &dl_host], pmp, dir.path());
    let ext = external_address(&router);

    let share = dir.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("behind-nat.bin"), data(900_000, 15)).unwrap();

    let (_index, ix) = index_on(&ix_host, &dir.path().join("ix"));
    let lease = format!("{LEASE_SECS}s");
    let started = Instant::now();
    let mut peer = Running::spawn_lines(
        in_ns(
            &peer_host,
            &[
                "share",
                share.to_str().unwrap(),
                "--index",
                &ix,
                "--port-mapping-lease",
                &lease,
            ],
            &dir.path().join("peer"),
        ),
        None,
        Lines::Stdout,
    );
    let reachable = peer.wait_line("reachable at");
    let took = started.elapsed();
    // "reachable at 11.0.113.101:PORT (port mapped by PCP on the router)"
    let external = reachable
        .split_whitespace()
        .nth(2)
        .expect("address")
        .to_string();
    assert!(
        external.starts_with(&format!("{ext}:")),
        "{reachable}; daemon: {}",
        daemon.log()
    );
    let method = reachable
        .split("port mapped by ")
        .nth(1)
        .and_then(|r| r.strip_suffix(" on the router)"))
        .unwrap_or_else(|| panic!("{reachable}"))
        .to_string();
    let port: u16 = external.rsplit(':').next().unwrap().parse().unwrap();
    peer.seen_or_wait("registered with index");
    eprintln!("{test}: mapped by {method} in {took:?}");

    // TCP and UDP of the port are forwarded to the peer.
    let rules = daemon.ruleset();
    let forwarded = |rules: &str, proto: u8| {
        rules.lines().any(|l| {
            l.contains(&format!("dport {port}"))
                && l.contains(&format!("0x{proto:x}"))
                && l.contains("dnat")
        })
    };
    assert!(forwarded(&rules, 6), "TCP {port} not forwarded: {rules}");
    assert!(forwarded(&rules, 17), "UDP {port} not forwarded: {rules}");

    // Several leases later the mapping is still there: renewed.
    std::thread::sleep(Duration::from_secs(LEASE_SECS * 2 + 1));
    let rules = daemon.ruleset();
    assert!(forwarded(&rules, 6), "lapsed: {rules}\n{}", daemon.log());

    // The index lists the mapped address (it checked it: §7.1), and the public peer
    // downloads from there.
    let client = dir.path().join("dl");
    let out = in_ns(
        &dl_host,
        &["search", "behind-nat", "--json", "--index", &ix],
        &client,
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let hit = &doc["files"][0];
    assert_eq!(hit["peers"][0]["host"], ext.to_string(), "{doc}");
    assert_eq!(hit["peers"][0]["port"], port, "{doc}");
    let id = hit["content_id"].as_str().unwrap().to_string();
    let out_dir = dir.path().join("got");
    let out = in_ns(
        &dl_host,
        &[
            "get",
            &id,
            "-o",
            out_dir.to_str().unwrap(),
            "--index",
            &ix,
            "--no-share",
        ],
        &client,
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(b3sum(&out_dir.join("behind-nat.bin")), id);
    assert_eq!(id, b3sum(&share.join("behind-nat.bin")));

    // SIGTERM: the share removes its mappings before it exits.
    terminate(&mut peer);
    let rules = daemon.ruleset();
    assert!(
        !forwarded(&rules, 6) && !forwarded(&rules, 17),
        "mapping left behind: {rules}\n{}",
        daemon.log()
    );
    Some(method)
}

#[test]
fn pcp_mapping_through_miniupnpd() {
    let test = "pcp_mapping_through_miniupnpd";
    if let Some(method) = mapped_share_is_downloaded_directly(test, true) {
        // miniupnpd speaks PCP, which is asked first.
        assert_eq!(method, "PCP");
    }
}

#[test]
fn upnp_mapping_through_miniupnpd() {
    let test = "upnp_mapping_through_miniupnpd";
    if let Some(method) = mapped_share_is_downloaded_directly(test, false) {
        assert_eq!(method, "UPnP");
    }
}

/// A router without any port-mapping service: the share serves at once, and asks the index
/// within the attempt's bound (1.8 s), unmapped; `--no-port-mapping` asks nothing at all.
#[test]
fn no_gateway_service_costs_at_most_the_bound() {
    let test = "no_gateway_service_costs_at_most_the_bound";
    let Some(mut t) = Topology::new(test, netns::Family::V4, true) else {
        return;
    };
    let ix_host = t.public_host("ix");
    let home = t.home("home", Nat::EndpointIndependent);
    let peer_host = t.host("peer", &home);
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("f.bin"), data(1000, 1)).unwrap();
    let (_index, ix) = index_on(&ix_host, &dir.path().join("ix"));
    for extra in [None, Some("--no-port-mapping")] {
        let mut args = vec!["share", share.to_str().unwrap(), "--index", &ix];
        args.extend(extra);
        let mut peer = unmapped_share_registers(test, &peer_host, &args, &dir.path().join("peer"));
        terminate(&mut peer);
    }
}

/// A hostile "gateway" on the router: NAT-PMP/PCP answers of garbage (short, oversized, wrong
/// opcode, a success that maps nothing), and an SSDP answer leading to a device description
/// that trickles forever. The share serves at once, maps nothing, claims no reachability,
/// still asks the index within the bound, and stays up.
#[test]
fn a_lying_gateway_costs_only_the_bound() {
    let test = "a_lying_gateway_costs_only_the_bound";
    if !netns::has_python(test) {
        return;
    }
    let Some(mut t) = Topology::new(test, netns::Family::V4, true) else {
        return;
    };
    let ix_host = t.public_host("ix");
    let home = t.home("home", Nat::EndpointIndependent);
    let peer_host = t.host("peer", &home);
    let router = home.router.clone().expect("router");
    let gw = peer_host.sh("ip route show default");
    let gw = gw.split_whitespace().nth(2).expect("gateway").to_string();
    let script = format!(
        r#"
import socket, struct, threading, time
def pmp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 5351))
    while True:
        data, addr = s.recvfrom(2048)
        print("pmp request", flush=True)
        s.sendto(b"\x00", addr)
        s.sendto(b"\xff" * 1100, addr)
        # NAT-PMP version 0, a wrong opcode, result 0
        s.sendto(struct.pack("!BBHII", 0, 200, 0, 1, 0), addr)
        # PCP version 2, a "success" response for another opcode, lifetime 0
        s.sendto(bytes([2, 0x80 | 7, 0, 0]) + bytes(56), addr)
def ssdp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("", 1900))
    mreq = struct.pack("4s4s", socket.inet_aton("239.255.255.250"), socket.inet_aton("{gw}"))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    while True:
        data, addr = s.recvfrom(2048)
        if b"M-SEARCH" in data:
            print("ssdp search", flush=True)
            st = b"urn:schemas-upnp-org:device:InternetGatewayDevice:1"
            for line in data.split(b"\r\n"):
                if line.lower().startswith(b"st:"):
                    st = line[3:].strip()
            s.sendto(b"HTTP/1.1 200 OK\r\nST: " + st + b"\r\nLOCATION: http://{gw}:5000/rootDesc.xml\r\nUSN: x\r\n\r\n", addr)
def trickle(c):
    try:
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n<root>")
        while True:
            c.sendall(b"<")
            time.sleep(0.05)
    except OSError:
        pass
def http():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 5000))
    s.listen(16)
    while True:
        c, _ = s.accept()
        print("http connection", flush=True)
        threading.Thread(target=trickle, args=(c,), daemon=True).start()
threading.Thread(target=pmp, daemon=True).start()
threading.Thread(target=ssdp, daemon=True).start()
print("ready", flush=True)
http()
"#
    );
    let mut liar = router.command("python3");
    liar.args(["-c", &script]);
    let mut liar = Running::spawn_lines(liar, None, Lines::Both);
    liar.wait_line("ready");

    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("f.bin"), data(1000, 2)).unwrap();
    let (_index, ix) = index_on(&ix_host, &dir.path().join("ix"));
    let mut peer = unmapped_share_registers(
        test,
        &peer_host,
        &["share", share.to_str().unwrap(), "--index", &ix],
        &dir.path().join("peer"),
    );
    assert!(peer.child.try_wait().unwrap().is_none(), "the share died");
    // Each lie was heard: the bound held against all of them.
    for asked in ["pmp request", "ssdp search", "http connection"] {
        liar.seen_or_wait(asked);
    }
    terminate(&mut peer);
}

/// An index on the peer's own LAN: the peer still maps its port (for others), but registers
/// its LAN address there: the index reaches that without the router looping the mapped
/// address back.
#[test]
fn an_index_on_the_lan_gets_the_lan_address() {
    let test = "an_index_on_the_lan_gets_the_lan_address";
    if !has_miniupnpd(test) {
        return;
    }
    let Some(mut t) = Topology::new(test, netns::Family::V4, true) else {
        return;
    };
    let home = t.home("home", Nat::EndpointIndependent);
    let ix_host = t.host("ix", &home);
    let peer_host = t.host("peer", &home);
    let router = home.router.clone().expect("router");
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_miniupnpd(&router, &[], true, dir.path());
    let share = dir.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("lan.bin"), data(5000, 3)).unwrap();
    let (_index, ix) = index_on(&ix_host, &dir.path().join("ix"));
    let mut peer = Running::spawn_lines(
        in_ns(
            &peer_host,
            &["share", share.to_str().unwrap(), "--index", &ix],
            &dir.path().join("peer"),
        ),
        None,
        Lines::Stdout,
    );
    let reachable = peer.wait_line("reachable at");
    assert!(reachable.contains("port mapped by PCP"), "{reachable}");
    peer.seen_or_wait("registered with index");
    let out = in_ns(
        &ix_host,
        &["search", "lan", "--json", "--index", &ix],
        &dir.path().join("c"),
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        doc["files"][0]["peers"][0]["host"],
        peer_host.v4().to_string(),
        "{doc}"
    );
    terminate(&mut peer);
    assert!(!daemon.ruleset().contains("dnat"), "{}", daemon.ruleset());
}

/// A NAT-PMP-only router (RFC 6886; it answers PCP requests "unsupported version", as
/// RFC 6887 §9 has such servers do): a small NAT-PMP server written for this test that
/// forwards with nftables. The share falls back from PCP to NAT-PMP, is downloaded from at
/// the mapped address, and deletes the mapping (lifetime 0) on SIGTERM.
#[test]
fn nat_pmp_only_router() {
    let test = "nat_pmp_only_router";
    if !netns::has_python(test) {
        return;
    }
    let Some(mut t) = Topology::new(test, netns::Family::V4, true) else {
        return;
    };
    let ix_host = t.public_host("ix");
    let dl_host = t.public_host("dl");
    let home = t.home("home", Nat::EndpointIndependent);
    let peer_host = t.host("peer", &home);
    let router = home.router.clone().expect("router");
    let ext = router.v4();
    router.sh("nft -f - <<'EOF'
table ip pmp {
  chain pre {
    type nat hook prerouting priority -100; policy accept;
  }
}
EOF");
    let script = format!(
        r##"
import re, socket, struct, subprocess, time
start = time.time()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5351))
handles = {{}}
print("ready", flush=True)
while True:
    data, addr = s.recvfrom(1100)
    epoch = int(time.time() - start)
    if len(data) < 2:
        continue
    if data[0] != 0:
        s.sendto(struct.pack("!BBHI", 0, 128 | (data[1] & 0x7f), 1, epoch), addr)
        print("pcp refused", flush=True)
        continue
    op = data[1]
    if op == 0:
        s.sendto(struct.pack("!BBHI4s", 0, 128, 0, epoch, socket.inet_aton("{ext}")), addr)
    elif op in (1, 2) and len(data) >= 12:
        _, _, _, iport, eport, life = struct.unpack("!BBHHHI", data[:12])
        proto = "udp" if op == 1 else "tcp"
        key = (proto, iport)
        if key in handles:
            subprocess.run(["nft", "delete", "rule", "ip", "pmp", "pre", "handle", handles.pop(key)], check=True)
        if life > 0:
            out = subprocess.run(["nft", "-e", "-a", "add", "rule", "ip", "pmp", "pre", "iifname", "wan",
                                  proto, "dport", str(iport), "dnat", "to", "%s:%d" % (addr[0], iport)],
                                 check=True, capture_output=True, text=True).stdout
            handles[key] = re.search(r"# handle (\d+)", out).group(1)
            print("mapped", proto, iport, life, flush=True)
        else:
            print("unmapped", proto, iport, flush=True)
        s.sendto(struct.pack("!BBHIHHI", 0, 128 + op, 0, epoch, iport, iport if life else 0, life), addr)
"##
    );
    let mut server = router.command("python3");
    server.args(["-c", &script]);
    let mut server = Running::spawn_lines(server, None, Lines::Both);
    server.wait_line("ready");

    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("pmp.bin"), data(400_000, 9)).unwrap();
    let (_index, ix) = index_on(&ix_host, &dir.path().join("ix"));
    let mut peer = Running::spawn_lines(
        in_ns(
            &peer_host,
            &["share", share.to_str().unwrap(), "--index", &ix],
            &dir.path().join("peer"),
        ),
        None,
        Lines::Stdout,
    );
    let reachable = peer.wait_line("reachable at");
    assert!(
        reachable.contains(&format!("reachable at {ext}:"))
            && reachable.ends_with("(port mapped by NAT-PMP on the router)"),
        "{reachable}"
    );
    peer.seen_or_wait("registered with index");
    server.seen_or_wait("pcp refused");
    server.seen_or_wait("mapped tcp");
    server.seen_or_wait("mapped udp");
    let client = dir.path().join("dl");
    let out = in_ns(
        &dl_host,
        &["search", "pmp", "--json", "--index", &ix],
        &client,
    )
    .output()
    .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        doc["files"][0]["peers"][0]["host"],
        ext.to_string(),
        "{doc}"
    );
    let id = doc["files"][0]["content_id"].as_str().unwrap().to_string();
    let got = dir.path().join("got");
    let out = in_ns(
        &dl_host,
        &[
            "get",
            &id,
            "-o",
            got.to_str().unwrap(),
            "--index",
            &ix,
            "--no-share",
        ],
        &client,
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(b3sum(&got.join("pmp.bin")), id);
    terminate(&mut peer);
    server.seen_or_wait("unmapped tcp");
    server.seen_or_wait("unmapped udp");
    let rules = router.sh("nft list chain ip pmp pre");
    assert!(!rules.contains("dnat"), "{rules}");
}

/// `peershare node` maps its port as `share` does and removes the mapping when it stops.
#[test]
fn the_node_maps_and_unmaps_too() {
    let test = "the_node_maps_and_unmaps_too";
    if !has_miniupnpd(test) {
        return;
    }
    let Some(mut t) = Topology::new(test, netns::Family::V4, true) else {
        return;
    };
    let home = t.home("home", Nat::EndpointIndependent);
    let peer_host = t.host("peer", &home);
    let router = home.router.clone().expect("router");
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_miniupnpd(&router, &[], true, dir.path());
    let share = dir.path().join("share");
    let out = dir.path().join("out");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    let mut node = Running::spawn_lines(
        in_ns(
            &peer_host,
            &[
                "node",
                share.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
                "--no-index",
                "--listen",
                "0.0.0.0:0",
            ],
            &dir.path().join("node"),
        ),
        None,
        Lines::Stdout,
    );
    node.wait_line("web UI at");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !daemon.ruleset().contains("dnat") {
        assert!(Instant::now() < deadline, "not mapped: {}", daemon.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    terminate(&mut node);
    assert!(!daemon.ruleset().contains("dnat"), "{}", daemon.ruleset());
}
