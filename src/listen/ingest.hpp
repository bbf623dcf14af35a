#pragma once
// Ingest: the step every listener shares. Turns one received SIP message into a
// core::Event, publishes it, and returns the reply to send (responsive mode only).
// Thread-safe: called concurrently by every io thread.

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>

#include "core/clock.hpp"
#include "core/event.hpp"
#include "core/keyed_rate_limit.hpp"
#include "core/metrics.hpp"
#include "core/rate_limit.hpp"
#include "sip/responder.hpp"

namespace sp::listen {

enum class Transport { Udp = 0, Tcp = 1, Tls = 2 };
inline constexpr std::size_t kTransports = 3;
const char* transportName(Transport t);

// Method labels for counters: a fixed set, so attacker-chosen methods cannot grow /metrics.
inline constexpr std::array<const char*, 17> kMethodLabels = {
    "INVITE",    "REGISTER", "OPTIONS", "ACK",       "BYE",         "CANCEL",
    "SUBSCRIBE", "NOTIFY",   "MESSAGE", "INFO",      "PRACK",       "UPDATE",
    "REFER",     "PUBLISH",  "OTHER",   "MALFORMED", "SIP_RESPONSE"};
// Index into kMethodLabels ("OTHER" for anything not listed).
std::size_t methodLabelIndex(std::string_view method);

// Where one message came from and arrived at. Addresses are printable IPs
// (IPv4-mapped IPv6 addresses already unmapped).
struct Meta {
    Transport transport = Transport::Udp;
    std::string source_ip;
    std::uint16_t source_port = 0;
    std::string destination_ip;
    std::uint16_t destination_port = 0;
};

struct IngestOptions {
    bool responsive = false;
    sip::ResponderOptions responder;
    std::string node_id;
    // Responsive mode over UDP, where a source address costs nothing to forge: replies per
    // second to one destination IP (the request's source), with a burst of one second's
    // worth; 0 = unlimited. Requests over the cap are still recorded, just not answered
    // (counted: replies_suppressed). TCP/TLS peers completed a handshake: not limited.
    double reply_rate = 10;
    std::size_t reply_rate_keys = 16384; // destination IPs tracked at most (LRU eviction)
};

// Counters for /metrics, per transport. Relaxed atomics: any thread.
struct IngestCounters {
    struct PerTransport {
        std::atomic<std::uint64_t> messages{0};           // recorded as events
        std::atomic<std::uint64_t> empty{0};              // 0-byte datagrams: counted, not stored
        std::atomic<std::uint64_t> malformed{0};          // recorded with method MALFORMED
        std::atomic<std::uint64_t> responses{0};          // SIP responses received (recorded)
        std::atomic<std::uint64_t> replies{0};            // replies we built
        std::atomic<std::uint64_t> replies_suppressed{0}; // over IngestOptions::reply_rate
        std::atomic<std::uint64_t> bytes{0};
    };
    std::array<PerTransport, kTransports> by_transport;
    std::array<std::array<std::atomic<std::uint64_t>, kMethodLabels.size()>, kTransports>
        by_method{};
    std::atomic<std::uint64_t> connections_refused{0}; // TCP/TLS over a cap
    std::atomic<std::uint64_t> tls_handshake_failures{0};
};

class Ingest {
public:
    using Publish = std::function<void(core::EventPtr)>;

    Ingest(IngestOptions options, const core::Clock& clock, Publish publish);

    // Records bytes as an event (unless empty) and returns the reply bytes, empty when
    // nothing must be sent (passive mode, ACK, responses, garbage).
    std::string handle(std::string_view bytes, const Meta& meta);

    IngestCounters& counters() { return counters_; }
    const core::Clock& clock() const { return clock_; }

    // Writes the ingest families (events received by transport and method, malformed,
    // responses, replies, replies suppressed, bytes, TCP refusals, TLS failures). Any thread.
    void collect(core::MetricsWriter& w);

private:
    IngestCounters::PerTransport& at(Transport t) {
        return counters_.by_transport[static_cast<std::size_t>(t)];
    }

    // Whether a reply to this destination may go out now (reply_rate). Any thread.
    bool replyAllowed(const std::string& destination_ip);
    // One rate-limited debug line per probe (visible with -d). Any thread.
    void logProbe(const core::Event& e);

    IngestOptions options_;
    const core::Clock& clock_;
    Publish publish_;
    IngestCounters counters_;
    std::mutex reply_mutex_;
    core::KeyedRateLimiter<std::string> reply_limit_; // guarded by reply_mutex_
    std::mutex log_mutex_;
    core::TokenBucket probe_log_{20, 100}; // guarded by log_mutex_
};

} // namespace sp::listen
