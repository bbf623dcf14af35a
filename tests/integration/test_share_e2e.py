"""Share to receive (issue 9), end to end with real daemons: only contributors read the
others' events, and nothing of them crosses the wire in clear text.

Four daemons with peer to peer on, on a private --dht-network with OpenDHT's rate limits off
and short share timings (--p2p-epoch 60s --p2p-bucket 10s --p2p-flush 1s, --p2p-credit L0:
a probe counts as a contribution whatever its source; L1 needs the subject confirmed, which
unique test addresses never are), all inside one network namespace this test creates (lo
up), where `tcpdump -i lo` records every DHT packet:

1. nodes 1-3 each receive one SIP probe (own source address on lo, own called number and
   user agent): within 10 s all three probes are in each of the three databases, the peers'
   ones as peer events whose reporter is the publishing node's share identity;
2. node 4 (p2p on, no probe: it contributes nothing) stores none of them;
3. the capture of all DHT traffic holds none of the probes' source addresses, called numbers
   or user agents in clear text (--p2p-sentrypeer-compat is off);
4. node 4 receives a probe of its own: nodes 1-3 store it, and once they grant node 4 their
   keys (watched on its /p2p/status, bounded by two epochs), new probes at 1-3 reach node 4;
5. two verified reporters (nodes 1 and 2 both probed from one address) make that address
   exportable at node 3 under the default --peer-min-reporters 2.

The test thread enters the namespace (conftest.inside_netns, setns(2)) so that every helper of
conftest.py (sockets, HTTP, subprocesses) works unchanged inside it; it goes back to its
own namespace and deletes the namespace in the fixture's teardown.

Wall time: about 1-2 minutes (key generation, then up to one grant round for node 4).
Run: /usr/bin/python3 -m pytest tests/integration/test_share_e2e.py -v -s
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from conftest import UdpClient, inside_netns, new_call_id, stop_process
from test_p2p import (compact, free_udp_port, http_get, opendht_peers,  # noqa: F401 (fixture)
                      private_network, sentrypeer_event, start_node, wait_network, wait_until)

pytestmark = pytest.mark.slow

SHARE_ARGS = ["--p2p-epoch", "60s", "--p2p-bucket", "10s", "--p2p-flush", "1s",
              "--p2p-credit", "L0"]
STORE_TIMEOUT = 10.0  # the bound: a probe is in every contributor's database by then
QUALIFY_TIMEOUT = 130.0  # node 4's grants: two 60 s epochs at most
SOURCES = {1: "203.0.113.11", 2: "203.0.113.12", 3: "203.0.113.13", 4: "203.0.113.14"}
SHARED_SOURCE = "203.0.113.50"  # probed at nodes 1 and 2: two verified reporters
ALLOWED_SOURCE = "198.51.100.7"  # likewise, but inside node 3's --allow 198.51.100.0/24
LOOPBACK_SOURCE = "127.0.0.1"  # likewise, but on the built-in never-block list


@pytest.fixture
def netns():
    """A fresh network namespace (lo up, the test sources on lo) that this thread enters."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        msg = "needs root and iproute2 (a network namespace of its own)"
        print(f"SKIP: {msg}")
        pytest.skip(msg)
    if shutil.which("tcpdump") is None:
        msg = "tcpdump is not installed (scripts/deps --test)"
        print(f"SKIP: {msg}")
        pytest.skip(msg)
    name = f"sp-share-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, timeout=10)
        for addr in SOURCES.values():
            subprocess.run(["ip", "-n", name, "addr", "add", f"{addr}/32", "dev", "lo"],
                           check=True, timeout=10)
        with inside_netns(name):
            yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], timeout=10)


class Capture:
    """tcpdump -i lo on the DHT ports, started in the namespace (this thread's)."""

    def __init__(self, path: Path, ports: list):
        self.path = path
        expr = "udp and (" + " or ".join(f"port {p}" for p in ports) + ")"
        self.proc = subprocess.Popen(["tcpdump", "-i", "lo", "-U", "-n", "-s", "0", "-w",
                                      str(path), expr], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while not (path.exists() and path.stat().st_size > 0):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"tcpdump did not start: {self.proc.stderr.read()}")
            time.sleep(0.05)

    def stop(self) -> bytes:
        stop_process(self.proc)
        return self.path.read_bytes()


def probe(node, source: str, number: str, agent: str) -> str:
    call_id = new_call_id()
    with UdpClient(node.sip_port, src_host=source) as c:
        c.request("INVITE", to_user=number, call_id=call_id, user_agent=agent)
    return call_id


def rows_by_number(node, number: str) -> list:
    return node.rows_for(number)


def share_status(node) -> dict:
    return node.status()["share"]


