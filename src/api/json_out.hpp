#pragma once
// Writing SentryPeer-shaped bodies (internal to the API's route files). SentryPeer's bodies
// come from jansson's default encoder: ", " and ": " separators. Any thread.

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "api/http.hpp"
#include "core/clock.hpp"
#include "core/json.hpp"
#include "core/text.hpp"

namespace sp::api {

class JsonObject {
public:
    JsonObject& str(std::string_view key, std::string_view value) {
        sep(key);
        core::appendJsonString(out_, value);
        return *this;
    }
    JsonObject& num(std::string_view key, std::uint64_t value) {
        sep(key);
        out_.append(std::to_string(value));
        return *this;
    }
    JsonObject& raw(std::string_view key, std::string_view json) {
        sep(key);
        out_.append(json);
        return *this;
    }
    std::string done() { return std::move(out_) + "}"; }
    // The object without its closing brace, for a streamed list that follows.
    std::string open() { return std::move(out_); }

private:
    void sep(std::string_view key) {
        out_.append(out_.size() == 1 ? "" : ", ");
        core::appendJsonString(out_, key);
        out_.append(": ");
    }
    std::string out_ = "{";
};

inline Response json(int status, std::string body) {
    Response r;
    r.status = status;
    r.body = std::move(body);
    return r;
}

// {"<key>": "<text>"}, as JsonObject would write it, in one allocation.
inline Response message(int status, std::string_view key, std::string_view text) {
    Response r;
    r.status = status;
    r.body.reserve(key.size() + text.size() + 8);
    r.body.push_back('{');
    core::appendJsonString(r.body, key);
    r.body.append(": ");
    core::appendJsonString(r.body, text);
    r.body.push_back('}');
    return r;
}

inline Response invalid() {
    return message(400, "error", "The request data was invalid");
}
inline Response notFoundRoute() {
    return message(404, "error", "The requested resource could not be found.");
}

inline void appendTimestamp(std::string& out, core::TimePoint t) {
    std::size_t at = out.size();
    out.resize(at + core::kTimestampLength);
    core::writeTimestamp(out.data() + at, t);
}

} // namespace sp::api
