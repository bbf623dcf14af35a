#pragma once
// The keys that blocking tools present: CrowdSec bouncers in X-Api-Key, APIBAN clients as
// the {KEY} path segment. Loaded once at startup from --bouncer-key and --bouncer-key-file.
//
// Threads: immutable after load(); find() from any thread.

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sp::api {

class ApiKeys {
public:
    // `keys` (already validated) plus the lines of `file` (empty: none; one key per line,
    // blank lines and # comments skipped; duplicates kept once). Throws std::runtime_error
    // naming the file (and line) when it cannot be read or a line is not a valid key
    // (core::validApiKey); the message never contains a key.
    static std::shared_ptr<const ApiKeys> load(const std::vector<std::string>& keys,
                                               const std::string& file);

    // The index of `key` in the list (stable for the process: per-key state is keyed by
    // it), or nullopt. Compares every key in time independent of where they differ.
    std::optional<std::size_t> find(std::string_view key) const;
    std::size_t size() const { return keys_.size(); }

private:
    std::vector<std::string> keys_;
};

} // namespace sp::api
