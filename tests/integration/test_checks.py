"""Batch checks for billing systems: POST /numbers/check and POST /ip-addresses/check
(docs/API.md "Batch checks"): every spelling of a called number finds it (+44.., 0044..,
44.., 011 44..), --allow-number is never reported as blocked, up to 10,000 items, over that
or over the 1 MiB body cap 413 with a JSON message, malformed JSON 400, the bearer token
like the other data routes.

Run: /usr/bin/python3 -m pytest tests/integration/test_checks.py -v
"""

import json
import socket
import time

import pytest

from conftest import run_binary
from test_api import api_daemon, http_request, wait_api
from test_exports import insert_local_rows

TOKEN = "checks-token-0001"
STORED = "+442079460000"
SPELLINGS = ["+442079460000", "442079460000", "00442079460000", "011442079460000",
             "011 44 20 7946 0000", "+44 (20) 7946-0000"]


@pytest.fixture(scope="module")
def checking(tmp_path_factory):
    from test_api import api_daemon_obj, stop_daemon
    d = api_daemon_obj(tmp_path_factory.mktemp("checks"), token=TOKEN,
                       args=["--max-age", "7d"],
                       env={"SENTRYPEER_ALLOW_NUMBER": "112,999,+1 911"})
    d.start()
    wait_api(d)
    d.stop()
    now = int(time.time() * 1e6)
    insert_local_rows(d.db_path, [("203.0.113.5", now - 60_000_000, STORED),
                                  ("203.0.113.6", now - 30_000_000, "112"),
                                  ("2001:db8::5", now - 10_000_000, "999")])
    d.start()
    wait_api(d)
    try:
        yield d
    finally:
        stop_daemon(d)


def post(d, path: str, body, token: str = TOKEN, raw: bool = False):
    data = body if raw else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return http_request(d.api_port, path, method="POST", headers=headers, body=data)


def test_every_spelling_of_a_number_is_blocked(checking):
    r = post(checking, "/numbers/check", {"numbers": SPELLINGS + ["02079460000", "alice"]})
    assert r.status == 200, r
    items = r.json()["numbers"]
    assert [i["number"] for i in items] == SPELLINGS + ["02079460000", "alice"]
    for item in items[:len(SPELLINGS)]:
        assert item["normalised"] == "442079460000", item
        assert (item["known"], item["blocked"], item["allowed"]) == (True, True, False), item
        assert item["seen_count"] == "1", item
    # A national spelling is another number (its country is unknown); "alice" is none.
    assert (items[-2]["known"], items[-2]["blocked"]) == (False, False)
    assert items[-1] == {"number": "alice", "valid": False, "known": False, "blocked": False}


def test_allow_number_is_never_blocked(checking):
    """SENTRYPEER_ALLOW_NUMBER=112,999,+1 911: 112 and 999 are known
    (recorded) yet not blocked, whatever their spelling."""
    r = post(checking, "/numbers/check", {"numbers": ["112", "+112", "00999", "999", "1911"]})
    assert r.status == 200, r
    items = r.json()["numbers"]
    assert [(i["known"], i["allowed"], i["blocked"]) for i in items] == [
        (True, True, False), (True, True, False), (True, True, False), (True, True, False),
        (False, True, False)], items


def test_get_number_keeps_sentrypeer_exact_answer_and_finds_other_spellings(checking):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = http_request(checking.api_port, "/numbers/%2B442079460000", headers=auth)
    assert r.status == 200 and r.json()["phone_number_found"] == STORED, r
    r = http_request(checking.api_port, "/numbers/0044%2020%207946%200000", headers=auth)
    assert r.status == 200 and r.json()["phone_number_found"] == STORED, r


def test_ip_addresses_check(checking):
    r = post(checking, "/ip-addresses/check",
             {"ip_addresses": ["203.0.113.5", "2001:DB8:0::5", "203.0.113.7", "nope"]})
    assert r.status == 200, r
    items = r.json()["ip_addresses"]
    assert [(i["valid"], i["known"], i["blocked"]) for i in items] == [
        (True, True, True), (True, True, True), (True, False, False), (False, False, False)]


def test_ten_thousand_items_and_one_more(checking):
    numbers = [f"+4420794{i:05d}" for i in range(10_000)]
    r = post(checking, "/numbers/check", {"numbers": numbers})
    assert r.status == 200, r
    assert len(r.json()["numbers"]) == 10_000
    ips = [f"2001:db8:1::{i:x}" for i in range(10_000)]
    r = post(checking, "/ip-addresses/check", {"ip_addresses": ips})
    assert r.status == 200 and len(r.json()["ip_addresses"]) == 10_000, r
    r = post(checking, "/numbers/check", {"numbers": numbers + ["1"]})
    assert r.status == 413, r
    assert r.json() == {"error": "Too many items: at most 10000 per request"}


