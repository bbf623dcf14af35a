#include "api/routes.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <sqlite3.h>

#include "core/json.hpp"
#include "core/text.hpp"
#include "core/version.hpp"

namespace sp::api {

namespace {

using core::TimePoint;

constexpr std::size_t kEntriesPerChunk = 512;
constexpr std::size_t kMaxNumberLength = 64;

// SentryPeer's bodies come from jansson's default encoder: ", " and ": " separators.
class JsonObject {
public:
    JsonObject& str(std::string_view key, std::string_view value) {
        sep(key);
        core::appendJsonString(out_, value);
        return *this;
    }
    JsonObject& num(std::string_view key, std::uint64_t value) {
        sep(key);
        out_.append(std::to_string(value));
        return *this;
    }
    JsonObject& raw(std::string_view key, std::string_view json) {
        sep(key);
        out_.append(json);
        return *this;
    }
    std::string done() { return std::move(out_) + "}"; }
    // The object without its closing brace, for a streamed list that follows.
    std::string open() { return std::move(out_); }

private:
    void sep(std::string_view key) {
        out_.append(out_.size() == 1 ? "" : ", ");
        core::appendJsonString(out_, key);
        out_.append(": ");
    }
    std::string out_ = "{";
};

Response json(int status, std::string body) {
    Response r;
    r.status = status;
    r.body = std::move(body);
    return r;
}

Response message(int status, std::string_view key, std::string_view text) {
    return json(status, JsonObject().str(key, text).done());
}

Response invalid() {
    return message(400, "error", "The request data was invalid");
}
Response notFoundRoute() {
    return message(404, "error", "The requested resource could not be found.");
}

std::string micros(TimePoint t) {
    return std::to_string(
        std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count());
}

// ---- listing the index -------------------------------------------------------------

struct Entry {
    std::string key;
    store::Seen seen;
};

struct Cursor {
    TimePoint last;
    std::string key;
};

// Order: newest first, then by key, so that a cursor (last, key) is a total order.
bool before(const Entry& a, const Entry& b) {
    return a.seen.last != b.seen.last ? a.seen.last > b.seen.last : a.key < b.key;
}

struct ListQuery {
    std::optional<std::size_t> limit;
    std::optional<Cursor> after;
    std::optional<TimePoint> since;
    std::string prefix;
};

std::optional<Cursor> parseCursor(const std::string& s) {
    auto comma = s.find(',');
    if (comma == std::string::npos || comma == 0 || comma > 20) {
        return std::nullopt;
    }
    long long us = 0;
    for (std::size_t i = 0; i < comma; ++i) {
        if (s[i] < '0' || s[i] > '9') {
            return std::nullopt;
        }
        us = us * 10 + (s[i] - '0');
    }
    return Cursor{TimePoint{std::chrono::microseconds(us)}, s.substr(comma + 1)};
}

std::string cursorOf(const Entry& e) {
    return micros(e.seen.last) + "," + e.key;
}

// "1h", "7d" (that long ago) or a timestamp ("2026-11-27 04:00:00", fraction optional).
std::optional<TimePoint> parseSince(const std::string& s, TimePoint now) {
    if (auto d = core::parseDuration(s)) {
        return now - *d;
    }
    return core::parseTimestamp(s);
}

// Reads ?limit, ?after, ?since and ?prefix; false when one is malformed.
bool parseListQuery(const Request& r, TimePoint now, ListQuery& q) {
    if (auto v = r.param("limit")) {
        if (v->empty() || v->size() > 9 ||
            !std::all_of(v->begin(), v->end(), [](char c) { return c >= '0' && c <= '9'; }) ||
            std::stoul(*v) == 0) {
            return false;
        }
        q.limit = std::stoul(*v);
    }
    if (auto v = r.param("after")) {
        q.after = parseCursor(*v);
        if (!q.after) {
            return false;
        }
    }
    if (auto v = r.param("since")) {
        q.since = parseSince(*v, now);
        if (!q.since) {
            return false;
        }
    }
    if (auto v = r.param("prefix")) {
        q.prefix = *v;
    }
    return true;
}

struct Page {
    std::vector<Entry> entries;
    std::optional<std::string> next; // cursor of the last entry when more remain
};

Page listIndex(const store::Index& index, bool ips, const ListQuery& q) {
    Page page;
    index.read([&](const store::Index::Maps& maps) {
        const auto& map = ips ? maps.by_ip : maps.by_number;
        page.entries.reserve(map.size());
        for (const auto& [key, seen] : map) {
            if (q.since && seen.last < *q.since) {
                continue;
            }
            if (!q.prefix.empty() && key.compare(0, q.prefix.size(), q.prefix) != 0) {
                continue;
            }
            if (q.after && !before(Entry{q.after->key, {0, {}, q.after->last}}, Entry{key, seen})) {
                continue;
            }
            page.entries.push_back(Entry{key, seen});
        }
    });
    if (q.limit && page.entries.size() > *q.limit) {
        std::partial_sort(page.entries.begin(),
                          page.entries.begin() + static_cast<std::ptrdiff_t>(*q.limit),
                          page.entries.end(), before);
        page.entries.resize(*q.limit);
        page.next = cursorOf(page.entries.back());
    } else {
        std::sort(page.entries.begin(), page.entries.end(), before);
    }
    return page;
}

// Streams header, then each entry through `item`, then footer; kEntriesPerChunk per chunk.
template <typename ItemFn>
BodyStream streamEntries(std::shared_ptr<Page> page, std::string header, ItemFn item,
                         std::string footer) {
    return [page = std::move(page), header = std::move(header), item = std::move(item),
            footer = std::move(footer), i = std::size_t{0},
            started = false](std::string& chunk) mutable {
        if (!started) {
            chunk.append(header);
            started = true;
        }
        std::size_t end = std::min(page->entries.size(), i + kEntriesPerChunk);
        for (; i < end; ++i) {
            item(chunk, page->entries[i], i);
        }
        if (i < page->entries.size()) {
            return true;
        }
        chunk.append(footer);
        return false;
    };
}

std::string seenCountJson(const store::Seen& s) {
    return std::to_string(s.count);
}

// A SentryPeer-shaped JSON list: {"<total_key>": N, "<list_key>": [{...}, ...]}.
Response jsonList(std::shared_ptr<Page> page, const char* total_key, const char* list_key,
                  const char* item_key) {
    std::string header =
        JsonObject().num(total_key, page->entries.size()).raw(list_key, "[").open();
    std::string footer = "]";
    if (page->next) {
        std::string tail = ", ";
        core::appendJsonString(tail, "next_after");
        tail.append(": ");
        core::appendJsonString(tail, *page->next);
        footer += tail;
    }
    footer += "}";
    Response r;
    r.stream = streamEntries(
        std::move(page), std::move(header),
        [item_key](std::string& out, const Entry& e, std::size_t i) {
            if (i > 0) {
                out.append(", ");
            }
            out.append(JsonObject()
                           .str(item_key, e.key)
                           .str("seen_last", core::formatTimestamp(e.seen.last))
                           .str("seen_count", seenCountJson(e.seen))
                           .done());
        },
        std::move(footer));
    return r;
}

Response textStream(std::shared_ptr<Page> page, std::string header,
                    std::function<void(std::string&, const Entry&, std::size_t)> item,
                    std::string footer, std::string content_type) {
    Response r;
    r.content_type = std::move(content_type);
    r.stream =
        streamEntries(std::move(page), std::move(header), std::move(item), std::move(footer));
    return r;
}

// One key per line: IPs for a firewall script, numbers for a dial plan.
Response plainList(std::shared_ptr<Page> page) {
    return textStream(
        std::move(page), "",
        [](std::string& out, const Entry& e, std::size_t) { out.append(e.key).push_back('\n'); },
        "", "text/plain; charset=utf-8");
}

bool validSetName(const std::string& s) {
    return !s.empty() && s.size() <= 28 && std::all_of(s.begin(), s.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '-';
    });
}

bool isV6(const std::string& ip) {
    return ip.find(':') != std::string::npos;
}

std::string csvField(const std::string& s) {
    if (s.find_first_of(",\"\r\n") == std::string::npos) {
        return s;
    }
    std::string out = "\"";
    for (char c : s) {
        out.push_back(c);
        if (c == '"') {
            out.push_back('"');
        }
    }
    return out + "\"";
}

// The canonical printable form of an IP address, or nullopt when it is not one.
std::optional<std::string> canonicalIp(const std::string& s) {
    unsigned char buf[16];
    char text[INET6_ADDRSTRLEN];
    int family = isV6(s) ? AF_INET6 : AF_INET;
    if (s.size() >= INET6_ADDRSTRLEN || inet_pton(family, s.c_str(), buf) != 1 ||
        inet_ntop(family, buf, text, sizeof text) == nullptr) {
        return std::nullopt;
    }
    return std::string(text);
}

bool validNumber(const std::string& n) {
    std::size_t start = !n.empty() && n[0] == '+' ? 1 : 0;
    return n.size() > start && n.size() <= kMaxNumberLength &&
           std::all_of(n.begin() + static_cast<std::ptrdiff_t>(start), n.end(),
                       [](char c) { return (c >= '0' && c <= '9') || c == '*' || c == '#'; });
}

bool constantTimeEquals(std::string_view a, std::string_view b) {
    unsigned char diff = a.size() == b.size() ? 0 : 1;
    for (std::size_t i = 0; i < a.size(); ++i) {
        diff |= static_cast<unsigned char>(a[i] ^ b[i % std::max<std::size_t>(b.size(), 1)]);
    }
    return diff == 0 && !b.empty();
}

} // namespace

