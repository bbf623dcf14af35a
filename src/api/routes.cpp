#include "api/routes.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <array>
#include <cstring>
#include <sqlite3.h>
#include <sys/mman.h>
#include <type_traits>

#include "core/json.hpp"
#include "core/text.hpp"
#include "core/version.hpp"

namespace sp::api {

namespace {

using core::TimePoint;

constexpr std::size_t kChunkBytes = 32UL * 1024; // streamed lists: bytes per chunk
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

// {"<key>": "<text>"}, as JsonObject would write it, in one allocation.
Response message(int status, std::string_view key, std::string_view text) {
    Response r;
    r.status = status;
    r.body.reserve(key.size() + text.size() + 8);
    r.body.push_back('{');
    core::appendJsonString(r.body, key);
    r.body.append(": ");
    core::appendJsonString(r.body, text);
    r.body.push_back('}');
    return r;
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

// ---- timestamps and numbers, appended in place ----------------------------------------

void appendTimestamp(std::string& out, TimePoint t) {
    std::size_t at = out.size();
    out.resize(at + core::kTimestampLength);
    core::writeTimestamp(out.data() + at, t);
}

// ---- listing the index -------------------------------------------------------------

// Memory for one list's snapshot, mapped for it and unmapped when the response is done.
// Not from malloc: glibc would keep a few MB of it in each sp-api thread's arena after the
// first large list (its mmap threshold adapts upwards), and the resident set would keep
// it. Untouched pages of the mapping cost nothing, so capacity can be generous. T must be
// trivially copyable (the mapping moves with mremap).
template <typename T> class MappedArray {
    static_assert(std::is_trivially_copyable_v<T>);

public:
    MappedArray() = default;
    MappedArray(const MappedArray&) = delete;
    MappedArray& operator=(const MappedArray&) = delete;
    MappedArray(MappedArray&& o) noexcept
        : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)),
          capacity_(std::exchange(o.capacity_, 0)) {}
    MappedArray& operator=(MappedArray&& o) noexcept {
        std::swap(data_, o.data_);
        std::swap(size_, o.size_);
        std::swap(capacity_, o.capacity_);
        return *this;
    }
    ~MappedArray() {
        if (data_ != nullptr) {
            munmap(data_, capacity_ * sizeof(T));
        }
    }

    void reserve(std::size_t n) {
        if (n <= capacity_) {
            return;
        }
        n = std::max<std::size_t>(n, 4096 / sizeof(T) + 1);
        void* p = data_ == nullptr
                      ? mmap(nullptr, n * sizeof(T), PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                      : mremap(data_, capacity_ * sizeof(T), n * sizeof(T), MREMAP_MAYMOVE);
        if (p == MAP_FAILED) {
            throw std::bad_alloc();
        }
        data_ = static_cast<T*>(p);
        capacity_ = n;
    }
    void pushBack(const T& v) {
        if (size_ == capacity_) {
            reserve(capacity_ * 2 + 1);
        }
        data_[size_++] = v;
    }
    void append(const T* p, std::size_t n) {
        if (size_ + n > capacity_) {
            reserve(std::max(capacity_ * 2, size_ + n));
        }
        std::copy(p, p + n, data_ + size_);
        size_ += n;
    }
    void resize(std::size_t n) { // shrinking only
        size_ = std::min(n, size_);
    }
    T* begin() { return data_; }
    T* end() { return data_ + size_; }
    const T* begin() const { return data_; }
    const T* end() const { return data_ + size_; }
    const T* data() const { return data_; }
    std::size_t size() const { return size_; }
    bool empty() const { return size_ == 0; }
    T& operator[](std::size_t i) { return data_[i]; }
    const T& operator[](std::size_t i) const { return data_[i]; }
    T& back() { return data_[size_ - 1]; }

private:
    T* data_ = nullptr;
    std::size_t size_ = 0;
    std::size_t capacity_ = 0;
};

// A snapshot of the index taken under its shared lock: one small fixed-size record per
// listed key, the keys' bytes (each preceded by its first-seen time for CSV) in one
// buffer. Sorted, then streamed; the document itself is never built.
struct Entry {
    TimePoint last;
    std::uint64_t count;
    std::uint32_t key_at; // offset in Page::keys
    std::uint32_t key_size;
};

struct Cursor {
    TimePoint last;
    std::string key;
};

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
    MappedArray<Entry> entries;
    MappedArray<char> keys;
    bool with_first = false;         // keys: each key preceded by its TimePoint first
    std::optional<std::string> next; // cursor of the last entry when more remain

