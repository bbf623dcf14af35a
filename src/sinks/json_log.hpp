#pragma once
// JSON log sink: one compact event line (core::eventToJson) per locally captured event,
// appended to a file; reopened on SIGHUP so logrotate can move it. Runs on its own bus
// thread; every method is called on that thread only.

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <string>

#include "bus/event_bus.hpp"
#include "core/clock.hpp"
#include "core/rate_limit.hpp"

namespace sp::sinks {

class JsonLog final : public bus::Sink {
public:
    // Its queue on the bus: lossy (a full queue drops and counts), batches gather 50 ms.
    static bus::SinkOptions sinkOptions() {
        return {.name = "json_log",
                .thread_name = "sp-jsonlog",
                .capacity = 65536,
                .capacity_bytes = bus::kLossyQueueBytes,
                .linger = bus::kGather};
    }
    // Opens (creates, appends) the file. Throws std::runtime_error naming the path.
    JsonLog(std::string path, const core::Clock& clock);
    ~JsonLog() override;

    void consume(std::span<const core::EventPtr> batch) override;
    void reopen() override;
    void close() override;
    // Local events not written: the file could not be opened, or a write or flush failed
    // (a full disk). Any thread.
    std::uint64_t writeErrors() const override {
        return write_errors_.load(std::memory_order_relaxed);
    }

private:
    bool open();
    void reportError(const char* what);

    std::string path_;
    const core::Clock& clock_;
    std::FILE* file_ = nullptr;
    std::string line_;
    std::uint64_t buffered_ = 0; // lines written to the stdio buffer since the last flush
    std::atomic<std::uint64_t> write_errors_{0};
    core::TokenBucket error_log_{1.0 / 60, 3};
};

} // namespace sp::sinks
