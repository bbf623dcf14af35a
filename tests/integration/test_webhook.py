"""The webhook (-w) with OAuth2 client credentials (-i/-c): what the receiver gets, token
caching and refresh, and that a dead or hanging endpoint neither slows ingestion nor
shutdown. The receiver is this test's own http.server on loopback."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

import pytest

from conftest import JSON_KEYS, UdpClient, free_port, new_call_id, parse_json_ordered

CLIENT_ID = "it-client-id"
CLIENT_SECRET = "it-Secret-5f3a9c"  # must never appear in the daemon's output
# libcurl honours http_proxy & co.: the loopback receiver must never go through a proxy.
NO_PROXY_ENV = {"no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost"}


class Receiver:
    """A webhook receiver (POST /events) and OAuth2 token endpoint (POST /token) on
    127.0.0.1, in a thread. Tokens are tok-1, tok-2, ... with the given expires_in.
    hang=True: /events never answers (until close())."""

    def __init__(self, expires_in: int = 3600, hang: bool = False):
        self.expires_in = expires_in
        self.hang = hang
        self.lock = threading.Lock()
        self.events = []  # (headers dict lowercased, body bytes)
        self.tokens = []  # (headers, body) of token requests
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as libcurl expects

            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                if self.path == "/token":
                    with receiver.lock:
                        receiver.tokens.append((headers, body))
                        n = len(receiver.tokens)
                    self._reply(200, json.dumps({"access_token": f"tok-{n}",
                                                 "token_type": "Bearer",
                                                 "expires_in": receiver.expires_in}).encode())
                elif self.path == "/events":
                    with receiver.lock:
                        receiver.events.append((headers, body))
                    if receiver.hang:
                        receiver.release.wait(60)
                        return
                    self._reply(200, b"{}")
                else:
                    self._reply(404, b"{}")

            def _reply(self, status: int, body: bytes):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_events(self, n: int, timeout: float = 10.0, what: str = "") -> list:
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                got = list(self.events)
            if len(got) >= n:
                return got
            if time.monotonic() > deadline:
                pytest.fail(f"receiver got {len(got)} POST /events within {timeout}s, expected "
                            f">= {n}. {what}")
            time.sleep(0.02)

    def token_requests(self) -> list:
        with self.lock:
            return list(self.tokens)

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def factory(**kw) -> Receiver:
        r = Receiver(**kw)
        made.append(r)
        return r

    yield factory
    for r in made:
        r.close()


def webhook_args(url: str, token_url: Optional[str]) -> list:
    args = ["-w", url]
    if token_url:
        args += ["-i", CLIENT_ID, "-c", CLIENT_SECRET, "--oauth2-token-url", token_url,
                 "--oauth2-audience", "test"]
    return args


def send_options(d) -> str:
    call_id = new_call_id()
    with UdpClient(d.sip_port) as c:
        c.request("OPTIONS", call_id=call_id, to_user="4471234567")
    return call_id


def assert_no_secret(d):
    for secret in (CLIENT_SECRET, "tok-1", "tok-2"):
        assert secret not in d.stderr, f"{secret!r} leaked into the daemon's output:\n{d.stderr}"


def test_webhook_posts_event_json_with_bearer_token(make_daemon, receiver):
    r = receiver()
    d = make_daemon(args=webhook_args(r.url("/events"), r.url("/token")), env=NO_PROXY_ENV)
    call_id = send_options(d)
    headers, body = r.wait_events(1, what=f"stderr:\n{d.stderr}")[0]

    assert headers.get("content-type") == "application/json", headers
    assert headers.get("user-agent", "").startswith("sentrypeer/"), headers
    assert headers.get("authorization") == "Bearer tok-1", headers
    ev = parse_json_ordered(body.decode("utf-8"))
    assert list(ev.keys())[:13] == JSON_KEYS[:13], f"keys/order: {list(ev.keys())}"
    assert list(ev.keys()) == JSON_KEYS, f"keys/order: {list(ev.keys())}"
    assert all(isinstance(v, str) for v in ev.values()), ev
    assert ev["app_name"] == "sentrypeer"
    assert ev["sip_method"] == "OPTIONS"
    assert ev["called_number"] == "4471234567"
    assert call_id in ev["sip_message"]
    assert body.decode() == json.dumps(ev, separators=(",", ":"), ensure_ascii=False)
    row = d.rows_with(call_id)[0]
    assert row["event_uuid"] == ev["event_uuid"]

    tokens = r.token_requests()
    assert len(tokens) == 1, tokens
    t_headers, t_body = tokens[0]
    assert t_headers.get("content-type") == "application/json", t_headers
    assert json.loads(t_body) == {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                                  "audience": "test", "grant_type": "client_credentials"}

    # A second event reuses the cached token.
    send_options(d)
    headers2, _ = r.wait_events(2)[1]
    assert headers2.get("authorization") == "Bearer tok-1"
    assert len(r.token_requests()) == 1
    d.stop()
    assert_no_secret(d)


def test_webhook_token_is_fetched_again_after_expiry(make_daemon, receiver):
    r = receiver(expires_in=1)
    d = make_daemon(args=webhook_args(r.url("/events"), r.url("/token")), env=NO_PROXY_ENV)
    send_options(d)
    assert r.wait_events(1)[0][0].get("authorization") == "Bearer tok-1"
    time.sleep(1.5)
    send_options(d)
    headers, _ = r.wait_events(2)[1]
    assert len(r.token_requests()) == 2, "expires_in=1 did not lead to a second token fetch"
    assert headers.get("authorization") == "Bearer tok-2", headers
    d.stop()
    assert_no_secret(d)


def test_webhook_without_oauth2_sends_no_authorization(make_daemon, receiver):
    """SentryPeer's variables work as well as the flags; without -i/-c no token is used."""
    r = receiver()
    d = make_daemon(env={**NO_PROXY_ENV, "SENTRYPEER_WEBHOOK_URL": r.url("/events")})
    send_options(d)
    headers, body = r.wait_events(1, what=f"stderr:\n{d.stderr}")[0]
    assert "authorization" not in headers, headers
    assert headers.get("content-type") == "application/json"
    assert json.loads(body)["sip_method"] == "OPTIONS"
    assert r.token_requests() == []
    d.stop()


