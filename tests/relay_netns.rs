//! The relay across real NATs (network namespaces): the index on the public net, two peers
//! each behind a symmetric NAT (`masquerade random`: no port forwarding, no hole punching).
//! The sharing peer registers as reached through the relay and `get` downloads through it,
//! saying "relayed". Needs root, `ip` and `nft` (skipped, or failed in CI).
//!
//! The same through a member volunteering as a relay, at an index that relays nothing itself.
//!
//! With `PEERSHARE_RELAY_MEASURE=MiB` set, it also times a direct and a relayed download of a
//! file that large (index with `--relay-rate 0`) and prints time to first byte, throughput
//! and the index's CPU time per relayed GiB: figures for the notes, not asserted.

mod common;
#[path = "common/netns.rs"]
mod netns;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Lines, Running, b3sum, data, the_used_source};
use netns::{Family, Host, Nat, Topology};

const BIN: &str = env!("CARGO_BIN_EXE_peershare");

fn start_in(host: &Host, args: &[&str], home: &Path) -> Running {
    let mut cmd = host.command(BIN);
    cmd.args(args)
        .env("PEERSHARE_HOME", home)
        .env_remove("PEERSHARE_INDEX");
    Running::spawn_lines(cmd, None, Lines::Stdout)
}

fn get_in(host: &Host, args: &[&str], home: &Path) -> std::process::Output {
    host.command(BIN)
        .args(args)
        .env("PEERSHARE_HOME", home)
        .env_remove("PEERSHARE_INDEX")
        .output()
        .expect("run get")
}

/// User and system CPU time of process `pid` so far.
fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

#[test]
fn get_through_the_relay_between_two_symmetric_nats() {
    let name = "get_through_the_relay_between_two_symmetric_nats";
    let Some(mut t) = Topology::new(name, Family::V4, true) else {
        return;
    };
    let measure: Option<usize> = std::env::var("PEERSHARE_RELAY_MEASURE")
        .ok()
        .and_then(|v| v.parse().ok());
    let public = t.public_host("index");
    let home_a = t.home("a", Nat::Symmetric);
    let home_b = t.home("b", Nat::Symmetric);
    let sharer = t.host("sharer", &home_a);
    let getter = t.host("getter", &home_b);
    let open_sharer = t.public_host("open");
    let tmp = tempfile::tempdir().unwrap();

    let mut index_args = vec!["index", "--listen", "0.0.0.0:50000"];
    if measure.is_some() {
        index_args.extend(["--relay-rate", "0"]);
    }
    let mut index = start_in(&public, &index_args, &tmp.path().join("ix"));
    index.wait_line("listening on");
    let ix = format!("{}:50000", public.v4());

    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    let size = measure.map_or(3 * 262_144 + 17, |mib| mib << 20);
    std::fs::write(shared.join("behind-nat.bin"), data(size, 5)).unwrap();
    let id = b3sum(&shared.join("behind-nat.bin"));
    let dir = shared.to_str().unwrap();
    let mut share = start_in(
        &sharer,
        &["share", dir, "--index", &ix, "--listen", "0.0.0.0:40000"],
        &tmp.path().join("sharer"),
    );
    let line = share.wait_line("reachable through the index's relay");
    // The index sees the NAT's public address, not the home one.
    assert!(line.contains("203.0.113."), "{line}");

    let dl = tmp.path().join("dl");
    let started = Instant::now();
    let out = get_in(
        &getter,
        &[
            "get",
            &id,
            "-o",
            dl.to_str().unwrap(),
            "--json",
            "--index",
            &ix,
        ],
        &tmp.path().join("getter"),
    );
    let relayed_took = started.elapsed();
    let used = [the_used_source(&out)];
    assert_eq!(used[0]["reached"], "relayed");
    assert_eq!(used[0]["relay"], ix.as_str());
    assert_eq!(used[0]["bytes"], size as u64);
    assert_eq!(b3sum(&dl.join("behind-nat.bin")), id);

    if let Some(mib) = measure {
        let sharer_id = peer_id(&share.seen_or_wait("registered with index"));
        measure_direct_vs_relayed(
            mib,
            &sharer_id,
            &mut index,
            &open_sharer,
            &getter,
            &ix,
            &id,
            &shared,
            tmp.path(),
            relayed_took,
        );
    }
    drop(share);
    drop(index);
    drop(t);
}

