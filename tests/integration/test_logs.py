"""The JSON log (SentryPeer's event format) and syslog lines, byte for byte."""

import datetime
import json
import os
import re
import signal
import socket
import time

import pytest

from conftest import (JSON_KEYS, PACKAGING, TIMESTAMP_RE, UUID4_RE, UUID_RE, Rsyslog, UdpClient,
                      new_call_id, parse_json_ordered, require_tool, run_tool, sip_request,
                      wait_for_lines)


def send_options(d, *, src_host="127.0.0.1", ua="friendly-scanner", to_user="4471234567"):
    call_id = new_call_id()
    with UdpClient(d.sip_port, src_host=src_host) as c:
        msg = c.request("OPTIONS", call_id=call_id, user_agent=ua, to_user=to_user)
        return msg, c.port, call_id


# ---- JSON log ---------------------------------------------------------------------------

def test_json_log_golden_line(make_daemon, tmp_path, version_string):
    log = tmp_path / "events.json"
    d = make_daemon(responsive=False, args=["-l", log])
    msg, port, call_id = send_options(d)
    line = d.wait_json_lines(log, 1)[0]
    ev = parse_json_ordered(line)

    assert list(ev.keys()) == JSON_KEYS, f"keys/order differ:\n{list(ev.keys())}\n{JSON_KEYS}"
    for k, v in ev.items():
        assert isinstance(v, str), f"{k} is {type(v).__name__}, must be a string"
    # Compact, one line, same escaping as a standard serializer.
    assert line == json.dumps(ev, separators=(",", ":"), ensure_ascii=False), line

    assert ev["app_name"] == "sentrypeer"
    assert ev["app_version"], "empty app_version"
    assert (version_string.startswith(ev["app_version"])
            or ev["app_version"].startswith(version_string)), (ev["app_version"], version_string)
    assert TIMESTAMP_RE.match(ev["event_timestamp"]), ev["event_timestamp"]
    ts = datetime.datetime.strptime(ev["event_timestamp"][:26], "%Y-%m-%d %H:%M:%S.%f")
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    assert abs((now - ts).total_seconds()) < 60, f"timestamp {ts} is not UTC now ({now})"
    assert UUID4_RE.match(ev["event_uuid"]), ev["event_uuid"]
    node_id = d.node_id_file.read_text().strip()
    assert UUID_RE.match(node_id), f"node-id file holds {node_id!r}"
    assert ev["created_by_node_id"] == node_id
    assert ev["collected_method"] == "passive"
    assert ev["transport_type"] == "UDP"
    assert ev["source_ip"] == "127.0.0.1"
    assert ev["source_port"] == str(port)
    assert ev["destination_ip"] == "127.0.0.1"
    assert ev["destination_port"] == str(d.sip_port)
    assert ev["called_number"] == "4471234567"
    assert ev["sip_method"] == "OPTIONS"
    assert ev["sip_user_agent"] == "friendly-scanner"
    assert ev["sip_message"] == msg.decode()

    row = d.rows_with(call_id)[0]
    for col, key in [("event_uuid", "event_uuid"), ("event_timestamp", "event_timestamp"),
                     ("created_by_node_id", "created_by_node_id"), ("sip_message", "sip_message"),
                     ("app_version", "app_version")]:
        assert row[col] == ev[key], (col, row[col], ev[key])
    assert row["origin"] == "local"
    assert abs(row["event_time"] / 1e6 - time.time()) < 60, row["event_time"]

    # The node id survives a restart.
    d.stop()
    d2 = make_daemon(responsive=True, db=d.db_path, data_dir=d.data_dir, args=["-l", log])
    send_options(d2)
    lines = d2.wait_json_lines(log, 2)
    assert len(lines) == 2, lines
    ev2 = json.loads(lines[1])
    assert ev2["created_by_node_id"] == node_id, "node id changed across a restart"
    assert d2.node_id_file.read_text().strip() == node_id
    assert ev2["collected_method"] == "responsive"
    assert ev2["event_uuid"] != ev["event_uuid"]
    d2.stop()


def test_json_log_default_path(make_daemon):
    """-j without -l writes ./sentrypeer_json.log (SentryPeer's default)."""
    d = make_daemon(args=["-j"])
    _, _, call_id = send_options(d)
    lines = d.wait_json_lines(d.workdir / "sentrypeer_json.log", 1)
    assert call_id in json.loads(lines[0])["sip_message"]