def test_only_contributors_read_and_nothing_is_clear_on_the_wire(make_daemon, netns, tmp_path):
    t_start = time.monotonic()
    net = private_network()
    ports = [free_udp_port() for _ in range(4)]
    cap = Capture(tmp_path / "dht.pcap", ports)
    nodes = {}
    try:
        for i in range(1, 5):
            boot = [ports[1]] if i == 1 else [ports[0]]
            allow = ["--allow", "198.51.100.0/24"] if i == 3 else []
            nodes[i] = start_node(make_daemon, f"N{i}", net, boot, dht_port=ports[i - 1],
                                  extra=[*SHARE_ARGS, *allow])
        wait_network(list(nodes.values()), min_peers=2)
        ids = {i: n.status()["identity"] for i, n in nodes.items()}
        assert all(len(v) == 40 for v in ids.values()) and len(set(ids.values())) == 4, ids
        print(f"network of 4 formed after {time.monotonic() - t_start:.1f}s")

        # 1. One probe each at nodes 1-3.
        tag = uuid.uuid4().hex[:6]
        probes = {i: {"source": SOURCES[i], "number": f"4477{i}{int(tag, 16) % 10**7:07d}",
                      "agent": f"share-e2e-{tag}-agent-{i}"} for i in (1, 2, 3)}
        t0 = time.monotonic()
        for i, p in probes.items():
            probe(nodes[i], p["source"], p["number"], p["agent"])

        def everywhere():
            return all(rows_by_number(nodes[j], p["number"]) for j in (1, 2, 3)
                       for p in probes.values())

        if not wait_until(everywhere, STORE_TIMEOUT, 0.1):
            pytest.fail("probes not in every contributor's database within "
                        f"{STORE_TIMEOUT}s: " + "; ".join(
                            f"N{j}: {[p['number'] for p in probes.values() if rows_by_number(nodes[j], p['number'])]}"
                            f" share={share_status(nodes[j])}" for j in (1, 2, 3)))
        print(f"three probes in three databases after {time.monotonic() - t0:.2f}s")
        for j in (1, 2, 3):
            for i, p in probes.items():
                rows = rows_by_number(nodes[j], p["number"])
                assert len(rows) == 1, (j, i, rows)
                row = rows[0]
                assert row["source_ip"] == p["source"] and row["user_agent"] == p["agent"], row
                if i == j:
                    assert row["origin"] == "local" and row["reporter"] is None, row
                else:
                    assert row["origin"] == "peer", row
                    assert row["reporter"] == ids[i], (f"N{j} stored N{i}'s probe with reporter "
                                                       f"{row['reporter']}, expected {ids[i]}")

        # 2. Node 4 contributed nothing: none of them (after the same time the others had).
        for p in probes.values():
            assert rows_by_number(nodes[4], p["number"]) == [], \
                f"N4 (no contribution) stored {p['number']}: {share_status(nodes[4])}"
        assert nodes[4].d.count() == 0, nodes[4].d.rows()

        # 4. Node 4 contributes: its probe reaches 1-3, then it is granted their keys.
        p4 = {"source": SOURCES[4], "number": f"44774{int(tag, 16) % 10**7:07d}",
              "agent": f"share-e2e-{tag}-agent-4"}
        t4 = time.monotonic()
        probe(nodes[4], p4["source"], p4["number"], p4["agent"])
        if not wait_until(lambda: all(rows_by_number(nodes[j], p4["number"]) for j in (1, 2, 3)),
                          STORE_TIMEOUT, 0.1):
            pytest.fail(f"N4's probe not at N1-N3 within {STORE_TIMEOUT}s: "
                        f"{[share_status(nodes[j]) for j in (1, 2, 3)]}")

        def qualified():
            return set(ids[j] for j in (1, 2, 3)) <= set(
                share_status(nodes[4])["partners"]["granted_by"])

        if not wait_until(qualified, QUALIFY_TIMEOUT, 0.5):
            pytest.fail(f"N4 not granted N1-N3's keys within {QUALIFY_TIMEOUT}s of its probe: "
                        f"{share_status(nodes[4])}")
        print(f"N4 granted N1-N3's keys {time.monotonic() - t4:.1f}s after its probe")
        fresh = {i: {"source": SOURCES[i], "number": f"4478{i}{int(tag, 16) % 10**7:07d}",
                     "agent": f"share-e2e-{tag}-new-{i}"} for i in (1, 2, 3)}
        t5 = time.monotonic()
        for i, p in fresh.items():
            probe(nodes[i], p["source"], p["number"], p["agent"])
        if not wait_until(lambda: all(rows_by_number(nodes[4], p["number"])
                                      for p in fresh.values()), STORE_TIMEOUT, 0.1):
            pytest.fail(f"N4 (now a contributor) did not get N1-N3's new probes within "
                        f"{STORE_TIMEOUT}s: {share_status(nodes[4])}")
        print(f"new probes at N4 after {time.monotonic() - t5:.2f}s")
        for i, p in fresh.items():
            row = rows_by_number(nodes[4], p["number"])[0]
            assert row["origin"] == "peer" and row["reporter"] == ids[i], row

        # 5. Two verified reporters of one address: exportable at node 3 (default
        # --peer-min-reporters 2), which never saw it itself; never-block addresses (its
        # --allow, loopback) stay out although two verified reporters named them too.
        # Added to lo only now: the blocking policy reads this host's addresses at start
        # and never blocks its own (the probe sources above are node 3's own addresses).
        for addr in (SHARED_SOURCE, ALLOWED_SOURCE):
            subprocess.run(["ip", "-n", netns, "addr", "add", f"{addr}/32", "dev", "lo"],
                           check=True, timeout=10)
        shared_number = f"4479{int(tag, 16) % 10**7:07d}"
        for k, source in enumerate((SHARED_SOURCE, ALLOWED_SOURCE, LOOPBACK_SOURCE)):
            for i in (1, 2):
                probe(nodes[i], source, f"{shared_number}{k}{i}", f"share-e2e-{tag}-both")
        if not wait_until(lambda: all(len(nodes[3].d.rows("source_ip = ? AND origin = 'peer'",
                                                          (s,))) == 2
                                      for s in (SHARED_SOURCE, ALLOWED_SOURCE, LOOPBACK_SOURCE)),
                          STORE_TIMEOUT, 0.1):
            pytest.fail(f"N3 did not store the doubly reported probes within {STORE_TIMEOUT}s")

        def exported():
            code, body = http_get(nodes[3].api_port, "/ip-addresses?format=plain")
            return code == 200 and SHARED_SOURCE in body.split()

        if not wait_until(exported, STORE_TIMEOUT, 0.1):
            rows = nodes[3].d.rows("source_ip = ?", (SHARED_SOURCE,))
            pytest.fail(f"{SHARED_SOURCE}, reported by N1 and N2, not exported by N3: rows "
                        f"{[(r['origin'], r['reporter']) for r in rows]}")
        for source in (SHARED_SOURCE, ALLOWED_SOURCE, LOOPBACK_SOURCE):
            reporters = {r["reporter"] for r in nodes[3].d.rows("source_ip = ?", (source,))}
            assert reporters == {ids[1], ids[2]}, (source, reporters)
        for fmt in ("plain", "nft", "ipset"):
            code, body = http_get(nodes[3].api_port, f"/ip-addresses?format={fmt}")
            assert code == 200 and SHARED_SOURCE in body, (fmt, body)
            for never in (ALLOWED_SOURCE, LOOPBACK_SOURCE):
                assert never not in body, f"never-block {never} in the {fmt} export:\n{body}"
    finally:
        time.sleep(0.5)  # the last packets reach the capture
        pcap = cap.stop()

    # 3. The wire: DHT packets were captured, none with a probe's details in clear text.
    assert len(pcap) > 20_000, f"capture too small to be the DHT traffic: {len(pcap)} bytes"
    secrets = []
    for p in [*probes.values(), p4, *fresh.values()]:
        secrets += [p["source"], p["number"], p["agent"]]
    secrets += [SHARED_SOURCE, ALLOWED_SOURCE, f"share-e2e-{tag}"]
    leaked = [s for s in secrets if s.encode() in pcap]
    assert not leaked, f"in clear text in the DHT capture: {leaked}"
    print(f"capture: {len(pcap)} bytes of DHT traffic, none of {len(secrets)} probe details; "
          f"test wall time {time.monotonic() - t_start:.1f}s")


