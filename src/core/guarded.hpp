#pragma once
// Guarded<T>: a value reachable only through its lock. Readers share, the writer excludes.

#include <mutex>
#include <shared_mutex>
#include <utility>

namespace sp::core {

template <typename T> class Guarded {
public:
    template <typename... Args>
    explicit Guarded(Args&&... args) : value_(std::forward<Args>(args)...) {}

    template <typename F> decltype(auto) read(F&& f) const {
        std::shared_lock lock(mutex_);
        return std::forward<F>(f)(static_cast<const T&>(value_));
    }
    template <typename F> decltype(auto) write(F&& f) {
        std::unique_lock lock(mutex_);
        return std::forward<F>(f)(value_);
    }

private:
    mutable std::shared_mutex mutex_;
    T value_;
};

} // namespace sp::core
