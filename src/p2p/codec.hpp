#pragma once
// SentryPeer's DHT value format: the raw bytes of the compact event JSON (13 string keys,
// extra keys allowed), and the validation of values received from peers: COMPAT.md's
// checks plus stricter ones (sizes, IP syntax, number charset, timestamp). Pure and
// thread-safe; fuzzed.

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/event.hpp"

namespace sp::p2p {

// The DHT key: InfoHash = SHA-1("bad_actors").
inline constexpr const char* kBadActorsKey = "bad_actors";

// The largest value we accept or publish: OpenDHT's limit is 64 KiB per value.
inline constexpr std::size_t kMaxValueBytes = 64UL * 1024 - 512;
// sip_message is cut to this many bytes when publishing (a 60 KiB probe must still fit,
// with room for the other fields and their JSON escaping).
inline constexpr std::size_t kMaxPublishedMessage = 16UL * 1024;

enum class Reject : std::uint8_t {
    TooLarge,
    NotJson,
    NotObject,
    MissingField,
    NotString,
    BadUuid,
    OwnEvent,
    BadIp,
    BadTimestamp,
    BadField, // length, charset or enumeration of a field
    Duplicate,
    PublisherRate, // over the per-publisher rate (created_by_node_id)
    GlobalRate,    // over the budget of peer events per second, all publishers together
    Count_,
};
inline constexpr std::size_t kRejectReasons = static_cast<std::size_t>(Reject::Count_);
const char* rejectName(Reject r);

// The bytes we put: core::eventToJson with sip_message cut to kMaxPublishedMessage.
std::string encode(const core::Event& e);

struct Decoded {
    std::optional<core::Event> event; // set when accepted
    Reject reason = Reject::NotJson;  // why not, otherwise
};

// Validates a received value. own_node_id: values created by this node are rejected
// (OwnEvent). `now` stamps events whose timestamp lies in the future. The accepted event
// keeps the fields as received, origin Peer.
Decoded decode(std::string_view bytes, std::string_view own_node_id, core::TimePoint now);

} // namespace sp::p2p
