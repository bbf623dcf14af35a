#include "sip/parse.hpp"

#include <algorithm>
#include <cstdarg>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>

#include <osipparser2/osip_parser.h>

#include "core/event.hpp"
#include "core/text.hpp"
#include "sip/header_scan.hpp"

namespace sp::sip {
namespace {

std::once_flag g_init_once;

// libosip2 5.3 as packaged prints ERROR traces to stdout by default: one line per bad
// packet. Installing a sink with every level disabled silences it at no formatting cost.
void discardTrace(const char*, int, osip_trace_level_t, const char*, va_list) {}

// libosip2 makes dozens of small allocations per message (every header, parameter and URI
// part) and frees them all at osip_message_free: a fifth of the parse time in malloc/free.
// While a thread parses, its osip allocations come from a per-thread bump arena that is
// rewound after the message; anything larger than what is left falls back to malloc. Outside
// parse() (and before initParser() installs the hooks) osip uses malloc as usual. Sanitizer
// and fuzz builds define SP_NO_OSIP_ARENA: AddressSanitizer then sees each osip allocation.
#if defined(SP_NO_OSIP_ARENA)
constexpr bool kOsipArena = false;
#else
constexpr bool kOsipArena = true;
#endif

class Arena {
public:
    static constexpr std::size_t kSize = std::size_t{256} * 1024;
    static constexpr std::size_t kAlign = 16;

    void* allocate(std::size_t n) {
        // At least one byte: a block never ends at the buffer's end, so owns() knows it.
        std::size_t need = kAlign + ((std::max<std::size_t>(n, 1) + kAlign - 1) & ~(kAlign - 1));
        if (n > kSize || need > kSize - used_) {
            return std::malloc(n);
        }
        char* block = buffer_.get() + used_;
        used_ += need;
        std::memcpy(block, &n, sizeof n); // the size, for realloc
        return block + kAlign;
    }
    bool owns(const void* p) const {
        auto* c = static_cast<const char*>(p);
        return c >= buffer_.get() && c < buffer_.get() + kSize;
    }
    void* reallocate(void* p, std::size_t n) {
        if (!owns(p)) {
            return std::realloc(p, n);
        }
        std::size_t old = 0;
        std::memcpy(&old, static_cast<char*>(p) - kAlign, sizeof old);
        void* q = allocate(n);
        if (q != nullptr) {
            std::memcpy(q, p, std::min(old, n));
        }
        return q;
    }
    void rewind() { used_ = 0; }

private:
    std::unique_ptr<char[]> buffer_ = std::make_unique<char[]>(kSize);
    std::size_t used_ = 0;
};

thread_local std::unique_ptr<Arena> t_arena;
thread_local bool t_arena_active = false;

[[maybe_unused]] void* arenaMalloc(std::size_t n) {
    return t_arena_active ? t_arena->allocate(n) : std::malloc(n);
}
[[maybe_unused]] void* arenaRealloc(void* p, std::size_t n) {
    if (p == nullptr) {
        return arenaMalloc(n);
    }
    return t_arena && t_arena->owns(p) ? t_arena->reallocate(p, n) : std::realloc(p, n);
}
[[maybe_unused]] void arenaFree(void* p) {
    if (p != nullptr && !(t_arena && t_arena->owns(p))) {
        std::free(p);
    }
}

// Routes this thread's osip allocations to its arena for one scope, then rewinds it.
class ArenaScope {
public:
    ArenaScope() {
        if (!t_arena) {
            t_arena = std::make_unique<Arena>();
        }
        t_arena_active = true;
    }
    ~ArenaScope() {
        t_arena_active = false;
        t_arena->rewind();
    }
    ArenaScope(const ArenaScope&) = delete;
    ArenaScope& operator=(const ArenaScope&) = delete;
};

struct OsipMessageFree {
    void operator()(osip_message_t* m) const noexcept { osip_message_free(m); }
};
using OsipMessage = std::unique_ptr<osip_message_t, OsipMessageFree>;

// Runs an osip *_to_str function and returns its result sanitised as a single line; empty
// when osip fails.
template <typename T> std::string osipToString(int (*to_str)(const T*, char**), const T* value) {
    if (value == nullptr) {
        return {};
    }
    char* raw = nullptr;
    if (to_str(value, &raw) != 0 || raw == nullptr) {
        if (raw != nullptr) {
            osip_free(raw);
        }
        return {};
    }
    std::string out = core::sanitizeBytes(raw, false);
    osip_free(raw);
    return out;
}

std::string_view view(const char* s) {
    return s == nullptr ? std::string_view{} : s;
}

// RFC 3261 token characters (a method is a token).
bool isTokenChar(char c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
        return true;
    }
    return c != '\0' && std::strchr("-.!%*_+`'~", c) != nullptr;
}

bool isToken(std::string_view s) {
    if (s.empty()) {
        return false;
    }
    for (char c : s) {
        if (!isTokenChar(c)) {
            return false;
        }
    }
    return true;
}

// The user part of a URI: the username of sip:/sips: URIs, the number of tel: URIs.
std::string_view uriUser(const osip_uri_t* uri) {
    if (uri == nullptr) {
        return {};
    }
    if (uri->username != nullptr && uri->username[0] != '\0') {
        return uri->username;
    }
    if (uri->scheme != nullptr && equalsIgnoreCase(uri->scheme, "tel")) {
        std::string_view number = view(uri->string);
        return number.substr(0, number.find(';'));
    }
    return {};
}

// The longest prefix of sanitised text s that fits in max bytes and ends between two whole
// characters: a multi-byte UTF-8 character or a `\xNN` escape is kept whole or dropped.
std::string cutSanitized(std::string s, std::size_t max) {
    if (s.size() <= max) {
        return s;
    }
    auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); };
    std::size_t i = 0;
    while (i < s.size()) {
        std::size_t len = 1;
        if (s[i] == '\\' && i + 3 < s.size() && s[i + 1] == 'x' && hex(s[i + 2]) && hex(s[i + 3])) {
            len = 4;
        } else {
            len = std::max<std::size_t>(1, core::utf8SequenceLength(s, i));
        }
        if (i + len > max) {
            break;
        }
        i += len;
    }
    s.resize(i);
    return s;
}

