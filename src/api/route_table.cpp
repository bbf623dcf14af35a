// The route table and what derives from it: dispatch, 405 + Allow, OPTIONS, bearer-token
// checks, metric labels and counting. Plus the small routes (/, /health-check, /metrics,
// /p2p/status).
#include <algorithm>
#include <array>

#include "api/json_out.hpp"
#include "api/routes.hpp"
#include "core/version.hpp"
#include "store/stats_query.hpp"

namespace sp::api {

std::span<const Route> Routes::table() {
    // method, pattern, handler, auth, slow, metric label. Slow: work in proportion to the
    // index or the database (lists walk the whole index, /stats runs SQL); they run on the
    // sp-api-slow thread so that lookups and health checks never wait behind them.
    static const std::array route_table = {
        Route{"GET", "/", &Routes::root, true, false, "/"},
        Route{"GET", "/health-check", &Routes::healthCheck, false, false, "/health-check"},
        Route{"GET", "/ip-addresses", &Routes::ipAddresses, true, true, "/ip-addresses"},
        Route{"GET", "/ip-addresses/ipset", &Routes::ipset, true, true, "/ip-addresses/ipset"},
        Route{"POST", "/ip-addresses/check", &Routes::ipAddressesCheck, true, false,
              "/ip-addresses/check"},
        Route{"GET", "/ip-addresses/{ip}", &Routes::ipAddress, true, false, "/ip-addresses/{ip}"},
        Route{"GET", "/numbers", &Routes::numbers, true, true, "/numbers"},
        Route{"POST", "/numbers/check", &Routes::numbersCheck, true, false, "/numbers/check"},
        Route{"GET", "/numbers/{number}", &Routes::number, true, false, "/numbers/{number}"},
        Route{"GET", "/metrics", &Routes::metricsText, true, false, "/metrics"},
        Route{"GET", "/stats", &Routes::stats, true, true, "/stats"},
        Route{"GET", "/p2p/status", &Routes::p2pStatus, true, false, "/p2p/status"},
        // CrowdSec bouncers: X-Api-Key (--bouncer-key), not the bearer token.
        Route{"GET", "/v1/decisions/stream", &Routes::decisionsStream, false, true,
              "/v1/decisions/stream"},
        Route{"GET", "/v1/decisions", &Routes::decisionsList, false, true, "/v1/decisions"},
        Route{"GET", "/block/status", &Routes::blockStatus, true, false, "/block/status"},
        // APIBAN: the {KEY} in the path is the credential (no bearer token).
        Route{"GET", "/api/{key}", &Routes::apiban, false, true, "/api/{key}"},
    };
    return route_table;
}

namespace {

constexpr std::string_view kOtherLabel = "other"; // the label of paths matching no route

// Statuses the API answers; the index of one is its column in Routes::counts_.
constexpr std::array<int, Routes::kStatuses> kStatusCodes = {200, 204, 400, 401,
                                                             404, 405, 500, 503};

std::size_t statusIndex(int status) {
    for (std::size_t i = 0; i < kStatusCodes.size(); ++i) {
        if (kStatusCodes[i] == status) {
            return i;
        }
    }
    return kStatusCodes.size();
}

// Compares every byte of `given` whatever differs first: the time taken tells nothing of
// how much of the token was right. False for an empty token.
bool constantTimeEquals(std::string_view given, std::string_view token) {
    unsigned char diff = given.size() == token.size() ? 0 : 1;
    for (std::size_t i = 0; i < given.size(); ++i) {
        diff |= static_cast<unsigned char>(given[i] ^
                                           token[i % std::max<std::size_t>(token.size(), 1)]);
    }
    return diff == 0 && !token.empty();
}

bool methodFits(std::string_view request_method, std::string_view route_method) {
    return request_method == route_method || (request_method == "HEAD" && route_method == "GET");
}

// The Allow header for a path: the methods of its route's entries (every method of the
// table for a path matching none), HEAD with GET, and OPTIONS.
std::string allowFor(const Route* route) {
    std::vector<std::string_view> methods;
    for (const auto& e : Routes::table()) {
        if (route != nullptr && e.pattern != route->pattern) {
            continue;
        }
        if (std::find(methods.begin(), methods.end(), e.method) == methods.end()) {
            methods.push_back(e.method);
            if (e.method == "GET") {
                methods.emplace_back("HEAD");
            }
        }
    }
    methods.emplace_back("OPTIONS");
    std::string allow;
    for (auto m : methods) {
        allow.append(allow.empty() ? "" : ", ").append(m);
    }
    return allow;
}

} // namespace

const Route* Routes::match(std::string_view path, std::string_view& param) {
    for (const auto& e : table()) {
        auto brace = e.pattern.find('{');
        if (brace == std::string_view::npos) {
            if (path == e.pattern) {
                param = {};
                return &e;
            }
        } else if (path.starts_with(e.pattern.substr(0, brace))) {
            param = path.substr(brace);
            return &e;
        }
    }
    param = {};
    return nullptr;
}

std::string_view Routes::routeLabel(std::string_view path) {
    std::string_view param;
    const Route* r = match(path, param);
    return r != nullptr ? r->label : kOtherLabel;
}

bool Routes::isSlow(const Request& request) {
    std::string_view param;
    const Route* r = request.malformed ? nullptr : match(request.path, param);
    if (r != nullptr && r->handler == &Routes::apiban) {
        return !apibanIsLookup(param); // a page walks the index; a check is one lookup
    }
    return r != nullptr && (r->slow || request.body.size() > kMaxRequestBody);
}

void Routes::countUnrouted(std::string_view path, int status) {
    std::string_view param;
    count(match(path, param), status);
}

Routes::Routes(ApiOptions options, const store::Index& index, const core::Clock& clock,
               const core::MetricsRegistry& metrics)
    : options_(std::move(options)),
      policy_(options_.policy ? options_.policy
                              : std::make_shared<const block::Policy>(block::PolicyOptions{})),
      allowed_numbers_(normaliseAllowList(options_.allow_numbers)), index_(index), clock_(clock),
      metrics_(metrics),
      lists_(options_.max_lists, "api_lists", "Full lists and exports (--api-max-lists)"),
      counts_(std::make_unique<StatusCounts[]>(table().size() + 1)),
      stats_query_(std::make_unique<store::StatsQuery>(options_.db_path)) {}

Routes::~Routes() = default;

Response Routes::handle(const Request& request) {
    std::string_view param;
    const Route* route = request.malformed ? nullptr : match(request.path, param);
    Response r;
    try {
        r = dispatch(request, route, param);
    } catch (const std::exception&) {
        r = message(500, "error", "Internal error");
    }
    if (request.path.starts_with("/v1/")) {
        // CrowdSec's error shape under /v1/: a bouncer dereferences "message" (a body
        // without it crashes the firewall bouncer).
        constexpr std::string_view kError = R"({"error": )";
        if (r.status >= 400 && std::string_view(r.body).starts_with(kError)) {
            r.body.replace(0, kError.size(), R"({"message":)");
        }
    }
    try {
        count(route, r.status);
    } catch (const std::exception&) {
        // out of memory for a rare status's counter: the answer matters more
    }
    return r;
}

Response Routes::dispatch(const Request& request, const Route* route, std::string_view param) {
    if (request.malformed) {
        return invalid();
    }
    Response r;
    if (request.method == "OPTIONS") {
        r.status = 204;
        r.content_type = {};
        r.headers = {{"Allow", allowFor(route)}};
        if (!options_.cors_origin.empty()) {
            r.headers.emplace_back("Access-Control-Allow-Methods", allowFor(route));
            r.headers.emplace_back("Access-Control-Allow-Headers", "Authorization, Content-Type");
        }
        return r;
    }
    // The entry for this method among those of the matched pattern.
    const Route* entry = nullptr;
    bool method_known = false;
    for (const auto& e : table()) {
        if (route != nullptr && e.pattern != route->pattern) {
            continue;
        }
        if (methodFits(request.method, e.method)) {
            method_known = true;
            if (route != nullptr) {
                entry = &e;
                break;
            }
        }
    }
    if (!method_known) {
        r = message(405, "error", "Method not allowed");
        r.headers.emplace_back("Allow", allowFor(route));
        return r;
    }
    if (!options_.token.empty() && (entry == nullptr || entry->auth)) {
        std::string_view auth = request.authorization;
        constexpr std::string_view kBearer = "Bearer ";
        bool ok = auth.size() > kBearer.size() && auth.substr(0, kBearer.size()) == kBearer &&
                  constantTimeEquals(auth.substr(kBearer.size()), options_.token);
        if (!ok) {
            r = message(401, "error", "Unauthorized");
            r.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"sentrypeer\"");
            return r;
        }
    }
    if (entry == nullptr) {
        return notFoundRoute();
    }
    return (this->*(entry->handler))(request, param);
}

