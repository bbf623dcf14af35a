"""Firewall exports of /ip-addresses, loaded by the real tools: `ipset restore -exist` and
`nft -f` inside a fresh network namespace (`unshare -n`: the sets die with it), then read
back (`ipset list`, `nft -j list set`) with their timeouts. Also ?format=plain.

The daemon is probed over UDP from 127.0.0.1, 127.0.0.2 and, when IPv6 loopback works, ::1.
Loopback is on the blocking policy's built-in never-block list, so firewall exports never
list it (tests/integration/test_peer_trust.py checks that): the probes' rows are relabelled
to documentation addresses in the database (203.0.113.1, 203.0.113.2, 2001:db8::1; not
192.0.2.x: a test host may own one, and its own addresses are never listed either) and the
daemon restarted, so the exports are tested on what it loads at startup.
Root, unshare, ipset and nft are needed for the namespace tests (skipped with the reason
printed otherwise).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import sqlite3
import time
import uuid

import pytest

from conftest import free_port, require_tool, run_tool, sip_request
from test_api import (HttpResult, api_daemon, assert_common_headers, assert_json, db_seen,
                      http_request, send_udp, wait_index)

MAX_AGE_S = 7 * 86400
SET = "sptest"


def ipv6_loopback_works() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
            return True
    except OSError:
        return False


def need_netns_tools(*tools):
    if os.geteuid() != 0:
        reason = "needs root for a network namespace (unshare -n) and ipset/nftables"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    paths = {"unshare": require_tool("unshare", "util-linux"),
             "ip": require_tool("ip", "iproute2")}
    for t, pkg in tools:
        paths[t] = require_tool(t, pkg)
    # Can we actually create a namespace here (containers may forbid it)?
    res = run_tool([paths["unshare"], "-n", "true"], timeout=10)
    if res.returncode != 0:
        reason = f"unshare -n does not work here: {res.stderr.strip()}"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    return paths


def in_netns(paths: dict, script: str, timeout: float = 30) -> "subprocess.CompletedProcess":
    """Runs a shell script in a new, private network namespace (gone when it exits)."""
    return run_tool([paths["unshare"], "-n", "sh", "-ec", f"ip link set lo up\n{script}"],
                    timeout=timeout)


# Loopback sources as documentation addresses (what a firewall export may list).
DOC_ADDRESS = {"127.0.0.1": "203.0.113.1", "127.0.0.2": "203.0.113.2", "::1": "2001:db8::1"}


def relabel_sources(d, mapping: dict) -> None:
    """Stops d, rewrites its rows' source_ip by mapping, starts it again (same ports): the
    index it loads has the new addresses."""
    d.stop()
    con = sqlite3.connect(d.db_path, timeout=5)
    with con:
        for old, new in mapping.items():
            con.execute("UPDATE honey SET source_ip = ? WHERE source_ip = ?", (new, old))
    con.close()
    d.start()


def insert_local_row(db_path, ip: str, event_time_us: int) -> None:
    """One local event from ip at event_time_us (µs since 1970), as the daemon stores it."""
    insert_local_rows(db_path, [(ip, event_time_us)])


def insert_local_rows(db_path, rows) -> None:
    """Local events, one per (ip, event_time_us[, called_number]) (number default '100'),
    in one transaction, as the daemon stores them (insert while it is stopped)."""
    con = sqlite3.connect(db_path, timeout=5)
    with con:
        con.executemany(
            "INSERT INTO honey (event_timestamp, event_uuid, collected_method, source_ip,"
            " called_number, transport_type, method, user_agent, sip_message,"
            " created_by_node_id, origin, event_time) VALUES (?, ?, 'passive', ?, ?, 'UDP',"
            " 'OPTIONS', 'NOT_FOUND', 'OPTIONS sip:100@192.0.2.10 SIP/2.0', ?, 'local', ?)",
            [(time.strftime("%Y-%m-%d %H:%M:%S.000000000", time.gmtime(row[1] / 1e6)),
              str(uuid.uuid4()), row[0], row[2] if len(row) > 2 else "100", str(uuid.uuid4()),
              row[1]) for row in rows])
    con.close()


@pytest.fixture
def exporting(make_daemon):
    """A responsive daemon with the API (--max-age 7d), probed from several sources.
    Returns (daemon, [source IPs])."""
    sources = ["127.0.0.1", "127.0.0.2"]
    v6 = ipv6_loopback_works()
    d = None
    if v6:
        # The SIP port chosen by the Daemon is free on 127.0.0.1; try the same on ::1.
        for _ in range(5):
            port = free_port()
            try:
                with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as u:
                    u.bind(("::1", port))
                with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as t:
                    t.bind(("::1", port))
            except OSError:
                continue
            d = api_daemon(make_daemon, args=["--max-age", "7d", "--sip-listen", f"[::1]:{port}"],
                           sip_port=port)
            break
    if d is None:
        v6 = False
        d = api_daemon(make_daemon, args=["--max-age", "7d"])
    for src in sources:
        send_udp(d, "OPTIONS", "100", src_host=src)
    if v6:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
            s.settimeout(3)
            port = s.getsockname()[1]
            s.sendto(sip_request("OPTIONS", dst_port=d.sip_port, dst_host="[::1]",
                                 src_host="[::1]", src_port=port, to_user="100"),
                     ("::1", d.sip_port))
            reply = s.recv(65536)
            assert reply.startswith(b"SIP/2.0 200"), reply
        sources.append("::1")
    else:
        print("note: IPv6 loopback unavailable, exporting IPv4 sources only")
    d.wait_for_rows(len(sources), timeout=10)
    relabel_sources(d, DOC_ADDRESS)
    sources = [DOC_ADDRESS[s] for s in sources]
    wait_index(d.api_port, "/ip-addresses?format=plain",
               lambda r: r.status == 200 and len(r.body.split()) == len(sources))
    assert sorted(db_seen(d.db_path, "source_ip")) == sorted(sources)
    return d, sources


def test_plain_format_one_ip_per_line(exporting):
    d, sources = exporting
    r = http_request(d.api_port, "/ip-addresses?format=plain")
    assert r.status == 200, r
    assert r.header("Content-Type").startswith("text/plain"), r
    assert r.body.endswith(b"\n"), r
    lines = r.body.decode().split("\n")[:-1]
    assert sorted(lines) == sorted(sources), r
    # same order as the JSON list (newest first)
    js = http_request(d.api_port, "/ip-addresses").json()["ip_addresses"]
    assert lines == [e["ip_address"] for e in js], (r, js)
    # exact bytes: the database's sources, newest first (then by address), one per line
    seen = db_seen(d.db_path, "source_ip")
    order = sorted(seen, key=lambda ip: (-seen[ip][2], ip.encode()))
    assert r.body == "".join(ip + "\n" for ip in order).encode(), (r, order)


def test_export_timeouts_never_go_below_the_floor(make_daemon):
    """With --max-age 1s every listed entry has less than a second left, which rounds down
    to 0: ipset's and nft's `timeout 0` means a permanent ban, so the floor (1) must hold.
    Exact bytes of both scripts. The entry is a row stored 1.5 s ahead (a local event from
    a documentation address, loaded at startup): listed with under a second left from then
    until retention removes it; rows are added again (bounded) if it goes first."""
    d = api_daemon(make_daemon, args=["--max-age", "1s"])
    d.stop()
    bodies = {}
    for _ in range(5):
        row_time = time.time() + 1.5
        insert_local_row(d.db_path, "203.0.113.1", int(row_time * 1e6))
        d.start()
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline and len(bodies) < 2:
            for key, path in (("ipset", "/ip-addresses?format=ipset&set=s"),
                              ("nft", "/ip-addresses?format=nft&set=s&table=t")):
                r = http_request(d.api_port, path)
                assert r.status == 200, r
                # Only once the entry has less than a second left (its time has passed).
                if key not in bodies and b" 203.0.113.1 " in r.body and time.time() > row_time:
                    bodies[key] = r.body
            time.sleep(0.01)
        if len(bodies) == 2:
            break
        d.stop()
    assert len(bodies) == 2, f"never listed with under a second left: {bodies}"
    assert bodies["ipset"] == (b"create s hash:ip family inet timeout 1\n"
                               b"create s_v6 hash:ip family inet6 timeout 1\n"
                               b"add s 203.0.113.1 timeout 1\n"), bodies["ipset"]
    assert bodies["nft"] == (b"table inet t {\n"
                             b"\tset s {\n\t\ttype ipv4_addr\n\t\tflags timeout\n"
                             b"\t\telements = { 203.0.113.1 timeout 1s }\n\t}\n"
                             b"\tset s_v6 {\n\t\ttype ipv6_addr\n\t\tflags timeout\n\t}\n"
                             b"}\n"), bodies["nft"]


def test_ipset_script_shape(exporting):
    d, sources = exporting
    r = http_request(d.api_port, f"/ip-addresses?format=ipset&set={SET}")
    assert r.status == 200, r
    assert r.header("Content-Type").startswith("text/plain"), r
    lines = r.body.decode().splitlines()
    assert lines[:2] == [f"create {SET} hash:ip family inet timeout {MAX_AGE_S}",
                         f"create {SET}_v6 hash:ip family inet6 timeout {MAX_AGE_S}"], r
    adds = {}
    for line in lines[2:]:
        m = re.fullmatch(r"add (\S+) (\S+) timeout (\d+)", line)
        assert m, f"unexpected line {line!r} in {r}"
        adds[m.group(2)] = (m.group(1), int(m.group(3)))
    assert sorted(adds) == sorted(sources), r
    for ip, (setname, timeout) in adds.items():
        assert setname == (f"{SET}_v6" if ":" in ip else SET), line
        assert MAX_AGE_S - 120 <= timeout <= MAX_AGE_S, (ip, timeout)
    # Exact bytes: list order, each timeout what remained of the entry's retention while
    # the request ran (whole seconds, wall clock on both sides).
    t0 = time.time()
    r = http_request(d.api_port, f"/ip-addresses?format=ipset&set={SET}")
    t1 = time.time()
    seen = db_seen(d.db_path, "source_ip")
    order = sorted(seen, key=lambda ip: (-seen[ip][2], ip.encode()))
    got = dict(re.findall(r"add \S+ (\S+) timeout (\d+)\n", r.body.decode()))
    for ip in order:
        last_s = seen[ip][2] / 1e6
        assert int(MAX_AGE_S - (t1 - last_s)) - 1 <= int(got[ip]) <= \
            int(MAX_AGE_S - (t0 - last_s)) + 1, (ip, got[ip], t0, t1, last_s)
    expected = (f"create {SET} hash:ip family inet timeout {MAX_AGE_S}\n"
                f"create {SET}_v6 hash:ip family inet6 timeout {MAX_AGE_S}\n" +
                "".join(f"add {SET}{'_v6' if ':' in ip else ''} {ip} timeout {got[ip]}\n"
                        for ip in order))
    assert r.body == expected.encode(), (r, expected)
    # /ip-addresses/ipset is the same script with the default set name
    alias = http_request(d.api_port, "/ip-addresses/ipset")
    default = http_request(d.api_port, "/ip-addresses?format=ipset")
    assert alias.status == 200 and alias.body.decode().startswith("create sentrypeer hash:ip"), alias
    strip = lambda b: re.sub(rb"timeout \d+", b"", b)
    assert strip(alias.body) == strip(default.body), (alias, default)


def test_export_parameters_are_validated(exporting):
    d, _ = exporting
    version = http_request(d.api_port, "/").header("X-SentryPeer-Version")
    for q in ("format=ipset&set=bad%3Bname", "format=ipset&set=", "format=nft&table=a%20b",
              "format=nft&set=" + "x" * 40, "format=xml", "format=ipset&set=a%0Aflush"):
        assert_json(http_request(d.api_port, f"/ip-addresses?{q}"), 400,
                    {"error": "The request data was invalid"}, version)


def parse_ipset_list(text: str) -> dict:
    """`ipset list NAME` -> {"header": {...}, "members": {ip: timeout or None}}."""
    header, members, in_members = {}, {}, False
    for line in text.splitlines():
        if in_members:
            if line.strip():
                parts = line.split()
                timeout = int(parts[parts.index("timeout") + 1]) if "timeout" in parts else None
                members[parts[0]] = timeout
        elif line.startswith("Members:"):
            in_members = True
        elif ":" in line:
            k, v = line.split(":", 1)
            header[k.strip()] = v.strip()
    return {"header": header, "members": members}


def test_ipset_restore_in_a_namespace(exporting, tmp_path):
    paths = need_netns_tools(("ipset", "ipset"))
    d, sources = exporting
    r = http_request(d.api_port, f"/ip-addresses?format=ipset&set={SET}")
    assert r.status == 200, r
    script = tmp_path / "ipset.txt"
    script.write_bytes(r.body)
    q = shlex.quote(str(script))
    ipset = shlex.quote(paths["ipset"])
    res = in_netns(paths, f"{ipset} restore -exist < {q}\n"
                          f"{ipset} restore -exist < {q}\n"  # idempotent: loading twice is fine
                          f"echo '=== v4'\n{ipset} list {SET}\necho '=== v6'\n"
                          f"{ipset} list {SET}_v6\n")
    assert res.returncode == 0, (f"ipset restore failed ({res.returncode}): {res.stderr}\n"
                                 f"script:\n{r.body.decode()}")
    v4_text, v6_text = res.stdout.split("=== v4\n", 1)[1].split("=== v6\n", 1)
    v4, v6 = parse_ipset_list(v4_text), parse_ipset_list(v6_text)
    assert v4["header"].get("Type") == "hash:ip", res.stdout
    assert f"timeout {MAX_AGE_S}" in v4["header"].get("Header", ""), res.stdout
    assert "family inet6" in v6["header"].get("Header", ""), res.stdout
    got = {**v4["members"], **v6["members"]}
    assert sorted(got) == sorted(sources), res.stdout
    for ip, timeout in got.items():
        assert timeout is not None and MAX_AGE_S - 300 <= timeout <= MAX_AGE_S, (ip, res.stdout)
    assert all(":" not in ip for ip in v4["members"]), res.stdout
    assert all(":" in ip for ip in v6["members"]), res.stdout
    # The namespace is gone with the shell: nothing leaked into ours.
    mine = run_tool([paths["ipset"], "list", "-n"], timeout=10)
    assert SET not in mine.stdout.split(), f"set {SET} leaked into the test's namespace"


def nft_set_elements(doc: dict) -> dict:
    """nft -j list set -> {ip: timeout seconds or None}."""
    out = {}
    for obj in doc["nftables"]:
        s = obj.get("set")
        if not s:
            continue
        for el in s.get("elem", []):
            if isinstance(el, dict) and "elem" in el:
                e = el["elem"]
                out[e["val"]] = (e.get("timeout"), e.get("expires"))
            else:
                out[el] = (None, None)
    return out


def test_nft_script_loads_in_a_namespace(exporting, tmp_path):
    paths = need_netns_tools(("nft", "nftables"))
    d, sources = exporting
    r = http_request(d.api_port, "/ip-addresses?format=nft")
    assert r.status == 200, r
    assert r.header("Content-Type").startswith("text/plain"), r
    script = tmp_path / "sentrypeer.nft"
    script.write_bytes(r.body)
    nft = shlex.quote(paths["nft"])
    q = shlex.quote(str(script))
    res = in_netns(paths, f"{nft} -c -f {q}\n{nft} -f {q}\n{nft} -f {q}\n"
                          f"echo '=== v4'\n{nft} -j list set inet sentrypeer sentrypeer\n"
                          f"echo '=== v6'\n{nft} -j list set inet sentrypeer sentrypeer_v6\n")
    assert res.returncode == 0, (f"nft failed ({res.returncode}): {res.stderr}\n"
                                 f"script:\n{r.body.decode()}")
    v4_text, v6_text = res.stdout.split("=== v4\n", 1)[1].split("=== v6\n", 1)
    v4, v6 = json.loads(v4_text), json.loads(v6_text)
    sets = [o["set"] for doc in (v4, v6) for o in doc["nftables"] if "set" in o]
    assert [(s["name"], s["type"], s["table"], s["family"]) for s in sets] == [
        ("sentrypeer", "ipv4_addr", "sentrypeer", "inet"),
        ("sentrypeer_v6", "ipv6_addr", "sentrypeer", "inet")], res.stdout
    for s in sets:
        assert "timeout" in s.get("flags", []), s
    got = {**nft_set_elements(v4), **nft_set_elements(v6)}
    assert sorted(got) == sorted(sources), res.stdout
    for ip, (timeout, expires) in got.items():
        assert timeout is not None and MAX_AGE_S - 300 <= timeout <= MAX_AGE_S, (ip, res.stdout)
        assert expires is not None and 0 < expires <= timeout, (ip, res.stdout)


def test_nft_custom_table_and_set_names(exporting, tmp_path):
    paths = need_netns_tools(("nft", "nftables"))
    d, sources = exporting
    r = http_request(d.api_port, "/ip-addresses?format=nft&table=spt&set=bad_actors")
    assert r.status == 200, r
    script = tmp_path / "custom.nft"
    script.write_bytes(r.body)
    nft = shlex.quote(paths["nft"])
    res = in_netns(paths, f"{nft} -f {shlex.quote(str(script))}\n"
                          f"{nft} -j list set inet spt bad_actors\n")
    assert res.returncode == 0, (res.stderr, r.body.decode())
    got = nft_set_elements(json.loads(res.stdout))
    assert sorted(got) == sorted(ip for ip in sources if ":" not in ip), res.stdout
