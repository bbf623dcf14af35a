// APIBAN-compatible routes: GET /api/{KEY}/banned[/{ID}] and GET /api/{KEY}/check/{IP}
// (apiban.hpp for the ID; docs/APIBAN.md for the protocol). Runs on the slow-route thread
// (a page walks the whole index snapshot).
#include "api/apiban.hpp"

#include <algorithm>
#include <vector>

#include "api/json_out.hpp"
#include "api/lookup_keys.hpp"
#include "api/routes.hpp"
#include "core/json.hpp"

namespace sp::api {

namespace apiban {

namespace {
__extension__ using U128 = unsigned __int128; // GCC and clang: 128-bit arithmetic

// Writes v as exactly `digits` decimal digits (zero-padded) at the end of out.
void appendPadded(std::string& out, U128 v, std::size_t digits) {
    std::size_t at = out.size();
    out.resize(at + digits, '0');
    for (std::size_t i = digits; i > 0 && v != 0; --i) {
        out[at + i - 1] = static_cast<char>('0' + static_cast<int>(v % 10));
        v /= 10;
    }
}
} // namespace

std::string encodeId(const BanCursor& c) {
    U128 address = 0;
    for (auto b : c.address) {
        address = (address << 8) | b;
    }
    std::string id;
    id.reserve(kIdDigits);
    appendPadded(id, c.last_us, kTimeDigits);
    appendPadded(id, address, kAddressDigits);
    return id;
}

ParsedId parseId(std::string_view id) {
    if (id.size() > kIdDigits ||
        !std::all_of(id.begin(), id.end(), [](char ch) { return ch >= '0' && ch <= '9'; })) {
        return {IdKind::Invalid, {}};
    }
    if (id.size() != kIdDigits) {
        return {IdKind::Start, {}};
    }
    ParsedId p{IdKind::After, {}};
    for (std::size_t i = 0; i < kTimeDigits; ++i) {
        p.after.last_us = p.after.last_us * 10 + static_cast<std::uint64_t>(id[i] - '0');
    }
    U128 address = 0;
    constexpr U128 kMax = ~U128{0};
    for (std::size_t i = kTimeDigits; i < kIdDigits; ++i) {
        auto digit = static_cast<unsigned>(id[i] - '0');
        if (address > (kMax - digit) / 10) {
            return {IdKind::Invalid, {}}; // over 2^128 - 1
        }
        address = address * 10 + digit;
    }
    for (std::size_t i = 16; i > 0; --i) {
        p.after.address[i - 1] = static_cast<std::uint8_t>(address & 0xff);
        address >>= 8;
    }
    return p;
}

std::string bannedBody(const std::string& addresses_json_list, const std::string& id) {
    return R"({"ipaddress":)" + addresses_json_list + R"(, "ID":")" + id + "\"}";
}

} // namespace apiban

namespace {
std::uint64_t microseconds(core::TimePoint t) {
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
    return us < 0 ? 0 : static_cast<std::uint64_t>(us);
}

Response apibanAnswer(int status, std::string_view body) {
    Response r;
    r.status = status;
    r.body.assign(body);
    return r;
}
} // namespace

Response Routes::apiban(const Request&, std::string_view rest) {
    using namespace apiban;
    // rest: KEY/banned, KEY/banned/ID or KEY/check/IP.
    auto slash = rest.find('/');
    std::string_view key = rest.substr(0, slash);
    if (!options_.bouncer_keys || !options_.bouncer_keys->find(key)) {
        return apibanAnswer(403, kUnauthorized);
    }
    std::string_view tail =
        slash == std::string_view::npos ? std::string_view{} : rest.substr(slash + 1);
    if (tail == "banned" || tail.starts_with("banned/")) {
        return apibanBanned(tail.size() > 7 ? tail.substr(7) : std::string_view{});
    }
    if (tail.starts_with("check/")) {
        return apibanCheck(tail.substr(6));
    }
    return apibanAnswer(404, kNotFound);
}

bool Routes::apibanIsLookup(std::string_view rest) {
    auto slash = rest.find('/');
    return slash != std::string_view::npos && rest.substr(slash + 1).starts_with("check/");
}

Response Routes::apibanBanned(std::string_view id) {
    using namespace apiban;
    ParsedId from = parseId(id);
    if (from.kind == IdKind::Invalid) {
        return apibanAnswer(400, kInvalidId);
    }
    auto snapshot = index_.snapshot();
    auto now = clock_.now();
    struct Item {
        BanCursor cursor;
        std::string_view ip;
    };
    // A max-heap of the kPageSize smallest (last seen, address) after the cursor.
    std::vector<Item> page;
    page.reserve(kPageSize + 1);
    auto less = [](const Item& a, const Item& b) { return a.cursor < b.cursor; };
    for (const auto& [ip, seen] : snapshot->by_ip) {
        auto address = block::parseAddress(ip);
        if (!address) {
            continue;
        }
        BanCursor c{microseconds(seen.last), *address};
        if ((from.kind == IdKind::After && c <= from.after) ||
            (page.size() == kPageSize && !(c < page.front().cursor))) {
            continue;
        }
        if (!policy_->decide(ip, block::Evidence{seen.local, seen.peer, seen.reporters}, seen.last,
                             now)) {
            continue;
        }
        if (page.size() == kPageSize) {
            std::pop_heap(page.begin(), page.end(), less);
            page.pop_back();
        }
        page.push_back({c, ip});
        std::push_heap(page.begin(), page.end(), less);
    }
    if (page.empty()) {
        return apibanAnswer(400, kNoNewBans);
    }
    std::sort_heap(page.begin(), page.end(), less);
    std::string list = "[";
    for (const auto& item : page) {
        if (list.size() > 1) {
            list.push_back(',');
        }
        core::appendJsonString(list, item.ip);
    }
    list.push_back(']');
    return json(200, bannedBody(list, encodeId(page.back().cursor)));
}

Response Routes::apibanCheck(std::string_view ip) {
    using namespace apiban;
    char canonical[INET6_ADDRSTRLEN];
    if (!canonicalIp(ip, canonical)) {
        return apibanAnswer(400, kInvalidAddress);
    }
    auto seen = index_.ip(canonical);
    if (!seen ||
        !policy_->decide(canonical, block::Evidence{seen->local, seen->peer, seen->reporters},
                         seen->last, clock_.now())) {
        return apibanAnswer(400, kNotBlocked);
    }
    BanCursor c{microseconds(seen->last), *block::parseAddress(canonical)};
    std::string list = "[";
    core::appendJsonString(list, canonical);
    list.push_back(']');
    return json(200, bannedBody(list, encodeId(c)));
}

} // namespace sp::api
