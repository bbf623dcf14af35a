#pragma once
// Builds RFC 3261 responses to a parsed request, echoing Via (with received/rport per
// RFC 3581), From, To (adding a To-tag), Call-ID and CSeq, so that real SIP clients
// complete their transactions instead of retransmitting. Pure: no I/O, thread-safe.

#include <cstdint>
#include <string>

#include "sip/parse.hpp"

namespace sp::sip {

enum class AgentMode {
    Ok,       // 200 OK to OPTIONS, REGISTER, INVITE (with an SDP answer), BYE, CANCEL, ...
    NotFound, // like Ok, but INVITE gets 404 Not Found (--sip-agent=404)
    Redirect, // like Ok, but INVITE gets 302 Moved Temporarily + Contact (--sip-redirect)
};

struct ResponderOptions {
    AgentMode mode = AgentMode::Ok;
    std::string redirect_uri;            // Contact of the 302, e.g. "sip:999@192.0.2.1"
    std::string server = "FPBX-16.0.40"; // Server header value; empty = no Server header
    // Secret mixed into To-tags and SDP session ids. Set it to a random value per node (e.g.
    // core::randomU64() at startup): with a fixed key, the same request sent to two nodes
    // would get the same tag, which fingerprints the honeypot.
    std::uint64_t tag_key = 0;
};

// Where the request came from and arrived at: for Via received/rport, Contact and SDP.
struct ReplyContext {
    std::string transport; // "UDP" | "TCP" | "TLS"
    std::string source_ip;
    std::uint16_t source_port = 0;
    std::string local_ip;
    std::uint16_t local_port = 0;
};

// The response bytes, or an empty string when nothing must be sent: ACK, responses,
// malformed input, or a request lacking Via/From/To/Call-ID/CSeq (not answerable).
std::string buildReply(const Message& request, const ReplyContext& ctx,
                       const ResponderOptions& options);

} // namespace sp::sip
