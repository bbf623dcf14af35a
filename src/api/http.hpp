#pragma once
// What a route sees of an HTTP request and what it answers: independent of the server
// (Boost.Beast), so routes are unit-testable without sockets.

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sp::api {

struct Request {
    std::string method;                       // "GET", "HEAD", ...
    std::string path;                         // percent-decoded, without the query string
    std::map<std::string, std::string> query; // percent-decoded; last value wins
    std::string content_type;
    std::string authorization;
    std::string api_key;    // X-Api-Key (CrowdSec bouncers)
    std::string body;       // the request body (POST), at most Routes::bodyLimit bytes
    bool malformed = false; // the target did not parse (a bad escape): answered 400

    std::optional<std::string> param(const std::string& name) const {
        auto it = query.find(name);
        return it == query.end() ? std::nullopt : std::optional<std::string>(it->second);
    }
    // A phone-number parameter (?prefix=+44): a query decodes a literal '+' as a space, and
    // no number starts with a space, so a leading space is read back as the '+' it was.
    std::optional<std::string> numberParam(const std::string& name) const {
        auto v = param(name);
        if (v && !v->empty() && (*v)[0] == ' ') {
            (*v)[0] = '+';
        }
        return v;
    }
};

// Produces the next piece of a streamed body into `chunk` (cleared by the caller);
// returns false when the body is complete (the last call may still fill `chunk`).
using BodyStream = std::function<bool(std::string& chunk)>;

struct Response {
    int status = 200;
    std::string_view content_type = "application/json"; // always a literal
    std::string body;
    BodyStream stream; // when set, the body is sent chunked from it instead of `body`
    std::vector<std::pair<std::string, std::string>> headers;
};

// Splits "path?query" and percent-decodes both ('+' in the query means a space). Returns
// false for malformed escapes ("%zz", "%4").
bool parseTarget(std::string_view target, std::string& path,
                 std::map<std::string, std::string>& query);

// Percent-decoding; nullopt for a malformed escape. With plus_is_space, '+' becomes ' '.
std::optional<std::string> percentDecode(std::string_view s, bool plus_is_space);

} // namespace sp::api
