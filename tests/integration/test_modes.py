"""Passive (default) vs responsive (-r), the 404 and redirect agents, -R, several listeners."""

import socket

from conftest import (SDP_OFFER, SipResponse, StreamClient, UdpClient, assert_reply_matches,
                      free_port, new_call_id, request_header)


def udp_probe(d, method, *, timeout=1.0, **kw):
    """Sends one request from a fresh socket; returns (request bytes, reply or None, src port)."""
    with UdpClient(d.sip_port) as c:
        req = c.request(method, **kw)
        reply = c.recv(timeout)
        return req, reply, c.port


def test_passive_udp_sends_nothing_but_records(daemon):
    for method in ("OPTIONS", "INVITE"):
        call_id = new_call_id()
        req, reply, port = udp_probe(daemon, method, call_id=call_id, to_user="4412345",
                                     body=SDP_OFFER if method == "INVITE" else "",
                                     content_type="application/sdp")
        assert reply is None, f"passive daemon answered {method} over UDP: {reply!r}"
        row = daemon.rows_with(call_id)[0]
        assert row["method"] == method, row
        assert row["collected_method"] == "passive", row
        assert row["transport_type"] == "UDP", row
        assert row["source_port"] == port, row
        assert row["called_number"] == "4412345", row
        assert row["sip_message"] == req.decode(), row


def test_passive_tcp_sends_nothing_but_records(daemon):
    call_id = new_call_id()
    with StreamClient(daemon.sip_port) as c:
        c.request("OPTIONS", call_id=call_id)
        data = c.recv_any(timeout=1.0)
        assert not data, f"passive daemon sent bytes over TCP: {data!r}"
        row = daemon.rows_with(call_id)[0]
        assert row["transport_type"] == "TCP" and row["source_port"] == c.port, row
        assert row["collected_method"] == "passive", row


def test_responsive_udp_options_ok(rdaemon):
    with UdpClient(rdaemon.sip_port) as c:
        req = c.request("OPTIONS")
        raw = c.recv(2.0)
    assert raw is not None, "responsive daemon did not answer OPTIONS within 2 s"
    resp = SipResponse(raw)
    assert resp.status_line == "SIP/2.0 200 OK", resp
    assert_reply_matches(resp, req, 200)
    # RFC 3581: the request asked for rport; the reply says where it came from.
    via = resp.all("via")[0]
    assert f"rport={c.port}" in via and "received=127.0.0.1" in via, via
    row = rdaemon.rows_with(request_header(req, "Call-ID"))[0]
    assert row["collected_method"] == "responsive", row


def test_responsive_udp_invite_ok_then_ack_and_bye(rdaemon):
    call_id = new_call_id()
    with UdpClient(rdaemon.sip_port) as c:
        inv = c.request("INVITE", call_id=call_id, body=SDP_OFFER, content_type="application/sdp")
        final = None
        for _ in range(4):  # optional provisional responses, then the final one
            raw = c.recv(2.0)
            assert raw is not None, "no final response to INVITE within 2 s"
            resp = SipResponse(raw)
            if resp.status >= 200:
                final = resp
                break
        assert final is not None
        assert_reply_matches(final, inv, 200)
        c.request("ACK", call_id=call_id, cseq=1)
        assert c.recv(0.5) is None, "ACK must not be answered"
        bye = c.request("BYE", call_id=call_id, cseq=2)
        raw = c.recv(2.0)
        assert raw is not None, "no answer to BYE"
        assert_reply_matches(SipResponse(raw), bye, 200)
    rows = rdaemon.rows_with(call_id, n=3)
    assert [r["method"] for r in rows] == ["INVITE", "ACK", "BYE"], rows


def test_responsive_tcp_options_ok(rdaemon):
    with StreamClient(rdaemon.sip_port) as c:
        req = c.request("OPTIONS")
        raw = c.recv_message(2.0)
    assert raw is not None, "no reply over TCP within 2 s"
    assert_reply_matches(SipResponse(raw), req, 200)


def test_sip_agent_404(make_daemon):
    d = make_daemon(responsive=True, args=["--sip-agent", "404"])
    req, raw, _ = udp_probe(d, "INVITE", timeout=2.0, body=SDP_OFFER, content_type="application/sdp")
    assert raw is not None, "no answer to INVITE with --sip-agent 404"
    final = SipResponse(raw)
    assert final.status_line == "SIP/2.0 404 Not Found", final
    assert_reply_matches(final, req, 404)
    req, raw, _ = udp_probe(d, "OPTIONS", timeout=2.0)
    assert raw is not None and SipResponse(raw).status_line == "SIP/2.0 200 OK", raw


def test_sip_redirect(make_daemon):
    d = make_daemon(responsive=True, args=["--sip-redirect", "sip:999@192.0.2.10"])
    req, raw, _ = udp_probe(d, "INVITE", timeout=2.0, body=SDP_OFFER, content_type="application/sdp")
    assert raw is not None, "no answer to INVITE with --sip-redirect"
    resp = SipResponse(raw)
    assert resp.status_line == "SIP/2.0 302 Moved Temporarily", resp
    assert_reply_matches(resp, req, 302)
    assert resp.all("contact") == ["<sip:999@192.0.2.10>"], resp
    req, raw, _ = udp_probe(d, "OPTIONS", timeout=2.0)
    assert raw is not None and SipResponse(raw).status_line == "SIP/2.0 200 OK", raw


def test_sip_agent_without_responsive_stays_silent(make_daemon):
    """--sip-agent/--sip-redirect choose the answer; only -r makes the daemon answer."""
    d = make_daemon(responsive=False, args=["--sip-agent", "404"])
    _, raw, _ = udp_probe(d, "INVITE")
    assert raw is None, f"passive daemon answered: {raw!r}"


def test_sip_disable_opens_no_sip_port(make_daemon):
    port = free_port()
    d = make_daemon(sip=False, args=["-R", "--sip-listen", f"127.0.0.1:{port}"])
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        u.bind(("127.0.0.1", port))  # would fail with EADDRINUSE if the daemon listened
        t.bind(("127.0.0.1", port))
    finally:
        u.close()
        t.close()
    assert d.alive()
    d.stop()


def test_two_listeners(make_daemon):
    extra = free_port()
    d = make_daemon(responsive=True, args=["--sip-listen", f"127.0.0.1:{extra}"])
    for port in (d.sip_port, extra):
        call_id = new_call_id()
        with UdpClient(port) as c:
            c.request("OPTIONS", call_id=call_id)
            assert c.recv(2.0) is not None, f"no answer on listener {port}"
        row = d.rows_with(call_id)[0]
        assert row["destination_port"] == port, row


def test_called_number_fallbacks(daemon):
    """To user, else Request-URI user, else NOT_FOUND; missing User-Agent is NOT_FOUND."""
    cases = [
        (dict(to_user="111", ruri_user="222"), "111"),
        (dict(to_user=None, ruri_user="333"), "333"),
        (dict(to_user=None, ruri_user=""), "NOT_FOUND"),
    ]
    for kw, expected in cases:
        call_id = new_call_id()
        with UdpClient(daemon.sip_port) as c:
            c.request("INVITE", call_id=call_id, user_agent=None, **kw)
        row = daemon.rows_with(call_id)[0]
        assert row["called_number"] == expected, (kw, row)
        assert row["user_agent"] == "NOT_FOUND", row
