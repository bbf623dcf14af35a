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
    """A copy of /etc/fail2ban with only our jail, logpath (and ignoreip unless None)
    overridden."""
    if not os.path.isdir("/etc/fail2ban/action.d"):
        pytest.skip("/etc/fail2ban not installed (Debian package fail2ban)")
    conf = tmp_path / "f2b"
    shutil.copytree("/etc/fail2ban", conf)
    for p in (conf / "jail.d").iterdir():
        p.unlink()
    shutil.copy(JAIL, conf / "jail.d" / "sentrypeer.conf")
    shutil.copy(FILTER, conf / "filter.d" / "sentrypeer.conf")
    (conf / "jail.local").write_text(
        f"[sentrypeer]\nlogpath = {logpath}\n"
        + (f"ignoreip = {ignoreip}\n" if ignoreip is not None else ""))
    (conf / "fail2ban.local").write_text(
        f"[Definition]\ndbfile = :memory:\nlogtarget = {tmp_path / 'fail2ban.log'}\n"
        f"socket = {tmp_path / 'f2b.sock'}\npidfile = {tmp_path / 'f2b.pid'}\n")
    return conf


MAXRETRY = 5  # the jail's documented threshold (lines from one address within findtime)


def test_jail_resolves_to_sip_ports_only_after_threshold(tmp_path):
    """The shipped jail as fail2ban resolves it: 5 lines in 10 minutes ban for a day, with
    two nftables actions that drop UDP 5060 and TCP 5060/5061 only (no ICMP, no other port),
    and the default ignoreip is loopback."""
    client = require_tool("fail2ban-client", "fail2ban")
    log = tmp_path / "syslog"
    log.write_text("")
    conf = f2b_confdir(tmp_path, log, ignoreip=None)
    res = run_tool([client, "-c", conf, "-d"], timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert "['add', 'sentrypeer'," in out, out
    assert f"['set', 'sentrypeer', 'maxretry', {MAXRETRY}]" in out, out
    assert "['set', 'sentrypeer', 'findtime', '10m']" in out, out
    assert "['set', 'sentrypeer', 'bantime', '1d']" in out, out
    assert "['set', 'sentrypeer', 'addignoreip', '127.0.0.1/8', '::1']" in out, out
    actions = re.findall(r"\['set', 'sentrypeer', 'addaction', '([^']+)'\]", out)
    assert actions == ["nft-sip-udp", "nft-sip-tcp"], actions
    # What each action's rule matches: the protocol loop and the port set.
    rules = re.findall(r"for proto in \$\(echo '([^']*)'.*?dport \\\\\{ \$\(echo '([^']*)'"
                       r".*?saddr @<addr_set> (\w+)", out)
    assert sorted(set(rules)) == [("tcp", "5060,5061", "drop"), ("udp", "5060", "drop")], rules
    assert "icmp" not in out.lower(), "the jail must not touch ICMP/ICMPv6"
    assert "l4proto" not in out, "an allports action is configured"
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
import json, socket, sys
# cases: [family, src, dst, proto, port]; prints the ones that got through, as JSON
cases = json.loads(sys.argv[1])
got = []
for fam, src, dst, proto, port in cases:
    af = socket.AF_INET6 if fam == 6 else socket.AF_INET
    if proto == "udp":
        srv = socket.socket(af, socket.SOCK_DGRAM); srv.bind((dst, port)); srv.settimeout(0.5)
        c = socket.socket(af, socket.SOCK_DGRAM); c.bind((src, 0))
        c.sendto(b"x", (dst, port)); c.close()
        try:
            srv.recv(10); got.append([fam, src, dst, proto, port])
        except socket.timeout:
            pass
        srv.close()
    else:
        srv = socket.socket(af); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((dst, port)); srv.listen()
        c = socket.socket(af); c.bind((src, 0)); c.settimeout(0.5)
        try:
            c.connect((dst, port)); got.append([fam, src, dst, proto, port])
        except OSError:
            pass
        c.close(); srv.close()
print(json.dumps(got))
"""

SIP_PORTS = {("udp", 5060), ("tcp", 5060), ("tcp", 5061)}
OTHER_PORTS = {("udp", 5061), ("udp", 5070), ("tcp", 5070)}


def set_elems(ns, name):
    r = ns.run(["nft", "-j", "list", "set", "inet", "f2b-table", name], check=False)
    if r.returncode:
        return []
    return [e for item in json.loads(r.stdout)["nftables"] if "set" in item
            for e in item["set"].get("elem", [])]


@pytest.mark.slow
def test_threshold_bans_sip_ports_only_ipv4_and_ipv6(make_daemon, tmp_path):
    """daemon -> rsyslog -> file -> fail2ban-server -> nftables, in a private network
    namespace: an address with maxretry-1 probes is not banned, one with maxretry is; the
    ban drops UDP 5060 and TCP 5060/5061 from it and nothing else, for IPv4 and IPv6."""
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
            for a in ("2001:db8::1", "2001:db8::2", "2001:db8::3"):
                ns.run(["ip", "addr", "add", f"{a}/128", "dev", "lo", "nodad"])
            f2b_out = open(tmp_path / "f2b.out", "wb")
            f2b = subprocess.Popen(ns.cmd([client, "-c", conf, "-s", sock, "-p", tmp_path / "f2b.pid",
                                           "-x", "-f", "start"]),
                                   stdin=subprocess.DEVNULL, stdout=f2b_out, stderr=f2b_out)
            f2b_log = tmp_path / "fail2ban.log"
            deadline = time.monotonic() + 30
            while not (f2b_log.exists() and "Jail 'sentrypeer' started" in f2b_log.read_text()):
                assert f2b.poll() is None, f"fail2ban exited: {(tmp_path / 'f2b.out').read_text()}"
                assert time.monotonic() < deadline, (
                    f"jail did not start: {(tmp_path / 'f2b.out').read_text()}\n"
                    f"{f2b_log.read_text() if f2b_log.exists() else ''}")
                time.sleep(0.1)

            # IPv4 through the real daemon: 127.0.0.3 stays one probe under the threshold,
            # then 127.0.0.2 reaches it.
            d = make_daemon(args=["-s", "--syslog-socket", rs.socket])
            for src, n in (("127.0.0.3", MAXRETRY - 1), ("127.0.0.2", MAXRETRY)):
                with UdpClient(d.sip_port, src_host=src) as c:
                    for _ in range(n):
                        c.request("OPTIONS")
                rs.wait_for(lambda ls, src=src, n=n:
                            sum(f"Source IP: {src}," in l for l in ls) >= n)
            # IPv6: the daemon's lines, as rsyslog wrote them, for two documentation addresses
            # (the host has no such address to probe from).
            template = next(l for l in rs.lines() if "Source IP: 127.0.0.2," in l)
            with open(rs.logfile, "a") as f:
                for src, n in (("2001:db8::3", MAXRETRY - 1), ("2001:db8::2", MAXRETRY)):
                    for _ in range(n):
                        f.write(template.replace("127.0.0.2", src) + "\n")

            deadline = time.monotonic() + 30
            while True:
                banned = {name: set_elems(ns, name) for name in
                          ("addr-set-sentrypeer-udp", "addr-set-sentrypeer-tcp",
                           "addr6-set-sentrypeer-udp", "addr6-set-sentrypeer-tcp")}
                if all(banned.values()):
                    break
                assert time.monotonic() < deadline, (
                    f"not banned within 30 s: {banned}\nfail2ban log:\n{f2b_log.read_text()}")
                time.sleep(0.2)
            time.sleep(1.0)  # lines under the threshold had every chance to ban too
            banned = {name: set_elems(ns, name) for name in banned}
            assert banned == {"addr-set-sentrypeer-udp": ["127.0.0.2"],
                              "addr-set-sentrypeer-tcp": ["127.0.0.2"],
                              "addr6-set-sentrypeer-udp": ["2001:db8::2"],
                              "addr6-set-sentrypeer-tcp": ["2001:db8::2"]}, banned
            status = ns.run([client, "-s", sock, "status", "sentrypeer"]).stdout
            assert re.search(r"Total failed:\s+%d\b" % (4 * MAXRETRY - 2), status), status

            # Exactly four rules: SIP ports, per family, drop; no ICMP, no other port.
            chain = ns.run(["nft", "list", "chain", "inet", "f2b-table", "f2b-chain"]).stdout
            rules = sorted(re.sub(r"\s+", " ", l).strip() for l in chain.splitlines()
                           if "saddr" in l)
            assert rules == [
                "tcp dport { 5060, 5061 } ip saddr @addr-set-sentrypeer-tcp drop",
                "tcp dport { 5060, 5061 } ip6 saddr @addr6-set-sentrypeer-tcp drop",
                "udp dport 5060 ip saddr @addr-set-sentrypeer-udp drop",
                "udp dport 5060 ip6 saddr @addr6-set-sentrypeer-udp drop",
            ], chain
            assert "icmp" not in chain, chain

            cases = []
            for fam, dst, srcs in ((4, "127.0.0.1", ("127.0.0.2", "127.0.0.3")),
                                   (6, "2001:db8::1", ("2001:db8::2", "2001:db8::3"))):
                for src in srcs:
                    for proto, port in sorted(SIP_PORTS | OTHER_PORTS):
                        cases.append([fam, src, dst, proto, port])
            res = ns.run(["/usr/bin/python3", "-c", REACH, json.dumps(cases)], timeout=60)
            through = {tuple(c) for c in json.loads(res.stdout)}
            blocked = {tuple(c) for c in cases} - through
            expect_blocked = {(fam, src, dst, proto, port)
                              for fam, src, dst, proto, port in map(tuple, cases)
                              if src in ("127.0.0.2", "2001:db8::2") and (proto, port) in SIP_PORTS}
            assert blocked == expect_blocked, (
                f"blocked {sorted(blocked)}, expected {sorted(expect_blocked)}")
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
