#include "block/policy.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <stdexcept>
#include <unordered_set>
#include <utility>

#include "core/text.hpp"

namespace sp::block {

namespace {

using Bytes = std::array<std::uint8_t, 16>;

// The built-in never-block list (IPv4 entries also match their ::ffff:0:0/96 forms).
constexpr std::array<const char*, 9> kBuiltIn = {
    "127.0.0.0/8",        // loopback
    "::1/128",            // loopback
    "0.0.0.0/32",         // unspecified
    "::/128",             // unspecified
    "224.0.0.0/4",        // multicast
    "ff00::/8",           // multicast
    "169.254.0.0/16",     // link-local
    "fe80::/10",          // link-local
    "255.255.255.255/32", // broadcast
};

std::string_view trim(std::string_view s) {
    const char* ws = " \t\r\n";
    auto b = s.find_first_not_of(ws);
    if (b == std::string_view::npos) {
        return {};
    }
    return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

Bytes masked(const Bytes& a, unsigned len) {
    Bytes out{};
    for (unsigned i = 0; i < 16; ++i) {
        if (len >= (i + 1) * 8) {
            out[i] = a[i];
        } else if (len > i * 8) {
            auto keep = static_cast<unsigned>(0xff00U >> (len - i * 8)) & 0xffU;
            out[i] = static_cast<std::uint8_t>(a[i] & keep);
        }
    }
    return out;
}

bool isMappedV4(const Bytes& a) {
    static constexpr Bytes kMapped{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0};
    return std::equal(a.begin(), a.begin() + 12, kMapped.begin());
}

std::string format(const Bytes& a, unsigned len) {
    char buf[INET6_ADDRSTRLEN];
    if (isMappedV4(a) && len >= 96) {
        inet_ntop(AF_INET, a.data() + 12, buf, sizeof buf);
        return std::string(buf) + "/" + std::to_string(len - 96);
    }
    inet_ntop(AF_INET6, a.data(), buf, sizeof buf);
    return std::string(buf) + "/" + std::to_string(len);
}

struct Key {
    std::uint64_t hi = 0, lo = 0;
    bool operator==(const Key&) const = default;
};

struct KeyHash {
    std::size_t operator()(const Key& k) const noexcept {
        std::uint64_t h = k.hi * 0x9e3779b97f4a7c15ULL ^ (k.lo + 0x632be59bd9b4e019ULL);
        h ^= h >> 29;
        return static_cast<std::size_t>(h * 0xbf58476d1ce4e5b9ULL);
    }
};

constexpr Key kMappedBase{0, 0xffff00000000ULL}; // ::ffff:0:0, the IPv4-mapped prefix

Key toKey(const Bytes& a) {
    Key k;
    for (std::size_t i = 0; i < 8; ++i) {
        k.hi = (k.hi << 8) | a[i];
        k.lo = (k.lo << 8) | a[i + 8];
    }
    return k;
}

} // namespace

std::optional<Bytes> parseAddress(std::string_view text) {
    text = trim(text);
    if (text.empty() || text.size() >= INET6_ADDRSTRLEN ||
        text.find('\0') != std::string_view::npos) {
        return std::nullopt;
    }
    char s[INET6_ADDRSTRLEN];
    std::memcpy(s, text.data(), text.size());
    s[text.size()] = '\0';
    Bytes out{};
    if (text.find(':') != std::string_view::npos) {
        if (inet_pton(AF_INET6, s, out.data()) != 1) {
            return std::nullopt;
        }
        return out;
    }
    out[10] = 0xff;
    out[11] = 0xff;
    if (inet_pton(AF_INET, s, out.data() + 12) != 1) {
        return std::nullopt;
    }
    return out;
}

std::optional<Prefix> parseCidr(std::string_view text, std::string* error) {
    auto fail = [&](std::string why) -> std::optional<Prefix> {
        if (error != nullptr) {
            *error = std::move(why);
        }
        return std::nullopt;
    };
    text = trim(text);
    auto slash = text.find('/');
    auto addr = parseAddress(text.substr(0, slash));
    if (!addr || trim(text.substr(0, slash)).size() != text.substr(0, slash).size()) {
        return fail("not an IPv4 or IPv6 address");
    }
    bool v4 = text.substr(0, slash).find(':') == std::string_view::npos;
    unsigned max = v4 ? 32 : 128;
    unsigned bits = max;
    if (slash != std::string_view::npos) {
        auto m = text.substr(slash + 1);
        if (m.empty() || m.size() > 3 ||
            !std::all_of(m.begin(), m.end(), [](char c) { return c >= '0' && c <= '9'; })) {
            return fail("the prefix length is not a number");
        }
        bits = 0;
        for (char c : m) {
            bits = bits * 10 + static_cast<unsigned>(c - '0');
        }
        if (bits > max) {
            return fail("the prefix length is more than " + std::to_string(max));
        }
    }
    Prefix p;
    p.len = v4 ? bits + 96 : bits;
    p.addr = masked(*addr, p.len);
    if (p.addr != *addr) {
        return fail("host bits are set (the network is " + format(p.addr, p.len) + ")");
    }
    return p;
}

// Prefixes grouped by length: a lookup masks the address once per distinct length and asks
// one hash set, so the cost does not grow with the number of entries.
// Prefixes grouped by length: a lookup masks the address once per distinct length (two
// ANDs) and asks one hash set, so the cost does not grow with the number of entries. Groups
// that cannot hold an address of the looked-up kind (IPv4-mapped or not) are skipped.
struct Policy::Lists {
    struct Group {
        unsigned len = 0;
        Key mask;
        bool v4 = false; // holds a prefix that overlaps ::ffff:0:0/96
        bool v6 = false; // holds a prefix that overlaps the rest
        std::unordered_set<Key, KeyHash> keys;
    };
    std::vector<Group> groups;
    std::size_t builtin = 0, own = 0, allow = 0;

