#pragma once
// The embedded OpenDHT node, a user of the share-to-receive library (src/share, RCP1):
// every local event is published as a share record (signed, encrypted, readable only by the
// peers this node grants its key to, i.e. those that share with it); records the library
// delivers (verified publisher, decrypted) go into the bus as peer events whose reporter is
// the publisher's identity. SentryPeer's plaintext values under InfoHash("bad_actors") are
// still received (validated, reporter empty: never counted as a reporter); this node puts
// its own events there too only with compat_publish (--p2p-sentrypeer-compat).
//
// Compat publishing policy (what keeps the key small, see docs/P2P.md): values are put as
// ordinary (not permanent) values, so every storing node forgets them 10 minutes after
// the put; one value per (source IP, called number) per dedupe window; at most
// publish_rate puts per second and max_in_flight puts outstanding.
//
// Threads: the sink part runs on its bus thread ("sp-p2p"); received plaintext values arrive
// on OpenDHT's thread, share records on the library's worker thread, and both are published
// to the bus from there. status() and collect() are callable from any thread.

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
#include "share/share.hpp"

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

    // Share to receive (src/share): the protocol's options as the daemon sets them.
    share::Credit credit = share::Credit::L1;
    std::chrono::seconds epoch{3600};
    std::chrono::seconds bucket{600};
    std::chrono::milliseconds flush{120000};
    std::vector<std::string> trust;                          // pkIds
    std::vector<std::string> deny;                           // pkIds
    std::uint64_t max_bytes_per_hour = 256ULL * 1024 * 1024; // 0: no cap
    unsigned key_bits = 4096;                                // a new RSA identity's size
    bool compat_publish = false; // also put plaintext SentryPeer JSON under bad_actors
    // "Has this node itself seen `subject` (an IP) within ±6 h of `time` (unix s)?" (credit
    // L1/L2). Called on the library's worker thread; unset: never.
    std::function<bool(std::string_view subject, std::int64_t time)> confirmed;
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

    // Loads or creates the RSA identity (share::loadOrCreateIdentity: the key file is created
    // 0600; an existing key readable by others is made 0600; an EC identity of an older
    // version is kept as *.ec-old and replaced, with a warning), binds the DHT port,
    // bootstraps, listens on bad_actors and starts the share protocol.
    // Throws std::runtime_error naming the port or file.
    void start();
    // Leaves the network (saves the routing table). Idempotent.
    void stop();

    // bus::Sink (thread "sp-p2p"): puts locally captured events.
    void consume(std::span<const core::EventPtr> batch) override;
    void tick() override;
    void close() override;

    // The share identity (pkId, 40 hex digits); empty before start().
    std::string identity() const;
    // JSON for GET /p2p/status.
    std::string statusJson() const;
    void collect(core::MetricsWriter& w) const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace sp::p2p
