"""Debian's CrowdSec bouncers, unmodified, fed by sentrypeer's /v1/decisions/stream.

Everything runs in a network namespace this module creates (root needed; skipped with the
reason otherwise, or when the bouncer packages are missing): the daemon (real binary, with
--bouncer-key, --block-time 6s so blocks end during the test), crowdsec-firewall-bouncer in
nftables mode (update_frequency 1s, its own table names) and crowdsec-custom-bouncer with a
script that logs its arguments. The attacker addresses are documentation addresses added to
the namespace's lo (203.0.113.7, 2001:db8::7; 203.0.113.8 stays clean).

Checks: a SIP probe puts the attacker into the firewall bouncer's own set within 2 s and its
traffic is then dropped while a clean address still connects; when the block ends the
address comes as `deleted` (the bouncer logs the deletion, the custom bouncer's script is
called with `del`); a wrong key makes the firewall bouncer exit at startup after the 403,
as it does against CrowdSec's LAPI.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from conftest import inside_netns, run_tool, sip_request, stop_process
from test_api import api_daemon_obj, http_request

KEY = "sentrypeer-test-bouncer-key-1"
CUSTOM_KEY = "sentrypeer-test-bouncer-key-2"
ATTACKER = "203.0.113.7"
ATTACKER6 = "2001:db8::7"
CLEAN = "203.0.113.8"
BLOCK_S = 6

def need_tools():
    if os.geteuid() != 0:
        reason = "needs root (a network namespace and nftables)"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    tools = {}
    for t, pkg in (("crowdsec-firewall-bouncer", "crowdsec-firewall-bouncer"),
                   ("crowdsec-custom-bouncer", "crowdsec-custom-bouncer"),
                   ("nft", "nftables"), ("ip", "iproute2")):
        path = shutil.which(t) or (f"/usr/sbin/{t}" if os.path.exists(f"/usr/sbin/{t}") else None)
        if path is None:
            reason = f"{t} is missing (Debian package {pkg})"
            print(f"SKIP: {reason}")
            pytest.skip(reason)
        tools[t] = path
    return tools


def sh(ns: str, *cmd, timeout: float = 10) -> subprocess.CompletedProcess:
    return run_tool(["ip", "netns", "exec", ns, *cmd], timeout=timeout)


def fw_config(path: Path, api_port: int, key: str, tag: str) -> Path:
    path.write_text(f"""mode: nftables
update_frequency: 1s
daemonize: true
log_mode: stdout
log_level: debug
api_url: http://127.0.0.1:{api_port}/
api_key: {key}
disable_ipv6: false
deny_action: DROP
deny_log: false
supported_decisions_types:
  - ban
nftables:
  ipv4:
    enabled: true
    set-only: false
    table: {tag}4
    chain: {tag}4-chain
  ipv6:
    enabled: true
    set-only: false
    table: {tag}6
    chain: {tag}6-chain
prometheus:
  enabled: false
""")
    return path


def set_elements(ns: str, family: str, table: str) -> set:
    """Addresses in the table's sets (nft -j)."""
    res = sh(ns, "nft", "-j", "list", "table", family, table)
    if res.returncode != 0:
        return set()
    out = set()
    for item in json.loads(res.stdout)["nftables"]:
        for elem in item.get("set", {}).get("elem", []):
            if isinstance(elem, dict):
                elem = elem.get("elem", {}).get("val", elem)
            out.add(elem if isinstance(elem, str) else json.dumps(elem))
    return out


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def probe(ns: str, src: str, port: int):
    """One SIP OPTIONS from `src` (on the namespace's lo) to the daemon."""
    fam = socket.AF_INET6 if ":" in src else socket.AF_INET
    dst = "::1" if fam == socket.AF_INET6 else "127.0.0.1"
    with inside_netns(ns), socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.bind((src, 0))
        host = f"[{dst}]" if fam == socket.AF_INET6 else dst
        s.sendto(sip_request("OPTIONS", dst_port=port, dst_host=host,
                             src_host=f"[{src}]" if fam == socket.AF_INET6 else src,
                             src_port=s.getsockname()[1], to_user="100"), (dst, port))


