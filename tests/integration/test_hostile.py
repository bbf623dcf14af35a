"""Hostile and odd inputs. After each, a normal probe must still be recorded (the daemon is
alive and its listeners still serve), and the daemon must exit 0 on SIGTERM."""

import random
import resource
import time

import pytest

from conftest import (SDP_OFFER, SipResponse, StreamClient, UdpClient, assert_reply_matches,
                      new_call_id, raise_nofile, request_header, sip_request)


def probe_still_recorded(d, src_host="127.0.0.1"):
    row = d.barrier(src_host=src_host)
    assert row["source_ip"] == src_host, row
    assert d.alive(), "daemon died"


# ---- UDP ------------------------------------------------------------------------------

def test_sip_response_datagram_recorded_not_answered(rdaemon):
    call_id = new_call_id()
    response = (f"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK1\r\n"
                f"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>;tag=2\r\n"
                f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()
    with UdpClient(rdaemon.sip_port) as c:
        c.send(response)
        reply = c.recv(1.0)
        port = c.port
    assert reply is None, f"the daemon answered a SIP response: {reply!r}"
    row = rdaemon.rows_with(call_id)[0]
    assert row["method"] == "SIP_RESPONSE", row
    assert row["source_port"] == port and row["transport_type"] == "UDP", row
    probe_still_recorded(rdaemon)


def test_empty_datagram_not_stored(rdaemon):
    with UdpClient(rdaemon.sip_port) as c:
        c.send(b"")
        reply = c.recv(1.0)
    assert reply is None, f"the daemon answered an empty datagram: {reply!r}"
    probe_still_recorded(rdaemon)
    rows = rdaemon.rows()
    assert [r["called_number"] for r in rows] == ["barrier"], "empty datagram was stored"


def test_random_bytes_malformed(rdaemon):
    junk = random.Random(4096).randbytes(4096)
    with UdpClient(rdaemon.sip_port) as c:
        c.send(junk)
        reply = c.recv(1.0)
        port = c.port
    assert reply is None, f"the daemon answered random bytes: {reply!r}"
    rows = rdaemon.wait_for_rows(1, "source_port = ?", (port,))
    assert len(rows) == 1, rows
    assert rows[0]["method"] == "MALFORMED", rows[0]
    assert rows[0]["user_agent"] == "NOT_FOUND" and rows[0]["called_number"] == "NOT_FOUND", rows[0]
    assert len(rows[0]["sip_message"]) >= 4000, "the stored message lost most of the bytes"
    assert "\x00" not in rows[0]["sip_message"], "raw NUL stored (control chars must be escaped)"
    probe_still_recorded(rdaemon)


@pytest.mark.parametrize("size", [61440, 65507])
def test_large_datagram_stored_whole(rdaemon, size):
    call_id = new_call_id()
    base = sip_request("OPTIONS", dst_port=rdaemon.sip_port, call_id=call_id,
                       extra_headers=["X-Pad: "])
    pad = size - len(base)
    msg = base.replace(b"X-Pad: ", b"X-Pad: " + b"a" * pad)
    assert len(msg) == size
    with UdpClient(rdaemon.sip_port) as c:
        c.send(msg)
        raw = c.recv(2.0)
    row = rdaemon.rows_with(call_id)[0]
    assert len(row["sip_message"]) == size, f"stored {len(row['sip_message'])} of {size} bytes"
    assert row["sip_message"] == msg.decode()
    assert row["method"] == "OPTIONS", row
    assert raw is not None, "a valid (large) OPTIONS was not answered in -r mode"
    assert_reply_matches(SipResponse(raw), msg, 200)
    probe_still_recorded(rdaemon)


def test_invalid_utf8_user_agent_is_stored(rdaemon):
    call_id = new_call_id()
    msg = sip_request("OPTIONS", dst_port=rdaemon.sip_port, call_id=call_id,
                      user_agent="UA-PLACEHOLDER").replace(b"UA-PLACEHOLDER", b"bad\xff\xfe\xc3(ua")
    with UdpClient(rdaemon.sip_port) as c:
        c.send(msg)
    row = rdaemon.rows_with(call_id)[0]
    assert row["method"] == "OPTIONS", row
    assert row["user_agent"].startswith("bad") and row["user_agent"].endswith("(ua"), row
    assert "\ufffd" in row["user_agent"] or "\\x" in row["user_agent"], row["user_agent"]
    probe_still_recorded(rdaemon)


# ---- TCP framing ------------------------------------------------------------------------

def test_two_messages_in_one_tcp_segment(rdaemon):
    with StreamClient(rdaemon.sip_port) as c:
        m1 = sip_request("OPTIONS", dst_port=rdaemon.sip_port, transport="TCP", src_port=c.port)
        m2 = sip_request("INVITE", dst_port=rdaemon.sip_port, transport="TCP", src_port=c.port,
                         body=SDP_OFFER, content_type="application/sdp")
        c.send(m1 + m2)
        replies = {}
        for _ in range(4):
            raw = c.recv_message(2.0)
            if raw is None:
                break
            resp = SipResponse(raw)
            if resp.status >= 200:
                replies[resp.get("call-id")] = resp
            if len(replies) == 2:
                break
        src = c.port
    rows = rdaemon.wait_for_rows(2, "source_port = ? AND transport_type = 'TCP'", (src,))
    assert [r["sip_message"] for r in rows] == [m1.decode(), m2.decode()], rows
    assert [r["method"] for r in rows] == ["OPTIONS", "INVITE"]
    for m in (m1, m2):
        cid = request_header(m, "Call-ID")
        assert cid in replies, f"no final reply to {cid}; got {list(replies)}"
        assert_reply_matches(replies[cid], m, 200)
    probe_still_recorded(rdaemon)


def test_keepalive_crlf_between_tcp_messages_is_not_a_message(rdaemon):
    with StreamClient(rdaemon.sip_port) as c:
        m1 = sip_request("OPTIONS", dst_port=rdaemon.sip_port, transport="TCP", src_port=c.port)
        m2 = sip_request("OPTIONS", dst_port=rdaemon.sip_port, transport="TCP", src_port=c.port)
        c.send(b"\r\n\r\n" + m1 + b"\r\n\r\n" + m2)
        src = c.port
        rdaemon.wait_for_rows(2, "source_port = ?", (src,))
    probe_still_recorded(rdaemon)
    rows = rdaemon.rows("source_port = ?", (src,))
    assert [r["sip_message"] for r in rows] == [m1.decode(), m2.decode()], rows


def test_message_split_over_three_tcp_sends(rdaemon):
    with StreamClient(rdaemon.sip_port) as c:
        msg = sip_request("INVITE", dst_port=rdaemon.sip_port, transport="TCP", src_port=c.port,
                          body=SDP_OFFER, content_type="application/sdp")
        cut1, cut2 = 10, len(msg) - 20  # inside the request line, inside the body
        for part in (msg[:cut1], msg[cut1:cut2], msg[cut2:]):
            c.send(part)
            time.sleep(0.1)
        final = None
        for _ in range(4):
            raw = c.recv_message(2.0)
            assert raw is not None, "no final reply to a split INVITE"
            final = SipResponse(raw)
            if final.status >= 200:
                break
        assert_reply_matches(final, msg, 200)
        src = c.port
    rows = rdaemon.wait_for_rows(1, "source_port = ?", (src,))
    probe_still_recorded(rdaemon)
    rows = rdaemon.rows("source_port = ?", (src,))
    assert len(rows) == 1, f"a split message became {len(rows)} rows"
    assert rows[0]["sip_message"] == msg.decode()


def test_huge_content_length_is_closed_not_buffered(rdaemon):
    with StreamClient(rdaemon.sip_port) as c:
        head = sip_request("INVITE", dst_port=rdaemon.sip_port, transport="TCP", src_port=c.port)
        c.send(head.replace(b"Content-Length: 0", b"Content-Length: 999999999") + b"x" * 1000)
        deadline = time.monotonic() + 5
        data = None
        while time.monotonic() < deadline:
            data = c.recv_any(1.0)
            if data == b"":
                break
        assert data == b"", "connection announcing a 1 GB body was not closed within 5 s"
        src = c.port
    # What it sent is still evidence of a probe: recorded, not dropped.
    rdaemon.wait_for_rows(1, "source_port = ? AND transport_type = 'TCP'", (src,))
    probe_still_recorded(rdaemon)


def test_tcp_garbage_then_close(rdaemon):
    with StreamClient(rdaemon.sip_port) as c:
        c.send(random.Random(7).randbytes(3000))
        src = c.port
    rows = rdaemon.wait_for_rows(1, "source_port = ?", (src,))
    assert [(r["method"], r["transport_type"]) for r in rows] == [("MALFORMED", "TCP")], rows
    with StreamClient(rdaemon.sip_port) as c:
        c.send(b"INVITE sip:1@x SIP/2.0\r\nVia: SIP/2.0/TCP x\r\n")  # truncated, then EOF
    probe_still_recorded(rdaemon)
    call_id = new_call_id()
    with StreamClient(rdaemon.sip_port) as c:
        c.request("OPTIONS", call_id=call_id)
        assert c.recv_message(2.0) is not None, "TCP listener no longer answers"
    rdaemon.rows_with(call_id)


# ---- connection limits ----------------------------------------------------------------

def connection_state(c: StreamClient) -> str:
    """'open' (nothing to read), 'closed' (EOF/RST) or 'data'."""
    c.sock.setblocking(False)
    try:
        data = c.sock.recv(4096)
        return "closed" if data == b"" else "data"
    except BlockingIOError:
        return "open"
    except OSError:
        return "closed"
    finally:
        c.sock.setblocking(True)


def open_connections(port, n, src_host="127.0.0.1", deadline_s=30.0):
    deadline = time.monotonic() + deadline_s
    conns = []
    try:
        for _ in range(n):
            assert time.monotonic() < deadline, f"opened only {len(conns)} of {n} in {deadline_s}s"
            conns.append(StreamClient(port, src_host=src_host, timeout=10))
    except BaseException:
        for c in conns:
            c.close()
        raise
    return conns


def test_thousand_idle_tcp_connections(make_daemon):
    old = raise_nofile(4096)
    try:
        d = make_daemon(responsive=True, args=["--tcp-max-per-ip", "2000",
                                               "--tcp-max-connections", "3000"])
        conns = open_connections(d.sip_port, 1000)
        try:
            time.sleep(0.5)
            still_open = sum(connection_state(c) == "open" for c in conns)
            assert still_open == 1000, f"only {still_open} of 1000 idle connections kept open"
            # Service continues for others, over UDP and TCP.
            probe_still_recorded(d, src_host="127.0.0.2")
            call_id = new_call_id()
            with StreamClient(d.sip_port, src_host="127.0.0.2") as c:
                req = c.request("OPTIONS", call_id=call_id)
                raw = c.recv_message(3.0)
            assert raw is not None, "no TCP reply while 1000 idle connections are open"
            assert_reply_matches(SipResponse(raw), req, 200)
            row = d.rows_with(call_id)[0]
            assert row["source_ip"] == "127.0.0.2" and row["transport_type"] == "TCP", row
            # And one of the idle connections can still speak.
            cid2 = new_call_id()
            conns[500].request("OPTIONS", call_id=cid2)
            assert conns[500].recv_message(3.0) is not None
            d.rows_with(cid2)
        finally:
            for c in conns:
                c.close()
        assert d.alive()
        d.stop()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, old)


