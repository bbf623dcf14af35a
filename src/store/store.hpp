#pragma once
// The store: SQLite (WAL) is the durable record, written by one thread (the bus runs this
// sink on "sp-store"); an in-memory index of who probed and which numbers were tried is
// kept alongside for the API. Retention prunes old rows in small chunks between batches.
// The store also owns one helper thread, "sp-store-ckpt", that copies the WAL back into the
// database file (checkpoints) so the writer never waits for it; started by the constructor,
// joined by close().

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
#include "core/guarded.hpp"
#include "core/string_map.hpp"

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
    std::size_t prune_chunk = 2000;              // rows deleted per retention step
    std::chrono::milliseconds prune_interval{1000};
    int busy_timeout_ms = 5000;
    // Events kept in memory while the database refuses writes (busy, disk full), retried
    // with backoff; beyond this the oldest are dropped and counted as lost().
    std::size_t max_pending = 100000;
    // false: the constructor leaves the in-memory index empty and loadIndex() fills it (the
    // daemon binds its listeners first, so probes queue in the kernel meanwhile).
    bool load_index = true;
};

// Per-key aggregate of stored events. Times have the database's precision (microseconds).
struct Seen {
    std::uint64_t count = 0;
    core::TimePoint first{};
    core::TimePoint last{};
};

// The in-memory index: per source IP and per called number. Written by the store thread,
// read by any thread (API). Reads take a shared lock; never hold the visitor long.
class Index {
public:
    using Map = core::StringMap<Seen>;
    struct Maps {
        Map by_ip;
        Map by_number;
        std::uint64_t events = 0; // stored rows, but for any already past max_age when seen
    };

    std::optional<Seen> ip(std::string_view ip) const;
    std::optional<Seen> number(std::string_view number) const;
    std::uint64_t events() const;
    // Calls f(const Maps&) under the shared lock.
    template <typename F> decltype(auto) read(F&& f) const {
        return maps_.read(std::forward<F>(f));
    }

    // Store thread only.
    void add(const core::Event& e);
    // Takes one event away: a key whose count reaches 0 is dropped; otherwise its `first`
    // becomes at least `time` (retention removes oldest first) and the store then sets it
    // exactly from the database.
    void remove(std::string_view ip, std::string_view number, core::TimePoint time);
    template <typename F> decltype(auto) write(F&& f) { return maps_.write(std::forward<F>(f)); }

private:
    core::Guarded<Maps> maps_;
};

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

    // Counters, readable from any thread.
    std::uint64_t stored() const { return stored_.load(std::memory_order_relaxed); }
    std::uint64_t pruned() const { return pruned_.load(std::memory_order_relaxed); }
    // Failed write attempts (a transaction that could not commit, or a row refused).
    std::uint64_t writeErrors() const { return write_errors_.load(std::memory_order_relaxed); }
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

    // Runs retention until nothing older than max_age remains (store thread, or tests).
    void pruneAll();

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
    StoreOptions options_;
    const core::Clock& clock_;
    Index index_;
    std::atomic<std::uint64_t> stored_{0};
    std::atomic<std::uint64_t> pruned_{0};
    std::atomic<std::uint64_t> write_errors_{0};
    std::atomic<std::uint64_t> lost_{0};
    std::atomic<std::uint64_t> duplicates_{0};
    std::atomic<std::size_t> pending_{0};
    std::atomic<std::uint64_t> transactions_{0};
};

} // namespace sp::store
