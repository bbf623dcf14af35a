#include "store/store.hpp"

#include <sqlite3.h>

#include <algorithm>
#include <array>
#include <limits>
#include <system_error>
#include <thread>

#include <spdlog/spdlog.h>

#include "core/text.hpp"
#include "store/checkpointer.hpp"

namespace sp::store {
namespace {

using Micros = sqlite3_int64; // event_time: unix epoch microseconds, UTC

// counted_from when max_age is 0: every row is counted in the index.
constexpr Micros kCountEverything = std::numeric_limits<Micros>::min();

Micros toMicros(core::TimePoint t) {
    return std::chrono::floor<std::chrono::microseconds>(t.time_since_epoch()).count();
}

core::TimePoint fromMicros(Micros us) {
    return core::TimePoint{
        std::chrono::duration_cast<core::TimePoint::duration>(std::chrono::microseconds(us))};
}

// ---- schema ---------------------------------------------------------------------------------

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
};
constexpr int kSchemaVersion = kMigrations.back().version;

constexpr const char* kInsertSql =
    "INSERT INTO honey (event_timestamp, event_uuid, collected_method, source_ip, called_number,"
    " transport_type, method, user_agent, sip_message, created_by_node_id, created_at,"
    " app_version, source_port, destination_ip, destination_port, origin, event_time)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)";

// A peer's event already stored (seen again after a restart) is skipped. Asked separately,
// for peer events only: as INSERT ... SELECT ... WHERE NOT EXISTS, SQLite stages every row in
// a temporary table (the SELECT reads the table being written), which cost a third of the
// insert (measured: 30 vs 20 us per row).
constexpr const char* kPeerStoredSql =
    "SELECT 1 FROM honey WHERE event_uuid = ?1 AND origin = 'peer' LIMIT 1";

// The keys of rows from a time on, oldest first; resumable (OFFSET skips the rows already
// read at exactly ?1). Served by honey_time_keys alone.
constexpr const char* kKeysFromSql =
    "SELECT event_time, source_ip, called_number FROM honey INDEXED BY honey_time_keys"
    " WHERE event_time >= ?1 ORDER BY event_time LIMIT ?2 OFFSET ?3";

// Rows per step of the forward scan that sets `first` exactly after retention.
constexpr std::size_t kRefreshRows = 5000;

constexpr const char* kPruneSql =
    "DELETE FROM honey WHERE honey_id IN (SELECT honey_id FROM honey WHERE event_time < ?1"
    " ORDER BY event_time LIMIT ?2) RETURNING source_ip, called_number, event_time";

// The index's two keys: column name and the matching Index::Maps member.
struct KeyColumn {
    const char* column;
    Index::Map Index::Maps::*map;
};
constexpr std::array kKeyColumns{KeyColumn{"source_ip", &Index::Maps::by_ip},
                                 KeyColumn{"called_number", &Index::Maps::by_number}};

// ---- failure policy -------------------------------------------------------------------------

constexpr int kWriteAttempts = 3; // per consume() when the database is busy
constexpr std::chrono::milliseconds kBusyBackoff{20};
constexpr std::chrono::milliseconds kRetryFirst{100}; // pending events: first retry
constexpr std::chrono::milliseconds kRetryMax{5000};
constexpr std::size_t kFlushChunk = 10000; // pending events per transaction when retrying
// WAL size (pages) at which the checkpointer thread is asked to copy it back. Larger than
// SQLite's default 1000: pages written again and again (index leaves, the table's last page)
// are copied once per checkpoint.
constexpr int kCheckpointFrames = 4096;
constexpr std::chrono::seconds kErrorReportEvery{10};

bool isBusy(int rc) {
    int primary = rc & 0xff;
    return primary == SQLITE_BUSY || primary == SQLITE_LOCKED;
}

// Errors that concern one row, not the database: skip the row, keep the batch.
bool isRowError(int rc) {
    int primary = rc & 0xff;
    return primary == SQLITE_TOOBIG || primary == SQLITE_CONSTRAINT || primary == SQLITE_MISMATCH;
}

// ---- sqlite helpers -------------------------------------------------------------------------

struct StmtDeleter {
    void operator()(sqlite3_stmt* s) const noexcept { sqlite3_finalize(s); }
};
using Stmt = std::unique_ptr<sqlite3_stmt, StmtDeleter>;

void bindText(sqlite3_stmt* s, int i, std::string_view v) {
    sqlite3_bind_text64(s, i, v.data(), v.size(), SQLITE_STATIC, SQLITE_UTF8);
}

// A port of 0 means unknown (e.g. a peer's event without one): stored as NULL.
void bindPort(sqlite3_stmt* s, int i, std::uint16_t port) {
    if (port == 0) {
        sqlite3_bind_null(s, i);
    } else {
        sqlite3_bind_int(s, i, port);
    }
}

std::string_view columnText(sqlite3_stmt* s, int i) {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s, i));
    if (p == nullptr) {
        return {};
    }
    return {p, static_cast<std::size_t>(sqlite3_column_bytes(s, i))};
}

