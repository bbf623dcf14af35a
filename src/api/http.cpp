#include "api/http.hpp"

#include "core/text.hpp"

namespace sp::api {

namespace {

// percentDecode into `out` (replaced; its capacity is reused). False for a malformed escape.
bool decodeInto(std::string_view s, bool plus_is_space, std::string& out) {
    out.clear();
    if (s.find('%') == std::string_view::npos &&
        (!plus_is_space || s.find('+') == std::string_view::npos)) {
        out.append(s); // nothing to decode: the usual path
        return true;
    }
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        char c = s[i];
        if (c == '%') {
            if (i + 2 >= s.size()) {
                return false;
            }
            int hi = core::hexValue(s[i + 1]);
            int lo = core::hexValue(s[i + 2]);
            if (hi < 0 || lo < 0) {
                return false;
            }
            out.push_back(static_cast<char>(hi * 16 + lo));
            i += 2;
        } else if (c == '+' && plus_is_space) {
            out.push_back(' ');
        } else {
            out.push_back(c);
        }
    }
    return true;
}
} // namespace

std::optional<std::string> percentDecode(std::string_view s, bool plus_is_space) {
    std::string out;
    if (!decodeInto(s, plus_is_space, out)) {
        return std::nullopt;
    }
    return out;
}

bool parseTarget(std::string_view target, std::string& path,
                 std::map<std::string, std::string>& query) {
    auto qpos = target.find('?');
    if (!decodeInto(target.substr(0, qpos), false, path)) {
        path.clear();
        return false;
    }
    if (qpos == std::string_view::npos) {
        return true;
    }
    std::string_view rest = target.substr(qpos + 1);
    while (!rest.empty()) {
        auto amp = rest.find('&');
        std::string_view pair = rest.substr(0, amp);
        rest = amp == std::string_view::npos ? std::string_view{} : rest.substr(amp + 1);
        if (pair.empty()) {
            continue;
        }
        auto eq = pair.find('=');
        auto key = percentDecode(pair.substr(0, eq), true);
        auto value = percentDecode(
            eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1), true);
        if (!key || !value) {
            return false;
        }
        query[*key] = *value;
    }
    return true;
}

} // namespace sp::api
