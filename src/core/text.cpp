#include "core/text.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <ctime>

namespace sp::core {

std::size_t utf8SequenceLength(std::string_view s, std::size_t i) {
    auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
    unsigned char c = byte(i);
    if (c < 0x80) {
        return 1;
    }
    std::size_t len = 0;
    unsigned char lo = 0x80;
    unsigned char hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0) {
            lo = 0xa0; // no overlong forms
        } else if (c == 0xed) {
            hi = 0x9f; // no surrogates
        }
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0) {
            lo = 0x90;
        } else if (c == 0xf4) {
            hi = 0x8f; // <= U+10FFFF
        }
    } else {
        return 0;
    }
    if (i + len > s.size()) {
        return 0;
    }
    if (byte(i + 1) < lo || byte(i + 1) > hi) {
        return 0;
    }
    for (std::size_t k = 2; k < len; ++k) {
        if (byte(i + k) < 0x80 || byte(i + k) > 0xbf) {
            return 0;
        }
    }
    return len;
}

std::string sanitizeBytes(std::string_view bytes, bool keep_line_breaks) {
    // Fast path: printable ASCII (the usual SIP message) is returned as is.
    bool plain = std::all_of(bytes.begin(), bytes.end(), [&](char c) {
        auto u = static_cast<unsigned char>(c);
        return (u >= 0x20 && u < 0x7f) ||
               (keep_line_breaks && (c == '\t' || c == '\r' || c == '\n'));
    });
    if (plain) {
        return std::string(bytes);
    }
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    out.reserve(bytes.size());
    std::size_t i = 0;
    while (i < bytes.size()) {
        auto c = static_cast<unsigned char>(bytes[i]);
        std::size_t len = utf8SequenceLength(bytes, i);
        bool control = c < 0x20 || c == 0x7f;
        bool line_break = c == '\t' || c == '\r' || c == '\n';
        if (len == 0 || (control && !(keep_line_breaks && line_break))) {
            out.append("\\x");
            out.push_back(kHex[c >> 4]);
            out.push_back(kHex[c & 0x0f]);
            ++i;
            continue;
        }
        out.append(bytes.substr(i, len));
        i += len;
    }
    return out;
}

namespace {

// Writes v as exactly `width` decimal digits at out (v >= 0).
void digits(char* out, long long v, int width) {
    for (int i = width - 1; i >= 0; --i) {
        out[i] = static_cast<char>('0' + v % 10);
        v /= 10;
    }
}

} // namespace

void writeTimestamp(char* out, TimePoint t) {
    // Hand-rolled (Howard Hinnant's civil_from_days) rather than gmtime_r + snprintf: the
    // API formats one per listed entry, 100,000 for a full /numbers.
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
    long long secs = ns / 1'000'000'000;
    long long frac = ns % 1'000'000'000;
    if (frac < 0) {
        frac += 1'000'000'000;
        --secs;
    }
    long long days = secs / 86400;
    long long rem = secs % 86400;
    if (rem < 0) {
        rem += 86400;
        --days;
    }
    const long long z = days + 719468;
    const long long era = (z >= 0 ? z : z - 146096) / 146097;
    const long long doe = z - era * 146097;
    const long long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const long long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const long long mp = (5 * doy + 2) / 153;
    const long long day = doy - (153 * mp + 2) / 5 + 1;
    const long long month = mp < 10 ? mp + 3 : mp - 9;
    const long long year = yoe + era * 400 + (month <= 2 ? 1 : 0);
    digits(out, std::clamp(year, 0LL, 9999LL), 4);
    out[4] = '-';
    digits(out + 5, month, 2);
    out[7] = '-';
    digits(out + 8, day, 2);
    out[10] = ' ';
    digits(out + 11, rem / 3600, 2);
    out[13] = ':';
    digits(out + 14, rem / 60 % 60, 2);
    out[16] = ':';
    digits(out + 17, rem % 60, 2);
    out[19] = '.';
    digits(out + 20, frac, 9);
}

void appendDecimal(std::string& out, std::uint64_t v) {
    char buf[20];
    char* end = buf + sizeof buf;
    char* p = end;
    do {
        *--p = static_cast<char>('0' + v % 10);
        v /= 10;
    } while (v != 0);
    out.append(p, static_cast<std::size_t>(end - p));
}