def test_plaintext_sentrypeer_value_is_a_peer_event_without_reporter(make_daemon, opendht_peers):
    """A SentryPeer node (python3-opendht) puts a plaintext value under bad_actors: it is
    stored as a peer event with an empty reporter (its created_by_node_id is self-declared),
    never credited by the share protocol, and not counted as a reporter even under
    --peer-min-reporters 1. Our node, compat publishing off, puts nothing there itself."""
    net = private_network()
    peer_port = free_udp_port()
    node = start_node(make_daemon, "S", net, [peer_port],
                      extra=[*SHARE_ARGS, "--peer-min-reporters", "1"])
    peer = opendht_peers(net, [node.dht_port], port=peer_port)
    peer.listen()
    wait_network([node], min_peers=1)
    ev = sentrypeer_event(source_ip="203.0.113.21")
    assert peer.put(compact(ev)) is True
    rows = wait_until(lambda: node.rows_for(ev["called_number"]), STORE_TIMEOUT)
    assert rows, f"plaintext value not stored within {STORE_TIMEOUT}s: {node.status()}"
    row = rows[0]
    assert row["origin"] == "peer" and row["reporter"] is None, row
    assert row["created_by_node_id"] == ev["created_by_node_id"], row
    st = node.status()
    assert st["events_accepted"] == 1 and st["share"]["records"]["credited"] == 0, st
    code, body = http_get(node.api_port, "/ip-addresses?origin=peer")
    assert code == 200 and "203.0.113.21" in body, body
    code, body = http_get(node.api_port, "/ip-addresses?format=plain")
    assert "203.0.113.21" not in body, f"a plaintext value counted as a reporter: {body!r}"
    # Our own probe goes out as a share record only: nothing new under bad_actors.
    number = "4470" + str(uuid.uuid4().int % 10**8)
    node.probe(number, "OPTIONS")
    node.d.wait_for_rows(1, "called_number = ?", (number,))
    time.sleep(2.0)  # several flushes: a compat put would have reached the listener by now
    assert not [v for v in peer.values if number.encode() in v["data"]], \
        "our event was put as plaintext under bad_actors without --p2p-sentrypeer-compat"
    assert node.status()["events_sent"] == 0
