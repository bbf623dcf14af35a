#include "api/exports.hpp"

#include <algorithm>

#include "api/json_out.hpp"

namespace sp::api {

namespace {
bool isV6(std::string_view ip) {
    return ip.find(':') != std::string_view::npos;
}
} // namespace

std::uint64_t exportTimeout(std::chrono::seconds max_age, core::TimePoint now,
                            core::TimePoint last) {
    auto left = std::chrono::duration_cast<std::chrono::seconds>(max_age - (now - last));
    return static_cast<std::uint64_t>(
        std::max<long long>(static_cast<long long>(kMinExportTimeoutSeconds), left.count()));
}

bool validSetName(const std::string& s) {
    return !s.empty() && s.size() <= 28 && std::all_of(s.begin(), s.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '-';
    });
}

Response ipsetExport(std::shared_ptr<Page> page, const std::string& set,
                     std::chrono::seconds max_age, core::TimePoint now) {
    bool timeouts = max_age.count() > 0;
    // `ipset restore -exist < file`: one set per address family.
    std::string options = timeouts ? " timeout " + std::to_string(max_age.count()) : "";
    std::string header = "create " + set + " hash:ip family inet" + options + "\n" + "create " +
                         set + "_v6 hash:ip family inet6" + options + "\n";
    return textStream(
        std::move(page), header,
        [set, max_age, now, timeouts](std::string& out, const Page& p, const Entry& e,
                                      std::size_t) {
            auto key = p.key(e);
            out.append("add ").append(set).append(isV6(key) ? "_v6 " : " ").append(key);
            if (timeouts) {
                out.append(" timeout ");
                core::appendDecimal(out, exportTimeout(max_age, now, e.last));
            }
            out.push_back('\n');
        },
        "", "text/plain; charset=utf-8");
}

Response nftExport(const Page& page, const std::string& table, const std::string& set,
                   std::chrono::seconds max_age, core::TimePoint now) {
    bool timeouts = max_age.count() > 0;
    // `nft -f file`: a table with one set per family; elements carry their timeouts.
    auto set_text = [&](std::string& s, const std::string& name, const char* type, bool v6) {
        s += "\tset " + name + " {\n\t\ttype " + type + "\n";
        if (timeouts) {
            s += "\t\tflags timeout\n";
        }
        bool first = true;
        for (const auto& e : page.entries) {
            auto key = page.key(e);
            if (isV6(key) != v6) {
                continue;
            }
            s += first ? "\t\telements = { " : ", ";
            first = false;
            s += key;
            if (timeouts) {
                s += " timeout ";
                core::appendDecimal(s, exportTimeout(max_age, now, e.last));
                s += "s";
            }
        }
        if (!first) {
            s += " }\n";
        }
        s += "\t}\n";
    };
    Response n;
    n.content_type = "text/plain; charset=utf-8";
    n.body = "table inet " + table + " {\n";
    set_text(n.body, set, "ipv4_addr", false);
    set_text(n.body, set + "_v6", "ipv6_addr", true);
    n.body += "}\n";
    return n;
}

void appendCsvField(std::string& out, std::string_view s) {
    bool formula = !s.empty() && (s[0] == '=' || s[0] == '+' || s[0] == '-' || s[0] == '@' ||
                                  s[0] == '\t' || s[0] == '\r');
    if (s.find_first_of(",\"\r\n") == std::string_view::npos) {
        if (formula) {
            out.push_back('\'');
        }
        out.append(s);
        return;
    }
    out.push_back('"');
    if (formula) {
        out.push_back('\'');
    }
    for (char c : s) {
        out.push_back(c);
        if (c == '"') {
            out.push_back('"');
        }
    }
    out.push_back('"');
}

Response csvExport(std::shared_ptr<Page> page) {
    return textStream(
        std::move(page), "called_number,seen_count,seen_first,seen_last\r\n",
        [](std::string& out, const Page& p, const Entry& e, std::size_t) {
            appendCsvField(out, p.key(e));
            out.push_back(',');
            core::appendDecimal(out, e.count);
            out.push_back(',');
            appendTimestamp(out, p.first(e));
            out.push_back(',');
            appendTimestamp(out, e.last);
            out.append("\r\n");
        },
        "", "text/csv; charset=utf-8");
}

} // namespace sp::api
