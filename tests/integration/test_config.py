"""Command line, SENTRYPEER_* environment, TOML config file: values, precedence, errors."""

import re
import socket

import pytest

from conftest import (StreamClient, UdpClient, free_port, new_call_id, nonempty_lines,
                      run_binary)


def base_args(tmp_path, sip_port=None):
    return ["-f", tmp_path / "x.db", "--data-dir", tmp_path / "data", "--sip-listen",
            f"127.0.0.1:{sip_port or free_port()}", "--no-tls"]


def assert_usage_error(res, *names):
    """Exit 2 and exactly one stderr line naming the option (and value)."""
    assert res.returncode == 2, f"exit {res.returncode}, expected 2; stderr: {res.stderr!r}"
    lines = nonempty_lines(res.stderr)
    assert len(lines) == 1, f"expected one error line, got {lines!r}"
    for n in names:
        assert n in lines[0], f"{n!r} not named in {lines[0]!r}"


@pytest.mark.parametrize("args, names", [
    (["--max-age", "abc"], ["max-age", "abc"]),
    (["--sip-listen", "nonsense"], ["sip-listen", "nonsense"]),
    (["--sip-listen", "127.0.0.1:99999"], ["sip-listen", "99999"]),
    (["--sip-listen", "localhost:5060"], ["sip-listen", "localhost"]),
    (["--sip-agent", "500"], ["sip-agent", "500"]),
    (["--tcp-max-per-ip", "-3"], ["tcp-max-per-ip"]),
    (["--tcp-idle-timeout", "soon"], ["tcp-idle-timeout", "soon"]),
    (["--no-such-flag"], ["--no-such-flag"]),
    (["-z", "1.2.3"], ["1.2.3"]),
])
def test_bad_flag_value_exits_2_naming_it(tmp_path, args, names):
    res = run_binary(base_args(tmp_path) + args)
    assert_usage_error(res, *names)


@pytest.mark.parametrize("var, value", [
    ("SENTRYPEER_SIP_RESPONSIVE", "maybe"),
    ("SENTRYPEER_MAX_AGE", "forever"),
    ("SENTRYPEER_TLS_LISTEN_ADDRESS", "nowhere"),
])
def test_bad_env_value_exits_2_naming_it(tmp_path, var, value):
    res = run_binary(base_args(tmp_path)[:-1], env={var: value})  # without --no-tls
    assert_usage_error(res, var, value)


def test_bad_config_file_value_exits_2(tmp_path):
    cfg = tmp_path / "sp.toml"
    cfg.write_text('max_age = "abc"\n')
    res = run_binary(base_args(tmp_path) + ["-g", cfg])
    assert_usage_error(res, "abc")
    assert "max_age" in res.stderr or "max-age" in res.stderr, res.stderr


@pytest.mark.parametrize("content, names", [
    ("this is not toml\n", []),
    ("no_such_key = 1\n", ["no_such_key"]),
])
def test_broken_config_file_exits_2_naming_file(tmp_path, content, names):
    """A config file error names the file (and the offending key when there is one)."""
    cfg = tmp_path / "sp.toml"
    cfg.write_text(content)
    res = run_binary(base_args(tmp_path) + ["-g", cfg])
    assert_usage_error(res, str(cfg), *names)


def test_missing_config_file_exits_non_zero(tmp_path):
    res = run_binary(base_args(tmp_path) + ["-g", tmp_path / "nope.toml"])
    assert res.returncode != 0
    assert "nope.toml" in res.stderr, res.stderr


def test_check_config(tmp_path):
    port = free_port()
    res = run_binary(base_args(tmp_path, port) + ["--check-config", "-r", "--max-age", "12h"])
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert f"127.0.0.1:{port}" in out, out
    assert re.search(r"sip_responsive\s*=\s*true", out), out
    # It checks and exits: nothing listens, no database is created.
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", port))
    s.close()


def test_version(version_string):
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", version_string)
    res = run_binary(["--version"])
    assert res.returncode == 0 and version_string in res.stdout, res


def test_help_lists_flags():
    res = run_binary(["-h"])
    assert res.returncode == 0, res.stderr
    for flag in ("--db-file", "--sip-responsive", "--sip-listen", "--tls-listen", "--json-log",
                 "--syslog", "--max-age", "--check-config"):
        assert flag in res.stdout, f"{flag} missing from --help"


# ---- responsive from env / file / command line ----------------------------------------------

