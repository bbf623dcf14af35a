#pragma once
// Open connections counted in total and per client IP, with caps on both: the SIP TCP/TLS
// listeners and the REST API each keep one. Every refusal is counted by reason. Any thread.

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>

#include "core/string_map.hpp"

namespace sp::core {

class ConnectionLimits {
public:
    ConnectionLimits(std::size_t max_total, std::size_t max_per_ip)
        : max_total_(max_total), max_per_ip_(max_per_ip) {}

    // Takes one connection of `ip`; false (and counted) when over either cap.
    bool tryAcquire(const std::string& ip);
    // Gives back what tryAcquire took.
    void release(const std::string& ip);
    std::size_t open() const;
    std::uint64_t rejectedOverTotal() const;
    std::uint64_t rejectedOverPerIp() const;

private:
    mutable std::mutex mutex_;
    StringMap<std::size_t> per_ip_; // only IPs with open connections
    std::size_t total_ = 0;
    std::size_t max_total_;
    std::size_t max_per_ip_;
    std::uint64_t rejected_total_ = 0;
    std::uint64_t rejected_per_ip_ = 0;
};

} // namespace sp::core
