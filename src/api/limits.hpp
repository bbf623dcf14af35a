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

#include "core/metrics.hpp"

namespace sp::api {

class ConnectionBudget {
public:
    ConnectionBudget(std::size_t max_total, std::size_t max_per_ip)
        : max_total_(max_total), max_per_ip_(max_per_ip) {}

    // Takes one connection of `ip`; false (and counted) when over either cap.
    bool tryAcquire(const std::string& ip);
    // Gives back what tryAcquire took.
    void release(const std::string& ip);
    std::size_t open() const;
    // sentrypeer_api_connections, sentrypeer_api_connections_rejected_total{reason}.
    void collect(core::MetricsWriter& w) const;

private:
    mutable std::mutex mutex_;
    std::unordered_map<std::string, std::size_t> per_ip_;
    std::size_t total_ = 0;
    std::size_t max_total_;
    std::size_t max_per_ip_;
    std::uint64_t rejected_total_ = 0;  // over max_total
    std::uint64_t rejected_per_ip_ = 0; // over max_per_ip
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