def is_responsive(d) -> bool:
    call_id = new_call_id()
    with UdpClient(d.sip_port) as c:
        c.request("OPTIONS", call_id=call_id)
        reply = c.recv(1.0)
    row = d.rows_with(call_id)[0]
    assert row["collected_method"] == ("responsive" if reply else "passive"), (reply, row)
    return reply is not None


@pytest.mark.parametrize("value, expected", [
    ("1", True), ("true", True), ("yes", True), ("on", True), ("TRUE", True),
    ("0", False), ("false", False), ("no", False), ("off", False),
])
def test_env_sip_responsive(make_daemon, value, expected):
    d = make_daemon(env={"SENTRYPEER_SIP_RESPONSIVE": value})
    assert is_responsive(d) == expected, f"SENTRYPEER_SIP_RESPONSIVE={value}"


@pytest.mark.parametrize("file_value, env_value, cli_r, expected", [
    ("true", None, False, True),     # file alone
    ("false", None, False, False),
    ("true", "0", False, False),     # env beats file
    ("false", "1", False, True),
    ("false", "0", True, True),      # command line beats env
])
def test_responsive_precedence(make_daemon, tmp_path, file_value, env_value, cli_r, expected):
    cfg = tmp_path / "sentrypeer.toml"
    cfg.write_text(f"# test config\nsip_responsive = {file_value}\n")
    env = {} if env_value is None else {"SENTRYPEER_SIP_RESPONSIVE": env_value}
    d = make_daemon(args=["-g", cfg], env=env, responsive=cli_r)
    assert is_responsive(d) == expected


def test_config_file_from_env(make_daemon, tmp_path):
    cfg = tmp_path / "sentrypeer.toml"
    cfg.write_text("sip_responsive = true\n")
    d = make_daemon(env={"SENTRYPEER_CONFIG_FILE": str(cfg)})
    assert is_responsive(d)


def test_config_file_tls_listen_address(make_daemon, tmp_path):
    """SentryPeer's config keys: tls_listen_address (cert/key: see test_tls.py)."""
    tls_port = free_port(udp=False)
    cfg = tmp_path / "sentrypeer.toml"
    cfg.write_text(f'tls_listen_address = "127.0.0.1:{tls_port}"\nsip_responsive = true\n')
    d = make_daemon(args=["-g", cfg], tls=None)
    call_id = new_call_id()
    with StreamClient(tls_port, tls=True) as c:
        c.request("OPTIONS", call_id=call_id)
        assert c.recv_message(2.0) is not None, "no TLS reply on the config file's address"
    assert d.rows_with(call_id)[0]["transport_type"] == "TLS"
    d.stop()
    # --no-tls on the command line beats the file: nothing listens there.
    d2 = make_daemon(args=["-g", cfg], tls=False)
    with pytest.raises(OSError):
        StreamClient(tls_port, tls=True, timeout=2).close()
    d2.stop()


def test_env_tls_listen_address(make_daemon):
    tls_port = free_port(udp=False)
    d = make_daemon(tls=None, responsive=True,
                    env={"SENTRYPEER_TLS_LISTEN_ADDRESS": f"127.0.0.1:{tls_port}"})
    with StreamClient(tls_port, tls=True) as c:
        c.request("OPTIONS")
        assert c.recv_message(2.0) is not None


def test_env_db_file_and_json_log(make_daemon, tmp_path):
    db = tmp_path / "env.db"
    log = tmp_path / "env.json"
    d = make_daemon(db=db, db_flag=False,
                    env={"SENTRYPEER_DB_FILE": str(db), "SENTRYPEER_JSON_LOG_FILE": str(log)})
    call_id = new_call_id()
    with UdpClient(d.sip_port) as c:
        c.request("OPTIONS", call_id=call_id)
    d.rows_with(call_id)  # reads env.db
    assert call_id in d.wait_json_lines(log, 1)[0]


def test_env_sip_disable(make_daemon):
    port = free_port()
    d = make_daemon(sip=False, args=["--sip-listen", f"127.0.0.1:{port}"],
                    env={"SENTRYPEER_SIP_DISABLE": "1"})
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", port))  # free: no SIP listener
    s.close()
    assert d.alive()


def test_default_data_dir_is_db_directory(make_daemon, tmp_path):
    db = tmp_path / "dbdir" / "honey.db"
    db.parent.mkdir()
    d = make_daemon(db=db, data_dir_flag=False)
    is_responsive(d)
    node_id = (db.parent / "node-id").read_text().strip()
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", node_id)