// SQLite's message for a failure, with the operating system's reason when there is one
// ("unable to open database file (Not a directory)").
std::string describe(sqlite3* db, int rc) {
    if (db == nullptr) {
        return sqlite3_errstr(rc);
    }
    std::string msg = sqlite3_errmsg(db);
    int sys = sqlite3_system_errno(db);
    if (sys != 0 && (rc & 0xff) != SQLITE_NOTADB) {
        msg += fmt::format(" ({})", std::error_code(sys, std::generic_category()).message());
    }
    return msg;
}

// Steps a statement that returns no rows and resets it. SQLITE_DONE becomes SQLITE_OK.
int run(sqlite3_stmt* s) {
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

// ---- index helpers (callers hold the write lock) --------------------------------------------

core::TimePoint indexTime(core::TimePoint t) {
    return std::chrono::time_point_cast<core::TimePoint::duration>(
        std::chrono::floor<std::chrono::microseconds>(t));
}

void addSeen(Index::Map& map, std::string_view key, core::TimePoint t) {
    auto it = map.find(key);
    bool inserted = it == map.end();
    if (inserted) {
        it = map.emplace(key, Seen{}).first;
    }
    Seen& s = it->second;
    if (inserted) {
        s.first = t;
        s.last = t;
    } else {
        s.first = std::min(s.first, t);
        s.last = std::max(s.last, t);
    }
    ++s.count;
}

void addEvent(Index::Maps& maps, const core::Event& e) {
    auto t = indexTime(e.time);
    addSeen(maps.by_ip, e.source_ip, t);
    addSeen(maps.by_number, e.called_number, t);
    ++maps.events;
}

// Takes n events away from key: dropped at 0, else `first` raised to at least first_at_least.
// True when the key remains.
bool subtractSeen(Index::Map& map, std::string_view key, std::uint64_t n,
                  core::TimePoint first_at_least) {
    auto it = map.find(key);
    if (it == map.end()) {
        return false;
    }
    if (it->second.count <= n) {
        map.erase(it);
        return false;
    }
    it->second.count -= n;
    it->second.first = std::max(it->second.first, first_at_least);
    return true;
}

std::optional<Seen> lookup(const Index::Map& map, std::string_view key) {
    auto it = map.find(key);
    if (it == map.end()) {
        return std::nullopt;
    }
    return it->second;
}

} // namespace

// ---- Index ----------------------------------------------------------------------------------

std::optional<Seen> Index::ip(std::string_view ip) const {
    return maps_.read([&](const Maps& m) { return lookup(m.by_ip, ip); });
}

std::optional<Seen> Index::number(std::string_view number) const {
    return maps_.read([&](const Maps& m) { return lookup(m.by_number, number); });
}

std::uint64_t Index::events() const {
    return maps_.read([](const Maps& m) { return m.events; });
}

void Index::add(const core::Event& e) {
    maps_.write([&](Maps& m) { addEvent(m, e); });
}

void Index::remove(std::string_view ip, std::string_view number, core::TimePoint time) {
    auto t = indexTime(time);
    maps_.write([&](Maps& m) {
        subtractSeen(m.by_ip, ip, 1, t);
        subtractSeen(m.by_number, number, 1, t);
        m.events -= std::min<std::uint64_t>(m.events, 1);
    });
}