def test_json_log_control_and_invalid_bytes_stay_valid_json(make_daemon, tmp_path):
    log = tmp_path / "events.json"
    d = make_daemon(args=["-l", log])
    msg = sip_request("OPTIONS", dst_port=d.sip_port, user_agent="UAX").replace(
        b"UAX", b"a\x1b[31m\xff\xfe\"quote\\")
    with UdpClient(d.sip_port) as c:
        c.send(msg)
    line = d.wait_json_lines(log, 1)[0]
    ev = json.loads(line)  # strict: must be valid JSON
    assert "\n" not in line
    assert ev["sip_user_agent"].startswith("a") and "quote" in ev["sip_user_agent"], ev
    assert "\x1b" not in ev["sip_user_agent"], "raw ESC in a single-line field"


def test_sighup_reopens_json_log(make_daemon, tmp_path):
    log = tmp_path / "events.json"
    rotated = tmp_path / "events.json.1"
    d = make_daemon(args=["-l", log])
    _, _, first = send_options(d)
    d.wait_json_lines(log, 1)
    os.rename(log, rotated)
    d.send_signal(signal.SIGHUP)
    sent = []
    deadline = time.monotonic() + 5
    while not log.exists():  # keep probing until the daemon has reopened the file
        assert time.monotonic() < deadline, "no new JSON log file within 5 s of SIGHUP"
        sent.append(send_options(d)[2])
        time.sleep(0.1)
    sent.append(send_options(d)[2])  # sent after the reopen: must go to the new file
    wanted = [first] + sent

    def messages(path):
        return [json.loads(l)["sip_message"] for l in path.read_text().splitlines()]

    deadline = time.monotonic() + 5
    while True:
        old, new = messages(rotated), messages(log)
        if all(any(cid in m for m in old + new) for cid in wanted):
            break
        assert time.monotonic() < deadline, f"not every probe logged: {len(old)} + {len(new)} lines"
        time.sleep(0.05)
    for cid in wanted:
        assert sum(cid in m for m in old + new) == 1, f"{cid} not logged exactly once"
    assert first in old[0]
    assert any(sent[-1] in m for m in new), "probe sent after the reopen is not in the new file"
    assert d.alive()
    d.stop()


# ---- syslog -------------------------------------------------------------------------------

def syslog_re(ip: str, method: str, agent: str) -> str:
    """glibc syslog(3) on a unix datagram socket: <PRI>TIMESTAMP TAG[PID]: MESSAGE."""
    return (r"<13>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d sentrypeer\[(\d+)\]: "
            rf"Source IP: {ip}, Method: {method}, Agent: {agent}")


class SyslogCollector:
    """A unix datagram socket standing in for /dev/log."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def until(self, needle: str, timeout: float = 5.0) -> list:
        """All datagrams received until one containing `needle` (inclusive)."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no syslog datagram containing {needle!r} within {timeout}s; got {got!r}")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            got.append(data)
            if needle.encode() in data:
                return got

    def close(self):
        self.sock.close()


@pytest.fixture
def syslog_collector(tmp_path):
    c = SyslogCollector(tmp_path / "log.sock")
    yield c
    c.close()


def check_syslog_time(line: str):
    stamp = line[4:19]
    parsed = datetime.datetime.strptime(stamp, "%b %d %H:%M:%S")
    now = datetime.datetime.now()  # syslog(3) uses local time
    parsed = parsed.replace(year=now.year)
    assert abs((now - parsed).total_seconds()) < 120, f"syslog time {stamp!r} vs local {now}"


def test_syslog_golden_line(make_daemon, syslog_collector):
    d = make_daemon(args=["-s", "--syslog-socket", syslog_collector.path])
    send_options(d)
    datagrams = syslog_collector.until("Source IP: 127.0.0.1")
    line = datagrams[-1].decode()
    m = re.fullmatch(syslog_re(r"127\.0\.0\.1", "OPTIONS", "friendly-scanner"), line)
    assert m, f"syslog datagram does not match glibc syslog(3) format: {line!r}"
    assert int(m.group(1)) == d.pid
    check_syslog_time(line)


