"""REST API golden tests against the real binary (-a), after real SIP probes: sipp's UAC
scenario, raw UDP OPTIONS and INVITEs to several numbers from several loopback sources.

Every expected body is rebuilt from the daemon's own database (read-only), byte for byte, with
SentryPeer's (jansson's) separators ", " and ": " -- which is what json.dumps() produces.

Helpers (api_daemon, http_request, run_sipp, db_*) are imported by test_exports.py and
test_metrics.py.
"""

from __future__ import annotations

import datetime
import http.client
import json
import socket
import time
from collections import OrderedDict
from pathlib import Path
from typing import Optional

import pytest

from conftest import (STOP_TIMEOUT, Daemon, UdpClient, db_query, free_port, require_tool,
                      run_binary, run_tool)

HTTP_TIMEOUT = 10.0  # seconds, every API request
SIPP_NUMBER = "4471234567"
SIPP_CALLS = 3
# Numbers probed with raw UDP INVITEs (the "+" one is looked up without "+" and vice versa).
RAW_NUMBERS = ["4420790001", "4420790002", "4420790003", "+4420790004"]
OPTIONS_NUMBER = "100"
EXTRA_SOURCES = ["127.0.0.2", "127.0.0.3"]

# SentryPeer's headers, less its `Access-Control-Allow-Origin: *` (only with
# --api-cors-origin: a departure on purpose, see docs/API.md).
COMMON_HEADERS = ("Content-Type", "X-Powered-By", "X-SentryPeer-Version")


# --------------------------------------------------------------------------------------
# Helpers (shared with test_exports.py and test_metrics.py)
# --------------------------------------------------------------------------------------

class HttpResult:
    def __init__(self, method: str, path: str, status: int, headers: list, body: bytes):
        self.method = method
        self.path = path
        self.status = status
        self.headers = headers  # [(name, value)] as received
        self.body = body

    def header(self, name: str) -> Optional[str]:
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        assert len(values) <= 1, f"{name} repeated in {self.headers}"
        return values[0] if values else None

    def json(self):
        try:
            return json.loads(self.body, object_pairs_hook=OrderedDict)
        except ValueError as e:
            raise AssertionError(f"{self.method} {self.path}: body is not JSON ({e}): "
                                 f"{self.body[:500]!r}")

    def __repr__(self):
        body = self.body if len(self.body) < 600 else self.body[:600] + b"..."
        return (f"{self.method} {self.path} -> {self.status}\nheaders: {self.headers}\n"
                f"body: {body!r}")


def http_request(port: int, path: str, method: str = "GET", headers: Optional[dict] = None,
                 body: Optional[bytes] = None, host: str = "127.0.0.1",
                 conn: Optional[http.client.HTTPConnection] = None) -> HttpResult:
    """One request (on `conn` when given, else a fresh connection closed afterwards)."""
    own = conn is None
    if own:
        conn = http.client.HTTPConnection(host, port, timeout=HTTP_TIMEOUT)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return HttpResult(method, path, r.status, r.getheaders(), data)
    finally:
        if own:
            conn.close()


def raw_http(port: int, request: bytes, host: str = "127.0.0.1") -> bytes:
    """Sends raw bytes, reads until the server closes (or the timeout): the exact reply."""
    with socket.create_connection((host, port), timeout=HTTP_TIMEOUT) as s:
        s.sendall(request)
        out = b""
        deadline = time.monotonic() + HTTP_TIMEOUT
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
        return out


_NO_P2P: Optional[list] = None


def no_p2p_args() -> list:
    """["--no-p2p"] when the binary has peer-to-peer (on by default: it would bind UDP 4222
    and contact the public bootstrap node), else []. Cached."""
    global _NO_P2P
    if _NO_P2P is None:
        res = run_binary(["--help"])
        _NO_P2P = ["--no-p2p"] if "--no-p2p" in res.stdout + res.stderr else []
    return _NO_P2P


def api_daemon_obj(workdir: Path, *, token: Optional[str] = None, args=(), responsive=True,
                   **kw) -> Daemon:
    """A Daemon (not started) with the REST API on a free loopback port (d.api_port)."""
    api_port = free_port(udp=False)
    cmd = ["-a", "--api-listen", f"127.0.0.1:{api_port}", *no_p2p_args(), *args]
    if token is not None:
        cmd += ["--api-token", token]
    d = Daemon(workdir, responsive=responsive, args=cmd, **kw)
    d.api_port = api_port
    return d


