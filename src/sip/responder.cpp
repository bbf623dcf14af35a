#include "sip/responder.hpp"

#include <string_view>

#include "core/text.hpp"
#include "sip/header_scan.hpp"

namespace sp::sip {
namespace {

// What a FreePBX 16 (Asterisk PJSIP) endpoint advertises, so replies look like one.
constexpr std::string_view kAllow =
    "OPTIONS, REGISTER, SUBSCRIBE, NOTIFY, PUBLISH, INVITE, ACK, BYE, CANCEL, UPDATE, PRACK, "
    "MESSAGE, REFER";
constexpr std::string_view kSupported = "100rel, timer, replaces, norefersub";

// A header value we can put on one line: non-empty, no CR, LF or NUL (Message fields are
// sanitised by parse(), but a Message may be built elsewhere).
bool isHeaderValue(std::string_view s) {
    return !s.empty() && s.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos;
}

bool isAnswerable(const Message& m) {
    if (m.kind != Kind::Request || m.method == "ACK" || m.vias.empty()) {
        return false;
    }
    for (const std::string& via : m.vias) {
        if (!isHeaderValue(via)) {
            return false;
        }
    }
    return isHeaderValue(m.from) && isHeaderValue(m.to) && isHeaderValue(m.call_id) &&
           isHeaderValue(m.cseq) && (m.to_tag.empty() || isHeaderValue(m.to_tag));
}

std::uint64_t fnv1a(std::uint64_t h, std::string_view s) {
    for (char c : s) {
        h ^= static_cast<unsigned char>(c);
        h *= 0x100000001b3ULL;
    }
    return h;
}

// splitmix64's finaliser: spreads every input bit over the output.
std::uint64_t mix(std::uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

// 128 bits that depend only on the dialog (Call-ID, From with its tag) and the node's key:
// retransmissions and later requests of the same dialog get the same To-tag and SDP.
struct DialogSeed {
    std::uint64_t hi;
    std::uint64_t lo;
};

DialogSeed dialogSeed(const Message& m, std::uint64_t key) {
    std::uint64_t h = fnv1a(0xcbf29ce484222325ULL ^ key, m.call_id);
    h = fnv1a(h, std::string_view("\n", 1));
    h = fnv1a(h, m.from);
    std::uint64_t hi = mix(h ^ mix(key));
    return {hi, mix(hi + 0x9e3779b97f4a7c15ULL)};
}

constexpr std::string_view kHexDigits = "0123456789abcdef";

void appendHex(std::string& out, std::uint64_t v, int digits) {
    for (int i = digits - 1; i >= 0; --i) {
        out.push_back(kHexDigits[(v >> (4 * i)) & 0xf]);
    }
}

// A v4-UUID-shaped tag, as PJSIP generates.
std::string toTag(const DialogSeed& seed) {
    std::uint64_t hi = (seed.hi & ~0xf000ULL) | 0x4000ULL;       // version 4
    std::uint64_t lo = (seed.lo & ~(3ULL << 62)) | (2ULL << 62); // RFC 4122 variant
    std::string out;
    out.reserve(36);
    appendHex(out, hi >> 32, 8);
    out.push_back('-');
    appendHex(out, (hi >> 16) & 0xffff, 4);
    out.push_back('-');
    appendHex(out, hi & 0xffff, 4);
    out.push_back('-');
    appendHex(out, lo >> 48, 4);
    out.push_back('-');
    appendHex(out, lo & 0xffffffffffffULL, 12);
    return out;
}

// Index of the first unquoted `c` in s[from, end), or end.
std::size_t findUnquoted(std::string_view s, char c, std::size_t from, std::size_t end) {
    bool quoted = false;
    for (std::size_t i = from; i < end; ++i) {
        if (s[i] == '"') {
            quoted = !quoted;
        } else if (s[i] == '\\' && quoted) {
            ++i;
        } else if (s[i] == c && !quoted) {
            return i;
        }
    }
    return end;
}

// The top Via per RFC 3261 18.2.1 and RFC 3581: a valueless rport gets the source port,
// and received=<source ip> is added unless the client already sent one.
std::string fixTopVia(std::string_view via, const ReplyContext& ctx) {
    // Parameters end where a trailing "(comment)" starts.
    std::size_t end = findUnquoted(via, '(', 0, via.size());
    while (end > 0 && (via[end - 1] == ' ' || via[end - 1] == '\t')) {
        --end;
    }
    bool has_received = false;
    std::size_t rport_end = std::string_view::npos; // where "=<port>" goes
    std::size_t pos = findUnquoted(via, ';', 0, end);
    while (pos < end) {
        std::size_t next = findUnquoted(via, ';', pos + 1, end);
        std::size_t name_begin = pos + 1;
        while (name_begin < next && (via[name_begin] == ' ' || via[name_begin] == '\t')) {
            ++name_begin;
        }
        std::size_t name_end = name_begin;
        while (name_end < next && via[name_end] != '=' && via[name_end] != ' ' &&
               via[name_end] != '\t') {
            ++name_end;
        }
        std::string_view name = via.substr(name_begin, name_end - name_begin);
        bool has_value = via.substr(name_end, next - name_end).find('=') != std::string_view::npos;
        if (equalsIgnoreCase(name, "received")) {
            has_received = true;
        } else if (equalsIgnoreCase(name, "rport") && !has_value) {
            rport_end = name_end;
        }
        pos = next;
    }

    std::string out;
    out.reserve(via.size() + ctx.source_ip.size() + 24);
    if (rport_end != std::string_view::npos) {
        out.append(via.substr(0, rport_end));
        out.append("=");
        out.append(std::to_string(ctx.source_port));
        out.append(via.substr(rport_end, end - rport_end));
    } else {
        out.append(via.substr(0, end));
    }
    if (!has_received && !ctx.source_ip.empty()) {
        out.append(";received=");
        out.append(core::sanitizeBytes(ctx.source_ip, false));
    }
    if (end < via.size()) {
        out.append(via.substr(end));
    }
    return out;
}

bool isIpv6(std::string_view ip) {
    return ip.find(':') != std::string_view::npos;
}

std::string lower(std::string_view s) {
    std::string out(s);
    for (char& c : out) {
        c = asciiLower(c);
    }
    return out;
}

std::string localContact(const ReplyContext& ctx) {
    std::string out = "<sip:";
    if (isIpv6(ctx.local_ip)) {
        out.append("[").append(ctx.local_ip).append("]");
    } else {
        out.append(ctx.local_ip);
    }
    out.append(":").append(std::to_string(ctx.local_port));
    out.append(";transport=").append(ctx.transport.empty() ? "udp" : lower(ctx.transport));
    out.append(">");
    return out;
}

// An SDP answer offering G.711 and RFC 4733 events at the local address, as Asterisk does.
std::string sdpAnswer(const ReplyContext& ctx, const DialogSeed& seed) {
    const char* family = isIpv6(ctx.local_ip) ? "IP6" : "IP4";
    std::uint64_t session = seed.lo % 1000000000ULL + 1000000000ULL;
    unsigned port = 10000 + 2 * static_cast<unsigned>((seed.lo >> 40) % 5000);
    std::string s;
    s.reserve(320);
    s.append("v=0\r\n");
    s.append("o=- ").append(std::to_string(session)).append(" ");
    s.append(std::to_string(session)).append(" IN ").append(family).append(" ");
    s.append(ctx.local_ip).append("\r\n");
    s.append("s=Asterisk\r\n");
    s.append("c=IN ").append(family).append(" ").append(ctx.local_ip).append("\r\n");
    s.append("t=0 0\r\n");
    s.append("m=audio ").append(std::to_string(port)).append(" RTP/AVP 0 8 101\r\n");
    s.append("a=rtpmap:0 PCMU/8000\r\n");
    s.append("a=rtpmap:8 PCMA/8000\r\n");
    s.append("a=rtpmap:101 telephone-event/8000\r\n");
    s.append("a=fmtp:101 0-16\r\n");
    s.append("a=ptime:20\r\n");
    s.append("a=maxptime:150\r\n");
    s.append("a=sendrecv\r\n");
    return s;
}

void appendHeader(std::string& out, std::string_view name, std::string_view value) {
    out.append(name).append(": ").append(value).append("\r\n");
}

} // namespace

std::string buildReply(const Message& request, const ReplyContext& ctx,
                       const ResponderOptions& options) {
    if (!isAnswerable(request)) {
        return {};
    }
    const bool invite = request.method == "INVITE";
    std::string_view status = "200 OK";
    if (invite && options.mode == AgentMode::NotFound) {
        status = "404 Not Found";
    } else if (invite && options.mode == AgentMode::Redirect) {
        status = "302 Moved Temporarily";
    }
    const bool answer_invite = invite && options.mode == AgentMode::Ok;
    const DialogSeed seed = dialogSeed(request, options.tag_key);

    std::string body;
    if (answer_invite) {
        body = sdpAnswer(ctx, seed);
    }

    std::string out;
    out.reserve(768 + body.size());
    out.append("SIP/2.0 ").append(status).append("\r\n");
    appendHeader(out, "Via", fixTopVia(request.vias.front(), ctx));
    for (std::size_t i = 1; i < request.vias.size(); ++i) {
        appendHeader(out, "Via", request.vias[i]);
    }
    appendHeader(out, "Call-ID", request.call_id);
    appendHeader(out, "From", request.from);
    if (request.to_tag.empty()) {
        appendHeader(out, "To", request.to + ";tag=" + toTag(seed));
    } else {
        appendHeader(out, "To", request.to);
    }
    appendHeader(out, "CSeq", request.cseq);
    if (answer_invite) {
        appendHeader(out, "Contact", localContact(ctx));
    } else if (invite && options.mode == AgentMode::Redirect && !options.redirect_uri.empty()) {
        std::string uri = core::sanitizeBytes(options.redirect_uri, false);
        appendHeader(out, "Contact", uri.starts_with("<") ? uri : "<" + uri + ">");
    }
    if (!options.server.empty()) {
        appendHeader(out, "Server", core::sanitizeBytes(options.server, false));
    }
    if (answer_invite || request.method == "OPTIONS") {
        appendHeader(out, "Allow", kAllow);
        appendHeader(out, "Supported", kSupported);
    }
    if (request.method == "OPTIONS") {
        appendHeader(out, "Accept", "application/sdp");
    }
    if (answer_invite) {
        appendHeader(out, "Content-Type", "application/sdp");
    }
    appendHeader(out, "Content-Length", std::to_string(body.size()));
    out.append("\r\n");
    out.append(body);
    return out;
}

} // namespace sp::sip
