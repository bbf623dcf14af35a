// libFuzzer target: a request target ("/path?query") is untrusted text. Parses it as the
// server does, then the list query and the cursor as the list routes do; checks that an
// accepted cursor prints back as itself.
#include <cstdint>
#include <string_view>

#include "api/http.hpp"
#include "api/list_query.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view bytes(reinterpret_cast<const char*>(data), size);
    sp::api::Request r;
    r.method = "GET";
    r.malformed = !sp::api::parseTarget(bytes, r.path, r.query);
    const sp::core::TimePoint now{std::chrono::seconds(1'900'000'000)};
    sp::api::ListQuery q;
    (void)sp::api::parseListQuery(r, now, q);
    (void)r.numberParam("prefix");
    if (auto c = sp::api::parseCursor(bytes)) {
        // An accepted cursor is in range and reads back the same from its own text.
        auto again = sp::api::parseCursor(sp::api::cursorText(c->last, c->key));
        if (!again || again->last != c->last || again->key != c->key) {
            __builtin_trap();
        }
    }
    return 0;
}