def api_daemon(make_daemon, *, token: Optional[str] = None, args=(), responsive=True, **kw):
    """A started daemon with the REST API, through conftest's make_daemon factory."""
    api_port = free_port(udp=False)
    cmd = ["-a", "--api-listen", f"127.0.0.1:{api_port}", *no_p2p_args(), *args]
    if token is not None:
        cmd += ["--api-token", token]
    d = make_daemon(responsive=responsive, args=cmd, **kw)
    d.api_port = api_port
    wait_api(d)
    return d


def wait_api(d: Daemon, timeout: float = 10.0):
    """Polls until the API accepts connections (it is up once 'ready' is logged)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", d.api_port), timeout=1):
                return
        except OSError as e:
            if time.monotonic() > deadline:
                pytest.fail(f"API port {d.api_port} not accepting after {timeout}s: {e}\n"
                            f"stderr:\n{d.stderr[-2000:]}")
            time.sleep(0.05)


def stop_daemon(d: Daemon):
    """SIGTERM, exit 0 required; kills whatever is left (module-scoped daemons)."""
    try:
        if d.proc is not None and d.proc.poll() is None:
            d.stop(timeout=STOP_TIMEOUT)
    finally:
        d.kill()


def run_sipp(d: Daemon, number: str = SIPP_NUMBER, calls: int = SIPP_CALLS):
    """sipp's built-in UAC scenario (INVITE, ACK, BYE per call); every call must succeed."""
    sipp = require_tool("sipp", "sip-tester")
    port = free_port(tcp=True, udp=True)
    errors = d.workdir / f"sipp_{number}_{port}_errors.log"
    cmd = [sipp, "-sn", "uac", "-i", "127.0.0.1", "-p", port, "-s", number,
           f"127.0.0.1:{d.sip_port}", "-m", calls, "-nostdin", "-recv_timeout", "3000",
           "-timeout", "20s", "-timeout_error", "-trace_err", "-error_file", errors]
    res = run_tool(cmd, timeout=40, cwd=d.workdir)
    assert res.returncode == 0, (
        f"sipp exited {res.returncode} (0 = all {calls} calls succeeded)\nstdout tail:\n"
        f"{res.stdout[-2000:]}\nstderr:\n{res.stderr[-2000:]}\nerrors:\n"
        f"{errors.read_text()[-2000:] if errors.exists() else ''}")
    return port


def send_udp(d: Daemon, method: str, to_user: str, src_host: str = "127.0.0.1",
             expect_reply: bool = True) -> bytes:
    """One raw UDP request from src_host; with a responsive daemon, waits for its reply."""
    with UdpClient(d.sip_port, src_host=src_host) as c:
        msg = c.request(method, to_user=to_user)
        if expect_reply:
            reply = c.recv(3.0)
            assert reply is not None and reply.startswith(b"SIP/2.0 "), (
                f"no SIP reply to {method} for {to_user} from {src_host}: {reply!r}")
    return msg


def fmt_us(us: int) -> str:
    """The daemon's timestamp format for microseconds since the epoch: UTC, 9 digits."""
    t = datetime.datetime(1970, 1, 1) + datetime.timedelta(microseconds=us)
    return t.strftime("%Y-%m-%d %H:%M:%S.") + f"{t.microsecond:06d}000"


def db_seen(db_path: Path, column: str) -> dict:
    """{key: (count, min event_time, max event_time)} grouped by source_ip or called_number."""
    rows = db_query(db_path, f"SELECT {column} AS k, COUNT(*) AS n, MIN(event_time) AS lo, "
                             f"MAX(event_time) AS hi FROM honey GROUP BY {column}")
    return {r["k"]: (r["n"], r["lo"], r["hi"]) for r in rows}


def expected_list(seen: dict, item_key: str) -> list:
    """The API's list order: seen_last descending, then key ascending (byte order)."""
    entries = sorted(seen.items(), key=lambda kv: (-kv[1][2], kv[0].encode()))
    return [OrderedDict([(item_key, k), ("seen_last", fmt_us(hi)), ("seen_count", str(n))])
            for k, (n, lo, hi) in entries]


def dumps(obj) -> bytes:
    """jansson-style compact-ish JSON: ", " and ": " (Python's default separators)."""
    return json.dumps(obj, ensure_ascii=False).encode()


