#!/usr/bin/python3
"""Benchmarks of the nftables blocker (--nft), docs/BENCHMARKS.md "nftables blocker".

1. startup: a database of N distinct attacker addresses (default 100,000; bench/fill_db.py)
   is loaded into the sets at startup; reports the daemon's own log line (addresses, seconds
   from the index loaded to the commit), the time from process start to that line, and that
   the kernel's set holds them all (`nft list set`).
2. new attackers: R new source addresses per second (default 5,000/s for 10 s), one SIP
   INVITE each over UDP from its own address (one socket, IP_PKTINFO picks the source; the
   namespace routes 198.18.0.0/15 as local, so any address in it can send), into a daemon
   started with --nft on an empty database. Latency per address = when `nft monitor` showed
   its element - when its datagram was sent (end to end, kernel to kernel), plus the daemon's
   event-to-commit buckets (sentrypeer_nft_event_to_commit_bucket).

Runs in its own network namespace (it re-executes itself under `unshare -n`): it adds nft
tables and routes only there. Needs root, nft, curl. Bounded: every wait has a deadline.

    /usr/bin/python3 bench/nft_bench.py [--bin build/release/src/sentrypeer] \
        [--startup-ips 100000] [--rate 5000] [--duration 10] [--runs 3]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC_NET = ipaddress.IPv4Network("198.18.0.0/15")  # RFC 2544 benchmarking, local in the netns
DAEMON_IP = "203.0.113.1"
SIP_PORT = 5060


def log(msg: str):
    print(msg, file=sys.stderr, flush=True)


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()
    return (f"{os.cpu_count()} cores ({cpu}), kernel {platform.release()}, "
            f"load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")


class Daemon:
    def __init__(self, binary: str, workdir: Path, db: Path, args: list):
        self.cmd = [binary, "-f", str(db), "--data-dir", str(workdir / "data"), "--no-p2p",
                    "--no-tls", "--sip-listen", f"0.0.0.0:{SIP_PORT}", "--nft", "--api",
                    *args]
        self.lines: list = []
        self.times: list = []
        env = {k: v for k, v in os.environ.items() if not k.startswith("SENTRYPEER_")}
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, env=env)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stderr:
            self.times.append(time.monotonic())
            self.lines.append(line.rstrip("\n"))

    def wait_line(self, pattern: str, timeout: float):
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, line in enumerate(list(self.lines)):
                m = rx.search(line)
                if m:
                    return m, self.times[i]
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        raise SystemExit(f"nft_bench: no line matching {pattern!r} within {timeout}s "
                         f"(rc={self.proc.poll()}):\n" + "\n".join(self.lines[-20:]))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.reader.join(5)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (the kernel's share of nft's commit is
    in the system time)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metrics() -> str:
    return subprocess.run(["curl", "-s", "--max-time", "10", "http://127.0.0.1:8082/metrics"],
                          capture_output=True, text=True, timeout=15).stdout


def set_size(set_name: str) -> int:
    out = subprocess.run(["nft", "-j", "list", "set", "inet", "sentrypeer", set_name],
                         capture_output=True, text=True, timeout=60).stdout
    for item in json.loads(out)["nftables"]:
        if "set" in item:
            return len(item["set"].get("elem", []))
    return 0


def bench_startup(binary: str, ips: int, runs: int) -> list:
    results = []
    with tempfile.TemporaryDirectory(prefix="nft_bench_") as tmp:
        work = Path(tmp)
        db = work / "bench.db"
        log(f"startup: filling a database with {ips} addresses ...")
        fill = subprocess.run([sys.executable, str(REPO / "bench/fill_db.py"), "--bin", binary,
                               "--db", str(db), "--data-dir", str(work / "data"), "--ips",
                               str(ips), "--numbers", "1000"],
                              capture_output=True, text=True, timeout=600)
        if fill.returncode != 0:
            raise SystemExit(f"nft_bench: fill_db failed: {fill.stderr}")
        for run in range(runs):
            d = Daemon(binary, work, db, [])
            try:
                m, at = d.wait_line(r"nft: table inet \S+ \(.*\): (\d+) addresses .* in "
                                    r"([0-9.]+) s \(nft ([0-9.]+) s\)", 120)
                cpu_s = cpu_seconds(d.proc.pid)
                ready_m, ready_at = d.wait_line(r"\bready\b", 60)
                store_m, _ = d.wait_line(r"store: .* indexed in ([0-9.]+) s", 5)
                in_set = set_size("ipv4_addr")
                results.append({
                    "run": run + 1, "addresses": int(m.group(1)),
                    "index_loaded_to_commit_s": float(m.group(2)),
                    "of_which_nft_s": float(m.group(3)),
                    "process_cpu_s_at_commit": round(cpu_s, 3),
                    "index_load_s": float(store_m.group(1)),
                    "process_start_to_commit_s": round(at - d.started, 3),
                    "process_start_to_ready_s": round(ready_at - d.started, 3),
                    "in_kernel_set": in_set,
                })
                log(f"startup run {run + 1}: {results[-1]}")
            finally:
                d.stop()
    return results


class Monitor:
    """`nft monitor` on the sets: when each address's element was last added."""

    def __init__(self):
        self.seen: dict = {}
        self.proc = subprocess.Popen(["nft", "monitor", "new", "elements"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        time.sleep(0.3)  # subscribed before the first packet

    def _read(self):
        rx = re.compile(r"(\d+\.\d+\.\d+\.\d+)")
        for line in self.proc.stdout:
            t = time.monotonic()
            if not line.startswith("add element"):
                continue
            for ip in rx.findall(line.split("{", 1)[-1]):
                self.seen.setdefault(ip, t)

    def stop(self):
        self.proc.kill()
        self.proc.wait(10)
        self.thread.join(5)


def pct(values: list, p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))] if s else float("nan")


