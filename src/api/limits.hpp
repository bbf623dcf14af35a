#pragma once
// The API's budgets: open connections (in total and per client IP) and concurrent
// full lists (a list without ?limit, or an export). Every refusal is counted for /metrics.
// Any thread.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "core/connection_limits.hpp"
#include "core/metrics.hpp"

namespace sp::api {

// Open API connections (--api-max-connections, --api-max-per-ip).
class ConnectionBudget : public core::ConnectionLimits {
public:
    using core::ConnectionLimits::ConnectionLimits;
    // sentrypeer_api_connections, sentrypeer_api_connections_rejected_total{reason}.
    void collect(core::MetricsWriter& w) const;
};

class ListBudget {
public:
    explicit ListBudget(std::size_t max_lists) : max_(max_lists) {}

    // A slot, released when the last copy of the returned pointer goes (the response
    // streamed to its end or dropped); null (and counted) when max_lists are in flight.
    std::shared_ptr<void> tryAcquire();
    std::size_t inFlight() const { return in_flight_.load(); }
    // sentrypeer_api_lists_in_flight, sentrypeer_api_lists_rejected_total.
    void collect(core::MetricsWriter& w) const;

private:
    std::size_t max_;
    std::atomic<std::size_t> in_flight_{0};
    std::atomic<std::uint64_t> rejected_{0};
};

} // namespace sp::api
