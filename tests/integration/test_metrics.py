"""/metrics (Prometheus text format) parsed with prometheus_client's own parser: counters move
by exactly what was sent, API requests are counted by route and status, build_info is there."""

from __future__ import annotations

import time

import pytest

from conftest import UdpClient, new_call_id
from test_api import api_daemon, http_request, run_binary

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:  # pragma: no cover
    text_string_to_metric_families = None


def scrape(port: int, headers=None) -> dict:
    """{(sample name, frozenset(labels)): value} from one GET /metrics."""
    if text_string_to_metric_families is None:
        reason = "prometheus_client missing (Debian package python3-prometheus-client)"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    r = http_request(port, "/metrics", headers=headers)
    assert r.status == 200, r
    assert r.header("Content-Type").startswith("text/plain"), r
    assert "version=0.0.4" in r.header("Content-Type"), r
    samples = {}
    text = r.body.decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in samples, f"duplicate sample {key} in:\n{text}"
            samples[key] = s.value
    assert samples, text
    return samples


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def families(port: int) -> dict:
    r = http_request(port, "/metrics")
    return {f.name: f for f in text_string_to_metric_families(r.body.decode())}


def wait_metric(port: int, name: str, target: float, timeout: float = 10.0, **labels) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        s = scrape(port)
        if value(s, name, **labels) >= target:
            return s
        if time.monotonic() > deadline:
            pytest.fail(f"{name}{labels} stayed at {value(s, name, **labels)} < {target} "
                        f"for {timeout}s")
        time.sleep(0.05)


OPTIONS_SENT = 7
INVITES_SENT = 3


def test_events_received_counts_exactly_what_was_sent(make_daemon):
    d = api_daemon(make_daemon)
    before = scrape(d.api_port)
    with UdpClient(d.sip_port) as c:
        for i in range(OPTIONS_SENT):
            c.request("OPTIONS", to_user=f"10{i}", call_id=new_call_id())
            assert c.recv(3.0) is not None, "no reply from the responsive daemon"
        for i in range(INVITES_SENT):
            c.request("INVITE", to_user=f"44{i}", call_id=new_call_id())
            assert c.recv(3.0) is not None
    total = OPTIONS_SENT + INVITES_SENT
    d.wait_for_rows(total, timeout=10)
    base_stored = value(before, "sentrypeer_events_stored_total")
    wait_metric(d.api_port, "sentrypeer_events_stored_total", base_stored + total)
    time.sleep(0.3)  # anything extra would show now
    after = scrape(d.api_port)
    recv = "sentrypeer_events_received_total"
    for method, n in (("OPTIONS", OPTIONS_SENT), ("INVITE", INVITES_SENT)):
        delta = (value(after, recv, transport="UDP", method=method)
                 - value(before, recv, transport="UDP", method=method))
        assert delta == n, f"{recv}{{UDP,{method}}} moved by {delta}, sent {n}"
    for method in ("OPTIONS", "INVITE"):
        for t in ("TCP", "TLS"):
            assert value(after, recv, transport=t, method=method) == 0, (t, method)
    stored = value(after, "sentrypeer_events_stored_total") - base_stored
    assert stored == total == d.count(), (stored, total, d.count())
    assert value(after, "sentrypeer_events_lost_total") == 0
    assert value(after, "sentrypeer_database_events") == d.count()
    assert value(after, "sentrypeer_bad_actors") == 1
    assert value(after, "sentrypeer_called_numbers") == OPTIONS_SENT + INVITES_SENT
    assert value(after, "sentrypeer_replies_total", transport="UDP") - \
        value(before, "sentrypeer_replies_total", transport="UDP") == total
    assert value(after, "sentrypeer_received_bytes_total", transport="UDP") > 0


def test_api_requests_are_counted_by_route_and_status(make_daemon):
    d = api_daemon(make_daemon)
    before = scrape(d.api_port)
    name = "sentrypeer_api_requests_total"
    plan = [("/", 200, "/", 5), ("/numbers", 404, "/numbers", 3),
            ("/numbers/123", 404, "/numbers/{number}", 2),
            ("/ip-addresses/nonsense", 400, "/ip-addresses/{ip}", 2),
            ("/does-not-exist", 404, "other", 4),
            ("/health-check", 200, "/health-check", 1)]
    for path, status, _, n in plan:
        for _ in range(n):
            r = http_request(d.api_port, path)
            assert r.status == status, r
    for _ in range(2):
        r = http_request(d.api_port, "/", method="POST", body=b"x")
        assert r.status == 405, r
    after = scrape(d.api_port)
    for path, status, route, n in plan:
        delta = (value(after, name, route=route, status=str(status))
                 - value(before, name, route=route, status=str(status)))
        assert delta == n, f"{name}{{route={route!r},status={status}}} moved by {delta}, sent {n}"
    delta = value(after, name, route="/", status="405") - value(before, name, route="/", status="405")
    assert delta == 2, delta
    # the first scrape itself is counted once it has been answered
    assert value(after, name, route="/metrics", status="200") - \
        value(before, name, route="/metrics", status="200") == 1
    total_delta = sum(v for (n, _), v in after.items() if n == name) - \
        sum(v for (n, _), v in before.items() if n == name)
    assert total_delta == sum(p[3] for p in plan) + 2 + 1, total_delta


def test_build_info_and_families(make_daemon):
    d = api_daemon(make_daemon)
    res = run_binary(["-V"])
    fams = families(d.api_port)
    info = fams.get("sentrypeer_build_info")
    assert info is not None, sorted(fams)
    assert info.type in ("gauge", "info"), info
    [sample] = info.samples
    assert sample.value == 1, sample
    assert sample.labels.get("version") and sample.labels["version"] in res.stdout + res.stderr, \
        (sample, res.stdout)
    assert "revision" in sample.labels, sample
    for fam, kind in (("sentrypeer_events_received", "counter"),
                      ("sentrypeer_events_stored", "counter"),
                      ("sentrypeer_api_requests", "counter"),
                      ("sentrypeer_uptime_seconds", "gauge")):
        assert fam in fams, f"{fam} missing; families: {sorted(fams)}"
        assert fams[fam].type == kind, (fam, fams[fam].type)
        assert fams[fam].documentation, fam
    up1 = families(d.api_port)["sentrypeer_uptime_seconds"].samples[0].value
    time.sleep(0.2)
    up2 = families(d.api_port)["sentrypeer_uptime_seconds"].samples[0].value
    assert 0 < up1 < up2, (up1, up2)


def test_metrics_need_the_token_when_set(make_daemon):
    d = api_daemon(make_daemon, token="tok-123")
    r = http_request(d.api_port, "/metrics")
    assert r.status == 401, r
    s = scrape(d.api_port, headers={"Authorization": "Bearer tok-123"})
    assert value(s, "sentrypeer_api_requests_total", route="/metrics", status="401") == 1
