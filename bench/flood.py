#!/usr/bin/python3
"""Flood benchmark for the memory and size budgets (issue 8, "Budgets").

Starts the release daemon with its DEFAULT budgets (passive, --max-rows 2000000,
--max-index-memory 128 MiB, --max-age 7d) on loopback with the API on (-a) and peer to peer
off (--no-p2p, so that nothing leaves the machine), then floods it over UDP with sp_loadgen
--unique 1: every datagram comes from its own 127.x.y.z source address (set per message with
IP_PKTINFO; the whole of 127.0.0.0/8 is local on Linux) and calls its own number. While the
flood runs, separate processes (so that no GIL is shared with the latency probe):

  * health: GET /health-check 20 times a second on one persistent connection, every
    latency recorded (a failed or timed-out request counts as a failure, and reconnects);
  * lists:  GET /ip-addresses?limit=1000 and GET /numbers?limit=1000 every second;
  * lookup: GET /ip-addresses/<ip> and /numbers/<number> in a loop (about 100 a second)
            for addresses and numbers taken from the latest lists.

A sampler reads /proc/PID/status (VmRSS, VmHWM) every second. After the flood the daemon is
left to settle (until sentrypeer_database_events has not changed for 3 s), then /metrics is
checked: sum(sentrypeer_events_received_total) == sentrypeer_database_events +
sum(sentrypeer_events_evicted_total), sentrypeer_sink_dropped_total{sink="store"} == 0.
Datagrams the kernel dropped (receive buffer full) never reach the daemon and are reported
separately (/proc/net/udp drops of the daemon's socket and /proc/net/snmp RcvbufErrors).
Finally SIGTERM; the daemon must exit 0.

  /usr/bin/python3 bench/flood.py --duration 30          # smoke run
  /usr/bin/python3 bench/flood.py --duration 600 --json /tmp/flood.json
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
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

from ingest import cpu_seconds, free_port, udp_rcvbuf_errors  # bench/ingest.py: the ingestion benchmark

REPO = Path(__file__).resolve().parents[1]


def udp_socket_drops(port: int) -> int:
    """Sum of the drops column of /proc/net/udp rows whose local port is `port`."""
    total = 0
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        f = line.split()
        if int(f[1].split(":")[1], 16) == port:
            total += int(f[12])
    return total


def proc_status(pid: int) -> dict:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1])  # KiB
    return out


def machine_info() -> str:
    model = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text()
                  .splitlines() if l.startswith("model name")), "unknown")
    mem_kb = next(int(l.split()[1]) for l in Path("/proc/meminfo").read_text().splitlines()
                  if l.startswith("MemTotal:"))
    return (f"{os.cpu_count()} CPUs ({model}), {mem_kb / 1024 / 1024:.1f} GiB RAM, "
            f"Linux {platform.release()}")


def parse_metrics(text: str) -> dict:
    """{family: {labels_text: value}} of a Prometheus text exposition."""
    out: dict = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if m:
            out.setdefault(m.group(1), {})[m.group(2) or ""] = float(m.group(3))
    return out


def get(conn_box: list, host: str, port: int, path: str, timeout: float):
    """One GET on a persistent connection (reconnects after an error). Returns
    (status or None, body bytes, seconds)."""
    t0 = time.perf_counter()
    try:
        if conn_box[0] is None:
            conn_box[0] = http.client.HTTPConnection(host, port, timeout=timeout)
        c = conn_box[0]
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        if r.getheader("Connection", "").lower() == "close":
            c.close()
            conn_box[0] = None
        return r.status, body, time.perf_counter() - t0
    except (OSError, http.client.HTTPException):
        if conn_box[0] is not None:
            conn_box[0].close()
        conn_box[0] = None
        return None, b"", time.perf_counter() - t0


# ---- client processes (each writes its results as JSON to `out`) ------------------------

def health_client(port: int, rate: float, stop_at: float, out: str) -> None:
    box: list = [None]
    lat, fails, statuses = [], 0, {}
    period = 1.0 / rate
    nxt = time.monotonic()
    while time.monotonic() < stop_at:
        status, _, dt = get(box, "127.0.0.1", port, "/health-check", 5.0)
        if status == 200:
            lat.append(dt)
        else:
            fails += 1
            lat.append(dt)  # a failure still took this long
        statuses[str(status)] = statuses.get(str(status), 0) + 1
        nxt += period
        d = nxt - time.monotonic()
        if d > 0:
            time.sleep(d)
        else:
            nxt = time.monotonic()  # late: do not burst to catch up
    Path(out).write_text(json.dumps({"latencies": lat, "failures": fails, "statuses": statuses}))


def lists_client(port: int, interval: float, stop_at: float, out: str, shared: str) -> None:
    box: list = [None]
    res = {"ip": [], "num": [], "errors": 0, "statuses": {}}
    nxt = time.monotonic()
    while interval > 0 and time.monotonic() < stop_at:
        for key, path in (("ip", "/ip-addresses?limit=1000"), ("num", "/numbers?limit=1000")):
            status, body, dt = get(box, "127.0.0.1", port, path, 10.0)
            res["statuses"][str(status)] = res["statuses"].get(str(status), 0) + 1
            if status != 200:
                res["errors"] += 1
                continue
            res[key].append(dt)
            try:
                doc = json.loads(body)
            except ValueError:
                res["errors"] += 1
                continue
            # Hand a few keys to the lookup client (atomic rename).
            items = next((v for v in doc.values() if isinstance(v, list)), []) \
                if isinstance(doc, dict) else doc
            keys = []
            for it in items[:50]:
                if isinstance(it, dict):
                    k = it.get("ip_address") or it.get("called_number")
                    if k:
                        keys.append(k)
            if keys:
                tmp = f"{shared}.{key}.tmp"
                Path(tmp).write_text(json.dumps(keys))
                os.replace(tmp, f"{shared}.{key}")
        nxt += interval
        d = nxt - time.monotonic()
        if d > 0:
            time.sleep(d)
        else:
            nxt = time.monotonic()
    Path(out).write_text(json.dumps(res))


def lookup_client(port: int, rate: float, stop_at: float, out: str, shared: str) -> None:
    box: list = [None]
    lat, statuses, i = [], {}, 0
    keys = {"ip": ["192.0.2.1"], "num": ["10000000000"]}
    period = 1.0 / rate
    nxt = time.monotonic()
    while time.monotonic() < stop_at:
        if i % 200 == 0:
            for k in keys:
                try:
                    keys[k] = json.loads(Path(f"{shared}.{k}").read_text()) or keys[k]
                except (OSError, ValueError):
                    pass
        kind = "ip" if i % 2 == 0 else "num"
        val = keys[kind][i // 2 % len(keys[kind])]
        path = f"/ip-addresses/{val}" if kind == "ip" else f"/numbers/{val}"
        status, _, dt = get(box, "127.0.0.1", port, path, 10.0)
        statuses[str(status)] = statuses.get(str(status), 0) + 1
        lat.append(dt)
        i += 1
        nxt += period
        d = nxt - time.monotonic()
        if d > 0:
            time.sleep(d)
        else:
            nxt = time.monotonic()
    Path(out).write_text(json.dumps({"latencies": lat, "statuses": statuses}))


# ---- helpers ------------------------------------------------------------------------------

def pct(values: list, p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100.0 * (len(s) - 1))))]


def metrics(api_port: int) -> dict:
    c = http.client.HTTPConnection("127.0.0.1", api_port, timeout=30)
    try:
        c.request("GET", "/metrics")
        r = c.getresponse()
        return parse_metrics(r.read().decode())
    finally:
        c.close()


def total(m: dict, family: str, label_filter: str = "") -> float:
    return sum(v for k, v in m.get(family, {}).items() if label_filter in k)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.environ.get(
        "SENTRYPEER_BIN", str(REPO / "build/release/src/sentrypeer")))
    ap.add_argument("--loadgen", default=str(REPO / "build/release/bench/sp_loadgen"))
    ap.add_argument("--rate", type=int, default=30000, help="events per second")
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of flood")
    ap.add_argument("--loadgen-threads", type=int, default=1)
    ap.add_argument("--health-rate", type=float, default=20.0)
    ap.add_argument("--lookup-rate", type=float, default=100.0)
    ap.add_argument("--list-interval", type=float, default=1.0,
                    help="seconds between the two ?limit=1000 lists (0: no lists)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--json", default=None, help="also write the results as JSON here")
    ap.add_argument("--daemon-arg", action="append", default=[],
                    help="extra daemon argument (the run is then not 'defaults')")
    args = ap.parse_args()

    binary, loadgen = Path(args.bin).resolve(), Path(args.loadgen).resolve()
    for p in (binary, loadgen):
        if not os.access(p, os.X_OK):
            sys.exit(f"not found or not executable: {p} (build the release preset first)")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="sp-flood-"))
    workdir.mkdir(parents=True, exist_ok=True)
    sip_port, tls_port, api_port = free_port(), free_port(False), free_port(False)
    version = subprocess.run([str(binary), "-V"], capture_output=True, text=True,
                             timeout=10).stdout.strip()

    # Defaults for every budget; only addresses/paths are set (loopback, private ports),
    # plus -a (API) and --no-p2p (keep loopback quiet, send nothing to the public DHT).
    cmd = [str(binary), "-f", str(workdir / "flood.db"), "--data-dir", str(workdir),
           "--sip-listen", f"127.0.0.1:{sip_port}", "--tls-listen", f"127.0.0.1:{tls_port}",
           "-a", "--api-listen", f"127.0.0.1:{api_port}", "--no-p2p", *args.daemon_arg]
    err_path = workdir / "daemon.stderr"
    err = open(err_path, "wb")
    daemon = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                              cwd=workdir)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", api_port), timeout=0.5).close()
            if re.search(rb"\bready\b", err_path.read_bytes(), re.IGNORECASE) or \
                    time.monotonic() > deadline - 25:
                break
        except OSError:
            pass
        if daemon.poll() is not None or time.monotonic() > deadline:
            daemon.kill()
            sys.exit(f"daemon did not start: {err_path.read_text()}")
        time.sleep(0.05)
    pid = daemon.pid
    print(f"daemon pid {pid}: {' '.join(cmd)}", flush=True)

    # RSS sampler (every second, a thread of this process; it only reads /proc).
    samples: list = []
    stop_sampler = threading.Event()
    t_start = time.monotonic()

    def sampler() -> None:
        last_print = 0.0
        while not stop_sampler.is_set():
            try:
                st = proc_status(pid)
                cpu = cpu_seconds(pid)
            except OSError:
                break
            now = time.monotonic() - t_start
            samples.append({"t": round(now, 1), "rss_kib": st.get("VmRSS", 0),
                            "hwm_kib": st.get("VmHWM", 0), "cpu_s": cpu})
            if now - last_print >= 30:
                last_print = now
                print(f"  t={now:5.0f}s RSS {st.get('VmRSS', 0) / 1024:6.1f} MiB "
                      f"HWM {st.get('VmHWM', 0) / 1024:6.1f} MiB cpu {cpu:7.1f}s "
                      f"load {Path('/proc/loadavg').read_text().split()[0]}", flush=True)
            stop_sampler.wait(1.0)

    th = threading.Thread(target=sampler, daemon=True)
    th.start()

    drops0, sock_drops0 = udp_rcvbuf_errors(), udp_socket_drops(sip_port)
    clients_stop = time.monotonic() + args.duration + 1.0
    shared = str(workdir / "keys")
    outs = {n: str(workdir / f"{n}.json") for n in ("health", "lists", "lookup")}
    ctx = mp.get_context("fork")
    procs = [
        ctx.Process(target=health_client, args=(api_port, args.health_rate, clients_stop,
                                                outs["health"])),
        ctx.Process(target=lists_client, args=(api_port, args.list_interval, clients_stop, outs["lists"], shared)),
        ctx.Process(target=lookup_client, args=(api_port, args.lookup_rate, clients_stop,
                                                outs["lookup"], shared)),
    ]
    for p in procs:
        p.start()
    lg_cmd = [str(loadgen), "--mode", "udp", "--target", f"127.0.0.1:{sip_port}",
              "--rate", str(args.rate), "--duration", str(args.duration), "--unique", "1",
              "--threads", str(args.loadgen_threads), "--tag", "flood"]
    print("loadgen: " + " ".join(lg_cmd), flush=True)
    lg_res = subprocess.run(lg_cmd, capture_output=True, text=True, timeout=args.duration + 60)
    lg = json.loads(lg_res.stdout.strip().splitlines()[-1]) if lg_res.stdout.strip() else {}
    print(f"loadgen: {lg}", flush=True)
    for p in procs:
        p.join(timeout=30)
        if p.is_alive():
            p.kill()
    flood_end = time.monotonic()

    # Settle: until database_events has not changed for 3 s (at most 120 s).
    last, stable_since = None, time.monotonic()
    while time.monotonic() - flood_end < 120:
        m = metrics(api_port)
        cur = (total(m, "sentrypeer_database_events"),
               total(m, "sentrypeer_events_received_total"))
        if cur != last:
            last, stable_since = cur, time.monotonic()
        elif time.monotonic() - stable_since >= 3.0:
            break
        time.sleep(0.5)
    settle_s = time.monotonic() - flood_end
    m = metrics(api_port)
    received = total(m, "sentrypeer_events_received_total")
    stored = total(m, "sentrypeer_database_events")
    evicted = {k: v for k, v in m.get("sentrypeer_events_evicted_total", {}).items()}
    evicted_sum = sum(evicted.values())
    store_dropped = total(m, "sentrypeer_sink_dropped_total", 'sink="store"')
    all_dropped = m.get("sentrypeer_sink_dropped_total", {})
    kernel_drops = udp_rcvbuf_errors() - drops0
    sock_drops = udp_socket_drops(sip_port) - sock_drops0
    interesting = {k: v for k, v in m.items() if any(s in k for s in (
        "evicted", "lost", "dropped", "index_memory", "database_", "bad_actors",
        "called_numbers", "udp", "datagram", "queue", "events_stored", "pruned",
        "api_list", "rejected"))}

    daemon.send_signal(signal.SIGTERM)
    t_term = time.monotonic()
    try:
        rc = daemon.wait(60)
    except subprocess.TimeoutExpired:
        daemon.kill()
        rc = -9
    term_s = time.monotonic() - t_term
    stop_sampler.set()
    th.join(5)

    health = json.loads(Path(outs["health"]).read_text())
    lists = json.loads(Path(outs["lists"]).read_text())
    lookup = json.loads(Path(outs["lookup"]).read_text())
    hl = health["latencies"]
    peak_rss = max((s["rss_kib"] for s in samples), default=0) / 1024
    peak_hwm = max((s["hwm_kib"] for s in samples), default=0) / 1024
    db_mib = sum(f.stat().st_size for f in workdir.glob("flood.db*")) / 2**20

    res = {
        "machine": machine_info(), "version": version, "daemon_cmd": " ".join(cmd),
        "loadgen_cmd": " ".join(lg_cmd), "loadgen": lg,
        "peak_rss_mib": peak_rss, "peak_hwm_mib": peak_hwm,
        "rss_end_mib": samples[-1]["rss_kib"] / 1024 if samples else 0,
        "daemon_cpu_s": samples[-1]["cpu_s"] if samples else 0,
        "health": {"n": len(hl), "failures": health["failures"], "statuses": health["statuses"],
                   "p50_ms": pct(hl, 50) * 1e3, "p99_ms": pct(hl, 99) * 1e3,
                   "p999_ms": pct(hl, 99.9) * 1e3, "max_ms": max(hl, default=0) * 1e3,
                   "over_50ms": sum(1 for x in hl if x > 0.05),
                   "over_1s": sum(1 for x in hl if x > 1.0)},
        "lists": {"n_ip": len(lists["ip"]), "n_num": len(lists["num"]),
                  "errors": lists["errors"], "statuses": lists["statuses"],
                  "ip_p50_ms": pct(lists["ip"], 50) * 1e3, "ip_p99_ms": pct(lists["ip"], 99) * 1e3,
                  "ip_max_ms": max(lists["ip"], default=0) * 1e3,
                  "num_p50_ms": pct(lists["num"], 50) * 1e3,
                  "num_p99_ms": pct(lists["num"], 99) * 1e3,
                  "num_max_ms": max(lists["num"], default=0) * 1e3},
        "lookup": {"n": len(lookup["latencies"]), "statuses": lookup["statuses"],
                   "p50_ms": pct(lookup["latencies"], 50) * 1e3,
                   "p99_ms": pct(lookup["latencies"], 99) * 1e3,
                   "max_ms": max(lookup["latencies"], default=0) * 1e3},
        "received": received, "stored": stored, "evicted": evicted, "evicted_sum": evicted_sum,
        "balance": received - stored - evicted_sum, "settle_s": settle_s,
        "store_dropped": store_dropped, "sink_dropped": all_dropped,
        "kernel_rcvbuf_errors": kernel_drops, "socket_drops": sock_drops,
        "sigterm_rc": rc, "sigterm_s": term_s, "db_mib": db_mib,
        "metrics": interesting, "rss_timeline": samples[::10],
    }
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))

    ok = {
        "peak RSS <= 512 MiB": peak_hwm <= 512,
        "health p99 <= 50 ms": res["health"]["p99_ms"] <= 50 and health["failures"] == 0,
        "no health-check slower than 1 s": res["health"]["over_1s"] == 0,
        "received == stored + evicted": res["balance"] == 0,
        "store sink dropped == 0": store_dropped == 0,
        "SIGTERM exit 0": rc == 0,
    }
    h, li, lk = res["health"], res["lists"], res["lookup"]
    print(f"""
