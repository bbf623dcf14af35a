#pragma once
// APIBAN-compatible list (docs/APIBAN.md): GET /api/{KEY}/banned[/{ID}] and
// GET /api/{KEY}/check/{IP}, keyed by the bouncer key list. Here: the stateless cursor
// that an ID is, and the exact bodies, for the handlers (apiban.cpp) and their tests.
//
// An ID is 56 decimal digits: the last-seen time of the last address served, in
// microseconds since 1970 (17 digits, zero-padded), then that address as a 128-bit number
// (IPv4 as ::ffff:a.b.c.d; 39 digits, zero-padded). The next page lists the blocked
// addresses ordered by (last seen, address) after it, so an address seen again after it was
// served comes again (its block was refreshed). Every other all-digit ID (APIBAN's clients
// start with "100") means "from the start"; an ID with anything but digits, or longer than
// 56 digits, is refused. Threads: pure functions, any thread.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sp::api::apiban {

inline constexpr std::size_t kPageSize = 250;     // APIBAN's batch
inline constexpr std::size_t kTimeDigits = 17;    // µs since 1970, up to year 5138
inline constexpr std::size_t kAddressDigits = 39; // 2^128 - 1 has 39 digits
inline constexpr std::size_t kIdDigits = kTimeDigits + kAddressDigits;

// Where a page starts after: (last seen in µs, the address's 16 bytes).
struct BanCursor {
    std::uint64_t last_us = 0;
    std::array<std::uint8_t, 16> address{};
    // NOLINTNEXTLINE(modernize-use-nullptr): clang-tidy 14 flags a defaulted <=>
    auto operator<=>(const BanCursor&) const = default;
};

std::string encodeId(const BanCursor& c);

enum class IdKind { Start, After, Invalid };
struct ParsedId {
    IdKind kind = IdKind::Start;
    BanCursor after; // with IdKind::After
};
// "" (no ID) and all-digit IDs that are not 56 digits: Start; 56 digits: After (Invalid if
// the address part is over 2^128 - 1); anything else: Invalid.
ParsedId parseId(std::string_view id);

// The bodies, byte for byte as APIBAN sends them.
std::string bannedBody(const std::string& addresses_json_list, const std::string& id);
inline constexpr std::string_view kNoNewBans = R"({"ipaddress":["no new bans"], "ID":"none"})";
inline constexpr std::string_view kNotBlocked = R"({"ipaddress":["not blocked"], "ID":"none"})";
inline constexpr std::string_view kInvalidAddress =
    R"({"ipaddress":["invalid address"], "ID":"none"})";
inline constexpr std::string_view kInvalidId = R"({"ipaddress":["invalid ID"], "ID":"none"})";
inline constexpr std::string_view kUnauthorized = R"({"ipaddress":"none", "ID":"unauthorized"})";
inline constexpr std::string_view kNotFound = R"({"ipaddress":"none", "ID":"not found"})";

} // namespace sp::api::apiban