def test_tcp_max_per_ip(make_daemon):
    d = make_daemon(responsive=True, args=["--tcp-max-per-ip", "5"])
    conns = open_connections(d.sip_port, 10)
    try:
        deadline = time.monotonic() + 5
        while True:
            states = [connection_state(c) for c in conns]
            if states.count("closed") >= 5 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert states.count("open") == 5 and states.count("closed") == 5, (
            f"--tcp-max-per-ip 5 with 10 connections from one IP: {states}")
        # The five kept connections work; another source IP is not affected.
        kept = conns[states.index("open")]
        cid = new_call_id()
        kept.request("OPTIONS", call_id=cid)
        assert kept.recv_message(2.0) is not None
        d.rows_with(cid)
        cid2 = new_call_id()
        with StreamClient(d.sip_port, src_host="127.0.0.2") as c:
            c.request("OPTIONS", call_id=cid2)
            assert c.recv_message(2.0) is not None, "other source IP refused"
        d.rows_with(cid2)
    finally:
        for c in conns:
            c.close()


def test_tcp_idle_timeout(make_daemon):
    d = make_daemon(args=["--tcp-idle-timeout", "1s"])
    with StreamClient(d.sip_port) as idle, StreamClient(d.sip_port) as talker:
        call_id = new_call_id()
        talker.request("OPTIONS", call_id=call_id)
        d.rows_with(call_id)
        start = time.monotonic()
        for c in (idle, talker):
            data = c.recv_any(5.0)
            assert data == b"", f"idle connection not closed within 5 s (got {data!r})"
        assert time.monotonic() - start < 5
    probe_still_recorded(d)
