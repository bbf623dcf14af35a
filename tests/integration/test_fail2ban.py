"""packaging/fail2ban: the filter on crafted lines, the jail's resolved configuration, and
(root only) the whole chain in a private network namespace: daemon -> rsyslog -> file ->
fail2ban-server -> nftables set -> packets from the prober are dropped."""

import json
import os
import re
import shutil
import subprocess
import time

import pytest

from conftest import (PACKAGING, Rsyslog, UdpClient, free_port, require_tool, run_tool)

FILTER = (PACKAGING / "fail2ban" / "filter.d" / "sentrypeer.conf").resolve()
JAIL = (PACKAGING / "fail2ban" / "jail.d" / "sentrypeer.conf").resolve()

LINES = [
    # (line, ip expected to be extracted or None)
    ("Nov 27 04:16:01 host sentrypeer[123]: Source IP: 192.0.2.7, Method: OPTIONS, "
     "Agent: friendly-scanner", "192.0.2.7"),
    ("2025-11-27T04:16:02.123456+00:00 host sentrypeer[9]: Source IP: 198.51.100.8, "
     "Method: INVITE, Agent: sipcli/v1.8", "198.51.100.8"),
    ("Nov 27 04:16:05 host sentrypeer[123]: Source IP: 2001:db8::5, Method: REGISTER, "
     "Agent: NOT_FOUND", "2001:db8::5"),
    ("Nov 27 04:16:06 host sentrypeer[123]: Source IP: 203.0.113.4, Method: MALFORMED, "
     "Agent: a\\x0d\\x0aSource IP: 192.0.2.99", "203.0.113.4"),
    # the user agent imitates a whole log line: the address after the ident still wins
    ("Nov 27 04:16:07 host sentrypeer[123]: Source IP: 192.0.2.9, Method: OPTIONS, "
     "Agent: host sentrypeer[1]: Source IP: 203.0.113.9, Method: X, Agent: y", "192.0.2.9"),
    # other programs are not ours
    ("Nov 27 04:16:03 host sshd[123]: Source IP: 203.0.113.1, Method: OPTIONS, Agent: x", None),
    ("Nov 27 04:16:04 host sentrypeer[123]: listening on 0.0.0.0:5060", None),
]


