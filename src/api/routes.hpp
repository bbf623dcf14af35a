#pragma once
// The REST API's routes: SentryPeer's (same paths, statuses, bodies and headers; see
// ../shared/COMPAT.md) plus paging, exports for firewalls, /stats and /metrics.
//
// One route table (Routes::table(), route_table.cpp) is the only list of routes: dispatch,
// the metric label, 405 + Allow, the bearer-token exemptions and isSlow all derive from it.
// handle() is thread-safe and never blocks on the store's writer: single lookups and lists
// read the in-memory index; /stats reads through the store's own read-only StatsQuery.
//
// Files: route_table.cpp (table, dispatch, auth, counting, small routes), list_routes.cpp
// (/ip-addresses, /numbers and their exports), lookups.cpp (/ip-addresses/{ip},
// /numbers/{number}), stats.cpp (/stats), crowdsec.cpp (/v1/decisions*), list_query.cpp (query
// parsing), index_view.cpp (the index reads), list.cpp (streaming), exports.cpp (ipset, nft, CSV),
// limits.cpp.

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "api/api_keys.hpp"
#include "api/http.hpp"
#include "api/limits.hpp"
#include "api/list_query.hpp"
#include "block/policy.hpp"
#include "core/clock.hpp"
#include "core/metrics.hpp"
#include "store/store.hpp"

namespace sp::store {
class StatsQuery;
}
namespace sp::decisions {
class Journal;
}

namespace sp::api {

struct ApiOptions {
    std::string token;                    // when set, routes with auth need "Bearer <token>"
    std::string db_path;                  // for /stats (opened read-only, lazily)
    std::chrono::seconds block_window{0}; // exported timeouts: block::PolicyOptions::block_window
    std::function<std::string()> p2p_status;   // JSON for /p2p/status; empty when p2p is off
    std::function<std::string()> block_status; // JSON for /block/status; empty: --nft is off
    std::string cors_origin;                   // Access-Control-Allow-Origin; empty: none
    std::size_t max_lists = 4;                 // full lists/exports answered at once
    // The one blocking policy (never-block list, reporters, --block-after) that decides what
    // the firewall exports list; null: a policy with the defaults.
    std::shared_ptr<const block::Policy> policy;
    // Keys of the blocking tools' feeds (CrowdSec /v1/decisions*, APIBAN /api/{KEY}/...);
    // null or empty: those routes refuse every request (403).
    std::shared_ptr<const ApiKeys> bouncer_keys;
    // The CrowdSec decision journal (/v1/decisions*); null: those routes answer 503.
    std::shared_ptr<decisions::Journal> decisions;
    // --allow-number: numbers the check routes never report as blocked (any spelling:
    // they are normalised, lookup_keys.hpp).
    std::vector<std::string> allow_numbers;
};

class Routes;

// One route. `pattern` is a path ("/numbers") matched exactly, or a prefix ending in one
// parameter ("/numbers/{number}": the handler gets the rest of the path, which may be
// empty). The first matching entry wins, so exact paths come before a parameter route
// with the same prefix.
struct Route {
    using Handler = Response (Routes::*)(const Request&, std::string_view param);
    std::string_view method; // "GET": HEAD is answered as GET, OPTIONS by the table
    std::string_view pattern;
    Handler handler;
    bool auth;              // needs the bearer token (when --api-token is set)
    bool slow;              // heavy (SQL): the server runs it off the io threads
    std::string_view label; // metric label: the pattern, never the raw path
};

class Routes {
public:
    Routes(ApiOptions options, const store::Index& index, const core::Clock& clock,
           const core::MetricsRegistry& metrics);
    ~Routes();

    // Any thread. Never throws. Answers the request and counts it (route label, status)
    // for /metrics: the server's one entry point, so what it serves is what is counted.
    Response handle(const Request& request);

