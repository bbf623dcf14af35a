#!/usr/bin/env bash
# REST API benchmark of the release daemon on a database of 100,000 numbers and 50,000 IPs.
#
#   SENTRYPEER_BIN=build/release/src/sentrypeer bench/api_bench.sh
#
# Environment (all optional):
#   SENTRYPEER_BIN  daemon (default build/release/src/sentrypeer)
#   SP_LOADGEN      UDP load generator (default: sp_loadgen next to the build's bench/ dir;
#                   a small Python sender is used when it is missing)
#   OUT             directory for the database, raw outputs and summary (default: mktemp)
#   FILLED_DB       an existing bench/fill_db.py database (+ its data dir as FILLED_DB.data)
#                   to copy instead of filling a new one
#   DURATION        seconds of each throughput run (15), MIXED_RATE events/s (2000)
#   WRK_THREADS     wrk threads of the throughput runs (1)
#   PERF=1          also record a CPU profile (perf) of the daemon during the lookup run
#   API_PORT, SIP_PORT  loopback ports for the daemon (default: free ones)
#
# Steps: fill the db (bench/fill_db.py), start `sentrypeer -a` on it, then
#   1. wrk -t1 -c50 -d15s --latency on /numbers/{known}, /numbers/{unknown}, /ip-addresses/{known}
#      (WRK_THREADS=1: the restated target; -t2 on the same 2 cores measures the scheduler)
#   2. wrk -t1 -c1 -d10s --latency on /numbers/{known}            (one-connection latency)
#   3. GET /numbers (100k entries) with curl -w, 5 times; the daemon's VmHWM (peak RSS)
#   4. mixed: MIXED_RATE UDP events/s for DURATION s while wrk -t2 -c4 looks up known (must
#      be 200) and unknown (must be 404) numbers and IPs (bench/api_check.lua; two wrk threads
#      so that each Lua state has one role and checks every answer against its request);
#      then rows stored must equal events sent.
# For each wrk run the daemon's CPU time per request (utime + stime over requests) is shown
# too: unlike req/s and percentiles it does not depend on what else the machine runs.
# Prints a summary (also $OUT/summary.txt) with each target's verdict. Every process started
# here is stopped on exit. Exit status: 0 when every target is met, 1 otherwise.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
BIN=${SENTRYPEER_BIN:-$REPO/build/release/src/sentrypeer}
BUILD_DIR=$(cd "$(dirname "$BIN")/.." && pwd)
SP_LOADGEN=${SP_LOADGEN:-$BUILD_DIR/bench/sp_loadgen}
DURATION=${DURATION:-15}
MIXED_RATE=${MIXED_RATE:-2000}
WRK_THREADS=${WRK_THREADS:-1}
OUT=${OUT:-$(mktemp -d /tmp/sp-api-bench.XXXXXX)}
PY=/usr/bin/python3
mkdir -p "$OUT"

for tool in wrk curl "$PY"; do
    command -v "$tool" >/dev/null || { echo "api_bench: $tool not found (apt-get install wrk curl)" >&2; exit 2; }
done
[ -x "$BIN" ] || { echo "api_bench: $BIN is not executable (build the release preset)" >&2; exit 2; }

free_port() {
    "$PY" -c 'import socket
for _ in range(100):
    t = socket.socket(); t.bind(("127.0.0.1", 0)); p = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", p)); print(p); break
    except OSError: pass
    finally: u.close(); t.close()'
}

