"""Shared helpers for the integration tests: run the real `sentrypeer` binary on loopback,
talk SIP to it over UDP/TCP/TLS, read what it recorded (SQLite read-only, JSON log).

Run with Debian's Python: /usr/bin/python3 -m pytest tests/integration -v

The binary: $SENTRYPEER_BIN, else <repo>/build/release/src/sentrypeer. When it is missing
the tests skip with that reason, unless SENTRYPEER_BIN was set explicitly (then they fail).

Every wait has a timeout, every socket a timeout, every process is killed at teardown.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import resource
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import threading
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Iterable, Optional

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO_ROOT / "build" / "release" / "src" / "sentrypeer"
PACKAGING = REPO_ROOT / "packaging"

READY_TIMEOUT = 20.0  # seconds to wait for the "ready" line
STOP_TIMEOUT = 20.0  # seconds to wait for exit after SIGTERM
ROW_TIMEOUT = 5.0  # default seconds to wait for rows to appear
READY_RE = re.compile(r"\bready\b", re.IGNORECASE)  # not "already in use"

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
UUID4_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{9}$")

JSON_KEYS = [
    "app_name", "app_version", "event_timestamp", "event_uuid", "created_by_node_id",
    "collected_method", "transport_type", "source_ip", "destination_ip", "called_number",
    "sip_method", "sip_user_agent", "sip_message", "source_port", "destination_port",
]


# --------------------------------------------------------------------------------------
# Tools and the binary
# --------------------------------------------------------------------------------------

def sentrypeer_bin() -> Path:
    """Path of the daemon under test; skips (or fails if explicitly configured) if absent."""
    explicit = os.environ.get("SENTRYPEER_BIN")
    path = Path(explicit) if explicit else DEFAULT_BIN
    if not (path.is_file() and os.access(path, os.X_OK)):
        msg = (f"sentrypeer binary not found at {path} (build it, or set SENTRYPEER_BIN to "
               f"the binary to test)")
        if explicit:
            pytest.fail(msg)
        print(f"SKIP: {msg}")
        pytest.skip(msg)
    return path


def require_tool(name: str, package: str) -> str:
    """Absolute path of an external tool, or skip the test saying what is missing."""
    path = shutil.which(name)
    if path is None:
        reason = f"{name} not found on PATH (install Debian package {package}, e.g. scripts/deps --test)"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    return path


def clean_env(extra: Optional[dict] = None) -> dict:
    """The environment for child processes: ours minus every SENTRYPEER_* variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTRYPEER_")}
    env.update(extra or {})
    return env


