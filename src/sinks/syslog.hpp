#pragma once
// Syslog sink: for each locally captured event one line, exactly SentryPeer's
//   Source IP: <ip>, Method: <method>, Agent: <user agent>
// with ident "sentrypeer", the pid, facility user, severity notice, written like glibc's
// syslog(3) to a unix socket (default /dev/log), so rsyslog/journald and fail2ban read it
// as before. Attacker-supplied fields have control characters escaped (\xNN): nobody can
// forge a second log line. Runs on its own bus thread.

#include <atomic>
#include <cstdint>
#include <string>

#include "bus/event_bus.hpp"
#include "core/clock.hpp"
#include "core/rate_limit.hpp"

namespace sp::sinks {

// The message part of the line (no priority, time or ident). Pure; for tests.
std::string syslogMessage(const core::Event& e);

// The whole datagram: "<13>Mmm dd hh:mm:ss sentrypeer[pid]: " + message, local time.
std::string syslogDatagram(const core::Event& e, core::TimePoint now, int pid);

class Syslog final : public bus::Sink {
public:
    // Its queue on the bus: lossy (a full queue drops and counts), batches gather 50 ms.
    static bus::SinkOptions sinkOptions() {
        return {.name = "syslog",
                .thread_name = "sp-syslog",
                .capacity = 65536,
                .capacity_bytes = bus::kLossyQueueBytes,
                .linger = bus::kGather};
    }
    // Does not fail when the socket is missing: it retries (syslog may start later).
    Syslog(std::string socket_path, const core::Clock& clock);
    ~Syslog() override;

    void consume(std::span<const core::EventPtr> batch) override;
    void close() override;
    // Local events not sent: no syslog socket (missing, refusing) or a failed send. Any thread.
    std::uint64_t writeErrors() const override {
        return write_errors_.load(std::memory_order_relaxed);
    }

private:
    bool connect();
    void disconnect();

    std::string socket_path_;
    const core::Clock& clock_;
    int fd_ = -1;
    bool stream_ = false; // some /dev/log are SOCK_STREAM: then each message ends with NUL
    int pid_;
    core::TimePoint next_connect_{}; // no reconnect storm while syslog is down
    core::TokenBucket error_log_{1.0 / 60, 3};
    std::atomic<std::uint64_t> write_errors_{0};
};

} // namespace sp::sinks
