#!/usr/bin/python3
# lt_dht.py: a network of libtorrent DHT nodes on 127.0.0.1, driven by JSON lines on stdin, for
# peershare's interop tests against the reference Mainline DHT implementation
# (tests/dht_libtorrent.rs). Needs Debian's python3-libtorrent (2.0.8) for the system python:
#
#   /usr/bin/python3 scripts/lt_dht.py --nodes 6 [--bootstrap 127.0.0.1:PORT ...] [--log FILE]
#                                      [--block-ratelimit N]
#
# It starts N libtorrent sessions as DHT-only nodes, each on its own UDP port of 127.0.0.1, and
# makes each of them contact every other one and every --bootstrap address. Then it prints
#   {"ready": true, "ports": [...]}
# and answers one JSON line per command line (every answer has "ok"; errors have "error"):
#   {"cmd": "ports"}                              -> {"ok": true, "ports": [...]}
#   {"cmd": "add", "addr": "127.0.0.1:P"}         every node contacts one more node
#   {"cmd": "routing"}                            -> {"ok": true, "nodes": [{"node": i, "id": HEX,
#        "port": P, "table": [{"id": HEX, "addr": "IP:PORT"}...]}...]}: each routing table
#   {"cmd": "get_peers", "node": i, "info_hash": HEX, "timeout": S}
#        -> {"ok": true, "peers": ["IP:PORT"...]}: a lookup from node i (libtorrent posts a reply
#        alert per answer carrying peers and none at the end: the lookup is given up to
#        "timeout" s, default 10, and ends 0.3 s after the last reply). With "nodes": [i...]
#        instead, lookups from each at once -> {"ok": true, "peers": {"i": [...]...}}
#   {"cmd": "announce", "node": i, "info_hash": HEX} -> {"ok": true, "port": P}: node i announces
#        itself (its own port: the python binding of 2.0.8 does not export dht_announce's flags
#        type, so session.dht_announce cannot be called; a magnet of the info-hash is added
#        instead, with outgoing peer connections off, and announced with force_dht_announce)
#   {"cmd": "announced", "info_hash": HEX}        -> {"ok": true, "by": [{"node": i,
#        "from": "IP:PORT"}...]}: the announce_peer requests the nodes have received for it
#   {"cmd": "senders"}                            -> {"ok": true, "senders": {"IP:PORT": {"ids":
#        [HEX...], "ro": [0 or 1...], "queries": N}...}}: every other endpoint that sent the
#        nodes queries, with the node ids and BEP 43 "ro" values it used (a node should use
#        one id for every message)
#   {"cmd": "values"}                             -> {"ok": true, "values": {"IP:PORT":
#        {"replies": N, "duplicates": ["IP:PORT"...]}...}}: every node that answered the nodes'
#        get_peers with peers ("values"), and the peers it listed more than once in one answer
#   {"cmd": "stats"}                              -> per node: routing table buckets, lookups
#   {"cmd": "quit"}                               -> {"ok": true}, then exits
# It also exits when stdin closes. --log FILE writes libtorrent's DHT log and packets there.
#
# libtorrent settings that matter on one loopback address (the defaults are for the internet):
#  - dht_restrict_routing_ips / dht_restrict_search_ips off: else one node per IP is kept.
#  - dht_block_ratelimit: by default (5) an IP sending 50 packets within 10 s is ignored for
#    dht_block_timeout (5 min); every node here has the same IP. --block-ratelimit N sets it
#    (default here: 1000000), e.g. 5 to see what a real libtorrent node does to a fast sender.
#  - dht_upload_rate_limit: 8 kB/s by default (and 0 crashes 2.0.8 with SIGFPE).
#  - nodes are added with add_dht_node, not dht_bootstrap_nodes: libtorrent treats bootstrap
#    nodes as routers and never keeps a router's endpoint in its routing table.

import argparse
import json
import os
import select
import sys
import tempfile
import time
import warnings

import libtorrent as lt

SETTLE = 0.3  # a get_peers lookup ends this long after its last reply
STARTUP_TIMEOUT = 10.0  # the nodes' UDP sockets must be up by then
MAX_WAIT = 60.0  # the longest "timeout" a command may ask for


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def parse_addr(s):
    host, sep, port = s.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("not HOST:PORT: %r" % s)
    return host.strip("[]"), int(port)