def run_binary(args: Iterable[str], *, env: Optional[dict] = None, cwd=None,
               timeout: float = 20.0) -> subprocess.CompletedProcess:
    """Runs the daemon binary to completion (for --version, --check-config, bad flags)."""
    cmd = [str(sentrypeer_bin()), *map(str, args)]
    try:
        return subprocess.run(cmd, env=clean_env(env), cwd=cwd, capture_output=True,
                              text=True, errors="replace", timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{cmd} did not exit within {timeout}s; stderr: {e.stderr!r}")


def run_tool(cmd: list, *, timeout: float, cwd=None,
             env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """Runs an external tool with a hard timeout (the tool is killed when it expires)."""
    try:
        return subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                              errors="replace", timeout=timeout, cwd=cwd,
                              env=None if env is None else {**os.environ, **env},
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{cmd} did not finish within {timeout}s; stdout: {e.stdout!r} "
                    f"stderr: {e.stderr!r}")


def nonempty_lines(text: str) -> list:
    return [line for line in text.splitlines() if line.strip()]


def raise_nofile(wanted: int) -> tuple:
    """Raises RLIMIT_NOFILE (soft) to at least `wanted`; returns the old limits."""
    old = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft, hard = old
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {wanted} needed by this test")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return old


# --------------------------------------------------------------------------------------
# Network namespaces
# --------------------------------------------------------------------------------------

CLONE_NEWNET = 0x40000000


def _setns_net(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def inside_netns(name: str):
    """The calling thread enters network namespace /run/netns/NAME (setns(2)) for the block,
    so every helper here (sockets, HTTP, the daemons and tools it starts: children are born
    in the thread's namespace) works unchanged inside it; it goes back to its own on exit.
    Only the calling thread moves: call it from the test's thread, not from a helper thread.
    The caller creates and deletes the namespace (after leaving it)."""
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    entered = False
    try:
        target = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            _setns_net(target)
            entered = True
        finally:
            os.close(target)
        yield name
    finally:
        if entered:
            _setns_net(own)
        os.close(own)


def stop_process(proc: "subprocess.Popen", grace: float = 10) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `grace` seconds; reaped either way."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# --------------------------------------------------------------------------------------
# Ports
# --------------------------------------------------------------------------------------

def free_port(*, tcp: bool = True, udp: bool = True, host: str = "127.0.0.1") -> int:
    """A port free for TCP (bound with port 0) and, if asked, for UDP on the same number."""
    for _ in range(200):
        if tcp:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind((host, 0))
            port = s.getsockname()[1]
            if tcp and udp:
                u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    u.bind((host, port))
                except OSError:
                    continue
                finally:
                    u.close()
            return port
        finally:
            s.close()
    raise RuntimeError("no free port found")


# --------------------------------------------------------------------------------------
# SIP messages
# --------------------------------------------------------------------------------------

def new_call_id() -> str:
    return f"{uuid.uuid4().hex}@it.test"


def sip_request(method: str, *, dst_port: int = 5060, dst_host: str = "127.0.0.1",
                to_user: Optional[str] = "100", ruri_user: Optional[str] = None,
                transport: str = "UDP", src_host: str = "127.0.0.1", src_port: int = 5062,
                call_id: Optional[str] = None, cseq: int = 1,
                user_agent: Optional[str] = "friendly-scanner",
                extra_headers: Iterable[str] = (), body: str = "",
                content_type: Optional[str] = None) -> bytes:
    """A well-formed RFC 3261 request. to_user=None gives a To URI without user part."""
    ruri_user = to_user if ruri_user is None else ruri_user
    ruri = f"sip:{ruri_user}@{dst_host}:{dst_port}" if ruri_user else f"sip:{dst_host}:{dst_port}"
    to_uri = f"sip:{to_user}@{dst_host}" if to_user else f"sip:{dst_host}"
    call_id = call_id or new_call_id()
    branch = "z9hG4bK" + uuid.uuid4().hex[:16]
    lines = [
        f"{method} {ruri} SIP/2.0",
        f"Via: SIP/2.0/{transport} {src_host}:{src_port};branch={branch};rport",
        "Max-Forwards: 70",
        f"From: \"it\" <sip:it@{src_host}>;tag={uuid.uuid4().hex[:8]}",
        f"To: <{to_uri}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        f"Contact: <sip:it@{src_host}:{src_port}>",
        "Accept: application/sdp",
    ]
    if user_agent is not None:
        lines.append(f"User-Agent: {user_agent}")
    lines.extend(extra_headers)
    body_bytes = body.encode()
    if body_bytes and content_type:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body_bytes)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body_bytes


SDP_OFFER = ("v=0\r\no=it 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
             "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")

COMPACT = {"i": "call-id", "v": "via", "f": "from", "t": "to", "m": "contact",
           "l": "content-length", "c": "content-type", "k": "supported", "s": "subject"}


class SipResponse:
    """A parsed SIP response (status line, headers in order, body)."""

    def __init__(self, raw: bytes):
        self.raw = raw
        head, sep, body = raw.partition(b"\r\n\r\n")
        if not sep:
            raise AssertionError(f"response without an empty line after its headers: {raw!r}")
        lines = head.decode("utf-8", "replace").split("\r\n")
        self.status_line = lines[0]
        m = re.match(r"^SIP/2\.0 (\d{3}) (.*)$", self.status_line)
        if not m:
            raise AssertionError(f"not a SIP status line: {self.status_line!r} in {raw!r}")
        self.status = int(m.group(1))
        self.reason = m.group(2)
        self.headers = []
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                raise AssertionError(f"bad header line {line!r} in {raw!r}")
            name = name.strip().lower()
            self.headers.append((COMPACT.get(name, name), value.strip()))
        self.body = body

    def all(self, name: str) -> list:
        name = name.lower()
        return [v for n, v in self.headers if n == name]

    def get(self, name: str) -> Optional[str]:
        values = self.all(name)
        return values[0] if values else None

    def __repr__(self):
        return f"SipResponse({self.raw!r})"


def request_header(msg: bytes, name: str) -> str:
    """A header value of a request we built (first occurrence)."""
    for line in msg.split(b"\r\n\r\n")[0].decode().split("\r\n")[1:]:
        n, _, v = line.partition(":")
        if n.strip().lower() == name.lower():
            return v.strip()
    raise KeyError(name)


def assert_reply_matches(resp: SipResponse, req: bytes, status: int):
    """An RFC 3261 response to `req`: status, same Call-ID/CSeq/From/Via, To with a tag."""
    assert resp.status == status, f"expected {status}, got {resp.status_line!r}: {resp.raw!r}"
    assert resp.get("call-id") == request_header(req, "Call-ID"), resp.raw
    assert resp.get("cseq") == request_header(req, "CSeq"), resp.raw
    assert resp.get("from") == request_header(req, "From"), resp.raw
    req_via = request_header(req, "Via")
    branch = re.search(r"branch=([^;\s]+)", req_via).group(1)
    vias = resp.all("via")
    assert vias, f"no Via in response {resp.raw!r}"
    assert f"branch={branch}" in vias[0], f"Via branch not echoed: {vias[0]!r} vs {req_via!r}"
    to = resp.get("to")
    assert to is not None and to.startswith(request_header(req, "To")), resp.raw
    assert re.search(r";\s*tag=[^;\s]+", to), f"To without tag: {to!r}"
    clen = resp.get("content-length")
    assert clen is not None and int(clen) == len(resp.body), resp.raw


# --------------------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------------------

class UdpClient:
    """A UDP socket bound on loopback; send() datagrams, recv() with a timeout."""

    def __init__(self, dst_port: int, *, dst_host: str = "127.0.0.1", src_host: str = "127.0.0.1",
                 src_port: int = 0):
        self.dst = (dst_host, dst_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((src_host, src_port))
        self.src_host, self.port = self.sock.getsockname()

    def send(self, data: bytes):
        self.sock.sendto(data, self.dst)

    def recv(self, timeout: float = 2.0) -> Optional[bytes]:
        """One datagram, or None when nothing arrives within `timeout`."""
        self.sock.settimeout(timeout)
        try:
            data, _ = self.sock.recvfrom(70000)
            return data
        except socket.timeout:
            return None

    def request(self, method: str, **kw) -> bytes:
        """Builds a request whose Via/Contact name this socket, sends it, returns it."""
        msg = sip_request(method, dst_port=self.dst[1], src_host=self.src_host,
                          src_port=self.port, transport="UDP", **kw)
        self.send(msg)
        return msg

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_sip_message(buf: bytearray, recv, deadline: float) -> Optional[bytes]:
    """Reads one Content-Length framed message from a stream (recv() -> bytes)."""
    while True:
        head_end = buf.find(b"\r\n\r\n")
        if head_end >= 0:
            head = bytes(buf[:head_end]).decode("utf-8", "replace")
            m = re.search(r"(?im)^(?:content-length|l)\s*:\s*(\d+)\s*$", head)
            length = int(m.group(1)) if m else 0
            total = head_end + 4 + length
            if len(buf) >= total:
                msg = bytes(buf[:total])
                del buf[:total]
                return msg
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        chunk = recv(remaining)
        if chunk is None:
            return None
        if chunk == b"":
            if buf:
                raise AssertionError(f"connection closed mid-message: {bytes(buf)!r}")
            return None
        buf.extend(chunk)


class StreamClient:
    """A TCP (or TLS, without certificate verification) connection on loopback."""

    def __init__(self, dst_port: int, *, tls: bool = False, dst_host: str = "127.0.0.1",
                 src_host: str = "127.0.0.1", timeout: float = 5.0):
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.settimeout(timeout)
        raw.bind((src_host, 0))
        raw.connect((dst_host, dst_port))
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            raw = ctx.wrap_socket(raw, server_hostname="localhost")
        self.sock = raw
        self.tls = tls
        self.dst_port = dst_port
        self.src_host, self.port = raw.getsockname()[:2]
        self.buf = bytearray()

    @property
    def transport(self) -> str:
        return "TLS" if self.tls else "TCP"

    def send(self, data: bytes):
        self.sock.sendall(data)

    def request(self, method: str, **kw) -> bytes:
        msg = sip_request(method, dst_port=self.dst_port, src_host=self.src_host,
                          src_port=self.port, transport=self.transport, **kw)
        self.send(msg)
        return msg

    def _recv(self, timeout: float) -> Optional[bytes]:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            return self.sock.recv(65536)
        except (socket.timeout, ssl.SSLWantReadError):
            return None
        except ConnectionResetError:
            return b""

    def recv_message(self, timeout: float = 2.0) -> Optional[bytes]:
        """One framed SIP message, or None on timeout/EOF."""
        return read_sip_message(self.buf, self._recv, time.monotonic() + timeout)

    def recv_any(self, timeout: float = 1.0) -> Optional[bytes]:
        """Whatever arrives: bytes, b'' on EOF/reset, None on timeout."""
        if self.buf:
            data = bytes(self.buf)
            self.buf.clear()
            return data
        return self._recv(timeout)

    def close(self):
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --------------------------------------------------------------------------------------
# The database
# --------------------------------------------------------------------------------------

def db_query(db_path: Path, sql: str, params=()) -> list:
    """Rows as dicts, from a read-only connection (safe while the daemon writes)."""
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
    try:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute(sql, params).fetchall()]
    finally:
        con.close()


def summarize_rows(rows: list, limit: int = 10) -> str:
    keys = ("honey_id", "method", "transport_type", "source_ip", "source_port", "called_number",
            "user_agent")
    out = [str({k: r.get(k) for k in keys}) for r in rows[:limit]]
    if len(rows) > limit:
        out.append(f"... and {len(rows) - limit} more")
    return "\n".join(out) or "(no rows)"


# --------------------------------------------------------------------------------------
# The daemon
# --------------------------------------------------------------------------------------

P2P_FLAGS = {"--dht-port", "--dht-network", "-b", "--bootstrap", "-p", "--p2p", "--no-p2p",
             "--peer-to-peer", "--dht-no-rate-limit"}


class Daemon:
    """One `sentrypeer` process on loopback with its own db and data dir.

    Arguments: responsive (-r), tls (True: a TLS listener on a free port, False: --no-tls,
    None: neither flag),
    sip (a SIP listener on a free port, else nothing is passed: see extra args), extra
    command-line args, env (added to a SENTRYPEER_*-free environment).
    """

    def __init__(self, workdir: Path, *, responsive: bool = False, tls: Optional[bool] = False,
                 sip: bool = True, args: Iterable[str] = (), env: Optional[dict] = None,
                 db: Optional[Path] = None, data_dir: Optional[Path] = None,
                 db_flag: bool = True, data_dir_flag: bool = True,
                 sip_port: Optional[int] = None, tls_port: Optional[int] = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.db_path = Path(db) if db else self.workdir / "sentrypeer.db"
        self.data_dir = Path(data_dir) if data_dir else self.workdir / "data"
        self.sip_port = (sip_port or free_port()) if sip else None
        self.tls_port = (tls_port or free_port(udp=False)) if tls else None
        cmd = [str(sentrypeer_bin())]
        if db_flag:
            cmd += ["-f", str(self.db_path)]
        if data_dir_flag:
            cmd += ["--data-dir", str(self.data_dir)]
        if sip:
            cmd += ["--sip-listen", f"127.0.0.1:{self.sip_port}"]
        if tls is not None:
            cmd += ["-z", f"127.0.0.1:{self.tls_port}"] if tls else ["--no-tls"]
        if responsive:
            cmd.append("-r")
        args = [str(a) for a in args]
        # Peer to peer is on by default (UDP 4222, public bootstrap): tests keep it off unless
        # they configure it themselves.
        if not any(a.split("=")[0] in P2P_FLAGS for a in args) and \
                "SENTRYPEER_PEER_TO_PEER" not in (env or {}):
            cmd.append("--no-p2p")
        cmd += args
        self.cmd = cmd
        self.env = clean_env(env)
        self.proc: Optional[subprocess.Popen] = None
        self.stderr_lines: list = []
        self.stdout_lines: list = []
        self._ready = threading.Event()
        self._readers: list = []
        self.returncode: Optional[int] = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, wait_ready: bool = True) -> "Daemon":
        self._ready.clear()  # a restart waits for its own 'ready'
        self.proc = subprocess.Popen(self.cmd, env=self.env, cwd=self.workdir,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self._readers = [
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr_lines, True),
                             daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout_lines, False),
                             daemon=True),
        ]
        for t in self._readers:
            t.start()
        if wait_ready:
            self.wait_ready()
        return self

    def _pump(self, stream, sink: list, is_stderr: bool):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            sink.append(line)
            if is_stderr and READY_RE.search(line):
                self._ready.set()
        stream.close()

    def wait_ready(self, timeout: float = READY_TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._ready.wait(0.05):
                return
            if self.proc.poll() is not None:
                self._join_readers()
                pytest.fail(f"sentrypeer exited with {self.proc.returncode} before 'ready'.\n"
                            f"command: {self.cmd}\nstderr:\n{self.stderr}")
        pytest.fail(f"sentrypeer did not log 'ready' within {timeout}s.\ncommand: {self.cmd}\n"
                    f"stderr:\n{self.stderr}")

    def _join_readers(self):
        for t in self._readers:
            t.join(5)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def stderr(self) -> str:
        return "\n".join(self.stderr_lines)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig: int):
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT,
             expect_rc: Optional[int] = 0) -> int:
        """Sends `sig`, waits for exit, asserts the exit code (None: any) and no sanitizer
        report on stderr. Kills and fails on timeout."""
        assert self.proc is not None, "daemon was never started"
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            self._join_readers()
            pytest.fail(f"sentrypeer did not exit within {timeout}s after signal {sig}; killed."
                        f"\nstderr (tail):\n{self.stderr[-4000:]}")
        self._join_readers()
        self.returncode = rc
        for marker in ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer",
                       "terminate called"):
            assert marker not in self.stderr, f"{marker!r} on stderr:\n{self.stderr[-4000:]}"
        if expect_rc is not None:
            assert rc == expect_rc, (f"sentrypeer exited with {rc} (expected {expect_rc}) after "
                                     f"signal {sig}.\nstderr (tail):\n{self.stderr[-4000:]}")
        return rc

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        self._join_readers()

    def cpu_seconds(self) -> float:
        """utime + stime of the process (from /proc/PID/stat)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    # -- data --------------------------------------------------------------------------

    @property
    def node_id_file(self) -> Path:
        return self.data_dir / "node-id"

    def rows(self, where: str = "1", params=()) -> list:
        return db_query(self.db_path, f"SELECT * FROM honey WHERE {where} ORDER BY honey_id", params)

    def count(self, where: str = "1", params=()) -> int:
        try:
            return db_query(self.db_path, f"SELECT count(*) AS n FROM honey WHERE {where}",
                            params)[0]["n"]
        except sqlite3.OperationalError:  # db or table not created yet
            return 0

    def wait_for_rows(self, n: int, where: str = "1", params=(),
                      timeout: float = ROW_TIMEOUT) -> list:
        """Polls until at least n rows match, returns the matching rows. Fails on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if self.count(where, params) >= n:
                return self.rows(where, params)
            if time.monotonic() > deadline:
                try:
                    got = self.rows(where, params)
                    everything = self.rows()
                except sqlite3.OperationalError as e:
                    got, everything = [], []
                    print(f"db not readable: {e}")
                pytest.fail(f"expected >= {n} rows WHERE {where} {params} within {timeout}s, "
                            f"got {len(got)}.\nAll rows:\n{summarize_rows(everything)}\n"
                            f"daemon alive: {self.alive()}\nstderr (tail):\n{self.stderr[-3000:]}")
            time.sleep(0.02)

    def rows_with(self, needle: str, timeout: float = ROW_TIMEOUT, n: int = 1) -> list:
        """Waits for rows whose sip_message contains `needle` (e.g. a Call-ID)."""
        return self.wait_for_rows(n, "instr(sip_message, ?) > 0", (needle,), timeout)

    def barrier(self, src_host: str = "127.0.0.1") -> dict:
        """Sends a fresh UDP OPTIONS and waits until it is stored: everything the daemon
        received before it from the same socket had its chance to be stored too."""
        call_id = new_call_id()
        with UdpClient(self.sip_port, src_host=src_host) as c:
            c.request("OPTIONS", call_id=call_id, to_user="barrier")
            rows = self.rows_with(call_id)
        time.sleep(0.2)  # grace for events processed out of order by other threads
        return rows[0]

    def wait_json_lines(self, path: Path, n: int, timeout: float = ROW_TIMEOUT) -> list:
        return wait_for_lines(path, n, timeout, what=f"JSON log lines (stderr: {self.stderr[-2000:]})")


