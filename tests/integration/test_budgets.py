"""Budgets and shutdown in the ingest path (issue 8): parse-time caps on the called number
and user agent, the per-destination UDP reply rate in responsive mode, counted sink write
errors, a second SIGTERM that exits at once with what was queued committed, and -d/-v."""

from __future__ import annotations

import re
import signal
import socket
import threading
import time

from conftest import UdpClient, db_query, new_call_id, sip_request
from test_api import api_daemon
from test_metrics import scrape, value, wait_metric


def test_huge_called_number_and_user_agent_are_stored_cut_to_their_caps(make_daemon):
    d = make_daemon()
    call_id = new_call_id()
    with UdpClient(d.sip_port) as c:
        c.request("INVITE", call_id=call_id, to_user="4" * 10000, user_agent="U" * 20000)
    row = d.rows_with(call_id)[0]
    assert row["called_number"] == "4" * 128
    assert row["user_agent"] == "U" * 512
    assert len(row["sip_message"]) > 30000  # the message itself is kept whole


def test_reply_rate_caps_answers_per_destination_but_records_everything(make_daemon):
    d = api_daemon(make_daemon, args=["--sip-reply-rate", "5"], responsive=True)
    n = 60
    call_ids = [new_call_id() for _ in range(n)]
    replies = 0
    with UdpClient(d.sip_port) as c:
        start = time.monotonic()
        for cid in call_ids:
            c.request("OPTIONS", call_id=cid)
        sent_in = time.monotonic() - start
        while c.recv(timeout=0.5) is not None:
            replies += 1
    # A burst of 5, then 5/s while they were being sent.
    allowed = 5 + int(5 * sent_in) + 1
    assert 5 <= replies <= allowed, f"{replies} replies to {n} requests sent in {sent_in:.2f}s"
    d.wait_for_rows(n)  # every request is recorded, answered or not
    s = wait_metric(d.api_port, "sentrypeer_sip_replies_suppressed_total", n - replies,
                    transport="UDP")
    assert value(s, "sentrypeer_sip_replies_suppressed_total", transport="UDP") == n - replies
    assert value(s, "sentrypeer_replies_total", transport="UDP") == replies
    # Another destination has its own budget.
    with UdpClient(d.sip_port, src_host="127.0.0.2") as other:
        other.request("OPTIONS", call_id=new_call_id())
        assert other.recv(timeout=2.0) is not None


def test_reply_rate_zero_is_unlimited(make_daemon):
    d = make_daemon(responsive=True, args=["--sip-reply-rate", "0"])
    with UdpClient(d.sip_port) as c:
        for _ in range(40):
            c.request("OPTIONS", call_id=new_call_id())
        replies = 0
        while c.recv(timeout=0.5) is not None:
            replies += 1
    assert replies == 40


def test_json_log_write_errors_are_counted(make_daemon):
    # /dev/full opens and buffers fine; every flush fails with ENOSPC.
    d = api_daemon(make_daemon, args=["-l", "/dev/full"], responsive=False)
    n = 25
    with UdpClient(d.sip_port) as c:
        for _ in range(n):
            c.request("OPTIONS", call_id=new_call_id())
    d.wait_for_rows(n)
    s = wait_metric(d.api_port, "sentrypeer_sink_write_errors_total", n, sink="json_log")
    assert value(s, "sentrypeer_sink_write_errors_total", sink="json_log") == n
    assert value(s, "sentrypeer_sink_write_errors_total", sink="store") == 0


def test_syslog_with_nothing_listening_counts_write_errors(make_daemon, tmp_path):
    d = api_daemon(make_daemon, args=["-s", "--syslog-socket", str(tmp_path / "no-syslogd")],
                   responsive=False)
    n = 10
    with UdpClient(d.sip_port) as c:
        for _ in range(n):
            c.request("OPTIONS", call_id=new_call_id())
    d.wait_for_rows(n)
    s = wait_metric(d.api_port, "sentrypeer_sink_write_errors_total", n, sink="syslog")
    assert value(s, "sentrypeer_sink_write_errors_total", sink="syslog") == n


def test_queue_byte_budgets_are_exported(make_daemon):
    d = api_daemon(make_daemon, args=["-l", "log.json"], responsive=False)
    s = scrape(d.api_port)
    assert value(s, "sentrypeer_sink_queue_capacity_bytes", sink="store") == 64 * 2**20
    assert value(s, "sentrypeer_sink_queue_capacity_bytes", sink="json_log") == 16 * 2**20
    assert ("sentrypeer_sink_queue_bytes", frozenset({("sink", "store")})) in s
    for reason in ("full", "bytes", "shutdown"):
        assert ("sentrypeer_sink_dropped_total",
                frozenset({("sink", "json_log"), ("reason", reason)})) in s


