// libFuzzer target: a batch check's body, an APIBAN ID and a dialled number are untrusted
// text. Parses each as the routes do; checks that an accepted 56-digit ID prints back as
// itself and that every spelling of a normalised number reads back as it.
#include <cstdint>
#include <string_view>

#include "api/apiban.hpp"
#include "api/checks.hpp"
#include "api/lookup_keys.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view bytes(reinterpret_cast<const char*>(data), size);
    auto body = sp::api::checks::parseBody(bytes, "numbers", 64);
    if (body.status == 200 && body.items.size() > 64) {
        __builtin_trap();
    }
    auto id = sp::api::apiban::parseId(bytes);
    if (id.kind == sp::api::apiban::IdKind::After && sp::api::apiban::encodeId(id.after) != bytes) {
        __builtin_trap();
    }
    if (auto n = sp::api::normaliseNumber(bytes)) {
        auto spellings = sp::api::numberSpellings(*n);
        for (std::size_t i = 0; i < spellings.count; ++i) {
            if (sp::api::normaliseNumber(spellings.forms[i]) != n) {
                __builtin_trap();
            }
        }
    }
    return 0;
}
