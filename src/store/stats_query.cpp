#include "store/stats_query.hpp"

#include <mutex>
#include <sqlite3.h>

namespace sp::store {

struct StatsQuery::Db {
    std::string path;
    std::mutex mutex;
    sqlite3* db = nullptr;
    ~Db() { sqlite3_close(db); }
};

StatsQuery::StatsQuery(std::string db_path) : db_(std::make_unique<Db>()) {
    db_->path = std::move(db_path);
}

StatsQuery::~StatsQuery() = default;

namespace {

// Runs sql (?1 = since in microseconds, ?2 = top) and hands each row's two columns to row.
template <typename RowFn>
void eachRow(sqlite3* db, const std::string& sql, std::int64_t since_us, std::size_t top,
             RowFn row) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) {
        sqlite3_finalize(st);
        return;
    }
    sqlite3_bind_int64(st, 1, since_us);
    sqlite3_bind_int64(st, 2, static_cast<sqlite3_int64>(top));
    while (sqlite3_step(st) == SQLITE_ROW) {
        row(st);
    }
    sqlite3_finalize(st);
}

std::vector<StatsRow> topOf(sqlite3* db, const char* column, std::int64_t since_us,
                            std::size_t top) {
    std::vector<StatsRow> rows;
    eachRow(db,
            std::string("SELECT ") + column +
                ", COUNT(*) AS n FROM honey WHERE event_time >= ?1 GROUP BY 1 ORDER BY n DESC, 1 "
                "LIMIT ?2",
            since_us, top, [&rows](sqlite3_stmt* st) {
                const auto* t = sqlite3_column_text(st, 0);
                rows.push_back(StatsRow{t != nullptr ? reinterpret_cast<const char*>(t) : "",
                                        static_cast<std::uint64_t>(sqlite3_column_int64(st, 1))});
            });
    return rows;
}

} // namespace

std::optional<Stats> StatsQuery::run(core::TimePoint since, std::size_t top) {
    auto since_us =
        std::chrono::duration_cast<std::chrono::microseconds>(since.time_since_epoch()).count();
    std::lock_guard lock(db_->mutex);
    if (db_->db == nullptr) {
        if (sqlite3_open_v2(db_->path.c_str(), &db_->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX,
                            nullptr) != SQLITE_OK) {
            sqlite3_close(db_->db);
            db_->db = nullptr;
            return std::nullopt;
        }
        sqlite3_busy_timeout(db_->db, 2000);
    }
    sqlite3* db = db_->db;
    Stats s;
    eachRow(db,
            "SELECT event_time / 3600000000 AS h, COUNT(*) FROM honey WHERE "
            "event_time >= ?1 GROUP BY h ORDER BY h LIMIT 100000 + ?2",
            since_us, top, [&s](sqlite3_stmt* st) {
                s.events_per_hour.push_back(
                    HourRow{core::TimePoint{std::chrono::hours(sqlite3_column_int64(st, 0))},
                            static_cast<std::uint64_t>(sqlite3_column_int64(st, 1))});
            });
    s.top_called_numbers = topOf(db, "called_number", since_us, top);
    s.top_ip_addresses = topOf(db, "source_ip", since_us, top);
    s.top_user_agents = topOf(db, "user_agent", since_us, top);
    s.top_methods = topOf(db, "method", since_us, top);
    s.top_transports = topOf(db, "transport_type", since_us, top);
    return s;
}

} // namespace sp::store
