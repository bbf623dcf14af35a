#include "nft/commands.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <netinet/in.h>

namespace sp::nft {

namespace {

// Kernels before 6.11 cannot hold element timeouts much beyond 23 days (milliseconds in
// jiffies overflow): longer blocks are written as 23 days.
constexpr std::chrono::seconds kMaxTimeout{23LL * 24 * 3600};

void appendElement(std::string& out, const Element& e) {
    out.append(e.addr);
    if (e.timeout) {
        auto t = std::clamp(*e.timeout, std::chrono::seconds{1}, kMaxTimeout);
        out.append(" timeout ").append(std::to_string(t.count())).push_back('s');
    }
}

// "add element inet T SET { a timeout 10s, b }\n" (nothing for an empty list). Large lists
// are cut into commands of at most 10,000 elements (still one transaction).
template <typename Range, typename Text>
void elementCommands(std::string& out, std::string_view verb, std::string_view table,
                     std::string_view set, const Range& elements, Text text) {
    constexpr std::size_t kPerCommand = 10000;
    std::size_t i = 0;
    for (const auto& e : elements) {
        if (i % kPerCommand == 0) {
            if (i > 0) {
                out.append(" }\n");
            }
            out.append(verb).append(" element inet ").append(table).push_back(' ');
            out.append(set).append(" { ");
        } else {
            out.append(", ");
        }
        text(out, e);
        ++i;
    }
    if (i > 0) {
        out.append(" }\n");
    }
}

void addAll(std::string& out, std::string_view table, const Elements& elements) {
    elementCommands(out, "add", table, kSetV4, elements.v4, appendElement);
    elementCommands(out, "add", table, kSetV6, elements.v6, appendElement);
}

} // namespace

std::optional<Address> canonicalAddress(std::string_view ip) {
    if (ip.empty() || ip.size() > INET6_ADDRSTRLEN) {
        return std::nullopt;
    }
    std::string s(ip);
    char buf[INET6_ADDRSTRLEN];
    if (s.find(':') == std::string::npos) {
        in_addr a{};
        if (inet_pton(AF_INET, s.c_str(), &a) != 1) {
            return std::nullopt;
        }
        inet_ntop(AF_INET, &a, buf, sizeof buf);
        return Address{Family::V4, buf};
    }
    in6_addr a{};
    if (inet_pton(AF_INET6, s.c_str(), &a) != 1) {
        return std::nullopt;
    }
    if (IN6_IS_ADDR_V4MAPPED(&a)) {
        in_addr v4{};
        std::copy_n(a.s6_addr + 12, 4, reinterpret_cast<unsigned char*>(&v4.s_addr));
        inet_ntop(AF_INET, &v4, buf, sizeof buf);
        return Address{Family::V4, buf};
    }
    inet_ntop(AF_INET6, &a, buf, sizeof buf);
    return Address{Family::V6, buf};
}

bool validTableName(std::string_view name) {
    if (name.empty() || name.size() > 64) {
        return false;
    }
    auto letter = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
    if (!letter(name[0])) {
        return false;
    }
    return std::all_of(name.begin(), name.end(), [&](char c) {
        return letter(c) || (c >= '0' && c <= '9') || c == '_' || c == '-';
    });
}

std::string startupScript(std::string_view table, bool set_only, const Elements& elements) {
    std::string t(table);
    std::string v4(kSetV4);
    std::string v6(kSetV6);
    std::string out;
    out.reserve(256 + elements.size() * 40);
    if (set_only) {
        // The table may hold the operator's own chains: only the sets are (re)made.
        out += "add table inet " + t + "\n";
        out += "add set inet " + t + " " + v4 + " { type ipv4_addr; flags timeout; }\n";
        out += "add set inet " + t + " " + v6 + " { type ipv6_addr; flags timeout; }\n";
        out += "flush set inet " + t + " " + v4 + "\n";
        out += "flush set inet " + t + " " + v6 + "\n";
        addAll(out, table, elements);
        return out;
    }
    out += "add table inet " + t + "\n";
    out += "delete table inet " + t + "\n";
    out += "table inet " + t + " {\n";
    out += "  set " + v4 + " {\n    type ipv4_addr\n    flags timeout\n  }\n";
    out += "  set " + v6 + " {\n    type ipv6_addr\n    flags timeout\n  }\n";
    out += "  chain " + std::string(kChain) +
           " {\n    type filter hook input priority filter - 10; policy accept;\n"
           "    ip saddr @" +
           v4 + " counter drop\n    ip6 saddr @" + v6 + " counter drop\n  }\n";
    out += "}\n";
    addAll(out, table, elements);
    return out;
}

std::string resyncScript(std::string_view table, const Elements& elements) {
    std::string t(table);
    std::string out;
    out.reserve(128 + elements.size() * 40);
    out += "flush set inet " + t + " " + std::string(kSetV4) + "\n";
    out += "flush set inet " + t + " " + std::string(kSetV6) + "\n";
    addAll(out, table, elements);
    return out;
}

std::string batchScript(std::string_view table, const Elements& put,
                        const std::vector<Address>& remove) {
    std::string out;
    if (put.size() == 0 && remove.empty()) {
        return out;
    }
    out.reserve((put.size() * 3 + remove.size() * 2) * 40);
    std::vector<std::string_view> gone4, gone6;
    for (const auto& a : remove) {
        (a.family == Family::V4 ? gone4 : gone6).push_back(a.text);
    }
    auto bare = [](std::string& o, std::string_view a) { o.append(a); };
    auto bare_element = [](std::string& o, const Element& e) { o.append(e.addr); };
    // 1. make every element present (a no-op for those that are)
    elementCommands(out, "add", table, kSetV4, put.v4, bare_element);
    elementCommands(out, "add", table, kSetV6, put.v6, bare_element);
    elementCommands(out, "add", table, kSetV4, gone4, bare);
    elementCommands(out, "add", table, kSetV6, gone6, bare);
    // 2. take them all out (never fails now)
    elementCommands(out, "delete", table, kSetV4, put.v4, bare_element);
    elementCommands(out, "delete", table, kSetV6, put.v6, bare_element);
    elementCommands(out, "delete", table, kSetV4, gone4, bare);
    elementCommands(out, "delete", table, kSetV6, gone6, bare);
    // 3. write the blocked ones with their new timeout
    addAll(out, table, put);
    return out;
}

std::string exitScript(std::string_view table, bool set_only) {
    std::string t(table);
    if (set_only) {
        return "flush set inet " + t + " " + std::string(kSetV4) + "\nflush set inet " + t + " " +
               std::string(kSetV6) + "\n";
    }
    return "add table inet " + t + "\ndelete table inet " + t + "\n";
}

} // namespace sp::nft