def parse_hash(s):
    if not isinstance(s, str) or len(s) != 40:
        raise ValueError("info_hash must be 40 hex digits")
    return lt.sha1_hash(bytes.fromhex(s))


def settings(block_ratelimit):
    cat = lt.alert.category_t
    # dht_log_notification brings the packets (dht_pkt_alert), for "senders".
    mask = (
        cat.dht_notification
        | cat.dht_log_notification
        | cat.dht_operation_notification
        | cat.status_notification
        | cat.error_notification
    )
    return {
        "listen_interfaces": "127.0.0.1:0",
        "enable_dht": True,
        "dht_bootstrap_nodes": "",
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        # DHT only: no BitTorrent peer connections (announce adds a torrent, see above).
        "enable_outgoing_tcp": False,
        "enable_outgoing_utp": False,
        "enable_incoming_tcp": False,
        "enable_incoming_utp": False,
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "dht_block_ratelimit": block_ratelimit,
        "dht_upload_rate_limit": 100000000,
        "alert_mask": mask,
        "alert_queue_size": 100000,
    }


class Net:
    def __init__(self, n, log, block_ratelimit):
        self.log = log
        self.sessions = [lt.session(settings(block_ratelimit)) for _ in range(n)]
        self.ports = [None] * n
        self.replies = {}  # (node, info_hash hex) -> [peers], [time of last reply]
        self.announced = {}  # info_hash hex -> [(node, "ip:port")]
        self.live = {}  # node -> routing table from the latest dht_live_nodes_alert
        self.stats = {}  # node -> latest dht_stats_alert, as a dict
        self.torrents = {}  # (node, info_hash hex) -> torrent handle
        self.senders = {}  # "ip:port" -> {"ids": set, "ro": set, "queries": n}
        self.values = {}  # "ip:port" -> {"replies": n, "duplicates": set}
        self.tmp = tempfile.mkdtemp(prefix="lt_dht.")

    def pump(self):
        """Handles every alert the sessions have posted."""
        for i, s in enumerate(self.sessions):
            for a in s.pop_alerts():
                self.handle(i, a)

    def handle(self, i, a):
        if isinstance(a, lt.listen_succeeded_alert):
            if a.socket_type == lt.socket_type_t.udp:
                self.ports[i] = a.port
        elif isinstance(a, lt.listen_failed_alert):
            out({"ok": False, "error": "node %d: %s" % (i, a.message())})
        elif isinstance(a, lt.dht_get_peers_reply_alert):
            key = (i, str(a.info_hash))
            entry = self.replies.setdefault(key, [set(), 0.0])
            entry[0].update("%s:%d" % p for p in a.peers())
            entry[1] = time.monotonic()
        elif isinstance(a, lt.dht_announce_alert):
            who = "%s:%d" % (a.ip, a.port)
            self.announced.setdefault(str(a.info_hash), []).append({"node": i, "from": who})
        elif isinstance(a, lt.dht_live_nodes_alert):
            self.live[i] = {
                "id": str(a.node_id),
                "table": [
                    {"id": str(n["nid"]), "addr": "%s:%d" % tuple(n["endpoint"])}
                    for n in a.nodes
                ],
            }
        elif isinstance(a, lt.dht_stats_alert):
            self.stats[i] = {
                "buckets": [[b["num_nodes"], b["num_replacements"]] for b in a.routing_table],
                "lookups": [
                    {k: r[k] for k in ("type", "outstanding_requests", "timeouts", "responses")}
                    for r in a.active_requests
                ],
            }
        elif isinstance(a, lt.dht_pkt_alert):
            msg = a.message()
            if self.log is not None:
                self.log.write("%.3f node %d %s\n" % (time.monotonic(), i, msg))
            if msg.startswith("<=="):
                self.incoming(msg, a.pkt_buf)
        elif self.log is not None and isinstance(a, lt.dht_log_alert):
            self.log.write("%.3f node %d %s\n" % (time.monotonic(), i, a.message()))

    def incoming(self, msg, buf):
        """Records the node id and "ro" flag of a query another node sent, and the peers of
        an answer to get_peers."""
        start, end = msg.find("["), msg.find("]")
        if start < 0 or end < start:
            return
        sender = msg[start + 1 : end]
        try:
            m = lt.bdecode(bytes(buf))
        except Exception:
            return
        if not isinstance(m, dict):
            return
        if m.get(b"y") == b"r":
            r = m.get(b"r")
            values = r.get(b"values") if isinstance(r, dict) else None
            if isinstance(values, list):
                peers = [
                    "%d.%d.%d.%d:%d" % (v[0], v[1], v[2], v[3], v[4] << 8 | v[5])
                    for v in values
                    if isinstance(v, bytes) and len(v) == 6
                ]
                e = self.values.setdefault(sender, {"replies": 0, "duplicates": set()})
                e["replies"] += 1
                e["duplicates"].update(p for p in peers if peers.count(p) > 1)
            return
        if m.get(b"y") != b"q":
            return
        if sender.startswith("127.0.0.1:") and sender[10:].isdigit() and int(sender[10:]) in self.ports:
            return
        args = m.get(b"a")
        nid = args.get(b"id") if isinstance(args, dict) else None
        s = self.senders.setdefault(sender, {"ids": set(), "ro": set(), "queries": 0})
        s["queries"] += 1
        if isinstance(nid, bytes):
            s["ids"].add(nid.hex())
        ro = m.get(b"ro", 0)
        s["ro"].add(ro if isinstance(ro, int) else -1)

    def wait(self, done, timeout):
        """Pumps alerts until done() or timeout seconds; returns done()."""
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sessions[0].wait_for_alert(int(min(left, 0.05) * 1000) + 1)
            self.pump()
        return done()

    def start(self, extra):
        if not self.wait(lambda: None not in self.ports, STARTUP_TIMEOUT):
            raise RuntimeError("UDP ports not up after %ss: %r" % (STARTUP_TIMEOUT, self.ports))
        for i, s in enumerate(self.sessions):
            for j, p in enumerate(self.ports):
                if i != j:
                    s.add_dht_node(("127.0.0.1", p))
            for addr in extra:
                s.add_dht_node(addr)

    def node(self, cmd):
        i = cmd.get("node")
        if not isinstance(i, int) or not 0 <= i < len(self.sessions):
            raise ValueError("node must be 0..%d" % (len(self.sessions) - 1))
        return i

    def node_id(self, i):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            state = self.sessions[i].dht_state()
        ids = state.get(b"node-id") or []
        if not ids:
            raise RuntimeError("node %d has no DHT node id yet" % i)
        return lt.sha1_hash(ids[0][:20])

    def routing(self, _cmd):
        self.live = {}
        for i, s in enumerate(self.sessions):
            s.dht_live_nodes(self.node_id(i))
        n = len(self.sessions)
        if not self.wait(lambda: len(self.live) == n, 5.0):
            raise RuntimeError("no routing table from nodes %r" % sorted(set(range(n)) - set(self.live)))
        return {
            "nodes": [
                dict(node=i, port=self.ports[i], **self.live[i]) for i in range(n)
            ]
        }

    def stats_cmd(self, _cmd):
        self.stats = {}
        for s in self.sessions:
            s.post_dht_stats()
        n = len(self.sessions)
        if not self.wait(lambda: len(self.stats) == n, 5.0):
            raise RuntimeError("no DHT stats from every node")
        return {"nodes": [dict(node=i, **self.stats[i]) for i in range(n)]}

    def get_peers(self, cmd):
        many = "nodes" in cmd
        if many:
            nodes = cmd["nodes"]
            if not isinstance(nodes, list) or not nodes:
                raise ValueError("nodes must be a list of nodes")
            nodes = [self.node({"node": i}) for i in nodes]
        else:
            nodes = [self.node(cmd)]
        ih = parse_hash(cmd.get("info_hash"))
        timeout = min(float(cmd.get("timeout", 10.0)), MAX_WAIT)
        keys = [(i, str(ih)) for i in nodes]
        for i, key in zip(nodes, keys):
            self.replies.pop(key, None)
            self.sessions[i].dht_get_peers(ih)

        def settled():
            now = time.monotonic()
            return all(k in self.replies and now - self.replies[k][1] >= SETTLE for k in keys)

        self.wait(settled, timeout)
        found = {i: sorted(self.replies.get(k, [set()])[0]) for i, k in zip(nodes, keys)}
        return {"peers": {str(i): p for i, p in found.items()} if many else found[nodes[0]]}

    def announce(self, cmd):
        i = self.node(cmd)
        ih = parse_hash(cmd.get("info_hash"))
        key = (i, str(ih))
        h = self.torrents.get(key)
        if h is None:
            p = lt.add_torrent_params()
            p.info_hashes = lt.info_hash_t(ih)
            p.save_path = os.path.join(self.tmp, "%d-%s" % key)
            p.flags = lt.torrent_flags.upload_mode | lt.torrent_flags.disable_lsd | lt.torrent_flags.disable_pex
            h = self.sessions[i].add_torrent(p)
            self.torrents[key] = h
        h.force_dht_announce()
        return {"port": self.ports[i]}

    def announced_cmd(self, cmd):
        ih = parse_hash(cmd.get("info_hash"))
        self.pump()
        return {"by": self.announced.get(str(ih), [])}

    def senders_cmd(self, _cmd):
        self.pump()
        return {
            "senders": {
                k: {"ids": sorted(v["ids"]), "ro": sorted(v["ro"]), "queries": v["queries"]}
                for k, v in self.senders.items()
            }
        }

    def values_cmd(self, _cmd):
        self.pump()
        return {
            "values": {
                k: {"replies": v["replies"], "duplicates": sorted(v["duplicates"])}
                for k, v in self.values.items()
            }
        }

    def add(self, cmd):
        addr = parse_addr(cmd.get("addr", ""))
        for s in self.sessions:
            s.add_dht_node(addr)
        return {}


