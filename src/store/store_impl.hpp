#pragma once
// The store's internals, shared by its source files (schema.cpp, writer.cpp, retention.cpp,
// store.cpp): SQLite helpers, the SQL the store runs, and Store::Impl. Not a public header.

#include <sqlite3.h>

#include <algorithm>
#include <array>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <spdlog/spdlog.h>

#include "core/string_map.hpp"
#include "store/checkpointer.hpp"
#include "store/store.hpp"

namespace sp::store {

using Micros = sqlite3_int64; // event_time: unix epoch microseconds, UTC

// counted_from when max_age is 0: every row is counted in the index.
inline constexpr Micros kCountEverything = std::numeric_limits<Micros>::min();

inline Micros toMicros(core::TimePoint t) {
    return std::chrono::floor<std::chrono::microseconds>(t.time_since_epoch()).count();
}

inline core::TimePoint fromMicros(Micros us) {
    return core::TimePoint{
        std::chrono::duration_cast<core::TimePoint::duration>(std::chrono::microseconds(us))};
}

// The index's two keys, in the order the SQL returns them: source_ip, called_number.
inline constexpr std::size_t kKeys = 2;

inline constexpr const char* kInsertSql =
    "INSERT INTO honey (event_timestamp, event_uuid, collected_method, source_ip, called_number,"
    " transport_type, method, user_agent, sip_message, created_by_node_id, created_at,"
    " app_version, source_port, destination_ip, destination_port, origin, event_time, reporter)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)";

// A peer's event already stored (seen again after a restart) is skipped. Asked separately,
// for peer events only: as INSERT ... SELECT ... WHERE NOT EXISTS, SQLite stages every row in
// a temporary table (the SELECT reads the table being written), which cost a third of the
// insert (measured: 30 vs 20 us per row).
inline constexpr const char* kPeerStoredSql =
    "SELECT 1 FROM honey INDEXED BY honey_peer WHERE event_uuid = ?1 AND origin = 'peer' LIMIT 1";

// Peer rows from a time on, with their reporter (verified identity, or empty): after the pass over
// every row (counted as local), these are counted as peer events (one pass over the covering
// honey_peer index).
inline constexpr const char* kPeerKeysFromSql =
    "SELECT source_ip, called_number, reporter FROM honey INDEXED BY honey_peer"
    " WHERE origin = 'peer' AND event_time >= ?1";

// The keys of rows from a time on, oldest first; resumable (OFFSET skips the rows already
// read at exactly ?1). Served by honey_time_keys alone.
inline constexpr const char* kKeysFromSql =
    "SELECT event_time, source_ip, called_number FROM honey INDEXED BY honey_time_keys"
    " WHERE event_time >= ?1 ORDER BY event_time LIMIT ?2 OFFSET ?3";

// Rows per step of the forward scan that sets `first` exactly after retention.
inline constexpr std::size_t kRefreshRows = 5000;

inline constexpr const char* kPruneSql =
    "DELETE FROM honey WHERE honey_id IN (SELECT honey_id FROM honey WHERE event_time < ?1"
    " ORDER BY event_time LIMIT ?2)"
    " RETURNING source_ip, called_number, event_time, origin, reporter";

inline constexpr int kWriteAttempts = 3; // per consume() when the database is busy
inline constexpr std::chrono::milliseconds kBusyBackoff{20};
inline constexpr std::chrono::milliseconds kRetryFirst{100}; // pending events: first retry
inline constexpr std::chrono::milliseconds kRetryMax{5000};
inline constexpr std::size_t kFlushChunk = 10000; // pending events per transaction when retrying
// WAL size (pages) at which the checkpointer thread is asked to copy it back. Larger than
// SQLite's default 1000: pages written again and again (index leaves, the table's last page)
// are copied once per checkpoint.
inline constexpr int kCheckpointFrames = 4096;
inline constexpr std::chrono::seconds kErrorReportEvery{10};

inline bool isBusy(int rc) {
    int primary = rc & 0xff;
    return primary == SQLITE_BUSY || primary == SQLITE_LOCKED;
}

// Errors that concern one row, not the database: skip the row, keep the batch.
inline bool isRowError(int rc) {
    int primary = rc & 0xff;
    return primary == SQLITE_TOOBIG || primary == SQLITE_CONSTRAINT || primary == SQLITE_MISMATCH;
}

struct StmtDeleter {
    void operator()(sqlite3_stmt* s) const noexcept { sqlite3_finalize(s); }
};
using Stmt = std::unique_ptr<sqlite3_stmt, StmtDeleter>;

inline void bindText(sqlite3_stmt* s, int i, std::string_view v) {
    sqlite3_bind_text64(s, i, v.data(), v.size(), SQLITE_STATIC, SQLITE_UTF8);
}

// A port of 0 means unknown (e.g. a peer's event without one): stored as NULL.
inline void bindPort(sqlite3_stmt* s, int i, std::uint16_t port) {
    if (port == 0) {
        sqlite3_bind_null(s, i);
    } else {
        sqlite3_bind_int(s, i, port);
    }
}

inline std::string_view columnText(sqlite3_stmt* s, int i) {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s, i));
    if (p == nullptr) {
        return {};
    }
    return {p, static_cast<std::size_t>(sqlite3_column_bytes(s, i))};
}

// SQLite's message for a failure, with the operating system's reason when there is one
// ("unable to open database file (Not a directory)").
inline std::string describe(sqlite3* db, int rc) {
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
inline int run(sqlite3_stmt* s) {
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

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
    Stmt begin, commit, rollback, insert, peer_stored, prune, keys_from, peer_keys;
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
        std::array<core::StringSet, kKeys> round;
        std::array<core::StringSet, kKeys> waiting;
        Micros cursor = 0;     // the scan resumes at event_time >= cursor,
        std::int64_t ties = 0; // after this many rows at exactly cursor
        static bool empty(const std::array<core::StringSet, kKeys>& sets) {
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
    const StoreOptions& options() const { return store.options_; }

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
    // Deletes up to `limit` of the oldest rows older than `before` (evicting for `reason`).
    std::optional<std::size_t> pruneChunk(Micros before, std::size_t limit, Eviction reason);
    // Evicts the oldest rows until the size budgets (rows, index memory) hold.
    void enforceSizeBudgets();
    // One retention step (--max-age) when due. True when more is due at once.
    bool retentionStep(core::TimePoint now);
    bool refreshFirst(std::size_t rows); // true: call again
    const std::string& createdAt(core::TimePoint t);
    static int walHook(void* self, sqlite3* db, const char* name, int frames);
    void rollbackIfOpen();
    void closeDatabase();
};

} // namespace sp::store
