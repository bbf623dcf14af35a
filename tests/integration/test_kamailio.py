"""packaging/kamailio/kamailio.cfg, run by the real Kamailio 5.6 with sipp as caller and
callee, asking a real sentrypeer per INVITE (docs: packaging/kamailio/README.md).

Two network namespaces joined by a veth pair (both created here, deleted at teardown):
- "sp": sentrypeer (API on 198.51.100.1:8082), its database holding a local event from
  203.0.113.7 to +442079460000, one to 112 (--allow-number 112) and one to 999;
- "edge": Kamailio on 203.0.113.1:5060 with the shipped cfg (its values rewritten: ports,
  sentrypeer's URL, the next hop), a sipp UAS behind it on 203.0.113.1:5080, and the sipp
  callers on 203.0.113.7 (recorded) and 203.0.113.8 (unknown).
sentrypeer runs in its own namespace because its blocking policy never blocks the node's own
addresses (nor loopback): the callers' addresses must not be its own.

Shown: an INVITE from the recorded address -> 403; to the recorded number in each spelling
(+44..., 0044..., 44..., 011 44...) -> 403; an unknown caller to an unknown number, and to
the allowed 112, is passed on (the UAS answers, the call completes); sentrypeer frozen
(SIGSTOP: Kamailio's 1 s timeout) and stopped (connection refused): a call to the recorded,
never-asked 999 still goes through (fail open).

Needs root (ip netns), kamailio (+ kamailio-utils-modules for http_client) and sipp:
skipped with the reason printed otherwise.
Run: /usr/bin/python3 -m pytest tests/integration/test_kamailio.py -v
"""

import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from conftest import Daemon, require_tool, run_tool, stop_process
from test_exports import insert_local_rows

REPO = Path(__file__).resolve().parents[2]
CFG = REPO / "packaging" / "kamailio" / "kamailio.cfg"
SP_ADDR, EDGE_ADDR = "198.51.100.1", "203.0.113.1"
ATTACKER, STRANGER, OTHER = "203.0.113.7", "203.0.113.8", "203.0.113.9"
API_PORT, SIP_PORT, UAS_PORT = 8082, 5060, 5080
RECORDED = "+442079460000"
SPELLINGS = ["+442079460000", "00442079460000", "442079460000", "011442079460000"]

