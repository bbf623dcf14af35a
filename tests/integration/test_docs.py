"""The shell examples in README.md and docs/*.md run as written, so the docs cannot drift.

Convention (also in docs/TESTING.md):
- Fenced blocks tagged ```sh, ```bash or ```shell are run; ```console (a transcript with
  prompts and output) and every other tag are not.
- An HTML comment on the lines just above the fence (blank lines allowed) controls a block:
    <!-- not-run: REASON -->   not run; the test prints REASON (and is reported as skipped)
    <!-- daemon: ARGS -->      start `sentrypeer ARGS` before the block (see below)
- `sentrypeer` and `build/release/src/sentrypeer` are the binary under test
  ($SENTRYPEER_BIN, else build/release/src/sentrypeer).
- A command that runs `sentrypeer` as a daemon (not --version/--help/--check-config) is
  started in the background, as in its own terminal: it must print its ready line, still be
  running when the block ends, and exit 0 on SIGTERM. The other commands run in order with
  bash `set -eo pipefail`, consecutive ones in one shell.
- A block that talks to the API (127.0.0.1:8082 or localhost:8082) and starts no daemon of
  its own runs against the daemon `scripts/run` starts (responsive, API, JSON log, data in
  ./data, SIP on 127.0.0.1:5060, TLS on 127.0.0.1:5061), or `sentrypeer ARGS` with
  <!-- daemon: ARGS -->.
- Each block runs in a fresh temporary directory and a fresh network namespace
  (`unshare -n`, loopback up), so it may bind the documented ports and change firewall
  rules. That needs root: elsewhere every block is skipped, saying so. Each block is bounded
  (BLOCK_TIMEOUT seconds).

This file is also the runner executed inside the namespace:
  /usr/bin/python3 test_docs.py --run-block BLOCK.json
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DOC_FILES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
RUN_TAGS = {"sh", "bash", "shell"}
BLOCK_TIMEOUT = 120.0  # seconds for a whole block, daemons included
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0
ONE_SHOT_FLAGS = {"--version", "-V", "--help", "-h", "--check-config"}
# What scripts/run starts (keep in sync with it).
SCRIPTS_RUN_ARGS = ("-r -a -j -f data/sentrypeer.db -l data/sentrypeer_json.log --data-dir data "
                    "--sip-listen 127.0.0.1:5060 -z 127.0.0.1:5061")
API_RE = re.compile(r"\b(127\.0\.0\.1|localhost):8082\b")
DIRECTIVE_RE = re.compile(r"^<!--\s*([a-z-]+)\s*(?::\s*(.*?))?\s*-->$")
READY_RE = re.compile(r"\bready\b", re.IGNORECASE)


def extract_blocks(path: Path) -> list:
    """Every fenced block of a Markdown file tagged with a RUN_TAGS language."""
    blocks = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)(`{3,})\s*([A-Za-z0-9_+-]*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        indent, fence, tag = m.group(1), m.group(2), m.group(3).lower()
        start = i
        body = []
        i += 1
        while i < len(lines) and not re.match(rf"^\s*{fence}\s*$", lines[i]):
            line = lines[i]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            i += 1
        i += 1  # the closing fence
        if tag not in RUN_TAGS:
            continue
        directives = {}
        j = start - 1
        while j >= 0 and (not lines[j].strip() or DIRECTIVE_RE.match(lines[j].strip())):
            d = DIRECTIVE_RE.match(lines[j].strip())
            if d:
                directives.setdefault(d.group(1), d.group(2) or "")
            j -= 1
        name = str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)
        blocks.append({"file": name, "line": start + 1,
                       "text": "\n".join(body) + "\n", "directives": directives})
    return blocks


def split_commands(text: str) -> list:
    """Shell commands of a block: continuation lines joined, blank and comment lines dropped."""
    commands, current = [], ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        commands.append((current + line).strip())
        current = ""
    if current.strip():
        commands.append(current.strip())
    return commands


def substitute(command: str) -> str:
    return re.sub(r"(\./)?build/release/src/sentrypeer\b", "sentrypeer", command)


def is_daemon(command: str) -> bool:
    try:
        words = shlex.split(command, comments=True)
    except ValueError:
        return False
    return bool(words) and words[0] == "sentrypeer" and not (set(words) & ONE_SHOT_FLAGS)


# --------------------------------------------------------------------------------------
# The runner (inside the namespace)
# --------------------------------------------------------------------------------------

def run_block(block: dict, binary: str) -> int:
    deadline = time.monotonic() + BLOCK_TIMEOUT - 10
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    work = Path(tempfile.mkdtemp(prefix="sp-docs-"))
    bindir = work / ".bin"
    bindir.mkdir()
    (bindir / "sentrypeer").symlink_to(binary)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTRYPEER_")}
    env["PATH"] = f"{bindir}:{env.get('PATH', '/usr/bin:/bin')}"
    commands = [substitute(c) for c in split_commands(block["text"])]
    print(f"-- {block['file']}:{block['line']} in {work} (fresh network namespace)")

    daemons = []  # (command, Popen, log path)

    def start_daemon(command: str) -> bool:
        log = work / f".daemon{len(daemons)}.log"
        print(f"$ {command} &")
        with open(log, "wb") as out:
            p = subprocess.Popen(["bash", "-c", "exec " + command], cwd=work, env=env,
                                 stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        daemons.append((command, p, log))
        until = min(deadline, time.monotonic() + READY_TIMEOUT)
        while time.monotonic() < until:
            text = log.read_text(errors="replace")
            if READY_RE.search(text):
                return True
            if p.poll() is not None:
                print(f"FAIL: exited with status {p.returncode} before it was ready:\n{text}")
                return False
            time.sleep(0.1)
        print(f"FAIL: no ready line within {READY_TIMEOUT:.0f} s:\n"
              f"{log.read_text(errors='replace')}")
        return False

    def run_chunk(chunk: list) -> bool:
        script = "set -eo pipefail\n" + "\n".join(chunk) + "\n"
        for c in chunk:
            print(f"$ {c}")
        try:
            p = subprocess.run(["bash", "-c", script], cwd=work, env=env, text=True,
                               errors="replace", stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired as e:
            print(f"FAIL: did not finish in time (a daemon started in a way this test does "
                  f"not recognise?); output:\n{e.stdout}")
            return False
        print(p.stdout, end="")
        if p.returncode != 0:
            print(f"FAIL: exit status {p.returncode}")
            return False
        return True

    ok = True
    try:
        starts_own = any(is_daemon(c) for c in commands)
        if "daemon" in block["directives"] or (not starts_own and
                                               any(API_RE.search(c) for c in commands)):
            args = block["directives"].get("daemon") or SCRIPTS_RUN_ARGS
            (work / "data").mkdir(exist_ok=True)
            print("(the daemon the example expects is running first)")
            ok = start_daemon("sentrypeer " + args)
        chunk = []
        for c in commands if ok else []:
            if is_daemon(c):
                if chunk and not run_chunk(chunk):
                    ok = False
                    break
                chunk = []
                if not start_daemon(c):
                    ok = False
                    break
            else:
                chunk.append(c)
        if ok and chunk:
            ok = run_chunk(chunk)
        if ok and daemons:
            time.sleep(1.0)  # a daemon failing just after its ready line is caught here
    finally:
        running = []
        for command, p, log in daemons:
            if p.poll() is not None:
                if ok:  # else its failure was reported already
                    print(f"FAIL: `{command}` exited (status {p.returncode}) before the end:"
                          f"\n{log.read_text(errors='replace')[-4000:]}")
                ok = False
                continue
            p.send_signal(signal.SIGTERM)
            running.append((command, p, log))
        for command, p, log in running:
            try:
                rc = p.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                print(f"FAIL: `{command}` did not exit within {STOP_TIMEOUT:.0f} s of SIGTERM")
                ok = False
                continue
            if rc != 0:
                print(f"FAIL: `{command}` exited with status {rc} on SIGTERM:\n"
                      f"{log.read_text(errors='replace')[-4000:]}")
                ok = False
        shutil.rmtree(work, ignore_errors=True)
    print("-- ok" if ok else "-- failed")
    return 0 if ok else 1


# --------------------------------------------------------------------------------------
# The tests (outside the namespace)
# --------------------------------------------------------------------------------------

if __name__ != "__main__":
    import pytest

    from conftest import sentrypeer_bin

    BLOCKS = [b for f in DOC_FILES if f.exists() for b in extract_blocks(f)]

    def test_docs_have_shell_examples():
        """The extraction finds the examples this test exists for (a broken parser would
        otherwise make every docs test vanish)."""
        files = {b["file"] for b in BLOCKS}
        assert "README.md" in files and "docs/P2P.md" in files, files
        assert len(BLOCKS) >= 4, BLOCKS

    @pytest.mark.slow
    @pytest.mark.parametrize("block", BLOCKS, ids=[f"{b['file']}:{b['line']}" for b in BLOCKS])
    def test_shell_example_runs(block, tmp_path):
        reason = block["directives"].get("not-run")
        if reason is not None:
            msg = f"{block['file']}:{block['line']} not run: {reason or '(no reason given)'}"
            print(msg)
            pytest.skip(msg)
        if os.geteuid() != 0:
            msg = "docs examples run in a network namespace (unshare -n): needs root"
            print(f"SKIP: {msg}")
            pytest.skip(msg)
        binary = sentrypeer_bin()
        spec = tmp_path / "block.json"
        spec.write_text(json.dumps(block))
        try:
            p = subprocess.run(["unshare", "-n", "/usr/bin/python3", __file__, "--run-block",
                                str(spec), str(binary)], capture_output=True, text=True,
                               errors="replace", timeout=BLOCK_TIMEOUT + 30,
                               stdin=subprocess.DEVNULL, cwd=tmp_path)
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"{block['file']}:{block['line']} did not finish within "
                        f"{BLOCK_TIMEOUT + 30:.0f} s:\n{e.stdout}\n{e.stderr}")
        print(p.stdout, p.stderr)
        assert p.returncode == 0, (f"the example at {block['file']}:{block['line']} fails as "
                                   f"written:\n{block['text']}\n{p.stdout}\n{p.stderr}")

    def test_every_metrics_family_is_documented(make_daemon, tmp_path):
        """docs/METRICS.md lists every family /metrics exposes (all sinks and peer to peer
        on), each with its label names in /metrics order: `name{label,label}` or `name`."""
        from conftest import free_port
        from test_p2p import free_udp_port, private_network
        import urllib.request

        api = free_port(udp=False)
        hook = free_port(udp=False)  # nothing listens: the webhook's counters exist anyway
        d = make_daemon(tls=True, args=[
            "-a", "--api-listen", f"127.0.0.1:{api}", "-j", "-l", str(tmp_path / "j.log"),
            "-w", f"http://127.0.0.1:{hook}/events", "--dht-port", str(free_udp_port()),
            "--dht-network", str(private_network()), "--dht-no-rate-limit",
            "-b", f"127.0.0.1:{free_udp_port()}"])
        d.barrier()  # one event, so labelled families have a sample
        for _ in range(2):  # the second answer counts the first request too
            with urllib.request.urlopen(f"http://127.0.0.1:{api}/metrics", timeout=5) as r:
                text = r.read().decode()
        exposed = {}
        for line in text.splitlines():
            m = re.match(r"^# TYPE (sentrypeer_\w+) ", line)
            if m:
                exposed.setdefault(m.group(1), ())
                continue
            m = re.match(r"^(sentrypeer_\w+)(?:\{(.*)\})? ", line)
            if m and m.group(2) and not exposed.get(m.group(1)):
                exposed[m.group(1)] = tuple(re.findall(r'(\w+)="', m.group(2)))
        assert len(exposed) >= 20, text
        doc = (REPO_ROOT / "docs" / "METRICS.md").read_text()
        missing = []
        for name, labels in sorted(exposed.items()):
            want = f"`{name}{{{','.join(labels)}}}`" if labels else f"`{name}`"
            if want not in doc:
                missing.append(want)
        assert not missing, ("docs/METRICS.md does not document (labels in /metrics order, "
                             "comma-separated, no spaces):\n" + "\n".join(missing))

    def test_convention_parser(tmp_path):
        """Directives, continuation lines and daemon detection, on a made-up document."""
        doc = tmp_path / "x.md"
        doc.write_text("text\n\n<!-- not-run: needs a phone -->\n\n```sh\nsipp a\n```\n\n"
                       "```console\n$ ls\n```\n\n<!-- daemon: -a -->\n```bash\n"
                       "sentrypeer -f a.db \\\n    --no-tls\nsentrypeer --version\n```\n")
        got = extract_blocks(doc)
        assert [(b["line"], b["directives"]) for b in got] == [
            (5, {"not-run": "needs a phone"}), (14, {"daemon": "-a"})]
        cmds = split_commands(got[1]["text"])
        assert cmds == ["sentrypeer -f a.db      --no-tls", "sentrypeer --version"]
        assert is_daemon(cmds[0]) and not is_daemon(cmds[1])
        assert substitute("build/release/src/sentrypeer -V") == "sentrypeer -V"


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--run-block":
        sys.exit(run_block(json.loads(Path(sys.argv[2]).read_text()), sys.argv[3]))
    sys.exit("usage: test_docs.py --run-block BLOCK.json SENTRYPEER_BIN")