    std::string_view key(const Entry& e) const {
        return {keys.data() + e.key_at + (with_first ? sizeof(TimePoint) : 0), e.key_size};
    }
    TimePoint first(const Entry& e) const {
        TimePoint t;
        std::memcpy(&t, keys.data() + e.key_at, sizeof t);
        return t;
    }
    // Order: newest first, then by key, so that a cursor (last, key) is a total order.
    bool before(const Entry& a, const Entry& b) const {
        return a.last != b.last ? a.last > b.last : key(a) < key(b);
    }
    std::string cursor(const Entry& e) const {
        std::string c = micros(e.last);
        c.push_back(',');
        c.append(key(e));
        return c;
    }
};

Page listIndex(const store::Index& index, bool ips, const ListQuery& q, bool with_first = false) {
    Page page;
    page.with_first = with_first;
    index.read([&](const store::Index::Maps& maps) {
        const auto& map = ips ? maps.by_ip : maps.by_number;
        // Generous: pages never written to stay out of the resident set.
        page.entries.reserve(map.size());
        page.keys.reserve(map.size() * (with_first ? 40 : 32));
        for (const auto& [key, seen] : map) {
            if (q.since && seen.last < *q.since) {
                continue;
            }
            if (!q.prefix.empty() && key.compare(0, q.prefix.size(), q.prefix) != 0) {
                continue;
            }
            if (q.after && (seen.last > q.after->last ||
                            (seen.last == q.after->last && key <= q.after->key))) {
                continue; // not after the cursor in list order
            }
            page.entries.pushBack(Entry{seen.last, seen.count,
                                        static_cast<std::uint32_t>(page.keys.size()),
                                        static_cast<std::uint32_t>(key.size())});
            if (with_first) {
                char first[sizeof(TimePoint)];
                std::memcpy(first, &seen.first, sizeof first);
                page.keys.append(first, sizeof first);
            }
            page.keys.append(key.data(), key.size());
        }
    });
    auto before = [&page](const Entry& a, const Entry& b) { return page.before(a, b); };
    if (q.limit && page.entries.size() > *q.limit) {
        std::partial_sort(page.entries.begin(),
                          page.entries.begin() + static_cast<std::ptrdiff_t>(*q.limit),
                          page.entries.end(), before);
        page.entries.resize(*q.limit);
        page.next = page.cursor(page.entries.back());
    } else {
        std::sort(page.entries.begin(), page.entries.end(), before);
    }
    return page;
}

// Streams header, then each entry through `item`, then footer; about kChunkBytes per chunk.
template <typename ItemFn>
BodyStream streamEntries(std::shared_ptr<Page> page, std::string header, ItemFn item,
                         std::string footer) {
    return [page = std::move(page), header = std::move(header), item = std::move(item),
            footer = std::move(footer), i = std::size_t{0},
            started = false](std::string& chunk) mutable {
        if (!started) {
            chunk.reserve(kChunkBytes + 512);
            chunk.append(header);
            started = true;
        }
        const std::size_t n = page->entries.size();
        for (; i < n && chunk.size() < kChunkBytes; ++i) {
            item(chunk, *page, page->entries[i], i);
        }
        if (i < n) {
            return true;
        }
        chunk.append(footer);
        return false;
    };
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
    // Each item as JsonObject().str(item_key, key).str("seen_last", ...).str("seen_count",
    // ...).done() would write it, appended in place.
    std::string open = "{";
    core::appendJsonString(open, item_key);
    open.append(": ");
    Response r;
    r.stream = streamEntries(
        std::move(page), std::move(header),
        [open = std::move(open)](std::string& out, const Page& p, const Entry& e, std::size_t i) {
            if (i > 0) {
                out.append(", ");
            }
            out.append(open);
            core::appendJsonString(out, p.key(e));
            out.append(R"(, "seen_last": ")");
            appendTimestamp(out, e.last);
            out.append(R"(", "seen_count": ")");
            core::appendDecimal(out, e.count);
            out.append("\"}");
        },
        std::move(footer));
    return r;
}

template <typename ItemFn>
Response textStream(std::shared_ptr<Page> page, std::string header, ItemFn item, std::string footer,
                    std::string_view content_type) {
    Response r;
    r.content_type = content_type;
    r.stream =
        streamEntries(std::move(page), std::move(header), std::move(item), std::move(footer));
    return r;
}

// One key per line: IPs for a firewall script, numbers for a dial plan.
Response plainList(std::shared_ptr<Page> page) {
    return textStream(
        std::move(page), "",
        [](std::string& out, const Page& p, const Entry& e, std::size_t) {
            out.append(p.key(e)).push_back('\n');
        },
        "", "text/plain; charset=utf-8");
}

bool validSetName(const std::string& s) {
    return !s.empty() && s.size() <= 28 && std::all_of(s.begin(), s.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '-';
    });
}

