#!/usr/bin/python3
"""Ingestion benchmark: how many SIP probes per second the daemon stores, and at what CPU cost.

Builds nothing. Starts the (release) daemon passive with a fresh database on loopback, runs
sp_loadgen at rising rates, waits after each step until the database stops growing, then
stops the daemon with SIGTERM and prints a markdown table:

  step | sent | achieved rate | stored | lost | kernel drops | daemon CPU s | CPU s / 10k events

"stored" = rows whose Call-ID carries the step's tag, counted after shutdown; "lost" =
sent - stored. "kernel drops" = the UDP receive-buffer overflows counted by the
kernel during the step (/proc/net/snmp RcvbufErrors, whole machine): datagrams that never
reached the daemon. CPU = utime + stime of the daemon (/proc/PID/stat) from the start of
the step until its last new row. "drain s" = time from the end of the load until that last
new row (a backlog inside the daemon). "steal %" = CPU time the
hypervisor took from this VM during the step (/proc/stat), "load" the 1-minute load
average at its end: high values mean other work shared the CPUs and the numbers are noisy.

  /usr/bin/python3 bench/ingest.py                       # default steps, 30 s each
  /usr/bin/python3 bench/ingest.py --duration 10 --steps udp:10000,tcp-stream:20000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_STEPS = ("udp:10000,udp:25000,udp:50000,udp:75000,"
                 "tcp-connections:1000,tcp-connections:5000,tcp-stream:20000")


def free_port(udp_too: bool = True) -> int:
    """A free TCP port on 127.0.0.1 that is (with udp_too) free for UDP as well."""
    while True:
        t = socket.socket()
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
        if not udp_too:
            t.close()
            return port
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            u.close()
            t.close()


def udp_rcvbuf_errors() -> int:
    lines = [l.split() for l in Path("/proc/net/snmp").read_text().splitlines() if l.startswith("Udp:")]
    header, values = lines[0], lines[1]
    return int(values[header.index("RcvbufErrors")])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_times() -> list:
    """Machine-wide jiffies: user nice system idle iowait irq softirq steal."""
    return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]


def steal_percent(before: list, after: list) -> float:
    delta = [a - b for a, b in zip(after, before)]
    total = sum(delta)
    return 100.0 * delta[7] / total if total else 0.0


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def machine_info() -> dict:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = next(int(l.split()[1]) for l in Path("/proc/meminfo").read_text().splitlines()
                  if l.startswith("MemTotal:"))
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "memory_gib": round(mem_kb / 1024 / 1024, 1)}


class Daemon:
    def __init__(self, binary: Path, workdir: Path, port: int, threads: int | None, extra: list):
        self.db = workdir / "bench.db"
        cmd = [str(binary), "-f", str(self.db), "--data-dir", str(workdir),
               "--sip-listen", f"127.0.0.1:{port}", "--no-tls", "--max-age", "0",
               "--tcp-max-connections", "100000", "--tcp-max-per-ip", "100000",
               "--tcp-idle-timeout", "10s", *extra]
        if threads:
            cmd += ["--threads", str(threads)]
        self.cmd = cmd
        self.stderr_path = workdir / "daemon.stderr"
        self.err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.err,
                                     stderr=self.err, cwd=workdir)
        deadline = time.monotonic() + 30
        while not re.search(rb"\bready\b", self.stderr_path.read_bytes(), re.IGNORECASE):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                sys.exit(f"daemon did not become ready: {self.stderr_path.read_text()}")
            time.sleep(0.05)

    def rows(self) -> int:
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            # --max-age 0: nothing is deleted, so the largest id is the row count (and cheap).
            return con.execute("SELECT coalesce(max(honey_id), 0) FROM honey").fetchone()[0]
        finally:
            con.close()

    def count(self) -> int:
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            return con.execute("SELECT count(*) FROM honey").fetchone()[0]
        finally:
            con.close()

    def count_by_tag(self) -> dict:
        """Rows per loadgen --tag (the Call-ID prefix), by one scan after shutdown."""
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            sql = ("SELECT substr(sip_message, instr(sip_message, 'Call-ID: ') + 9, 4) AS tag, "
                   "count(*) FROM honey GROUP BY tag")
            return dict(con.execute(sql).fetchall())
        finally:
            con.close()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return -9


def wait_stable(d: Daemon, expected: int, base: int, quiet_s: float = 5.0, max_s: float = 600.0):
    """Waits until the row count reaches base+expected, or stops growing for quiet_s while the
    daemon is (nearly) idle: under 5% of a core, so that a store busy on a checkpoint is not
    mistaken for the end of the backlog. Returns (rows, seconds waited until the last new
    row, daemon CPU seconds at that moment)."""
    start = time.monotonic()
    last, last_cpu = d.rows(), cpu_seconds(d.proc.pid)
    changed_at, changed_cpu = start, last_cpu
    quiet_since = start
    while True:
        if last - base >= expected:
            return last, changed_at - start, changed_cpu
        time.sleep(0.25)
        rows, cpu = d.rows(), cpu_seconds(d.proc.pid)
        now = time.monotonic()
        if rows != last:
            last, last_cpu, quiet_since = rows, cpu, now
            changed_at, changed_cpu = now, cpu
        elif cpu - last_cpu > 0.05 * (now - quiet_since) + 0.05:
            last_cpu, quiet_since = cpu, now
        if now - quiet_since >= quiet_s or now - start > max_s:
            return last, changed_at - start, changed_cpu


def run_step(d: Daemon, loadgen: Path, port: int, mode: str, rate: int, duration: float,
             lg_threads: int, tag: str) -> dict:
    base = d.rows()
    cpu0 = cpu_seconds(d.proc.pid)
    drops0 = udp_rcvbuf_errors()
    times0 = cpu_times()
    cmd = [str(loadgen), "--mode", mode, "--target", f"127.0.0.1:{port}", "--rate", str(rate),
           "--duration", str(duration), "--threads", str(lg_threads), "--tag", tag]
    if mode == "tcp-connections":
        cmd += ["--src-ips", "16"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    if res.returncode != 0 and not res.stdout.strip():
        sys.exit(f"loadgen failed: {cmd}\n{res.stderr}")
    lg = json.loads(res.stdout.strip().splitlines()[-1])
    rows, drain_s, cpu_end = wait_stable(d, lg["sent"], base)
    cpu = cpu_end - cpu0
    steal = steal_percent(times0, cpu_times())
    load = float(Path("/proc/loadavg").read_text().split()[0])
    stored = rows - base
    return {
        "tag": tag,
        "step": f"{mode} {rate:,}/s",
        "command": " ".join(cmd),
        "sent": lg["sent"], "errors": lg["errors"], "achieved": lg["achieved_rate"],
        "stored": stored, "stored_live": stored, "lost": lg["sent"] - stored,
        "kernel_drops": udp_rcvbuf_errors() - drops0 if mode == "udp" else None,
        "cpu_s": cpu, "cpu_per_10k": cpu / stored * 10000 if stored else float("nan"),
        "drain_s": drain_s, "steal_pct": steal, "load": load,
    }


def markdown(results: list, info: dict, extra: dict) -> str:
    out = [f"Machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory_gib']} GiB RAM, "
           f"Linux {info['kernel']}. Daemon: {extra['version']}, --threads "
           f"{extra['threads'] or 'default (one per core)'}; loadgen threads: {extra['lg_threads']}; "
           f"{extra['duration']:g} s per step.", "",
           "| step | sent | achieved/s | stored | lost | kernel UDP drops | daemon CPU s | "
           "CPU s / 10k events | drain s | steal % | load |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lost_pct = 100.0 * r["lost"] / r["sent"] if r["sent"] else 0.0
        drops = "-" if r["kernel_drops"] is None else f"{r['kernel_drops']:,}"
        out.append(f"| {r['step']} | {r['sent']:,} | {r['achieved']:,.0f} | {r['stored']:,} | "
                   f"{r['lost']:,} ({lost_pct:.2f}%) | {drops} | {r['cpu_s']:.2f} | "
                   f"{r['cpu_per_10k']:.3f} | {r['drain_s']:.1f} | {r['steal_pct']:.0f} | {r['load']:.1f} |")
    out += ["", f"After SIGTERM: exit {extra['rc']}, rows in the database {extra['final_rows']:,} "
            f"(sum of stored {sum(r['stored'] for r in results):,}); daemon peak RSS "
            f"{extra['rss']:.0f} MiB; database {extra['db_mib']:.0f} MiB.", *extra["notes"]]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.environ.get(
        "SENTRYPEER_BIN", str(REPO / "build/release/src/sentrypeer")))
    ap.add_argument("--loadgen", default=str(REPO / "build/release/bench/sp_loadgen"))
    ap.add_argument("--steps", default=DEFAULT_STEPS, help="mode:rate,... (default: %(default)s)")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds per step")
    ap.add_argument("--threads", type=int, default=None, help="daemon --threads (default: its own)")
    ap.add_argument("--loadgen-threads", type=int, default=1)
    ap.add_argument("--workdir", default=None, help="default: a fresh temporary directory")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (database)")
    ap.add_argument("--json", default=None, help="also write raw results as JSON here")
    ap.add_argument("--daemon-arg", action="append", default=[], help="extra daemon argument")
    args = ap.parse_args()

    binary, loadgen = Path(args.bin).resolve(), Path(args.loadgen).resolve()
    for p in (binary, loadgen):
        if not os.access(p, os.X_OK):
            sys.exit(f"not found or not executable: {p} (build the release preset first)")
    steps = []
    for s in args.steps.split(","):  # noqa: B020
        mode, rate = s.split(":")
        assert mode in ("udp", "tcp-connections", "tcp-stream"), mode
        steps.append((mode, int(rate)))

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="sp-ingest-"))
    workdir.mkdir(parents=True, exist_ok=True)
    version = subprocess.run([str(binary), "-V"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
    port = free_port()
    d = Daemon(binary, workdir, port, args.threads, args.daemon_arg)
    results = []
    extra_note: list = []
    try:
        for i, (mode, rate) in enumerate(steps):
            print(f"# {mode} at {rate}/s for {args.duration:g} s ...", file=sys.stderr, flush=True)
            r = run_step(d, loadgen, port, mode, rate, args.duration, args.loadgen_threads,
                         tag=f"s{i:02d}")
            print(f"#   sent {r['sent']} stored {r['stored']} lost {r['lost']} "
                  f"cpu {r['cpu_s']:.2f}s", file=sys.stderr, flush=True)
            results.append(r)
            if d.proc.poll() is not None:
                tail = d.stderr_path.read_text(errors="replace").splitlines()[-20:]
                print(f"# daemon exited on its own with {d.proc.returncode}; stderr tail:\n"
                      + "\n".join(tail), file=sys.stderr)
                extra_note.append(f"The daemon exited on its own (code {d.proc.returncode}) "
                                  f"after step {r['step']}.")
                break
        rss = peak_rss_mib(d.proc.pid) if d.proc.poll() is None else float("nan")
    finally:
        rc = d.stop()
    final_rows = d.count()
    # Exact per-step counts (the live count can attribute a late backlog to the next step).
    by_tag = d.count_by_tag()
    for r in results:
        r["stored"] = by_tag.get(r["tag"] + "-", 0)
        r["lost"] = r["sent"] - r["stored"]
        r["cpu_per_10k"] = r["cpu_s"] / r["stored"] * 10000 if r["stored"] else float("nan")
    db_mib = d.db.stat().st_size / 1024 / 1024
    extra = {"version": version, "threads": args.threads, "lg_threads": args.loadgen_threads,
             "duration": args.duration, "rc": rc, "final_rows": final_rows, "rss": rss,
             "db_mib": db_mib, "notes": extra_note}
    info = machine_info()
    print(markdown(results, info, extra))
    print("\nCommands:\n\n    " + " ".join(d.cmd) + "\n" +
          "\n".join("    " + r["command"] for r in results))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "extra": extra,
                                               "results": results}, indent=2))
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"\n(kept {workdir})", file=sys.stderr)
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
