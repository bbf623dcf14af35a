#pragma once
// Parsing one SIP message (a UDP datagram or one framed TCP/TLS message) with libosip2.
// Thread-safe (call sip::initParser() once at startup before any thread parses).
// Never throws, never crashes on any input: that is what the fuzz target proves.

#include <string>
#include <string_view>
#include <vector>

namespace sp::sip {

// Initialises libosip2's global parser tables. Idempotent and thread-safe.
void initParser();

enum class Kind {
    Request,   // a SIP request osip could parse
    Response,  // a SIP response (status line): recorded, never answered
    Malformed, // anything else: garbage, binary, a body shorter than its Content-Length, or
               // a start line, To or User-Agent that osip rejects, that holds a NUL or lone CR,
               // or that is too complex to parse in bounded time (over 256 of ';' ',' '&' '%'
               // and line breaks). Other headers cannot make a message Malformed.
};

// Caps on the recorded fields, in bytes of the sanitised text (SentryPeer's peer codec
// refuses longer ones): a longer value is cut at the last whole character that fits (a
// multi-byte UTF-8 character or a \xNN escape is never split), so an attacker cannot bloat
// the index or the database with a 64 KiB To-URI user.
inline constexpr std::size_t kMaxCalledNumberBytes = 128;
inline constexpr std::size_t kMaxUserAgentBytes = 512;

// What the daemon needs from one message. Strings are sanitised (core::sanitizeBytes):
// single-line fields have control characters and invalid UTF-8 escaped as \xNN.
struct Message {
    Kind kind = Kind::Malformed;
    std::string method;        // request method, e.g. "INVITE"; for Response core::kMethodResponse,
                               // for Malformed core::kMethodMalformed
    std::string called_number; // To URI user, else Request-URI user, else core::kNotFound;
                               // at most kMaxCalledNumberBytes
    std::string user_agent;    // first User-Agent value, core::kNotFound when absent or empty;
                               // at most kMaxUserAgentBytes
    std::string sip_message;   // the whole input, sanitised keeping CR/LF/TAB

    // For the responder (requests only), raw header values as received (sanitised):
    std::string request_uri;
    std::vector<std::string> vias; // every Via value in order, one entry per via
    std::string from;
    std::string to;
    std::string to_tag; // empty when To has no tag
    std::string call_id;
    std::string cseq;        // "<number> <METHOD>"
    std::string cseq_method; // METHOD part of CSeq
    std::string content_type;
    bool has_body = false;
};

// How much of a request to extract: the event's fields only, or also what the responder
// echoes (request_uri ... has_body). Kind and the event's fields are the same either way: a
// request whose Via, From, Call-ID or CSeq osip rejects is still a Request, with the
// responder's fields left empty (so it is not answered).
enum class Detail { Event, Reply };

// Parses bytes (at most 65,507 for UDP, 64 KiB for TCP; any length must be safe). libosip2
// parses the start line and the headers above only; the body is measured, never parsed.
Message parse(std::string_view bytes, Detail detail = Detail::Reply);

} // namespace sp::sip