// ---- Store ----------------------------------------------------------------------------------

// Everything SQLite. Built on the main thread by the constructor, then used only by the
// store thread (consume/tick/close), never concurrently: the connection is opened NOMUTEX.
struct Store::Impl {
    explicit Impl(Store& s) : store(s) {}
    ~Impl() { closeDatabase(); }
    Impl(const Impl&) = delete;
    Impl& operator=(const Impl&) = delete;

    Store& store; // options_, clock_, index_ and the counters
    sqlite3* db = nullptr;
    bool ready = false; // open() completed: the file is ours to checkpoint at close
    Stmt begin, commit, rollback, insert, peer_stored, prune, keys_from;
    std::unique_ptr<Checkpointer> checkpointer;

    // Rows with event_time >= counted_from are the ones the index counts. It only rises, to a
    // retention cutoff once every row below it is deleted, so a pruned row was counted iff
    // its time is >= counted_from (an event stored already older than that is not counted,
    // and goes at the next retention step).
    Micros counted_from = kCountEverything;
    core::TimePoint next_prune{};

    // Keys whose `first` is only a lower bound since retention removed their oldest rows
    // (the newest removed time), and the forward scan over honey_time_keys that finds their
    // oldest remaining row, kRefreshRows per tick. A round searches the keys known when it
    // began, from counted_from; keys added meanwhile wait for the next round.
    struct FirstRefresh {
        std::array<core::StringSet, kKeyColumns.size()> round;
        std::array<core::StringSet, kKeyColumns.size()> waiting;
        Micros cursor = 0;     // the scan resumes at event_time >= cursor,
        std::int64_t ties = 0; // after this many rows at exactly cursor
        static bool empty(const std::array<core::StringSet, kKeyColumns.size()>& sets) {
            return std::all_of(sets.begin(), sets.end(), [](const auto& k) { return k.empty(); });
        }
    } refresh;

    // Events the database refused (busy, disk full), oldest first, retried from tick().
    std::vector<core::EventPtr> pending;
    core::TimePoint retry_at{};
    std::chrono::milliseconds retry_delay{0};

    // Rate-limited error reporting.
    std::string last_error;
    std::optional<core::TimePoint> last_report;
    std::uint64_t unreported = 0;

    // created_at of the previous event ('YYYY-MM-DD HH:MM:SS' UTC), reused within a second.
    std::int64_t created_at_second = std::numeric_limits<std::int64_t>::min();
    std::string created_at;

    const std::string& path() const { return store.options_.path; }

    // -- startup (main thread; throw StoreError) --
    void open();
    [[noreturn]] void startupFailure(std::string_view step, int rc) const;
    void exec(const char* sql, std::string_view step);
    int userVersion();
    void refuseNewer(int version) const;
    void migrate();
    Stmt prepare(const char* sql);
    void loadIndex();

    // -- store thread --
    int fail(int rc);
    void report(std::string_view what, std::uint64_t errors);
    int insertBatch(std::span<const core::EventPtr> batch);
    bool write(std::span<const core::EventPtr> batch, int attempts);
    void defer(std::span<const core::EventPtr> batch);
    void scheduleRetry();
    bool flushPending(int attempts);
    std::optional<std::size_t> pruneChunk(core::TimePoint now);
    bool refreshFirst(std::size_t rows); // true: call again
    const std::string& createdAt(core::TimePoint t);
    static int walHook(void* self, sqlite3* db, const char* name, int frames);
    void rollbackIfOpen();
    void closeDatabase();
};

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

