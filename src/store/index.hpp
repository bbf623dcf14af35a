#pragma once
// The in-memory index of stored events: per source IP and per called number, how many events
// (local and from peers), how many distinct peers reported it, first and last seen.
//
// One writer (the store thread) changes a private master copy and publishes it once per batch
// as an immutable snapshot (IndexSnapshot, persistent maps sharing structure with the master:
// publishing costs O(1), the next change copies only the shared paths it touches). Readers
// take a snapshot and read it with no lock: a full list never holds up the writer and a slow
// reader holds only its snapshot.
//
// Consumers that act on changes (firewall sets, BGP routes, an event stream) subscribe: they
// get the current state, then every change published after it, with no gap and no duplicate.
// A subscriber that falls behind by more than its budget of pending changes is given the
// whole state again instead (a resync) rather than letting its queue grow.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/event.hpp"
#include "core/persistent_map.hpp"
#include "core/string_map.hpp"

namespace sp::store {

// Per-key aggregate of stored events. Times have the database's precision (microseconds).
struct Seen {
    std::uint64_t count = 0; // local + peer
    std::uint64_t local = 0; // caught by this node
    std::uint64_t peer = 0;  // received from peers
    // Distinct verified reporters (core::Event::reporter) of its peer events, at most
    // kMaxReporters; peer events without one (plaintext values) are counted in `peer` only.
    std::uint32_t reporters = 0;
    core::TimePoint first{};
    core::TimePoint last{};
};

// Distinct reporters tracked per key: enough for any --peer-min-reporters worth setting.
inline constexpr std::uint32_t kMaxReporters = 16;

// Which events a list or an export counts (?origin=local|peer|all).
enum class OriginFilter { All, Local, Peer };
std::optional<OriginFilter> parseOriginFilter(std::string_view s);
// Events of `s` that the filter counts (0: the key is not listed).
inline std::uint64_t countOf(const Seen& s, OriginFilter f) {
    return f == OriginFilter::All ? s.count : (f == OriginFilter::Local ? s.local : s.peer);
}

using KeyMap = core::PersistentMap<Seen>;

struct IndexSnapshot {
    KeyMap by_ip;
    KeyMap by_number;
    std::uint64_t events = 0;      // counted rows (within max_age when they were stored)
    std::uint64_t peer_events = 0; // of which from peers
    std::uint64_t version = 0;     // +1 per publish
    std::size_t memory_bytes = 0;  // estimate of the index's memory (keys, entries, reporters)
};
using SnapshotPtr = std::shared_ptr<const IndexSnapshot>;

// One key's new state in a delta; seen is empty when the key is gone (no events left).
struct KeyChange {
    std::string key;
    std::optional<Seen> seen;
};
// What one publish changed (keys in no particular order).
struct IndexDelta {
    std::uint64_t version = 0;
    std::vector<KeyChange> ips;
    std::vector<KeyChange> numbers;
};

// A consumer's view of the index: "the current state, then every change". One consumer
// thread calls wait(); the store thread feeds it.
class IndexSubscription {
public:
    struct Update {
        SnapshotPtr state; // set: the whole state (first call, or after a resync)
        std::vector<std::shared_ptr<const IndexDelta>> deltas; // then these, oldest first
        bool closed = false; // the index is shutting down: no more updates
    };
    explicit IndexSubscription(std::size_t max_pending_changes)
        : max_pending_(max_pending_changes) {}

    // Waits up to `timeout` for something new; returns what arrived (possibly nothing).
    // A delta-less delivery (see Index::publish) arrives as a state.
    Update wait(std::chrono::milliseconds timeout);
    // Times the consumer fell behind by more than its budget and got the state again.
    std::uint64_t resyncs() const { return resyncs_.load(std::memory_order_relaxed); }
    std::size_t pendingChanges() const { return pending_changes_.load(std::memory_order_relaxed); }

private:
    friend class Index;
    void deliver(const SnapshotPtr& snapshot, const std::shared_ptr<const IndexDelta>& delta);
    void close();

