"""An existing SentryPeer database opens, keeps its rows and gains our columns."""

import datetime
import sqlite3
import time

from conftest import UdpClient, db_query, new_call_id, run_binary, free_port

SENTRYPEER_SCHEMA = """
CREATE TABLE IF NOT EXISTS honey (
    honey_id INTEGER PRIMARY KEY,
    event_timestamp TEXT,
    event_uuid TEXT,
    collected_method TEXT,
    source_ip TEXT,
    called_number TEXT,
    transport_type TEXT,
    method TEXT,
    user_agent TEXT,
    sip_message TEXT,
    created_by_node_id TEXT,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP
);
"""
LEGACY_COLUMNS = ["honey_id", "event_timestamp", "event_uuid", "collected_method", "source_ip",
                  "called_number", "transport_type", "method", "user_agent", "sip_message",
                  "created_by_node_id", "created_at"]
NEW_COLUMNS = ["app_version", "source_port", "destination_ip", "destination_port", "origin",
               "event_time", "reporter"]


def sentrypeer_timestamp(dt: datetime.datetime) -> str:
    """SentryPeer prints nanoseconds with minimum width 6: 6 to 9 digits."""
    return dt.strftime("%Y-%m-%d %H:%M:%S.") + f"{dt.microsecond * 1000 + 7:06d}"


def make_legacy_db(path, ages_hours):
    con = sqlite3.connect(path)
    con.executescript(SENTRYPEER_SCHEMA)
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    for i, age in enumerate(ages_hours):
        con.execute(
            "INSERT INTO honey (event_timestamp, event_uuid, collected_method, source_ip, "
            "called_number, transport_type, method, user_agent, sip_message, created_by_node_id)"
            " VALUES (?,?,?,?,?,?,?,?,?,?)",
            (sentrypeer_timestamp(now - datetime.timedelta(hours=age)),
             f"6d7cfd2e-8a1e-4b8c-9d4e-00000000000{i}", "passive", f"192.0.2.{i + 1}",
             f"10{i}", "UDP", "OPTIONS", "friendly-scanner",
             f"OPTIONS sip:10{i}@192.0.2.200 SIP/2.0\r\n\r\n",
             "0b0c7f5e-1111-4222-8333-444444444444"))
    con.commit()
    legacy = [dict(zip(LEGACY_COLUMNS, r)) for r in
              con.execute(f"SELECT {','.join(LEGACY_COLUMNS)} FROM honey ORDER BY honey_id")]
    con.close()
    return legacy


def columns(db):
    return [r["name"] for r in db_query(db, "PRAGMA table_info(honey)")]


def test_legacy_db_migrated_rows_kept(make_daemon, tmp_path):
    db = tmp_path / "sentrypeer.db"
    legacy = make_legacy_db(db, ages_hours=[3, 2, 1])
    d = make_daemon(db=db)
    call_id = new_call_id()
    with UdpClient(d.sip_port) as c:
        c.request("OPTIONS", call_id=call_id, to_user="4471234567")
        port = c.port
    new = d.rows_with(call_id)[0]

    cols = columns(db)
    assert cols[:len(LEGACY_COLUMNS)] == LEGACY_COLUMNS, f"legacy columns changed: {cols}"
    assert set(NEW_COLUMNS) <= set(cols), f"missing new columns: {set(NEW_COLUMNS) - set(cols)}"
    assert db_query(db, "PRAGMA user_version")[0]["user_version"] == 4
    assert db_query(db, "PRAGMA journal_mode")[0]["journal_mode"] == "wal"

    rows = d.rows()
    assert len(rows) == 4, [r["honey_id"] for r in rows]
    for old, now in zip(legacy, rows[:3]):
        for k in LEGACY_COLUMNS:
            assert now[k] == old[k], f"legacy row {old['honey_id']} column {k} changed"

    assert new["honey_id"] > legacy[-1]["honey_id"]
    assert new["source_port"] == port
    assert new["destination_ip"] == "127.0.0.1"
    assert new["destination_port"] == d.sip_port
    assert new["origin"] == "local"
    assert new["app_version"]
    assert abs(new["event_time"] / 1e6 - time.time()) < 60, new["event_time"]
    assert new["created_at"] is not None
    assert new["called_number"] == "4471234567"
    d.stop()

    # SentryPeer's own queries still work on the migrated file.
    assert db_query(db, "SELECT source_ip, count(*) AS n FROM honey GROUP BY source_ip "
                        "ORDER BY source_ip")[0] == {"source_ip": "127.0.0.1", "n": 1}
    # SentryPeer's per-column indexes are replaced (docs/ARCHITECTURE.md, Storage): one
    # append-only index on (event_time, source_ip, called_number), and a partial one on peer
    # events that covers what the in-memory index counts of them (uuid first: duplicates).
    idx = {r["name"]: [c["name"] for c in db_query(db, f"PRAGMA index_info('{r['name']}')")]
           for r in db_query(db, "PRAGMA index_list(honey)")}
    assert idx == {"honey_time_keys": ["event_time", "source_ip", "called_number"],
                   "honey_peer": ["event_uuid", "event_time", "source_ip", "called_number",
                                  "reporter"]}, idx


def test_retention_prunes_old_legacy_rows(make_daemon, tmp_path):
    db = tmp_path / "sentrypeer.db"
    make_legacy_db(db, ages_hours=[24 * 30, 24 * 10, 1])
    d = make_daemon(db=db, args=["--max-age", "7d"])
    deadline = time.monotonic() + 10
    while d.count() != 1:
        assert time.monotonic() < deadline, (
            f"rows older than 7 days not pruned within 10 s: "
            f"{[r['event_timestamp'] for r in d.rows()]}")
        time.sleep(0.05)
    assert d.rows()[0]["source_ip"] == "192.0.2.3"


def test_max_age_zero_keeps_everything(make_daemon, tmp_path):
    db = tmp_path / "sentrypeer.db"
    make_legacy_db(db, ages_hours=[24 * 365, 24 * 30, 1])
    d = make_daemon(db=db, args=["--max-age", "0"])
    d.barrier()
    time.sleep(1.5)  # a retention pass would have run by now (prune interval 1 s)
    assert d.count() == 4


def test_newer_schema_is_refused(tmp_path):
    db = tmp_path / "future.db"
    make_legacy_db(db, ages_hours=[1])
    con = sqlite3.connect(db)
    con.execute("PRAGMA user_version = 99")
    con.commit()
    con.close()
    res = run_binary(["-f", db, "--data-dir", tmp_path, "--sip-listen",
                      f"127.0.0.1:{free_port()}", "--no-tls"])
    assert res.returncode != 0, "opened a database with a newer schema"
    assert str(db) in res.stderr, res.stderr


def test_not_a_database_is_refused(tmp_path):
    db = tmp_path / "junk.db"
    db.write_bytes(b"this is not sqlite\n" * 100)
    res = run_binary(["-f", db, "--data-dir", tmp_path, "--sip-listen",
                      f"127.0.0.1:{free_port()}", "--no-tls"])
    assert res.returncode != 0
    assert str(db) in res.stderr, res.stderr
    assert db.read_bytes() == b"this is not sqlite\n" * 100, "the file was modified"