// ---- /stats through a read-only connection ------------------------------------------

struct Routes::StatsDb {
    std::mutex mutex;
    sqlite3* db = nullptr;
    ~StatsDb() { sqlite3_close(db); }
};

Routes::Routes(ApiOptions options, const store::Index& index, const core::Clock& clock,
               const core::MetricsRegistry& metrics)
    : options_(std::move(options)), index_(index), clock_(clock), metrics_(metrics),
      stats_db_(std::make_unique<StatsDb>()) {}

Routes::~Routes() = default;

std::string Routes::routeLabel(const std::string& path) {
    static constexpr const char* kExact[] = {
        "/",        "/health-check", "/ip-addresses",      "/numbers",
        "/metrics", "/stats",        "/ip-addresses/ipset"};
    for (const char* p : kExact) {
        if (path == p) {
            return p;
        }
    }
    if (path.rfind("/ip-addresses/", 0) == 0) {
        return "/ip-addresses/{ip}";
    }
    if (path.rfind("/numbers/", 0) == 0) {
        return "/numbers/{number}";
    }
    return "other";
}

void Routes::count(const std::string& route, int status) {
    std::lock_guard lock(counts_mutex_);
    ++counts_[{route, status}];
}

void Routes::registerMetrics(core::MetricsRegistry& registry) {
    registry.add([this](core::MetricsWriter& w) {
        w.family("api_requests_total", "counter",
                 "HTTP API requests answered, by route and status");
        std::lock_guard lock(counts_mutex_);
        for (const auto& [key, n] : counts_) {
            auto status = std::to_string(key.second);
            w.sample(n, {{"route", key.first}, {"status", status}});
        }
    });
}

