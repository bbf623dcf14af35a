#pragma once
// KeyedRateLimiter: one token bucket per key (a source IP, a destination IP, a publisher id)
// in a table of at most max_keys entries, so an attacker who rotates keys cannot grow it.
// When the table is full, a new key evicts exactly one entry, the least recently used one
// (never the whole table): an entry idle for burst/rate seconds is full again, so evicting
// it forgets nothing; evicting a busier one (the table is under key rotation) hands that
// key a fresh burst, which is counted (evictedActive()).
//
// Header-only, over an injected time. Not thread-safe: one per thread, or guard it.
// Memory: about max_keys * (sizeof(Key) + 100) bytes at most.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <unordered_map>
#include <utility>

#include "core/clock.hpp"

namespace sp::core {

template <typename Key, typename Hash = std::hash<Key>> class KeyedRateLimiter {
public:
    // `rate` tokens per second per key, holding at most `burst` (>= 1); at most `max_keys`
    // keys (>= 1). rate <= 0 means unlimited: allow() always says yes and stores nothing.
    KeyedRateLimiter(double rate, double burst, std::size_t max_keys)
        : rate_(rate), burst_(std::max(1.0, burst)), max_keys_(std::max<std::size_t>(1, max_keys)) {
        index_.reserve(std::min<std::size_t>(max_keys_, 4096));
    }

    // Takes one token from key's bucket if it has one. A new key starts with a full bucket.
    bool allow(const Key& key, TimePoint now) {
        if (rate_ <= 0) {
            ++allowed_;
            return true;
        }
        auto it = index_.find(key);
        if (it == index_.end()) {
            if (index_.size() >= max_keys_) {
                evictOne(now);
            }
            lru_.push_front(Entry{key, burst_, now});
            it = index_.emplace(key, lru_.begin()).first;
        } else {
            lru_.splice(lru_.begin(), lru_, it->second); // most recently used first
        }
        Entry& e = *it->second;
        refill(e, now);
        if (e.tokens >= 1.0) {
            e.tokens -= 1.0;
            ++allowed_;
            return true;
        }
        ++refused_;
        return false;
    }

    std::size_t size() const { return index_.size(); }
    std::size_t maxKeys() const { return max_keys_; }
    std::uint64_t allowed() const { return allowed_; }
    std::uint64_t refused() const { return refused_; }
    // Entries evicted to make room for a new key (all of them / those not yet full again).
    std::uint64_t evicted() const { return evicted_; }
    std::uint64_t evictedActive() const { return evicted_active_; }

private:
    struct Entry {
        Key key;
        double tokens;
        TimePoint last;
    };

    void refill(Entry& e, TimePoint now) const {
        double secs = std::chrono::duration<double>(now - e.last).count();
        e.tokens = std::min(burst_, e.tokens + std::max(0.0, secs) * rate_);
        e.last = std::max(e.last, now);
    }

    void evictOne(TimePoint now) {
        Entry& victim = lru_.back();
        refill(victim, now);
        if (victim.tokens < burst_) {
            ++evicted_active_;
        }
        ++evicted_;
        index_.erase(victim.key);
        lru_.pop_back();
    }

    double rate_;
    double burst_;
    std::size_t max_keys_;
    std::list<Entry> lru_; // front: most recently used
    std::unordered_map<Key, typename std::list<Entry>::iterator, Hash> index_;
    std::uint64_t allowed_ = 0;
    std::uint64_t refused_ = 0;
    std::uint64_t evicted_ = 0;
    std::uint64_t evicted_active_ = 0;
};

} // namespace sp::core