def assert_common_headers(r: HttpResult, version: str, content_type: Optional[str],
                          cors: Optional[str] = None):
    """SentryPeer's headers; Access-Control-Allow-Origin only when the daemon was given
    --api-cors-origin (cors), never `*` by default."""
    assert r.header("Access-Control-Allow-Origin") == cors, r
    assert r.header("X-Powered-By") == "SentryPeer", r
    assert r.header("X-SentryPeer-Version") == version, r
    if content_type is not None:
        assert r.header("Content-Type") == content_type, r


def assert_json(r: HttpResult, status: int, expected, version: str):
    """Status, the four headers with application/json, and the exact body bytes."""
    assert r.status == status, r
    assert_common_headers(r, version, "application/json")
    assert r.body == dumps(expected), f"{r}\nexpected body: {dumps(expected)!r}"


def wait_index(port: int, path: str, predicate, timeout: float = 5.0,
               headers: Optional[dict] = None) -> HttpResult:
    """Polls an API route until predicate(result) holds (the index is fed asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        r = http_request(port, path, headers=headers)
        if predicate(r):
            return r
        if time.monotonic() > deadline:
            pytest.fail(f"{path} never satisfied the condition within {timeout}s; last: {r}")
        time.sleep(0.05)


# --------------------------------------------------------------------------------------
# The probed daemon (one per module: sipp and the probes take a few seconds)
# --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def version() -> str:
    import re
    res = run_binary(["-V"])
    assert res.returncode == 0, res.stderr
    m = re.search(r"\d+\.\d+\.\d+\S*", res.stdout + res.stderr)
    assert m, res.stdout
    return m.group(0)


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    """A responsive daemon with the API, after: sipp UAC (3 calls to 4471234567), one raw
    UDP OPTIONS to 100, raw UDP INVITEs to RAW_NUMBERS, OPTIONS from 127.0.0.2/.3."""
    d = api_daemon_obj(tmp_path_factory.mktemp("api"))
    d.start()
    try:
        wait_api(d)
        run_sipp(d)
        expected_rows = 3 * SIPP_CALLS
        send_udp(d, "OPTIONS", OPTIONS_NUMBER)
        expected_rows += 1
        for n in RAW_NUMBERS:
            send_udp(d, "INVITE", n)
            expected_rows += 1
            time.sleep(0.002)  # distinct seen_last per number
        for src in EXTRA_SOURCES:
            send_udp(d, "OPTIONS", OPTIONS_NUMBER, src_host=src)
            expected_rows += 1
        d.wait_for_rows(expected_rows, timeout=10)
        time.sleep(0.3)
        assert d.count() == expected_rows, (
            f"expected exactly {expected_rows} rows (sipp: 3 per call, no retransmissions), "
            f"got {d.count()}")
        # The API's index must have caught up with the database.
        wait_index(d.api_port, "/ip-addresses/127.0.0.1",
                   lambda r: r.status == 200 and
                   r.json()["seen_count"] == str(d.count("source_ip = '127.0.0.1'")))
        d.expected_rows = expected_rows
        yield d
    finally:
        stop_daemon(d)


# --------------------------------------------------------------------------------------
# Routes
# --------------------------------------------------------------------------------------

def test_root(probed, version):
    r = http_request(probed.api_port, "/")
    assert_json(r, 200, {"status": "OK"}, version)
    assert r.header("Content-Length") == str(len(r.body)), r


def test_health_check_json(probed, version):
    r = http_request(probed.api_port, "/health-check",
                     headers={"Content-Type": "application/json"})
    assert_json(r, 200, OrderedDict([("status", "OK"), ("message", "Hello from SentryPeer!"),
                                     ("version", version)]), version)


def test_health_check_html_without_json_content_type(probed, version):
    for headers in ({}, {"Content-Type": "text/plain"}):
        r = http_request(probed.api_port, "/health-check", headers=headers)
        assert r.status == 200, r
        assert_common_headers(r, version, None)
        assert r.header("Content-Type").startswith("text/html"), r
        text = r.body.decode()
        assert text.lstrip().lower().startswith("<!doctype html>"), r
        assert "Hello from SentryPeer!" in text and version in text, r


def test_ip_addresses_list_matches_database(probed, version):
    seen = db_seen(probed.db_path, "source_ip")
    assert set(seen) == {"127.0.0.1", *EXTRA_SOURCES}, seen
    r = http_request(probed.api_port, "/ip-addresses")
    expected = OrderedDict([("ip_addresses_total", len(seen)),
                            ("ip_addresses", expected_list(seen, "ip_address"))])
    assert_json(r, 200, expected, version)
    assert r.header("Transfer-Encoding") == "chunked", r
    first = r.json()["ip_addresses"]
    local = next(e for e in first if e["ip_address"] == "127.0.0.1")
    assert local["seen_count"] == str(probed.count("source_ip = '127.0.0.1'")), (local, r)
    # newest first
    assert first[0]["ip_address"] == EXTRA_SOURCES[-1], r


def test_ip_address_found(probed, version):
    n, lo, hi = db_seen(probed.db_path, "source_ip")["127.0.0.1"]
    assert n == probed.count("source_ip = '127.0.0.1'")
    expected = OrderedDict([("bad_actor_found", "127.0.0.1"), ("seen_count", str(n)),
                            ("seen_first", fmt_us(lo)), ("seen_last", fmt_us(hi))])
    assert_json(http_request(probed.api_port, "/ip-addresses/127.0.0.1"), 200, expected, version)
    # percent-encoded path: same answer
    assert_json(http_request(probed.api_port, "/ip-addresses/127.0.0.%31"), 200, expected, version)


def test_ip_address_not_found_and_invalid(probed, version):
    assert_json(http_request(probed.api_port, "/ip-addresses/192.0.2.1"), 404,
                {"message": "No bad actor found"}, version)
    assert_json(http_request(probed.api_port, "/ip-addresses/2001:db8::1"), 404,
                {"message": "No bad actor found"}, version)
    for bad in ("not-an-ip", "999.1.1.1", "127.0.0.1.5", "1.2.3", "%3Cscript%3E"):
        assert_json(http_request(probed.api_port, f"/ip-addresses/{bad}"), 400,
                    {"error": "The request data was invalid"}, version)


def test_numbers_list_matches_database(probed, version):
    seen = db_seen(probed.db_path, "called_number")
    assert set(seen) == {SIPP_NUMBER, OPTIONS_NUMBER, *RAW_NUMBERS}, seen
    assert seen[SIPP_NUMBER][0] == 3 * SIPP_CALLS, seen
    r = http_request(probed.api_port, "/numbers")
    expected = OrderedDict([("called_numbers_total", len(seen)),
                            ("called_numbers", expected_list(seen, "called_number"))])
    assert_json(r, 200, expected, version)
    assert r.header("Transfer-Encoding") == "chunked", r


@pytest.mark.parametrize("path,found", [
    (f"/numbers/{SIPP_NUMBER}", SIPP_NUMBER),
    (f"/numbers/+{SIPP_NUMBER}", SIPP_NUMBER),
    (f"/numbers/%2B{SIPP_NUMBER}", SIPP_NUMBER),
    ("/numbers/4420790004", "+4420790004"),
    ("/numbers/+4420790004", "+4420790004"),
    ("/numbers/%2b4420790004", "+4420790004"),
    (f"/numbers/{OPTIONS_NUMBER}", OPTIONS_NUMBER),
])
def test_number_found(probed, version, path, found):
    n, lo, hi = db_seen(probed.db_path, "called_number")[found]
    expected = OrderedDict([("phone_number_found", found), ("seen_count", str(n)),
                            ("seen_first", fmt_us(lo)), ("seen_last", fmt_us(hi))])
    assert_json(http_request(probed.api_port, path), 200, expected, version)


def test_number_not_found(probed, version):
    for n in ("4471234568", "+999", "447123456"):
        assert_json(http_request(probed.api_port, f"/numbers/{n}"), 404,
                    {"message": "No phone number found"}, version)


@pytest.mark.parametrize("path", ["/nope", "/apiv1/numbers", "/numbersX", "/ip-addressesX",
                                  "/numbers/abc", "/numbers/", "/health-check/x",
                                  "/%6E%6F%70%65", "//"])
def test_unknown_path_is_json_404(probed, version, path):
    assert_json(http_request(probed.api_port, path), 404,
                {"error": "The requested resource could not be found."}, version)


def test_malformed_percent_escape_is_400(probed, version):
    for path in ("/numbers/%zz", "/numbers/%4", "/ip-addresses/%"):
        assert_json(http_request(probed.api_port, path), 400,
                    {"error": "The request data was invalid"}, version)


@pytest.mark.parametrize("method", ["POST", "DELETE", "PUT", "PATCH"])
@pytest.mark.parametrize("path", ["/", f"/numbers/{SIPP_NUMBER}", "/ip-addresses", "/nope"])
def test_other_methods_get_405_with_allow(probed, version, method, path):
    conn = http.client.HTTPConnection("127.0.0.1", probed.api_port, timeout=HTTP_TIMEOUT)
    try:
        body = b'{"x": 1}' if method in ("POST", "PUT", "PATCH") else None
        r = http_request(probed.api_port, path, method=method, body=body,
                         headers={"Content-Type": "application/json"}, conn=conn)
        if (method, path) == ("POST", "/nope"):
            # POST is a method of the table (the batch checks): an unknown path is then 404.
            assert_json(r, 404, {"error": "The requested resource could not be found."},
                        version)
            r2 = http_request(probed.api_port, "/", conn=conn)
            assert_json(r2, 200, {"status": "OK"}, version)
            return
        assert_json(r, 405, {"error": "Method not allowed"}, version)
        allow = [m.strip() for m in (r.header("Allow") or "").split(",")]
        assert "GET" in allow and "HEAD" in allow and method not in allow, r
        # the connection stays usable (the request body was consumed)
        r2 = http_request(probed.api_port, "/", conn=conn)
        assert_json(r2, 200, {"status": "OK"}, version)
    finally:
        conn.close()


def test_options_without_cors_origin_answers_allow_only(probed, version):
    """No --api-cors-origin: a preflight gets no CORS header, so no web page may read the API."""
    raw = raw_http(probed.api_port, b"OPTIONS /numbers HTTP/1.1\r\nHost: x\r\n"
                                    b"Origin: http://example.test\r\n"
                                    b"Access-Control-Request-Method: GET\r\n"
                                    b"Connection: close\r\n\r\n")
    assert raw == (f"HTTP/1.1 204 No Content\r\nX-Powered-By: SentryPeer\r\n"
                   f"X-SentryPeer-Version: {version}\r\nServer: sentrypeer/{version}\r\n"
                   f"Allow: GET, HEAD, OPTIONS\r\nConnection: close\r\n"
                   f"Content-Length: 0\r\n\r\n").encode(), raw


@pytest.mark.parametrize("path", ["/", "/ip-addresses", "/numbers", f"/numbers/{SIPP_NUMBER}",
                                  "/nope", "/ip-addresses/192.0.2.1"])
def test_head_has_headers_and_no_body(probed, version, path):
    get = http_request(probed.api_port, path)
    raw = raw_http(probed.api_port, f"HEAD {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                    f"Connection: close\r\n\r\n".encode())
    head, sep, rest = raw.partition(b"\r\n\r\n")
    assert sep, f"HEAD {path}: no complete header block: {raw!r}"
    assert rest == b"", f"HEAD {path} sent a body: {rest[:200]!r}"
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = [tuple(x.strip() for x in l.split(":", 1)) for l in lines[1:]]
    r = HttpResult("HEAD", path, status, hdrs, b"")
    assert r.status == get.status, (r, get)
    assert_common_headers(r, version, get.header("Content-Type"))
    if get.header("Content-Length") is not None:
        assert r.header("Content-Length") == get.header("Content-Length"), (r, get)
    # and on a keep-alive connection the next response is parsed right after it
    conn = http.client.HTTPConnection("127.0.0.1", probed.api_port, timeout=HTTP_TIMEOUT)
    try:
        h = http_request(probed.api_port, path, method="HEAD", conn=conn)
        assert h.status == get.status and h.body == b"", h
        again = http_request(probed.api_port, path, conn=conn)
        assert (again.status, again.body) == (get.status, get.body), again
    finally:
        conn.close()


@pytest.mark.parametrize("path,headers", [
    ("/?x=1", {}),
    ("/?", {}),
    ("/health-check?x=1&y", {"Content-Type": "application/json"}),
    ("/ip-addresses?foo=bar", {}),
    ("/numbers?utm_source=x&a=%20", {}),
    (f"/numbers/{SIPP_NUMBER}?x=y", {}),
    ("/ip-addresses/127.0.0.1?z=1", {}),
])
def test_query_strings_are_accepted_on_bare_routes(probed, path, headers):
    plain = http_request(probed.api_port, path.split("?")[0], headers=headers)
    with_query = http_request(probed.api_port, path, headers=headers)
    assert plain.status == 200, plain
    assert (with_query.status, with_query.body) == (plain.status, plain.body), (with_query, plain)


def walk_pages(port: int, route: str, list_key: str, item_key: str, limit: int,
               extra: str = "") -> list:
    """Follows next_after from ?limit=N; returns the keys of every page, in order."""
    keys, after, pages = [], None, 0
    while True:
        q = f"{route}?limit={limit}{extra}"
        if after is not None:
            q += "&after=" + urllib_quote(after)
        r = http_request(port, q)
        assert r.status == 200, r
        body = r.json()
        items = body[list_key]
        assert 1 <= len(items) <= limit, r
        total_key = {"ip_addresses": "ip_addresses_total",
                     "called_numbers": "called_numbers_total"}[list_key]
        assert body[total_key] == len(items), r
        keys += [i[item_key] for i in items]
        pages += 1
        assert pages <= 1000, "paging does not terminate"
        after = body.get("next_after")
        if after is None:
            assert list(body) == [total_key, list_key], r
            return keys
        assert list(body) == [total_key, list_key, "next_after"], r


def urllib_quote(s: str) -> str:
    import urllib.parse
    return urllib.parse.quote(s, safe="")


@pytest.mark.parametrize("limit", [1, 2, 3, 100])
def test_paging_numbers_walks_every_entry_exactly_once(probed, limit):
    full = http_request(probed.api_port, "/numbers").json()["called_numbers"]
    keys = walk_pages(probed.api_port, "/numbers", "called_numbers", "called_number", limit)
    assert keys == [e["called_number"] for e in full], keys
    assert len(keys) == len(set(keys)) == len(db_seen(probed.db_path, "called_number"))


def test_paging_ip_addresses_walks_every_entry_exactly_once(probed):
    full = http_request(probed.api_port, "/ip-addresses").json()["ip_addresses"]
    keys = walk_pages(probed.api_port, "/ip-addresses", "ip_addresses", "ip_address", 1)
    assert keys == [e["ip_address"] for e in full], keys
    assert sorted(keys) == sorted(db_seen(probed.db_path, "source_ip")), keys


def test_paging_with_prefix_and_bad_parameters(probed, version):
    keys = walk_pages(probed.api_port, "/numbers", "called_numbers", "called_number", 1,
                      extra="&prefix=44207")
    assert sorted(keys) == sorted(n for n in RAW_NUMBERS if n.startswith("44207")), keys
    for q in ("limit=0", "limit=abc", "limit=-1", "limit=", "after=nonsense", "after=,x",
              "since=yesterday"):
        assert_json(http_request(probed.api_port, f"/numbers?{q}"), 400,
                    {"error": "The request data was invalid"}, version)
        assert_json(http_request(probed.api_port, f"/ip-addresses?{q}"), 400,
                    {"error": "The request data was invalid"}, version)


def test_since_filters(probed, version):
    everything = http_request(probed.api_port, "/numbers")
    for since in ("1h", "7d", "2000-01-01%2000:00:00"):
        r = http_request(probed.api_port, f"/numbers?since={since}")
        assert (r.status, r.body) == (200, everything.body), r
    assert_json(http_request(probed.api_port, "/numbers?since=2200-01-01%2000:00:00"), 404,
                {"message": "No phone numbers found"}, version)
    assert_json(http_request(probed.api_port, "/ip-addresses?since=2200-01-01T00:00:00Z"), 404,
                {"message": "No bad actors found"}, version)
    # since = the newest number's seen_last keeps just it
    newest = everything.json()["called_numbers"][0]
    r = http_request(probed.api_port, "/numbers?since=" + urllib_quote(newest["seen_last"]))
    assert r.status == 200 and r.json()["called_numbers"] == [newest], r


@pytest.mark.parametrize("since", ["2263-01-01%2000:00:00", "2999-01-01%2000:00:00",
                                   "9999-12-31%2023:59:59"])
def test_since_far_future_timestamp_does_not_wrap_around(probed, since):
    """A timestamp past 2262 does not fit int64 nanoseconds: it must be refused (400) or
    select nothing (404), never wrap to the distant past and list everything."""
    r = http_request(probed.api_port, f"/numbers?since={since}")
    assert r.status in (400, 404), r


def test_numbers_csv(probed, version):
    seen = db_seen(probed.db_path, "called_number")
    r = http_request(probed.api_port, "/numbers?format=csv")
    assert r.status == 200, r
    assert_common_headers(r, version, None)
    assert r.header("Content-Type").startswith("text/csv"), r
    # Exact bytes: list order, a cell starting with + (or = - @) prefixed with ' so that a
    # spreadsheet does not read it as a formula.
    rows = sorted(seen.items(), key=lambda kv: (-kv[1][2], kv[0].encode()))
    cell = lambda k: "'" + k if k[:1] in ("=", "+", "-", "@") else k
    expected = "called_number,seen_count,seen_first,seen_last\r\n" + "".join(
        f"{cell(k)},{n},{fmt_us(lo)},{fmt_us(hi)}\r\n" for k, (n, lo, hi) in rows)
    assert "'+4420790004," in expected
    assert r.body == expected.encode(), r


def test_stats_totals(probed, version):
    r = http_request(probed.api_port, "/stats")
    assert r.status == 200, r
    assert_common_headers(r, version, "application/json")
    body = r.json()
    assert body["totals"] == {"events": probed.count(),
                              "ip_addresses": len(db_seen(probed.db_path, "source_ip")),
                              "called_numbers": len(db_seen(probed.db_path, "called_number"))}, r
    methods = {m["method"]: m["events"] for m in body["top_methods"]}
    assert methods == {"INVITE": SIPP_CALLS + len(RAW_NUMBERS), "ACK": SIPP_CALLS,
                       "BYE": SIPP_CALLS, "OPTIONS": 1 + len(EXTRA_SOURCES)}, r


def test_new_probes_show_up_in_the_api(make_daemon, version):
    """The index follows live traffic: a new number appears, counts move, first stays."""
    d = api_daemon(make_daemon)
    send_udp(d, "OPTIONS", "4499887766")
    first = wait_index(d.api_port, "/ip-addresses/127.0.0.1", lambda r: r.status == 200).json()
    assert first["seen_count"] == "1", first
    r = wait_index(d.api_port, "/numbers/4499887766", lambda r: r.status == 200)
    assert r.json()["seen_count"] == "1", r
    send_udp(d, "INVITE", "4499887767")
    after = wait_index(d.api_port, "/ip-addresses/127.0.0.1",
                       lambda r: r.json()["seen_count"] == "2").json()
    assert after["seen_first"] == first["seen_first"], after
    assert after["seen_last"] > first["seen_last"], (first, after)
    wait_index(d.api_port, "/numbers/4499887767", lambda r: r.status == 200)
    n, lo, hi = db_seen(d.db_path, "source_ip")["127.0.0.1"]
    assert (after["seen_count"], after["seen_first"], after["seen_last"]) == \
        (str(n), fmt_us(lo), fmt_us(hi)), after


# --------------------------------------------------------------------------------------
# Empty database and token
# --------------------------------------------------------------------------------------

TOKEN = "s3cr3t-Token_for-tests"


def test_empty_database_lists_are_404(make_daemon, version):
    d = api_daemon(make_daemon)
    assert_json(http_request(d.api_port, "/ip-addresses"), 404,
                {"message": "No bad actors found"}, version)
    assert_json(http_request(d.api_port, "/numbers"), 404,
                {"message": "No phone numbers found"}, version)
    assert_json(http_request(d.api_port, "/numbers?limit=1"), 404,
                {"message": "No phone numbers found"}, version)


@pytest.mark.parametrize("path", ["/", "/ip-addresses", "/numbers", f"/numbers/{SIPP_NUMBER}",
                                  "/ip-addresses/127.0.0.1", "/metrics", "/stats",
                                  "/ip-addresses?format=plain", "/nope"])
def test_token_required(make_daemon, version, path):
    d = api_daemon(make_daemon, token=TOKEN)
    send_udp(d, "OPTIONS", SIPP_NUMBER)
    d.wait_for_rows(1)
    # Same-length wrong tokens too: the first, a middle and the last byte changed.
    same_length = [chr(ord(TOKEN[0]) ^ 1) + TOKEN[1:],
                   TOKEN[:10] + chr(ord(TOKEN[10]) ^ 1) + TOKEN[11:],
                   TOKEN[:-1] + chr(ord(TOKEN[-1]) ^ 1), "x" * len(TOKEN)]
    assert all(len(t) == len(TOKEN) and t != TOKEN for t in same_length)
    wrong = [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {TOKEN}x"},
             {"Authorization": f"Bearer {TOKEN[:-1]}"}, {"Authorization": TOKEN},
             {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer "},
             {"Authorization": f"bearer{TOKEN}"}] + \
        [{"Authorization": f"Bearer {t}"} for t in same_length]
    for headers in wrong:
        r = http_request(d.api_port, path, headers=headers)
        assert_json(r, 401, {"error": "Unauthorized"}, version)
        assert r.header("WWW-Authenticate") == 'Bearer realm="sentrypeer"', (headers, r)
    ok = {"Authorization": f"Bearer {TOKEN}"}
    if path == "/nope":
        expected_status = 404
    else:
        expected_status = 200
    r = wait_index(d.api_port, path, lambda r: r.status == expected_status, headers=ok)
    assert_common_headers(r, version, None)


def test_token_leaves_health_check_open(make_daemon, version):
    d = api_daemon(make_daemon, token=TOKEN)
    for headers in ({"Content-Type": "application/json"},
                    {"Content-Type": "application/json", "Authorization": "Bearer wrong"}):
        r = http_request(d.api_port, "/health-check", headers=headers)
        assert_json(r, 200, OrderedDict([("status", "OK"), ("message", "Hello from SentryPeer!"),
                                         ("version", version)]), version)
    r = http_request(d.api_port, "/health-check")
    assert r.status == 200 and r.header("Content-Type").startswith("text/html"), r


# --------------------------------------------------------------------------------------
# HTTP framing: pipelining, keep-alive, HTTP/1.0
# --------------------------------------------------------------------------------------

def split_responses(data: bytes) -> list:
    """Splits concatenated HTTP/1.1 responses (Content-Length or chunked bodies)."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"incomplete response head: {data[:300]!r}"
        lines = head.decode().split("\r\n")
        hdrs = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
        if "content-length" in hdrs:
            n = int(hdrs["content-length"])
            body, data = rest[:n], rest[n:]
            assert len(body) == n, f"truncated body: {rest[:300]!r}"
        elif hdrs.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                body += rest[:size]
                rest = rest[size + 2:]
                if size == 0:
                    break
            data = rest
        else:
            body, data = rest, b""
        out.append((lines[0], hdrs, body))
    return out


