#include "api/limits.hpp"

namespace sp::api {

void ConnectionBudget::collect(core::MetricsWriter& w) const {
    const std::size_t open = this->open();
    const std::uint64_t total = rejectedOverTotal();
    const std::uint64_t per_ip = rejectedOverPerIp();
    w.family("api_connections", "gauge", "Open REST API connections (--api-max-connections)");
    w.sample(static_cast<std::uint64_t>(open));
    w.family("api_connections_rejected_total", "counter",
             "REST API connections closed at accept: over --api-max-connections (total) or "
             "--api-max-per-ip (per_ip)");
    w.sample(per_ip, {{"reason", "per_ip"}});
    w.sample(total, {{"reason", "total"}});
}

std::shared_ptr<void> SlotBudget::tryAcquire() {
    std::size_t n = in_flight_.load();
    do {
        if (n >= max_) {
            rejected_.fetch_add(1);
            return nullptr;
        }
    } while (!in_flight_.compare_exchange_weak(n, n + 1));
    // The deleter gives the slot back; the pointee is never used.
    return {this, [](SlotBudget* b) { b->in_flight_.fetch_sub(1); }};
}

void SlotBudget::collect(core::MetricsWriter& w) const {
    w.family(name_ + "_in_flight", "gauge",
             help_ + " being handled (at most " + std::to_string(max_) + ")");
    w.sample(static_cast<std::uint64_t>(in_flight_.load()));
    w.family(name_ + "_rejected_total", "counter",
             help_ + " refused with 503 (over " + std::to_string(max_) + " at once)");
    w.sample(rejected_.load());
}

} // namespace sp::api
