#include "store/store_impl.hpp"

#include <filesystem>

namespace sp::store {

void Store::collect(core::MetricsWriter& w) const {
    w.family("events_stored_total", "counter", "Events committed to the database");
    w.sample(stored());
    w.family("events_lost_total", "counter", "Events the database could not take");
    w.sample(lost());
    w.family("store_transactions_total", "counter", "Committed database transactions");
    w.sample(transactions());
    w.family("store_write_errors_total", "counter", "Failed database transactions");
    w.sample(writeErrors());
    w.family("events_pruned_total", "counter", "Events deleted by retention and size budgets");
    w.sample(pruned());
    w.family("events_evicted_total", "counter",
             "Events deleted from the database (and the index), by reason: max_age "
             "(retention), max_rows and index_memory (size budgets)");
    for (auto reason : {Eviction::MaxAge, Eviction::MaxRows, Eviction::IndexMemory}) {
        w.sample(evicted(reason), {{"reason", evictionName(reason)}});
    }
    auto snap = index_.snapshot();
    w.family("database_events", "gauge", "Events in the database (within --max-age)");
    w.sample(snap->events);
    w.family("database_peer_events", "gauge", "Events in the database received from peers");
    w.sample(snap->peer_events);
    w.family("database_max_rows", "gauge", "The --max-rows budget (0: none)");
    w.sample(options_.max_rows);
    w.family("database_size_bytes", "gauge", "Size of the database file and its WAL");
    std::error_code ec;
    std::uintmax_t size = 0;
    for (const char* suffix : {"", "-wal"}) {
        auto n = std::filesystem::file_size(options_.path + suffix, ec);
        size += ec ? 0 : n;
    }
    w.sample(std::uint64_t{size});
    w.family("bad_actors", "gauge", "Distinct source IPs in the database");
    w.sample(std::uint64_t{snap->by_ip.size()});
    w.family("called_numbers", "gauge", "Distinct called numbers in the database");
    w.sample(std::uint64_t{snap->by_number.size()});
    w.family("index_memory_bytes", "gauge", "Estimated memory of the in-memory index");
    w.sample(std::uint64_t{snap->memory_bytes});
    w.family("index_memory_budget_bytes", "gauge", "The index's memory budget (0: none)");
    w.sample(std::uint64_t{options_.max_index_bytes});
    w.family("index_version", "counter", "Index snapshots published (one per stored batch)");
    w.sample(snap->version);
    w.family("index_subscribers", "gauge", "Consumers subscribed to index changes");
    w.sample(std::uint64_t{index_.subscribers()});
}

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
            return;
        }
        s.enforceSizeBudgets(); // after every batch: eviction keeps pace with insertion
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
    s.enforceSizeBudgets();
    s.retentionStep(now);
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
    s.enforceSizeBudgets();
    s.next_prune = clock_.now();
    while (s.retentionStep(clock_.now())) {
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
