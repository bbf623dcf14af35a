"""REST API hardening against the real binary: CORS only when configured, out-of-range
paging cursors, a literal '+' in ?prefix, non-canonical IP lookups, /stats?top range, CSV
formula cells, connection budgets (total and per client IP), --api-threads, and a dual-stack
[::] listener. Replies are compared byte for byte where the contract is the bytes.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Optional

import pytest

from conftest import free_port, run_binary
from test_api import (api_daemon, assert_json, db_seen, dumps, expected_list, fmt_us,
                      http_request, no_p2p_args, raw_http, send_udp, wait_api, wait_index)

INVALID = {"error": "The request data was invalid"}


def version_of(port: int) -> str:
    return http_request(port, "/").header("X-SentryPeer-Version")


# --------------------------------------------------------------------------------------
# CORS
# --------------------------------------------------------------------------------------

def test_no_cors_header_by_default_exact_bytes(make_daemon):
    d = api_daemon(make_daemon)
    v = version_of(d.api_port)
    raw = raw_http(d.api_port, b"GET / HTTP/1.1\r\nHost: x\r\nOrigin: http://evil.test\r\n"
                               b"Connection: close\r\n\r\n")
    assert raw == (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                   f"X-Powered-By: SentryPeer\r\nX-SentryPeer-Version: {v}\r\n"
                   f"Server: sentrypeer/{v}\r\nConnection: close\r\nContent-Length: 16\r\n\r\n"
                   '{"status": "OK"}').encode(), raw


def test_cors_origin_option_sets_the_header_exact_bytes(make_daemon):
    origin = "https://dash.example"
    d = api_daemon(make_daemon, args=["--api-cors-origin", origin])
    v = version_of(d.api_port)
    common = (f"Access-Control-Allow-Origin: {origin}\r\nX-Powered-By: SentryPeer\r\n"
              f"X-SentryPeer-Version: {v}\r\nServer: sentrypeer/{v}\r\n")
    raw = raw_http(d.api_port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert raw == (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{common}"
                   f"Connection: close\r\nContent-Length: 16\r\n\r\n"
                   '{"status": "OK"}').encode(), raw
    raw = raw_http(d.api_port, b"OPTIONS /numbers HTTP/1.1\r\nHost: x\r\nOrigin: " +
                   origin.encode() + b"\r\nAccess-Control-Request-Method: GET\r\n"
                   b"Connection: close\r\n\r\n")
    assert raw == (f"HTTP/1.1 204 No Content\r\n{common}Allow: GET, HEAD, OPTIONS\r\n"
                   f"Access-Control-Allow-Methods: GET, HEAD, OPTIONS\r\n"
                   f"Access-Control-Allow-Headers: Authorization, Content-Type\r\n"
                   f"Connection: close\r\nContent-Length: 0\r\n\r\n").encode(), raw


@pytest.mark.parametrize("origin", ["https://a.example\r\nX-Evil: 1", "a b", ""])
def test_cors_origin_that_is_no_origin_is_a_config_error(origin):
    res = run_binary(["-a", *no_p2p_args(), "--api-cors-origin", origin, "--check-config"])
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "--api-cors-origin" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


# --------------------------------------------------------------------------------------
# Query parsing defects
# --------------------------------------------------------------------------------------

@pytest.fixture
def probed_small(make_daemon):
    """A daemon probed from 127.0.0.1 (to +4455501, 4455502, =1+2) and 127.0.0.2 (100)."""
    d = api_daemon(make_daemon)
    for n in ("+4455501", "4455502", "=1+2"):
        send_udp(d, "INVITE", n)
        time.sleep(0.002)  # distinct seen_last
    send_udp(d, "OPTIONS", "100", src_host="127.0.0.2")
    d.wait_for_rows(4, timeout=10)
    wait_index(d.api_port, "/numbers?format=plain",
               lambda r: r.status == 200 and len(r.body.split(b"\n")) == 5)
    wait_index(d.api_port, "/ip-addresses/127.0.0.2", lambda r: r.status == 200)
    return d


@pytest.mark.parametrize("after", ["9999999999999999,1.2.3.4", "99999999999999999999,1.2.3.4",
                                   "9223372036854775807,1.2.3.4", "18446744073709551616,x"])
def test_out_of_range_cursor_is_400_and_the_daemon_lives(probed_small, after):
    d = probed_small
    v = version_of(d.api_port)
    for route in ("/ip-addresses", "/numbers", "/ip-addresses?format=ipset&limit=1"):
        sep = "&" if "?" in route else "?"
        assert_json(http_request(d.api_port, f"{route}{sep}after={after}"), 400, INVALID, v)
    assert d.alive(), d.stderr[-2000:]
    assert_json(http_request(d.api_port, "/"), 200, {"status": "OK"}, v)


def test_prefix_accepts_a_literal_plus(probed_small):
    d = probed_small
    v = version_of(d.api_port)
    seen = {k: t for k, t in db_seen(d.db_path, "called_number").items()
            if k.startswith("+44555")}
    assert list(seen) == ["+4455501"], seen
    expected = {"called_numbers_total": 1,
                "called_numbers": expected_list(seen, "called_number")}
    # A raw '+' in a query string decodes as a space: read back as the '+' it was.
    raw_plus = http_request(d.api_port, "/numbers?prefix=+44555")
    assert_json(raw_plus, 200, expected, v)
    assert_json(http_request(d.api_port, "/numbers?prefix=%2B44555"), 200, expected, v)
    without = http_request(d.api_port, "/numbers?prefix=44555").json()
    assert [e["called_number"] for e in without["called_numbers"]] == ["4455502"], without


@pytest.mark.parametrize("form", ["::ffff:127.0.0.2", "::FFFF:127.0.0.2",
                                  "0:0:0:0:0:ffff:7f00:2", "::ffff:7F00:0002"])
def test_ip_lookup_of_non_canonical_forms(probed_small, form):
    d = probed_small
    v = version_of(d.api_port)
    canonical = http_request(d.api_port, "/ip-addresses/127.0.0.2")
    n, lo, hi = db_seen(d.db_path, "source_ip")["127.0.0.2"]
    expected = {"bad_actor_found": "127.0.0.2", "seen_count": str(n),
                "seen_first": fmt_us(lo), "seen_last": fmt_us(hi)}
    assert_json(canonical, 200, expected, v)
    assert_json(http_request(d.api_port, f"/ip-addresses/{form}"), 200, expected, v)


def test_ip_lookup_upper_case_ipv6_is_canonicalised(probed_small):
    d = probed_small
    v = version_of(d.api_port)
    assert_json(http_request(d.api_port, "/ip-addresses/2001:DB8:0::1"), 404,
                {"message": "No bad actor found"}, v)
    assert_json(http_request(d.api_port, "/ip-addresses/127.0.0.002"), 400, INVALID, v)


@pytest.mark.parametrize("top", ["0", "101", "500", "1000", "-1", "ten", ""])
def test_stats_top_out_of_range_is_400(probed_small, top):
    d = probed_small
    assert_json(http_request(d.api_port, f"/stats?top={top}"), 400, INVALID,
                version_of(d.api_port))


def test_stats_top_in_range(probed_small):
    d = probed_small
    for top, n in (("1", 1), ("100", 4)):
        r = http_request(d.api_port, f"/stats?top={top}")
        assert r.status == 200, r
        assert len(r.json()["top_called_numbers"]) == n, r


def test_csv_neutralises_formula_cells_exact_bytes(probed_small):
    d = probed_small
    r = http_request(d.api_port, "/numbers?format=csv")
    assert r.status == 200 and r.header("Content-Type") == "text/csv; charset=utf-8", r
    seen = db_seen(d.db_path, "called_number")
    rows = sorted(seen.items(), key=lambda kv: (-kv[1][2], kv[0].encode()))
    cell = {"=1+2": "'=1+2", "+4455501": "'+4455501", "4455502": "4455502", "100": "100"}
    expected = "called_number,seen_count,seen_first,seen_last\r\n" + "".join(
        f"{cell[k]},{n},{fmt_us(lo)},{fmt_us(hi)}\r\n" for k, (n, lo, hi) in rows)
    assert r.body == expected.encode(), (r, expected)


# --------------------------------------------------------------------------------------
# Budgets and threads
# --------------------------------------------------------------------------------------

def open_conn(port: int, src: str) -> socket.socket:
    """A keep-alive connection from src that has been served one request (so accepted)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(src, 0))
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while not data.endswith(b'{"status": "OK"}'):
        chunk = s.recv(4096)
        assert chunk, f"connection from {src} closed: {data!r}"
        data += chunk
    return s


