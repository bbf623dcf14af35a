#include "api/lookup_keys.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cstring>

namespace sp::api {

namespace {

bool separator(char c) {
    return c == ' ' || c == '-' || c == '.' || c == '(' || c == ')' || c == '/';
}

bool dialChar(char c) {
    return (c >= '0' && c <= '9') || c == '*' || c == '#';
}

// At least this many characters after "011" for it to be read as the international prefix.
constexpr std::size_t kMinAfter011 = 9;

} // namespace

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

std::optional<std::string> normaliseNumber(std::string_view dialled) {
    if (dialled.size() > 4 * kMaxNumberLength) {
        return std::nullopt; // separators or not, far too long to be a number
    }
    std::string n;
    n.reserve(dialled.size());
    for (char c : dialled) {
        if (!separator(c)) {
            n.push_back(c);
        }
    }
    std::string_view v = n;
    if (v.starts_with('+')) {
        v.remove_prefix(1);
    } else if (v.starts_with("00")) {
        v.remove_prefix(2);
    } else if (v.starts_with("011") && v.size() >= 3 + kMinAfter011) {
        v.remove_prefix(3);
    }
    if (v.empty() || v.size() > kMaxNumberLength || !std::all_of(v.begin(), v.end(), dialChar)) {
        return std::nullopt;
    }
    return std::string(v);
}

NumberSpellings numberSpellings(const std::string& normalised) {
    NumberSpellings s;
    for (const char* prefix : {"", "+", "00", "011"}) {
        std::string form = prefix + normalised;
        // Only spellings the rule reads back as this number ("00" N is N again unless N
        // itself starts a prefix, "011" N needs enough digits after it).
        if (normaliseNumber(form) == normalised) {
            s.forms[s.count++] = std::move(form);
        }
    }
    return s;
}

std::optional<store::Seen> findNumber(const store::KeyMap& map, const std::string& normalised,
                                      std::string* found_key) {
    std::optional<store::Seen> all;
    auto spellings = numberSpellings(normalised);
    for (std::size_t i = 0; i < spellings.count; ++i) {
        const store::Seen* s = map.find(spellings.forms[i]);
        if (s == nullptr) {
            continue;
        }
        if (!all) {
            all = *s;
            if (found_key != nullptr) {
                *found_key = spellings.forms[i];
            }
            continue;
        }
        all->count += s->count;
        all->local += s->local;
        all->peer += s->peer;
        all->reporters = std::max(all->reporters, s->reporters);
        all->first = std::min(all->first, s->first);
        all->last = std::max(all->last, s->last);
    }
    return all;
}

} // namespace sp::api