def test_pipelined_requests_are_answered_in_order(probed, version):
    paths = ["/", f"/numbers/{SIPP_NUMBER}", "/nope", "/ip-addresses", "/numbers/4471234568",
             "/health-check"]
    req = b"".join(f"GET {p} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode() for p in paths)
    req += b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    responses = split_responses(raw_http(probed.api_port, req))
    assert len(responses) == len(paths) + 1, responses
    for p, (status_line, hdrs, body) in zip(paths + ["/"], responses):
        expected = http_request(probed.api_port, p)
        assert status_line.startswith(f"HTTP/1.1 {expected.status} "), (p, status_line, expected)
        assert body == expected.body, (p, body[:200], expected)
        assert hdrs["x-sentrypeer-version"] == version, hdrs


def test_keep_alive_connection_serves_many_requests(probed, version):
    paths = [f"/numbers/{SIPP_NUMBER}", "/ip-addresses/127.0.0.1", "/nope", "/"]
    # each answer byte for byte what a fresh connection gets
    fresh = {p: http_request(probed.api_port, p) for p in paths}
    conn = http.client.HTTPConnection("127.0.0.1", probed.api_port, timeout=HTTP_TIMEOUT)
    try:
        for i in range(200):
            path = paths[i % 4]
            r = http_request(probed.api_port, path, conn=conn)
            want = fresh[path]
            assert (r.status, r.headers, r.body) == (want.status, want.headers, want.body), (i, r)
            assert (path == "/nope") == (r.status == 404), (i, r)
    finally:
        conn.close()


def test_http_1_0_gets_an_answer_and_the_connection_closes(probed, version):
    raw = raw_http(probed.api_port, b"GET / HTTP/1.0\r\n\r\n")
    # Exact bytes: SentryPeer's headers (no CORS header by default), no keep-alive.
    assert raw == (f"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n"
                   f"X-Powered-By: SentryPeer\r\nX-SentryPeer-Version: {version}\r\n"
                   f"Server: sentrypeer/{version}\r\nContent-Length: 16\r\n\r\n"
                   '{"status": "OK"}').encode(), raw