// A single-line field, sanitised and cut to at most max bytes (cutSanitized), or
// core::kNotFound when empty. Only the first max raw bytes are looked at: each raw byte
// becomes at least one output byte, so the result is the same as cutting the whole
// sanitised value, without sanitising 64 KiB to keep 128 bytes.
std::string singleLineOrNotFound(std::string_view value, std::size_t max) {
    value = trimLws(value);
    if (value.empty()) {
        return core::kNotFound;
    }
    return cutSanitized(core::sanitizeBytes(value.substr(0, max), false), max);
}

// User-Agent from the raw bytes, for messages osip rejects.
std::string rawUserAgent(std::string_view bytes) {
    std::string_view found;
    forEachHeader(bytes, [&](std::string_view name, std::string_view value) {
        if (isHeaderName(name, "user-agent")) {
            found = value;
            return false;
        }
        return true;
    });
    return singleLineOrNotFound(found, kMaxUserAgentBytes);
}

// libosip2 appends each parsed element (header, parameter, list item, URI header) by walking
// a linked list, and unescapes URIs in place, so its cost grows with the square of the
// element count: one 64 KiB datagram of ";p" costs it over a second. Header sections with
// more separators than this are not handed to osip; real SIP messages stay far below.
constexpr std::size_t kMaxSeparators = 256;

// Whether osip may parse this header section: bounded work, and no NUL or lone CR. osip
// stops at a NUL and ends lines at a lone CR; either would make it see a body inside what
// we take for headers (and osip's MIME body parser leaks on malformed parts).
bool isSafeForOsip(std::string_view head) {
    std::size_t separators = 0;
    for (std::size_t i = 0; i < head.size(); ++i) {
        char c = head[i];
        if (c == ';' || c == ',' || c == '&' || c == '%' || c == '\n') {
            if (++separators > kMaxSeparators) {
                return false;
            }
        } else if (c == '\0' || (c == '\r' && (i + 1 == head.size() || head[i + 1] != '\n'))) {
            return false;
        }
    }
    return true;
}

// The headers osip is given: what the event reads (To, User-Agent), and for Detail::Reply
// what the responder echoes (Via, From, Call-ID, CSeq). osip parses every header it is
// handed (Contact, Allow, Supported ... are half of a typical probe) and needs the body
// whenever a Content-Type is present, so only these go in.
bool isWantedHeader(std::string_view name, Detail detail) {
    if (isHeaderName(name, "to", 't') || isHeaderName(name, "user-agent")) {
        return true;
    }
    return detail == Detail::Reply &&
           (isHeaderName(name, "via", 'v') || isHeaderName(name, "from", 'f') ||
            isHeaderName(name, "call-id", 'i') || isHeaderName(name, "cseq"));
}