    const std::size_t max_pending_;
    std::mutex mutex_;
    std::condition_variable cv_;
    SnapshotPtr state_; // pending state (resync), or null
    std::deque<std::shared_ptr<const IndexDelta>> deltas_;
    bool closed_ = false;
    std::atomic<std::size_t> pending_changes_{0};
    std::atomic<std::uint64_t> resyncs_{0};
};

class Index {
public:
    Index();

    using Maps = IndexSnapshot;

    // ---- any thread ----
    SnapshotPtr snapshot() const;
    // f(const IndexSnapshot&) on the current snapshot (no lock is held while f runs).
    template <typename F> decltype(auto) read(F&& f) const {
        SnapshotPtr s = snapshot();
        return std::forward<F>(f)(*s);
    }
    std::optional<Seen> ip(std::string_view ip) const;
    std::optional<Seen> number(std::string_view number) const;
    std::uint64_t events() const { return snapshot()->events; }
    // The current state, then every change (max_pending_changes: the consumer's budget of
    // queued key changes before it is resynced instead).
    std::shared_ptr<IndexSubscription> subscribe(std::size_t max_pending_changes = 1U << 20) const;
    // Wakes every subscriber with `closed` (shutdown).
    void closeSubscriptions();
    std::size_t subscribers() const;

    // ---- the store thread only: changes are invisible until publish() ----
    // Counts one stored event (its origin and, for a peer event, its reporter: an empty
    // reporter counts the event but adds no reporter).
    void add(const core::Event& e);
    void add(std::string_view ip, std::string_view number, core::TimePoint time,
             core::Origin origin, std::string_view reporter);
    // Takes one event away (retention, eviction): a key at 0 goes; a key that remains gets a
    // `first` of at least `time` (rows go oldest first; the store makes it exact later).
    // Returns whether the ip and the number keys remain.
    std::pair<bool, bool> remove(std::string_view ip, std::string_view number, core::TimePoint time,
                                 core::Origin origin, std::string_view reporter);
    // Sets a key's exact first-seen time (after retention), if the key still exists.
    void setFirst(bool ip_key, std::string_view key, core::TimePoint first);
    // Drops everything (before a full load).
    void clear();
    // A counted local event of (ip, number) was a peer's (the load's second pass).
    void reclassifyAsPeer(std::string_view ip, std::string_view number, std::string_view reporter);
    // The master copy's counters (writer's view, including unpublished changes).
    std::uint64_t pendingEvents() const { return master_.events; }
    std::size_t memoryBytes() const { return master_.memory_bytes; }
    // Makes the changes since the last publish visible to readers and subscribers.
    void publish();

private:
    using ReporterMap = core::StringMap<std::vector<std::pair<std::uint64_t, std::uint32_t>>>;

    void addKey(KeyMap& map, ReporterMap& reporters, core::StringSet& changed, std::string_view key,
                core::TimePoint t, core::Origin origin, std::uint64_t reporter);
    bool removeKey(KeyMap& map, ReporterMap& reporters, core::StringSet& changed,
                   std::string_view key, core::TimePoint t, core::Origin origin,
                   std::uint64_t reporter);
    void noteChange(core::StringSet& changed, std::string_view key);

    // Writer only.
    IndexSnapshot master_;
    ReporterMap ip_reporters_, number_reporters_;
    core::StringSet changed_ips_, changed_numbers_; // since the last publish, when subscribed
    bool dirty_ = false;                            // changed since the last publish
    bool batch_complete_ = false; // and every change of it was recorded in changed_*

    mutable std::mutex mutex_; // current_ and subscribers_
    SnapshotPtr current_;
    mutable std::vector<std::weak_ptr<IndexSubscription>> subscribers_;
    // Someone is subscribed: the writer records changed keys. Set by subscribe() (under
    // mutex_, with the state it hands out), cleared by publish() when nobody is left. A batch
    // whose first change saw it set has a complete delta; otherwise subscribers get the
    // state it produced instead.
    mutable std::atomic<bool> tracking_{false};
};

} // namespace sp::store