def test_syslog_escapes_control_characters(make_daemon, syslog_collector):
    d = make_daemon(args=["-s", "--syslog-socket", syslog_collector.path])
    # Characters that do not end a SIP header line: they must reach the log escaped.
    msg = sip_request("OPTIONS", dst_port=d.sip_port, user_agent="UAX").replace(
        b"UAX", b"evil\x1b[2J\x07agent")
    with UdpClient(d.sip_port, src_host="127.0.0.2") as c:
        c.send(msg)
    line = syslog_collector.until("Source IP: 127.0.0.2")[-1].decode()
    assert re.fullmatch(syslog_re(r"127\.0\.0\.2", "OPTIONS",
                                   re.escape(r"evil\x1b[2J\x07agent")), line), line

    # CR, LF and NUL inside the User-Agent value: whatever the parser makes of the message,
    # the log gets exactly one line with no raw control character.
    msg = sip_request("OPTIONS", dst_port=d.sip_port, user_agent="UAX").replace(
        b"UAX", b"evil\rFake: 1\nSource IP: 203.0.113.9\x00tail")
    with UdpClient(d.sip_port, src_host="127.0.0.3") as c:
        c.send(msg)
    datagrams = syslog_collector.until("Source IP: 127.0.0.3")
    line = datagrams[-1].decode()
    assert not re.search(r"[\x00-\x1f\x7f]", line), f"raw control character in {line!r}"
    assert re.fullmatch(syslog_re(r"127\.0\.0\.3", r"[A-Z_]+", r".*"),
                        line), line
    agent = line.split(", Agent: ", 1)[1]
    if agent.startswith("evil") and agent != "evil":
        assert agent.startswith(r"evil\x0d"), f"CR not escaped as \\x0d: {agent!r}"
    # NUL inside the value.
    msg = sip_request("OPTIONS", dst_port=d.sip_port, user_agent="UAX").replace(b"UAX", b"a\x00b")
    with UdpClient(d.sip_port, src_host="127.0.0.4") as c:
        c.send(msg)
    line = syslog_collector.until("Source IP: 127.0.0.4")[-1].decode()
    assert re.fullmatch(syslog_re(r"127\.0\.0\.4", r"[A-Z_]+", re.escape(r"a\x00b")), line), line
    # An attacker cannot make a second, forged event line.
    d.barrier()
    time.sleep(0.2)
    syslog_collector.sock.settimeout(0.2)
    extra = []
    try:
        while True:
            extra.append(syslog_collector.sock.recv(65536))
    except socket.timeout:
        pass
    assert not [x for x in extra if b"203.0.113.9," in x.split(b"Agent:")[0]], extra


# ---- rsyslog -> file -> fail2ban-regex ------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("template", ["RSYSLOG_TraditionalFileFormat", "RSYSLOG_FileFormat"])
def test_rsyslog_file_matches_fail2ban_filter(make_daemon, tmp_path, template):
    rsyslogd = require_tool("rsyslogd", "rsyslog")
    f2b_regex = require_tool("fail2ban-regex", "fail2ban")
    with Rsyslog(rsyslogd, tmp_path / "rs", template) as rs:
        d = make_daemon(args=["-s", "--syslog-socket", rs.socket])
        for src in ("127.0.0.2", "127.0.0.3"):
            send_options(d, src_host=src)
        lines = rs.wait_for(lambda ls: sum("Source IP: 127.0.0.3" in l for l in ls) >= 1 and
                            sum("Source IP: 127.0.0.2" in l for l in ls) >= 1)
        d.stop()
    events = [l for l in lines if "Source IP:" in l]
    assert len(events) == 2, lines
    for l in events:
        assert re.search(r"sentrypeer\[\d+\]: Source IP: 127\.0\.0\.[23], Method: OPTIONS, "
                         r"Agent: friendly-scanner$", l), l
    filt = PACKAGING / "fail2ban" / "filter.d" / "sentrypeer.conf"
    res = run_tool([f2b_regex, "-r", rs.logfile.resolve(), filt.resolve()], timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    m = re.search(r"Lines: (\d+) lines, (\d+) ignored, (\d+) matched, (\d+) missed", res.stdout)
    assert m, res.stdout
    total, ignored, matched, _ = map(int, m.groups())
    assert matched == len(events) and ignored == 0, res.stdout
    res = run_tool([f2b_regex, "-r", "-o", "ip", rs.logfile.resolve(), filt.resolve()], timeout=60)
    assert sorted(res.stdout.split()) == ["127.0.0.2", "127.0.0.3"], res.stdout