def assert_closed_at_once(port: int, src: str):
    """The server closes a connection over budget without reading or answering."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(src, 0))
    try:
        try:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            got = s.recv(4096)
        except (ConnectionResetError, BrokenPipeError):
            got = b""
        assert got == b"", f"connection from {src} over budget was answered: {got!r}"
    finally:
        s.close()


def metric(port: int, line_start: str, src: str = "127.0.0.9") -> Optional[float]:
    """The value of the sample line starting with line_start; None when absent or when the
    scrape's connection was refused (closed unanswered)."""
    conn_src = (src, 0)
    with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=conn_src) as s:
        data = b""
        try:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except (ConnectionResetError, BrokenPipeError):
            return None
    for line in data.decode().splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    return None


def wait_idle(port: int):
    """Until the server has released every earlier connection (it learns of a client's
    close asynchronously): the only open one is the scrape itself. Bounded."""
    deadline = time.monotonic() + 5
    while metric(port, "sentrypeer_api_connections") != 1:
        assert time.monotonic() < deadline, "connections never released"
        time.sleep(0.05)


def test_connections_are_capped_per_ip_and_in_total(make_daemon):
    d = api_daemon(make_daemon, args=["--api-max-per-ip", "2", "--api-max-connections", "4"])
    wait_idle(d.api_port)
    # The server learns of a client's close asynchronously (slowly under ASan): until it
    # has, a new connection can be over the total and refused. Every such refusal is counted
    # here, so that the server's counter can be checked exactly.
    refused = 0

    def retry(what, *args):
        nonlocal refused
        deadline = time.monotonic() + 5
        while True:
            try:
                got = what(*args)
            except (ConnectionResetError, BrokenPipeError, AssertionError):
                got = None  # open_conn: closed unanswered
            if got is not None:
                return got
            refused += 1
            assert time.monotonic() < deadline, f"{what.__name__}{args} kept being refused"
            time.sleep(0.05)

    def scrape(line):
        return retry(metric, d.api_port, line)

    held = [retry(open_conn, d.api_port, "127.0.0.1"), retry(open_conn, d.api_port, "127.0.0.1")]
    try:
        assert_closed_at_once(d.api_port, "127.0.0.1")  # a third from the same IP
        held.append(retry(open_conn, d.api_port, "127.0.0.2"))  # another IP still gets in
        # 3 held + the scrape = 4: the total cap is reached while it runs
        assert scrape("sentrypeer_api_connections") == 4
        held.append(retry(open_conn, d.api_port, "127.0.0.3"))  # the 4th
        assert_closed_at_once(d.api_port, "127.0.0.4")  # over the total
        held.pop().close()
        assert scrape("sentrypeer_api_connections") == 4  # 3 held + this scrape
        assert scrape('sentrypeer_api_connections_rejected_total{reason="per_ip"}') == 1
        total = scrape('sentrypeer_api_connections_rejected_total{reason="total"}')
        assert total == 1 + refused, (total, refused)
        # the held connections still work
        for s in held:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(4096).endswith(b'{"status": "OK"}')
    finally:
        for s in held:
            s.close()
    assert d.alive()


