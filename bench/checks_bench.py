#!/usr/bin/python3
"""Latency of the batch checks and of an APIBAN walk against a filled database
(bench/fill_db.py: 100,000 numbers, 50,000 IPs by default).

    /usr/bin/python3 bench/fill_db.py --bin build/release/src/sentrypeer --db /tmp/c/bench.db \
        --data-dir /tmp/c/data
    /usr/bin/python3 bench/checks_bench.py --bin build/release/src/sentrypeer \
        --db /tmp/c/bench.db --data-dir /tmp/c/data [--rounds 20]

Starts the daemon (API on a free loopback port, --bouncer-key), then per round: one
POST /numbers/check with 10,000 numbers (half stored, spelt "+44...", so every one is
normalised and probed in its spellings; half unknown), one POST /ip-addresses/check with
10,000 addresses (half stored), on one keep-alive connection, timing request to last byte.
Then one APIBAN walk (GET /api/{KEY}/banned/{ID} until "no new bans"). Prints one JSON
object (p50/p95/max in ms, body sizes, pages).
"""

import argparse
import http.client
import ipaddress
import json
import os
import signal
import socket
import statistics
import subprocess
import time

KEY = "bench-key-00000001"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--rounds", type=int, default=20)
    a = ap.parse_args()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTRYPEER_")}
    proc = subprocess.Popen([a.bin, "-f", a.db, "--data-dir", a.data_dir, "-R", "--no-tls",
                             "--no-p2p", "-a", "--api-listen", f"127.0.0.1:{port}",
                             "--bouncer-key", KEY, "--max-age", "30d"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "API never came up"
                time.sleep(0.1)
        numbers = [f"+44{i:09d}" for i in range(0, 10_000, 2)] + \
                  [f"+1555{i:07d}" for i in range(5_000)]
        base = int(ipaddress.IPv4Address("198.18.0.0"))
        ips = [str(ipaddress.IPv4Address(base + i)) for i in range(0, 10_000, 2)] + \
              [f"2001:db8:9::{i:x}" for i in range(5_000)]
        bodies = {"/numbers/check": json.dumps({"numbers": numbers}).encode(),
                  "/ip-addresses/check": json.dumps({"ip_addresses": ips}).encode()}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        times = {p: [] for p in bodies}
        sizes = {}
        for _ in range(a.rounds):
            for path, body in bodies.items():
                t0 = time.perf_counter()
                conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                data = r.read()
                times[path].append((time.perf_counter() - t0) * 1000)
                assert r.status == 200, (r.status, data[:200])
                doc = json.loads(data)
                items = doc["numbers"] if "numbers" in doc else doc["ip_addresses"]
                assert sum(i["known"] for i in items) == 5_000, path
                sizes[path] = (len(body), len(data))
        t0 = time.perf_counter()
        pages, n, path = 0, 0, f"/api/{KEY}/banned"
        page_ms = []
        while pages < 10_000:
            p0 = time.perf_counter()
            conn.request("GET", path)
            r = conn.getresponse()
            data = r.read()
            page_ms.append((time.perf_counter() - p0) * 1000)
            if r.status == 400:
                break
            doc = json.loads(data)
            pages += 1
            n += len(doc["ipaddress"])
            path = f"/api/{KEY}/banned/{doc['ID']}"
        walk_s = time.perf_counter() - t0

        def summary(ms):
            ms = sorted(ms)
            return {"p50_ms": round(statistics.median(ms), 2),
                    "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 2), "max_ms": round(ms[-1], 2)}
        print(json.dumps({
            "rounds": a.rounds,
            "numbers_check_10000": {**summary(times["/numbers/check"]),
                                    "request_bytes": sizes["/numbers/check"][0],
                                    "response_bytes": sizes["/numbers/check"][1]},
            "ip_addresses_check_10000": {**summary(times["/ip-addresses/check"]),
                                         "request_bytes": sizes["/ip-addresses/check"][0],
                                         "response_bytes": sizes["/ip-addresses/check"][1]},
            "apiban_walk": {"addresses": n, "pages": pages, "seconds": round(walk_s, 2),
                            **summary(page_ms)},
        }, indent=1))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


if __name__ == "__main__":
    main()
