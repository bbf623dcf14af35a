// libFuzzer target: DHT values from peers are untrusted bytes.
#include <cstdint>
#include <string_view>

#include "core/json.hpp"
#include "p2p/codec.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view bytes(reinterpret_cast<const char*>(data), size);
    auto d = sp::p2p::decode(bytes, "00000000-0000-4000-8000-0000000000aa",
                             sp::core::TimePoint{std::chrono::seconds(1'900'000'000)});
    if (d.event) {
        // An accepted event must re-encode into a value we would accept again.
        auto again = sp::p2p::decode(sp::p2p::encode(*d.event), "x", d.event->time);
        if (!again.event) {
            __builtin_trap();
        }
    }
    return 0;
}
