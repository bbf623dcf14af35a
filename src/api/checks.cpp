// POST /numbers/check and POST /ip-addresses/check: many lookups in one request, answered
// per item from one index snapshot. Small bodies run on the io thread, large ones on the
// slow-route thread (Routes::isSlow). docs/API.md "Batch checks".
#include "api/checks.hpp"

#include <algorithm>
#include <unordered_set>

#include "api/json_out.hpp"
#include "api/lookup_keys.hpp"
#include "api/routes.hpp"

namespace sp::api {

namespace checks {

namespace {

class Parser {
public:
    explicit Parser(std::string_view s) : s_(s) {}

    void ws() {
        while (i_ < s_.size() &&
               (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) {
            ++i_;
        }
    }
    bool eat(char c) {
        ws();
        if (i_ < s_.size() && s_[i_] == c) {
            ++i_;
            return true;
        }
        return false;
    }
    bool peek(char c) {
        ws();
        return i_ < s_.size() && s_[i_] == c;
    }
    bool atEnd() {
        ws();
        return i_ == s_.size();
    }

    // A JSON string (after whitespace) into out. False when malformed.
    bool string(std::string& out) {
        out.clear();
        if (!eat('"')) {
            return false;
        }
        while (i_ < s_.size()) {
            auto c = static_cast<unsigned char>(s_[i_++]);
            if (c == '"') {
                return true;
            }
            if (c < 0x20) {
                return false;
            }
            if (c != '\\') {
                out.push_back(static_cast<char>(c));
                continue;
            }
            if (i_ >= s_.size()) {
                return false;
            }
            char e = s_[i_++];
            switch (e) {
            case '"':
            case '\\':
            case '/':
                out.push_back(e);
                break;
            case 'b':
                out.push_back('\b');
                break;
            case 'f':
                out.push_back('\f');
                break;
            case 'n':
                out.push_back('\n');
                break;
            case 'r':
                out.push_back('\r');
                break;
            case 't':
                out.push_back('\t');
                break;
            case 'u': {
                unsigned cp = 0;
                if (!hex4(cp)) {
                    return false;
                }
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    unsigned lo = 0;
                    if (i_ + 2 > s_.size() || s_[i_] != '\\' || s_[i_ + 1] != 'u') {
                        return false;
                    }
                    i_ += 2;
                    if (!hex4(lo) || lo < 0xDC00 || lo > 0xDFFF) {
                        return false;
                    }
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    return false;
                }
                utf8(out, cp);
                break;
            }
            default:
                return false;
            }
        }
        return false;
    }

private:
    bool hex4(unsigned& v) {
        if (i_ + 4 > s_.size()) {
            return false;
        }
        v = 0;
        for (int k = 0; k < 4; ++k) {
            char c = s_[i_++];
            unsigned d = 0;
            if (c >= '0' && c <= '9') {
                d = static_cast<unsigned>(c - '0');
            } else if (c >= 'a' && c <= 'f') {
                d = static_cast<unsigned>(c - 'a' + 10);
            } else if (c >= 'A' && c <= 'F') {
                d = static_cast<unsigned>(c - 'A' + 10);
            } else {
                return false;
            }
            v = v * 16 + d;
        }
        return true;
    }
    static void utf8(std::string& out, unsigned cp) {
        if (cp < 0x80) {
            out.push_back(static_cast<char>(cp));
        } else if (cp < 0x800) {
            out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
            out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
        } else if (cp < 0x10000) {
            out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
            out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
            out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
        } else {
            out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
            out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
            out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
            out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
        }
    }

