#pragma once
// The event's JSON form (JSON log line, webhook body, DHT value) and a small streaming
// writer that the API reuses for large lists. Compact, no trailing newline.

#include <string>
#include <string_view>

#include "core/event.hpp"

namespace sp::core {

// Appends s as a JSON string literal (with quotes). Control characters become \n, \r, \t
// or \u00XX; bytes that are not valid UTF-8 become \ufffd, so the output is always valid
// JSON whatever the input.
void appendJsonString(std::string& out, std::string_view s);

// Appends the compact event object: SentryPeer's 13 keys in their order, every value a
// string, then our additions (source_port, destination_port, also strings so that every
// value stays a string for existing parsers).
void appendEventJson(std::string& out, const Event& e);

inline std::string eventToJson(const Event& e) {
    std::string s;
    s.reserve(512 + e.sip_message.size());
    appendEventJson(s, e);
    return s;
}

} // namespace sp::core
