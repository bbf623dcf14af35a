#pragma once
// Per-publisher token buckets with bounded state: at most max_keys buckets, and a new key
// when full evicts the least recently used one (one entry, never the whole map), so rotating
// ids cannot reset every publisher's bucket at once. Keyed on the self-declared
// created_by_node_id today (free to rotate: the global budget in P2pNode is what bounds a
// liar; per-identity limits come with signed sharing). Not thread-safe: the caller guards it.
// (To be unified with core's keyed rate limiter.)

#include <cstddef>
#include <cstdint>
#include <list>
#include <string>
#include <string_view>
#include <unordered_map>

#include "core/rate_limit.hpp"

namespace sp::p2p {

class PublisherLimit {
public:
    // `rate` tokens per second per key, at most `burst` banked, at most `max_keys` keys.
    PublisherLimit(double rate, double burst, std::size_t max_keys)
        : rate_(rate), burst_(burst), max_keys_(max_keys == 0 ? 1 : max_keys) {}

    // Takes one token from `key`'s bucket (created full when new).
    bool allow(std::string_view key, core::TimePoint now) {
        auto it = index_.find(std::string(key));
        if (it != index_.end()) {
            lru_.splice(lru_.begin(), lru_, it->second); // most recently used first
        } else {
            if (index_.size() >= max_keys_) {
                index_.erase(lru_.back().key);
                lru_.pop_back();
                ++evicted_;
            }
            lru_.push_front(Entry{std::string(key), core::TokenBucket(rate_, burst_)});
            it = index_.emplace(lru_.front().key, lru_.begin()).first;
        }
        return it->second->bucket.allow(now);
    }

    std::size_t size() const { return index_.size(); }
    std::uint64_t evicted() const { return evicted_; }
    bool contains(std::string_view key) const { return index_.contains(std::string(key)); }

private:
    struct Entry {
        std::string key;
        core::TokenBucket bucket;
    };
    double rate_;
    double burst_;
    std::size_t max_keys_;
    std::list<Entry> lru_;
    std::unordered_map<std::string, std::list<Entry>::iterator> index_;
    std::uint64_t evicted_ = 0;
};

} // namespace sp::p2p