def tcp_connects(ns: str, src: str, port: int, timeout: float = 0.5) -> bool:
    with inside_netns(ns), socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.bind((src, 0))
        try:
            s.connect(("127.0.0.1", port))
            return True
        except OSError:
            return False


def deletion_seen(log: str) -> bool:
    """The firewall bouncer got ATTACKER in "deleted": it removed it (`deleted 'X'`), or found
    it already gone by its own timeout (`not deleting X as it's not present in set`)."""
    return f"deleted '{ATTACKER}'" in log or f"not deleting {ATTACKER} " in log


class Proc:
    """A process started in the namespace, its output collected in a file."""

    def __init__(self, ns: str, cmd: list, log: Path):
        self.log = log
        self.fh = open(log, "wb")
        with inside_netns(ns):
            self.p = subprocess.Popen(cmd, stdout=self.fh, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self):
        stop_process(self.p)  # SIGTERM: with daemonize: true the bouncer removes its tables
        self.fh.close()


@pytest.fixture
def lab(tmp_path):
    tools = need_tools()
    ns = f"spcs-{uuid.uuid4().hex[:8]}"
    res = run_tool(["ip", "netns", "add", ns], timeout=10)
    if res.returncode != 0:
        reason = f"ip netns add does not work here: {res.stderr.strip()}"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    procs = []
    daemon = None
    try:
        r = sh(ns, "ip", "link", "set", "lo", "up")
        assert r.returncode == 0, r.stderr
        with inside_netns(ns):
            daemon = api_daemon_obj(tmp_path / "d", args=[
                "--bouncer-key", KEY, "--bouncer-key", CUSTOM_KEY,
                "--block-time", f"{BLOCK_S}s", "--sip-listen", "[::1]:0"])
        # The v6 listener on the same port as v4 (free: the namespace is new).
        daemon.cmd[daemon.cmd.index("[::1]:0")] = f"[::1]:{daemon.sip_port}"
        with inside_netns(ns):
            daemon.start()
        # The attacker addresses come after the daemon read the interface addresses: the
        # blocking policy never blocks the node's own addresses (SIGHUP would re-read them).
        for cmd in (["ip", "addr", "add", f"{ATTACKER}/32", "dev", "lo"],
                    ["ip", "addr", "add", f"{CLEAN}/32", "dev", "lo"],
                    ["ip", "addr", "add", f"{ATTACKER6}/128", "dev", "lo", "nodad"]):
            r = sh(ns, *cmd)
            assert r.returncode == 0, r.stderr
        yield {"ns": ns, "daemon": daemon, "tmp": tmp_path, "tools": tools,
               "start": lambda cmd, log: procs.append(Proc(ns, cmd, log)) or procs[-1]}
    finally:
        for p in procs:
            p.stop()
        if daemon is not None and daemon.alive():
            daemon.stop()
        run_tool(["ip", "netns", "del", ns], timeout=10)


