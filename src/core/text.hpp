#pragma once
// Text helpers for attacker-supplied bytes and for our timestamp format. No I/O.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/event.hpp"

namespace sp::core {

// Length in bytes of the valid UTF-8 sequence starting at s[i], or 0 if the bytes there
// are not valid UTF-8 (overlong forms, surrogates and code points > U+10FFFF are invalid).
std::size_t utf8SequenceLength(std::string_view s, std::size_t i);

// Makes attacker bytes safe to store and show: valid UTF-8 is kept; every invalid byte and
// every control character becomes the four characters `\xNN`. With keep_line_breaks, TAB,
// CR and LF are kept (whole SIP messages); without, they are escaped too (single-line
// fields such as a user agent, so nobody can forge a log line).
std::string sanitizeBytes(std::string_view bytes, bool keep_line_breaks);

// "YYYY-MM-DD HH:MM:SS.nnnnnnnnn" in UTC, always nine fraction digits.
std::string formatTimestamp(TimePoint t);
inline constexpr std::size_t kTimestampLength = 29;
// Appends v in decimal (no locale, no temporary string).
void appendDecimal(std::string& out, std::uint64_t v);
// The same text written at out[0, kTimestampLength) (no NUL), without a temporary string.
void writeTimestamp(char* out, TimePoint t);

// Parses "YYYY-MM-DD HH:MM:SS" with an optional fraction of 1 to 9 digits (SentryPeer
// prints 6 to 9), also accepting 'T' as the separator and a trailing 'Z'. Read as UTC.
// Years outside 1900-2200 are refused (they would not fit the clock's range).
std::optional<TimePoint> parseTimestamp(std::string_view s);

// Parses a duration such as "0", "90", "90s", "15m", "12h", "7d", "2w" (a bare number is
// seconds). nullopt when malformed or out of range.
std::optional<std::chrono::seconds> parseDuration(std::string_view s);

// strerror(3) for errno values, thread-safe.
std::string errnoMessage(int err);

// The value of one hex digit (0-9, a-f, A-F), or -1.
int hexValue(char c);

// An API key or token as clients send it in a header or a URL path segment: 8 to 256
// characters from [A-Za-z0-9._~+=-] (no '/', no spaces, no control bytes).
bool validApiKey(std::string_view key);

} // namespace sp::core
