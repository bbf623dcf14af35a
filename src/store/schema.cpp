#include "store/store_impl.hpp"

// Opening the database: the schema, its migrations, and the connection's settings.

namespace sp::store {
namespace {

// One schema step: the SQL that takes the database from version - 1 to `version`, run in one
// transaction together with the user_version bump. Append new steps; never edit a shipped one.
struct Migration {
    int version;
    const char* sql;
};

// Version 0 is SentryPeer's database (or an empty file). Version 1 keeps SentryPeer's table
// and columns as they are and adds ours. SentryPeer's single-column indexes on source_ip and
// called_number are replaced by (column, event_time) ones: they serve the same lookups, and
// let retention find a key's oldest remaining row without scanning all of that key's rows.
// Its event_uuid index becomes partial, on peer events only: a random UUID lands on a random
// page, so a full index rewrites about one page per stored event (measured: 2.5x fewer
// events/s); the one lookup by UUID is "was this peer event already stored", and our own
// events never come back from peers (their node id is ours).
// Old rows get event_time from event_timestamp (SentryPeer wrote local time, converted here
// with this machine's time zone), else from created_at (UTC), else the migration time.
//
// Version 2 replaces the (source_ip, event_time) and (called_number, event_time) indexes and
// the event_time one by a single (event_time, source_ip, called_number) index. Keys from
// attackers land on random pages of a per-key index: each stored event rewrote about one
// 16 KiB index page in the WAL and again at checkpoint, and the cost grew with the database
// (measured on 50,000 UDP events/s for 30 s: 30% lost with them, none without). Lookups by
// key are answered by the in-memory index; the time index is only ever appended to, and
// covers what reads by time need: loading the in-memory index at startup, retention, and
// /stats's windows (top IPs and numbers without touching the table).
//
// Version 3 widens the partial index on peer events to cover what the in-memory index needs
// to know of them (who reported which address and number, and when): the startup load
// counts peer events and their distinct reporters in one pass over it, without reading the
// table. It still answers "was this peer event already stored" (event_uuid first).
//
// Version 4 adds `reporter`: the verified publisher identity of a peer event received through
// the share protocol (src/share), empty for local events and for plaintext SentryPeer values
// (whose created_by_node_id is self-declared). The index counts distinct reporters from it
// instead of created_by_node_id, so the covering peer index now carries reporter. Peer rows
// stored before get NULL (read as empty): still peer events, never a reporter.
constexpr std::array kMigrations{
    Migration{1, R"sql(
CREATE TABLE IF NOT EXISTS honey (honey_id INTEGER PRIMARY KEY, event_timestamp TEXT,
    event_uuid TEXT, collected_method TEXT, source_ip TEXT, called_number TEXT,
    transport_type TEXT, method TEXT, user_agent TEXT, sip_message TEXT,
    created_by_node_id TEXT, created_at DATETIME DEFAULT CURRENT_TIMESTAMP);
ALTER TABLE honey ADD COLUMN app_version TEXT;
ALTER TABLE honey ADD COLUMN source_port INTEGER;
ALTER TABLE honey ADD COLUMN destination_ip TEXT;
ALTER TABLE honey ADD COLUMN destination_port INTEGER;
ALTER TABLE honey ADD COLUMN origin TEXT NOT NULL DEFAULT 'local';
ALTER TABLE honey ADD COLUMN event_time INTEGER;
UPDATE honey SET event_time = 1000 * CAST(ROUND((COALESCE(julianday(event_timestamp, 'utc'),
    julianday(created_at), julianday('now')) - 2440587.5) * 86400000.0) AS INTEGER);
DROP INDEX IF EXISTS source_ip_index;
DROP INDEX IF EXISTS called_number_index;
DROP INDEX IF EXISTS event_uuid_index;
CREATE INDEX IF NOT EXISTS honey_peer_event_uuid ON honey (event_uuid) WHERE origin = 'peer';
CREATE INDEX IF NOT EXISTS honey_source_ip_time ON honey (source_ip, event_time);
CREATE INDEX IF NOT EXISTS honey_called_number_time ON honey (called_number, event_time);
CREATE INDEX IF NOT EXISTS honey_event_time ON honey (event_time);
)sql"},
    Migration{2, R"sql(
DROP INDEX IF EXISTS honey_source_ip_time;
DROP INDEX IF EXISTS honey_called_number_time;
DROP INDEX IF EXISTS honey_event_time;
CREATE INDEX IF NOT EXISTS honey_time_keys ON honey (event_time, source_ip, called_number);
)sql"},
    Migration{3, R"sql(
DROP INDEX IF EXISTS honey_peer_event_uuid;
CREATE INDEX IF NOT EXISTS honey_peer ON honey (event_uuid, event_time, source_ip,
    called_number, created_by_node_id) WHERE origin = 'peer';
)sql"},
    Migration{4, R"sql(
ALTER TABLE honey ADD COLUMN reporter TEXT;
DROP INDEX IF EXISTS honey_peer;
CREATE INDEX IF NOT EXISTS honey_peer ON honey (event_uuid, event_time, source_ip,
    called_number, reporter) WHERE origin = 'peer';
)sql"},
};
constexpr int kSchemaVersion = kMigrations.back().version;

} // namespace

void Store::Impl::startupFailure(std::string_view step, int rc) const {
    std::string msg = describe(db, rc);
    switch (rc & 0xff) {
    case SQLITE_NOTADB:
        throw StoreError(fmt::format("{} is not a SQLite database ({})", path(), msg));
    case SQLITE_CORRUPT:
        throw StoreError(fmt::format("database {} is corrupt: {}", path(), msg));
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
    case SQLITE_READONLY:
    case SQLITE_IOERR:
    case SQLITE_FULL:
        throw StoreError(fmt::format("cannot write database {}: {}", path(), msg));
    default:
        throw StoreError(fmt::format("database {}: {}: {}", path(), step, msg));
    }
}

void Store::Impl::exec(const char* sql, std::string_view step) {
    int rc = sqlite3_exec(db, sql, nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) {
        startupFailure(step, rc);
    }
}

Stmt Store::Impl::prepare(const char* sql) {
    sqlite3_stmt* s = nullptr;
    int rc = sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr);
    if (rc != SQLITE_OK) {
        startupFailure("preparing statements", rc);
    }
    return Stmt(s);
}