std::string formatTimestamp(TimePoint t) {
    std::string out(kTimestampLength, '\0');
    writeTimestamp(out.data(), t);
    return out;
}

namespace {

bool readInt(std::string_view s, std::size_t pos, std::size_t len, int& out) {
    if (pos + len > s.size()) {
        return false;
    }
    int v = 0;
    for (std::size_t i = pos; i < pos + len; ++i) {
        if (s[i] < '0' || s[i] > '9') {
            return false;
        }
        v = v * 10 + (s[i] - '0');
    }
    out = v;
    return true;
}

// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm).
long long daysFromCivil(int y, int m, int d) {
    y -= m <= 2 ? 1 : 0;
    const int era = (y >= 0 ? y : y - 399) / 400;
    const int yoe = y - era * 400;
    const int doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return static_cast<long long>(era) * 146097 + doe - 719468;
}

} // namespace

std::optional<TimePoint> parseTimestamp(std::string_view s) {
    int y = 0, mo = 0, d = 0, h = 0, mi = 0, se = 0;
    if (s.size() < 19 || !readInt(s, 0, 4, y) || s[4] != '-' || !readInt(s, 5, 2, mo) ||
        s[7] != '-' || !readInt(s, 8, 2, d) || (s[10] != ' ' && s[10] != 'T') ||
        !readInt(s, 11, 2, h) || s[13] != ':' || !readInt(s, 14, 2, mi) || s[16] != ':' ||
        !readInt(s, 17, 2, se)) {
        return std::nullopt;
    }
    // Years past 2200 would overflow nanoseconds since 1970 (int64 ends in 2262).
    if (y < 1900 || y > 2200 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 ||
        se > 60) {
        return std::nullopt;
    }
    std::size_t pos = 19;
    long long frac_ns = 0;
    if (pos < s.size() && s[pos] == '.') {
        ++pos;
        std::size_t digits = 0;
        while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
            if (digits == 9) {
                return std::nullopt;
            }
            frac_ns = frac_ns * 10 + (s[pos] - '0');
            ++digits;
            ++pos;
        }
        if (digits == 0) {
            return std::nullopt;
        }
        for (std::size_t k = digits; k < 9; ++k) {
            frac_ns *= 10;
        }
    }
    if (pos < s.size() && s[pos] == 'Z') {
        ++pos;
    }
    if (pos != s.size()) {
        return std::nullopt;
    }
    long long secs = daysFromCivil(y, mo, d) * 86400LL + h * 3600LL + mi * 60LL + se;
    return TimePoint{std::chrono::duration_cast<TimePoint::duration>(
        std::chrono::seconds(secs) + std::chrono::nanoseconds(frac_ns))};
}

std::optional<std::chrono::seconds> parseDuration(std::string_view s) {
    if (s.empty()) {
        return std::nullopt;
    }
    long long n = 0;
    auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
    if (ec != std::errc{} || n < 0) {
        return std::nullopt;
    }
    std::string_view unit(ptr, static_cast<std::size_t>(s.data() + s.size() - ptr));
    long long mult = 0;
    if (unit.empty() || unit == "s") {
        mult = 1;
    } else if (unit == "m") {
        mult = 60;
    } else if (unit == "h") {
        mult = 3600;
    } else if (unit == "d") {
        mult = 86400;
    } else if (unit == "w") {
        mult = 7LL * 86400;
    } else {
        return std::nullopt;
    }
    constexpr long long kMaxSeconds = 100LL * 365 * 86400;
    if (n > kMaxSeconds / mult) {
        return std::nullopt;
    }
    return std::chrono::seconds(n * mult);
}

std::string errnoMessage(int err) {
    char buf[256];
    // GNU strerror_r: returns a pointer to the message (in buf or a static string).
    return ::strerror_r(err, buf, sizeof buf);
}

int hexValue(char c) {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

bool validApiKey(std::string_view key) {
    return key.size() >= 8 && key.size() <= 256 && std::all_of(key.begin(), key.end(), [](char c) {
               return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '_' || c == '~' || c == '+' || c == '=' || c == '-';
           });
}

} // namespace sp::core
