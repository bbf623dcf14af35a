#pragma once
// Export formats of the list routes (internal to the API): ipset and nft scripts for
// firewalls, CSV of numbers. Pure functions of a Page; any thread.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "api/list.hpp"

namespace sp::api {

// The smallest timeout an export gives an entry: ipset's and nft's `timeout 0` means
// "never expires", which would ban an address about to be pruned forever.
inline constexpr std::uint64_t kMinExportTimeoutSeconds = 1;

// What remains of an entry's retention (max_age - its age), at least the floor.
std::uint64_t exportTimeout(std::chrono::seconds max_age, core::TimePoint now,
                            core::TimePoint last);

// [A-Za-z0-9_-]{1,28}: safe in a shell-free script, within ipset's name length.
bool validSetName(const std::string& s);

// `ipset restore -exist` script; timeouts when max_age > 0. Streamed.
Response ipsetExport(std::shared_ptr<Page> page, const std::string& set,
                     std::chrono::seconds max_age, core::TimePoint now);
// `nft -f` script: table inet <table> with sets <set> and <set>_v6.
Response nftExport(const Page& page, const std::string& table, const std::string& set,
                   std::chrono::seconds max_age, core::TimePoint now);
// RFC 4180 CSV of numbers (the page built with_first). Streamed.
Response csvExport(std::shared_ptr<Page> page);

// One CSV cell: quoted when needed; a cell starting with = + - @ TAB or CR (a formula
// to a spreadsheet) is prefixed with a single quote.
void appendCsvField(std::string& out, std::string_view s);

} // namespace sp::api