def test_body_over_the_byte_cap_is_413_and_the_connection_closes(checking):
    body = b'{"numbers": [' + b" " * (1024 * 1024) + b"]}"
    r = post(checking, "/numbers/check", body, raw=True)
    assert r.status == 413, r
    assert r.json() == {"error": "Request body over 1048576 bytes"}
    assert r.header("Connection") == "close"
    # Announced by Content-Length and never sent: refused before reading it.
    with socket.create_connection(("127.0.0.1", checking.api_port), timeout=5) as s:
        s.sendall(b"POST /ip-addresses/check HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n"
                  b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n")
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413 Payload Too Large\r\n"), reply
    # Counted like every answer, under the route.
    m = http_request(checking.api_port, "/metrics",
                     headers={"Authorization": f"Bearer {TOKEN}"}).body.decode()
    for route in ("/numbers/check", "/ip-addresses/check"):
        line = f'sentrypeer_api_requests_total{{route="{route}",status="413"}} '
        assert line in m, [x for x in m.splitlines() if "api_requests_total" in x]
    # Other routes keep the small cap.
    r = http_request(checking.api_port, "/numbers", method="GET", body=b"x" * 20000,
                     headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status == 413, r


@pytest.mark.parametrize("body", [b"", b"{", b"[]", b'["112"]', b'{"numbers": "112"}',
                                  b'{"numbers": [112]}', b'{"numbers": ["1",]}',
                                  b'{"ip_addresses": ["1"]}', b'{"numbers": ["1"]} trailing'])
def test_malformed_bodies_are_400(checking, body):
    r = post(checking, "/numbers/check", body, raw=True)
    assert r.status == 400, r
    assert r.json() == {"error": 'expected a JSON object {"numbers": [strings]}'}


def test_bearer_token_and_methods(checking):
    r = post(checking, "/numbers/check", {"numbers": ["1"]}, token="")
    assert r.status == 401, r
    r = post(checking, "/numbers/check", {"numbers": ["1"]}, token="wrong-token-00001")
    assert r.status == 401, r
    r = http_request(checking.api_port, "/numbers/check",
                     headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status == 405 and r.header("Allow") == "POST, OPTIONS", r


@pytest.mark.parametrize("value", ["alice", "+", "44 20 x", "1" * 65])
def test_bad_allow_number_exits_2_naming_it(tmp_path, value):
    res = run_binary(["-f", tmp_path / "x.db", "--no-p2p", "--allow-number", value])
    assert res.returncode == 2, (res.returncode, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"sentrypeer: --allow-number: '{value}' is not a phone number"), res.stderr


def test_allow_number_is_repeatable_and_shown_by_check_config(tmp_path):
    res = run_binary(["-f", tmp_path / "x.db", "--no-p2p", "--allow-number", "112",
                      "--allow-number", "+1 911", "--check-config"])
    assert res.returncode == 0, res.stderr
    assert 'allow_number = ["112", "+1 911"]' in res.stdout.splitlines(), res.stdout


def test_large_bodies_in_flight_are_budgeted(checking):
    """Eight bodies over 16 KiB at once, no more: a ninth gets 503 + Retry-After on its
    header alone (its body never read), and once one of the eight is answered the next is
    served. Without the budget 1,024 connections could hold 1 MiB each."""
    body = json.dumps({"numbers": ["442079460000"] * 5000}).encode()  # ~85 KiB
    head = (f"POST /numbers/check HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    holders = []
    try:
        for _ in range(8):  # each sends its header and half its body, then waits
            s = socket.create_connection(("127.0.0.1", checking.api_port), timeout=10)
            s.sendall(head + body[:len(body) // 2])
            holders.append(s)
        time.sleep(0.3)  # the server has read each header (and taken a slot)
        extra = socket.create_connection(("127.0.0.1", checking.api_port), timeout=10)
        extra.sendall(head)
        answer = extra.recv(4096).decode()
        extra.close()
        assert answer.startswith("HTTP/1.1 503"), answer
        assert "Retry-After: 1" in answer, answer
        metrics = http_request(checking.api_port, "/metrics",
                               headers={"Authorization": f"Bearer {TOKEN}"}).body.decode()
        assert "sentrypeer_api_large_bodies_in_flight 8" in metrics, metrics
        # One of the eight finishes: answered 200, and its slot serves a new request.
        first = holders.pop(0)
        first.sendall(body[len(body) // 2:])
        reply = b""
        while b"\r\n0\r\n\r\n" not in reply and not reply.endswith(b"}"):
            chunk = first.recv(65536)
            if not chunk:
                break
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
        first.close()
        r = post(checking, "/numbers/check", {"numbers": ["442079460000"] * 5000})
        assert r.status == 200, r
    finally:
        for s in holders:
            s.close()
