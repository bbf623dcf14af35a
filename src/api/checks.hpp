#pragma once
// Batch checks for billing systems (POST /numbers/check, POST /ip-addresses/check): the
// request body's parser and limits, for the handlers (checks.cpp) and their tests.
// Body: {"numbers": ["+442079460000", ...]} or {"ip_addresses": ["203.0.113.7", ...]}, one
// key whose value is a list of strings. Threads: pure functions, any thread.

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace sp::api::checks {

inline constexpr std::size_t kMaxItems = 10000;             // items per request
inline constexpr std::size_t kMaxBodyBytes = 1024UL * 1024; // the server reads no more

struct ParsedBody {
    int status = 200;  // 200, 400 (malformed) or 413 (over kMaxItems)
    std::string error; // why, for the JSON error message
    std::vector<std::string> items;
};

// Parses `body` as {"<key>": [string, ...]} (JSON, any whitespace, strings with every JSON
// escape). Anything else: 400 with the reason; more than max_items strings: 413 (parsing
// stops there). Never throws past std::bad_alloc.
ParsedBody parseBody(std::string_view body, std::string_view key,
                     std::size_t max_items = kMaxItems);

} // namespace sp::api::checks
