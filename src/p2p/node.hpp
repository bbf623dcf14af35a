#pragma once
// The embedded OpenDHT node: shares this node's events under InfoHash("bad_actors") in
// SentryPeer's value format and receives the community's, validated, into the bus.
//
// Publishing policy (what keeps the key small, see docs/P2P.md): values are put as
// ordinary (not permanent) values, so every storing node forgets them 10 minutes after
// the put; one value per (source IP, called number) per dedupe window; at most
// publish_rate puts per second and max_in_flight puts outstanding.
//
// Threads: the sink part runs on its bus thread ("sp-p2p"); received values arrive on
// OpenDHT's thread and are published to the bus from there. status() and collect() are
// callable from any thread.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bus/event_bus.hpp"
#include "core/clock.hpp"
#include "core/metrics.hpp"
#include "p2p/codec.hpp"

namespace sp::p2p {

struct P2pOptions {
    std::uint16_t port = 4222;          // UDP, IPv4 and IPv6
    std::vector<std::string> bootstrap; // "host", "host:port", "[v6]:port"
    std::uint64_t network = 0;          // 0: the public SentryPeer network
    std::string data_dir;               // identity and routing table
    bool no_rate_limit = false;         // private/loopback networks only
    std::string node_id;                // our sentrypeer node UUID
    std::size_t max_in_flight = 200;
    double publish_rate = 5; // puts per second (burst 10 s worth): <= 3,000 per 10 minutes
    std::chrono::seconds dedupe_window{600};
    double peer_rate = 50; // accepted values per second per publisher (burst 10 s worth)
    std::size_t max_publishers = 10000; // per-publisher buckets kept (LRU, one evicted at a time)
    double max_peer_rate = 1000; // accepted values per second, all publishers (burst 10 s worth)
};

class P2pNode : public bus::Sink {
public:
    // Its queue on the bus (local events to put): lossy, batches gather 50 ms.
    static bus::SinkOptions sinkOptions() {
        return {.name = "p2p",
                .thread_name = "sp-p2p",
                .capacity = 65536,
                .capacity_bytes = bus::kLossyQueueBytes,
                .linger = bus::kGather};
    }
    using Publish = std::function<void(core::EventPtr)>;

    // Builds the node; nothing runs until start().
    P2pNode(P2pOptions options, const core::Clock& clock, Publish publish);
    ~P2pNode() override;

    // Loads or creates the identity (the key file is created 0600; an existing key readable
    // by others is made 0600, with a warning), binds the DHT port, bootstraps, listens on the key.
    // Throws std::runtime_error naming the port or file.
    void start();
    // Leaves the network (saves the routing table). Idempotent.
    void stop();

    // bus::Sink (thread "sp-p2p"): puts locally captured events.
    void consume(std::span<const core::EventPtr> batch) override;
    void tick() override;
    void close() override;

    // JSON for GET /p2p/status.
    std::string statusJson() const;
    void collect(core::MetricsWriter& w) const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace sp::p2p
