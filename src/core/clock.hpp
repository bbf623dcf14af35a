#pragma once
// Injected time source, so expiry, retention and rate logic are testable without sleeping.

#include <atomic>
#include <chrono>

#include "core/event.hpp"

namespace sp::core {

class Clock {
public:
    virtual ~Clock() = default;
    // Wall-clock time. Thread-safe.
    virtual TimePoint now() const = 0;
};

class SystemClock final : public Clock {
public:
    TimePoint now() const override { return std::chrono::system_clock::now(); }
};

// A clock that moves only when told to. Thread-safe.
class ManualClock final : public Clock {
public:
    explicit ManualClock(TimePoint start = TimePoint{std::chrono::hours(24 * 365 * 50)})
        : now_ns_(start.time_since_epoch().count()) {}
    TimePoint now() const override { return TimePoint{TimePoint::duration{now_ns_.load()}}; }
    void advance(std::chrono::nanoseconds d) {
        now_ns_ += std::chrono::duration_cast<TimePoint::duration>(d).count();
    }
    void set(TimePoint t) { now_ns_ = t.time_since_epoch().count(); }

private:
    std::atomic<TimePoint::rep> now_ns_;
};

} // namespace sp::core