def wait_for_lines(path: Path, n: int, timeout: float, what: str = "lines") -> list:
    """Polls a text file until it holds at least n complete lines; returns them."""
    deadline = time.monotonic() + timeout
    while True:
        lines = []
        if path.exists():
            data = path.read_bytes()
            lines = [l.decode("utf-8") for l in data.split(b"\n")[:-1]]  # complete lines only
        if len(lines) >= n:
            return lines
        if time.monotonic() > deadline:
            pytest.fail(f"expected >= {n} {what} in {path} within {timeout}s, got {len(lines)}: "
                        f"{lines[:5]!r}")
        time.sleep(0.02)


def parse_json_ordered(line: str) -> "OrderedDict":
    return json.loads(line, object_pairs_hook=OrderedDict)


@pytest.fixture
def make_daemon(tmp_path):
    """Factory: make_daemon(**Daemon kwargs, start=True) -> started Daemon. At teardown every
    daemon still running gets SIGTERM and must exit 0 within the timeout (else: killed, and
    the test errors)."""
    daemons = []

    def factory(start: bool = True, wait_ready: bool = True, workdir: Optional[Path] = None,
                **kw) -> Daemon:
        d = Daemon(workdir or tmp_path / f"daemon{len(daemons)}", **kw)
        daemons.append(d)
        if start:
            d.start(wait_ready=wait_ready)
        return d

    yield factory
    problems = []
    for d in daemons:
        if d.proc is None or d.proc.poll() is not None:
            d.kill()
            continue
        d.proc.send_signal(signal.SIGTERM)
        try:
            rc = d.proc.wait(STOP_TIMEOUT)
            if rc != 0:
                problems.append(f"daemon {d.pid} exited {rc} at teardown; stderr tail:\n"
                                f"{d.stderr[-2000:]}")
        except subprocess.TimeoutExpired:
            problems.append(f"daemon {d.pid} ignored SIGTERM for {STOP_TIMEOUT}s; killed")
        d.kill()
    if problems:
        pytest.fail("\n".join(problems))


