"""The trust boundary around peer data (issue 8): forged DHT values cannot steer the firewall
exports.

An independent OpenDHT node (tests/integration/opendht_peer.py, python3-opendht) publishes
valid SentryPeer values under `bad_actors` on a private --dht-network over loopback, naming:

- 127.0.0.1 (loopback: on the built-in never-block list),
- 198.51.100.7 (inside `--allow 198.51.100.0/24`, the operator's own trunk),
- 203.0.113.9 (a public test address: the only one peers may ever get blocked).

Contract under test (docs/API.md, README's --peer-min-reporters/--allow):

- every peer value that passes validation is stored and listed by the SentryPeer-compatible
  JSON (`GET /ip-addresses`, default `origin=all`);
- `?origin=local` lists only what this node caught, `?origin=peer` only what peers shared;
- the blocking outputs (`?format=plain|nft|ipset`) count peer events for an address only
  once `--peer-min-reporters` distinct *verified* reporters named it (default 2; 0: never on
  peer data alone), and never list a never-block address (built in or --allow), whatever
  the reporters or local probes say. A reporter is the signing identity of a share-protocol
  record (issue 9); a plaintext SentryPeer value proves no identity (its created_by_node_id
  is whatever the sender wrote), so it is stored with an empty reporter and never counts as
  one, however many distinct node ids name the address. That verified reporters unlock an
  address and that never-block wins over them is shown end to end by
  test_share_e2e.py (real daemons sharing through the protocol).

"Never appears" is checked after the events that would put it there are known to be stored
(seen_count reached), so the absence is not a race.

Run: /usr/bin/python3 -m pytest tests/integration/test_peer_trust.py -v
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Optional

import pytest

from conftest import UdpClient, new_call_id
from test_p2p import (compact, free_udp_port, http_get, opendht_peers,  # noqa: F401 (fixture)
                      private_network, sentrypeer_event, start_node, wait_network)

pytestmark = pytest.mark.slow

LOOPBACK = "127.0.0.1"  # built-in never-block (loopback)
ALLOWED = "198.51.100.7"  # never-block through --allow
ALLOW_CIDR = "198.51.100.0/24"
PUBLIC = "203.0.113.9"  # documentation address standing for a real attacker
NEVER_BLOCK = (LOOPBACK, ALLOWED)
FORGED = (LOOPBACK, ALLOWED, PUBLIC)

EXPORTS = {
    "plain": "/ip-addresses?format=plain",
    "nft": "/ip-addresses?format=nft",
    "ipset": "/ip-addresses?format=ipset",
}

STORE_TIMEOUT = 10.0  # a put value must be stored (and listed) within this
EXPORT_TIMEOUT = 5.0  # a stored event must show in (or be settled out of) an export within this


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------

def forged_event(source_ip: str, reporter: str) -> dict:
    """A valid SentryPeer 4.0.6 value naming `source_ip`, as published by node `reporter`
    (a UUID: the self-declared created_by_node_id). Fresh event_uuid and called number."""
    msg = (f"OPTIONS sip:100@198.51.100.5 SIP/2.0\r\nVia: SIP/2.0/UDP {source_ip}:5070;"
           f"branch=z9hG4bK-{uuid.uuid4().hex[:8]}\r\nUser-Agent: friendly-scanner\r\n"
           "Content-Length: 0\r\n\r\n")
    return sentrypeer_event(source_ip=source_ip, created_by_node_id=reporter, sip_message=msg)


def publish(peer, events: list) -> None:
    for ev in events:
        ok = peer.put(compact(ev))
        assert ok is True, f"OpenDHT put of {ev['source_ip']} by {ev['created_by_node_id']}: {ok!r}"


def ip_list(node, query: str = "") -> Optional[dict]:
    """GET /ip-addresses[query] as {ip: seen_count}; None for SentryPeer's 404 'No bad actors
    found'. Any other status fails (a 400 for ?origin= is not 'not listed')."""
    code, body = http_get(node.api_port, "/ip-addresses" + query)
    if code == 404:
        assert json.loads(body) == {"message": "No bad actors found"}, body
        return None
    assert code == 200, f"GET /ip-addresses{query} -> {code} {body!r}"
    doc = json.loads(body)
    return {e["ip_address"]: int(e["seen_count"]) for e in doc["ip_addresses"]}


def seen_count(node, ip: str) -> int:
    code, body = http_get(node.api_port, f"/ip-addresses/{ip}")
    if code == 404:
        return 0
    assert code == 200, f"GET /ip-addresses/{ip} -> {code} {body!r}"
    return int(json.loads(body)["seen_count"])


