#include "api/list_query.hpp"

#include <algorithm>

#include "core/text.hpp"

namespace sp::api {

std::optional<Cursor> parseCursor(std::string_view s) {
    auto comma = s.find(',');
    if (comma == std::string_view::npos || comma == 0 || comma > 19) {
        return std::nullopt;
    }
    long long us = 0;
    for (std::size_t i = 0; i < comma; ++i) {
        if (s[i] < '0' || s[i] > '9') {
            return std::nullopt;
        }
        int digit = s[i] - '0';
        // Checked before multiplying: 20 nines must not overflow (undefined behaviour),
        // and a time past what TimePoint holds must not overflow its conversion.
        if (us > (kMaxCursorMicros - digit) / 10) {
            return std::nullopt;
        }
        us = us * 10 + digit;
    }
    return Cursor{core::TimePoint{std::chrono::microseconds(us)}, std::string(s.substr(comma + 1))};
}

std::optional<core::TimePoint> parseSince(const std::string& s, core::TimePoint now) {
    if (auto d = core::parseDuration(s)) {
        return now - *d;
    }
    return core::parseTimestamp(s);
}

bool parseListQuery(const Request& r, core::TimePoint now, ListQuery& q) {
    if (auto v = r.param("limit")) {
        if (v->empty() || v->size() > 9 ||
            !std::all_of(v->begin(), v->end(), [](char c) { return c >= '0' && c <= '9'; }) ||
            std::stoul(*v) == 0) {
            return false;
        }
        q.limit = std::stoul(*v);
    }
    if (auto v = r.param("after")) {
        q.after = parseCursor(*v);
        if (!q.after) {
            return false;
        }
    }
    if (auto v = r.param("since")) {
        q.since = parseSince(*v, now);
        if (!q.since) {
            return false;
        }
    }
    if (auto v = r.numberParam("prefix")) {
        q.prefix = std::move(*v);
    }
    if (auto v = r.param("origin")) {
        auto origin = store::parseOriginFilter(*v);
        if (!origin) {
            return false;
        }
        q.origin = *origin;
    }
    return true;
}

std::string cursorText(core::TimePoint last, std::string_view key) {
    std::string c = std::to_string(
        std::chrono::duration_cast<std::chrono::microseconds>(last.time_since_epoch()).count());
    c.push_back(',');
    c.append(key);
    return c;
}

} // namespace sp::api
