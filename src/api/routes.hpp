#pragma once
// The REST API's routes: SentryPeer's (same paths, statuses, bodies and headers; see
// ../shared/COMPAT.md) plus paging, exports for firewalls, /stats and /metrics.
// handle() is thread-safe and never blocks on the store's writer: single lookups and lists
// read the in-memory index; /stats reads through its own read-only SQLite connection.

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "api/http.hpp"
#include "core/clock.hpp"
#include "core/metrics.hpp"
#include "store/store.hpp"

namespace sp::api {

struct ApiOptions {
    std::string token;   // when set, every route but /health-check needs "Bearer <token>"
    std::string db_path; // for /stats (opened read-only, lazily)
    std::chrono::seconds max_age{0};         // retention: remaining lifetime of exported entries
    std::function<std::string()> p2p_status; // JSON for /p2p/status; empty when p2p is off
};

class Routes {
public:
    Routes(ApiOptions options, const store::Index& index, const core::Clock& clock,
           const core::MetricsRegistry& metrics);
    ~Routes();

    // Any thread. Never throws.
    Response handle(const Request& request);

    // True for routes whose work is heavy (SQL): the server runs them off the io threads.
    static bool isSlow(const Request& request) { return request.path == "/stats"; }

    // Counts one answered request to `path` (server calls it; lock-free for the usual
    // statuses), exported on /metrics.
    void countPath(std::string_view path, int status);
    // Counts one answered request by route label (as routeLabel returns).
    void count(const std::string& route, int status);
    // Route label for metrics: the matched pattern, never the raw (attacker-chosen) path.
    static std::string routeLabel(const std::string& path);
    // Registers this API's own counters with the registry (call once at startup).
    void registerMetrics(core::MetricsRegistry& registry);

private:
    Response route(const Request& request);
    Response ipAddresses(const Request& request);
    Response ipAddress(std::string_view ip);
    Response numbers(const Request& request);
    Response number(std::string_view number);
    Response stats(const Request& request);

    ApiOptions options_;
    const store::Index& index_;
    const core::Clock& clock_;
    const core::MetricsRegistry& metrics_;

public:
    static constexpr std::size_t kRoutes = 10;  // route labels (routeLabel)
    static constexpr std::size_t kStatuses = 8; // statuses counted without a lock

private:
    std::array<std::array<std::atomic<std::uint64_t>, kStatuses>, kRoutes> counts_{};
    std::mutex counts_mutex_;
    std::map<std::pair<std::string, int>, std::uint64_t> other_counts_; // any other status
    struct StatsDb;
    std::unique_ptr<StatsDb> stats_db_;
};

} // namespace sp::api
