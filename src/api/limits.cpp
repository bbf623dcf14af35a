#include "api/limits.hpp"

namespace sp::api {

bool ConnectionBudget::tryAcquire(const std::string& ip) {
    std::lock_guard lock(mutex_);
    if (total_ >= max_total_) {
        ++rejected_total_;
        return false;
    }
    auto& n = per_ip_[ip];
    if (n >= max_per_ip_) {
        ++rejected_per_ip_;
        return false;
    }
    ++n;
    ++total_;
    return true;
}

void ConnectionBudget::release(const std::string& ip) {
    std::lock_guard lock(mutex_);
    auto it = per_ip_.find(ip);
    if (it != per_ip_.end() && --it->second == 0) {
        per_ip_.erase(it);
    }
    --total_;
}

std::size_t ConnectionBudget::open() const {
    std::lock_guard lock(mutex_);
    return total_;
}

void ConnectionBudget::collect(core::MetricsWriter& w) const {
    std::size_t open = 0;
    std::uint64_t total = 0;
    std::uint64_t per_ip = 0;
    {
        std::lock_guard lock(mutex_);
        open = total_;
        total = rejected_total_;
        per_ip = rejected_per_ip_;
    }
    w.family("api_connections", "gauge", "Open REST API connections (--api-max-connections)");
    w.sample(static_cast<std::uint64_t>(open));
    w.family("api_connections_rejected_total", "counter",
             "REST API connections closed at accept: over --api-max-connections (total) or "
             "--api-max-per-ip (per_ip)");
    w.sample(per_ip, {{"reason", "per_ip"}});
    w.sample(total, {{"reason", "total"}});
}

std::shared_ptr<void> ListBudget::tryAcquire() {
    std::size_t n = in_flight_.load();
    do {
        if (n >= max_) {
            rejected_.fetch_add(1);
            return nullptr;
        }
    } while (!in_flight_.compare_exchange_weak(n, n + 1));
    // The deleter gives the slot back; the pointee is never used.
    return {this, [](ListBudget* b) { b->in_flight_.fetch_sub(1); }};
}

void ListBudget::collect(core::MetricsWriter& w) const {
    w.family("api_lists_in_flight", "gauge",
             "Full lists and exports being answered (--api-max-lists)");
    w.sample(static_cast<std::uint64_t>(in_flight_.load()));
    w.family("api_lists_rejected_total", "counter",
             "Full lists and exports answered 503 over --api-max-lists");
    w.sample(rejected_.load());
}

} // namespace sp::api