def wait_seen(node, counts: dict, timeout: float = STORE_TIMEOUT) -> None:
    """Polls GET /ip-addresses/{ip} until each ip's seen_count is at least counts[ip]."""
    deadline = time.monotonic() + timeout
    while True:
        got = {ip: seen_count(node, ip) for ip in counts}
        if all(got[ip] >= n for ip, n in counts.items()):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{node.name}: seen_count {got}, expected at least {counts} within "
                        f"{timeout}s; p2p status {node.status()}\nstderr tail:\n"
                        f"{node.stderr[-2000:]}")
        time.sleep(0.1)


def export_entries(fmt: str, body: str) -> list:
    """The addresses an export lists, one item per entry (duplicates kept)."""
    if fmt == "plain":
        return [line.strip() for line in body.splitlines() if line.strip()]
    if fmt == "ipset":
        out = []
        for line in body.splitlines():
            f = line.split()
            if f and f[0] == "add":
                assert len(f) >= 3, f"ipset line without an address: {line!r}"
                out.append(f[2])
        return out
    if fmt == "nft":
        out = []
        for m in re.finditer(r"elements\s*=\s*\{([^}]*)\}", body):
            for elem in m.group(1).split(","):
                if elem.strip():
                    out.append(elem.split()[0])
        return out
    raise AssertionError(fmt)


def exports(node) -> dict:
    """{format: (body, entries)} of every firewall export; each must answer 200."""
    out = {}
    for fmt, path in EXPORTS.items():
        code, body = http_get(node.api_port, path)
        assert code == 200, f"GET {path} -> {code} {body!r}"
        out[fmt] = (body, export_entries(fmt, body))
    return out


def mentions(body: str, ip: str) -> bool:
    """The address appears as a token anywhere in the body (127.0.0.1 is not 127.0.0.10)."""
    return re.search(r"(?<![0-9A-Za-z.:])%s(?![0-9A-Za-z.:])" % re.escape(ip), body) is not None


def assert_not_exported(node, ips, why: str) -> None:
    for fmt, (body, entries) in exports(node).items():
        for ip in ips:
            assert ip not in entries and not mentions(body, ip), \
                f"{ip} in the {fmt} export ({why}):\n{body}"


def local_probe(node, src_host: str) -> str:
    """A UDP SIP OPTIONS from a socket bound to src_host; returns its Call-ID."""
    call_id = new_call_id()
    with UdpClient(node.sip_port, src_host=src_host) as c:
        c.request("OPTIONS", call_id=call_id, to_user="trust", user_agent="trust-it-probe")
    return call_id


def start_trust_node(make_daemon, opendht_peers, extra=()):
    """A daemon (API on, --allow 198.51.100.0/24, private network) plus the forging peer,
    connected to each other."""
    net = private_network()
    peer_port = free_udp_port()
    node = start_node(make_daemon, "S", net, [peer_port], extra=["--allow", ALLOW_CIDR, *extra])
    peer = opendht_peers(net, [node.dht_port], port=peer_port)
    wait_network([node], min_peers=1)
    return node, peer


# --------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------

def test_single_reporter_values_are_stored_but_never_exported(make_daemon, opendht_peers):
    """Steps 1-2: one forging reporter names 127.0.0.1, an allow-listed address and a public
    one. All three are stored and listed (origin=all and origin=peer), none is local, and
    with the default --peer-min-reporters 2 none reaches plain, nft or ipset."""
    node, peer = start_trust_node(make_daemon, opendht_peers)
    reporter = str(uuid.uuid4())
    assert reporter != node.node_id()

    # A local control, so ?origin=local has something to list and ?origin=peer something
    # to leave out (127.0.0.3: loopback, thus never exported itself).
    control_call = local_probe(node, "127.0.0.3")
    node.d.rows_with(control_call)

    publish(peer, [forged_event(ip, reporter) for ip in FORGED])

    # 1. Stored: listed by the SentryPeer-compatible JSON (default origin=all).
    deadline = time.monotonic() + STORE_TIMEOUT
    while True:
        listed = ip_list(node) or {}
        if all(ip in listed for ip in FORGED):
            break
        if time.monotonic() > deadline:
            pytest.fail(f"GET /ip-addresses lists {sorted(listed)} after {STORE_TIMEOUT}s, "
                        f"expected {FORGED}; p2p status {node.status()}; rows "
                        f"{[(r['source_ip'], r['origin']) for r in node.d.rows()]}")
        time.sleep(0.1)
    for ip in FORGED:
        rows = node.d.rows("source_ip = ?", (ip,))
        assert [r["origin"] for r in rows] == ["peer"], (ip, rows)
        assert rows[0]["created_by_node_id"] == reporter
        assert rows[0]["reporter"] is None, rows[0]  # plaintext: no verified reporter
    assert ip_list(node, "?origin=all") == listed

    # 2. Origin filters on the JSON list.
    local = ip_list(node, "?origin=local") or {}
    assert "127.0.0.3" in local, f"?origin=local does not list the local probe: {local}"
    for ip in FORGED:
        assert ip not in local, f"?origin=local lists peer-only {ip}: {local}"
    peer_only = ip_list(node, "?origin=peer") or {}
    for ip in FORGED:
        assert ip in peer_only, f"?origin=peer does not list {ip}: {peer_only}"
    assert "127.0.0.3" not in peer_only, f"?origin=peer lists the local probe: {peer_only}"

    # 2. No blocking output names any of them: one reporter < --peer-min-reporters 2.
    time.sleep(0.5)  # nothing is pending: the three are stored and listed already
    assert_not_exported(node, FORGED, "one peer reporter, default --peer-min-reporters 2")
    assert_not_exported(node, ["127.0.0.3"], "loopback is never blocked")


