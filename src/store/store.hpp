#pragma once
// The store: SQLite (WAL) is the durable record, written by one thread (the bus runs this
// sink on "sp-store"); an in-memory index of who probed and which numbers were tried is
// kept alongside for the API. Retention prunes old rows in small chunks between batches.
// The store also owns one helper thread, "sp-store-ckpt", that copies the WAL back into the
// database file (checkpoints) so the writer never waits for it; started by the constructor,
// joined by close().

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "bus/event_bus.hpp"
#include "core/clock.hpp"
#include "core/event.hpp"
#include "core/metrics.hpp"
#include "store/index.hpp"

namespace sp::store {

// Startup failure (unwritable file, not a database, newer schema than we know). The
// message names the file and the problem in one line.
class StoreError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

struct StoreOptions {
    std::string path = "sentrypeer.db";
    std::chrono::seconds max_age{7 * 24 * 3600}; // 0 = keep everything
    // Size budgets, enforced by deleting the oldest rows (database and index together, so
    // every key the API reports is in the database and vice versa). 0 = no limit.
    std::uint64_t max_rows = 0;      // rows counted in the index
    std::size_t max_index_bytes = 0; // the index's estimated memory (Index::memoryBytes)
    std::size_t prune_chunk = 2000;  // rows deleted per retention step
    std::chrono::milliseconds prune_interval{1000};
    int busy_timeout_ms = 5000;
    // Events kept in memory while the database refuses writes (busy, disk full), retried
    // with backoff; beyond this the oldest are dropped and counted as lost().
    std::size_t max_pending = 100000;
    // false: the constructor leaves the in-memory index empty and loadIndex() fills it (the
    // daemon binds its listeners first, so probes queue in the kernel meanwhile).
    bool load_index = true;
};

// Why rows were deleted: each is a /metrics counter (evicted_total{reason}).
enum class Eviction { MaxAge, MaxRows, IndexMemory };
inline constexpr std::size_t kEvictionReasons = 3;
inline constexpr const char* evictionName(Eviction e) {
    return e == Eviction::MaxAge ? "max_age"
                                 : (e == Eviction::MaxRows ? "max_rows" : "index_memory");
}

class Store final : public bus::Sink {
public:
    // Opens or creates the database, migrates the schema (an existing SentryPeer database
    // keeps its rows and gains our columns), loads the index from the rows within max_age
    // (unless options.load_index is false). Throws StoreError.
    Store(StoreOptions options, const core::Clock& clock);
    ~Store() override;

    // Loads the in-memory index from the rows within max_age (one pass over the time
    // index: seconds for millions of rows). Before the store thread starts consuming.
    // Throws StoreError.
    void loadIndex();

    // bus::Sink (store thread): one transaction per batch. Never throws: when the database
    // refuses the write (busy beyond busy_timeout_ms, disk full) the batch is kept in memory
    // (pending(), at most max_pending events) and retried with backoff from tick().
    void consume(std::span<const core::EventPtr> batch) override;
    // Retries pending events when due, then one retention step (prune_chunk rows) when due:
    // every prune_interval, or at once while the previous step found a full chunk.
    void tick() override;
    // Writes what is pending, stops the checkpoint thread, checkpoints and closes the
    // database. Idempotent; also run by the destructor.
    void close() override;

    const Index& index() const { return index_; }

    // The store's queue on the bus: lossless (publishers wait rather than drop; the source
    // of truth), 65,536 events or 64 MiB for bursts; events gather for up to 50 ms (or until
    // 5,000 wait), then go in one transaction: few large transactions cost far less than
    // many small ones.
    static bus::SinkOptions sinkOptions() {
        return {.name = "store",
                .thread_name = "sp-store",
                .capacity = 65536,
                .capacity_bytes = std::size_t{64} << 20,
                .max_batch = 5000,
                .tick = bus::kGather,
                .linger = bus::kGather,
                .lossless = true};
    }

    // Counters, readable from any thread.
    std::uint64_t stored() const { return stored_.load(std::memory_order_relaxed); }
    std::uint64_t pruned() const { return pruned_.load(std::memory_order_relaxed); }
    // Rows deleted, by reason (retention, a size budget); their sum is pruned().
    std::uint64_t evicted(Eviction reason) const {
        return evicted_[static_cast<std::size_t>(reason)].load(std::memory_order_relaxed);
    }
    // Failed write attempts (a transaction that could not commit, or a row refused).
    // (As bus::Sink::writeErrors: /metrics sink_write_errors_total{sink="store"}.)
    std::uint64_t writeErrors() const override {
        return write_errors_.load(std::memory_order_relaxed);
    }
    // Events given up on: rejected by the database, or dropped because it kept failing for
    // longer than max_pending events (each also logged, rate-limited).
    std::uint64_t lost() const { return lost_.load(std::memory_order_relaxed); }
    // Peer events not stored because the same event_uuid from a peer already is.
    std::uint64_t duplicates() const { return duplicates_.load(std::memory_order_relaxed); }
    // Events waiting in memory for the database to accept writes again.
    std::size_t pending() const { return pending_.load(std::memory_order_relaxed); }
    // Committed write transactions (one per written batch, one per retention chunk).
    std::uint64_t transactions() const { return transactions_.load(std::memory_order_relaxed); }
    const std::string& path() const { return options_.path; }

    // The store's /metrics families (any thread): rows written, lost, evicted by reason,
    // the index's keys, memory and budget, the database file's size.
    void collect(core::MetricsWriter& w) const;

    // Runs retention and the size budgets until nothing is over (store thread, or tests).
    void pruneAll();

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
    StoreOptions options_;
    const core::Clock& clock_;
    Index index_;
    std::atomic<std::uint64_t> stored_{0};
    std::atomic<std::uint64_t> pruned_{0};
    std::array<std::atomic<std::uint64_t>, kEvictionReasons> evicted_{};
    std::atomic<std::uint64_t> write_errors_{0};
    std::atomic<std::uint64_t> lost_{0};
    std::atomic<std::uint64_t> duplicates_{0};
    std::atomic<std::size_t> pending_{0};
    std::atomic<std::uint64_t> transactions_{0};
};

} // namespace sp::store
