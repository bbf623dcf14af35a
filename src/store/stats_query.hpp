#pragma once
// The aggregate queries behind the API's /stats: the store owns its SQL, callers see rows.
// Runs on its own read-only SQLite connection (opened on first use), so it never blocks
// the writer (WAL) nor the in-memory lookups.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/clock.hpp"

namespace sp::store {

struct StatsRow {
    std::string label; // the grouped value (a number, an IP, a user agent, ...)
    std::uint64_t events = 0;
};

struct HourRow {
    core::TimePoint hour; // start of the hour (UTC)
    std::uint64_t events = 0;
};

// Events since a time: per hour (oldest first, all of them) and the top values of each
// column (most events first, then by value).
struct Stats {
    std::vector<HourRow> events_per_hour;
    std::vector<StatsRow> top_called_numbers;
    std::vector<StatsRow> top_ip_addresses;
    std::vector<StatsRow> top_user_agents;
    std::vector<StatsRow> top_methods;
    std::vector<StatsRow> top_transports;
};

class StatsQuery {
public:
    explicit StatsQuery(std::string db_path);
    ~StatsQuery();
    StatsQuery(const StatsQuery&) = delete;
    StatsQuery& operator=(const StatsQuery&) = delete;

    // Any thread; calls are serialised (one connection). nullopt when the database cannot
    // be opened; a query that fails leaves its list empty. Never throws but bad_alloc.
    std::optional<Stats> run(core::TimePoint since, std::size_t top);

private:
    struct Db;
    std::unique_ptr<Db> db_;
};

} // namespace sp::store
