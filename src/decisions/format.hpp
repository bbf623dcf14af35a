#pragma once
// CrowdSec's wire formats for decisions: Go's time.Duration text, the decision object, the
// stream and list bodies, and the LAPI query filters (scopes, origins, scenarios_containing,
// scenarios_not_containing; ip, range, contains, type, value for GET /v1/decisions).
// Pure functions: any thread.

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/event.hpp"

namespace sp::decisions {

// Go's time.Duration.String(): "3h59m58s", "1m0s", "59.5s", "1.5ms", "0s", "-3m0s".
std::string formatGoDuration(std::chrono::nanoseconds d);

enum class Scenario : std::uint8_t {
    SipProbe, // the address has local events: "sentrypeer/sip-probe"
    P2p,      // peer events only: "sentrypeer/p2p"
};
std::string_view scenarioName(Scenario s);

inline constexpr std::string_view kOrigin = "sentrypeer";

struct Decision {
    std::uint64_t id = 0;
    core::TimePoint until{};
    Scenario scenario = Scenario::SipProbe;
    // The policy gives no expiry: `until` is a finite horizon the journal renews before it
    // passes (a bouncer reads a duration of 0s as a permanent ban).
    bool renew = false;
};

// One decision as CrowdSec's JSON, appended to `out`:
// {"id":1,"origin":"sentrypeer","type":"ban","scope":"Ip","value":"192.0.2.7",
//  "duration":"3h59m58s","scenario":"sentrypeer/sip-probe","simulated":false}
// The duration is until - now in whole seconds; with `positive` (entries of "new") at
// least 1s, so that no bouncer ever reads it as permanent. `ip` must be a literal address.
void appendDecision(std::string& out, std::string_view ip, const Decision& d, core::TimePoint now,
                    bool positive);

// A literal IPv4 or IPv6 address (inet_pton), nothing else (no scope id, no mask).
bool isLiteralIp(std::string_view s);

// The LAPI filters both routes share, parsed from the query. Unknown parameters are
// ignored, as LAPI does.
class Filter {
public:
    using Query = std::map<std::string, std::string>;
    // `stream`: /v1/decisions/stream (scopes default to "ip,range", as LAPI's stream does).
    // nullopt with `error` set (LAPI's message) for a bad ip/range/contains value.
    static std::optional<Filter> parse(const Query& q, bool stream, std::string* error);

    // Whether a decision of this node (origin sentrypeer, type ban, scope Ip) for `ip` with
    // `scenario` passes.
    bool matches(std::string_view ip, Scenario scenario) const;
    // A single-address lookup (ip= or range= naming one address with contains=true): the
    // only address that can match, so a caller may look it up instead of walking all.
    const std::optional<std::string>& exactIp() const { return exact_ip_; }

    struct Range {
        std::array<std::uint8_t, 16> addr{};
        unsigned len = 0; // prefix length in the address's own family
        bool v4 = false;
    };

private:
    bool scope_ip_ = true;
    bool type_ok_ = true;
    std::optional<std::vector<std::string>> origins_;
    std::optional<std::vector<std::string>> containing_, not_containing_;
    std::optional<std::string> value_;
    std::optional<Range> range_;
    bool contains_ = true;
    std::optional<std::string> exact_ip_;
};

} // namespace sp::decisions
