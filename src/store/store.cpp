#include "store/store_impl.hpp"

namespace sp::store {

Store::Store(StoreOptions options, const core::Clock& clock)
    : options_(std::move(options)), clock_(clock) {
    impl_ = std::make_unique<Impl>(*this);
    impl_->open(); // on a throw, ~Impl closes the connection
}

Store::~Store() {
    close();
}

void Store::consume(std::span<const core::EventPtr> batch) {
    Impl& s = *impl_;
    if (batch.empty()) {
        return;
    }
    if (s.db == nullptr) { // after close(): the bus never does this
        lost_.fetch_add(batch.size(), std::memory_order_relaxed);
        return;
    }
    if (s.pending.empty()) {
        if (!s.write(batch, kWriteAttempts)) {
            s.defer(batch);
            s.scheduleRetry();
        }
        return;
    }
    // Still failing lately: queue behind the older events and retry when due.
    s.defer(batch);
    if (clock_.now() >= s.retry_at) {
        s.flushPending(1);
    }
}

void Store::tick() {
    Impl& s = *impl_;
    if (s.db == nullptr) {
        return;
    }
    auto now = clock_.now();
    if (!s.pending.empty()) {
        if (now < s.retry_at || !s.flushPending(1)) {
            return;
        }
    }
    s.enforceBudgets(now);
    s.refreshFirst(kRefreshRows);
}

void Store::loadIndex() {
    impl_->loadIndex();
}

void Store::pruneAll() {
    Impl& s = *impl_;
    if (s.db == nullptr) {
        return;
    }
    s.next_prune = clock_.now();
    while (s.enforceBudgets(clock_.now())) {
    }
    s.next_prune = clock_.now() + options_.prune_interval;
    while (s.refreshFirst(kRefreshRows)) {
    }
}

void Store::close() {
    Impl& s = *impl_;
    if (s.db == nullptr) {
        return;
    }
    if (!s.pending.empty() && !s.flushPending(kWriteAttempts)) {
        lost_.fetch_add(s.pending.size(), std::memory_order_relaxed);
        spdlog::error("store: {} events could not be written to {} and are lost: {}",
                      s.pending.size(), options_.path, s.last_error);
        s.pending.clear();
        pending_.store(0, std::memory_order_relaxed);
    }
    s.closeDatabase();
}

} // namespace sp::store