// One pass over honey_time_keys from counted_from: sequential reads of a compact index.
void Store::Impl::loadIndex() {
    Index::Maps maps;
    sqlite3_stmt* q = keys_from.get();
    sqlite3_bind_int64(q, 1, counted_from);
    sqlite3_bind_int64(q, 2, -1); // no LIMIT
    sqlite3_bind_int64(q, 3, 0);
    int rc = SQLITE_OK;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        auto t = fromMicros(sqlite3_column_int64(q, 0));
        // A NULL key (legacy rows) is "", as retention will see it.
        for (std::size_t k = 0; k < kKeyColumns.size(); ++k) {
            addSeen(maps.*kKeyColumns[k].map, columnText(q, static_cast<int>(k) + 1), t);
        }
        ++maps.events;
    }
    sqlite3_reset(q);
    if (rc != SQLITE_DONE) {
        startupFailure("loading the index", rc);
    }
    store.index_.write([&](Index::Maps& m) { m = std::move(maps); });
}

// Remembers the connection's message for the failure being handled; returns rc.
int Store::Impl::fail(int rc) {
    last_error = sqlite3_errmsg(db);
    return rc;
}

// Counts errors and logs at most one line per kErrorReportEvery, whatever the event rate.
void Store::Impl::report(std::string_view what, std::uint64_t errors) {
    store.write_errors_.fetch_add(errors, std::memory_order_relaxed);
    unreported += errors;
    auto now = store.clock_.now();
    if (last_report && now - *last_report < kErrorReportEvery) {
        return;
    }
    spdlog::error("store: {} in {}: {} ({} write errors since the last report; unwritten events "
                  "are kept in memory and retried; {} lost so far)",
                  what, path(), last_error, unreported,
                  store.lost_.load(std::memory_order_relaxed));
    last_report = now;
    unreported = 0;
}

// After each commit of the writer (store thread), with the WAL's size in pages.
int Store::Impl::walHook(void* self, sqlite3* /*db*/, const char* /*name*/, int frames) {
    if (frames >= kCheckpointFrames) {
        static_cast<Impl*>(self)->checkpointer->request();
    }
    return SQLITE_OK;
}

const std::string& Store::Impl::createdAt(core::TimePoint t) {
    auto second = std::chrono::floor<std::chrono::seconds>(t.time_since_epoch()).count();
    if (second != created_at_second) {
        created_at = core::formatTimestamp(t).substr(0, 19); // drop ".nnnnnnnnn"
        created_at_second = second;
    }
    return created_at;
}

void Store::Impl::rollbackIfOpen() {
    if (sqlite3_get_autocommit(db) == 0) {
        run(rollback.get());
    }
}

// One transaction: every event of the batch, or none. Returns SQLITE_OK once committed and
// the index updated; on failure nothing is stored and the error is in last_error.
int Store::Impl::insertBatch(std::span<const core::EventPtr> batch) {
    std::lock_guard gate(checkpointer->gate());
    int rc = run(begin.get());
    if (rc != SQLITE_OK) {
        return fail(rc);
    }
    auto abort = [&](int code) {
        fail(code);
        rollbackIfOpen();
        return code;
    };
    sqlite3_stmt* s = insert.get();
    // The statement holds pointers into the events (SQLITE_STATIC) until the next batch.
    struct Unbind {
        sqlite3_stmt* s;
        ~Unbind() { sqlite3_clear_bindings(s); }
    } unbind{s};
    std::vector<std::size_t> skipped; // in batch order: not stored, not indexed
    std::size_t duplicates = 0;
    for (std::size_t i = 0; i < batch.size(); ++i) {
        const core::Event& e = *batch[i];
        if (e.origin == core::Origin::Peer) {
            bindText(peer_stored.get(), 1, e.event_uuid);
            rc = sqlite3_step(peer_stored.get());
            sqlite3_reset(peer_stored.get());
            sqlite3_clear_bindings(peer_stored.get());
            if (rc == SQLITE_ROW) {
                skipped.push_back(i);
                ++duplicates;
                continue;
            }
            if (rc != SQLITE_DONE) {
                return abort(rc);
            }
        }
        bindText(s, 1, e.event_timestamp);
        bindText(s, 2, e.event_uuid);
        bindText(s, 3, e.collected_method);
        bindText(s, 4, e.source_ip);
        bindText(s, 5, e.called_number);
        bindText(s, 6, e.transport_type);
        bindText(s, 7, e.sip_method);
        bindText(s, 8, e.sip_user_agent);
        bindText(s, 9, e.sip_message);
        bindText(s, 10, e.created_by_node_id);
        bindText(s, 11, createdAt(e.time));
        bindText(s, 12, e.app_version);
        bindPort(s, 13, e.source_port);
        bindText(s, 14, e.destination_ip);
        bindPort(s, 15, e.destination_port);
        bindText(s, 16, core::originName(e.origin));
        sqlite3_bind_int64(s, 17, toMicros(e.time));
        rc = run(s);
        if (rc == SQLITE_OK) {
            continue;
        }
        if (!isRowError(rc)) {
            return abort(rc);
        }
        fail(rc); // this row only: the transaction goes on
        skipped.push_back(i);
    }
    rc = run(commit.get());
    if (rc != SQLITE_OK) {
        return abort(rc);
    }
    const std::size_t refused = skipped.size() - duplicates;
    store.transactions_.fetch_add(1, std::memory_order_relaxed);
    store.stored_.fetch_add(batch.size() - skipped.size(), std::memory_order_relaxed);
    store.duplicates_.fetch_add(duplicates, std::memory_order_relaxed);
    // One exclusive lock per batch; skipped rows are almost always none.
    store.index_.write([&](Index::Maps& maps) {
        auto skip = skipped.begin();
        for (std::size_t i = 0; i < batch.size(); ++i) {
            if (skip != skipped.end() && *skip == i) {
                ++skip;
                continue;
            }
            if (toMicros(batch[i]->time) >= counted_from) {
                addEvent(maps, *batch[i]);
            }
        }
    });
    if (refused > 0) {
        store.lost_.fetch_add(refused, std::memory_order_relaxed);
        report(fmt::format("{} events rejected", refused), refused);
    }
    return SQLITE_OK;
}