    // The route table.
    static std::span<const Route> table();
    // The table entry whose pattern matches path (param: the rest after a parameter
    // route's prefix); nullptr when none.
    static const Route* match(std::string_view path, std::string_view& param);
    // The metric label of a path: its route's label, or "other".
    static std::string_view routeLabel(std::string_view path);
    // True when the matched route is slow (the server runs it off the io threads), or the
    // request carries a large body (a batch check).
    static bool isSlow(const Request& request);
    // The largest request body the server reads for this request line (checks.cpp): the
    // batch checks' cap, else kMaxRequestBody. Over it the server answers 413 and closes.
    static std::size_t bodyLimit(std::string_view method, std::string_view path);
    static constexpr std::size_t kMaxRequestBody = 16UL * 1024;
    // Counts an answer the server gave without handle() (413 for an oversized body) under
    // the route of `path`, as handle() would. Any thread.
    void countUnrouted(std::string_view path, int status);

    // The Access-Control-Allow-Origin value (empty: the header is not sent).
    const std::string& corsOrigin() const { return options_.cors_origin; }
    // Registers this API's own counters with the registry (call once at startup).
    void registerMetrics(core::MetricsRegistry& registry);

    static constexpr std::size_t kStatuses = 8; // statuses counted without a lock

private:
    Response dispatch(const Request& request, const Route* route, std::string_view param);
    void count(const Route* route, int status);

    // Handlers (the table's), route_table.cpp unless noted.
    Response root(const Request& r, std::string_view);
    Response healthCheck(const Request& r, std::string_view);
    Response metricsText(const Request& r, std::string_view);
    Response p2pStatus(const Request& r, std::string_view);
    Response ipAddresses(const Request& r, std::string_view);     // list_routes.cpp
    Response ipset(const Request& r, std::string_view);           // list_routes.cpp
    Response numbers(const Request& r, std::string_view);         // list_routes.cpp
    Response ipAddress(const Request& r, std::string_view ip);    // lookups.cpp
    Response number(const Request& r, std::string_view n);        // lookups.cpp
    Response stats(const Request& r, std::string_view);           // stats.cpp
    Response decisionsStream(const Request& r, std::string_view); // crowdsec.cpp
    Response decisionsList(const Request& r, std::string_view);   // crowdsec.cpp
    Response blockStatus(const Request& r, std::string_view);
    Response apiban(const Request& r, std::string_view rest);      // apiban.cpp
    Response numbersCheck(const Request& r, std::string_view);     // checks.cpp
    Response ipAddressesCheck(const Request& r, std::string_view); // checks.cpp

    Response apibanBanned(std::string_view id); // apiban.cpp
    // apiban.cpp: the rest of an /api/ path is a check (one lookup), not a page.
    static bool apibanIsLookup(std::string_view rest);
    Response apibanCheck(std::string_view ip); // apiban.cpp
    // checks.cpp: the evidence rule for a number, and --allow-number.
    bool numberBlocked(const store::Seen& seen, core::TimePoint now) const;
    bool numberAllowed(const std::string& normalised) const;
    static std::vector<std::string> normaliseAllowList(const std::vector<std::string>& numbers);

    Response listIps(const Request& r, const std::string& format); // list_routes.cpp
    // A full list (no ?limit) or an export takes a slot of the ListBudget, held until the
    // response is streamed (an empty pointer for a page); nullopt: over --api-max-lists.
    std::optional<std::shared_ptr<void>> listSlot(const ListQuery& q, bool json);

    ApiOptions options_;
    std::shared_ptr<const block::Policy> policy_; // options_.policy, or one with the defaults
    std::vector<std::string> allowed_numbers_;    // options_.allow_numbers normalised, sorted
    const store::Index& index_;
    const core::Clock& clock_;
    const core::MetricsRegistry& metrics_;
    SlotBudget lists_;

    using StatusCounts = std::array<std::atomic<std::uint64_t>, kStatuses>;
    std::unique_ptr<StatusCounts[]> counts_; // one row per table entry, then "other"
    std::mutex counts_mutex_;
    std::map<std::pair<std::string, int>, std::uint64_t> other_counts_; // any other status
    std::unique_ptr<store::StatsQuery> stats_query_;
};

} // namespace sp::api