def bench_new_attackers(binary: str, rate: int, duration: float) -> dict:
    total = int(rate * duration)
    if total > SRC_NET.num_addresses - 2:
        raise SystemExit("nft_bench: rate x duration exceeds 198.18.0.0/15")
    with tempfile.TemporaryDirectory(prefix="nft_bench_") as tmp:
        work = Path(tmp)
        d = Daemon(binary, work, work / "new.db", ["--max-age", "1h"])
        try:
            d.wait_line(r"\bready\b", 60)
            mon = Monitor()
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_IP, 15, 1)  # IP_FREEBIND
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            base = int(SRC_NET.network_address) + 1
            sent_at: dict = {}
            tick = 0.01
            per_tick = max(1, int(rate * tick))
            t0 = time.monotonic()
            i = 0
            while i < total and time.monotonic() - t0 < duration * 3:
                due = t0 + (i // per_tick) * tick
                now = time.monotonic()
                if due > now:
                    time.sleep(due - now)
                for _ in range(min(per_tick, total - i)):
                    src = str(ipaddress.IPv4Address(base + i))
                    msg = (f"INVITE sip:1000@{DAEMON_IP} SIP/2.0\r\nVia: SIP/2.0/UDP {src}:5060;"
                           f"branch=z9hG4bK{i}\r\nFrom: <sip:a@{src}>;tag={i}\r\nTo: <sip:1000@"
                           f"{DAEMON_IP}>\r\nCall-ID: {i}@{src}\r\nCSeq: 1 INVITE\r\n"
                           f"Content-Length: 0\r\n\r\n").encode()
                    # struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr; }
                    pktinfo = (b"\0\0\0\0" + socket.inet_aton(src) + b"\0\0\0\0")
                    sock.sendmsg([msg], [(socket.SOL_IP, 8, pktinfo)],  # IP_PKTINFO
                                 0, (DAEMON_IP, SIP_PORT))
                    sent_at[src] = time.monotonic()
                    i += 1
            send_s = time.monotonic() - t0
            deadline = time.monotonic() + 30
            while len(mon.seen) < i and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.5)
            mon.stop()
            lat = [mon.seen[ip] - t for ip, t in sent_at.items() if ip in mon.seen]
            text = metrics()
            buckets = {m.group(1): int(m.group(2)) for m in re.finditer(
                r'sentrypeer_nft_event_to_commit_bucket\{le="([^"]+)"\} (\d+)', text)}
            fam = {}
            for name in ("nft_transactions_total", "nft_errors_total", "nft_adds_total",
                         "nft_subscription_resyncs_total", "nft_full_loads_total"):
                m = re.search(rf"^sentrypeer_{name} (\S+)$", text, re.M)
                fam[name] = float(m.group(1)) if m else None
            in_set = set_size("ipv4_addr")
            return {
                "sent": i, "send_seconds": round(send_s, 2), "rate_achieved": round(i / send_s),
                "seen_by_monitor": len(lat), "in_kernel_set": in_set,
                "latency_p50_s": round(pct(lat, 50), 3), "latency_p95_s": round(pct(lat, 95), 3),
                "latency_p99_s": round(pct(lat, 99), 3), "latency_max_s": round(max(lat), 3)
                if lat else None,
                "daemon_event_to_commit_buckets": buckets, **fam,
            }
        finally:
            d.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.environ.get(
        "SENTRYPEER_BIN", str(REPO / "build/release/src/sentrypeer")))
    ap.add_argument("--startup-ips", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate", type=int, default=5000)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--skip-startup", action="store_true")
    ap.add_argument("--skip-new", action="store_true")
    ap.add_argument("--in-netns", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("nft_bench: needs root (network namespace, nftables)")
    for tool in ("nft", "curl", "unshare", "ip"):
        if shutil.which(tool) is None:
            raise SystemExit(f"nft_bench: {tool} not found")
    if not a.in_netns:
        return subprocess.run(["unshare", "-n", sys.executable, *sys.argv, "--in-netns"],
                              timeout=3600).returncode
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "addr", "add", f"{DAEMON_IP}/32", "dev", "lo"], check=True)
    subprocess.run(["ip", "route", "add", "local", str(SRC_NET), "dev", "lo"], check=True)
    out = {"machine": machine(), "binary": a.bin,
           "revision": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                      capture_output=True, text=True).stdout.strip()}
    if not a.skip_startup:
        out["startup"] = bench_startup(a.bin, a.startup_ips, a.runs)
    if not a.skip_new:
        out["new_attackers"] = [bench_new_attackers(a.bin, a.rate, a.duration)
                                for _ in range(a.runs)]
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
