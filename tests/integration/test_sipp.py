"""sipp (package sip-tester) runs its built-in UAC scenario (INVITE, ACK, BYE) against a
responsive daemon: every call must complete (sipp exit 0) and every request be recorded."""

import collections

import pytest

from conftest import free_port, require_tool, run_tool

CALLS = 10
NUMBER = "4471234567"


@pytest.mark.parametrize("transport", ["UDP", "TCP"])
def test_sipp_uac_calls_complete_and_are_recorded(make_daemon, transport):
    sipp = require_tool("sipp", "sip-tester")
    d = make_daemon(responsive=True)
    # sipp binds -p for UDP and, with -t t1, for its one TCP connection too.
    sipp_port = free_port(tcp=True, udp=True)
    cmd = [sipp, "-sn", "uac", "-i", "127.0.0.1", "-p", sipp_port, "-s", NUMBER,
           f"127.0.0.1:{d.sip_port}", "-m", CALLS, "-nostdin", "-recv_timeout", "3000",
           "-timeout", "30s", "-timeout_error", "-trace_err", "-error_file", d.workdir / "sipp_errors.log"]
    if transport == "TCP":
        cmd += ["-t", "t1"]
    res = run_tool(cmd, timeout=60, cwd=d.workdir)
    errors = (d.workdir / "sipp_errors.log")
    assert res.returncode == 0, (
        f"sipp exited {res.returncode} (0 = all {CALLS} calls succeeded)\nstdout tail:\n"
        f"{res.stdout[-3000:]}\nstderr:\n{res.stderr[-2000:]}\nerrors:\n"
        f"{errors.read_text()[-3000:] if errors.exists() else ''}")

    rows = d.wait_for_rows(3 * CALLS, timeout=10)
    d.stop()
    rows = d.rows()  # after exit: nothing else may have been added
    methods = collections.Counter(r["method"] for r in rows)
    assert methods == {"INVITE": CALLS, "ACK": CALLS, "BYE": CALLS}, (
        f"expected {CALLS} INVITE, ACK and BYE rows (no retransmissions), got {dict(methods)}")
    for r in rows:
        assert r["called_number"] == NUMBER, r
        assert r["transport_type"] == transport, r
        assert r["source_ip"] == "127.0.0.1", r
        assert r["source_port"] == sipp_port, r
        assert r["destination_ip"] == "127.0.0.1", r
        assert r["destination_port"] == d.sip_port, r
        assert r["collected_method"] == "responsive", r
        assert r["user_agent"] == "NOT_FOUND", r  # sipp sends no User-Agent
        assert r["origin"] == "local", r
        assert r["sip_message"].startswith(f"{r['method']} sip:{NUMBER}@127.0.0.1"), r
    # One INVITE, ACK and BYE per Call-ID.
    per_call = collections.defaultdict(list)
    for r in rows:
        call_id = next(l for l in r["sip_message"].split("\r\n") if l.startswith("Call-ID:"))
        per_call[call_id].append(r["method"])
    assert len(per_call) == CALLS, per_call.keys()
    for call_id, ms in per_call.items():
        assert sorted(ms) == ["ACK", "BYE", "INVITE"], (call_id, ms)