def test_bouncers_block_from_the_stream_and_unblock_on_deleted(lab):
    ns, d, tmp = lab["ns"], lab["daemon"], lab["tmp"]
    tag = f"sp{uuid.uuid4().hex[:6]}"
    fw = lab["start"](["crowdsec-firewall-bouncer", "-c",
                       str(fw_config(tmp / "fw.yaml", d.api_port, KEY, tag))], tmp / "fw.log")
    script = tmp / "custom.sh"
    calls = tmp / "calls.log"
    script.write_text(f"#!/bin/sh\necho \"$1 $2 $3 $4\" >> {calls}\n")
    script.chmod(0o755)
    (tmp / "custom.yaml").write_text(f"""bin_path: {script}
feed_via_stdin: false
total_retries: 0
update_frequency: 1s
cache_retention_duration: 1s
daemonize: true
log_mode: stdout
log_level: info
api_url: http://127.0.0.1:{d.api_port}/
api_key: {CUSTOM_KEY}
prometheus:
  enabled: false
""")
    custom = lab["start"](["crowdsec-custom-bouncer", "-c", str(tmp / "custom.yaml")],
                          tmp / "custom.log")
    # Both made their startup request (the tables exist, nothing in them yet).
    wait_for(lambda: sh(ns, "nft", "list", "table", "ip", f"{tag}4").returncode == 0, 10,
             "the firewall bouncer's table")
    assert tcp_connects(ns, ATTACKER, d.api_port), "the attacker is blocked before any probe"

    probed = time.monotonic()
    probe(ns, ATTACKER, d.sip_port)
    probe(ns, ATTACKER6, d.sip_port)
    wait_for(lambda: ATTACKER in set_elements(ns, "ip", f"{tag}4"), 2.0,
             f"{ATTACKER} in the firewall bouncer's set")
    took = time.monotonic() - probed
    print(f"probe -> element in the bouncer's set: {took:.2f} s")
    wait_for(lambda: ATTACKER6 in set_elements(ns, "ip6", f"{tag}6"), 2.0,
             f"{ATTACKER6} in the bouncer's ip6 set")
    # Its traffic is dropped; a clean address still gets through.
    assert not tcp_connects(ns, ATTACKER, d.api_port), "blocked attacker still connects"
    assert tcp_connects(ns, CLEAN, d.api_port), "a clean address is blocked too"
    counters = sh(ns, "nft", "list", "chain", "ip", f"{tag}4", f"{tag}4-chain").stdout
    assert "counter packets 0 " not in counters, counters
    wait_for(lambda: calls.exists() and f"add {ATTACKER} " in calls.read_text(), 3,
             "the custom bouncer's add call")
    first_add = calls.read_text()
    assert "sentrypeer/sip-probe" in first_add, first_add

    # The block ends (--block-time): it comes as "deleted" and the address passes again.
    wait_for(lambda: ATTACKER not in set_elements(ns, "ip", f"{tag}4"), BLOCK_S + 3,
             "the element to go")
    wait_for(lambda: f"del {ATTACKER} " in calls.read_text(), BLOCK_S + 3,
             f"the custom bouncer's del call ({calls.read_text()})")
    wait_for(lambda: deletion_seen(fw.text()), 5, "the firewall bouncer to process the deletion")
    assert tcp_connects(ns, ATTACKER, d.api_port), "the attacker is still blocked after expiry"
    text = calls.read_text()
    assert text.index(f"add {ATTACKER} ") < text.index(f"del {ATTACKER} "), text
    assert fw.p.poll() is None and custom.p.poll() is None, "a bouncer exited"
    # Both keys have a cursor.
    with inside_netns(ns):
        m = http_request(d.api_port, "/metrics").body.decode()
    assert "sentrypeer_decisions_keys_tracked 2" in m, m


def test_wrong_key_makes_the_firewall_bouncer_exit_at_startup(lab):
    ns, d, tmp = lab["ns"], lab["daemon"], lab["tmp"]
    tag = f"sp{uuid.uuid4().hex[:6]}"
    fw = lab["start"](["crowdsec-firewall-bouncer", "-c",
                       str(fw_config(tmp / "bad.yaml", d.api_port, "wrong-key-000000", tag))],
                      tmp / "bad.log")
    rc = fw.p.wait(timeout=15)
    log = fw.text()
    print(log[-2000:])
    # As against LAPI: the 403's message is logged, the tables removed, exit status 0 (rule 8).
    assert rc == 0, log
    assert 'level=error msg="API error: access forbidden"' in log, log
    assert sh(ns, "nft", "list", "table", "ip", f"{tag}4").returncode != 0, "tables left behind"
    with inside_netns(ns):
        r = http_request(d.api_port, "/v1/decisions/stream?startup=true",
                         headers={"X-Api-Key": "wrong-key-000000"})
    assert r.status == 403 and r.body == b'{"message":"access forbidden"}', r
