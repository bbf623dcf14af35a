#!/usr/bin/python3
"""Peer-to-peer benchmark: 20 daemons in a private OpenDHT network on loopback.

Not a test: it measures and prints a markdown report (also written to --out).

- Topology: N daemons (default 20), each with the REST API (-a, distinct ports), --no-tls,
  its own DHT port, one private --dht-network id, --dht-no-rate-limit (every loopback peer
  is one IP for OpenDHT's per-IP limit), bootstrapped to one or two earlier nodes. The
  "probed" nodes (default 4, spread over the chain) listen for SIP on distinct UDP ports;
  all others run -R (DHT relay, no SIP listener).
- Idle: after the network formed, wait --idle-warmup seconds (30), then CPU (utime+stime
  from /proc/PID/stat) over --idle-window seconds (30) and VmRSS per node.
- Latency: --probes (50) sequential SIP INVITEs, each with a unique called number, rotating
  over the probed nodes; for each, the time from sending the probe to the row (origin
  'peer') in every other node's database (polled through one read-only SQLite connection
  per node, every --poll-ms ms). p50/p95/max over all (probe, node) pairs, and per probe
  the time until the *last* node has it.
- Load: --rate (100) events/s for --load-seconds (20) spread over the probed nodes (each
  a unique called number, so none is held back by the "one value per source IP and number
  per 10 minutes" publishing policy); CPU and VmRSS per node over that window, and how many
  of the events reached each other node within --drain seconds after the load.
- RSS breakdown of one relay and one probed node (idle and after the load) from
  /proc/PID/smaps_rollup and the largest mappings of /proc/PID/smaps.
- --perf: perf record (DWARF call graphs) of one relay and one SIP node during the load,
  summarised by library and by symbol.

  /usr/bin/python3 bench/p2p_bench.py                     # the full run (~3 minutes)
  /usr/bin/python3 bench/p2p_bench.py --nodes 5 --probes 10 --idle-warmup 5 --idle-window 5 \
      --load-seconds 5                                    # a quick check
  SENTRYPEER_BIN=build/h-p2p/src/sentrypeer /usr/bin/python3 bench/p2p_bench.py

Targets: p95 <= 1 s; idle RSS <= 20 MB per daemon.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
_used_ports: set = set()


# --------------------------------------------------------------------------------------
# Machine and process
# --------------------------------------------------------------------------------------

def machine_info() -> dict:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(OSError):
        m = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        mem = f"{int(m.group(1)) / 1024 / 1024:.1f} GiB" if m else mem
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(), "memory": mem,
            "python": platform.python_version()}


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def cpu_times() -> list:
    return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]


def steal_percent(before: list, after: list) -> float:
    d = [b - a for a, b in zip(before, after)]
    return 100.0 * d[7] / max(1, sum(d))


def busy_percent(before: list, after: list) -> float:
    """Machine-wide non-idle share (all processes, not only ours)."""
    d = [b - a for a, b in zip(before, after)]
    return 100.0 * (sum(d) - d[3] - d[4]) / max(1, sum(d))


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status(pid: int, key: str) -> int:
    m = re.search(rf"^{key}:\s+(\d+)", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(m.group(1)) if m else 0


def smaps_rollup(pid: int) -> dict:
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        k, _, v = line.partition(":")
        with contextlib.suppress(ValueError):
            out[k.strip()] = int(v.split()[0])
    return out


def top_mappings(pid: int, n: int = 10) -> list:
    """Largest contributors to RSS: (kB, name), file mappings summed per file."""
    sums: dict = {}
    name = None
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        parts = line.split()
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            name = parts[5] if len(parts) > 5 else "[anon]"
            name = os.path.basename(name) if name.startswith("/") else name
        elif parts and parts[0] == "Rss:":
            sums[name] = sums.get(name, 0) + int(parts[1])
    return sorted(((kb, nm) for nm, kb in sums.items()), reverse=True)[:n]


# --------------------------------------------------------------------------------------
# Ports, SIP
# --------------------------------------------------------------------------------------

def free_port(kind: int) -> int:
    """A port free for `kind` (SOCK_STREAM / SOCK_DGRAM) on 0.0.0.0, never handed out twice."""
    while True:
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.bind(("0.0.0.0", 0))
            port = s.getsockname()[1]
        finally:
            s.close()
        if port in _used_ports:
            continue
        other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
        o = socket.socket(socket.AF_INET, other)
        try:
            o.bind(("0.0.0.0", port))
        except OSError:
            continue
        finally:
            o.close()
        _used_ports.add(port)
        return port


def invite(dst_port: int, src_port: int, number: str) -> bytes:
    branch = "z9hG4bK" + uuid.uuid4().hex[:16]
    lines = [
        f"INVITE sip:{number}@127.0.0.1:{dst_port} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{src_port};branch={branch};rport",
        "Max-Forwards: 70",
        f"From: \"bench\" <sip:bench@127.0.0.1>;tag={uuid.uuid4().hex[:8]}",
        f"To: <sip:{number}@127.0.0.1>",
        f"Call-ID: {uuid.uuid4().hex}@p2p.bench",
        "CSeq: 1 INVITE",
        f"Contact: <sip:bench@127.0.0.1:{src_port}>",
        "User-Agent: p2p-bench",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


STATUS_TIMES: list = []  # seconds taken by each GET /p2p/status


def http_json(port: int, path: str, timeout: float = 30):
    t0 = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        body = json.loads(r.read())
    if path == "/p2p/status":
        STATUS_TIMES.append(time.monotonic() - t0)
    return body


# --------------------------------------------------------------------------------------
# Nodes
# --------------------------------------------------------------------------------------

def metric(port: int, name: str, labels: str = "") -> float:
    """One sample of the daemon's /metrics (0 when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        text = r.read().decode()
    m = re.search(rf"^sentrypeer_{name}{re.escape(labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def put_progress(nodes: list) -> dict:
    """Across the given nodes: puts confirmed/failed and events waiting in the p2p sink."""
    out = {"sent": 0, "failed": 0, "queued": 0}
    for n in nodes:
        st = n.status()
        out["sent"] += st["events_sent"]
        out["failed"] += st["events_put_failed"]
        out["queued"] += int(metric(n.api_port, "sink_queue_depth", '{sink="p2p"}'))
    return out


class Node:
    def __init__(self, binary: Path, workdir: Path, idx: int, network: int, probed: bool,
                 bootstrap: list):
        self.idx = idx
        self.probed = probed
        self.workdir = workdir / f"node{idx:02d}"
        self.workdir.mkdir(parents=True)
        self.db = self.workdir / "sentrypeer.db"
        self.api_port = free_port(socket.SOCK_STREAM)
        self.dht_port = free_port(socket.SOCK_DGRAM)
        self.sip_port = free_port(socket.SOCK_DGRAM) if probed else None
        self.bootstrap = bootstrap
        cmd = [str(binary), "-f", str(self.db), "--data-dir", str(self.workdir / "data"),
               "--no-tls", "-a", "--api-listen", f"127.0.0.1:{self.api_port}",
               "--dht-port", str(self.dht_port), "--dht-network", str(network),
               "--dht-no-rate-limit"]
        if probed:
            cmd += ["--sip-listen", f"127.0.0.1:{self.sip_port}"]
        else:
            cmd.append("-R")
        self.cmd = cmd
        self.proc = None
        self.con = None
        self.last_id = 0
        self.log = open(self.workdir / "stderr.log", "wb")

    def start(self, bootstrap_ports: list):
        cmd = list(self.cmd)
        for p in bootstrap_ports:
            cmd += ["-b", f"127.0.0.1:{p}"]
        self.cmd = cmd
        env = {k: v for k, v in os.environ.items() if not k.startswith("SENTRYPEER_")}
        self.proc = subprocess.Popen(cmd, cwd=self.workdir, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=self.log)

    def wait_ready(self, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node {self.idx} exited {self.proc.returncode}: "
                                   f"{(self.workdir / 'stderr.log').read_text()[-2000:]}")
            with contextlib.suppress(OSError, ValueError):
                http_json(self.api_port, "/p2p/status")
                return
            time.sleep(0.05)
        raise RuntimeError(f"node {self.idx} not ready within {timeout}s")

    def status(self) -> dict:
        return http_json(self.api_port, "/p2p/status")

    def new_peer_rows(self) -> list:
        """(honey_id, called_number) of peer rows added since the last call."""
        if self.con is None:
            if not self.db.exists():
                return []
            self.con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=1)
        try:
            rows = self.con.execute(
                "SELECT honey_id, called_number FROM honey WHERE honey_id > ? AND origin = 'peer'"
                " ORDER BY honey_id", (self.last_id,)).fetchall()
        except sqlite3.OperationalError:
            return []
        if rows:
            self.last_id = rows[-1][0]
        return rows

    def count_numbers(self, numbers: set) -> int:
        got = 0
        for (n,) in self.con.execute("SELECT called_number FROM honey WHERE origin = 'peer'"):
            if n in numbers:
                got += 1
        return got

    def stop(self):
        if self.con is not None:
            self.con.close()
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


