// libFuzzer target: sip::parse on any bytes, then buildReply when it is a request.
// Invariants: no crash, no leak, single-line fields free of control characters, the event's
// fields the same with and without the reply's, and every reply is CRLF-framed with a
// Content-Length equal to its body.

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "sip/parse.hpp"
#include "sip/responder.hpp"

namespace {

void check(bool ok) {
    if (!ok) {
        std::abort();
    }
}

void checkSingleLine(std::string_view s) {
    for (char c : s) {
        auto u = static_cast<unsigned char>(c);
        check(u >= 0x20 && u != 0x7f);
    }
}

void checkReply(std::string_view reply) {
    std::size_t head_end = reply.find("\r\n\r\n");
    check(head_end != std::string_view::npos);
    for (std::size_t i = 0; i < reply.size(); ++i) {
        if (reply[i] == '\n') {
            check(i > 0 && reply[i - 1] == '\r');
        }
    }
    std::string_view body = reply.substr(head_end + 4);
    std::string expected = "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n";
    check(reply.substr(0, head_end + 4).ends_with(expected));
}

} // namespace

// NOLINTNEXTLINE(readability-identifier-naming): the name libFuzzer calls.
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    sp::sip::initParser();
    std::string_view bytes(reinterpret_cast<const char*>(data), size);
    sp::sip::Message m = sp::sip::parse(bytes);

    for (const std::string* field :
         {&m.method, &m.called_number, &m.user_agent, &m.request_uri, &m.from, &m.to, &m.to_tag,
          &m.call_id, &m.cseq, &m.cseq_method, &m.content_type}) {
        checkSingleLine(*field);
    }
    for (const std::string& via : m.vias) {
        checkSingleLine(via);
    }
    check(!m.method.empty() && !m.called_number.empty() && !m.user_agent.empty());

    // What is recorded does not depend on whether a reply is wanted (parse.hpp, Detail).
    sp::sip::Message e = sp::sip::parse(bytes, sp::sip::Detail::Event);
    check(e.kind == m.kind && e.method == m.method && e.called_number == m.called_number &&
          e.user_agent == m.user_agent && e.sip_message == m.sip_message);

    sp::sip::ReplyContext ctx{"UDP", "203.0.113.9", 40000, "192.0.2.10", 5060};
    for (auto mode :
         {sp::sip::AgentMode::Ok, sp::sip::AgentMode::NotFound, sp::sip::AgentMode::Redirect}) {
        sp::sip::ResponderOptions options;
        options.mode = mode;
        options.redirect_uri = "sip:999@192.0.2.1";
        std::string reply = sp::sip::buildReply(m, ctx, options);
        check(m.kind == sp::sip::Kind::Request || reply.empty());
        if (!reply.empty()) {
            checkReply(reply);
            check(sp::sip::parse(reply).kind == sp::sip::Kind::Response);
        }
    }
    return 0;
}