DAEMON_PID=""
LOADGEN_PID=""
cleanup() {
    [ -n "$LOADGEN_PID" ] && kill "$LOADGEN_PID" 2>/dev/null || true
    if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
        kill -TERM "$DAEMON_PID" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$DAEMON_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT INT TERM

log() { echo "== $*" >&2; }

# ---- database ------------------------------------------------------------------------------
DB=$OUT/bench.db
DATA=$OUT/data
if [ -n "${FILLED_DB:-}" ]; then
    log "copying $FILLED_DB"
    cp "$FILLED_DB" "$DB"
    cp -r "$FILLED_DB.data" "$DATA"
    FILL_JSON=$(cat "$FILLED_DB.json" 2>/dev/null || echo '{"known_number": "44000050000", "unknown_number": "12345", "known_ip": "198.18.97.168", "unknown_ip": "203.0.113.77"}')
else
    log "filling $DB (100,000 numbers, 50,000 IPs)"
    FILL_JSON=$("$PY" "$REPO/bench/fill_db.py" --bin "$BIN" --db "$DB" --data-dir "$DATA")
fi
echo "$FILL_JSON" > "$OUT/fill.json"
jget() { "$PY" -c "import json,sys; print(json.load(open('$OUT/fill.json'))['$1'])"; }
KNOWN_NUMBER=$(jget known_number)
UNKNOWN_NUMBER=$(jget unknown_number)
KNOWN_IP=$(jget known_ip)
UNKNOWN_IP=$(jget unknown_ip)
ROWS_BEFORE=$("$PY" -c "import sqlite3; print(sqlite3.connect('file:$DB?mode=ro', uri=True).execute('select count(*) from honey').fetchone()[0])")

# ---- daemon --------------------------------------------------------------------------------
API_PORT=${API_PORT:-$(free_port)}
SIP_PORT=${SIP_PORT:-$(free_port)}
EXTRA=()
HELP_TEXT=$("$BIN" --help 2>&1 || true)
# peer-to-peer is on by default where the binary has it: off here (no DHT traffic, port 4222)
[[ $HELP_TEXT == *--no-p2p* ]] && EXTRA+=(--no-p2p)
DAEMON_CMD=("$BIN" -a --api-listen "127.0.0.1:$API_PORT" -f "$DB" --data-dir "$DATA"
            --sip-listen "127.0.0.1:$SIP_PORT" --no-tls "${EXTRA[@]}")
log "starting ${DAEMON_CMD[*]}"
T0=$(date +%s.%N)
env -u SENTRYPEER_API_TOKEN "${DAEMON_CMD[@]}" </dev/null >"$OUT/daemon.out" 2>"$OUT/daemon.err" &
DAEMON_PID=$!
for _ in $(seq 600); do
    grep -qi ready "$OUT/daemon.err" && break
    kill -0 "$DAEMON_PID" 2>/dev/null || { cat "$OUT/daemon.err" >&2; exit 2; }
    sleep 0.1
done
grep -qi ready "$OUT/daemon.err" || { echo "daemon not ready in 60 s" >&2; exit 2; }
STARTUP_S=$("$PY" -c "import time; print(round(time.time() - $T0, 2))")
BASE=http://127.0.0.1:$API_PORT
RSS_IDLE_KB=$(awk '/^VmRSS/ {print $2}' /proc/$DAEMON_PID/status)

code() { curl -s -o /dev/null -w '%{http_code}' "$BASE$1"; }
[ "$(code /numbers/$KNOWN_NUMBER)" = 200 ] || { echo "known number not found" >&2; exit 2; }
[ "$(code /numbers/$UNKNOWN_NUMBER)" = 404 ] || { echo "unknown number found?" >&2; exit 2; }
[ "$(code /ip-addresses/$KNOWN_IP)" = 200 ] || { echo "known IP not found" >&2; exit 2; }

# The daemon's CPU time (utime + stime) in microseconds: CPU per request is a figure that
# holds on a busy machine, where req/s and latencies depend on what else runs.
cpu_us() {
    "$PY" -c "import os; f = open('/proc/$DAEMON_PID/stat').read().rsplit(')', 1)[1].split(); print(int((int(f[11]) + int(f[12])) * 1e6 / os.sysconf('SC_CLK_TCK')))"
}
declare -A CPU
declare -A LOAD # LOAD[name] = 1-minute load average right after the run (other work on the machine)
# CPU[name] = daemon CPU microseconds per request during a wrk run
cpu_per_req() { "$PY" -c "print(f'{($2 - $1) / max(1, $3):.1f}')"; }

# wrk output -> "rps p50_us p99_us non2xx socket_errors requests"
parse_wrk() {
    "$PY" - "$1" <<'EOF'
import re, sys
t = open(sys.argv[1]).read()
def us(v, unit):
    return float(v) * {"us": 1, "ms": 1e3, "s": 1e6}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
lat = {p: us(v, u) for p, v, u in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", t, re.M)}
non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", t)
errs = re.search(r"Socket errors:(.*)", t)
total = int(re.search(r"(\d+) requests in", t).group(1))
print(f"{rps:.0f} {lat['50']:.1f} {lat['99']:.1f} {non2xx.group(1) if non2xx else 0} "
      f"{'none' if not errs else errs.group(1).strip().replace(' ', '')} {total}")
EOF
}

# ---- 1. throughput -------------------------------------------------------------------------
log "warm-up"
wrk -t"$WRK_THREADS" -c50 -d3s "$BASE/numbers/$KNOWN_NUMBER" >/dev/null
declare -A RES
for name in known_number unknown_number known_ip; do
    case $name in
        known_number) path=/numbers/$KNOWN_NUMBER ;;
        unknown_number) path=/numbers/$UNKNOWN_NUMBER ;;
        known_ip) path=/ip-addresses/$KNOWN_IP ;;
    esac
    log "wrk -t$WRK_THREADS -c50 -d${DURATION}s --latency $BASE$path"
    if [ "${PERF:-0}" = 1 ] && [ "$name" = known_number ] && command -v perf >/dev/null; then
        perf record -F 499 -g -p "$DAEMON_PID" -o "$OUT/perf.data" -- sleep "$DURATION" \
            >"$OUT/perf-record.log" 2>&1 &
        PERF_PID=$!
    fi
    C0=$(cpu_us)
    wrk -t"$WRK_THREADS" -c50 -d"${DURATION}s" --latency "$BASE$path" >"$OUT/wrk_$name.txt"
    C1=$(cpu_us)
    [ -n "${PERF_PID:-}" ] && { wait "$PERF_PID" || true; PERF_PID=""; }
    RES[$name]=$(parse_wrk "$OUT/wrk_$name.txt")
    CPU[$name]=$(cpu_per_req "$C0" "$C1" "$(awk '{print $6}' <<<"${RES[$name]}")")
    LOAD[$name]=$(cut -d' ' -f1 /proc/loadavg)
    log "$name: ${RES[$name]} cpu/req ${CPU[$name]} us load ${LOAD[$name]}"
