//! The network-namespace topologies of tests/common/netns.rs do what the NAT tests rely on: an
//! endpoint-independent NAT keeps a socket's port for every destination, a symmetric one does
//! not, LAN hosts reach each other and nothing else, an IPv6-only host has no IPv4, and
//! everything is gone once the topology is dropped. Needs root (skipped, or failed in CI).

#[path = "common/netns.rs"]
mod netns;

use netns::{Family, Host, Nat, Topology};
use std::process::Stdio;

/// A UDP server on `host` that answers each datagram with the address it came from.
fn reflector(host: &Host) -> std::process::Child {
    let code = r#"import socket
s = socket.socket(socket.AF_INET6 if ':' in HOST else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((HOST, 4000))
print('ready', flush=True)
while True:
    d, a = s.recvfrom(100)
    s.sendto(('%s:%d' % (a[0], a[1])).encode(), a)
"#;
    let ip = host
        .ip
        .map(|a| a.to_string())
        .unwrap_or_else(|| host.v6().to_string());
    let mut child = host
        .command("python3")
        .args(["-c", &format!("HOST='{ip}'\n{code}")])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready line");
    assert_eq!(line.trim(), "ready");
    child
}

/// From one UDP socket on `host`, how each of `servers` sees it ("ip:port").
fn seen_by(host: &Host, servers: &[String]) -> Vec<String> {
    let code = format!(
        r#"import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.bind(('0.0.0.0', 5555))
for srv in {servers:?}:
    s.sendto(b'x', (srv, 4000))
    print(s.recvfrom(100)[0].decode())
"#
    );
    let out = host
        .command("python3")
        .args(["-c", &code])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn port(seen: &str) -> &str {
    seen.rsplit(':').next().expect("port")
}

#[test]
fn nat_kinds_map_ports_as_named() {
    if !netns::has_python("nat_kinds_map_ports_as_named") {
        return;
    }
    let Some(mut t) = Topology::new("nat_kinds_map_ports_as_named", Family::V4, true) else {
        return;
    };
    let s1 = t.public_host("s1");
    let s2 = t.public_host("s2");
    let cone = t.home("cone", Nat::EndpointIndependent);
    let sym = t.home("sym", Nat::Symmetric);
    let a = t.host("a", &cone);
    let b = t.host("b", &sym);
    let mut r1 = reflector(&s1);
    let mut r2 = reflector(&s2);
    let servers = [s1.v4().to_string(), s2.v4().to_string()];

    let seen = seen_by(&a, &servers);
    let router = cone.router.as_ref().expect("router").v4().to_string();
    assert!(
        seen.iter().all(|s| s.starts_with(&format!("{router}:"))),
        "{seen:?}"
    );
    assert_eq!(
        port(&seen[0]),
        port(&seen[1]),
        "endpoint-independent: {seen:?}"
    );

    let seen = seen_by(&b, &servers);
    let router = sym.router.as_ref().expect("router").v4().to_string();
    assert!(
        seen.iter().all(|s| s.starts_with(&format!("{router}:"))),
        "{seen:?}"
    );
    assert_ne!(port(&seen[0]), port(&seen[1]), "symmetric: {seen:?}");

    // Nobody outside reaches a home host unasked.
    let probe = s1
        .command("python3")
        .args([
            "-c",
            &format!(
                "import socket\ns=socket.create_connection(('{}',22),timeout=1)",
                a.v4()
            ),
        ])
        .output()
        .expect("python3");
    assert!(
        !probe.status.success(),
        "a home host is reachable from outside"
    );
    for c in [&mut r1, &mut r2] {
        let _ = c.kill();
        let _ = c.wait();
    }
}

#[test]
fn lans_and_ipv6_only_hosts_and_cleanup() {
    if !netns::has_python("lans_and_ipv6_only_hosts_and_cleanup") {
        return;
    }
    let Some(mut t) = Topology::new("lans_and_ipv6_only_hosts_and_cleanup", Family::V6, false)
    else {
        return;
    };
    let lan = t.lan("lan");
    let a = t.host("a", &lan);
    let b = t.host("b", &lan);
    let p = t.public_host("p");
    assert!(a.ip.is_none() && p.ip.is_none());
    let mut r = reflector(&b);
    let code = format!(
        "import socket\ns=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM)\ns.settimeout(5)\n\
s.sendto(b'x',('{}',4000))\nprint(s.recvfrom(100)[0].decode())",
        b.v6()
    );
    let out = a
        .command("python3")
        .args(["-c", &code])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&a.v6().to_string()));
    assert!(
        !a.sh("ip -4 addr show dev eth0").contains("inet "),
        "IPv4 on an IPv6-only host"
    );
    // The public net is not reachable from the LAN: no route.
    let code = format!(
        "import socket\ns=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM)\n\
try:\n    s.sendto(b'x',('{}',4000))\nexcept OSError as e:\n    print(e.errno)",
        p.v6()
    );
    let out = a
        .command("python3")
        .args(["-c", &code])
        .output()
        .expect("python3");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "101",
        "ENETUNREACH expected"
    );
    let _ = r.kill();
    let _ = r.wait();
    let names = [a.ns.clone(), b.ns.clone(), p.ns.clone()];
    drop(t);
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip");
    let list = String::from_utf8_lossy(&list.stdout);
    for n in names {
        assert!(!list.contains(&n), "{n} left behind");
    }
}