bool isV6(std::string_view ip) {
    return ip.find(':') != std::string_view::npos;
}

void appendCsvField(std::string& out, std::string_view s) {
    if (s.find_first_of(",\"\r\n") == std::string_view::npos) {
        out.append(s);
        return;
    }
    out.push_back('"');
    for (char c : s) {
        out.push_back(c);
        if (c == '"') {
            out.push_back('"');
        }
    }
    out.push_back('"');
}

// Writes the canonical printable form of an IP address into text (NUL-terminated); false
// when s is not one.
bool canonicalIp(std::string_view s, char (&text)[INET6_ADDRSTRLEN]) {
    unsigned char buf[16];
    char z[INET6_ADDRSTRLEN];
    if (s.size() >= sizeof z) {
        return false;
    }
    std::copy(s.begin(), s.end(), z);
    z[s.size()] = '\0';
    int family = isV6(s) ? AF_INET6 : AF_INET;
    return inet_pton(family, z, buf) == 1 && inet_ntop(family, buf, text, sizeof text) != nullptr;
}

bool validNumber(std::string_view n) {
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

namespace {

// Route labels for metrics; the index of a label is its row in Routes::counts_.
constexpr std::array<std::string_view, Routes::kRoutes> kRouteLabels = {
    "/",      "/health-check",       "/ip-addresses",      "/numbers",          "/metrics",
    "/stats", "/ip-addresses/ipset", "/ip-addresses/{ip}", "/numbers/{number}", "other"};
// Statuses the API answers; the index of one is its column in Routes::counts_.
constexpr std::array<int, Routes::kStatuses> kStatusCodes = {200, 204, 400, 401,
                                                             404, 405, 500, 503};

std::size_t routeIndex(std::string_view path) {
    for (std::size_t i = 0; i < 7; ++i) { // the exact paths
        if (path == kRouteLabels[i]) {
            return i;
        }
    }
    if (path.starts_with("/ip-addresses/")) {
        return 7;
    }
    if (path.starts_with("/numbers/")) {
        return 8;
    }
    return 9;
}

std::size_t statusIndex(int status) {
    for (std::size_t i = 0; i < kStatusCodes.size(); ++i) {
        if (kStatusCodes[i] == status) {
            return i;
        }
    }
    return kStatusCodes.size();
}

} // namespace

std::string Routes::routeLabel(const std::string& path) {
    return std::string(kRouteLabels[routeIndex(path)]);
}

void Routes::countPath(std::string_view path, int status) {
    std::size_t s = statusIndex(status);
    if (s < kStatuses) {
        counts_[routeIndex(path)][s].fetch_add(1, std::memory_order_relaxed);
        return;
    }
    std::lock_guard lock(counts_mutex_);
    ++other_counts_[{std::string(kRouteLabels[routeIndex(path)]), status}];
}

void Routes::count(const std::string& route, int status) {
    auto label = std::find(kRouteLabels.begin(), kRouteLabels.end(), route);
    std::size_t s = statusIndex(status);
    if (label != kRouteLabels.end() && s < kStatuses) {
        counts_[static_cast<std::size_t>(label - kRouteLabels.begin())][s].fetch_add(
            1, std::memory_order_relaxed);
        return;
    }
    std::lock_guard lock(counts_mutex_);
    ++other_counts_[{route, status}];
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
        for (std::size_t r = 0; r < kRoutes; ++r) {
            for (std::size_t s = 0; s < kStatuses; ++s) {
                if (auto n = counts_[r][s].load(std::memory_order_relaxed); n != 0) {
                    all[{std::string(kRouteLabels[r]), kStatusCodes[s]}] += n;
                }
            }
        }
        for (const auto& [key, n] : all) {
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
            r.content_type = {};
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
    if (p.starts_with("/ip-addresses/")) {
        return ipAddress(std::string_view(p).substr(std::string_view("/ip-addresses/").size()));
    }
    if (p == "/numbers") {
        return numbers(r);
    }
    if (p.starts_with("/numbers/")) {
        auto n = std::string_view(p).substr(std::string_view("/numbers/").size());
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

namespace {

// {"<found_key>": "<key>", "seen_count": "N", "seen_first": "...", "seen_last": "..."}, as
// JsonObject would write it, in one buffer.
Response found(std::string_view found_key, std::string_view key, const store::Seen& seen) {
    Response r;
    r.body.reserve(160 + key.size());
    r.body.push_back('{');
    core::appendJsonString(r.body, found_key);
    r.body.append(": ");
    core::appendJsonString(r.body, key);
    r.body.append(R"(, "seen_count": ")");
    core::appendDecimal(r.body, seen.count);
    r.body.append(R"(", "seen_first": ")");
    appendTimestamp(r.body, seen.first);
    r.body.append(R"(", "seen_last": ")");
    appendTimestamp(r.body, seen.last);
    r.body.append("\"}");
    return r;
}

} // namespace

Response Routes::ipAddress(std::string_view ip) {
    char canonical[INET6_ADDRSTRLEN];
    if (!canonicalIp(ip, canonical)) {
        return invalid();
    }
    auto seen = index_.ip(canonical);
    if (!seen) {
        return message(404, "message", "No bad actor found");
    }
    return found("bad_actor_found", canonical, *seen);
}

Response Routes::number(std::string_view n) {
    // '+' is optional both ways: +4420... finds 4420... and the other way round.
    if (auto seen = index_.number(n)) {
        return found("phone_number_found", n, *seen);
    }
    char other[kMaxNumberLength + 1];
    std::string_view alt;
    if (n[0] == '+') {
        alt = n.substr(1);
    } else {
        other[0] = '+';
        std::copy(n.begin(), n.end(), other + 1);
        alt = std::string_view(other, n.size() + 1);
    }
    if (auto seen = index_.number(alt)) {
        return found("phone_number_found", alt, *seen);
    }
    return message(404, "message", "No phone number found");
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
        auto left = std::chrono::duration_cast<std::chrono::seconds>(max_age - (now - e.last));
        return static_cast<std::uint64_t>(std::max<long long>(1, left.count()));
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
            [set, timeout, timeouts](std::string& out, const Page& p, const Entry& e, std::size_t) {
                auto key = p.key(e);
                out.append("add ").append(set).append(isV6(key) ? "_v6 " : " ").append(key);
                if (timeouts) {
                    out.append(" timeout ");
                    core::appendDecimal(out, timeout(e));
                }
                out.push_back('\n');
            },
            "", "text/plain; charset=utf-8");
    }
    if (format == "nft") {
        // `nft -f file`: a table with one set per family; elements carry their timeouts.
        auto set_text = [&](std::string& s, const std::string& name, const char* type, bool v6) {
            s += "\tset " + name + " {\n\t\ttype " + type + "\n";
            if (timeouts) {
                s += "\t\tflags timeout\n";
            }
            bool first = true;
            for (const auto& e : page->entries) {
                auto key = page->key(e);
                if (isV6(key) != v6) {
                    continue;
                }
                s += first ? "\t\telements = { " : ", ";
                first = false;
                s += key;
                if (timeouts) {
                    s += " timeout ";
                    core::appendDecimal(s, timeout(e));
                    s += "s";
                }
            }
            if (!first) {
                s += " }\n";
            }
            s += "\t}\n";
        };
        Response n;
        n.content_type = "text/plain; charset=utf-8";
        n.body = "table inet " + table + " {\n";
        set_text(n.body, set, "ipv4_addr", false);
        set_text(n.body, set + "_v6", "ipv6_addr", true);
        n.body += "}\n";
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
    auto page = std::make_shared<Page>(listIndex(index_, false, q, format == "csv"));
    if (format == "json") {
        if (page->entries.empty()) {
            return message(404, "message", "No phone numbers found");
        }
        return jsonList(std::move(page), "called_numbers_total", "called_numbers", "called_number");
    }
    if (format == "csv") {
        return textStream(
            std::move(page), "called_number,seen_count,seen_first,seen_last\r\n",
            [](std::string& out, const Page& p, const Entry& e, std::size_t) {
                appendCsvField(out, p.key(e));
                out.push_back(',');
                core::appendDecimal(out, e.count);
                out.push_back(',');
                appendTimestamp(out, p.first(e));
                out.push_back(',');
                appendTimestamp(out, e.last);
                out.append("\r\n");
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