def main():
    ap = argparse.ArgumentParser(description="libtorrent DHT nodes on 127.0.0.1, driven by JSON lines")
    ap.add_argument("--nodes", type=int, default=6)
    ap.add_argument("--bootstrap", action="append", default=[], metavar="HOST:PORT")
    ap.add_argument("--log", metavar="FILE")
    ap.add_argument("--block-ratelimit", type=int, default=1000000, metavar="N")
    args = ap.parse_args()
    if not 1 <= args.nodes <= 200:
        out({"ok": False, "error": "--nodes must be 1..200"})
        return 2
    log = open(args.log, "w") if args.log else None
    try:
        extra = [parse_addr(b) for b in args.bootstrap]
        net = Net(args.nodes, log, args.block_ratelimit)
        net.start(extra)
    except Exception as e:  # one line, then exit: the caller reads it
        out({"ok": False, "error": "startup: %s" % e})
        return 1
    out({"ready": True, "ports": net.ports})
    commands = {
        "ports": lambda c: {"ports": net.ports},
        "routing": net.routing,
        "stats": net.stats_cmd,
        "get_peers": net.get_peers,
        "announce": net.announce,
        "announced": net.announced_cmd,
        "senders": net.senders_cmd,
        "values": net.values_cmd,
        "add": net.add,
    }
    buf = b""
    stdin = sys.stdin.buffer.raw
    while True:
        # Keep handling alerts (incoming announces, the log) while no command comes.
        ready, _, _ = select.select([stdin], [], [], 0.1)
        net.pump()
        if log:
            log.flush()
        if not ready:
            continue
        chunk = os.read(stdin.fileno(), 65536)
        if not chunk:
            return 0
        buf += chunk
        if len(buf) > 1 << 20:
            out({"ok": False, "error": "command line longer than 1 MiB"})
            return 1
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if not line.strip():
                continue
            try:
                cmd = json.loads(line)
                if not isinstance(cmd, dict):
                    raise ValueError("a command is a JSON object")
                name = cmd.get("cmd")
                if name == "quit":
                    out({"ok": True})
                    return 0
                if name not in commands:
                    raise ValueError("unknown command %r" % (name,))
                reply = commands[name](cmd)
                reply["ok"] = True
                out(reply)
            except Exception as e:
                out({"ok": False, "error": "%s: %s" % (type(e).__name__, e)})


if __name__ == "__main__":
    sys.exit(main())
