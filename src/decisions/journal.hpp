#pragma once
// The decision journal behind the CrowdSec-compatible stream (/v1/decisions/stream): the
// one blocking policy (block::Policy::decide) applied to the index's "state, then every
// change" subscription, kept as CrowdSec decisions (ip -> id, until, scenario) plus a
// bounded, sequence-numbered change log and one cursor per bouncer key (ApiKeys index).
//
// - A new block is logged as "new". A block that ends (its time is up, the address left the
//   data, or the policy no longer blocks it) moves to "deleted".
// - An address seen again gets its block extended: the old decision is logged "deleted" and
//   a new one (new id, new duration) "new", so that a delta carries the address in both lists
//   of one answer (a bouncer refreshes an element's timeout only that way). Extensions are
//   issued when the block grows by at least max(1 s, min(60 s, window / 100)), so an address
//   probing all the time is re-issued at most about every minute, not every batch.
// - Blocks without expiry (--max-age 0 and no --block-time) are sent with a finite duration,
//   kNoExpiryHorizon, and renewed (deleted + new) when half of it is left: a bouncer reads a
//   duration of 0s as a permanent ban that nothing would ever lift.
// - Each key has a cursor into the log. A delta poll answers the changes after it (each
//   address once: its last state, plus its deletion when it was re-issued). A key with no
//   cursor (never asked since this daemon started: rule 9 of CROWDSEC.md) or whose cursor
//   fell off the bounded log gets the whole current state as "new" instead (a resend).
//
// Threads: start()/stop() from the daemon's main thread. The journal's own thread
// ("sp-decisions") applies the subscription's updates and the expiries. startup(), poll(),
// current() and collect() from any thread (the API's): they hold the journal's mutex only
// for O(1) snapshot copies and the cursor's window of the log.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "block/policy.hpp"
#include "core/clock.hpp"
#include "core/metrics.hpp"
#include "core/persistent_map.hpp"
#include "decisions/format.hpp"
#include "store/index.hpp"

namespace sp::decisions {

using DecisionMap = core::PersistentMap<Decision>;

// The duration sent for blocks that do not expire (renewed at half of it).
inline constexpr std::chrono::hours kNoExpiryHorizon{24 * 365};

struct JournalOptions {
    std::size_t keys = 0;               // bouncer keys (cursors), indexes 0..keys-1
    std::size_t max_log = 262'144;      // change log entries kept (about 100 bytes each)
    std::size_t max_pending = 1U << 20; // the index subscription's budget of queued changes
};

class Journal {
public:
    Journal(JournalOptions options, std::shared_ptr<const block::Policy> policy,
            const core::Clock& clock);
    ~Journal();
    Journal(const Journal&) = delete;
    Journal& operator=(const Journal&) = delete;

    // Main thread, once, after the index is loaded: subscribes, applies the current state
    // before returning (the first answer already has every block), then starts
    // "sp-decisions".
    void start(const store::Index& index);
    // Stops and joins the thread (idempotent). Call before the store closes.
    void stop();

    // What one request answers.
    struct Entry {
        std::string ip;
        Decision decision;
    };
    struct Answer {
        bool full = false;          // `all` holds the whole state (startup or resend)
        DecisionMap all;            // when full
        std::vector<Entry> added;   // when not full: "new"
        std::vector<Entry> removed; // "deleted" (also when a re-issued block is in `added`)
        core::TimePoint now{};
    };
    // GET /v1/decisions/stream?startup=true for key `key` (< keys): the whole state; the
    // key's cursor moves to the end of the log.
    Answer startup(std::size_t key);
    // A delta poll: the changes since the key's cursor, or the whole state as a resend.
    Answer poll(std::size_t key);
    // The current decisions (GET /v1/decisions).
    DecisionMap current() const;
    core::TimePoint now() const { return clock_.now(); }

    // /metrics: decisions_* families.
    void collect(core::MetricsWriter& w) const;

    // ---- the journal's thread (and tests, which drive it without start()) ----
    void applyState(const store::IndexSnapshot& state);
    void applyChanges(const std::vector<store::KeyChange>& changes);
    // Ends the blocks whose time is up and renews the no-expiry ones that are due.
    void expire();
    // When the next expiry or renewal is due (nullopt: none).
    std::optional<core::TimePoint> nextDue() const;

private:
    enum class Why : std::uint8_t { First, Extended, Renewed, Expired, Unblocked };
    struct LogEntry {
        std::uint64_t seq;
        bool deleted;
        std::string ip;
        Decision decision;
    };

    void run(const std::shared_ptr<store::IndexSubscription>& sub);
    // Under mutex_.
    void applyOne(std::string_view ip, const std::optional<store::Seen>& seen, core::TimePoint now);
    void issue(std::string_view ip, Decision d, Why why);
    void remove(std::string_view ip, const Decision& d, Why why);
    void log(bool deleted, std::string_view ip, const Decision& d);
    core::TimePoint dueOf(const Decision& d) const;
    Answer full(std::size_t key, core::TimePoint now);

    const JournalOptions options_;
    const std::shared_ptr<const block::Policy> policy_;
    const core::Clock& clock_;
    const std::chrono::seconds extend_step_;

    mutable std::mutex mutex_;
    DecisionMap current_;
    std::set<std::pair<core::TimePoint, std::string>> due_; // (expiry or renewal, ip)
    std::deque<LogEntry> log_;
    std::uint64_t next_seq_ = 1;
    std::uint64_t next_id_;
    std::vector<std::optional<std::uint64_t>> cursors_; // last seq each key has seen
    std::size_t keys_tracked_ = 0;

    std::atomic<std::uint64_t> issued_first_{0}, issued_extended_{0}, issued_renewed_{0},
        deleted_expired_{0}, deleted_unblocked_{0}, deleted_extended_{0}, resend_unknown_{0},
        resend_fell_off_{0}, log_dropped_{0};
    std::shared_ptr<store::IndexSubscription> sub_; // for its resync count
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

// The body of a /v1/decisions/stream answer, `a` filtered by `f`, in pieces of about 64 KiB
// (the same contract as api::BodyStream: fills `chunk`, returns false after the last piece):
// {"new":[...]|null,"deleted":[...]|null}. A startup answer's "deleted" is [] (as LAPI's);
// empty lists are null otherwise. Runs on whichever thread writes the response.
std::function<bool(std::string& chunk)> streamBody(Journal::Answer a, Filter f, bool startup);
// The whole body at once (tests, small answers).
std::string renderStream(const Journal::Answer& a, const Filter& f, bool startup);
// GET /v1/decisions: the decisions of `all` that `f` passes, as a JSON array, or null when
// none does (as LAPI answers).
std::string renderList(const DecisionMap& all, const Filter& f, core::TimePoint now);

} // namespace sp::decisions
