"""sipvicious (svmap, svwar: UDP, user agent "friendly-scanner") against a responsive daemon.

svwar reports only extensions whose answer differs from its probe of a random extension;
a honeypot answers everything alike, so we assert on what the daemon recorded."""

from conftest import free_port, require_tool, run_tool


def run_sipvicious(tool: str, d, args: list, timeout: float = 90):
    exe = require_tool(tool, "sipvicious")
    local_port = free_port(tcp=False, udp=True)
    cmd = [exe, "-P", local_port, f"-p{d.sip_port}", *args, "127.0.0.1"]
    res = run_tool(cmd, timeout=timeout, cwd=d.workdir, env={"HOME": str(d.workdir)})
    return local_port, res


def test_svmap_options_recorded(make_daemon):
    d = make_daemon(responsive=True)
    port, res = run_sipvicious("svmap", d, [])
    assert res.returncode == 0, f"svmap exited {res.returncode}: {res.stdout}\n{res.stderr}"
    # svmap prints a table row for every SIP device that answered: ours must be there.
    assert f"127.0.0.1:{d.sip_port}" in res.stdout, (
        f"svmap did not find the responsive daemon:\n{res.stdout}\n{res.stderr}")
    rows = d.wait_for_rows(1, "source_port = ?", (port,))
    for r in rows:
        assert r["user_agent"] == "friendly-scanner", r
        assert r["method"] == "OPTIONS", r
        assert r["transport_type"] == "UDP", r
        assert r["source_ip"] == "127.0.0.1", r
        assert r["collected_method"] == "responsive", r


def test_svwar_extensions_recorded(make_daemon):
    d = make_daemon(responsive=True)
    port, res = run_sipvicious("svwar", d, ["-e", "100-120"])
    assert res.returncode == 0, f"svwar exited {res.returncode}: {res.stdout}\n{res.stderr}"
    wanted = [str(n) for n in range(100, 121)]
    rows = d.wait_for_rows(len(wanted), "source_port = ? AND called_number IN (%s)"
                           % ",".join("?" * len(wanted)), (port, *wanted), timeout=10)
    numbers = {r["called_number"] for r in rows}
    assert set(wanted) <= numbers, f"extensions never recorded: {sorted(set(wanted) - numbers)}"
    all_rows = d.rows("source_port = ?", (port,))
    for r in all_rows:
        assert r["user_agent"] == "friendly-scanner", r
        assert r["method"] == "REGISTER", r  # svwar's default method
        assert r["transport_type"] == "UDP", r
    # Plus its first probe of a random (32-bit) extension, which tells it what "unknown" looks like.
    others = [r["called_number"] for r in all_rows if r["called_number"] not in wanted]
    assert others and all(n.isdigit() for n in others), others


def test_svwar_against_passive_daemon_gets_no_answer(make_daemon):
    """Passive mode sends nothing: svwar gives up after its first probe, which is recorded."""
    d = make_daemon(responsive=False)
    port, res = run_sipvicious("svwar", d, ["-e", "100-102"])
    rows = d.wait_for_rows(1, "source_port = ?", (port,))
    out = res.stdout + res.stderr
    assert "found nothing" in out and ("timed out" in out or "No server response" in out), (
        f"svwar seems to have got an answer from a passive daemon:\n{res.stdout}\n{res.stderr}")
    assert all(r["collected_method"] == "passive" for r in rows), rows
    assert not {r["called_number"] for r in rows} & {"100", "101", "102"}, rows
