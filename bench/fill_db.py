#!/usr/bin/python3
"""Creates a sentrypeer database for the REST API benchmark: N distinct called numbers and
M distinct source IPs (default 100,000 and 50,000), one event per number, recent timestamps.

The schema is the daemon's own: the daemon is started once on an empty file (SIP and API off)
so that it creates and migrates the schema, then stopped; rows are then bulk-inserted with
sqlite3, filling SentryPeer's columns plus ours (event_time in microseconds since the epoch,
origin 'local', source/destination ports). At its next start the daemon loads its in-memory
index (per number / per IP: count, first, last) from these rows.

    /usr/bin/python3 bench/fill_db.py --bin build/release/src/sentrypeer --db /tmp/b/bench.db \
        --data-dir /tmp/b/data [--numbers 100000] [--ips 50000]

Prints one JSON object: counts, timings and a known/unknown number and IP for lookups.
Numbers are "44" + 9 digits (44000000000 ...), IPs 198.18.0.0/15 (RFC 2544 benchmarking).
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def number_of(i: int) -> str:
    return f"44{i:09d}"


def ip_of(i: int) -> str:
    return str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("198.18.0.0")) + i))


def fmt_us(us: int) -> str:
    t = datetime.datetime(1970, 1, 1) + datetime.timedelta(microseconds=us)
    return t.strftime("%Y-%m-%d %H:%M:%S.") + f"{t.microsecond:06d}000"


def create_schema(binary: str, db: Path, data_dir: Path, timeout: float = 30.0):
    """Runs the daemon on the (empty) file until it says 'ready', then SIGTERM."""
    help_text = subprocess.run([binary, "--help"], capture_output=True, text=True,
                               timeout=10).stdout
    cmd = [binary, "-f", str(db), "--data-dir", str(data_dir), "-R", "--no-tls"]
    if "--no-p2p" in help_text:
        cmd.append("--no-p2p")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTRYPEER_")}
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + timeout
    lines = []
    try:
        os.set_blocking(proc.stderr.fileno(), False)
        buf = b""
        while b"ready" not in buf.lower():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"fill_db: {cmd} did not get ready (rc={proc.poll()}): "
                                 f"{buf.decode(errors='replace')}")
            chunk = proc.stderr.read()
            if chunk:
                buf += chunk
            time.sleep(0.02)
        lines.append(buf.decode(errors="replace"))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if proc.returncode != 0:
        raise SystemExit(f"fill_db: schema run exited {proc.returncode}: {lines}")


SIP_TEMPLATE = ("INVITE sip:{n}@192.0.2.10 SIP/2.0\r\n"
                "Via: SIP/2.0/UDP {ip}:5060;branch=z9hG4bK{b};rport\r\n"
                "Max-Forwards: 70\r\nFrom: <sip:100@{ip}>;tag={t}\r\nTo: <sip:{n}@192.0.2.10>\r\n"
                "Call-ID: {c}\r\nCSeq: 1 INVITE\r\nContact: <sip:100@{ip}:5060>\r\n"
                "User-Agent: friendly-scanner\r\nContent-Length: 0\r\n\r\n")


def fill(db: Path, node_id: str, numbers: int, ips: int, span_s: float, version: str):
    con = sqlite3.connect(db, timeout=30)
    cols = [r[1] for r in con.execute("PRAGMA table_info(honey)")]
    for needed in ("event_time", "origin", "source_port"):
        if needed not in cols:
            raise SystemExit(f"fill_db: column {needed} missing from honey: {cols}")
    now_us = int(time.time() * 1e6)
    start_us = now_us - int(span_s * 1e6)
    step = max(1, int(span_s * 1e6) // max(numbers, 1))
    rows = max(numbers, ips)

    def gen():
        for i in range(rows):
            n = number_of(i % numbers)
            ip = ip_of(i % ips)
            us = start_us + i * step
            u = uuid.uuid4()
            yield (fmt_us(us), str(u), "passive", ip, n, "UDP", "INVITE", "friendly-scanner",
                   SIP_TEMPLATE.format(n=n, ip=ip, b=u.hex[:16], t=u.hex[16:24], c=u.hex),
                   node_id, version, 5060, "192.0.2.10", 5060, "local", us)

    t0 = time.monotonic()
    with con:
        con.executemany(
            "INSERT INTO honey (event_timestamp, event_uuid, collected_method, source_ip, "
            "called_number, transport_type, method, user_agent, sip_message, created_by_node_id, "
            "app_version, source_port, destination_ip, destination_port, origin, event_time) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", gen())
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    got = con.execute("SELECT COUNT(*), COUNT(DISTINCT called_number), COUNT(DISTINCT source_ip) "
                      "FROM honey").fetchone()
    con.close()
    return rows, time.monotonic() - t0, got


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.environ.get("SENTRYPEER_BIN",
                                                    str(REPO / "build/release/src/sentrypeer")))
    ap.add_argument("--db", required=True, type=Path)
    ap.add_argument("--data-dir", required=True, type=Path)
    ap.add_argument("--numbers", type=int, default=100_000)
    ap.add_argument("--ips", type=int, default=50_000)
    ap.add_argument("--span", type=float, default=6 * 3600,
                    help="seconds of history the events are spread over (default 6 h)")
    a = ap.parse_args()
    if a.db.exists():
        raise SystemExit(f"fill_db: {a.db} exists; give a new path")
    a.db.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    create_schema(a.bin, a.db, a.data_dir)
    schema_s = time.monotonic() - t0
    node_file = a.data_dir / "node-id"
    node_id = node_file.read_text().strip() if node_file.exists() else str(uuid.uuid4())
    version = subprocess.run([a.bin, "-V"], capture_output=True, text=True,
                             timeout=10).stdout.split()[1]
    rows, insert_s, (n_rows, n_numbers, n_ips) = fill(a.db, node_id, a.numbers, a.ips, a.span,
                                                      version)
    if (n_numbers, n_ips) != (a.numbers, a.ips):
        raise SystemExit(f"fill_db: got {n_numbers} numbers / {n_ips} IPs")
    print(json.dumps({
        "db": str(a.db), "rows": n_rows, "numbers": n_numbers, "ips": n_ips,
        "db_bytes": a.db.stat().st_size, "schema_s": round(schema_s, 3),
        "insert_s": round(insert_s, 3),
        "known_number": number_of(a.numbers // 2), "unknown_number": "12345",
        "known_ip": ip_of(a.ips // 2), "unknown_ip": "203.0.113.77",
    }))


if __name__ == "__main__":
    sys.exit(main())