    static Key maskOf(unsigned len) {
        Key m;
        m.hi = len >= 64 ? ~0ULL : (len == 0 ? 0 : ~0ULL << (64 - len));
        m.lo = len >= 128 ? ~0ULL : (len <= 64 ? 0 : ~0ULL << (128 - len));
        return m;
    }
    static Key apply(const Key& k, const Key& m) { return Key{k.hi & m.hi, k.lo & m.lo}; }

    void add(const Prefix& p) {
        auto it = std::find_if(groups.begin(), groups.end(),
                               [&](const Group& g) { return g.len == p.len; });
        if (it == groups.end()) {
            Group g;
            g.len = p.len;
            g.mask = maskOf(p.len);
            groups.push_back(std::move(g));
            it = std::prev(groups.end());
        }
        Key k = toKey(p.addr);
        Key m96 = maskOf(std::min(p.len, 96U));
        bool overlaps_v4 = apply(kMappedBase, m96) == apply(k, m96);
        it->v4 = it->v4 || overlaps_v4;
        it->v6 = it->v6 || !(overlaps_v4 && p.len >= 96);
        it->keys.insert(k);
    }

    bool contains(const Bytes& a) const {
        Key k = toKey(a);
        bool mapped = isMappedV4(a);
        for (const auto& g : groups) {
            if ((mapped ? g.v4 : g.v6) && g.keys.contains(apply(k, g.mask))) {
                return true;
            }
        }
        return false;
    }
};

Policy::Policy(PolicyOptions o) : o_(std::move(o)), lists_(build()) {}

Policy::~Policy() = default;

std::shared_ptr<const Policy::Lists> Policy::build() const {
    auto l = std::make_shared<Lists>();
    std::string why;
    for (const char* b : kBuiltIn) {
        l->add(*parseCidr(b));
        ++l->builtin;
    }
    for (const auto& a : o_.extra_own_addresses) {
        auto p = parseCidr(a, &why);
        if (!p) {
            throw std::runtime_error(
                std::string("own address '").append(a).append("' is not an address: ").append(why));
        }
        l->add(*p);
        ++l->own;
    }
    if (o_.include_own_addresses) {
        ifaddrs* ifs = nullptr;
        if (getifaddrs(&ifs) == 0) {
            for (auto* i = ifs; i != nullptr; i = i->ifa_next) {
                if (i->ifa_addr == nullptr) {
                    continue;
                }
                Prefix p;
                if (i->ifa_addr->sa_family == AF_INET) {
                    const auto* sin = reinterpret_cast<const sockaddr_in*>(i->ifa_addr);
                    p.addr[10] = p.addr[11] = 0xff;
                    std::memcpy(p.addr.data() + 12, &sin->sin_addr, 4);
                    p.len = 128;
                } else if (i->ifa_addr->sa_family == AF_INET6) {
                    const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(i->ifa_addr);
                    std::memcpy(p.addr.data(), &sin6->sin6_addr, 16);
                    p.len = 128;
                } else {
                    continue;
                }
                l->add(p);
                ++l->own;
            }
            freeifaddrs(ifs);
        } else {
            spdlog::warn("block policy: cannot list the interface addresses: {}",
                         core::errnoMessage(errno));
        }
    }
    for (const auto& a : o_.allow) {
        auto p = parseCidr(a, &why);
        if (!p) {
            throw std::runtime_error(
                std::string("--allow: '").append(a).append("' is not a CIDR: ").append(why));
        }
        l->add(*p);
        ++l->allow;
    }
    if (!o_.allow_file.empty()) {
        std::ifstream in(o_.allow_file);
        if (!in) {
            throw std::runtime_error("--allow-file " + o_.allow_file +
                                     ": cannot read: " + core::errnoMessage(errno));
        }
        std::string line;
        for (unsigned n = 1; std::getline(in, line); ++n) {
            std::string_view v = line;
            v = trim(v.substr(0, v.find('#')));
            if (v.empty()) {
                continue;
            }
            auto p = parseCidr(v, &why);
            if (!p) {
                throw std::runtime_error("--allow-file " + o_.allow_file + " line " +
                                         std::to_string(n) + ": '" + std::string(v) +
                                         "' is not a CIDR: " + why);
            }
            l->add(*p);
            ++l->allow;
        }
        if (in.bad()) {
            throw std::runtime_error("--allow-file " + o_.allow_file + ": read error");
        }
    }
    // Any order gives the same answer; shortest prefixes first.
    std::sort(l->groups.begin(), l->groups.end(),
              [](const auto& a, const auto& b) { return a.len < b.len; });
    return l;
}

std::shared_ptr<const Policy::Lists> Policy::lists() const {
    std::lock_guard lock(mutex_);
    return lists_;
}

bool Policy::neverBlock(std::string_view ip) const {
    auto a = parseAddress(ip);
    if (!a) {
        return true; // not an address: nothing a firewall should be handed
    }
    return lists()->contains(*a);
}

std::optional<std::chrono::seconds>
Policy::remaining(std::chrono::system_clock::time_point last,
                  std::chrono::system_clock::time_point now) const {
    if (o_.block_window.count() <= 0) {
        return std::nullopt;
    }
    auto left = std::chrono::ceil<std::chrono::seconds>(last + o_.block_window - now);
    return std::max(left, std::chrono::seconds{0});
}

std::optional<Policy::Block> Policy::decide(std::string_view ip, const Evidence& e,
                                            std::chrono::system_clock::time_point last,
                                            std::chrono::system_clock::time_point now) const {
    auto left = remaining(last, now);
    if ((left && left->count() == 0) || !shouldBlock(ip, e)) {
        return std::nullopt;
    }
    return Block{left};
}

bool Policy::shouldBlock(std::string_view ip, const Evidence& e) const {
    bool peer_counts = o_.peer_min_reporters > 0 && e.reporters >= o_.peer_min_reporters;
    if (!peer_counts && e.peer > 0) {
        peer_ignored_.fetch_add(1, std::memory_order_relaxed);
    }
    std::uint64_t counted = e.local + (peer_counts ? e.peer : 0);
    if (counted < std::max<std::uint64_t>(o_.block_after, 1)) {
        decided_below_.fetch_add(1, std::memory_order_relaxed);
        return false;
    }
    if (neverBlock(ip)) {
        decided_never_.fetch_add(1, std::memory_order_relaxed);
        return false;
    }
    decided_block_.fetch_add(1, std::memory_order_relaxed);
    return true;
}

bool Policy::reload() {
    try {
        auto fresh = build();
        {
            std::lock_guard lock(mutex_);
            lists_.swap(fresh);
        }
        reloads_.fetch_add(1, std::memory_order_relaxed);
        auto l = lists();
        spdlog::info("block policy: reloaded: {} allow entries, {} own addresses", l->allow,
                     l->own);
        return true;
    } catch (const std::exception& e) {
        reload_failures_.fetch_add(1, std::memory_order_relaxed);
        spdlog::error("block policy: reload failed, keeping the previous lists: {}", e.what());
        return false;
    }
}

void Policy::collect(core::MetricsWriter& w) const {
    auto l = lists();
    w.family("block_never_block_entries", "gauge",
             "Entries of the never-block list, by source (built in, own addresses, --allow and "
             "--allow-file)");
    w.sample(std::uint64_t{l->builtin}, {{"source", "builtin"}});
    w.sample(std::uint64_t{l->own}, {{"source", "own"}});
    w.sample(std::uint64_t{l->allow}, {{"source", "allow"}});
    w.family("block_policy_reloads_total", "counter", "Successful reloads (SIGHUP)");
    w.sample(reloads_.load());
    w.family("block_policy_reload_failures_total", "counter",
             "Reloads that failed (the previous lists were kept)");
    w.sample(reload_failures_.load());
    w.family("block_decisions_total", "counter",
             "Blocking decisions: block, never_block (enough evidence but on the never-block "
             "list), below_threshold");
    w.sample(decided_block_.load(), {{"decision", "block"}});
    w.sample(decided_never_.load(), {{"decision", "never_block"}});
    w.sample(decided_below_.load(), {{"decision", "below_threshold"}});
    w.family("block_peer_evidence_ignored_total", "counter",
             "Decisions where peer events were not counted (fewer reporters than "
             "--peer-min-reporters, or it is 0)");
    w.sample(peer_ignored_.load());
}

} // namespace sp::block
