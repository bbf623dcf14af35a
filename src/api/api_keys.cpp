#include "api/api_keys.hpp"

#include <algorithm>
#include <fstream>
#include <stdexcept>

#include "core/text.hpp"

namespace sp::api {

namespace {

// Equal without an early exit on the first differing byte (the length is not secret).
bool sameKey(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) {
        return false;
    }
    unsigned char diff = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        diff |= static_cast<unsigned char>(a[i] ^ b[i]);
    }
    return diff == 0;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
        s.remove_prefix(1);
    }
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
        s.remove_suffix(1);
    }
    return s;
}

} // namespace

std::shared_ptr<const ApiKeys> ApiKeys::load(const std::vector<std::string>& keys,
                                             const std::string& file) {
    auto out = std::make_shared<ApiKeys>();
    auto add = [&out](std::string_view k) {
        if (std::find(out->keys_.begin(), out->keys_.end(), k) == out->keys_.end()) {
            out->keys_.emplace_back(k);
        }
    };
    for (const auto& k : keys) {
        add(k);
    }
    if (file.empty()) {
        return out;
    }
    std::ifstream in(file);
    if (!in) {
        throw std::runtime_error("cannot read bouncer key file " + file + ": " +
                                 core::errnoMessage(errno));
    }
    std::string line;
    for (unsigned n = 1; std::getline(in, line); ++n) {
        auto k = trim(line);
        if (k.empty() || k.front() == '#') {
            continue;
        }
        if (!core::validApiKey(k)) {
            throw std::runtime_error("bouncer key file " + file + ":" + std::to_string(n) +
                                     ": not a valid key (8-256 characters of A-Z a-z 0-9 . _ "
                                     "~ + = -)");
        }
        add(k);
    }
    if (in.bad()) {
        throw std::runtime_error("cannot read bouncer key file " + file);
    }
    return out;
}

std::optional<std::size_t> ApiKeys::find(std::string_view key) const {
    std::optional<std::size_t> found;
    for (std::size_t i = 0; i < keys_.size(); ++i) {
        if (sameKey(key, keys_[i]) && !found) {
            found = i;
        }
    }
    return found;
}

} // namespace sp::api
