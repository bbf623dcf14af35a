#pragma once
// Allocation-free scanning of a raw SIP header section, shared by the framer (Content-Length)
// and the parser's fallback for messages osip rejects. Works on any bytes; never throws.

#include <cstddef>
#include <optional>
#include <string_view>

namespace sp::sip {

inline char asciiLower(char c) {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

// ASCII case-insensitive equality (SIP header names and tokens).
inline bool equalsIgnoreCase(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) {
        return false;
    }
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (asciiLower(a[i]) != asciiLower(b[i])) {
            return false;
        }
    }
    return true;
}

// True when `name` is header `full` or its compact form `compact` (RFC 3261 7.3.3), in any
// case. compact == '\0' means the header has no compact form.
inline bool isHeaderName(std::string_view name, std::string_view full, char compact = '\0') {
    if (compact != '\0' && name.size() == 1) {
        return asciiLower(name[0]) == asciiLower(compact);
    }
    return equalsIgnoreCase(name, full);
}

// s without leading and trailing SP, HTAB and CR.
inline std::string_view trimLws(std::string_view s) {
    auto lws = [](char c) { return c == ' ' || c == '\t' || c == '\r'; };
    while (!s.empty() && lws(s.front())) {
        s.remove_prefix(1);
    }
    while (!s.empty() && lws(s.back())) {
        s.remove_suffix(1);
    }
    return s;
}

// Length of the header section of `message` (start line and headers through the empty
// line that ends them: LF LF or LF CR LF), or 0 when that empty line has not arrived yet.
// `scan` is where the search resumes (0 the first time); it is advanced so that calling again
// on a longer buffer holding the same message does not rescan bytes already seen.
inline std::size_t headerSectionLength(std::string_view message, std::size_t& scan) {
    std::size_t lf = message.find('\n', scan);
    while (lf != std::string_view::npos) {
        if (lf + 1 >= message.size()) {
            break;
        }
        if (message[lf + 1] == '\n') {
            return lf + 2;
        }
        if (message[lf + 1] == '\r') {
            if (lf + 2 >= message.size()) {
                break;
            }
            if (message[lf + 2] == '\n') {
                return lf + 3;
            }
        }
        lf = message.find('\n', lf + 1);
    }
    scan = lf == std::string_view::npos ? message.size() : lf;
    return 0;
}

// Calls f(name, value) for every "name: value" line of a message, skipping its first line
// (the start line), up to the first empty line or the end of `message`. Lines end with LF
// or CRLF; name and value are trimmed. Lines without ':' and folded continuation lines are
// skipped. f returns true to continue, false to stop.
template <typename F> void forEachHeader(std::string_view message, F&& f) {
    std::size_t pos = message.find('\n');
    while (pos != std::string_view::npos && pos + 1 < message.size()) {
        std::size_t begin = pos + 1;
        pos = message.find('\n', begin);
        std::string_view line = message.substr(
            begin, pos == std::string_view::npos ? std::string_view::npos : pos - begin);
        if (!line.empty() && line.back() == '\r') {
            line.remove_suffix(1);
        }
        if (line.empty()) {
            return;
        }
        if (line.front() == ' ' || line.front() == '\t') {
            continue;
        }
        std::size_t colon = line.find(':');
        if (colon == std::string_view::npos) {
            continue;
        }
        if (!f(trimLws(line.substr(0, colon)), trimLws(line.substr(colon + 1)))) {
            return;
        }
    }
}

struct ContentLength {
    std::size_t value = 0; // 0 when absent
    bool present = false;
};

// The Content-Length (or compact "l") of a header section. nullopt when a value is not a
// plain decimal number or when two values disagree (request smuggling); values above
// `limit` come back as limit + 1, so no value can overflow.
inline std::optional<ContentLength> contentLength(std::string_view headers, std::size_t limit) {
    std::optional<ContentLength> result = ContentLength{};
    forEachHeader(headers, [&](std::string_view name, std::string_view value) {
        if (!isHeaderName(name, "content-length", 'l')) {
            return true;
        }
        std::size_t n = 0;
        bool valid = !value.empty();
        for (char c : value) {
            if (c < '0' || c > '9') {
                valid = false;
                break;
            }
            if (n <= limit) {
                n = n * 10 + static_cast<std::size_t>(c - '0');
            }
        }
        if (n > limit) {
            n = limit + 1;
        }
        if (!valid || (result->present && n != result->value)) {
            result.reset();
            return false;
        }
        *result = ContentLength{n, true};
        return true;
    });
    return result;
}

} // namespace sp::sip
