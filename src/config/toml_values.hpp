#pragma once
// A Config value as TOML text (describe(), --check-config): what -g reads back to the same
// value. Used by the option table in config.cpp.

#include <chrono>
#include <optional>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "config/config.hpp"
#include "config/toml.hpp"

namespace sp::config {

// "7d", "12h", "90s", "0": the largest unit that divides the duration.
inline std::string durationText(std::chrono::seconds d) {
    auto n = d.count();
    if (n == 0) {
        return "0";
    }
    for (auto [unit, secs] : {std::pair{'d', 86400}, {'h', 3600}, {'m', 60}}) {
        if (n % secs == 0) {
            return std::to_string(n / secs) + unit;
        }
    }
    return std::to_string(n) + "s";
}

inline std::string tomlValue(bool v) {
    return v ? "true" : "false";
}
inline std::string tomlValue(const std::string& v) {
    return tomlString(v);
}
inline std::string tomlValue(const HostPort& v) {
    return tomlString(v.str());
}
inline std::string tomlValue(std::chrono::seconds v) {
    return tomlString(durationText(v));
}
template <typename T>
requires std::is_arithmetic_v<T> std::string tomlValue(T v) {
    std::ostringstream o;
    o << +v;
    return o.str();
}
template <typename T> std::string tomlValue(const std::vector<T>& v) {
    std::string out = "[";
    for (std::size_t i = 0; i < v.size(); ++i) {
        out += (i > 0 ? ", " : "") + tomlValue(v[i]);
    }
    return out + "]";
}
template <typename T> std::string tomlValue(const std::optional<T>& v) {
    return v ? tomlValue(*v) : tomlString("");
}

} // namespace sp::config