void Store::Impl::refuseNewer(int version) const {
    if (version > kSchemaVersion) {
        throw StoreError(fmt::format("database {} was written by a newer sentrypeer (schema {}, "
                                     "we know {})",
                                     path(), version, kSchemaVersion));
    }
}

int Store::Impl::userVersion() {
    Stmt s = prepare("PRAGMA user_version");
    int rc = sqlite3_step(s.get());
    if (rc != SQLITE_ROW) {
        startupFailure("reading the schema version", rc);
    }
    return sqlite3_column_int(s.get(), 0);
}

void Store::Impl::open() {
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    int rc = sqlite3_open_v2(path().c_str(), &db, flags, nullptr);
    if (rc != SQLITE_OK) {
        std::string msg = describe(db, rc);
        closeDatabase();
        throw StoreError(fmt::format("cannot open database {}: {}", path(), msg));
    }
    sqlite3_extended_result_codes(db, 1);
    // SQLite falls back to read-only when the file is write-protected; we must write.
    if (sqlite3_db_readonly(db, "main") == 1) {
        throw StoreError(fmt::format("cannot write database {}: the file is read-only", path()));
    }
    sqlite3_busy_timeout(db, store.options_.busy_timeout_ms);

    // The first read of the file: a non-database fails here.
    refuseNewer(userVersion());
    // A new database gets 16 KiB pages (SQLite ignores this for an existing one): rows of
    // about 1 KiB and index entries per page x4 mean fewer page splits, a shallower tree and
    // fewer WAL frames per transaction (measured: about 25% less CPU per stored event).
    exec("PRAGMA page_size=16384", "setting page_size");
    {
        Stmt s = prepare("PRAGMA journal_mode=WAL");
        rc = sqlite3_step(s.get());
        if (rc != SQLITE_ROW) {
            startupFailure("enabling WAL", rc);
        }
        std::string_view mode = columnText(s.get(), 0);
        if (mode != "wal") {
            throw StoreError(fmt::format("cannot write database {}: journal mode is '{}', not "
                                         "WAL (is its directory writable?)",
                                         path(), mode));
        }
    }
    exec("PRAGMA synchronous=NORMAL", "setting synchronous");
    exec("PRAGMA foreign_keys=OFF", "setting foreign_keys");
    // The (ip, time) and (number, time) index b-trees take inserts at many places: keep
    // them cached.
    // 8 MiB: the index answers lookups, so a big page cache only grows RSS.
    exec("PRAGMA cache_size=-8192", "setting cache_size");
    migrate();
    checkpointer = std::make_unique<Checkpointer>(path(), store.options_.busy_timeout_ms);
    sqlite3_wal_hook(db, &Impl::walHook, this); // replaces SQLite's own autocheckpoint

    begin = prepare("BEGIN IMMEDIATE");
    commit = prepare("COMMIT");
    rollback = prepare("ROLLBACK");
    insert = prepare(kInsertSql);
    peer_stored = prepare(kPeerStoredSql);
    prune = prepare(kPruneSql);
    keys_from = prepare(kKeysFromSql);
    peer_keys = prepare(kPeerKeysFromSql);

    auto now = store.clock_.now();
    if (store.options_.max_age.count() > 0) {
        counted_from = toMicros(now - store.options_.max_age);
    }
    next_prune = now;
    if (store.options_.load_index) {
        loadIndex();
    }
    ready = true;
}

void Store::Impl::migrate() {
    // The write lock first, so two processes starting on one file migrate once.
    exec("BEGIN IMMEDIATE", "locking for migration");
    try {
        int version = userVersion();
        refuseNewer(version);
        if (version < kSchemaVersion) {
            Stmt s = prepare("SELECT COUNT(*) FROM sqlite_master WHERE name = 'honey'");
            if (sqlite3_step(s.get()) == SQLITE_ROW && sqlite3_column_int(s.get(), 0) > 0) {
                // Existing data (e.g. SentryPeer's): this may take a while on a large file.
                spdlog::info("store: upgrading {} from schema {} to {}", path(), version,
                             kSchemaVersion);
            }
        }
        for (const Migration& m : kMigrations) {
            if (m.version <= version) {
                continue;
            }
            exec(m.sql, fmt::format("migrating to schema {}", m.version));
            exec(fmt::format("PRAGMA user_version={}", m.version).c_str(),
                 "setting the schema version");
        }
        exec("COMMIT", "committing the migration");
    } catch (...) {
        sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
        throw;
    }
}

void Store::Impl::closeDatabase() {
    if (db == nullptr) {
        return;
    }
    begin.reset();
    commit.reset();
    rollback.reset();
    insert.reset();
    peer_stored.reset();
    prune.reset();
    keys_from.reset();
    peer_keys.reset();
    if (checkpointer) {
        checkpointer->stop();
        checkpointer.reset();
    }
    if (ready) {
        // Fold the WAL back into the database so the file is complete on its own.
        sqlite3_exec(db, "PRAGMA wal_checkpoint(TRUNCATE)", nullptr, nullptr, nullptr);
    }
    sqlite3_close_v2(db);
    db = nullptr;
    ready = false;
}

} // namespace sp::store