    std::string_view s_;
    std::size_t i_ = 0;
};

ParsedBody fail(int status, std::string error) {
    ParsedBody p;
    p.status = status;
    p.error = std::move(error);
    return p;
}

} // namespace

ParsedBody parseBody(std::string_view body, std::string_view key, std::size_t max_items) {
    const std::string shape = "expected a JSON object {\"" + std::string(key) + "\": [strings]}";
    Parser p(body);
    std::string name;
    if (!p.eat('{') || !p.string(name) || name != key || !p.eat(':') || !p.eat('[')) {
        return fail(400, shape);
    }
    ParsedBody out;
    if (!p.eat(']')) {
        std::string item;
        do {
            if (!p.string(item)) {
                return fail(400, shape);
            }
            if (out.items.size() == max_items) {
                return fail(413, "Too many items: at most " + std::to_string(max_items) +
                                     " per request");
            }
            out.items.push_back(item);
        } while (p.eat(','));
        if (!p.eat(']')) {
            return fail(400, shape);
        }
    }
    if (!p.eat('}') || !p.atEnd()) {
        return fail(400, shape);
    }
    return out;
}

} // namespace checks

namespace {

void appendSeen(std::string& out, const store::Seen& seen) {
    out.append(R"(, "seen_count": ")");
    core::appendDecimal(out, seen.count);
    out.append(R"(", "seen_first": ")");
    appendTimestamp(out, seen.first);
    out.append(R"(", "seen_last": ")");
    appendTimestamp(out, seen.last);
    out.push_back('"');
}

Response checkError(const checks::ParsedBody& parsed) {
    return message(parsed.status, "error", parsed.error);
}

const char* boolText(bool b) {
    return b ? "true" : "false";
}

} // namespace

bool Routes::numberBlocked(const store::Seen& seen, core::TimePoint now) const {
    // The policy's evidence rule (block::Policy::shouldBlock) for a number, which has no
    // never-block list of addresses: --allow-number is checked by the caller.
    const auto& o = policy_->options();
    std::uint64_t counted =
        seen.local +
        (o.peer_min_reporters > 0 && seen.reporters >= o.peer_min_reporters ? seen.peer : 0);
    if (counted < std::max<std::uint64_t>(o.block_after, 1)) {
        return false;
    }
    auto left = policy_->remaining(seen.last, now);
    return !left || left->count() > 0;
}

std::vector<std::string> Routes::normaliseAllowList(const std::vector<std::string>& numbers) {
    std::vector<std::string> out;
    for (const auto& n : numbers) {
        if (auto normalised = normaliseNumber(n)) {
            out.push_back(std::move(*normalised));
        }
    }
    std::sort(out.begin(), out.end());
    return out;
}

bool Routes::numberAllowed(const std::string& normalised) const {
    return std::binary_search(allowed_numbers_.begin(), allowed_numbers_.end(), normalised);
}

namespace {

// A batch check's answer: {"<list>": [{"<field>": <item as sent>, ...}, ...]}, one object per
// item in order; `append(body, item)` writes the rest of the item's object (from ", ").
template <typename Append>
Response batchAnswer(const Request& r, const char* list, const char* field, Append append) {
    auto parsed = checks::parseBody(r.body, list);
    if (parsed.status != 200) {
        return checkError(parsed);
    }
    Response out;
    out.body.reserve(64 + parsed.items.size() * 160);
    out.body.append("{\"").append(list).append("\": [");
    bool first = true;
    for (const auto& item : parsed.items) {
        out.body.append(first ? "{\"" : ", {\"").append(field).append("\": ");
        first = false;
        core::appendJsonString(out.body, item);
        append(out.body, item);
        out.body.push_back('}');
    }
    out.body.append("]}");
    return out;
}

constexpr const char* kInvalidItem = R"(, "valid": false, "known": false, "blocked": false)";

} // namespace

Response Routes::numbersCheck(const Request& r, std::string_view) {
    auto snapshot = index_.snapshot();
    auto now = clock_.now();
    return batchAnswer(r, "numbers", "number", [&](std::string& body, const std::string& n) {
        auto normalised = normaliseNumber(n);
        if (!normalised) {
            body.append(kInvalidItem);
            return;
        }
        body.append(R"(, "valid": true, "normalised": )");
        core::appendJsonString(body, *normalised);
        bool allowed = numberAllowed(*normalised);
        auto seen = findNumber(snapshot->by_number, *normalised);
        body.append(R"(, "allowed": )").append(boolText(allowed));
        body.append(R"(, "known": )").append(boolText(seen.has_value()));
        body.append(R"(, "blocked": )")
            .append(boolText(!allowed && seen && numberBlocked(*seen, now)));
        if (seen) {
            appendSeen(body, *seen);
        }
    });
}

Response Routes::ipAddressesCheck(const Request& r, std::string_view) {
    auto snapshot = index_.snapshot();
    auto now = clock_.now();
    return batchAnswer(
        r, "ip_addresses", "ip_address", [&](std::string& body, const std::string& ip) {
            char canonical[INET6_ADDRSTRLEN];
            if (!canonicalIp(ip, canonical)) {
                body.append(kInvalidItem);
                return;
            }
            const store::Seen* seen = snapshot->by_ip.find(canonical);
            bool blocked = seen != nullptr &&
                           policy_->decide(
                               canonical, block::Evidence{seen->local, seen->peer, seen->reporters},
                               seen->last, now);
            body.append(R"(, "valid": true, "known": )").append(boolText(seen != nullptr));
            body.append(R"(, "blocked": )").append(boolText(blocked));
            if (seen != nullptr) {
                appendSeen(body, *seen);
            }
        });
}

std::size_t Routes::bodyLimit(std::string_view method, std::string_view path) {
    if (method == "POST" && (path == "/numbers/check" || path == "/ip-addresses/check")) {
        return checks::kMaxBodyBytes;
    }
    return kMaxRequestBody;
}

} // namespace sp::api
