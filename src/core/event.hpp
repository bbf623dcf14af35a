#pragma once
// core::Event: one SIP probe (or one event received from a peer), the unit every module
// exchanges. Plain data; no I/O. Field names follow ../../docs/COMPAT (SentryPeer's JSON).

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace sp::core {

using TimePoint = std::chrono::system_clock::time_point;

inline constexpr const char* kAppName = "sentrypeer";
inline constexpr const char* kNotFound = "NOT_FOUND";

// sip_method values for inputs that are not a SIP request we could parse.
inline constexpr const char* kMethodMalformed = "MALFORMED";   // unparsable bytes
inline constexpr const char* kMethodResponse = "SIP_RESPONSE"; // a SIP response, not a request

enum class Origin { Local, Peer };

struct Event {
    std::string app_version;
    TimePoint time{};            // when it was seen; drives retention and the index
    std::string event_timestamp; // formatted `time` (or, for peer events, as received)
    std::string event_uuid;
    std::string created_by_node_id;
    std::string collected_method; // "passive" | "responsive"
    std::string transport_type;   // "UDP" | "TCP" | "TLS"
    std::string source_ip;
    std::uint16_t source_port = 0;
    std::string destination_ip;
    std::uint16_t destination_port = 0;
    std::string called_number;
    std::string sip_method;
    std::string sip_user_agent;
    std::string sip_message;
    Origin origin = Origin::Local;
    // Who vouches for a peer event: the verified publisher identity (the RCP1 share
    // protocol's pkId, 40 hex digits) of a record received through src/share. Empty for
    // local events and for plaintext SentryPeer values under bad_actors (whose
    // created_by_node_id is self-declared and proves nothing). The index counts distinct
    // non-empty reporters for the blocking policy's --peer-min-reporters.
    std::string reporter;
};

// Events travel between threads as immutable shared objects: one allocation, many sinks.
using EventPtr = std::shared_ptr<const Event>;

inline const char* originName(Origin o) {
    return o == Origin::Local ? "local" : "peer";
}

} // namespace sp::core