Response Routes::handle(const Request& request) {
    try {
        Response r;
        if (request.method == "OPTIONS") {
            r.status = 204;
            r.content_type.clear();
            r.headers = {{"Allow", "GET, HEAD, OPTIONS"},
                         {"Access-Control-Allow-Methods", "GET, HEAD, OPTIONS"},
                         {"Access-Control-Allow-Headers", "Authorization, Content-Type"}};
            return r;
        }
        if (request.method != "GET" && request.method != "HEAD") {
            r = message(405, "error", "Method not allowed");
            r.headers.emplace_back("Allow", "GET, HEAD, OPTIONS");
            return r;
        }
        if (!options_.token.empty() && request.path != "/health-check") {
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
        return route(request);
    } catch (const std::exception& e) {
        return message(500, "error", "Internal error");
    }
}

Response Routes::route(const Request& r) {
    const std::string& p = r.path;
    if (p == "/") {
        return json(200, JsonObject().str("status", "OK").done());
    }
    if (p == "/health-check") {
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
    if (p == "/ip-addresses" || p == "/ip-addresses/ipset") {
        return ipAddresses(r);
    }
    if (p.rfind("/ip-addresses/", 0) == 0) {
        return ipAddress(p.substr(std::string_view("/ip-addresses/").size()));
    }
    if (p == "/numbers") {
        return numbers(r);
    }
    if (p.rfind("/numbers/", 0) == 0) {
        std::string n = p.substr(std::string_view("/numbers/").size());
        if (!validNumber(n)) {
            return notFoundRoute();
        }
        return number(n);
    }
    if (p == "/metrics") {
        Response m;
        m.content_type = "text/plain; version=0.0.4; charset=utf-8";
        m.body = metrics_.render();
        return m;
    }
    if (p == "/stats") {
        return stats(r);
    }
    if (p == "/p2p/status") {
        if (!options_.p2p_status) {
            return json(200, JsonObject().str("state", "off").done());
        }
        return json(200, options_.p2p_status());
    }
    return notFoundRoute();
}

Response Routes::ipAddress(const std::string& ip) {
    auto canonical = canonicalIp(ip);
    if (!canonical) {
        return invalid();
    }
    auto seen = index_.ip(*canonical);
    if (!seen) {
        return message(404, "message", "No bad actor found");
    }
    return json(200, JsonObject()
                         .str("bad_actor_found", *canonical)
                         .str("seen_count", std::to_string(seen->count))
                         .str("seen_first", core::formatTimestamp(seen->first))
                         .str("seen_last", core::formatTimestamp(seen->last))
                         .done());
}

Response Routes::number(const std::string& n) {
    // '+' is optional both ways: +4420... finds 4420... and the other way round.
    std::string found = n;
    auto seen = index_.number(found);
    if (!seen) {
        found = n[0] == '+' ? n.substr(1) : "+" + n;
        seen = index_.number(found);
    }
    if (!seen) {
        return message(404, "message", "No phone number found");
    }
    return json(200, JsonObject()
                         .str("phone_number_found", found)
                         .str("seen_count", std::to_string(seen->count))
                         .str("seen_first", core::formatTimestamp(seen->first))
                         .str("seen_last", core::formatTimestamp(seen->last))
                         .done());
}

Response Routes::ipAddresses(const Request& r) {
    auto now = clock_.now();
    ListQuery q;
    std::string format =
        r.path == "/ip-addresses/ipset" ? "ipset" : r.param("format").value_or("json");
    std::string set = r.param("set").value_or("sentrypeer");
    std::string table = r.param("table").value_or("sentrypeer");
    if (!parseListQuery(r, now, q) || !validSetName(set) || !validSetName(table)) {
        return invalid();
    }
    auto page = std::make_shared<Page>(listIndex(index_, true, q));
    if (format == "json") {
        if (page->entries.empty()) {
            return message(404, "message", "No bad actors found");
        }
        return jsonList(std::move(page), "ip_addresses_total", "ip_addresses", "ip_address");
    }
    // Exports: the remaining retention of each entry becomes its timeout.
    auto max_age = options_.max_age;
    auto timeout = [max_age, now](const Entry& e) {
        auto left = std::chrono::duration_cast<std::chrono::seconds>(max_age - (now - e.seen.last));
        return std::to_string(std::max<long long>(1, left.count()));
    };
    bool timeouts = max_age.count() > 0;
    if (format == "plain") {
        return plainList(std::move(page));
    }
    if (format == "ipset") {
        // `ipset restore -exist < file`: one set per address family.
        std::string options = timeouts ? " timeout " + std::to_string(max_age.count()) : "";
        std::string header = "create " + set + " hash:ip family inet" + options + "\n" + "create " +
                             set + "_v6 hash:ip family inet6" + options + "\n";
        return textStream(
            std::move(page), header,
            [set, timeout, timeouts](std::string& out, const Entry& e, std::size_t) {
                out.append("add ").append(set).append(isV6(e.key) ? "_v6 " : " ").append(e.key);
                if (timeouts) {
                    out.append(" timeout ").append(timeout(e));
                }
                out.push_back('\n');
            },
            "", "text/plain; charset=utf-8");
    }
    if (format == "nft") {
        // `nft -f file`: a table with one set per family; elements carry their timeouts.
        auto v4 = std::make_shared<Page>();
        auto v6 = std::make_shared<Page>();
        for (auto& e : page->entries) {
            (isV6(e.key) ? v6 : v4)->entries.push_back(std::move(e));
        }
        auto set_text = [&](const std::string& name, const char* type, const Page& p) {
            std::string s = "\tset " + name + " {\n\t\ttype " + type + "\n";
            if (timeouts) {
                s += "\t\tflags timeout\n";
            }
            if (!p.entries.empty()) {
                s += "\t\telements = { ";
                for (std::size_t i = 0; i < p.entries.size(); ++i) {
                    s += (i ? ", " : "") + p.entries[i].key;
                    if (timeouts) {
                        s += " timeout " + timeout(p.entries[i]) + "s";
                    }
                }
                s += " }\n";
            }
            return s + "\t}\n";
        };
        Response n;
        n.content_type = "text/plain; charset=utf-8";
        n.body = "table inet " + table + " {\n" + set_text(set, "ipv4_addr", *v4) +
                 set_text(set + "_v6", "ipv6_addr", *v6) + "}\n";
        return n;
    }
    return invalid();
}

Response Routes::numbers(const Request& r) {
    ListQuery q;
    if (!parseListQuery(r, clock_.now(), q)) {
        return invalid();
    }
    std::string format = r.param("format").value_or("json");
    auto page = std::make_shared<Page>(listIndex(index_, false, q));
    if (format == "json") {
        if (page->entries.empty()) {
            return message(404, "message", "No phone numbers found");
        }
        return jsonList(std::move(page), "called_numbers_total", "called_numbers", "called_number");
    }
    if (format == "csv") {
        return textStream(
            std::move(page), "called_number,seen_count,seen_first,seen_last\r\n",
            [](std::string& out, const Entry& e, std::size_t) {
                out.append(csvField(e.key))
                    .append(",")
                    .append(std::to_string(e.seen.count))
                    .append(",")
                    .append(core::formatTimestamp(e.seen.first))
                    .append(",")
                    .append(core::formatTimestamp(e.seen.last))
                    .append("\r\n");
            },
            "", "text/csv; charset=utf-8");
    }
    if (format == "plain") {
        return plainList(std::move(page));
    }
    return invalid();
}

Response Routes::stats(const Request& r) {
    auto now = clock_.now();
    auto window = core::parseDuration(r.param("window").value_or("24h"));
    std::size_t top = 10;
    if (auto t = r.param("top")) {
        if (t->empty() || t->size() > 3 || !std::all_of(t->begin(), t->end(), ::isdigit)) {
            return invalid();
        }
        top = std::clamp<std::size_t>(std::stoul(*t), 1, 100);
    }
    if (!window || window->count() <= 0 || *window > std::chrono::hours(24 * 366)) {
        return invalid();
    }
    auto since_us =
        std::chrono::duration_cast<std::chrono::microseconds>((now - *window).time_since_epoch())
            .count();

    std::lock_guard lock(stats_db_->mutex);
    if (stats_db_->db == nullptr) {
        if (sqlite3_open_v2(options_.db_path.c_str(), &stats_db_->db,
                            SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr) != SQLITE_OK) {
            sqlite3_close(stats_db_->db);
            stats_db_->db = nullptr;
            return message(503, "error", "Database unavailable");
        }
        sqlite3_busy_timeout(stats_db_->db, 2000);
    }
    sqlite3* db = stats_db_->db;

    // Runs a query returning (text, count) rows as a JSON array of {key: text, "events": n}.
    auto top_list = [&](const char* sql, const char* key, bool hours) {
        std::string out = "[";
        sqlite3_stmt* st = nullptr;
        if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) != SQLITE_OK) {
            return std::string("[]");
        }
        sqlite3_bind_int64(st, 1, since_us);
        sqlite3_bind_int64(st, 2, static_cast<sqlite3_int64>(top));
        bool first = true;
        while (sqlite3_step(st) == SQLITE_ROW) {
            std::string label;
            if (hours) {
                label = core::formatTimestamp(
                            TimePoint{std::chrono::hours(sqlite3_column_int64(st, 0))})
                            .substr(0, 19);
            } else {
                const auto* t = sqlite3_column_text(st, 0);
                label = t != nullptr ? reinterpret_cast<const char*>(t) : "";
            }
            out += first ? "" : ", ";
            first = false;
            out += JsonObject()
                       .str(key, label)
                       .num("events", static_cast<std::uint64_t>(sqlite3_column_int64(st, 1)))
                       .done();
        }
        sqlite3_finalize(st);
        return out + "]";
    };
    auto grouped = [](const char* column) {
        return std::string("SELECT ") + column +
               ", COUNT(*) AS n FROM honey WHERE event_time >= ?1 GROUP BY 1 ORDER BY n DESC, 1 "
               "LIMIT ?2";
    };
    auto totals = index_.read([](const store::Index::Maps& m) {
        return JsonObject()
            .num("events", m.events)
            .num("ip_addresses", m.by_ip.size())
            .num("called_numbers", m.by_number.size())
            .done();
    });
    std::string body =
        JsonObject()
            .num("window_seconds", static_cast<std::uint64_t>(window->count()))
            .str("generated_at", core::formatTimestamp(now))
            .raw("totals", totals)
            .raw("events_per_hour",
                 top_list("SELECT event_time / 3600000000 AS h, COUNT(*) FROM honey WHERE "
                          "event_time >= ?1 GROUP BY h ORDER BY h LIMIT 100000 + ?2",
                          "hour", true))
            .raw("top_called_numbers",
                 top_list(grouped("called_number").c_str(), "called_number", false))
            .raw("top_ip_addresses", top_list(grouped("source_ip").c_str(), "ip_address", false))
            .raw("top_user_agents", top_list(grouped("user_agent").c_str(), "user_agent", false))
            .raw("top_methods", top_list(grouped("method").c_str(), "method", false))
            .raw("top_transports", top_list(grouped("transport_type").c_str(), "transport", false))
            .done();
    return json(200, std::move(body));
}

} // namespace sp::api