@pytest.fixture
def daemon(make_daemon):
    """A passive daemon (UDP/TCP SIP listener, no TLS)."""
    return make_daemon()


@pytest.fixture
def rdaemon(make_daemon):
    """A responsive (-r) daemon (UDP/TCP SIP listener, no TLS)."""
    return make_daemon(responsive=True)


@pytest.fixture
def version_string() -> str:
    res = run_binary(["-V"])
    assert res.returncode == 0, f"-V exited {res.returncode}: {res.stderr}"
    m = re.search(r"\d+\.\d+\.\d+\S*", res.stdout + res.stderr)
    assert m, f"no version number in -V output: {res.stdout!r} {res.stderr!r}"
    return m.group(0)


# --------------------------------------------------------------------------------------
# rsyslogd with a private socket and output file
# --------------------------------------------------------------------------------------

class Rsyslog:
    """`rsyslogd -n` reading its own unix socket (not /dev/log) and writing facility user
    to a file with the given template. Use as a context manager."""

    def __init__(self, exe: str, workdir: Path, template: str = "RSYSLOG_TraditionalFileFormat"):
        self.exe = exe
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.socket = self.workdir / "log.sock"
        self.logfile = self.workdir / "user.log"
        self.conf = self.workdir / "rsyslog.conf"
        self.conf.write_text(
            f'global(workDirectory="{self.workdir}")\n'
            'module(load="imuxsock" SysSock.Use="off")\n'
            f'input(type="imuxsock" Socket="{self.socket}" CreatePath="on" '
            'RateLimit.Interval="0")\n'
            f'user.* action(type="omfile" file="{self.logfile}" template="{template}")\n')
        self.proc: Optional[subprocess.Popen] = None
        self.output = self.workdir / "rsyslogd.out"

    def __enter__(self) -> "Rsyslog":
        out = open(self.output, "wb")
        self.proc = subprocess.Popen([self.exe, "-n", "-f", str(self.conf), "-i",
                                      str(self.workdir / "rsyslogd.pid")],
                                     stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        out.close()
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                pytest.fail(f"rsyslogd did not create {self.socket}: {self.output.read_text()}")
            time.sleep(0.02)
        return self

    def lines(self) -> list:
        if not self.logfile.exists():
            return []
        return self.logfile.read_text(errors="replace").splitlines()

    def wait_for(self, predicate, timeout: float = 10.0) -> list:
        deadline = time.monotonic() + timeout
        while True:
            lines = self.lines()
            if predicate(lines):
                return lines
            if time.monotonic() > deadline:
                pytest.fail(f"rsyslog file {self.logfile} never satisfied the condition; "
                            f"lines: {lines!r}; rsyslogd: {self.output.read_text()!r}")
            time.sleep(0.05)

    def __exit__(self, *exc):
        if self.proc:
            stop_process(self.proc)
