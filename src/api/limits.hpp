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

// At most `max` of something expensive at once (full lists and exports; large request
// bodies), each held as a slot. Two metric families: NAME_in_flight (gauge) and
// NAME_rejected_total (counter).
class SlotBudget {
public:
    SlotBudget(std::size_t max, std::string name, std::string help)
        : max_(max), name_(std::move(name)), help_(std::move(help)) {}

    // A slot, released when the last copy of the returned pointer goes (the response
    // streamed to its end or dropped); null (and counted) when max slots are in use.
    std::shared_ptr<void> tryAcquire();
    std::size_t inFlight() const { return in_flight_.load(); }
    void collect(core::MetricsWriter& w) const;

private:
    std::size_t max_;
    std::string name_, help_; // metric family prefix, "what" for its help text
    std::atomic<std::size_t> in_flight_{0};
    std::atomic<std::uint64_t> rejected_{0};
};

} // namespace sp::api