def test_budget_metrics_have_their_defaults(make_daemon):
    d = api_daemon(make_daemon)
    wait_idle(d.api_port)  # sentrypeer_api_connections == 1: the scrape itself
    assert metric(d.api_port, "sentrypeer_api_lists_in_flight") == 0
    assert metric(d.api_port, "sentrypeer_api_lists_rejected_total") == 0
    res = run_binary(["--help"])
    for option, default in (("--api-max-connections", "1024"), ("--api-max-per-ip", "64"),
                            ("--api-max-lists", "4"), ("--api-threads", "1")):
        line = next((l for l in res.stdout.splitlines() if option in l), "")
        assert f"={default} " in line, (option, line)


def thread_names(pid: int) -> list:
    names = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                names.append(f.read().strip())
        except OSError:
            pass
    return names


@pytest.mark.parametrize("threads", [1, 3])
def test_api_threads_runs_that_many_workers(make_daemon, threads):
    d = api_daemon(make_daemon, args=["--api-threads", str(threads)])
    deadline = time.monotonic() + 5  # the workers name themselves once started
    while thread_names(d.pid).count("sp-api") != threads and time.monotonic() < deadline:
        time.sleep(0.05)
    names = thread_names(d.pid)
    assert names.count("sp-api") == threads, sorted(names)
    assert names.count("sp-api-slow") == 1, sorted(names)
    # every worker serves (connections are spread round-robin)
    for _ in range(2 * threads):
        assert http_request(d.api_port, "/").status == 200


# --------------------------------------------------------------------------------------
# [::] is dual stack
# --------------------------------------------------------------------------------------

def ipv6_loopback_works() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_api_listen_any_v6_is_dual_stack(make_daemon):
    if not ipv6_loopback_works():
        pytest.fail("IPv6 loopback unavailable: cannot test [::]")
    port = free_port(udp=False)
    d = make_daemon(responsive=True,
                    args=["-a", "--api-listen", f"[::]:{port}", *no_p2p_args()])
    d.api_port = port
    wait_api(d)
    assert f"http://[::]:{port}" in d.stderr, d.stderr[-2000:]
    assert "http://:::" not in d.stderr, d.stderr[-2000:]
    v = version_of(port)
    for host in ("127.0.0.1", "::1"):
        assert_json(http_request(port, "/", host=host), 200, {"status": "OK"}, v)
    # an IPv4 client through [::] is counted under its IPv4 address
    send_udp(d, "OPTIONS", "100")
    wait_index(port, "/ip-addresses/127.0.0.1", lambda r: r.status == 200)