def test_cli_db_file_beats_env(make_daemon, tmp_path):
    env_db = tmp_path / "env.db"
    d = make_daemon(env={"SENTRYPEER_DB_FILE": str(env_db)})
    is_responsive(d)  # reads the -f database
    assert not env_db.exists()


# ---- startup failures ---------------------------------------------------------------------

def test_unreadable_cert_exits_naming_file(tmp_path):
    missing = tmp_path / "no-such-cert.pem"
    res = run_binary(base_args(tmp_path)[:-1] + ["-z", f"127.0.0.1:{free_port(udp=False)}",
                                                  "-t", missing, "-k", missing])
    assert res.returncode != 0, res
    assert str(missing) in res.stderr, res.stderr
    assert len(nonempty_lines(res.stderr)) <= 3, res.stderr


def test_garbage_cert_exits_naming_file(tmp_path):
    cert = tmp_path / "cert.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    key = tmp_path / "key.pem"
    key.write_text("garbage\n")
    res = run_binary(base_args(tmp_path)[:-1] + ["-z", f"127.0.0.1:{free_port(udp=False)}",
                                                  "-t", cert, "-k", key])
    assert res.returncode != 0, res
    assert str(cert) in res.stderr or str(key) in res.stderr, res.stderr


@pytest.mark.parametrize("kind", ["udp", "tcp", "tls"])
def test_port_in_use_exits_non_zero(tmp_path, kind):
    port = free_port()
    sock_type = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
    holder = socket.socket(socket.AF_INET, sock_type)
    holder.bind(("127.0.0.1", port))
    if sock_type == socket.SOCK_STREAM:
        holder.listen()
    try:
        if kind == "tls":
            args = base_args(tmp_path)[:-1] + ["-z", f"127.0.0.1:{port}"]
        else:
            args = base_args(tmp_path, port)
        res = run_binary(args)
    finally:
        holder.close()
    assert res.returncode != 0, f"started although {kind} port {port} was taken"
    assert str(port) in res.stderr, res.stderr


def test_unwritable_db_exits_naming_file(tmp_path):
    (tmp_path / "a-file").write_text("")
    db = tmp_path / "a-file" / "x.db"  # its parent is a regular file: cannot be created
    res = run_binary(["-f", db, "--data-dir", tmp_path, "--sip-listen",
                      f"127.0.0.1:{free_port()}", "--no-tls"])
    assert res.returncode != 0
    assert str(db) in res.stderr, res.stderr


# ---- issue 8: errors name their source, unknown keys, ranges, --check-config round trip ------

@pytest.mark.parametrize("var, value", [
    ("SENTRYPEER_PEER_TO_PEER", "maybe"),
    ("SENTRYPEER_DHT_NETWORK", "-1"),
    ("SENTRYPEER_DHT_PORT", "99999"),
])
def test_env_error_names_the_variable_first(tmp_path, var, value):
    """`sentrypeer: VAR: 'value' ...`: the variable is the thing named, not an empty name."""
    res = run_binary(base_args(tmp_path), env={var: value})
    assert_usage_error(res, var, value)
    assert nonempty_lines(res.stderr)[0].startswith(f"sentrypeer: {var}: "), res.stderr


def test_config_file_value_error_names_file_line_and_key(tmp_path):
    cfg = tmp_path / "sp.toml"
    cfg.write_text('# a comment\ndb_file = "x.db"\npeer_to_peer = "maybe"\n')
    res = run_binary(base_args(tmp_path) + ["-g", cfg])
    assert_usage_error(res, "maybe")
    assert nonempty_lines(res.stderr)[0].startswith(f"sentrypeer: {cfg}:3: peer_to_peer: "), \
        res.stderr


@pytest.mark.parametrize("content, line, key", [
    ("p2p = false\n", 1, "p2p"),
    ("sip_responsive = true\nno_p2p = true\n", 2, "no_p2p"),
    ("sip_responsiv = true\n", 1, "sip_responsiv"),
    ("db_file = \"a.db\"\ndb-file = \"b.db\"\n", 2, "db-file"),
])
def test_unknown_or_cli_only_config_key_exits_2(tmp_path, content, line, key):
    """Unknown keys (and command-line-only flags such as p2p) are refused, not ignored."""
    cfg = tmp_path / "sp.toml"
    cfg.write_text(content)
    res = run_binary(base_args(tmp_path) + ["-g", cfg, "--check-config"])
    assert_usage_error(res, f"{cfg}:{line}:", f"'{key}'")
    assert res.stdout == "", "printed a configuration although the file is refused"


