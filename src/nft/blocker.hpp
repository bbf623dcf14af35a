#pragma once
// The nftables blocker (--nft): keeps `table inet <name>` sets ipv4_addr / ipv6_addr equal to
// what the blocking policy (block::Policy::decide) blocks, each element timing out when its
// block ends (the policy's `left`: last seen + block window - now; no timeout when blocks
// do not expire), refreshed when the address is seen again.
//
// It consumes the index subscription ("the state, then every change"): start() writes the
// table, its sets filled from the state, in one transaction (replacing a table left by an
// earlier run); then the sp-nft thread writes the changes in batches, at most one
// transaction per batch interval (100 ms). stop() removes the table unless `keep` (set-only:
// empties the sets, leaving the table and the operator's rules that use them).
//
// Threads: start()/stop() from the main thread; resync(), collect() and statusJson() from
// any thread; everything else runs on sp-nft.

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "block/policy.hpp"
#include "core/clock.hpp"
#include "core/metrics.hpp"
#include "nft/tracker.hpp"
#include "store/index.hpp"

struct nft_ctx;

namespace sp::nft {

struct BlockerOptions {
    std::string table = "sentrypeer"; // validTableName
    bool set_only = false;            // sets only: no chain (the operator's ruleset uses them)
    bool keep = false;                // leave the table in place on exit
    std::chrono::milliseconds batch_interval{100};
    std::size_t max_pending_changes = 1U << 20; // subscription budget before a resync
};

class Blocker {
public:
    Blocker(BlockerOptions o, std::shared_ptr<const block::Policy> policy,
            const store::Index& index, const core::Clock& clock);
    ~Blocker();
    Blocker(const Blocker&) = delete;
    Blocker& operator=(const Blocker&) = delete;

    // Throws std::runtime_error (one line naming --nft and CAP_NET_ADMIN) when this process
    // may not change the firewall.
    static void checkCapability();

    // Main thread, once, after the index is loaded: subscribes, commits the table with every
    // blocked address in one transaction, then starts sp-nft. Throws std::runtime_error (one
    // line) when the transaction is refused.
    void start();
    // Main thread: stops sp-nft, then removes the table (set-only: empties the sets) unless
    // `keep`. Idempotent.
    void stop();
    // Any thread: rebuild the sets from the index on sp-nft (the allow list was reloaded).
    void resync();

    void collect(core::MetricsWriter& w) const;
    // JSON for GET /block/status.
    std::string statusJson() const;

    // Event-to-commit latency buckets (seconds), cumulative as in Prometheus.
    static constexpr std::array<double, 10> kLatencyBuckets = {0.05, 0.1, 0.2, 0.3, 0.5,
                                                               1,    2,   5,   10,  60};

private:
    void run();
    // Runs one script as one transaction; records success, duration and errors.
    bool commit(const std::string& script, std::string_view what);
    // Fills the tracker from a snapshot (every blocked address); returns the elements.
    Elements reset(const store::IndexSnapshot& s, TimePoint now);
    void record(const store::KeyChange& c, TimePoint now);
    void commitBatch(TimePoint now);
    void fullResync(const store::IndexSnapshot& s, std::string_view why);
    void publishCounts();

    const BlockerOptions o_;
    std::shared_ptr<const block::Policy> policy_;
    const store::Index& index_;
    const core::Clock& clock_;
    nft_ctx* ctx_ = nullptr; // sp-nft (main thread before/after it runs)
    std::shared_ptr<store::IndexSubscription> sub_;
    Tracker tracker_;                   // sp-nft
    std::uint64_t applied_version_ = 0; // sp-nft: deltas up to this are in the tracker
    std::chrono::steady_clock::time_point retry_at_{}; // sp-nft: no full rewrite before this
    std::thread thread_;
    std::atomic<bool> stop_{false}, resync_{false}, started_{false};

    std::atomic<std::uint64_t> adds_{0}, removes_{0}, refreshes_{0}, transactions_{0}, errors_{0},
        full_loads_{0}, elements_v4_{0}, elements_v6_{0};
    std::atomic<double> last_apply_seconds_{0};
    std::array<std::atomic<std::uint64_t>, kLatencyBuckets.size() + 1> latency_{};
    mutable std::mutex error_mutex_;
    std::string last_error_;    // guarded by error_mutex_
    TimePoint last_error_at_{}; // guarded by error_mutex_
};

} // namespace sp::nft