void Routes::count(const Route* route, int status) {
    auto row = route == nullptr ? table().size() : static_cast<std::size_t>(route - table().data());
    std::size_t s = statusIndex(status);
    if (s < kStatuses) {
        counts_[row][s].fetch_add(1, std::memory_order_relaxed);
        return;
    }
    std::lock_guard lock(counts_mutex_);
    ++other_counts_[{std::string(route == nullptr ? kOtherLabel : route->label), status}];
}

void Routes::registerMetrics(core::MetricsRegistry& registry) {
    registry.add([this](core::MetricsWriter& w) {
        w.family("api_requests_total", "counter",
                 "HTTP API requests answered, by route and status");
        // Ordered by (route, status), as one std::map of them would be.
        std::map<std::pair<std::string, int>, std::uint64_t> all;
        {
            std::lock_guard lock(counts_mutex_);
            all = other_counts_;
        }
        for (std::size_t row = 0; row <= table().size(); ++row) {
            std::string_view label = row < table().size() ? table()[row].label : kOtherLabel;
            for (std::size_t s = 0; s < kStatuses; ++s) {
                if (auto n = counts_[row][s].load(std::memory_order_relaxed); n != 0) {
                    all[{std::string(label), kStatusCodes[s]}] += n;
                }
            }
        }
        for (const auto& [key, n] : all) {
            auto status = std::to_string(key.second);
            w.sample(n, {{"route", key.first}, {"status", status}});
        }
        lists_.collect(w);
    });
}

