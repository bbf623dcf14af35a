// Single lookups: /ip-addresses/{ip} and /numbers/{number}, from the in-memory index.
#include <algorithm>
#include <arpa/inet.h>
#include <cstring>

#include "api/json_out.hpp"
#include "api/routes.hpp"

namespace sp::api {

namespace {

constexpr std::size_t kMaxNumberLength = 64;

// Writes the canonical printable form of an IP address into text (NUL-terminated): the
// index's form, so that any spelling finds it: IPv6 compressed and lower case, an
// IPv4-mapped IPv6 address (::ffff:192.0.2.1) as plain IPv4. False when s is not one.
bool canonicalIp(std::string_view s, char (&text)[INET6_ADDRSTRLEN]) {
    unsigned char buf[16];
    char z[INET6_ADDRSTRLEN];
    if (s.size() >= sizeof z) {
        return false;
    }
    std::copy(s.begin(), s.end(), z);
    z[s.size()] = '\0';
    if (s.find(':') == std::string_view::npos) {
        return inet_pton(AF_INET, z, buf) == 1 &&
               inet_ntop(AF_INET, buf, text, sizeof text) != nullptr;
    }
    if (inet_pton(AF_INET6, z, buf) != 1) {
        return false;
    }
    static constexpr unsigned char kV4Mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (std::memcmp(buf, kV4Mapped, sizeof kV4Mapped) == 0) {
        return inet_ntop(AF_INET, buf + 12, text, sizeof text) != nullptr;
    }
    return inet_ntop(AF_INET6, buf, text, sizeof text) != nullptr;
}

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
    if (!validNumber(n)) {
        return notFoundRoute();
    }
    // '+' is optional both ways: +4420... finds 4420... and the other way round.
    if (auto seen = index_.number(n)) {
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
    if (auto seen = index_.number(alt)) {
        return found("phone_number_found", alt, *seen);
    }
    return message(404, "message", "No phone number found");
}

} // namespace sp::api
