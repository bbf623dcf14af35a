#include "decisions/format.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cctype>
#include <cstring>

#include "core/json.hpp"
#include "core/text.hpp"

namespace sp::decisions {

namespace {

// Go's fmtFrac: the fraction of v / 10^prec without trailing zeros (no '.' when it is 0),
// prepended to `out`; returns v / 10^prec.
std::uint64_t prependFraction(std::string& out, std::uint64_t v, int prec) {
    std::string digits;
    bool print = false;
    for (int i = 0; i < prec; ++i) {
        auto digit = static_cast<char>('0' + v % 10);
        print = print || digit != '0';
        if (print) {
            digits.insert(digits.begin(), digit);
        }
        v /= 10;
    }
    if (print) {
        out.insert(0, "." + digits);
    }
    return v;
}

void prependInt(std::string& out, std::uint64_t v) {
    out.insert(0, std::to_string(v));
}

std::string lower(std::string_view s) {
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return out;
}

std::vector<std::string> splitComma(std::string_view s) {
    std::vector<std::string> out;
    std::size_t start = 0;
    while (true) {
        auto comma = s.find(',', start);
        out.emplace_back(s.substr(start, comma == std::string_view::npos ? s.npos : comma - start));
        if (comma == std::string_view::npos) {
            return out;
        }
        start = comma + 1;
    }
}

// Go's strconv.ParseBool.
std::optional<bool> parseGoBool(std::string_view s) {
    for (std::string_view t : {"1", "t", "T", "TRUE", "true", "True"}) {
        if (s == t) {
            return true;
        }
    }
    for (std::string_view f : {"0", "f", "F", "FALSE", "false", "False"}) {
        if (s == f) {
            return false;
        }
    }
    return std::nullopt;
}

// An address in its own family: IPv4 as 4 bytes (also when written IPv4-mapped, as Go's
// To4() reads it), IPv6 as 16.
std::optional<Filter::Range> parseAddr(std::string_view text) {
    std::string s(text);
    Filter::Range r;
    in_addr a4{};
    in6_addr a6{};
    if (inet_pton(AF_INET, s.c_str(), &a4) == 1) {
        std::memcpy(r.addr.data(), &a4, 4);
        r.v4 = true;
        r.len = 32;
        return r;
    }
    if (inet_pton(AF_INET6, s.c_str(), &a6) == 1) {
        std::memcpy(r.addr.data(), &a6, 16);
        static constexpr std::array<std::uint8_t, 12> kMapped = {0, 0, 0, 0, 0,    0,
                                                                 0, 0, 0, 0, 0xff, 0xff};
        if (std::equal(kMapped.begin(), kMapped.end(), r.addr.begin())) {
            std::memmove(r.addr.data(), r.addr.data() + 12, 4);
            std::fill(r.addr.begin() + 4, r.addr.end(), 0);
            r.v4 = true;
            r.len = 32;
            return r;
        }
        r.len = 128;
        return r;
    }
    return std::nullopt;
}

// "a.b.c.d", "a.b.c.d/n", "v6", "v6/n" (Addr2Ints accepts an address or a CIDR).
std::optional<Filter::Range> parseRange(std::string_view text) {
    auto slash = text.find('/');
    auto r = parseAddr(text.substr(0, slash));
    if (!r || slash == std::string_view::npos) {
        return r;
    }
    std::string_view bits = text.substr(slash + 1);
    unsigned max = r->v4 ? 32 : 128;
    if (bits.empty() || bits.size() > 3 ||
        !std::all_of(bits.begin(), bits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        return std::nullopt;
    }
    unsigned len = static_cast<unsigned>(std::stoul(std::string(bits)));
    if (len > max) {
        return std::nullopt;
    }
    r->len = len;
    // The network: host bits cleared (Go's ParseCIDR gives the network too).
    for (unsigned i = len; i < max; ++i) {
        r->addr[i / 8] = static_cast<std::uint8_t>(r->addr[i / 8] & ~(0x80U >> (i % 8)));
    }
    return r;
}

bool inRange(const Filter::Range& outer, const Filter::Range& addr) {
    if (outer.v4 != addr.v4) {
        return false;
    }
    for (unsigned i = 0; i < outer.len; ++i) {
        unsigned bit = 0x80U >> (i % 8);
        if ((outer.addr[i / 8] & bit) != (addr.addr[i / 8] & bit)) {
            return false;
        }
    }
    return true;
}

bool containsFold(std::string_view haystack, std::string_view needle) {
    return lower(haystack).find(lower(needle)) != std::string::npos;
}

} // namespace

std::string formatGoDuration(std::chrono::nanoseconds d) {
    if (d.count() == 0) {
        return "0s";
    }
    const bool neg = d.count() < 0;
    std::uint64_t u =
        neg ? 0 - static_cast<std::uint64_t>(d.count()) : static_cast<std::uint64_t>(d.count());
    std::string out;
    constexpr std::uint64_t kSecond = 1'000'000'000;
    if (u < kSecond) {
        // Under a second: ns, µs or ms with a fraction ("1.5ms").
        int prec = 0;
        if (u < 1000) {
            out = "ns";
        } else if (u < 1'000'000) {
            prec = 3;
            out = "\xC2\xB5s"; // U+00B5, as Go writes it
        } else {
            prec = 6;
            out = "ms";
        }
        u = prependFraction(out, u, prec);
        prependInt(out, u);
    } else {
        out = "s";
        u = prependFraction(out, u, 9);
        prependInt(out, u % 60);
        u /= 60;
        if (u > 0) {
            out.insert(0, "m");
            prependInt(out, u % 60);
            u /= 60;
            if (u > 0) {
                out.insert(0, "h");
                prependInt(out, u);
            }
        }
    }
    if (neg) {
        out.insert(0, "-");
    }
    return out;
}

std::string_view scenarioName(Scenario s) {
    return s == Scenario::SipProbe ? "sentrypeer/sip-probe" : "sentrypeer/p2p";
}

void appendDecision(std::string& out, std::string_view ip, const Decision& d, core::TimePoint now,
                    bool positive) {
    auto left = std::chrono::duration_cast<std::chrono::seconds>(d.until - now);
    if (positive && left < std::chrono::seconds(1)) {
        left = std::chrono::seconds(1);
    }
    out.append(R"({"id":)");
    core::appendDecimal(out, d.id);
    out.append(R"(,"origin":"sentrypeer","type":"ban","scope":"Ip","value":)");
    core::appendJsonString(out, ip);
    out.append(R"(,"duration":")");
    out.append(formatGoDuration(left));
    out.append(R"(","scenario":")");
    out.append(scenarioName(d.scenario));
    out.append(R"(","simulated":false})");
}

bool isLiteralIp(std::string_view s) {
    if (s.empty() || s.size() > 45) {
        return false;
    }
    std::string text(s);
    in6_addr a6{};
    in_addr a4{};
    return inet_pton(AF_INET, text.c_str(), &a4) == 1 ||
           inet_pton(AF_INET6, text.c_str(), &a6) == 1;
}

std::optional<Filter> Filter::parse(const Query& q, bool stream, std::string* error) {
    Filter f;
    auto get = [&q](const char* key) -> const std::string* {
        auto it = q.find(key);
        return it == q.end() ? nullptr : &it->second;
    };
    auto scopes = get("scopes");
    std::string default_scopes = "ip,range";
    if (scopes == nullptr && stream) {
        scopes = &default_scopes;
    }
    for (const std::string* s : {scopes, get("scope")}) {
        if (s != nullptr) {
            auto list = splitComma(*s);
            f.scope_ip_ = f.scope_ip_ && std::any_of(list.begin(), list.end(), [](const auto& x) {
                              return lower(x) == "ip";
                          });
        }
    }
    if (const auto* v = get("value")) {
        f.value_ = *v;
    }
    if (const auto* t = get("type")) {
        f.type_ok_ = *t == "ban";
    }
    if (const auto* o = get("origins")) {
        f.origins_ = splitComma(*o);
    }
    if (const auto* c = get("scenarios_containing")) {
        f.containing_ = splitComma(*c);
    }
    if (const auto* c = get("scenarios_not_containing")) {
        f.not_containing_ = splitComma(*c);
    }
    if (const auto* c = get("contains")) {
        auto b = parseGoBool(*c);
        if (!b) {
            if (error != nullptr) {
                *error = "invalid contains value : strconv.ParseBool: parsing \"" + *c +
                         "\": invalid syntax";
            }
            return std::nullopt;
        }
        f.contains_ = *b;
    }
    const std::string* where = get("ip");
    if (where == nullptr) {
        where = get("range");
    }
    if (where != nullptr) {
        f.range_ = parseRange(*where);
        if (!f.range_) {
            if (error != nullptr) {
                *error = "unable to convert '" + *where + "' to int: invalid address";
            }
            return std::nullopt;
        }
        if (f.contains_ && f.range_->len == (f.range_->v4 ? 32U : 128U)) {
            char text[INET6_ADDRSTRLEN] = {};
            inet_ntop(f.range_->v4 ? AF_INET : AF_INET6, f.range_->addr.data(), text, sizeof text);
            f.exact_ip_ = std::string(text);
        }
    }
    return f;
}

bool Filter::matches(std::string_view ip, Scenario scenario) const {
    if (!scope_ip_ || !type_ok_) {
        return false;
    }
    if (value_ && *value_ != ip) {
        return false;
    }
    if (origins_ && std::find(origins_->begin(), origins_->end(), kOrigin) == origins_->end()) {
        return false;
    }
    std::string_view name = scenarioName(scenario);
    if (containing_ && std::none_of(containing_->begin(), containing_->end(),
                                    [&](const auto& w) { return containsFold(name, w); })) {
        return false;
    }
    if (not_containing_ && std::any_of(not_containing_->begin(), not_containing_->end(),
                                       [&](const auto& w) { return containsFold(name, w); })) {
        return false;
    }
    if (range_) {
        auto addr = parseAddr(ip);
        if (!addr) {
            return false;
        }
        if (contains_) {
            // The decision (one address) contains the queried range: the range is that
            // address.
            return range_->len == (range_->v4 ? 32U : 128U) && inRange(*range_, *addr);
        }
        return inRange(*range_, *addr); // the decision lies within the range
    }
    return true;
}

} // namespace sp::decisions
