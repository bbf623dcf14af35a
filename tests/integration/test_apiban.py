"""APIBAN-compatible list (docs/APIBAN.md), driven by a client written from APIBAN's
documented protocol (apiban.org/doc.html and its clients): GET /api/{KEY}/banned, then
/api/{KEY}/banned/{ID} with the ID of each answer (numeric, as APIBAN's bash client
requires), until the 400 {"ipaddress":["no new bans"], "ID":"none"}; GET
/api/{KEY}/check/{IP} (200 = banned, 400 = not); a wrong key gets 403
{"ipaddress":"none", "ID":"unauthorized"}.

10,000 local events from documentation addresses (IPv4 and IPv6) are inserted into the
database before the daemon starts (test_exports.insert_local_rows) and loaded into its index.

Run: /usr/bin/python3 -m pytest tests/integration/test_apiban.py -v
"""

import json
import re
import time

import pytest

from test_api import api_daemon, api_daemon_obj, http_request, stop_daemon, wait_api
from test_exports import insert_local_rows

KEY = "apiban-test-key-0001"
N = 10_000
NO_NEW_BANS = b'{"ipaddress":["no new bans"], "ID":"none"}'


def documentation_addresses(n: int) -> list:
    """n distinct documentation addresses: 198.51.100.0/24 and 203.0.113.0/24, then
    2001:db8::/32."""
    v4 = [f"198.51.100.{i}" for i in range(1, 255)] + [f"203.0.113.{i}" for i in range(1, 255)]
    v6 = [f"2001:db8::{i:x}" for i in range(1, n - len(v4) + 1)]
    return (v4 + v6)[:n]


class ApibanClient:
    """The protocol as APIBAN documents it; nothing sentrypeer-specific."""

    def __init__(self, port: int, key: str):
        self.port = port
        self.key = key

    def banned(self, start_id=None, max_pages: int = 1000):
        """Pages from start_id (None: /banned) to the end. Returns (addresses in order,
        pages, last ID)."""
        path = f"/api/{self.key}/banned" + (f"/{start_id}" if start_id else "")
        addresses, pages, last_id = [], [], start_id
        for _ in range(max_pages):
            r = http_request(self.port, path)
            if r.status == 400:
                assert r.body == NO_NEW_BANS, r
                return addresses, pages, last_id
            assert r.status == 200, r
            body = r.json()
            assert list(body) == ["ipaddress", "ID"], body
            assert re.fullmatch(r"[0-9]+", body["ID"]), body["ID"]  # APIBAN's bash client
            assert 1 <= len(body["ipaddress"]) <= 250, len(body["ipaddress"])
            pages.append(body["ipaddress"])
            addresses += body["ipaddress"]
            last_id = body["ID"]
            path = f"/api/{self.key}/banned/{last_id}"
        pytest.fail(f"no end after {max_pages} pages")

    def check(self, ip: str):
        r = http_request(self.port, f"/api/{self.key}/check/{ip}")
        return r.status, r.body


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """A daemon whose database holds N local events from N documentation addresses, seen
    over the last ~17 minutes (ties on the same second)."""
    d = api_daemon_obj(tmp_path_factory.mktemp("apiban"),
                       args=["--max-age", "7d", "--bouncer-key", KEY])
    d.start()
    wait_api(d)
    d.stop()
    now_us = int(time.time() * 1e6)
    addresses = documentation_addresses(N)
    rows = [(ip, now_us - (i % 1000) * 1_000_000) for i, ip in enumerate(addresses)]
    t0 = time.monotonic()
    insert_local_rows(d.db_path, rows)
    print(f"inserted {N} rows in {time.monotonic() - t0:.2f}s")
    d.start()
    wait_api(d)
    try:
        yield d, {ip: t for ip, t in rows}
    finally:
        stop_daemon(d)


def test_paging_sees_every_address_exactly_once_and_stops_at_none(loaded):
    d, rows = loaded
    client = ApibanClient(d.api_port, KEY)
    t0 = time.monotonic()
    addresses, pages, last_id = client.banned()
    elapsed = time.monotonic() - t0
    print(f"{len(pages)} pages, {len(addresses)} addresses in {elapsed:.2f}s")
    assert len(addresses) == N
    assert set(addresses) == set(rows), set(rows) ^ set(addresses)
    assert len(pages) == N // 250 and all(len(p) == 250 for p in pages)
    # Oldest first: last-seen times never go down from one address to the next.
    times = [rows[ip] for ip in addresses]
    assert times == sorted(times)
    # The last ID, asked again: nothing new.
    r = http_request(d.api_port, f"/api/{KEY}/banned/{last_id}")
    assert (r.status, r.body) == (400, NO_NEW_BANS), r


def test_apiban_clients_first_id_100_means_from_the_start(loaded):
    d, _ = loaded
    first = http_request(d.api_port, f"/api/{KEY}/banned")
    from_100 = http_request(d.api_port, f"/api/{KEY}/banned/100")
    assert first.status == from_100.status == 200
    assert first.body == from_100.body


@pytest.mark.parametrize("path", ["/api/wrong-key-00001/banned", "/api/wrong-key-00001/banned/100",
                                  "/api/wrong-key-00001/check/198.51.100.1",
                                  "/api/" + KEY[:-1] + "/banned", "/api/banned"])
def test_wrong_key_gets_apibans_403(loaded, path):
    d, _ = loaded
    r = http_request(d.api_port, path)
    assert r.status == 403, r
    assert r.body == b'{"ipaddress":"none", "ID":"unauthorized"}'
    assert r.header("Content-Type") == "application/json"


def test_no_key_configured_refuses_everyone(make_daemon):
    d = api_daemon(make_daemon)
    r = http_request(d.api_port, f"/api/{KEY}/banned")
    assert (r.status, r.body) == (403, b'{"ipaddress":"none", "ID":"unauthorized"}'), r


def test_check(loaded):
    d, rows = loaded
    client = ApibanClient(d.api_port, KEY)
    status, body = client.check("2001:db8::1")
    assert status == 200, body
    doc = json.loads(body)
    assert doc["ipaddress"] == ["2001:db8::1"] and re.fullmatch(r"[0-9]{56}", doc["ID"]), doc
    # Another spelling of the same address finds it.
    status, body = client.check("2001:0db8:0:0::0001")
    assert status == 200 and json.loads(body)["ipaddress"] == ["2001:db8::1"], body
    assert client.check("198.51.100.255") == (400, b'{"ipaddress":["not blocked"], "ID":"none"}')
    assert client.check("127.0.0.1") == (400, b'{"ipaddress":["not blocked"], "ID":"none"}')
    assert client.check("198.51.100.256") == (
        400, b'{"ipaddress":["invalid address"], "ID":"none"}')


def test_resuming_from_an_id_after_a_restart_gives_only_what_is_new(loaded):
    """Last in this file: it adds an address to the shared daemon's data.
    The ID is the whole state: a restart in between changes nothing; an address seen
    after it is the one new ban."""
    d, rows = loaded
    client = ApibanClient(d.api_port, KEY)
    _, _, last_id = client.banned()
    d.stop()
    insert_local_rows(d.db_path, [("203.0.113.254", int(time.time() * 1e6) + 1_000_000)])
    d.start()
    wait_api(d)
    addresses, pages, new_id = client.banned(last_id)
    assert addresses == ["203.0.113.254"] and len(pages) == 1
    assert new_id != last_id