machine: {res['machine']}; {version}
daemon:  {res['daemon_cmd']}
loadgen: sent {lg.get('sent', 0):,} in {lg.get('elapsed_s', 0):.1f} s = {lg.get('achieved_rate', 0):,.0f}/s (target {args.rate:,}/s), send errors {lg.get('errors', 0):,}
peak RSS (max VmRSS sample) {peak_rss:.1f} MiB, VmHWM {peak_hwm:.1f} MiB, at end {res['rss_end_mib']:.1f} MiB; daemon CPU {res['daemon_cpu_s']:.0f} s; database {db_mib:.0f} MiB
/health-check: {h['n']:,} requests, failures {h['failures']}, p50 {h['p50_ms']:.2f} ms, p99 {h['p99_ms']:.2f} ms, p99.9 {h['p999_ms']:.2f} ms, max {h['max_ms']:.1f} ms, >50 ms {h['over_50ms']}, >1 s {h['over_1s']}
lists:  /ip-addresses?limit=1000 {li['n_ip']} (p50 {li['ip_p50_ms']:.1f} ms, p99 {li['ip_p99_ms']:.1f} ms, max {li['ip_max_ms']:.1f} ms); /numbers?limit=1000 {li['n_num']} (p50 {li['num_p50_ms']:.1f}, p99 {li['num_p99_ms']:.1f}, max {li['num_max_ms']:.1f} ms); errors {li['errors']} {li['statuses']}
lookups: {lk['n']:,} (p50 {lk['p50_ms']:.2f} ms, p99 {lk['p99_ms']:.2f} ms, max {lk['max_ms']:.1f} ms) statuses {lk['statuses']}
after {settle_s:.1f} s settling:
  received (sum sentrypeer_events_received_total) = {received:,.0f}
  stored (sentrypeer_database_events) + evicted = {stored:,.0f} + {evicted_sum:,.0f} = {stored + evicted_sum:,.0f}  (evicted {evicted})
  difference {res['balance']:,.0f}
  sentrypeer_sink_dropped_total {all_dropped}
  kernel drops (not accepted): /proc/net/udp socket drops {sock_drops:,}, RcvbufErrors (machine) {kernel_drops:,}
  sent - received - kernel socket drops = {lg.get('sent', 0) - received - sock_drops:,.0f}
SIGTERM: exit {rc} after {term_s:.2f} s""")
    for k, v in ok.items():
        print(f"  {'PASS' if v else 'FAIL'}  {k}")
    tail = err_path.read_text(errors="replace").splitlines()[-5:]
    print("daemon stderr tail:\n  " + "\n  ".join(tail))
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"kept {workdir}")
    return 0 if all(ok.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
