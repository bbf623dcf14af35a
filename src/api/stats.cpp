// /stats: totals from the index, aggregates from the store's StatsQuery (its SQL); this
// file knows no table or column name. Runs on the server's slow-route thread.
#include <algorithm>
#include <cctype>

#include "api/json_out.hpp"
#include "api/list.hpp"
#include "api/routes.hpp"
#include "store/stats_query.hpp"

namespace sp::api {

namespace {

constexpr std::size_t kMaxTop = 100;

// [{"<key>": "<label>", "events": N}, ...]
std::string topList(const std::vector<store::StatsRow>& rows, const char* key) {
    std::string out = "[";
    for (const auto& row : rows) {
        out += out.size() == 1 ? "" : ", ";
        out += JsonObject().str(key, row.label).num("events", row.events).done();
    }
    return out + "]";
}

std::string hourList(const std::vector<store::HourRow>& rows) {
    std::string out = "[";
    for (const auto& row : rows) {
        out += out.size() == 1 ? "" : ", ";
        out += JsonObject()
                   .str("hour", core::formatTimestamp(row.hour).substr(0, 19))
                   .num("events", row.events)
                   .done();
    }
    return out + "]";
}

} // namespace

Response Routes::stats(const Request& r, std::string_view) {
    auto now = clock_.now();
    auto window = core::parseDuration(r.param("window").value_or("24h"));
    std::size_t top = 10;
    if (auto t = r.param("top")) {
        // 1..100; anything else is a bad request (not clamped: a client asking for 500
        // must not believe it got them all).
        if (t->empty() || t->size() > 3 ||
            !std::all_of(t->begin(), t->end(), [](char c) { return c >= '0' && c <= '9'; })) {
            return invalid();
        }
        top = std::stoul(*t);
        if (top < 1 || top > kMaxTop) {
            return invalid();
        }
    }
    if (!window || window->count() <= 0 || *window > std::chrono::hours(24 * 366)) {
        return invalid();
    }
    auto stats = stats_query_->run(now - *window, top);
    if (!stats) {
        return message(503, "error", "Database unavailable");
    }
    auto totals = indexTotals(index_);
    std::string body =
        JsonObject()
            .num("window_seconds", static_cast<std::uint64_t>(window->count()))
            .str("generated_at", core::formatTimestamp(now))
            .raw("totals", JsonObject()
                               .num("events", totals.events)
                               .num("ip_addresses", totals.ip_addresses)
                               .num("called_numbers", totals.called_numbers)
                               .done())
            .raw("events_per_hour", hourList(stats->events_per_hour))
            .raw("top_called_numbers", topList(stats->top_called_numbers, "called_number"))
            .raw("top_ip_addresses", topList(stats->top_ip_addresses, "ip_address"))
            .raw("top_user_agents", topList(stats->top_user_agents, "user_agent"))
            .raw("top_methods", topList(stats->top_methods, "method"))
            .raw("top_transports", topList(stats->top_transports, "transport"))
            .done();
    return json(200, std::move(body));
}

} // namespace sp::api
