#include "nft/tracker.hpp"

#include <unordered_set>

namespace sp::nft {

namespace {
// A refresh that moves the expiry by less than this is not worth a write.
constexpr std::chrono::seconds kRefreshStep{1};
} // namespace

std::optional<std::chrono::seconds> Tracker::timeoutAt(TimePoint until, TimePoint now) {
    if (until <= now) {
        return std::nullopt;
    }
    auto left = std::chrono::ceil<std::chrono::seconds>(until - now);
    return std::max(left, std::chrono::seconds{1});
}

void Tracker::want(const Address& a, std::optional<Blocked> block, TimePoint event) {
    auto [it, inserted] = pending_.try_emplace(a.text, Pending{a, block, event});
    if (!inserted) {
        it->second.block = block;
        it->second.event = event;
    }
}

Tracker::Batch Tracker::take(TimePoint now) {
    Batch b;
    in_flight_.clear();
    for (auto& [key, p] : pending_) {
        auto cur = current_.find(key);
        bool present = cur != current_.end();
        std::optional<std::chrono::seconds> timeout;
        bool block = p.block.has_value();
        if (block && p.block->until) {
            timeout = timeoutAt(*p.block->until, now);
            block = timeout.has_value(); // already over: take it out
        }
        if (!block) {
            if (present) {
                b.remove.push_back(p.addr);
                in_flight_.push_back({key, p.addr.family, false, {}});
            }
            continue;
        }
        std::optional<TimePoint> until = p.block->until;
        if (present) {
            const auto& c = cur->second;
            bool same = c.until.has_value() == until.has_value() &&
                        (!until || (*until > *c.until ? *until - *c.until : *c.until - *until) <
                                       kRefreshStep);
            if (same) {
                continue;
            }
            ++b.refreshes;
        } else {
            ++b.adds;
        }
        auto& list = p.addr.family == Family::V4 ? b.put.v4 : b.put.v6;
        list.push_back(Element{p.addr.text, timeout});
        b.events.push_back(p.event);
        in_flight_.push_back({key, p.addr.family, true, until});
    }
    pending_.clear();
    return b;
}

void Tracker::set(const std::string& key, Family f, std::optional<TimePoint> until) {
    auto [it, inserted] = current_.insert_or_assign(key, Current{f, until});
    (void)it;
    if (inserted) {
        ++(f == Family::V4 ? count_v4_ : count_v6_);
    }
}

void Tracker::erase(const std::string& key) {
    auto it = current_.find(key);
    if (it != current_.end()) {
        --(it->second.family == Family::V4 ? count_v4_ : count_v6_);
        current_.erase(it);
    }
}

void Tracker::committed() {
    if (resetting_) {
        current_.clear();
        count_v4_ = count_v6_ = 0;
        resetting_ = false;
    }
    for (auto& s : in_flight_) {
        if (s.present) {
            set(s.key, s.family, s.until);
        } else {
            erase(s.key);
        }
    }
    in_flight_.clear();
}

void Tracker::failed() {
    in_flight_.clear();
    resetting_ = false;
}

Elements Tracker::reset(const std::vector<std::pair<Address, Blocked>>& wanted, TimePoint now) {
    Elements out;
    in_flight_.clear();
    pending_.clear();
    resetting_ = true;
    std::unordered_set<std::string_view> seen; // "::ffff:192.0.2.1" and "192.0.2.1" are one
    seen.reserve(wanted.size());
    for (const auto& [addr, blocked] : wanted) {
        if (!seen.insert(addr.text).second) {
            continue;
        }
        std::optional<std::chrono::seconds> timeout;
        if (blocked.until) {
            timeout = timeoutAt(*blocked.until, now);
            if (!timeout) {
                continue;
            }
        }
        (addr.family == Family::V4 ? out.v4 : out.v6).push_back(Element{addr.text, timeout});
        in_flight_.push_back({addr.text, addr.family, true, blocked.until});
    }
    return out;
}

void Tracker::sweep(TimePoint now, std::chrono::seconds slack) {
    for (auto it = current_.begin(); it != current_.end();) {
        if (it->second.until && *it->second.until + slack < now) {
            --(it->second.family == Family::V4 ? count_v4_ : count_v6_);
            it = current_.erase(it);
        } else {
            ++it;
        }
    }
}

} // namespace sp::nft