done
if [ -f "$OUT/perf.data" ]; then
    perf report -i "$OUT/perf.data" --no-children --sort dso,symbol --stdio -g none \
        --percent-limit 0.7 2>/dev/null | grep -v '^#' | grep -v '^$' | cut -c1-150 \
        | sed 's/ *$//' | head -40 >"$OUT/perf-top.txt" || true
fi

# ---- 2. one connection ---------------------------------------------------------------------
log "wrk -t1 -c1 -d10s --latency $BASE/numbers/$KNOWN_NUMBER"
C0=$(cpu_us)
wrk -t1 -c1 -d10s --latency "$BASE/numbers/$KNOWN_NUMBER" >"$OUT/wrk_one_connection.txt"
C1=$(cpu_us)
RES[one_connection]=$(parse_wrk "$OUT/wrk_one_connection.txt")
CPU[one_connection]=$(cpu_per_req "$C0" "$C1" "$(awk '{print $6}' <<<"${RES[one_connection]}")")
LOAD[one_connection]=$(cut -d' ' -f1 /proc/loadavg)
log "one connection: ${RES[one_connection]}"

# ---- 3. GET /numbers of 100k ---------------------------------------------------------------
HWM_LOOKUPS_KB=$(awk '/^VmHWM/ {print $2}' /proc/$DAEMON_PID/status)
curl -s "$BASE/numbers" -o "$OUT/numbers.json"
NUMBERS_TOTAL=$("$PY" -c "import json; d = json.load(open('$OUT/numbers.json')); assert len(d['called_numbers']) == d['called_numbers_total']; print(d['called_numbers_total'])")
: >"$OUT/curl_numbers.txt"
C0=$(cpu_us)
for _ in 1 2 3 4 5; do
    curl -s -o /dev/null -w '%{http_code} %{size_download} %{time_starttransfer} %{time_total}\n' \
        "$BASE/numbers" >>"$OUT/curl_numbers.txt"
