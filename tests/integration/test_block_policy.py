"""The blocking policy's options at the daemon: --allow/--allow-file/--block-after/
--peer-min-reporters are validated at startup (exit 2 for a bad value, exit 1 for an
unreadable allow file, one line naming it), the allow file is re-read on SIGHUP (a broken
file keeps the previous list), and /metrics shows the never-block list and the reloads.

Run: /usr/bin/python3 -m pytest tests/integration/test_block_policy.py -v
"""

import re
import signal
import time
import urllib.request

import pytest

from conftest import free_port, run_binary


def metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as r:
        return r.read().decode()


def metric(text: str, name: str) -> int:
    m = re.search(r"^sentrypeer_%s (\d+)$" % re.escape(name), text, re.M)
    assert m, f"no sentrypeer_{name} in /metrics:\n{text}"
    return int(m.group(1))


def wait_metric(port: int, name: str, value: int, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = metrics(port)
        if metric(text, name) == value:
            return text
        assert time.monotonic() < deadline, f"sentrypeer_{name} != {value}:\n{text}"
        time.sleep(0.05)


ALLOW = 'block_never_block_entries{source="allow"}'


@pytest.mark.parametrize("args,env,message", [
    (["--allow", "10.0.0.1/8"], {},
     "sentrypeer: --allow: '10.0.0.1/8' is not a CIDR or an address: host bits are set "
     "(the network is 10.0.0.0/8)"),
    (["--allow", "192.0.2.0/33"], {},
     "sentrypeer: --allow: '192.0.2.0/33' is not a CIDR or an address: the prefix length is "
     "more than 32"),
    ([], {"SENTRYPEER_ALLOW": "192.0.2.0/24,nonsense"},
     "sentrypeer: SENTRYPEER_ALLOW: 'nonsense' is not a CIDR or an address: not an IPv4 or "
     "IPv6 address"),
    (["--block-after", "0"], {}, "sentrypeer: --block-after: Value 0 not in range 1 to 1000000000"),
    (["--peer-min-reporters", "-1"], {}, None),
    (["--p2p-max-peer-rate", "0"], {}, None),
])
def test_bad_values_exit_2_with_one_line(args, env, message, tmp_path):
    res = run_binary(["-f", tmp_path / "x.db", "--no-p2p", *args], env=env)
    assert res.returncode == 2, (res.returncode, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    if message:
        assert lines[0] == message
    else:
        assert lines[0].startswith(f"sentrypeer: {args[0]}"), lines


def test_unreadable_allow_file_exits_1_naming_it(tmp_path):
    missing = tmp_path / "nope.txt"
    res = run_binary(["-f", tmp_path / "x.db", "--no-p2p", "-R", "--allow-file", missing])
    assert res.returncode == 1, (res.returncode, res.stderr)
    assert res.stderr.strip().endswith(
        f"--allow-file {missing}: cannot read: No such file or directory"), res.stderr
    bad = tmp_path / "bad.txt"
    bad.write_text("# trunks\n198.51.100.0/24\n198.51.100.1/24\n")
    res = run_binary(["-f", tmp_path / "x.db", "--no-p2p", "-R", "--allow-file", bad])
    assert res.returncode == 1, (res.returncode, res.stderr)
    assert res.stderr.strip().endswith(
        f"--allow-file {bad} line 3: '198.51.100.1/24' is not a CIDR: host bits are set (the "
        "network is 198.51.100.0/24)"), res.stderr


def test_allow_list_sources_and_sighup_reload(make_daemon, tmp_path):
    allow = tmp_path / "allow.txt"
    allow.write_text("# our trunks\n198.51.100.0/24   # carrier\n\n2001:db8:5::/48\n")
    api = free_port(udp=False)
    d = make_daemon(args=["-a", "--api-listen", f"127.0.0.1:{api}", "--allow", "192.0.2.1",
                          "--allow", "203.0.113.0/24", "--allow-file", allow])
    text = metrics(api)
    assert metric(text, ALLOW) == 4  # 2 from --allow, 2 from the file
    assert metric(text, 'block_never_block_entries{source="builtin"}') == 9
    assert metric(text, 'block_never_block_entries{source="own"}') >= 1
    assert metric(text, "block_policy_reloads_total") == 0

    allow.write_text("198.51.100.0/24\n2001:db8:5::/48\n2001:db8:6::/48\n")
    d.send_signal(signal.SIGHUP)
    text = wait_metric(api, "block_policy_reloads_total", 1)
    assert metric(text, ALLOW) == 5
    assert metric(text, "block_policy_reload_failures_total") == 0

    # A broken file: the previous list stays, one error line, counted.
    allow.write_text("198.51.100.0/24\nnot-a-cidr\n")
    d.send_signal(signal.SIGHUP)
    text = wait_metric(api, "block_policy_reload_failures_total", 1)
    assert metric(text, ALLOW) == 5
    assert metric(text, "block_policy_reloads_total") == 1
    deadline = time.monotonic() + 5  # the log line may trail the counter
    while not any("reload failed" in l for l in d.stderr_lines) and time.monotonic() < deadline:
        time.sleep(0.05)
    errors = [l for l in d.stderr_lines if "reload failed" in l]
    assert len(errors) == 1 and errors[0].endswith(
        f"block policy: reload failed, keeping the previous lists: --allow-file {allow} line 2: "
        "'not-a-cidr' is not a CIDR: not an IPv4 or IPv6 address"), d.stderr
    assert d.alive()


def test_allow_as_toml_list_and_env(make_daemon, tmp_path):
    conf = tmp_path / "sp.toml"
    conf.write_text('allow = ["192.0.2.0/24", "2001:db8::/32", "198.51.100.1"]\n'
                    'peer_min_reporters = 0\nblock_after = 3\n')
    api = free_port(udp=False)
    d = make_daemon(args=["-g", conf, "-a", "--api-listen", f"127.0.0.1:{api}"])
    assert metric(metrics(api), ALLOW) == 3
    d.stop()
    api = free_port(udp=False)
    make_daemon(args=["-a", "--api-listen", f"127.0.0.1:{api}"],
                env={"SENTRYPEER_ALLOW": "192.0.2.0/24,198.51.100.1"})
    assert metric(metrics(api), ALLOW) == 2
    conf.write_text('allow = ["192.0.2.0/24", "192.0.2.1/24"]\n')
    res = run_binary(["-g", conf, "-f", tmp_path / "x.db", "--no-p2p"])
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip() == (f"sentrypeer: {conf}:1: allow: '192.0.2.1/24' is not a CIDR "
                                  "or an address: host bits are set (the network is "
                                  "192.0.2.0/24)")