// ---- the small routes ------------------------------------------------------------------

Response Routes::root(const Request&, std::string_view) {
    return json(200, JsonObject().str("status", "OK").done());
}

Response Routes::healthCheck(const Request& r, std::string_view param) {
    (void)param;
    if (r.content_type.find("application/json") != std::string::npos) {
        return json(200, JsonObject()
                             .str("status", "OK")
                             .str("message", "Hello from SentryPeer!")
                             .str("version", core::kVersion)
                             .done());
    }
    Response h;
    h.content_type = "text/html; charset=utf-8";
    h.body = std::string("<!DOCTYPE html><html><head><title>SentryPeer</title></head><body>"
                         "<h1>Hello from SentryPeer!</h1><p>Status: OK</p><p>Version: ") +
             core::kVersion + "</p></body></html>";
    return h;
}

Response Routes::metricsText(const Request&, std::string_view) {
    Response m;
    m.content_type = "text/plain; version=0.0.4; charset=utf-8";
    m.body = metrics_.render();
    return m;
}

Response Routes::p2pStatus(const Request&, std::string_view) {
    if (!options_.p2p_status) {
        return json(200, JsonObject().str("state", "off").done());
    }
    return json(200, options_.p2p_status());
}

// The nftables blocker's state (src/nft): {"state": "off"} when --nft is off.
Response Routes::blockStatus(const Request&, std::string_view) {
    if (!options_.block_status) {
        return json(200, JsonObject().str("state", "off").done());
    }
    return json(200, options_.block_status());
}

} // namespace sp::api