done
C1=$(cpu_us)
NUMBERS_CPU_MS=$("$PY" -c "print(f'{($C1 - $C0) / 5 / 1000:.1f}')")
read -r NUMBERS_MEDIAN_MS NUMBERS_MAX_MS NUMBERS_BYTES NUMBERS_TTFB_MS < <("$PY" - "$OUT/curl_numbers.txt" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
assert all(r[0] == "200" for r in rows), rows
t = [float(r[3]) * 1e3 for r in rows]
print(f"{statistics.median(t):.1f} {max(t):.1f} {rows[0][1]} "
      f"{statistics.median(float(r[2]) * 1e3 for r in rows):.1f}")
EOF
)
HWM_NUMBERS_KB=$(awk '/^VmHWM/ {print $2}' /proc/$DAEMON_PID/status)
log "GET /numbers: total $NUMBERS_TOTAL, median ${NUMBERS_MEDIAN_MS} ms, max ${NUMBERS_MAX_MS} ms, $NUMBERS_BYTES bytes; VmHWM ${HWM_NUMBERS_KB} kB"

# ---- 4. mixed: UDP events + checked lookups ------------------------------------------------
MIXED_COUNT=$((MIXED_RATE * DURATION))
if [ -x "$SP_LOADGEN" ]; then
    LOADGEN_CMD=("$SP_LOADGEN" --mode udp --target "127.0.0.1:$SIP_PORT" --rate "$MIXED_RATE"
                 --duration "$DURATION")
else
    # Fallback sender (no sp_loadgen built), written to $OUT.
    LOADGEN_CMD=("$PY" "$OUT/udp_sender.py" "127.0.0.1:$SIP_PORT" "$MIXED_RATE" "$DURATION")
    cat >"$OUT/udp_sender.py" <<'EOF'
import json, socket, sys, time, uuid
host, port = sys.argv[1].rsplit(":", 1); rate = float(sys.argv[2]); dur = float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0))
total, sent, t0 = int(rate * dur), 0, time.monotonic()
while sent < total:
    due = min(total, int((time.monotonic() - t0) * rate) + 1)
    while sent < due:
        cid = uuid.uuid4().hex
        msg = (f"OPTIONS sip:{100000000 + sent}@{host} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;"
               f"branch=z9hG4bK{cid[:16]}\r\nFrom: <sip:a@127.0.0.1>;tag={cid[16:24]}\r\n"
               f"To: <sip:{100000000 + sent}@{host}>\r\nCall-ID: {cid}\r\nCSeq: 1 OPTIONS\r\n"
               "User-Agent: bench\r\nContent-Length: 0\r\n\r\n")
        s.sendto(msg.encode(), (host, int(port))); sent += 1
    time.sleep(0.001)
print(json.dumps({"sent": sent, "elapsed_s": time.monotonic() - t0}))
EOF
fi
log "mixed: ${LOADGEN_CMD[*]} + wrk -t2 -c4 -d${DURATION}s -s bench/api_check.lua"
"${LOADGEN_CMD[@]}" >"$OUT/loadgen.json" 2>"$OUT/loadgen.err" &
LOADGEN_PID=$!
KNOWN_NUMBER=$KNOWN_NUMBER UNKNOWN_NUMBER=$UNKNOWN_NUMBER KNOWN_IP=$KNOWN_IP UNKNOWN_IP=$UNKNOWN_IP \
    wrk -t2 -c4 -d"${DURATION}s" --latency -s "$REPO/bench/api_check.lua" "$BASE" >"$OUT/wrk_mixed.txt"
wait "$LOADGEN_PID"
LOADGEN_PID=""
SENT=$("$PY" -c "import json; print(json.load(open('$OUT/loadgen.json'))['sent'])")
# Wait for the store to commit everything (or 30 s).
STORED=0
for _ in $(seq 300); do
    STORED=$("$PY" -c "import sqlite3; print(sqlite3.connect('file:$DB?mode=ro', uri=True, timeout=10).execute('select count(*) from honey').fetchone()[0] - $ROWS_BEFORE)")
    [ "$STORED" -ge "$SENT" ] && break
    sleep 0.1
done
sleep 1
STORED=$("$PY" -c "import sqlite3; print(sqlite3.connect('file:$DB?mode=ro', uri=True, timeout=10).execute('select count(*) from honey').fetchone()[0] - $ROWS_BEFORE)")
CHECK_LINE=$(grep '^checked=' "$OUT/wrk_mixed.txt" || echo "checked=0 wrong=-1")
WRONG=$(sed -n 's/.*wrong=\(-\?[0-9]*\).*/\1/p' <<<"$CHECK_LINE")
CHECKED=$(sed -n 's/^checked=\([0-9]*\).*/\1/p' <<<"$CHECK_LINE")
RES[mixed]=$(parse_wrk "$OUT/wrk_mixed.txt")
LOAD[mixed]=$(cut -d' ' -f1 /proc/loadavg)
HWM_KB=$(awk '/^VmHWM/ {print $2}' /proc/$DAEMON_PID/status)
curl -s "$BASE/metrics" >"$OUT/metrics.txt"
log "mixed: sent $SENT stored $STORED; $CHECK_LINE; wrk ${RES[mixed]}"

