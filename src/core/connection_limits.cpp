#include "core/connection_limits.hpp"

namespace sp::core {

bool ConnectionLimits::tryAcquire(const std::string& ip) {
    std::lock_guard lock(mutex_);
    if (total_ >= max_total_) {
        ++rejected_total_;
        return false;
    }
    auto it = per_ip_.find(ip);
    if ((it == per_ip_.end() ? 0 : it->second) >= max_per_ip_) {
        ++rejected_per_ip_;
        return false;
    }
    if (it == per_ip_.end()) {
        it = per_ip_.emplace(ip, 0).first;
    }
    ++it->second;
    ++total_;
    return true;
}

void ConnectionLimits::release(const std::string& ip) {
    std::lock_guard lock(mutex_);
    auto it = per_ip_.find(ip);
    if (it == per_ip_.end()) {
        return; // never acquired: nothing to give back
    }
    if (--it->second == 0) {
        per_ip_.erase(it);
    }
    --total_;
}

std::size_t ConnectionLimits::open() const {
    std::lock_guard lock(mutex_);
    return total_;
}

std::uint64_t ConnectionLimits::rejectedOverTotal() const {
    std::lock_guard lock(mutex_);
    return rejected_total_;
}

std::uint64_t ConnectionLimits::rejectedOverPerIp() const {
    std::lock_guard lock(mutex_);
    return rejected_per_ip_;
}

} // namespace sp::core
