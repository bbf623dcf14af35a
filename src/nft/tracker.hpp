#pragma once
// What the blocker's sets hold and what they should hold next (pure: no I/O, no clock).
// Index changes are recorded as the wanted state of an address ("blocked until T", "blocked
// with no expiry", "not blocked"); take() turns what changed since the last commit into one
// batch (latest wanted state wins: an address changed ten times in 100 ms is written once),
// committed() or failed() closes it. One thread (sp-nft) uses a Tracker.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/event.hpp"
#include "nft/commands.hpp"

namespace sp::nft {

using core::TimePoint;

class Tracker {
public:
    // Blocked until `until` (nullopt: no expiry).
    struct Blocked {
        std::optional<TimePoint> until;
    };
    // `block` nullopt: the address must not be in the sets. `event`: when the address was
    // last seen (the event→commit latency is measured from it).
    void want(const Address& a, std::optional<Blocked> block, TimePoint event);

    struct Batch {
        Elements put; // added or refreshed, with their timeouts at `now`
        std::vector<Address> remove;
        std::size_t adds = 0;          // of put: not in the sets before
        std::size_t refreshes = 0;     // of put: already there, new timeout
        std::vector<TimePoint> events; // last-seen times of put (latency)
        bool empty() const { return put.size() == 0 && remove.empty(); }
    };
    // The changes since the last commit, as of `now` (an element whose time is up by now is
    // removed instead). Call committed() or failed() before the next take().
    Batch take(TimePoint now);
    // The last taken batch is in the sets.
    void committed();
    // The last taken batch was refused: nothing of it is assumed written (the caller resyncs).
    void failed();

    // Replaces the whole state (startup, resync): `wanted` is every blocked address. Returns
    // the elements to write (timeouts as of `now`; expired ones left out) and marks them
    // committed once the caller calls committed().
    Elements reset(const std::vector<std::pair<Address, Blocked>>& wanted, TimePoint now);

    // Forgets elements whose timeout passed more than `slack` ago (nft removed them itself).
    void sweep(TimePoint now, std::chrono::seconds slack = std::chrono::seconds{2});

    std::size_t count(Family f) const { return f == Family::V4 ? count_v4_ : count_v6_; }
    std::size_t pending() const { return pending_.size(); }
    // The timeout an element gets at `now` (ceil to whole seconds), or nullopt when `until` is
    // not after now. Exposed for tests.
    static std::optional<std::chrono::seconds> timeoutAt(TimePoint until, TimePoint now);

private:
    struct Current {
        Family family;
        std::optional<TimePoint> until;
    };
    struct Pending {
        Address addr;
        std::optional<Blocked> block;
        TimePoint event;
    };
    void set(const std::string& key, Family f, std::optional<TimePoint> until);
    void erase(const std::string& key);

    std::unordered_map<std::string, Current> current_; // what the sets hold (committed)
    std::unordered_map<std::string, Pending> pending_; // wanted since the last take
    // The batch in flight: (key, family, until or erase).
    struct Step {
        std::string key;
        Family family;
        bool present;
        std::optional<TimePoint> until;
    };
    std::vector<Step> in_flight_;
    bool resetting_ = false;
    std::size_t count_v4_ = 0, count_v6_ = 0;
};

} // namespace sp::nft