// Writes a batch, trying again after a short pause while the database is busy (another
// process holds the write lock beyond busy_timeout). False: nothing of it was stored.
bool Store::Impl::write(std::span<const core::EventPtr> batch, int attempts) {
    for (int attempt = 1;; ++attempt) {
        int rc = insertBatch(batch);
        if (rc == SQLITE_OK) {
            return true;
        }
        if (!isBusy(rc) || attempt >= attempts) {
            report(fmt::format("writing {} events failed", batch.size()), 1);
            return false;
        }
        std::this_thread::sleep_for(kBusyBackoff * attempt);
    }
}

void Store::Impl::scheduleRetry() {
    retry_delay = retry_delay.count() == 0 ? kRetryFirst : std::min(retry_delay * 2, kRetryMax);
    retry_at = store.clock_.now() + retry_delay;
}

// Keeps events for a later attempt, dropping (and counting) the oldest beyond max_pending.
void Store::Impl::defer(std::span<const core::EventPtr> batch) {
    pending.insert(pending.end(), batch.begin(), batch.end());
    std::size_t limit = std::max<std::size_t>(store.options_.max_pending, 1);
    if (pending.size() > limit) {
        std::size_t excess = pending.size() - limit;
        pending.erase(pending.begin(), pending.begin() + static_cast<std::ptrdiff_t>(excess));
        store.lost_.fetch_add(excess, std::memory_order_relaxed);
        last_error = fmt::format("{} events dropped, more than {} pending", excess, limit);
        report("giving up on events", 0);
    }
    store.pending_.store(pending.size(), std::memory_order_relaxed);
}

// Writes pending events oldest first, in chunks. False when some remain (retry scheduled).
bool Store::Impl::flushPending(int attempts) {
    std::size_t done = 0;
    bool ok = true;
    while (done < pending.size()) {
        std::size_t n = std::min(kFlushChunk, pending.size() - done);
        if (!write(std::span<const core::EventPtr>(pending.data() + done, n), attempts)) {
            ok = false;
            break;
        }
        done += n;
    }
    pending.erase(pending.begin(), pending.begin() + static_cast<std::ptrdiff_t>(done));
    store.pending_.store(pending.size(), std::memory_order_relaxed);
    if (ok) {
        retry_delay = std::chrono::milliseconds(0);
        spdlog::info("store: {} writable again", path());
    } else {
        scheduleRetry();
    }
    return ok;
}

