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

namespace {
// Calls probe(spelling) for each stored spelling of a normalised number, in
// numberSpellings order, with no allocation. Which prefixed forms read back as N follows
// from the rule: "+" N and "00" N always; "011" N when N has kMinAfter011 characters; N
// itself unless it starts with a prefix the rule would strip.
template <typename F> void forEachSpelling(std::string_view n, F&& probe) {
    if (!n.starts_with("00") && !(n.starts_with("011") && n.size() >= 3 + kMinAfter011)) {
        probe(n);
    }
    char buf[3 + kMaxNumberLength];
    auto with = [&](std::string_view prefix) {
        std::copy(prefix.begin(), prefix.end(), buf);
        std::copy(n.begin(), n.end(), buf + prefix.size());
        probe(std::string_view(buf, prefix.size() + n.size()));
    };
    with("+");
    with("00");
    if (n.size() >= kMinAfter011) {
        with("011");
    }
}
} // namespace

NumberSpellings numberSpellings(const std::string& normalised) {
    NumberSpellings s;
    if (normalised.size() <= kMaxNumberLength) {
        forEachSpelling(normalised, [&s](std::string_view form) { s.forms[s.count++] = form; });
    }
    return s;
}

std::optional<store::Seen> findNumber(const store::KeyMap& map, const std::string& normalised,
                                      std::string* found_key) {
    std::optional<store::Seen> all;
    if (normalised.size() > kMaxNumberLength) {
        return all;
    }
    forEachSpelling(normalised, [&](std::string_view form) {
        const store::Seen* s = map.find(form);
        if (s == nullptr) {
            return;
        }
        if (!all) {
            all = *s;
            if (found_key != nullptr) {
                found_key->assign(form);
            }
            return;
        }
        all->count += s->count;
        all->local += s->local;
        all->peer += s->peer;
        all->reporters = std::max(all->reporters, s->reporters);
        all->first = std::min(all->first, s->first);
        all->last = std::max(all->last, s->last);
    });
    return all;
}

} // namespace sp::api