def test_webhook_oauth2_from_environment(make_daemon, receiver):
    r = receiver()
    d = make_daemon(args=["--oauth2-token-url", r.url("/token"), "--oauth2-audience", "test"],
                    env={**NO_PROXY_ENV, "SENTRYPEER_WEBHOOK_URL": r.url("/events"),
                         "SENTRYPEER_OAUTH2_CLIENT_ID": CLIENT_ID,
                         "SENTRYPEER_OAUTH2_CLIENT_SECRET": CLIENT_SECRET})
    send_options(d)
    headers, _ = r.wait_events(1, what=f"stderr:\n{d.stderr}")[0]
    assert headers.get("authorization") == "Bearer tok-1", headers
    assert json.loads(r.token_requests()[0][1])["client_id"] == CLIENT_ID
    d.stop()
    assert_no_secret(d)


def test_dead_webhook_does_not_slow_ingestion_or_shutdown(make_daemon):
    dead = free_port(udp=False)  # nothing listens there
    url = f"http://127.0.0.1:{dead}/events"
    d = make_daemon(args=webhook_args(url, f"http://127.0.0.1:{dead}/token"), env=NO_PROXY_ENV)
    t0 = time.monotonic()
    with UdpClient(d.sip_port) as c:
        for i in range(500):
            c.request("OPTIONS", call_id=new_call_id(), to_user=f"{1000 + i}")
            if i % 50 == 49:
                time.sleep(0.01)  # stay within the socket buffer, not a rate limit
    d.wait_for_rows(500, timeout=20)
    took = time.monotonic() - t0
    assert took < 10, f"500 probes took {took:.1f}s to be stored with a dead webhook"
    assert d.count() == 500
    t1 = time.monotonic()
    d.stop(timeout=10)
    stop_took = time.monotonic() - t1
    assert stop_took < 5, f"SIGTERM took {stop_took:.1f}s with a dead webhook"
    webhook_lines = [l for l in d.stderr_lines if "webhook" in l.lower()]
    assert len(webhook_lines) <= 10, "webhook errors are not rate-limited:\n" + \
        "\n".join(webhook_lines[:20])
    assert_no_secret(d)


def test_hanging_webhook_does_not_block_shutdown(make_daemon, receiver):
    r = receiver(hang=True)
    d = make_daemon(args=webhook_args(r.url("/events"), None), env=NO_PROXY_ENV)
    with UdpClient(d.sip_port) as c:
        for i in range(20):
            c.request("OPTIONS", call_id=new_call_id(), to_user=f"{2000 + i}")
    d.wait_for_rows(20)
    r.wait_events(1)  # a POST is in flight, unanswered
    t1 = time.monotonic()
    d.stop(timeout=15)
    stop_took = time.monotonic() - t1
    assert stop_took < 5, f"SIGTERM took {stop_took:.1f}s with a hanging webhook"
