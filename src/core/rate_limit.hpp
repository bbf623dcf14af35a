#pragma once
// Token bucket over an injected clock: used to rate-limit operator log lines that an
// attacker can trigger, and (later) per-publisher DHT intake. Not thread-safe: one per
// thread, or guard it.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <utility>

#include "core/clock.hpp"

namespace sp::core {

class TokenBucket {
public:
    // `rate` tokens per second, holding at most `burst`.
    TokenBucket(double rate, double burst) : rate_(rate), burst_(burst), tokens_(burst) {}

    // Takes one token if available. Counts what was refused since the last allowed call.
    bool allow(TimePoint now) {
        refill(now);
        if (tokens_ >= 1.0) {
            tokens_ -= 1.0;
            return true;
        }
        ++suppressed_;
        return false;
    }
    // Refused calls since the last time this was read (then reset), for "N more suppressed".
    std::uint64_t takeSuppressed() { return std::exchange(suppressed_, 0); }

private:
    void refill(TimePoint now) {
        if (last_ != TimePoint{}) {
            double secs = std::chrono::duration<double>(now - last_).count();
            tokens_ = std::min(burst_, tokens_ + std::max(0.0, secs) * rate_);
        }
        last_ = now;
    }

    double rate_;
    double burst_;
    double tokens_;
    TimePoint last_{};
    std::uint64_t suppressed_ = 0;
};

} // namespace sp::core
