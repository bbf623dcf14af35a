// Single lookups: /ip-addresses/{ip} and /numbers/{number}, from the in-memory index.
#include <algorithm>
#include <arpa/inet.h>
#include <cstring>

#include "api/json_out.hpp"
#include "api/lookup_keys.hpp"
#include "api/routes.hpp"

namespace sp::api {

namespace {

bool validNumber(std::string_view n) {
    std::size_t start = !n.empty() && n[0] == '+' ? 1 : 0;
    return n.size() > start && n.size() <= kMaxNumberLength &&
           std::all_of(n.begin() + static_cast<std::ptrdiff_t>(start), n.end(),
                       [](char c) { return (c >= '0' && c <= '9') || c == '*' || c == '#'; });
}

// {"<found_key>": "<key>", "seen_count": "N", "seen_first": "...", "seen_last": "..."}, as
// JsonObject would write it, in one buffer.
Response found(std::string_view found_key, std::string_view key, const store::Seen& seen) {
    Response r;
    r.body.reserve(160 + key.size());
    r.body.push_back('{');
    core::appendJsonString(r.body, found_key);
    r.body.append(": ");
    core::appendJsonString(r.body, key);
    r.body.append(R"(, "seen_count": ")");
    core::appendDecimal(r.body, seen.count);
    r.body.append(R"(", "seen_first": ")");
    appendTimestamp(r.body, seen.first);
    r.body.append(R"(", "seen_last": ")");
    appendTimestamp(r.body, seen.last);
    r.body.append("\"}");
    return r;
}

} // namespace

Response Routes::ipAddress(const Request&, std::string_view ip) {
    char canonical[INET6_ADDRSTRLEN];
    if (!canonicalIp(ip, canonical)) {
        return invalid();
    }
    auto seen = index_.ip(canonical);
    if (!seen) {
        return message(404, "message", "No bad actor found");
    }
    return found("bad_actor_found", canonical, *seen);
}

Response Routes::number(const Request&, std::string_view n) {
    auto normalised = normaliseNumber(n);
    if (!validNumber(n) && !normalised) {
        return notFoundRoute();
    }
    auto snapshot = index_.snapshot();
    // SentryPeer's answer first: the number as stored, then '+' optional both ways
    // (+4420... finds 4420... and the other way round).
    if (validNumber(n)) {
        if (const auto* seen = snapshot->by_number.find(n)) {
            return found("phone_number_found", n, *seen);
        }
        char other[kMaxNumberLength + 1];
        std::string_view alt;
        if (n[0] == '+') {
            alt = n.substr(1);
        } else {
            other[0] = '+';
            std::copy(n.begin(), n.end(), other + 1);
            alt = std::string_view(other, n.size() + 1);
        }
        if (const auto* seen = snapshot->by_number.find(alt)) {
            return found("phone_number_found", alt, *seen);
        }
    }
    // Then any stored spelling of the same number (numbers.hpp): the first one found.
    std::string key;
    if (normalised) {
        if (auto seen = findNumber(snapshot->by_number, *normalised, &key)) {
            const auto* exact = snapshot->by_number.find(key);
            return found("phone_number_found", key, *exact);
        }
    }
    return message(404, "message", "No phone number found");
}

} // namespace sp::api
