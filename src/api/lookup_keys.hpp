#pragma once
// The index's key forms for lookups: an IP address's canonical text, and called-number
// normalisation: the one rule every number lookup applies (GET
// /numbers/{number} after its exact match, POST /numbers/check, --allow-number), so that
// +44 20 7946 0000, 0044 20 7946 0000, 442079460000 and 011 44 20 7946 0000 are one number.
// Stored data stays raw (SentryPeer's JSON shows the number as it was dialled); lookups
// normalise and probe the index for every stored spelling of the normalised form
// (numberSpellings). docs/API.md "Called-number normalisation" states the rule.
//
// Threads: pure functions, any thread.

#include <arpa/inet.h>
#include <array>
#include <optional>
#include <string>
#include <string_view>

#include "store/index.hpp"

namespace sp::api {

inline constexpr std::size_t kMaxNumberLength = 64;

// Writes the canonical printable form of an IP address into text (NUL-terminated): the
// index's form, so that any spelling finds it: IPv6 compressed and lower case, an
// IPv4-mapped IPv6 address (::ffff:192.0.2.1) as plain IPv4. False when s is not one.
bool canonicalIp(std::string_view s, char (&text)[INET6_ADDRSTRLEN]);

// The normalised form of a dialled number, or nullopt when it is not one:
//  1. visual separators (space, '-', '.', '(', ')', '/') are removed;
//  2. a leading '+' is removed (what follows is the international number);
//     else a leading international prefix "00" is removed;
//     else a leading "011" (North America's international prefix) is removed when at least
//     9 characters follow it (so UK national numbers 0113..0118 + 8 digits stay whole);
//  3. what remains must be 1..64 characters of 0-9, '*' and '#'.
// National numbers (a single leading 0, e.g. 020 7946 0000) are kept as they are: the
// caller's country is unknown, so no country code can be added, and dropping the 0 would
// merge numbers of different countries.
std::optional<std::string> normaliseNumber(std::string_view dialled);

// The stored spellings that normalise to `normalised` (its output): itself, "+" N, "00" N
// and, when the rule strips it, "011" N. Probing the index for these finds every stored
// number (stored numbers have no separators) that is the same number. `count` of them.
struct NumberSpellings {
    std::array<std::string, 4> forms;
    std::size_t count = 0;
};
NumberSpellings numberSpellings(const std::string& normalised);

// Every stored spelling of a normalised number in `map`, merged: counts added, earliest
// first, latest last, the most reporters of any one spelling. `found_key`: the first
// spelling found (in numberSpellings order). nullopt when none is stored.
std::optional<store::Seen> findNumber(const store::KeyMap& map, const std::string& normalised,
                                      std::string* found_key = nullptr);

} // namespace sp::api