/// The same through a member volunteering as a relay on the public net (`share --relay`), at
/// an index that relays nothing itself (`--no-relay`): the sharing peer registers all the
/// same, and `get` downloads through the volunteer, saying "relayed".
///
/// With `PEERSHARE_RELAY_MEASURE=MiB` set, also prints the volunteer's throughput and CPU
/// time per relayed GiB (its `--relay-rate 0`).
#[test]
fn get_through_a_volunteer_relay_between_two_symmetric_nats() {
    let name = "get_through_a_volunteer_relay_between_two_symmetric_nats";
    let Some(mut t) = Topology::new(name, Family::V4, true) else {
        return;
    };
    let measure: Option<usize> = std::env::var("PEERSHARE_RELAY_MEASURE")
        .ok()
        .and_then(|v| v.parse().ok());
    let public = t.public_host("index");
    let helper = t.public_host("volunteer");
    let home_a = t.home("a", Nat::Symmetric);
    let home_b = t.home("b", Nat::Symmetric);
    let sharer = t.host("sharer", &home_a);
    let getter = t.host("getter", &home_b);
    let tmp = tempfile::tempdir().unwrap();

    let mut index = start_in(
        &public,
        &["index", "--listen", "0.0.0.0:50000", "--no-relay"],
        &tmp.path().join("ix"),
    );
    index.wait_line("listening on");
    let ix = format!("{}:50000", public.v4());
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let mut volunteer_args = vec![
        "share",
        empty.to_str().unwrap(),
        "--index",
        &ix,
        "--listen",
        "0.0.0.0:40002",
        "--relay",
    ];
    if measure.is_some() {
        volunteer_args.extend(["--relay-rate", "0"]);
    }
    let mut volunteer = start_in(&helper, &volunteer_args, &tmp.path().join("volunteer"));
    volunteer.wait_line("relaying for the other members");

    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    let size = measure.map_or(3 * 262_144 + 17, |mib| mib << 20);
    std::fs::write(shared.join("behind-nat.bin"), data(size, 6)).unwrap();
    let id = b3sum(&shared.join("behind-nat.bin"));
    let mut share = start_in(
        &sharer,
        &[
            "share",
            shared.to_str().unwrap(),
            "--index",
            &ix,
            "--listen",
            "0.0.0.0:40000",
        ],
        &tmp.path().join("sharer"),
    );
    share.wait_line("reachable through the index's relay");

    let dl = tmp.path().join("dl");
    let cpu0 = cpu_of(volunteer.child.id());
    let started = Instant::now();
    let mut args = vec![
        "get",
        &id,
        "-o",
        dl.to_str().unwrap(),
        "--json",
        "--index",
        &ix,
    ];
    // Measured: the relay itself, without the punch a symmetric NAT makes fail first.
    if measure.is_some() {
        args.push("--no-punch");
    }
    let out = get_in(&getter, &args, &tmp.path().join("getter"));
    let took = started.elapsed();
    let cpu = cpu_of(volunteer.child.id()) - cpu0;
    let used = [the_used_source(&out)];
    assert_eq!(used[0]["reached"], "relayed");
    assert_eq!(used[0]["relay"], format!("{}:40002", helper.v4()).as_str());
    assert_eq!(used[0]["bytes"], size as u64);
    assert_eq!(b3sum(&dl.join("behind-nat.bin")), id);
    if let Some(mib) = measure {
        eprintln!(
            "MEASURE {mib} MiB through a volunteer: {:.2} s ({:.1} MiB/s), volunteer CPU {:.2} s \
             = {:.2} s per relayed GiB",
            took.as_secs_f64(),
            mib as f64 / took.as_secs_f64(),
            cpu.as_secs_f64(),
            cpu.as_secs_f64() / (mib as f64 / 1024.0)
        );
    }
    drop(share);
    drop(volunteer);
    drop(index);
    drop(t);
}

/// A group whose index runs at one member's home, forwarded on its router: the member sharing
/// from that same home is reached by the index at its private LAN address, which no one
/// outside can connect to. It keeps a control channel for that, and a member behind another
/// NAT downloads from it through the index's relay (its direct connection and hole punch to
/// the private address fail first).
#[test]
fn a_peer_on_the_index_lan_is_relayed_to_the_others() {
    let name = "a_peer_on_the_index_lan_is_relayed_to_the_others";
    let Some(mut t) = Topology::new(name, Family::V4, true) else {
        return;
    };
    let home_a = t.home("a", Nat::EndpointIndependent);
    let home_b = t.home("b", Nat::Symmetric);
    let index_host = t.host("index", &home_a);
    let sharer = t.host("sharer", &home_a);
    let getter = t.host("getter", &home_b);
    let router = home_a.router.clone().expect("a home has a router");
    // Port forwarding of the index's port, TCP and UDP, as a user sets it on a home router.
    router.sh(&format!(
        "nft add table ip pf && \
         nft add chain ip pf pre '{{ type nat hook prerouting priority dstnat; }}' && \
         nft add rule ip pf pre iifname wan tcp dport 50000 dnat to {ix}:50000 && \
         nft add rule ip pf pre iifname wan udp dport 50000 dnat to {ix}:50000",
        ix = index_host.v4()
    ));
    let tmp = tempfile::tempdir().unwrap();
    let mut index = start_in(
        &index_host,
        &["index", "--listen", "0.0.0.0:50000"],
        &tmp.path().join("ix"),
    );
    index.wait_line("listening on");
    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    let size = 2 * 262_144 + 9;
    std::fs::write(shared.join("at-home.bin"), data(size, 7)).unwrap();
    let id = b3sum(&shared.join("at-home.bin"));
    // The sharer registers with the index on its own LAN, as the index's own host would.
    let local_ix = format!("{}:50000", index_host.v4());
    let mut share = start_in(
        &sharer,
        &[
            "share",
            shared.to_str().unwrap(),
            "--index",
            &local_ix,
            "--listen",
            "0.0.0.0:40000",
        ],
        &tmp.path().join("sharer"),
    );
    let at = share.wait_line("reachable at ");
    assert!(
        at.contains("192.168.1."),
        "the index reaches it on the LAN: {at}"
    );

    // Outside, through the router's forwarded port.
    let ix = format!("{}:50000", router.v4());
    let dl = tmp.path().join("dl");
    let out = get_in(
        &getter,
        &[
            "get",
            &id,
            "-o",
            dl.to_str().unwrap(),
            "--json",
            "--index",
            &ix,
        ],
        &tmp.path().join("getter"),
    );
    let used = [the_used_source(&out)];
    assert_eq!(used[0]["reached"], "relayed", "{:?}", used[0]);
    assert_eq!(used[0]["bytes"], size as u64);
    assert_eq!(b3sum(&dl.join("at-home.bin")), id);
    drop(share);
    drop(index);
    drop(t);
}