class BlackHole:
    """A TCP server that accepts and never answers (a hung webhook endpoint)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        self.sock.settimeout(0.1)
        while not self.done.is_set():
            try:
                conn, _ = self.sock.accept()
                self.conns.append(conn)
            except OSError:
                pass

    def close(self):
        self.done.set()
        self.thread.join(2)
        for c in self.conns:
            c.close()
        self.sock.close()


def flood(port: int, stop: threading.Event, sent: list, seconds: float = 20.0):
    """Sends OPTIONS as fast as it can until stop is set (at most `seconds`)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    msg = sip_request("OPTIONS", dst_port=port, src_port=sock.getsockname()[1],
                      call_id="flood@it.test")
    deadline = time.monotonic() + seconds
    n = 0
    while not stop.is_set() and time.monotonic() < deadline:
        for _ in range(100):
            try:
                sock.sendto(msg, ("127.0.0.1", port))
                n += 1
            except OSError:
                pass
    sent.append(n)
    sock.close()


def test_second_sigterm_under_load_exits_at_once_with_rows_committed(make_daemon):
    """A flood keeps the UDP socket full and a hung webhook holds its sink: the graceful stop
    takes seconds (the drain's and the webhook's bounds). A second SIGTERM exits at once, and
    what the daemon says it stored is in the database."""
    hole = BlackHole()
    stop = threading.Event()
    sent: list = []
    try:
        d = make_daemon(args=["-w", f"http://127.0.0.1:{hole.port}/events"],
                        env={"no_proxy": "127.0.0.1", "NO_PROXY": "127.0.0.1"})
        sender = threading.Thread(target=flood, args=(d.sip_port, stop, sent), daemon=True)
        sender.start()
        d.wait_for_rows(1000, timeout=20)
        d.send_signal(signal.SIGTERM)
        time.sleep(0.1)  # without the fix, the graceful stop takes the webhook's 2 s budget
        second = time.monotonic()
        d.send_signal(signal.SIGTERM)
        rc = d.stop(timeout=10, expect_rc=None)
        took = time.monotonic() - second
    finally:
        stop.set()
        hole.close()
    print(f"flood sent {sent}; exit {rc} {took:.2f}s after the second SIGTERM")
    assert rc == 0, d.stderr[-3000:]
    assert took < 1.5, f"exited {took:.2f}s after the second SIGTERM\n{d.stderr[-3000:]}"
    assert "again: exiting now" in d.stderr
    m = re.search(r"stopped: (\d+) events stored this run", d.stderr)
    assert m, d.stderr[-3000:]
    stored = int(m.group(1))
    rows = db_query(d.db_path, "SELECT count(*) AS n FROM honey")[0]["n"]
    assert rows == stored > 1000


PROBE_LINE = re.compile(r"probe: UDP 127\.0\.0\.1:\d+ -> 127\.0\.0\.1:(\d+) OPTIONS passive "
                        r"called 4242 agent \"debug-probe-agent\"")


def test_debug_logs_one_line_per_probe_and_default_does_not(make_daemon):
    quiet = make_daemon()
    loud = make_daemon(args=["-d"])
    for d in (quiet, loud):
        with UdpClient(d.sip_port) as c:
            call_id = new_call_id()
            c.request("OPTIONS", call_id=call_id, to_user="4242", user_agent="debug-probe-agent")
            d.rows_with(call_id)
    deadline = time.monotonic() + 5
    while not any(PROBE_LINE.search(l) for l in loud.stderr_lines) and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    matches = [PROBE_LINE.search(l) for l in loud.stderr_lines if PROBE_LINE.search(l)]
    assert len(matches) == 1, loud.stderr[-3000:]
    assert int(matches[0].group(1)) == loud.sip_port
    assert not any("probe:" in l for l in quiet.stderr_lines), quiet.stderr[-3000:]
    # Module state changes are there too (debug includes verbose).
    assert any(f"UDP 127.0.0.1:{loud.sip_port}: listening" in l for l in loud.stderr_lines)


def test_verbose_logs_module_state_changes_but_not_probes(make_daemon):
    d = make_daemon(args=["-v"])
    with UdpClient(d.sip_port) as c:
        call_id = new_call_id()
        c.request("OPTIONS", call_id=call_id)
        d.rows_with(call_id)
    d.stop()
    text = d.stderr
    assert f"UDP 127.0.0.1:{d.sip_port}: listening" in text
    assert "sink store: started" in text
    assert "sink store: drained, closing" in text
    assert "probe:" not in text


def test_debug_probe_lines_are_rate_limited(make_daemon):
    d = make_daemon(args=["-d"])
    n = 2000
    with UdpClient(d.sip_port) as c:
        for _ in range(n):
            c.request("OPTIONS", call_id=new_call_id())
    d.wait_for_rows(n)
    d.stop()
    probes = [l for l in d.stderr_lines if "probe: UDP" in l]
    # A burst of 100 and 20/s: a 2,000-probe flood cannot write 2,000 lines.
    assert 100 <= len(probes) < 500, len(probes)
