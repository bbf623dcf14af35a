"""Peer to peer as shipped: on by default, with no p2p flag at all.

test_p2p.py turns peer to peer on by passing DHT flags; these tests start daemons the way a
user of the shipped defaults does: no -p/--p2p, no --no-p2p, no SENTRYPEER_PEER_TO_PEER,
TLS on (each daemon on its own port, as two daemons on one host must be), and only the
options a private community needs: --dht-network (a random private id, never the public
network 0), -b on loopback (never the default public bootstrap node), --dht-port (two nodes
on one host) and --dht-no-rate-limit (every loopback peer is one IP for OpenDHT).

- two such daemons find each other and share probes both ways through the share-to-receive
  protocol (both contribute; default credit L1: both probes come from 127.0.0.1, which each
  node saw itself), with its timings shortened (--p2p-epoch 60s --p2p-bucket 10s
  --p2p-flush 1s: the defaults flush every 120 s and grant once a minute);
- the bare binary (no option but its files) runs a DHT node on UDP 4222: in a fresh network
  namespace (root), so the default public bootstrap node is unreachable and 4222 is free.

Run: /usr/bin/python3 -m pytest tests/integration/test_p2p_default.py -v
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import READY_RE, clean_env, free_port, sentrypeer_bin
from test_p2p import (P2pDaemon, wait_until, free_udp_port, http_get,
                      listening_sockets, private_network, unique_number, wait_network,
                      wait_peer_row)

pytestmark = pytest.mark.slow

OPT_IN_OUT = {"-p", "--p2p", "--peer-to-peer", "--no-p2p", "--p2p-sentrypeer-compat"}
SHARE_TIMEOUT = 15.0  # flush 1 s, then a grant round (epoch/12 = 5 s), then the decrypt


def start_default_node(make_daemon, name: str, network: int, dht_port: int,
                       bootstrap_port: int) -> P2pDaemon:
    api_port = free_port(udp=False)
    args = ["-a", "--api-listen", f"127.0.0.1:{api_port}", "--dht-port", str(dht_port),
            "--dht-network", str(network), "--dht-no-rate-limit",
            "-b", f"127.0.0.1:{bootstrap_port}",
            "--p2p-epoch", "60s", "--p2p-bucket", "10s", "--p2p-flush", "1s"]
    d = make_daemon(tls=True, args=args)
    # The contract of this file: nothing turned peer to peer on or off explicitly.
    assert not OPT_IN_OUT & set(d.cmd), f"{name}: an explicit p2p flag in {d.cmd}"
    assert not any(k.startswith("SENTRYPEER_") for k in d.env), d.env
    return P2pDaemon(d, name, api_port, dht_port, network, True)


def test_two_default_daemons_share_probes_both_ways(make_daemon):
    net = private_network()
    pa, pb = free_udp_port(), free_udp_port()
    a = start_default_node(make_daemon, "A", net, pa, pb)
    b = start_default_node(make_daemon, "B", net, pb, pa)
    wait_network([a, b], min_peers=1)
    for node in (a, b):
        s = node.status()
        assert s["state"] == "connected" and s["network"] == net, (node.name, s)
        assert s["port_ipv4"] == node.dht_port, (node.name, s)
        assert node.dht_port in listening_sockets(node.pid)["udp"], node.name

    # Both contribute (share to receive): a probe at each, then each has the other's.
    numbers = {}
    t0 = time.monotonic()
    for node in (a, b):
        numbers[node.name] = unique_number()
        node.probe(numbers[node.name], "OPTIONS")
    local = {n.name: n.d.wait_for_rows(1, "called_number = ?", (numbers[n.name],))[0]
             for n in (a, b)}
    for src, dst in ((a, b), (b, a)):
        assert local[src.name]["origin"] == "local"
        row = wait_peer_row(dst, numbers[src.name], SHARE_TIMEOUT - (time.monotonic() - t0))
        print(f"{src.name} -> {dst.name}: {time.monotonic() - t0:.3f}s")
        for col in ("event_uuid", "event_timestamp", "source_ip", "called_number", "method",
                    "user_agent", "sip_message"):
            assert row[col] == local[src.name][col], \
                f"{dst.name}.{col}: {row[col]!r} != {local[src.name][col]!r}"
        assert row["created_by_node_id"] == src.node_id()
        assert row["reporter"] == src.status()["identity"], row
        assert dst.number_known(numbers[src.name]), f"{dst.name}: /numbers/ not found"

    # Default credit L1: each record is about 127.0.0.1, which the receiver saw itself (the
    # daemon's "confirmed locally" answer from its index) and got first from that peer.
    def credited():
        return all(n.status()["share"]["records"]["credited"] >= 1 for n in (a, b))

    assert wait_until(credited, 5, 0.1), \
        f"L1 credit not given: {[n.status()['share'] for n in (a, b)]}"
    for node in (a, b):
        m = node.metrics()
        published = re.search(r'^sentrypeer_p2p_share_records_total\{event="published"\} (\d+)$',
                              m, re.M)
        stored = re.search(r'^sentrypeer_p2p_share_records_total\{event="stored"\} (\d+)$', m,
                           re.M)
        sent = re.search(r"^sentrypeer_p2p_events_sent_total (\d+)$", m, re.M)
        assert published and int(published.group(1)) >= 1, f"{node.name} published nothing:\n{m}"
        assert stored and int(stored.group(1)) >= 1, f"{node.name} stored nothing:\n{m}"
        # No plaintext by default (--p2p-sentrypeer-compat is opt-in).
        assert sent and int(sent.group(1)) == 0, f"{node.name} put plaintext:\n{m}"


def test_bare_binary_runs_a_dht_node_on_4222(tmp_path):
    """No option but where its files go: the shipped default binds the DHT on UDP 4222
    (IPv4 and IPv6) besides SIP 5060 and TLS 5061, and stops cleanly."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        msg = "needs root and unshare (a fresh network namespace keeps 4222/5060 free and " \
              "the public bootstrap node unreachable)"
        print(f"SKIP: {msg}")
        pytest.skip(msg)
    binary = sentrypeer_bin()
    data = tmp_path / "data"
    cmd = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', str(binary),
           "-f", str(tmp_path / "sentrypeer.db"), "--data-dir", str(data)]
    log = tmp_path / "daemon.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=clean_env(), cwd=tmp_path, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not READY_RE.search(log.read_text(errors="replace")):
            assert proc.poll() is None, f"exited {proc.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no ready line:\n{log.read_text()}"
            time.sleep(0.1)
        # /proc/PID/net is the daemon's namespace (the exec'd sh is the daemon).
        sockets = {"udp": set(), "tcp_listen": set()}
        deadline = time.monotonic() + 10
        while 4222 not in sockets["udp"] and time.monotonic() < deadline:
            sockets = _sockets_in_own_netns(proc.pid)
            time.sleep(0.1)
        assert 4222 in sockets["udp"], f"no DHT socket on UDP 4222: {sockets}\n{log.read_text()}"
        assert 5060 in sockets["udp"] and 5060 in sockets["tcp_listen"], sockets
        assert 5061 in sockets["tcp_listen"], sockets
        assert (data / "node-id").is_file() and (data / "dht-identity.pem").is_file(), \
            sorted(p.name for p in data.iterdir())
        # OpenDHT's note of the ports it bound, IPv4 then IPv6 (docs/P2P.md).
        ports = (data / "dht-state_port.txt").read_text().split()
        assert ports == ["4222", "4222"], ports
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def _sockets_in_own_netns(pid: int) -> dict:
    """listening_sockets() reads /proc/net (the caller's namespace): read the daemon's."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = {"tcp_listen": set(), "udp": set()}
    for table, kind in (("tcp", "tcp_listen"), ("tcp6", "tcp_listen"), ("udp", "udp"),
                        ("udp6", "udp")):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            f = line.split()
            if f[9] not in inodes or (kind == "tcp_listen" and f[3] != "0A"):
                continue
            out[kind].add(int(f[1].rsplit(":", 1)[1], 16))
    return out