/// Prints time to first byte (time to first verified piece is not visible from outside, so:
/// a one-piece file's whole download), throughput and index CPU per relayed GiB.
#[allow(clippy::too_many_arguments)]
fn measure_direct_vs_relayed(
    mib: usize,
    sharer_id: &str,
    index: &mut Running,
    open_sharer: &Host,
    getter: &Host,
    ix: &str,
    id: &str,
    shared: &Path,
    tmp: &Path,
    _first: Duration,
) {
    let pid = index.child.id();
    // The same file from a peer on the public net: direct.
    let mut open = start_in(
        open_sharer,
        &[
            "share",
            shared.to_str().unwrap(),
            "--index",
            ix,
            "--listen",
            "0.0.0.0:40001",
        ],
        &tmp.join("open"),
    );
    let open_id = peer_id(&open.wait_line("registered with index"));
    open.seen_or_wait("reachable at ");
    let small = tmp.join("small");
    std::fs::create_dir_all(&small).unwrap();
    // `--no-punch` leaves out the hole punch a symmetric NAT makes fail after its deadline:
    // the relay itself is measured, and the punch's cost separately.
    let time_get = |peer: &str, what: &str, tag: &str, punch: bool| {
        let dl = tmp.join(format!("m-{tag}"));
        let cpu0 = cpu_of(pid);
        let t0 = Instant::now();
        let mut args = vec![
            "get",
            what,
            "-o",
            dl.to_str().unwrap(),
            "--json",
            "--index",
            ix,
            "--peer",
            peer,
            "--no-share",
        ];
        if !punch {
            args.push("--no-punch");
        }
        let out = get_in(getter, &args, &tmp.join(format!("g-{tag}")));
        let took = t0.elapsed();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (took, cpu_of(pid) - cpu0)
    };
    let (direct, _) = time_get(&open_id, id, "direct", false);
    let (relayed, cpu) = time_get(sharer_id, id, "relayed", false);
    let gib = mib as f64 / 1024.0;
    eprintln!(
        "MEASURE {mib} MiB: direct {:.2} s ({:.1} MiB/s), relayed {:.2} s ({:.1} MiB/s), \
         index CPU {:.2} s = {:.2} s per relayed GiB",
        direct.as_secs_f64(),
        mib as f64 / direct.as_secs_f64(),
        relayed.as_secs_f64(),
        mib as f64 / relayed.as_secs_f64(),
        cpu.as_secs_f64(),
        cpu.as_secs_f64() / gib
    );
    // Time to first byte: a file of one piece, whole (lookup, connect, TLS, one piece).
    std::fs::write(shared.join("tiny.txt"), b"first byte").unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let tiny = b3sum(&shared.join("tiny.txt"));
    let ttfb = |peer: &str, tag: &str, punch: bool| {
        let mut best = Duration::MAX;
        for i in 0..5 {
            let (t, _) = time_get(peer, &tiny, &format!("{tag}{i}"), punch);
            best = best.min(t);
        }
        best
    };
    let d = ttfb(&open_id, "td", false);
    let r = ttfb(sharer_id, "tr", false);
    let p = ttfb(sharer_id, "tp", true);
    eprintln!(
        "MEASURE time to a one-piece file (whole get process, best of 5): direct {:.0} ms, \
         relayed {:.0} ms, relayed after the failed punch (the default) {:.0} ms",
        d.as_secs_f64() * 1000.0,
        r.as_secs_f64() * 1000.0,
        p.as_secs_f64() * 1000.0
    );
    drop(open);
}

/// The N of a "registered with index … as peer N: …" line.
fn peer_id(line: &str) -> String {
    line.split("as peer ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .unwrap_or_else(|| panic!("no peer id in {line:?}"))
        .trim()
        .to_string()
}
