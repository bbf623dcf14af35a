"""Nothing recorded is lost on SIGTERM/SIGINT: the bus drains, the store commits, exit 0."""

import signal
import socket
import time

import pytest

from conftest import StreamClient, db_query, sip_request


def send_paced_udp(port: int, n: int, rate: float) -> list:
    """Sends n OPTIONS with distinct Call-IDs at about `rate`/s; returns the Call-IDs."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    src_port = sock.getsockname()[1]
    call_ids = [f"shutdown-{i}-{time.monotonic_ns()}@it.test" for i in range(n)]
    msgs = [sip_request("OPTIONS", dst_port=port, src_port=src_port, call_id=cid,
                        to_user=str(1000 + i)) for i, cid in enumerate(call_ids)]
    start = time.monotonic()
    for i, m in enumerate(msgs):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sock.sendto(m, ("127.0.0.1", port))
    sock.close()
    return call_ids


def assert_all_stored(d, call_ids):
    rows = db_query(d.db_path, "SELECT sip_message FROM honey")
    assert len(rows) == len(call_ids), (
        f"sent {len(call_ids)} probes, {len(rows)} rows after exit "
        f"(lost {len(call_ids) - len(rows)})")
    stored = set()
    for r in rows:
        for line in r["sip_message"].split("\r\n"):
            if line.startswith("Call-ID: "):
                stored.add(line[len("Call-ID: "):])
    assert stored == set(call_ids), f"{len(set(call_ids) - stored)} Call-IDs missing"


@pytest.mark.parametrize("sig, n", [(signal.SIGTERM, 2000), (signal.SIGINT, 500)])
def test_signal_right_after_burst_loses_nothing(make_daemon, sig, n):
    d = make_daemon()
    call_ids = send_paced_udp(d.sip_port, n, rate=2000)
    d.stop(sig)  # immediately after the last send
    assert_all_stored(d, call_ids)


def test_sigterm_after_tcp_stream_loses_nothing(make_daemon):
    d = make_daemon()
    call_ids = [f"tcp-shutdown-{i}@it.test" for i in range(300)]
    with StreamClient(d.sip_port) as c:
        payload = b"".join(sip_request("OPTIONS", dst_port=d.sip_port, transport="TCP",
                                       src_port=c.port, call_id=cid) for cid in call_ids)
        c.send(payload)
        # Everything was handed to the daemon's socket; wait until the daemon read it all.
        d.rows_with(call_ids[-1])
    d.stop()
    assert_all_stored(d, call_ids)


def test_sigterm_with_open_idle_connections_exits_promptly(make_daemon):
    d = make_daemon(tls=True)
    conns = [StreamClient(d.sip_port) for _ in range(20)]
    tls_conns = [StreamClient(d.tls_port, tls=True) for _ in range(5)]
    try:
        start = time.monotonic()
        d.stop(timeout=10)
        assert time.monotonic() - start < 10
    finally:
        for c in conns + tls_conns:
            c.close()