// Builds osip's input in `out`: the start line and the wanted headers of `head` (with their
// folded continuation lines, and any line without a colon, which osip then judges), ending
// with the empty line. osip scans with strchr/strstr, so out is NUL-terminated (std::string).
void osipInput(std::string_view head, Detail detail, std::string& out) {
    out.clear();
    bool keep = true; // the start line
    std::size_t pos = 0;
    while (pos < head.size()) {
        std::size_t lf = head.find('\n', pos);
        std::size_t end = lf == std::string_view::npos ? head.size() : lf + 1;
        std::string_view line = head.substr(pos, end - pos);
        std::string_view text = line;
        while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) {
            text.remove_suffix(1);
        }
        if (text.empty()) {
            break; // the empty line
        }
        if (pos > 0 && text.front() != ' ' && text.front() != '\t') {
            std::size_t colon = text.find(':');
            keep = colon == std::string_view::npos ||
                   isWantedHeader(trimLws(text.substr(0, colon)), detail);
        }
        if (keep) {
            out.append(line);
            if (lf == std::string_view::npos) {
                out.append("\r\n");
            }
        }
        pos = end;
    }
    out.append("\r\n");
}

// osip's parse of the start line and the headers `detail` needs; null when osip rejects them
// or they are unsafe for it. Call within an ArenaScope.
OsipMessage parseHead(std::string_view head, Detail detail) {
    thread_local std::string buffer; // reused: no allocation per message
    osipInput(head, detail, buffer);
    osip_message_t* raw = nullptr;
    if (!isSafeForOsip(buffer) || osip_message_init(&raw) != 0) {
        return nullptr;
    }
    OsipMessage msg(raw);
    if (osip_message_parse(raw, buffer.c_str(), buffer.size()) != 0) {
        return nullptr;
    }
    return msg;
}

// The first Content-Type value of a header section (a view into it).
std::string_view firstContentType(std::string_view head) {
    std::string_view found;
    forEachHeader(head, [&](std::string_view name, std::string_view value) {
        if (isHeaderName(name, "content-type", 'c')) {
            found = value;
            return false;
        }
        return true;
    });
    return found;
}

// Fields recorded for every message osip parsed, request or not.
void fillEventFields(const osip_message_t* sip, Message& m) {
    osip_header_t* ua = nullptr;
    osip_message_get_user_agent(sip, 0, &ua);
    m.user_agent = singleLineOrNotFound(ua == nullptr ? std::string_view{} : view(ua->hvalue),
                                        kMaxUserAgentBytes);

    std::string_view user = uriUser(sip->to == nullptr ? nullptr : sip->to->url);
    if (user.empty()) {
        user = uriUser(sip->req_uri);
    }
    m.called_number = singleLineOrNotFound(user, kMaxCalledNumberBytes);
}

// Fields the responder echoes. Left empty when absent, so the responder can refuse.
// `start_line` is the message from its request line on, which osip accepted: "METHOD SP
// Request-URI SP SIP-Version".
void fillResponderFields(const osip_message_t* sip, std::string_view start_line, Message& m) {
    start_line = start_line.substr(0, start_line.find_first_of("\r\n"));
    std::size_t uri_begin = start_line.find_first_not_of(' ', start_line.find(' '));
    if (uri_begin != std::string_view::npos) {
        std::size_t uri_end = start_line.find(' ', uri_begin);
        m.request_uri =
            core::sanitizeBytes(start_line.substr(uri_begin, uri_end - uri_begin), false);
    }

    osip_list_iterator_t it;
    auto* via = static_cast<osip_via_t*>(osip_list_get_first(&sip->vias, &it));
    while (via != nullptr) {
        std::string value = osipToString(osip_via_to_str, via);
        if (value.empty()) {
            // A Via we cannot echo makes every reply unroutable: record none.
            m.vias.clear();
            break;
        }
        m.vias.push_back(std::move(value));
        via = static_cast<osip_via_t*>(osip_list_get_next(&it));
    }

    m.from = osipToString(osip_from_to_str, sip->from);
    m.to = osipToString(osip_to_to_str, sip->to);
    if (sip->to != nullptr) {
        char tag_name[] = "tag"; // osip's lookup takes a mutable name
        osip_generic_param_t* tag = nullptr;
        if (osip_uri_param_get_byname(&sip->to->gen_params, tag_name, &tag) == 0 &&
            tag != nullptr) {
            m.to_tag = core::sanitizeBytes(view(tag->gvalue), false);
        }
    }
    if (sip->call_id != nullptr && sip->call_id->number != nullptr) {
        std::string call_id = sip->call_id->number;
        if (sip->call_id->host != nullptr) {
            call_id.push_back('@');
            call_id.append(sip->call_id->host);
        }
        m.call_id = core::sanitizeBytes(call_id, false);
    }
    if (sip->cseq != nullptr && sip->cseq->number != nullptr && sip->cseq->method != nullptr) {
        m.cseq_method = core::sanitizeBytes(sip->cseq->method, false);
        m.cseq = core::sanitizeBytes(sip->cseq->number, false);
        m.cseq.push_back(' ');
        m.cseq.append(m.cseq_method);
    }
}

} // namespace