def test_sentrypeer_config_keys_still_work(tmp_path):
    cert = tmp_path / "c.pem"
    key = tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("x")
    cfg = tmp_path / "sp.toml"
    cfg.write_text(f'cert = "{cert}"\nkey = "{key}"\ntls_listen_address = "127.0.0.1:6061"\n'
                   "peer_to_peer = false\n")
    res = run_binary(base_args(tmp_path)[:-1] + ["-g", cfg, "--check-config"])
    assert res.returncode == 0, res.stderr
    assert f'\ncert = "{cert}"\n' in res.stdout and f'\nkey = "{key}"\n' in res.stdout
    assert '\ntls_listen = "127.0.0.1:6061"\n' in res.stdout, res.stdout
    assert "\npeer_to_peer = false\n" in res.stdout, res.stdout


@pytest.mark.parametrize("args, names", [
    (["--dht-network", "-1"], ["--dht-network", "-1"]),
    (["--dht-network", "4294967296"], ["--dht-network", "4294967296"]),
    (["-b", "192.0.2.1:99999"], ["--bootstrap", "192.0.2.1:99999"]),
    (["-b", "[2001:db8::1]:0"], ["--bootstrap", "[2001:db8::1]:0"]),
    (["--dht-port", "99999"], ["--dht-port", "99999"]),
    (["--dht-port", "0"], ["--dht-port"]),
    (["--api-listen", "127.0.0.1:65536"], ["--api-listen", "65536"]),
    (["-w", "http://192.0.2.1:99999/hook"], ["--webhook-url", "99999"]),
])
def test_ranges_and_ports_rejected(tmp_path, args, names):
    res = run_binary(base_args(tmp_path) + args + ["--check-config"])
    assert_usage_error(res, *names)


def test_dht_network_upper_bound_accepted(tmp_path):
    res = run_binary(base_args(tmp_path) + ["--dht-network", "4294967295", "--check-config"])
    assert res.returncode == 0, res.stderr
    assert "\ndht_network = 4294967295\n" in res.stdout, res.stdout


def test_check_config_round_trip_with_secret(tmp_path):
    """--check-config output fed back with -g gives the same effective configuration; the
    secret is never in it (neither the token nor a placeholder that would become one)."""
    token = "tok-Zq81-secret"
    client_secret = "cs-77-secret"
    args = base_args(tmp_path) + ["-r", "--max-age", "90m", "--dht-network", "77",
                                  "-b", "192.0.2.1:4333", "--sip-server-header", 'A "b" # c',
                                  "-i", "client-1", "--check-config"]
    env = {"SENTRYPEER_API_TOKEN": token, "SENTRYPEER_OAUTH2_CLIENT_SECRET": client_secret}
    first = run_binary(args, env=env)
    assert first.returncode == 0, first.stderr
    out = first.stdout
    assert token not in out and client_secret not in out, out
    assert "<set>" not in out, out
    assert "\n# api_token = (set; not shown: use SENTRYPEER_API_TOKEN)\n" in out, out
    assert ("\n# oauth2_client_secret = (set; not shown: use SENTRYPEER_OAUTH2_CLIENT_SECRET)\n"
            in out), out
    for line in ('sip_responsive = true', 'max_age = "90m"', 'dht_network = 77',
                 'bootstrap = ["192.0.2.1:4333"]', 'sip_server_header = "A \\"b\\" # c"'):
        assert f"\n{line}\n" in out, f"{line!r} missing from\n{out}"
    cfg = tmp_path / "effective.toml"
    cfg.write_text(out)
    # Read back with only -g (and the secrets' variables): the same configuration.
    again = run_binary(["-g", cfg, "--check-config"], env=env)
    assert again.returncode == 0, again.stderr
    assert again.stdout == out
    # Without the variables the secrets are simply unset, never the placeholder text.
    bare = run_binary(["-g", cfg, "--check-config"])
    assert bare.returncode == 0, bare.stderr
    assert "\n# api_token = (not set: use SENTRYPEER_API_TOKEN)\n" in bare.stdout, bare.stdout
    unset_again = bare.stdout
    for var in env:  # the secrets given above, and only those, read as set
        unset_again = unset_again.replace(f"(not set: use {var})", f"(set; not shown: use {var})")
    assert unset_again == out
