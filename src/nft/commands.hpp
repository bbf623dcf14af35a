#pragma once
// The text of the nft transactions the blocker commits (pure: no I/O). Each string is one
// nft script that libnftables runs as one atomic transaction (all or nothing).
//
// What the table holds: sets `ipv4_addr` and `ipv6_addr` (flags timeout) and, unless
// set-only, a chain `input` (hook input, priority filter - 10) dropping and counting the
// sources in them.
//
// Element refresh: nft 1.0.6 does not refresh a timeout when an element is added again and
// has no `destroy`, and `delete element` of an element that is not there (it expired a moment
// ago) fails the whole transaction. So every element written after startup is written as
// "add (no-op when present) ; delete ; add with the new timeout" and every removal as
// "add ; delete": the first add makes the delete always valid.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sp::nft {

enum class Family : std::uint8_t { V4, V6 };

struct Address {
    Family family = Family::V4;
    std::string text; // canonical (inet_ntop), IPv4-mapped IPv6 given as IPv4
};

// The set element for an index key, or nullopt when the key is not an IP address (peer data
// is untrusted: nothing else may reach an nft script).
std::optional<Address> canonicalAddress(std::string_view ip);

// A table name nft accepts and this code never needs to quote: a letter, then letters,
// digits, '_' or '-', at most 64 characters.
bool validTableName(std::string_view name);

inline constexpr std::string_view kSetV4 = "ipv4_addr";
inline constexpr std::string_view kSetV6 = "ipv6_addr";
inline constexpr std::string_view kChain = "input";

struct Element {
    std::string addr;                            // canonical address text
    std::optional<std::chrono::seconds> timeout; // nullopt: no timeout (blocks never expire)
};

struct Elements {
    std::vector<Element> v4, v6;
    std::size_t size() const { return v4.size() + v6.size(); }
};

// Startup (and restart), one transaction. Default mode: the table is the blocker's own and
// is replaced whole, sets filled ("add table; delete table; table {...}; add element ..."):
// a table left by a previous run (--nft-keep, or a crash) is swapped for the new one with no
// moment without blocks. Set-only: the table may hold the operator's chains, so only the
// sets are created if missing and their contents replaced ("add table; add set; flush set;
// add element ..."); nothing else in the table is touched.
std::string startupScript(std::string_view table, bool set_only, const Elements& elements);

// Resync (subscription resync, allow list reloaded, a failed batch): flushes both sets and
// fills them again, in one transaction; the chain and its counters stay.
std::string resyncScript(std::string_view table, const Elements& elements);

// One batch: `put` elements are written with their (new) timeout whether or not present
// (add; delete; add), `remove` elements are taken out whether or not still present (add;
// delete). Empty string when there is nothing to do.
std::string batchScript(std::string_view table, const Elements& put,
                        const std::vector<Address>& remove);

// Exit without --nft-keep: removes the table if it exists; set-only: empties the two sets
// (the operator's rules reference them, and the table is theirs too).
std::string exitScript(std::string_view table, bool set_only);

} // namespace sp::nft
