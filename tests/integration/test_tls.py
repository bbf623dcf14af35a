"""SIP over TLS with Python's ssl module (no certificate verification)."""

import ssl
import subprocess

from conftest import (SipResponse, StreamClient, assert_reply_matches, free_port, new_call_id,
                      require_tool, run_binary)


def tls_options(d, *, expect_reply: bool):
    call_id = new_call_id()
    with StreamClient(d.tls_port, tls=True) as c:
        req = c.request("OPTIONS", call_id=call_id, to_user="200")
        raw = c.recv_message(timeout=2.0 if expect_reply else 1.0)
        der = c.sock.getpeercert(binary_form=True)
        src_port = c.port
    return req, raw, der, src_port, call_id


def test_tls_options_answered_and_recorded(make_daemon):
    d = make_daemon(responsive=True, tls=True)
    req, raw, der, src_port, call_id = tls_options(d, expect_reply=True)
    assert raw is not None, "no reply over TLS within 2 s"
    resp = SipResponse(raw)
    assert resp.status_line == "SIP/2.0 200 OK", resp
    assert_reply_matches(resp, req, 200)
    row = d.rows_with(call_id)[0]
    assert row["transport_type"] == "TLS", row
    assert row["method"] == "OPTIONS", row
    assert row["source_port"] == src_port, row
    assert row["destination_port"] == d.tls_port, row
    assert row["called_number"] == "200", row
    assert row["sip_message"] == req.decode(), row
    # Without -t/-k the daemon generated a self-signed certificate for localhost.
    assert b"localhost" in der, "generated certificate does not name localhost"
    d.stop()


def test_tls_passive_records_without_reply(make_daemon):
    d = make_daemon(responsive=False, tls=True)
    _, raw, _, _, call_id = tls_options(d, expect_reply=False)
    assert raw is None, f"passive daemon answered over TLS: {raw!r}"
    row = d.rows_with(call_id)[0]
    assert row["transport_type"] == "TLS" and row["collected_method"] == "passive", row


def make_cert(directory, cn="sp-test.example"):
    openssl = require_tool("openssl", "openssl")
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    res = subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                          "ec_paramgen_curve:prime256v1", "-nodes", "-subj", f"/CN={cn}",
                          "-days", "2", "-keyout", str(key), "-out", str(cert)],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    return cert, key


def test_tls_uses_given_certificate(make_daemon, tmp_path):
    cert, key = make_cert(tmp_path)
    d = make_daemon(responsive=True, tls=True, args=["-t", cert, "-k", key])
    _, raw, der, _, _ = tls_options(d, expect_reply=True)
    assert raw is not None and SipResponse(raw).status == 200
    assert der == ssl.PEM_cert_to_DER_cert(cert.read_text()), "served certificate is not -t's"


def test_tls_cert_from_env(make_daemon, tmp_path):
    cert, key = make_cert(tmp_path, cn="env-cert.example")
    d = make_daemon(responsive=True, tls=True,
                    env={"SENTRYPEER_CERT": str(cert), "SENTRYPEER_KEY": str(key)})
    _, raw, der, _, _ = tls_options(d, expect_reply=True)
    assert raw is not None
    assert der == ssl.PEM_cert_to_DER_cert(cert.read_text()), "served certificate is not $SENTRYPEER_CERT"


def test_key_not_matching_cert_is_refused(tmp_path):
    cert, _ = make_cert(tmp_path / "a")
    _, other_key = make_cert(tmp_path / "b")
    res = run_binary(["-f", tmp_path / "x.db", "--data-dir", tmp_path, "--sip-listen",
                      f"127.0.0.1:{free_port()}", "-z", f"127.0.0.1:{free_port(udp=False)}",
                      "-t", cert, "-k", other_key], timeout=15)
    assert res.returncode != 0, f"started with a key that does not match the certificate: {res}"
    assert str(other_key) in res.stderr or str(cert) in res.stderr, res.stderr


def test_plain_tcp_to_tls_port_does_not_kill_listener(make_daemon):
    """A cleartext SIP message on the TLS port fails the handshake; TLS still works after."""
    d = make_daemon(responsive=True, tls=True)
    with StreamClient(d.tls_port) as c:
        c.request("OPTIONS")
        data = c.recv_any(timeout=2.0)
        assert not (data or b"").startswith(b"SIP/2.0"), data
    _, raw, _, _, call_id = tls_options(d, expect_reply=True)
    assert raw is not None and SipResponse(raw).status == 200
    d.rows_with(call_id)