void initParser() {
    std::call_once(g_init_once, [] {
        parser_init();
        if constexpr (kOsipArena) {
            osip_set_allocators(arenaMalloc, arenaRealloc, arenaFree);
        }
        osip_trace_initialize_func(TRACE_LEVEL0, discardTrace);
        for (int level = TRACE_LEVEL0; level < END_TRACE_LEVEL; ++level) {
            osip_trace_disable_level(static_cast<osip_trace_level_t>(level));
        }
    });
}

Message parse(std::string_view bytes, Detail detail) {
    Message m;
    m.sip_message = core::sanitizeBytes(bytes, true);
    m.user_agent = core::kNotFound;
    m.called_number = core::kNotFound;

    std::string_view start = bytes;
    while (!start.empty() && (start.front() == '\r' || start.front() == '\n')) {
        start.remove_prefix(1);
    }
    const bool response = start.starts_with("SIP/2.0 ");
    m.kind = response ? Kind::Response : Kind::Malformed;
    m.method = response ? core::kMethodResponse : core::kMethodMalformed;
    if (start.empty()) {
        return m;
    }

    try {
        // osip gets the header section only: the body is not needed, and osip's body parser
        // (MIME parts) is its least robust part: quadratic, and it leaks on some malformed
        // parts. The body's length is checked here instead.
        std::size_t scan = 0;
        const std::size_t head_length = headerSectionLength(start, scan);
        const std::string_view head = head_length == 0 ? start : start.substr(0, head_length);
        const std::string_view body = start.substr(head.size());
        const std::optional<ContentLength> length = contentLength(head, body.size());
        if (!length || length->value > body.size()) {
            m.user_agent = rawUserAgent(start);
            return m;
        }
        initParser();
        const ArenaScope arena; // declared before the message: osip frees into it first
        // What is recorded comes from the start line, To and User-Agent alone, whatever the
        // mode (osip's verdict on a message can depend on which other headers it is given).
        const OsipMessage parsed = parseHead(head, Detail::Event);
        if (!parsed) {
            m.user_agent = rawUserAgent(start);
            return m;
        }
        const osip_message_t* sip = parsed.get();
        fillEventFields(sip, m);
        if (response || !MSG_IS_REQUEST(sip) || sip->req_uri == nullptr ||
            !isToken(view(sip->sip_method))) {
            return m;
        }
        m.kind = Kind::Request;
        m.method = sip->sip_method;
        if (detail == Detail::Event) {
            return m;
        }
        // The reply's headers, parsed again with the event's: when osip rejects them the
        // request stays recorded and is not answered.
        const OsipMessage full = parseHead(head, Detail::Reply);
        if (!full) {
            return m;
        }
        fillResponderFields(full.get(), start, m);
        m.content_type = core::sanitizeBytes(firstContentType(head), false);
        m.has_body = length->present ? length->value > 0
                                     : body.find_first_not_of("\r\n") != std::string_view::npos;
    } catch (...) {
        // Only allocation can throw here; the message stays recorded, as malformed.
        m.kind = response ? Kind::Response : Kind::Malformed;
        m.method = response ? core::kMethodResponse : core::kMethodMalformed;
    }
    return m;
}

} // namespace sp::sip