// One retention step: deletes up to prune_chunk rows older than now - max_age, oldest first,
// and makes the index follow: counts, dropped keys, and for the keys that remain a `first`
// of at least the newest removed time, made exact by refreshFirst().
// Returns the number of rows deleted, nullopt on a database error (nothing changed).
std::optional<std::size_t> Store::Impl::pruneChunk(core::TimePoint now) {
    const Micros cutoff = toMicros(now - store.options_.max_age);
    const auto chunk = std::max<std::size_t>(store.options_.prune_chunk, 1);

    struct Removed {
        std::uint64_t count = 0;
        Micros first_at_least = kCountEverything; // the newest removed
    };
    std::array<std::unordered_map<std::string, Removed>, kKeyColumns.size()> removed;
    std::uint64_t counted = 0;
    std::size_t deleted = 0;

    std::lock_guard gate(checkpointer->gate());
    int rc = run(begin.get());
    if (rc != SQLITE_OK) {
        fail(rc);
        report("retention failed", 1);
        return std::nullopt;
    }
    sqlite3_stmt* p = prune.get();
    sqlite3_bind_int64(p, 1, cutoff);
    sqlite3_bind_int64(p, 2, static_cast<sqlite3_int64>(chunk));
    while ((rc = sqlite3_step(p)) == SQLITE_ROW) {
        ++deleted;
        Micros t = sqlite3_column_int64(p, 2);
        if (t < counted_from) {
            continue; // never counted in the index
        }
        ++counted;
        // RETURNING's columns follow kKeyColumns: source_ip, called_number.
        for (std::size_t k = 0; k < kKeyColumns.size(); ++k) {
            Removed& r = removed[k][std::string(columnText(p, static_cast<int>(k)))];
            ++r.count;
            r.first_at_least = std::max(r.first_at_least, t);
        }
    }
    sqlite3_reset(p);
    if (rc == SQLITE_DONE) {
        rc = run(commit.get());
    }
    if (rc != SQLITE_OK && rc != SQLITE_DONE) {
        fail(rc);
        rollbackIfOpen();
        report("retention failed", 1);
        return std::nullopt;
    }
    store.transactions_.fetch_add(1, std::memory_order_relaxed);
    store.pruned_.fetch_add(deleted, std::memory_order_relaxed);
    if (counted > 0) {
        store.index_.write([&](Index::Maps& maps) {
            for (std::size_t k = 0; k < kKeyColumns.size(); ++k) {
                Index::Map& map = maps.*kKeyColumns[k].map;
                for (const auto& [key, r] : removed[k]) {
                    if (subtractSeen(map, key, r.count, fromMicros(r.first_at_least))) {
                        refresh.waiting[k].insert(key); // `first` is now a lower bound
                    }
                }
            }
            maps.events -= std::min(maps.events, counted);
        });
    }
    if (deleted < chunk) {
        counted_from = std::max(counted_from, cutoff); // nothing below cutoff is left
    }
    return deleted;
}