def check_alive(nodes: list, phase: str):
    dead = [n for n in nodes if n.proc.poll() is not None]
    if dead:
        details = "\n".join(
            f"node {n.idx} exited {n.proc.returncode}; stderr tail:\n"
            + (n.workdir / "stderr.log").read_text(errors="replace")[-1500:] for n in dead[:3])
        raise RuntimeError(f"{len(dead)} daemon(s) died before/during {phase}:\n{details}")


RSS_KEYS = ("Rss", "Pss", "Pss_Anon", "Pss_File", "Shared_Clean", "Private_Clean",
            "Private_Dirty", "Anonymous")


def rss_snapshots(nodes: list, probed_idx: list) -> list:
    """smaps_rollup and the largest mappings of the first relay and the first SIP node."""
    out = []
    relays = [i for i in range(len(nodes)) if i not in probed_idx]
    for label, i in ((("relay", relays[0]),) if relays else ()) + (("SIP node", probed_idx[0]),):
        pid = nodes[i].proc.pid
        out.append((label, i, smaps_rollup(pid), top_mappings(pid, 8)))
    return out


def pct(values: list, p: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def main() -> int:
    ap = argparse.ArgumentParser(description="peer-to-peer benchmark (20 daemons on loopback)")
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--probed", type=int, default=4, help="nodes with a SIP listener")
    ap.add_argument("--probes", type=int, default=50)
    ap.add_argument("--probe-timeout", type=float, default=10.0)
    ap.add_argument("--poll-ms", type=float, default=10.0)
    ap.add_argument("--idle-warmup", type=float, default=30.0)
    ap.add_argument("--idle-window", type=float, default=30.0)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--load-seconds", type=float, default=20.0)
    ap.add_argument("--drain", type=float, default=60.0)
    ap.add_argument("--network", type=int, default=None, help="private DHT network id")
    ap.add_argument("--out", type=Path, default=None, help="also write the report here")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--perf", action="store_true",
                    help="perf record one relay and one SIP node during the load")
    args = ap.parse_args()

    binary = Path(os.environ.get("SENTRYPEER_BIN", REPO / "build/release/src/sentrypeer")).resolve()
    if not os.access(binary, os.X_OK):
        sys.exit(f"no daemon binary at {binary} (build it or set SENTRYPEER_BIN)")
    network = args.network or random.SystemRandom().randrange(10_000, 2**31)
    assert network != 0, "never the public network"
    work = Path(tempfile.mkdtemp(prefix="p2p-bench-"))
    info = machine_info()
    report = []

    def say(line=""):
        print(line, flush=True)
        report.append(line)

    probed_idx = sorted({round(i * (args.nodes - 1) / max(1, args.probed - 1))
                         for i in range(args.probed)})
    nodes = [Node(binary, work, i, network, i in probed_idx, []) for i in range(args.nodes)]
    rng = random.Random(network)
    try:
        # Node 0 bootstraps to node 1 (started next); node i to i-1 and one random earlier.
        t_start = time.monotonic()
        for i, n in enumerate(nodes):
            if i == 0:
                bs = [nodes[1].dht_port] if len(nodes) > 1 else []
            else:
                bs = [nodes[i - 1].dht_port]
                if i >= 2:
                    bs.append(nodes[rng.randrange(0, i - 1)].dht_port)
            n.start(bs)
        for n in nodes:
            n.wait_ready()
        # Formation: every node knows most of the network (the routing table holds them all
        # in a network of 20).
        want = min(args.nodes - 1, 8)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            peers = [n.status()["total_peers"] for n in nodes]
            if min(peers) >= want:
                break
            time.sleep(0.5)
        t_formed = time.monotonic() - t_start
        peers = [n.status()["total_peers"] for n in nodes]
        good = [n.status()["good_peers"] for n in nodes]

        say(f"- binary: `{binary}`; {args.nodes} daemons, probed (SIP) nodes {probed_idx}, "
            f"others `-R`; network id {network}")
        say(f"- network formed (every node >= {want} peers) after {t_formed:.1f} s; "
            f"total_peers min/median/max {min(peers)}/{statistics.median(peers)}/{max(peers)}, "
            f"good_peers min/median/max {min(good)}/{statistics.median(good)}/{max(good)}")

        # ---- cold: the first probe right after formation -----------------------------------
        # A node's first put waits for OpenDHT's search of the key to complete; later puts
        # reuse it (the node's own listen keeps it warm).
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        src_port = sock.getsockname()[1]
        for n in nodes:
            n.new_peer_rows()
        cold = {}
        origin = nodes[probed_idx[0]]
        number = f"66{network % 1000:03d}000000"
        t0 = time.monotonic()
        sock.sendto(invite(origin.sip_port, src_port, number), ("127.0.0.1", origin.sip_port))
        while len(cold) < args.nodes - 1 and time.monotonic() - t0 < args.probe_timeout:
            for n in nodes:
                if n is not origin and n.idx not in cold:
                    if any(num == number for _, num in n.new_peer_rows()):
                        cold[n.idx] = time.monotonic() - t0
            time.sleep(args.poll_ms / 1000)
        if cold:
            say(f"- first probe right after formation (cold key search at node {origin.idx}): "
                f"reached {len(cold)}/{args.nodes - 1} nodes, median "
                f"{statistics.median(cold.values()) * 1000:.0f} ms, last "
                f"{max(cold.values()) * 1000:.0f} ms")

        # ---- idle ------------------------------------------------------------------------
        time.sleep(max(0.0, args.idle_warmup - (time.monotonic() - t_start)))
        c0 = {n.idx: proc_cpu(n.proc.pid) for n in nodes}
        m0 = cpu_times()
        time.sleep(args.idle_window)
        m1 = cpu_times()
        check_alive(nodes, 'idle')
        idle_cpu = {n.idx: 100 * (proc_cpu(n.proc.pid) - c0[n.idx]) / args.idle_window
                    for n in nodes}
        idle_rss = {n.idx: proc_status(n.proc.pid, "VmRSS") for n in nodes}
        idle_snaps = rss_snapshots(nodes, probed_idx)
        threads = {n.idx: proc_status(n.proc.pid, "Threads") for n in nodes}
        rss_mb = [v / 1024 for v in idle_rss.values()]
        say(f"- idle ({args.idle_warmup:.0f} s after start, CPU over the next "
            f"{args.idle_window:.0f} s; machine busy {busy_percent(m0, m1):.0f}%, steal "
            f"{steal_percent(m0, m1):.1f}%, load {loadavg()}):")
        say(f"  - CPU per daemon: mean {statistics.mean(idle_cpu.values()):.2f}%, max "
            f"{max(idle_cpu.values()):.2f}% of one core; all {args.nodes} together "
            f"{sum(idle_cpu.values()):.1f}%")
        say(f"  - VmRSS per daemon: min {min(rss_mb):.1f} MiB, median "
            f"{statistics.median(rss_mb):.1f} MiB, max {max(rss_mb):.1f} MiB "
            f"(relays median {statistics.median([idle_rss[i] / 1024 for i in idle_rss if i not in probed_idx]):.1f}, "
            f"SIP nodes median {statistics.median([idle_rss[i] / 1024 for i in probed_idx]):.1f}); "
            f"threads per daemon {statistics.median(threads.values()):.0f}")

        # ---- latency ---------------------------------------------------------------------
        for n in nodes:
            n.new_peer_rows()  # open connections, skip anything old
        lat_all, lat_last, misses = [], [], 0
        for k in range(args.probes):
            origin = nodes[probed_idx[k % len(probed_idx)]]
            number = f"77{network % 1000:03d}{k:06d}"
            others = [n for n in nodes if n is not origin]
            seen = {}
            t0 = time.monotonic()
            sock.sendto(invite(origin.sip_port, src_port, number), ("127.0.0.1", origin.sip_port))
            while len(seen) < len(others) and time.monotonic() - t0 < args.probe_timeout:
                for n in others:
                    if n.idx in seen:
                        continue
                    for _, num in n.new_peer_rows():
                        if num == number:
                            seen[n.idx] = time.monotonic() - t0
                time.sleep(args.poll_ms / 1000)
            misses += len(others) - len(seen)
            lat_all += list(seen.values())
            if len(seen) == len(others):
                lat_last.append(max(seen.values()))
            time.sleep(0.05)
        check_alive(nodes, 'latency')
        say(f"- latency, probe -> row in every other node's database ({args.probes} probes x "
            f"{args.nodes - 1} nodes, polled every {args.poll_ms:.0f} ms):")
        say(f"  - per (probe, node): p50 {pct(lat_all, 50) * 1000:.0f} ms, p95 "
            f"{pct(lat_all, 95) * 1000:.0f} ms, max {max(lat_all) * 1000:.0f} ms; "
            f"missing after {args.probe_timeout:.0f} s: {misses}")
        if lat_last:
            say(f"  - until the last node has it: p50 {pct(lat_last, 50) * 1000:.0f} ms, p95 "
                f"{pct(lat_last, 95) * 1000:.0f} ms, max {max(lat_last) * 1000:.0f} ms")

        # ---- load ------------------------------------------------------------------------
        for n in nodes:
            n.new_peer_rows()
        st0 = {n.idx: n.status() for n in nodes}
        c0 = {n.idx: proc_cpu(n.proc.pid) for n in nodes}
        m0 = cpu_times()
        t_c0 = time.monotonic()
        perfs = []
        if args.perf:
            for label, i in (("relay", next(i for i in range(args.nodes) if i not in probed_idx)),
                             ("SIP node", probed_idx[0])):
                out = work / f"perf-node{i}.data"
                perfs.append((label, i, out, subprocess.Popen(
                    ["perf", "record", "-q", "-F", "199", "--call-graph", "dwarf,16384", "-p", str(nodes[i].proc.pid),
                     "-o", str(out), "--", "sleep", str(args.load_seconds)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
        t0 = time.monotonic()
        total = int(args.rate * args.load_seconds)
        sent_numbers: dict = {i: set() for i in probed_idx}
        for k in range(total):
            target = t0 + k / args.rate
            delay = target - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            origin = nodes[probed_idx[k % len(probed_idx)]]
            number = f"88{network % 1000:03d}{k:07d}"
            sent_numbers[origin.idx].add(number)
            sock.sendto(invite(origin.sip_port, src_port, number),
                        ("127.0.0.1", origin.sip_port))
        load_s = time.monotonic() - t0
        c1 = {n.idx: proc_cpu(n.proc.pid) for n in nodes}
        m1 = cpu_times()
        elapsed = time.monotonic() - t_c0
        check_alive(nodes, 'load')
        load_cpu = {i: 100 * (c1[i] - c0[i]) / elapsed for i in c1}
        sip_nodes = [nodes[i] for i in probed_idx]
        at_end = put_progress(sip_nodes)
        load_rss = {n.idx: proc_status(n.proc.pid, "VmRSS") for n in nodes}
        machine_busy = busy_percent(m0, m1)
        machine_steal = steal_percent(m0, m1)
        load_avg = loadavg()
        # Delivery: wait until nothing new arrives for 3 s or --drain expires.
        all_numbers = set().union(*sent_numbers.values())
        t_drain = time.monotonic()
        quiet_since, deadline = t_drain, t_drain + args.drain
        while time.monotonic() < deadline and time.monotonic() - quiet_since < 5:
            if any(n.new_peer_rows() for n in nodes):
                quiet_since = time.monotonic()
            time.sleep(0.2)
        drain_s = time.monotonic() - t_drain
        after_drain = put_progress(sip_nodes)
        delivered = {}
        for n in nodes:
            expected = len(all_numbers) - len(sent_numbers.get(n.idx, ()))
            delivered[n.idx] = (n.count_numbers(all_numbers), expected)
        STATUS_TIMES.clear()
        st1 = {n.idx: n.status() for n in nodes}
        status_after_load = max(STATUS_TIMES)
        sent_put = sum(st1[i]["events_sent"] - st0[i]["events_sent"] for i in probed_idx)
        not_shared = sum(st1[i]["events_not_shared_rate_limited"]
                         - st0[i]["events_not_shared_rate_limited"] for i in probed_idx)
        put_failed = sum(st1[i]["events_put_failed"] - st0[i]["events_put_failed"]
                         for i in probed_idx)
        ratios = [g / e for g, e in delivered.values() if e]
        lcpu_r = [load_cpu[i] for i in load_cpu if i not in probed_idx]
        lcpu_p = [load_cpu[i] for i in probed_idx]
        say(f"- load: {total} INVITEs at {args.rate:.0f}/s over {load_s:.1f} s, spread over "
            f"the {len(probed_idx)} SIP nodes (machine busy {machine_busy:.0f}%, steal "
            f"{machine_steal:.1f}%, load {load_avg}):")
        say(f"  - CPU per daemon: relays mean {statistics.mean(lcpu_r):.1f}% max "
            f"{max(lcpu_r):.1f}%; SIP nodes mean {statistics.mean(lcpu_p):.1f}% max "
            f"{max(lcpu_p):.1f}% of one core; all {args.nodes} together "
            f"{sum(load_cpu.values()):.0f}% (the machine has {os.cpu_count()} CPUs = "
            f"{100 * os.cpu_count()}%)")
        lr = [v / 1024 for v in load_rss.values()]
        say(f"  - VmRSS per daemon at the end: min {min(lr):.1f} MiB, median "
            f"{statistics.median(lr):.1f} MiB, max {max(lr):.1f} MiB")
        base_sent = sum(st0[i]["events_sent"] for i in probed_idx)
        base_failed = sum(st0[i]["events_put_failed"] for i in probed_idx)
        say(f"  - puts (SIP nodes): at the end of the load {at_end['sent'] - base_sent} "
            f"confirmed, {at_end['failed'] - base_failed} failed, {at_end['queued']} events "
            f"still queued for the p2p sink; after the drain ({drain_s:.0f} s) {sent_put} "
            f"confirmed, {put_failed} failed, {after_drain['queued']} queued; {not_shared} "
            f"held back by the put rate cap")
        say(f"  - delivered to each other node by the end of the drain: min "
            f"{min(ratios) * 100:.1f}%, median {statistics.median(ratios) * 100:.1f}%")
        rej = {}
        for i in st1:
            for r, v in st1[i]["values_rejected"].items():
                d = v - st0[i]["values_rejected"].get(r, 0)
                if d:
                    rej[r] = rej.get(r, 0) + d
        say(f"  - values rejected during the load (all nodes): {rej or 'none'}")
        say(f"  - slowest GET /p2p/status right after the drain: {status_after_load * 1000:.0f} ms")

        for label, i, out, proc in perfs:
            proc.wait(60)
            rep = subprocess.run(["perf", "report", "-i", str(out), "--no-children", "--stdio",
                                  "--sort", "dso", "-g", "none", "--percent-limit", "3"],
                                 capture_output=True, text=True, timeout=300)
            dsos = [l.strip() for l in rep.stdout.splitlines() if re.match(r"^\s+\d", l)]
            rep = subprocess.run(["perf", "report", "-i", str(out), "--no-children", "--stdio",
                                  "--sort", "symbol", "-g", "none", "--percent-limit", "2"],
                                 capture_output=True, text=True, timeout=300)
            syms = [re.sub(r"\s+", " ", l.strip()) for l in rep.stdout.splitlines()
                    if re.match(r"^\s+\d", l)]
            say(f"- perf during the load, {label} node {i}: by library: " + "; ".join(dsos))
            say("  - top symbols (self): " + "; ".join(syms[:12]))

        # ---- RSS breakdown ---------------------------------------------------------------
        for when, snaps in (("idle", idle_snaps), ("after the load", rss_snapshots(nodes, probed_idx))):
            for label, i, r, top in snaps:
                say(f"- RSS breakdown {when}, {label} node {i} (smaps_rollup, kB): "
                    + ", ".join(f"{k} {r.get(k, 0)}" for k in RSS_KEYS))
                say("  - largest mappings (Rss kB): " + ", ".join(f"{nm} {kb}" for kb, nm in top))
        say(f"- machine: {info['nproc']} CPUs, {info['cpu']}, kernel {info['kernel']}, "
            f"{info['memory']} RAM")
        if args.out:
            args.out.write_text("\n".join(report) + "\n")
    except Exception:
        args.keep = True
        raise
    finally:
        for n in nodes:
            with contextlib.suppress(Exception):
                n.stop()
        rcs = [n.proc.returncode for n in nodes if n.proc]
        if any(rc != 0 for rc in rcs):
            print(f"WARNING: exit codes {rcs}", file=sys.stderr)
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
