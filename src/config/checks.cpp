#include "config/checks.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cctype>

#include "block/policy.hpp"
#include "config/config.hpp"
#include "core/text.hpp"

namespace sp::config {
namespace {

bool allDigits(const std::string& v) {
    return !v.empty() &&
           std::all_of(v.begin(), v.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
}

bool validPort(const std::string& p) {
    return allDigits(p) && p.size() <= 5 && std::stoi(p) >= 1 && std::stoi(p) <= 65535;
}

} // namespace

// Booleans from the environment or the config file: SentryPeer treats any set variable as
// "on", even "0"; we accept exactly 1/true/yes/on and 0/false/no/off (any case).
std::string normaliseBool(const std::string& v) {
    std::string lower = v;
    std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
    if (lower == "1" || lower == "true" || lower == "yes" || lower == "on") {
        return "true";
    }
    if (lower == "0" || lower == "false" || lower == "no" || lower == "off" || lower == "-1") {
        return "false"; // "-1" is how CLI11 spells an explicit false internally
    }
    throw CLI::ValidationError("'" + v +
                               "' is not a boolean (use 1/true/yes/on or 0/false/no/off)");
}

std::string checkDuration(const std::string& v) {
    if (!core::parseDuration(v)) {
        return "'" + v + "' is not a duration (e.g. 0, 90s, 15m, 12h, 7d, 2w)";
    }
    return {};
}

std::string checkHostPort(const std::string& v) {
    if (!parseHostPort(v)) {
        return "'" + v +
               "' is not ADDR:PORT with a numeric IPv4 address or [IPv6] and a port 1-65535";
    }
    return {};
}

// A decimal number in [0, max], no sign (CLI11 would turn "-1" into 2^64-1).
CLI::Validator unsignedUpTo(std::uint64_t max, const std::string& what) {
    return CLI::Validator(
        [max, what](std::string& v) -> std::string {
            std::string digits = v;
            digits.erase(0, std::min(digits.find_first_not_of('0'), digits.size() - 1));
            if (!allDigits(digits) || digits.size() > 20 ||
                (digits.size() == 20 && digits > "18446744073709551615") ||
                std::stoull(digits) > max) {
                return "'" + v + "' is not " + what + " (0 to " + std::to_string(max) + ")";
            }
            return {};
        },
        "");
}

// DHT bootstrap node: "host", "host:port", "[v6]", "[v6]:port" or a bare IPv6 address (the
// forms src/p2p splits); the port, when given, is 1-65535.
std::string checkBootstrap(const std::string& b) {
    std::string bad = "'" + b + "' is not HOST[:PORT] (IPv6 as [ADDR]:PORT, port 1-65535)";
    if (b.empty() || b.size() > 255 || b.find_first_of(" \t\r\n/@") != std::string::npos) {
        return bad;
    }
    unsigned char buf[16];
    if (b.front() == '[') {
        auto close = b.find(']');
        if (close == std::string::npos) {
            return bad;
        }
        std::string host = b.substr(1, close - 1);
        if (inet_pton(AF_INET6, host.c_str(), buf) != 1) {
            return bad;
        }
        if (close + 1 < b.size() && (b[close + 1] != ':' || !validPort(b.substr(close + 2)))) {
            return bad;
        }
        return {};
    }
    auto colon = b.rfind(':');
    if (colon == std::string::npos) {
        return {};
    }
    if (b.find(':') != colon) { // a bare IPv6 address, no port
        return inet_pton(AF_INET6, b.c_str(), buf) == 1 ? std::string{} : bad;
    }
    if (colon == 0 || !validPort(b.substr(colon + 1))) {
        return bad;
    }
    return {};
}

std::string checkCidr(const std::string& v) {
    std::string why;
    if (!block::parseCidr(v, &why)) {
        return "'" + v + "' is not a CIDR or an address: " + why;
    }
    return {};
}

std::string checkApiKey(const std::string& v) {
    if (!core::validApiKey(v)) {
        return "a key must be 8-256 characters of A-Z a-z 0-9 . _ ~ + = -";
    }
    return {};
}

std::string checkNftTable(const std::string& v) {
    bool ok = !v.empty() && v.size() <= 64 && std::isalpha(static_cast<unsigned char>(v[0]));
    for (char ch : v) {
        ok = ok && (std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '-');
    }
    return ok ? "" : "a table name is a letter, then letters, digits, '_' or '-' (at most 64)";
}

std::string checkPhoneNumber(const std::string& v) {
    std::size_t digits = 0;
    bool ok = !v.empty() && v.size() <= 256;
    for (std::size_t i = 0; ok && i < v.size(); ++i) {
        char ch = v[i];
        if ((ch >= '0' && ch <= '9') || ch == '*' || ch == '#') {
            ++digits;
        } else if (!(ch == '+' && i == 0) &&
                   std::string_view(" -.()/").find(ch) == std::string_view::npos) {
            ok = false;
        }
    }
    if (!ok || digits == 0 || digits > 64) {
        return "'" + v +
               "' is not a phone number (1-64 of 0-9 * #, an optional leading +, "
               "separators space - . ( ) /)";
    }
    return {};
}

// An http(s) URL (or empty); a port in its authority must be 1-65535.
std::string checkUrl(const std::string& url) {
    if (url.empty()) {
        return {};
    }
    std::size_t start = 0;
    if (url.rfind("http://", 0) == 0) {
        start = 7;
    } else if (url.rfind("https://", 0) == 0) {
        start = 8;
    } else {
        return "'" + url + "' is not an http:// or https:// URL";
    }
    std::string authority = url.substr(start, url.find_first_of("/?#", start) - start);
    if (auto at = authority.rfind('@'); at != std::string::npos) {
        authority = authority.substr(at + 1);
    }
    std::size_t colon = std::string::npos;
    if (!authority.empty() && authority.front() == '[') {
        auto close = authority.find(']');
        if (close == std::string::npos) {
            return "'" + url + "' is not an http:// or https:// URL";
        }
        colon = authority.find(':', close);
    } else {
        colon = authority.find(':');
    }
    if (colon != std::string::npos && !validPort(authority.substr(colon + 1))) {
        return "'" + url + "': the port is not 1-65535";
    }
    return {};
}

std::string checkPkId(const std::string& v) {
    bool ok = v.size() == 40 && std::all_of(v.begin(), v.end(), [](char ch) {
                  return std::isxdigit(static_cast<unsigned char>(ch)) != 0;
              });
    // Echoed escaped and only when short: the error stays one bounded line.
    std::string shown = v.size() <= 64 ? core::sanitizeBytes(v, false) : std::string("...");
    return ok ? std::string()
              : "'" + shown + "' is not an identity (40 hex digits, as /p2p/status shows it)";
}

std::string checkCredit(const std::string& v) {
    return v == "L0" || v == "L1" || v == "L2"
               ? std::string()
               : "'" + core::sanitizeBytes(v, false) + "' is not a credit level (L0, L1 or L2)";
}

} // namespace sp::config