// One step of the forward scan (at most `rows` rows, one read transaction): every key of the
// round found gets `first` = its oldest remaining row. True when more work remains (false
// when done, or after a database error: the scan resumes at the next tick).
// (A peer event older than the scan position, stored for a key of the round after the scan
// passed its time, is not seen: that key's `first` stays later than the peer's event.)
bool Store::Impl::refreshFirst(std::size_t rows) {
    FirstRefresh& r = refresh;
    if (FirstRefresh::empty(r.round)) {
        if (FirstRefresh::empty(r.waiting)) {
            return false;
        }
        std::swap(r.round, r.waiting);
        r.cursor = counted_from;
        r.ties = 0;
    }
    std::array<std::vector<std::pair<std::string, Micros>>, kKeyColumns.size()> found;
    sqlite3_stmt* q = keys_from.get();
    sqlite3_bind_int64(q, 1, r.cursor);
    sqlite3_bind_int64(q, 2, static_cast<sqlite3_int64>(rows));
    sqlite3_bind_int64(q, 3, r.ties);
    std::size_t seen = 0;
    int rc = SQLITE_OK;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        ++seen;
        Micros t = sqlite3_column_int64(q, 0);
        r.ties = t == r.cursor ? r.ties + 1 : 1;
        r.cursor = t;
        for (std::size_t k = 0; k < kKeyColumns.size(); ++k) {
            std::string_view key = columnText(q, static_cast<int>(k) + 1);
            if (auto it = r.round[k].find(key); it != r.round[k].end()) {
                found[k].emplace_back(std::move(r.round[k].extract(it).value()), t);
            }
        }
    }
    sqlite3_reset(q);
    if (rc != SQLITE_DONE) {
        fail(rc);
        report("refreshing first-seen times failed", 1);
        return false;
    }
    if (std::any_of(found.begin(), found.end(), [](const auto& f) { return !f.empty(); })) {
        store.index_.write([&](Index::Maps& maps) {
            for (std::size_t k = 0; k < kKeyColumns.size(); ++k) {
                Index::Map& map = maps.*kKeyColumns[k].map;
                for (const auto& [key, t] : found[k]) {
                    if (auto it = map.find(key); it != map.end()) {
                        it->second.first = fromMicros(t);
                    }
                }
            }
        });
    }
    if (seen < rows) { // the end of the table: keys not found have no rows left
        for (auto& keys : r.round) {
            keys.clear();
        }
    }
    return !FirstRefresh::empty(r.round) || !FirstRefresh::empty(r.waiting);
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

Store::Store(StoreOptions options, const core::Clock& clock)
    : options_(std::move(options)), clock_(clock) {
    impl_ = std::make_unique<Impl>(*this);
    impl_->open(); // on a throw, ~Impl closes the connection
}

Store::~Store() {
    close();
}

void Store::consume(std::span<const core::EventPtr> batch) {
    Impl& s = *impl_;
    if (batch.empty()) {
        return;
    }
    if (s.db == nullptr) { // after close(): the bus never does this
        lost_.fetch_add(batch.size(), std::memory_order_relaxed);
        return;
    }
    if (s.pending.empty()) {
        if (!s.write(batch, kWriteAttempts)) {
            s.defer(batch);
            s.scheduleRetry();
        }
        return;
    }
    // Still failing lately: queue behind the older events and retry when due.
    s.defer(batch);
    if (clock_.now() >= s.retry_at) {
        s.flushPending(1);
    }
}

void Store::tick() {
    Impl& s = *impl_;
    if (s.db == nullptr) {
        return;
    }
    auto now = clock_.now();
    if (!s.pending.empty()) {
        if (now < s.retry_at || !s.flushPending(1)) {
            return;
        }
    }
    if (options_.max_age.count() <= 0) {
        return;
    }
    if (now >= s.next_prune) {
        auto deleted = s.pruneChunk(now);
        // A full chunk means more is due: continue at the next tick, between batches.
        bool more = deleted && *deleted >= std::max<std::size_t>(options_.prune_chunk, 1);
        s.next_prune = more ? now : now + options_.prune_interval;
    }
    s.refreshFirst(kRefreshRows);
}

void Store::loadIndex() {
    impl_->loadIndex();
}

void Store::pruneAll() {
    Impl& s = *impl_;
    if (s.db == nullptr || options_.max_age.count() <= 0) {
        return;
    }
    const auto chunk = std::max<std::size_t>(options_.prune_chunk, 1);
    for (;;) {
        auto deleted = s.pruneChunk(clock_.now());
        if (!deleted || *deleted < chunk) {
            break;
        }
    }
    s.next_prune = clock_.now() + options_.prune_interval;
    while (s.refreshFirst(kRefreshRows)) {
    }
}

void Store::close() {
    Impl& s = *impl_;
    if (s.db == nullptr) {
        return;
    }
    if (!s.pending.empty() && !s.flushPending(kWriteAttempts)) {
        lost_.fetch_add(s.pending.size(), std::memory_order_relaxed);
        spdlog::error("store: {} events could not be written to {} and are lost: {}",
                      s.pending.size(), options_.path, s.last_error);
        s.pending.clear();
        pending_.store(0, std::memory_order_relaxed);
    }
    s.closeDatabase();
}

} // namespace sp::store