def test_plaintext_reporters_never_unlock_an_address(make_daemon, opendht_peers):
    """Step 3: a second, then a third self-declared reporter (plaintext values, distinct
    created_by_node_id) name the same three addresses, under --peer-min-reporters 1 (one
    verified reporter would do). All are stored as peer events, none names a reporter, and
    no address reaches plain, nft or ipset: a node id proves nothing, so forged ids cannot
    steer the firewall. (Before issue 9 two node ids unlocked 203.0.113.9.)"""
    node, peer = start_trust_node(make_daemon, opendht_peers,
                                  extra=["--peer-min-reporters", "1"])
    ids = [str(uuid.uuid4()) for _ in range(3)]
    for n, reporter in enumerate(ids, start=1):
        publish(peer, [forged_event(ip, reporter) for ip in FORGED])
        wait_seen(node, dict.fromkeys(FORGED, n))
    for ip in FORGED:
        rows = node.d.rows("source_ip = ?", (ip,))
        assert {r["created_by_node_id"] for r in rows} == set(ids), (ip, rows)
        assert {r["reporter"] for r in rows} == {None}, (ip, rows)
        assert {r["origin"] for r in rows} == {"peer"}, (ip, rows)
    peer_only = ip_list(node, "?origin=peer") or {}
    assert all(peer_only.get(ip) == 3 for ip in FORGED), peer_only
    time.sleep(0.5)  # nothing is pending: every value is stored and listed already
    assert_not_exported(node, FORGED, "three node ids, no verified reporter")


def test_min_reporters_zero_never_exports_peer_data(make_daemon, opendht_peers):
    """Step 4: with --peer-min-reporters 0, three distinct reporters naming 203.0.113.9 do
    not put it in any export. A local probe from 127.0.0.2 is stored and listed by
    ?origin=local, but is not exported either: loopback is never blocked, local or not."""
    node, peer = start_trust_node(make_daemon, opendht_peers, extra=["--peer-min-reporters", "0"])
    reporters = [str(uuid.uuid4()) for _ in range(3)]
    publish(peer, [forged_event(PUBLIC, r) for r in reporters])
    wait_seen(node, {PUBLIC: 3})
    assert {r["created_by_node_id"] for r in node.d.rows("source_ip = ?", (PUBLIC,))} == \
        set(reporters)

    call_id = local_probe(node, "127.0.0.2")
    row = node.d.rows_with(call_id)[0]
    assert row["source_ip"] == "127.0.0.2" and row["origin"] == "local", row

    deadline = time.monotonic() + EXPORT_TIMEOUT
    while "127.0.0.2" not in (ip_list(node, "?origin=local") or {}):
        if time.monotonic() > deadline:
            pytest.fail(f"?origin=local does not list 127.0.0.2 after {EXPORT_TIMEOUT}s: "
                        f"{ip_list(node, '?origin=local')}")
        time.sleep(0.1)
    local = ip_list(node, "?origin=local") or {}
    assert PUBLIC not in local, f"?origin=local lists peer-only {PUBLIC}: {local}"
    peer_only = ip_list(node, "?origin=peer") or {}
    assert peer_only.get(PUBLIC) == 3, f"?origin=peer: {peer_only}"
    assert "127.0.0.2" not in peer_only, f"?origin=peer lists the local probe: {peer_only}"

    time.sleep(0.5)
    got = exports(node)
    assert "create sentrypeer " in got["ipset"][0], got["ipset"][0]  # a well-formed script
    assert "table inet " in got["nft"][0], got["nft"][0]
    assert_not_exported(node, [PUBLIC], "--peer-min-reporters 0: peer data alone never blocks")
    assert_not_exported(node, ["127.0.0.2"], "a local probe from loopback: never-block wins")
