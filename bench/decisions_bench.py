#!/usr/bin/python3
"""CrowdSec decision stream benchmark (docs/BENCHMARKS.md, "CrowdSec decision stream").

    /usr/bin/python3 bench/decisions_bench.py [--bin build/release/src/sentrypeer]
        [--decisions 100000] [--keys 100] [--seconds 60] [--out DIR]

1. bench/fill_db.py makes a database with N distinct source IPs (198.18.0.0/15, recent),
   the daemon starts on it with the API, `--block-time 1d` (every IP blocked) and K bouncer
   keys, SIP off, no p2p (--api-max-per-ip above K: every bouncer connects from 127.0.0.1).
2. Startup answer: GET /v1/decisions/stream?startup=true, 7 times (different keys), timed
   from the request to the last byte of the body (HTTP/1.1 keep-alive connection, chunked);
   the body is parsed afterwards (not timed) and must hold N decisions. Target: <= 200 ms.
3. Delta polls: K keep-alive connections, one per key (each made its startup request
   first), each polling GET /v1/decisions/stream? once per second, spread evenly over the
   second, for S seconds. The daemon's CPU time (utime + stime from /proc/PID/stat) over
   the run / S = share of one core (the daemon's idle share over 10 s without requests is
   shown beside it). Target: <= 5%.
Prints a JSON summary; exit status 0 when both targets are met.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def get(conn: http.client.HTTPConnection, path: str, key: str) -> tuple:
    conn.request("GET", path, headers={"X-Api-Key": key})
    r = conn.getresponse()
    return r.status, r.read()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.environ.get("SENTRYPEER_BIN",
                                                    str(REPO / "build/release/src/sentrypeer")))
    ap.add_argument("--decisions", type=int, default=100_000)
    ap.add_argument("--keys", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    out = a.out or Path(tempfile.mkdtemp(prefix="sp-decisions-bench."))
    out.mkdir(parents=True, exist_ok=True)
    db, data = out / "bench.db", out / "data"
    fill = subprocess.run([sys.executable, str(REPO / "bench/fill_db.py"), "--bin", a.bin,
                           "--db", str(db), "--data-dir", str(data), "--numbers", "1",
                           "--ips", str(a.decisions)], capture_output=True, text=True,
                          timeout=600)
    if fill.returncode != 0:
        print(fill.stderr, file=sys.stderr)
        return 2
    keys = [f"bench-bouncer-key-{i:04d}" for i in range(a.keys)]
    (out / "keys").write_text("\n".join(keys) + "\n")
    port = free_port()
    cmd = [a.bin, "-f", str(db), "--data-dir", str(data), "-R", "--no-tls", "--no-p2p", "-a",
           "--api-listen", f"127.0.0.1:{port}", "--bouncer-key-file", str(out / "keys"),
           "--block-time", "1d", "--api-max-per-ip", str(a.keys + 16)]
    log = open(out / "daemon.log", "wb")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    result: dict = {"command": " ".join(cmd), "decisions": a.decisions, "keys": a.keys}
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                if get(c, "/health-check", "")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"daemon not ready: {(out / 'daemon.log').read_text()[-2000:]}")
            time.sleep(0.2)

        # 2. Startup answers.
        times, size = [], 0
        for i in range(7):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            c.connect()
            t0 = time.perf_counter()
            status, body = get(c, "/v1/decisions/stream?startup=true", keys[i % a.keys])
            times.append((time.perf_counter() - t0) * 1000)
            c.close()
            assert status == 200, (status, body[:200])
            doc = json.loads(body)
            n = len(doc["new"] or [])
            assert n == a.decisions, f"startup answer has {n} decisions, not {a.decisions}"
            size = len(body)
        result["startup_ms"] = {"min": round(min(times), 1), "median":
                                round(statistics.median(times), 1), "max": round(max(times), 1),
                                "all": [round(t, 1) for t in times]}
        result["startup_body_bytes"] = size

        # 3. Delta polls: K keep-alive connections, each key's cursor set by a startup.
        conns = []
        for k in keys:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            get(c, "/v1/decisions/stream?startup=true", k)
            conns.append(c)
        # The daemon's own idle cost over 10 s (no request), for comparison.
        idle0, ti = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(10)
        idle_pct = 100 * (cpu_seconds(proc.pid) - idle0) / (time.monotonic() - ti)
        polls, nonempty = 0, 0
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        step = 1.0 / a.keys
        next_at = t0
        end = t0 + a.seconds
        i = 0
        while True:
            now = time.monotonic()
            if now >= end:
                break
            if now < next_at:
                time.sleep(next_at - now)
            status, body = get(conns[i % a.keys], "/v1/decisions/stream?", keys[i % a.keys])
            assert status == 200, (status, body[:200])
            if body != b'{"new":null,"deleted":null}':
                nonempty += 1
            polls += 1
            i += 1
            next_at += step
        elapsed = time.monotonic() - t0
        cpu = cpu_seconds(proc.pid) - cpu0
        result["delta"] = {"polls": polls, "seconds": round(elapsed, 1),
                           "polls_per_s": round(polls / elapsed, 1),
                           "nonempty_answers": nonempty,
                           "daemon_cpu_s": round(cpu, 3),
                           "core_share_pct": round(100 * cpu / elapsed, 2),
                           "idle_core_share_pct": round(idle_pct, 2)}
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")),
                         "?")
        result["machine"] = f"{model}, {os.cpu_count()} cores, load {os.getloadavg()}"
        result["targets"] = {"startup_le_200ms": result["startup_ms"]["median"] <= 200,
                             "delta_le_5pct": result["delta"]["core_share_pct"] <= 5}
        print(json.dumps(result, indent=2))
        return 0 if all(result["targets"].values()) else 1
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


if __name__ == "__main__":
    sys.exit(main())