# ---- stop ----------------------------------------------------------------------------------
kill -TERM "$DAEMON_PID"
RC=0
wait "$DAEMON_PID" || RC=$?
DAEMON_PID=""

# ---- summary -------------------------------------------------------------------------------
verdict() { if "$PY" -c "import sys; sys.exit(0 if $1 else 1)"; then echo PASS; else echo MISS; fi; }
field() { awk -v i="$2" '{print $i}' <<<"${RES[$1]}"; }
{
    echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
    echo "binary: $BIN ($("$BIN" -V 2>&1 | head -1))"
    echo "database: $(cat "$OUT/fill.json")"
    echo "daemon: ${DAEMON_CMD[*]}"
    echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "daemon: startup to ready ${STARTUP_S} s (index load), RSS after start ${RSS_IDLE_KB} kB, exit code $RC"
    printf '%-16s %10s %10s %10s %8s %-14s %9s %10s %s\n' run req/s p50_us p99_us non2xx socket_errors requests cpu_us/req load
    for k in known_number unknown_number known_ip one_connection mixed; do
        printf '%-16s %10s %10s %10s %8s %-14s %9s %10s %s\n' "$k" ${RES[$k]} "${CPU[$k]:--}" "${LOAD[$k]}"
    done
    echo "GET /numbers: $NUMBERS_TOTAL entries, $NUMBERS_BYTES bytes, median ${NUMBERS_MEDIAN_MS} ms (max ${NUMBERS_MAX_MS} ms, first byte ${NUMBERS_TTFB_MS} ms), daemon CPU ${NUMBERS_CPU_MS} ms per request"
    echo "peak RSS (VmHWM): after start ${RSS_IDLE_KB} kB, after the lookup runs ${HWM_LOOKUPS_KB} kB, after GET /numbers ${HWM_NUMBERS_KB} kB, after the mixed run (+$SENT events stored) ${HWM_KB} kB"
    echo "mixed: UDP events sent $SENT (target $MIXED_COUNT), rows stored $STORED, lost $((SENT - STORED)); lookups $CHECK_LINE"
    echo "targets:"
    for known in known_number unknown_number known_ip; do
        v=$(verdict "$(field $known 1) >= 50000")
        echo "  $known >= 50,000 req/s: $(field $known 1) $v"
        v=$(verdict "$(field $known 3) <= 2000")
        echo "  $known p99 <= 2 ms: $(field $known 3) us $v"
    done
    v=$(verdict "$(field one_connection 2) <= 50")
    echo "  one-connection p50 <= 50 us: $(field one_connection 2) us $v"
    v=$(verdict "$NUMBERS_MEDIAN_MS <= 100")
    echo "  GET /numbers (100k) <= 100 ms: median $NUMBERS_MEDIAN_MS ms $v"
    v=$(verdict "$HWM_NUMBERS_KB <= 40960")
    echo "  peak RSS <= 40 MB (through GET /numbers): $((HWM_NUMBERS_KB / 1024)) MB $v"
    v=$(verdict "$SENT - $STORED == 0 and $SENT == $MIXED_COUNT")
    echo "  mixed: 0 events lost: $((SENT - STORED)) lost $v"
    v=$(verdict "$WRONG == 0 and $CHECKED > 0")
    echo "  mixed: 0 wrong answers: $WRONG of $CHECKED $v"
    [ -s "$OUT/perf-top.txt" ] && { echo "perf (daemon, known-number run), top symbols:"; head -25 "$OUT/perf-top.txt"; }
    echo "raw outputs: $OUT"
} | tee "$OUT/summary.txt"
# (the block above runs in a subshell: the verdicts are read back from the file)
if grep -q ' MISS$' "$OUT/summary.txt"; then exit 1; fi
exit 0
