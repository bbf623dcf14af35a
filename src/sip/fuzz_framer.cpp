// libFuzzer target: sip::Framer. The first two bytes choose the maximum message size and
// the cut points; the rest is the stream. Invariant: however the stream is split into
// feeds, the framer delivers the same messages, ends in the same status and, while Ok,
// holds the same pending bytes; no message exceeds the maximum.

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "sip/framer.hpp"

namespace {

void check(bool ok) {
    if (!ok) {
        std::abort();
    }
}

struct Outcome {
    std::vector<std::string> messages;
    sp::sip::Framer::Status status = sp::sip::Framer::Status::Ok;
    std::string pending;
};

// Feeds `stream` cut into pieces of `step` bytes (0 = in one piece).
Outcome run(std::string_view stream, std::size_t max_message, std::size_t step) {
    sp::sip::Framer framer(max_message);
    Outcome out;
    auto collect = [&](std::string_view m) {
        check(!m.empty() && m.size() <= max_message);
        check(m.front() != '\r' && m.front() != '\n');
        out.messages.emplace_back(m);
    };
    if (step == 0) {
        step = stream.size() + 1;
    }
    for (std::size_t pos = 0; pos < stream.size(); pos += step) {
        out.status = framer.feed(stream.substr(pos, step), collect);
    }
    out.pending = framer.pending();
    return out;
}

} // namespace

// NOLINTNEXTLINE(readability-identifier-naming): the name libFuzzer calls.
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) {
        return 0;
    }
    const std::size_t max_message = 64 + static_cast<std::size_t>(data[0]) * 16;
    const std::size_t step = 1 + data[1] % 37;
    std::string_view stream(reinterpret_cast<const char*>(data + 2), size - 2);

    Outcome whole = run(stream, max_message, 0);
    for (std::size_t s : {std::size_t{1}, step, stream.size() / 3 + 1}) {
        Outcome split = run(stream, max_message, s);
        check(split.messages == whole.messages);
        check(split.status == whole.status);
        if (whole.status == sp::sip::Framer::Status::Ok) {
            check(split.pending == whole.pending);
        }
    }
    // Nothing is invented or lost: while Ok, the stream is the messages and the pending
    // bytes in order, with only keep-alive line breaks skipped before each.
    if (whole.status == sp::sip::Framer::Status::Ok) {
        std::size_t pos = 0;
        for (const std::string& m : whole.messages) {
            pos = stream.find_first_not_of("\r\n", pos);
            check(pos != std::string_view::npos && stream.substr(pos, m.size()) == m);
            pos += m.size();
        }
        pos = stream.find_first_not_of("\r\n", pos);
        check(pos == std::string_view::npos ? whole.pending.empty()
                                            : stream.substr(pos) == whole.pending);
    }
    return 0;
}