def fail2ban_regex_ips(tmp_path, lines):
    f2b_regex = require_tool("fail2ban-regex", "fail2ban")
    log = tmp_path / "test.log"
    log.write_text("\n".join(lines) + "\n")
    res = run_tool([f2b_regex, "-r", "-o", "ip", log, FILTER], timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout.split()


def test_filter_extracts_the_prober_address(tmp_path):
    got = fail2ban_regex_ips(tmp_path, [l for l, _ in LINES])
    assert got == [ip for _, ip in LINES if ip], got


def f2b_confdir(tmp_path, logpath, ignoreip="127.0.0.1/8 ::1"):
    """A copy of /etc/fail2ban with only our jail, logpath/ignoreip overridden."""
    if not os.path.isdir("/etc/fail2ban/action.d"):
        pytest.skip("/etc/fail2ban not installed (Debian package fail2ban)")
    conf = tmp_path / "f2b"
    shutil.copytree("/etc/fail2ban", conf)
    for p in (conf / "jail.d").iterdir():
        p.unlink()
    shutil.copy(JAIL, conf / "jail.d" / "sentrypeer.conf")
    shutil.copy(FILTER, conf / "filter.d" / "sentrypeer.conf")
    (conf / "jail.local").write_text(
        f"[sentrypeer]\nlogpath = {logpath}\nignoreip = {ignoreip}\n")
    (conf / "fail2ban.local").write_text(
        f"[Definition]\ndbfile = :memory:\nlogtarget = {tmp_path / 'fail2ban.log'}\n"
        f"socket = {tmp_path / 'f2b.sock'}\npidfile = {tmp_path / 'f2b.pid'}\n")
    return conf


def test_jail_resolves_to_nftables_drop_all_protocols(tmp_path):
    client = require_tool("fail2ban-client", "fail2ban")
    log = tmp_path / "syslog"
    log.write_text("")
    conf = f2b_confdir(tmp_path, log)
    res = run_tool([client, "-c", conf, "-d"], timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert "['add', 'sentrypeer'," in out, out
    assert "'addaction', 'nftables-allports'" in out, out
    assert "['maxretry', 1]" in out or "'maxretry', 1]" in out, out
    assert r"meta l4proto \\{ udp, tcp, icmp \\}" in out, "action does not cover UDP/TCP/ICMP"
    assert re.search(r"saddr @<addr_set> drop", out), "blocktype is not drop"
    assert "SYSLOG_IDENTIFIER=sentrypeer" in out


# ---- end to end in a network namespace (root) ----------------------------------------------

class NetNs:
    """A private network namespace kept alive by a sleeping process; run() enters it."""

    def __init__(self):
        self.holder = subprocess.Popen(["unshare", "-n", "--", "sleep", "300"],
                                       stdin=subprocess.DEVNULL)
        time.sleep(0.05)
        deadline = time.monotonic() + 5
        while os.readlink(f"/proc/{self.holder.pid}/ns/net") == os.readlink("/proc/self/ns/net"):
            assert time.monotonic() < deadline, "unshare -n did not create a namespace"
            time.sleep(0.02)
        self.run(["ip", "link", "set", "lo", "up"])

    def cmd(self, argv):
        return ["nsenter", "-t", str(self.holder.pid), "-n", "--", *map(str, argv)]

    def run(self, argv, timeout=30, check=True):
        res = subprocess.run(self.cmd(argv), capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL)
        if check:
            assert res.returncode == 0, f"{argv}: {res.stdout} {res.stderr}"
        return res

    def close(self):
        self.holder.kill()
        self.holder.wait(5)


REACH = r"""
import socket, sys, time
port = int(sys.argv[1])
srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); srv.bind(("127.0.0.1", port))
srv.settimeout(1.0)
got = set()
for src in sys.argv[2:]:
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.bind((src, 0))
    c.sendto(src.encode(), ("127.0.0.1", port)); c.close()
    try:
        got.add(srv.recv(100).decode())
    except socket.timeout:
        pass
tcp = socket.socket(); tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind(("127.0.0.1", port)); tcp.listen()
for src in sys.argv[2:]:
    c = socket.socket(); c.bind((src, 0)); c.settimeout(1.0)
    try:
        c.connect(("127.0.0.1", port)); got.add("tcp:" + src)
    except OSError:
        pass
    c.close()
print(" ".join(sorted(got)))
"""


@pytest.mark.slow
def test_probe_gets_source_banned_by_nftables(make_daemon, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespace + nftables); runs in CI")
    for tool, pkg in [("nft", "nftables"), ("unshare", "util-linux"), ("nsenter", "util-linux"),
                      ("ip", "iproute2")]:
        require_tool(tool, pkg)
    rsyslogd = require_tool("rsyslogd", "rsyslog")
    client = require_tool("fail2ban-client", "fail2ban")
    require_tool("fail2ban-server", "fail2ban")

    with Rsyslog(rsyslogd, tmp_path / "rs") as rs:
        rs.logfile.write_text("")
        conf = f2b_confdir(tmp_path, rs.logfile, ignoreip="192.0.2.254")
        sock = tmp_path / "f2b.sock"
        ns = NetNs()
        f2b = None
        try:
            f2b_out = open(tmp_path / "f2b.out", "wb")
            f2b = subprocess.Popen(ns.cmd([client, "-c", conf, "-s", sock, "-p", tmp_path / "f2b.pid",
                                           "-x", "-f", "start"]),
                                   stdin=subprocess.DEVNULL, stdout=f2b_out, stderr=f2b_out)
            # The nftables action creates its table and set on the first ban; wait for the jail.
            f2b_log = tmp_path / "fail2ban.log"
            deadline = time.monotonic() + 30
            while not (f2b_log.exists() and "Jail 'sentrypeer' started" in f2b_log.read_text()):
                assert f2b.poll() is None, f"fail2ban exited: {(tmp_path / 'f2b.out').read_text()}"
                assert time.monotonic() < deadline, (
                    f"jail did not start: {(tmp_path / 'f2b.out').read_text()}\n"
                    f"{f2b_log.read_text() if f2b_log.exists() else ''}")
                time.sleep(0.1)

            d = make_daemon(args=["-s", "--syslog-socket", rs.socket])
            with UdpClient(d.sip_port, src_host="127.0.0.2") as c:
                c.request("OPTIONS")
            rs.wait_for(lambda ls: any("Source IP: 127.0.0.2" in l for l in ls))

            deadline = time.monotonic() + 30
            while True:
                r = ns.run(["nft", "-j", "list", "set", "inet", "f2b-table", "addr-set-sentrypeer"],
                           check=False)
                elems = [] if r.returncode else [
                    e for item in json.loads(r.stdout)["nftables"] if "set" in item
                    for e in item["set"].get("elem", [])]
                if "127.0.0.2" in elems:
                    break
                assert time.monotonic() < deadline, (
                    f"127.0.0.2 not banned within 30 s; set: {r.stdout}\nfail2ban log:\n"
                    f"{f2b_log.read_text()}")
                time.sleep(0.2)
            assert elems == ["127.0.0.2"], elems

            res = ns.run(["/usr/bin/python3", "-c", REACH, free_port(), "127.0.0.2", "127.0.0.3"])
            assert res.stdout.split() == ["127.0.0.3", "tcp:127.0.0.3"], (
                f"expected only 127.0.0.3 to get through (UDP and TCP), got {res.stdout!r}")
        finally:
            if f2b is not None:
                subprocess.run(ns.cmd([client, "-s", sock, "stop"]), capture_output=True,
                               timeout=30, stdin=subprocess.DEVNULL)
                try:
                    f2b.wait(15)
                except subprocess.TimeoutExpired:
                    f2b.kill()
                    f2b.wait(5)
            ns.close()
