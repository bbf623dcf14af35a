#pragma once
// The query of a list or export route (?limit, ?after, ?since, ?prefix): parsed from
// untrusted text, never throws, rejects (nullopt/false) anything out of range. Pure
// functions, any thread; fuzzed by fuzz_query.cpp.

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "api/http.hpp"
#include "core/clock.hpp"
#include "store/index.hpp"

namespace sp::api {

// A paging cursor "<last seen, microseconds since the epoch>,<key>": the last entry of
// the previous page.
struct Cursor {
    core::TimePoint last;
    std::string key;
};

struct ListQuery {
    std::optional<std::size_t> limit; // ?limit=N, 1..999999999
    std::optional<Cursor> after;      // ?after=<cursor>
    std::optional<core::TimePoint> since;
    std::string prefix; // ?prefix= (numbers only; a leading '+' kept, see numberParam)
    store::OriginFilter origin = store::OriginFilter::All; // ?origin=local|peer|all
};

// The largest cursor time: what core::TimePoint can hold, in microseconds.
inline constexpr long long kMaxCursorMicros =
    std::chrono::duration_cast<std::chrono::microseconds>(core::TimePoint::duration::max()).count();

// "<1 to 19 digits>,<key>"; nullopt when malformed or past kMaxCursorMicros.
std::optional<Cursor> parseCursor(std::string_view s);

// "1h", "7d" (that long before `now`) or a timestamp ("2026-11-27 04:00:00", fraction
// optional); nullopt when neither.
std::optional<core::TimePoint> parseSince(const std::string& s, core::TimePoint now);

// Reads ?limit, ?after, ?since and ?prefix into q; false when one is malformed.
bool parseListQuery(const Request& r, core::TimePoint now, ListQuery& q);

// The cursor text of an entry (what parseCursor reads back).
std::string cursorText(core::TimePoint last, std::string_view key);

} // namespace sp::api