EXPECT_403 = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="INVITE answered 403">
  <send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="100" optional="true"/>
  <recv response="403"/>
  <send><![CDATA[
ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Content-Length: 0

]]></send>
</scenario>
"""


def skip(reason: str):
    print(f"SKIP: {reason}")
    pytest.skip(reason)


def tools():
    if os.geteuid() != 0:
        skip("needs root for network namespaces (ip netns)")
    found = {}
    for name, pkg in (("kamailio", "kamailio"), ("sipp", "sip-tester"), ("ip", "iproute2")):
        found[name] = require_tool(name, pkg)
    mod = subprocess.run([found["kamailio"], "-c", "-f", str(CFG)], capture_output=True,
                         text=True, timeout=30)
    if "http_client.so" in mod.stderr and mod.returncode != 0:
        skip("kamailio's http_client module is missing (package kamailio-utils-modules)")
    return found


def sh(*cmd, timeout=10):
    res = run_tool([str(c) for c in cmd], timeout=timeout)
    assert res.returncode == 0, (cmd, res.stdout, res.stderr)
    return res


@pytest.fixture
def net():
    """Namespaces sp and edge, a veth pair between them, the documentation addresses."""
    t = tools()
    tag = uuid.uuid4().hex[:8]
    sp, edge = f"spk-sp-{tag}", f"spk-edge-{tag}"
    created = []
    try:
        for ns in (sp, edge):
            sh(t["ip"], "netns", "add", ns)
            created.append(ns)
            sh(t["ip"], "-n", ns, "link", "set", "lo", "up")
        sh(t["ip"], "-n", sp, "link", "add", "v-sp", "type", "veth", "peer", "name", "v-edge",
           "netns", edge)
        sh(t["ip"], "-n", sp, "addr", "add", f"{SP_ADDR}/24", "dev", "v-sp")
        sh(t["ip"], "-n", sp, "link", "set", "v-sp", "up")
        sh(t["ip"], "-n", sp, "route", "add", "203.0.113.0/24", "dev", "v-sp")
        for a in (EDGE_ADDR, ATTACKER, STRANGER, OTHER):
            sh(t["ip"], "-n", edge, "addr", "add", f"{a}/32", "dev", "v-edge")
        sh(t["ip"], "-n", edge, "link", "set", "v-edge", "up")
        sh(t["ip"], "-n", edge, "route", "add", "198.51.100.0/24", "dev", "v-edge")
        yield {"sp": sp, "edge": edge, **t}
    finally:
        for ns in created:
            subprocess.run([t["ip"], "netns", "del", ns], capture_output=True, timeout=10)


class Proc:
    """A process in a namespace, ended by its pid at teardown."""

    def __init__(self, cmd, log: Path):
        self.log = log
        self.fh = open(log, "wb")
        self.p = subprocess.Popen([str(c) for c in cmd], stdout=self.fh, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGCONT)  # a test may have stopped it
        stop_process(self.p)
        self.fh.close()

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def kamailio_cfg(tmp_path: Path) -> Path:
    text = CFG.read_text()
    values = {"SIP_LISTEN": f"udp:{EDGE_ADDR}:{SIP_PORT}",
              "NEXT_HOP": f"sip:{EDGE_ADDR}:{UAS_PORT}",
              "SENTRYPEER_URL": f"http://{SP_ADDR}:{API_PORT}"}
    for name, value in values.items():
        text, n = re.subn(rf'^#!substdef "!{name}!.*!g"$', f'#!substdef "!{name}!{value}!g"',
                          text, flags=re.M)
        assert n == 1, name
    out = tmp_path / "kamailio.cfg"
    out.write_text(text)
    return out


def wait_udp_listener(net, ns: str, port: int, proc: "Proc", deadline_s: float = 10):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.p.poll() is not None:
            pytest.fail(f"{proc.log.name}: exited {proc.p.returncode}:\n{proc.text()[-3000:]}")
        res = run_tool([net["ip"], "netns", "exec", ns, "ss", "-lun"], timeout=5)
        if f":{port} " in res.stdout:
            return
        time.sleep(0.1)
    pytest.fail(f"nothing listens on UDP {port} in {ns}")


@pytest.fixture
def stack(net, tmp_path):
    """sentrypeer (sp), Kamailio and the UAS (edge): returns a dict with the processes."""
    procs = []
    d = Daemon(tmp_path / "sp", sip=False, args=[
        "-a", "--api-listen", f"{SP_ADDR}:{API_PORT}", "--max-age", "7d",
        "--allow-number", "112"])
    d.cmd = [net["ip"], "netns", "exec", net["sp"], *d.cmd]
    try:
        d.start()
        d.stop()
        now = int(time.time() * 1e6)
        insert_local_rows(d.db_path, [(ATTACKER, now - 60_000_000, RECORDED),
                                      (ATTACKER, now - 50_000_000, "112"),
                                      (ATTACKER, now - 40_000_000, "999")])
        d.start()
        uas = Proc([net["ip"], "netns", "exec", net["edge"], net["sipp"], "-sn", "uas",
                    "-i", EDGE_ADDR, "-p", UAS_PORT, "-nostdin"],
                   tmp_path / "uas.log")
        procs.append(uas)
        kam = Proc([net["ip"], "netns", "exec", net["edge"], net["kamailio"], "-f",
                    kamailio_cfg(tmp_path), "-DD", "-E", "-m", "32", "-M", "4",
                    "-Y", tmp_path, "-w", tmp_path], tmp_path / "kamailio.log")
        procs.append(kam)
        wait_udp_listener(net, net["edge"], SIP_PORT, kam)
        wait_udp_listener(net, net["edge"], UAS_PORT, uas)
        yield {**net, "daemon": d, "kam": kam, "uas_proc": uas, "tmp": tmp_path}
    finally:
        for p in procs:
            p.stop()
        if d.proc is not None and d.proc.poll() is None:
            d.proc.send_signal(signal.SIGCONT)
            d.stop()


def call(stack, src: str, user: str, expect_403: bool, port: int) -> tuple:
    """One INVITE from src to user@Kamailio. expect_403: the 403 scenario, else the built-in
    UAC (INVITE, 200, ACK, BYE through Kamailio to the UAS). Returns (ok, seconds, log)."""
    scen = []
    if expect_403:
        xml = stack["tmp"] / "expect403.xml"
        xml.write_text(EXPECT_403)
        scen = ["-sf", xml]
    else:
        scen = ["-sn", "uac"]
    cmd = [stack["ip"], "netns", "exec", stack["edge"], stack["sipp"], *scen, "-i", src,
           "-p", port, "-s", user, f"{EDGE_ADDR}:{SIP_PORT}", "-m", "1", "-nostdin",
           "-recv_timeout", "6000", "-timeout", "15s", "-timeout_error"]
    t0 = time.monotonic()
    res = run_tool([str(c) for c in cmd], timeout=30)
    return res.returncode == 0, time.monotonic() - t0, res.stdout[-1500:] + res.stderr[-1500:]


def test_kamailio_rejects_recorded_callers_and_numbers_and_fails_open(stack):
    k = stack["kam"]
    ok, _, log = call(stack, ATTACKER, "100", True, 6001)
    assert ok, f"recorded address not rejected with 403:\n{log}\n{k.text()[-3000:]}"
    for i, number in enumerate(SPELLINGS):
        ok, _, log = call(stack, STRANGER, number, True, 6010 + i)
        assert ok, f"{number}: not rejected with 403:\n{log}\n{k.text()[-3000:]}"
    ok, _, log = call(stack, STRANGER, "100", False, 6020)
    assert ok, f"an unknown caller to an unknown number was not passed on:\n{log}\n" \
               f"{k.text()[-3000:]}"
    ok, _, log = call(stack, STRANGER, "112", False, 6021)
    assert ok, f"the allowed number 112 was not passed on:\n{log}\n{k.text()[-3000:]}"
    # The rejections came from sentrypeer's answers, and the numbers were asked as dialled.
    text = k.text()
    assert f"blocked address {ATTACKER}" in text, text[-3000:]
    assert all(f"to blocked number {n} " in text for n in SPELLINGS), text[-3000:]

    # Fail open: sentrypeer frozen (accepts, never answers: 1 s timeout) then stopped
    # (refused). 999 is recorded (blocked) but was never asked, so nothing is cached.
    d = stack["daemon"]
    d.proc.send_signal(signal.SIGSTOP)
    try:
        ok, seconds, log = call(stack, STRANGER, "999", False, 6030)
    finally:
        d.proc.send_signal(signal.SIGCONT)
    assert ok, f"with sentrypeer frozen the call did not pass:\n{log}\n{k.text()[-3000:]}"
    print(f"call with sentrypeer frozen: {seconds:.2f}s (two 1 s timeouts at most)")
    assert seconds < 6, seconds
    d.stop()
    ok, seconds, log = call(stack, OTHER, "999", False, 6031)
    assert ok, f"with sentrypeer stopped the call did not pass:\n{log}\n{k.text()[-3000:]}"
    assert "let through" in k.text()
