#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <set>

#include "api/exports.hpp"
#include "api/http.hpp"
#include "api/limits.hpp"
#include "api/list_query.hpp"
#include "api/routes.hpp"
#include "core/text.hpp"

using namespace sp;
using namespace std::chrono_literals;

namespace {

struct RoutesTest : ::testing::Test {
    core::ManualClock clock{core::TimePoint{std::chrono::seconds(1'800'000'000)}};
    store::Index index;
    core::MetricsRegistry metrics;
    std::unique_ptr<api::Routes> routes;

    void SetUp() override { make(api::ApiOptions{}); }
    void make(std::string token) {
        api::ApiOptions o;
        o.token = std::move(token);
        make(std::move(o));
    }
    void make(api::ApiOptions o) {
        o.db_path = "/nonexistent.db";
        o.block_window = 7 * 24h;
        routes = std::make_unique<api::Routes>(std::move(o), index, clock, metrics);
    }
    void probe(const std::string& ip, const std::string& number, std::chrono::seconds ago = 0s) {
        core::Event e;
        e.source_ip = ip;
        e.called_number = number;
        e.time = clock.now() - ago;
        index.add(e);
        index.publish();
    }
    api::Response get(const std::string& target, std::string method = "GET",
                      std::string auth = "") {
        api::Request r;
        r.method = std::move(method);
        r.authorization = std::move(auth);
        EXPECT_TRUE(api::parseTarget(target, r.path, r.query));
        return routes->handle(r);
    }
    static std::string body(api::Response r) {
        if (!r.stream) {
            return r.body;
        }
        std::string all;
        std::string chunk;
        bool more = true;
        while (more) {
            chunk.clear();
            more = r.stream(chunk);
            all += chunk;
        }
        return all;
    }
};

} // namespace

TEST(Http, PercentDecoding) {
    std::string path;
    std::map<std::string, std::string> q;
    ASSERT_TRUE(api::parseTarget("/numbers/%2B4420?since=1h&set=a+b&x", path, q));
    EXPECT_EQ(path, "/numbers/+4420");
    EXPECT_EQ(q["since"], "1h");
    EXPECT_EQ(q["set"], "a b");
    EXPECT_EQ(q.count("x"), 1u);
    EXPECT_FALSE(api::parseTarget("/a%zz", path, q));
    EXPECT_FALSE(api::parseTarget("/a%4", path, q));
    EXPECT_FALSE(api::parseTarget("/a%", path, q));
}

TEST_F(RoutesTest, SentryPeerBodies) {
    EXPECT_EQ(get("/").body, R"({"status": "OK"})");
    auto r = get("/nope");
    EXPECT_EQ(r.status, 404);
    EXPECT_EQ(r.body, R"({"error": "The requested resource could not be found."})");
    EXPECT_EQ(get("/ip-addresses").body, R"({"message": "No bad actors found"})");
    EXPECT_EQ(get("/numbers").body, R"({"message": "No phone numbers found"})");
    EXPECT_EQ(get("/ip-addresses/192.0.2.1").body, R"({"message": "No bad actor found"})");
    EXPECT_EQ(get("/ip-addresses/not-an-ip").status, 400);
    EXPECT_EQ(get("/ip-addresses/not-an-ip").body, R"({"error": "The request data was invalid"})");
    EXPECT_EQ(get("/numbers/123").body, R"({"message": "No phone number found"})");
}

TEST_F(RoutesTest, LookupsFromTheIndex) {
    probe("192.0.2.7", "+4471234567", 60s);
    probe("192.0.2.7", "+4471234567");
    auto r = get("/ip-addresses/192.0.2.7");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body.rfind(R"({"bad_actor_found": "192.0.2.7", "seen_count": "2", )", 0), 0u)
        << r.body;
    // '+' optional in both directions
    EXPECT_NE(get("/numbers/4471234567").body.find(R"("phone_number_found": "+4471234567")"),
              std::string::npos);
    probe("2001:db8::1", "100");
    EXPECT_EQ(get("/numbers/+100").status, 200);
    EXPECT_EQ(get("/ip-addresses/2001:DB8:0::1").status, 200); // canonicalised
}

TEST_F(RoutesTest, ListsNewestFirstWithPaging) {
    probe("192.0.2.1", "1", 300s);
    probe("192.0.2.2", "2", 200s);
    probe("192.0.2.3", "3", 100s);
    auto all = body(get("/ip-addresses"));
    EXPECT_EQ(
        all.rfind(R"({"ip_addresses_total": 3, "ip_addresses": [{"ip_address": "192.0.2.3", )", 0),
        0u)
        << all;
    EXPECT_LT(all.find("192.0.2.2"), all.find("192.0.2.1"));
    auto page1 = body(get("/ip-addresses?limit=2"));
    EXPECT_NE(page1.find("192.0.2.2"), std::string::npos);
    EXPECT_EQ(page1.find("192.0.2.1"), std::string::npos);
    auto cursor_at = page1.find(R"("next_after": ")");
    ASSERT_NE(cursor_at, std::string::npos);
    auto start = cursor_at + std::string_view(R"("next_after": ")").size();
    auto cursor = page1.substr(start, page1.find('"', start) - start);
    auto page2 = body(get("/ip-addresses?limit=2&after=" + cursor));
    EXPECT_NE(page2.find("192.0.2.1"), std::string::npos) << page2;
    EXPECT_EQ(page2.find("192.0.2.2"), std::string::npos);
    auto recent = body(get("/numbers?since=150s"));
    EXPECT_NE(recent.find(R"("called_numbers_total": 1)"), std::string::npos) << recent;
    EXPECT_EQ(get("/numbers?limit=abc").status, 400);
    EXPECT_EQ(get("/numbers?since=yesterday").status, 400);
}

TEST_F(RoutesTest, NumberPrefixAndCsv) {
    probe("192.0.2.1", "+4420", 10s);
    probe("192.0.2.1", "+3312", 5s);
    probe("192.0.2.1", "a,\"b");
    auto r = body(get("/numbers?prefix=%2B44"));
    EXPECT_NE(r.find("+4420"), std::string::npos);
    EXPECT_EQ(r.find("+3312"), std::string::npos);
    auto csv = body(get("/numbers?format=csv"));
    EXPECT_EQ(csv.rfind("called_number,seen_count,seen_first,seen_last\r\n\"a,\"\"b\",1,", 0), 0u)
        << csv;
}

TEST_F(RoutesTest, FirewallExports) {
    probe("192.0.2.1", "1", 3600s);
    probe("2001:db8::5", "1");
    auto ipset = body(get("/ip-addresses?format=ipset&set=bad"));
    EXPECT_NE(ipset.find("create bad hash:ip family inet timeout 604800\n"), std::string::npos);
    EXPECT_NE(ipset.find("create bad_v6 hash:ip family inet6 timeout 604800\n"), std::string::npos);
    EXPECT_NE(ipset.find("add bad 192.0.2.1 timeout 601200\n"), std::string::npos) << ipset;
    EXPECT_NE(ipset.find("add bad_v6 2001:db8::5 timeout 604800\n"), std::string::npos);
    EXPECT_EQ(body(get("/ip-addresses/ipset?set=bad")), ipset);
    auto nft = body(get("/ip-addresses?format=nft"));
    EXPECT_NE(nft.find("table inet sentrypeer {"), std::string::npos);
    EXPECT_NE(nft.find("elements = { 192.0.2.1 timeout 601200s }"), std::string::npos) << nft;
    EXPECT_EQ(body(get("/ip-addresses?format=plain")), "2001:db8::5\n192.0.2.1\n");
    EXPECT_EQ(get("/ip-addresses?format=ipset&set=bad;rm").status, 400);
    EXPECT_EQ(get("/ip-addresses?format=xml").status, 400);
}

TEST_F(RoutesTest, ListTimestampsAndCountsAsCoreFormatsThem) {
    // Lists format timestamps and counts in place: the same text as core::formatTimestamp.
    const std::chrono::microseconds agos[] = {0us, 1us, 999'999us, 86'400'000'001us,
                                              31'622'400'123'456us};
    int i = 0;
    for (auto ago : agos) {
        core::Event e;
        e.source_ip = "192.0.2." + std::to_string(++i);
        e.called_number = std::to_string(1000 + i);
        e.time = clock.now() - ago;
        index.add(e);
        index.add(e);
        index.publish();
    }
    auto csv = body(get("/numbers?format=csv"));
    auto json = body(get("/numbers"));
    i = 0;
    for (auto ago : agos) {
        auto n = std::to_string(1000 + ++i);
        auto ts = core::formatTimestamp(clock.now() - ago);
        EXPECT_NE(csv.find("\r\n" + n + ",2," + ts + "," + ts + "\r\n"), std::string::npos)
            << n << "\n"
            << csv;
        EXPECT_NE(json.find(R"({"called_number": ")" + n + R"(", "seen_last": ")" + ts +
                            R"(", "seen_count": "2"})"),
                  std::string::npos)
            << json;
        auto one = get("/numbers/" + n).body;
        EXPECT_EQ(one, R"({"phone_number_found": ")" + n +
                           R"(", "seen_count": "2", "seen_first": ")" + ts +
                           R"(", "seen_last": ")" + ts + R"("})");
    }
}

TEST_F(RoutesTest, LargeListsStreamEveryEntryOnce) {
    // Long keys: the snapshot's key buffer outgrows its first reservation.
    for (int i = 0; i < 3000; ++i) {
        probe("192.0.2.1", std::string(60, '1') + std::to_string(10000 + i),
              std::chrono::seconds(i));
    }
    auto plain = body(get("/numbers?format=plain"));
    std::size_t lines = 0;
    std::size_t at = 0;
    for (int i = 0; i < 3000; ++i) { // newest first
        auto line = std::string(60, '1') + std::to_string(10000 + i) + "\n";
        ASSERT_EQ(plain.compare(at, line.size(), line), 0) << i;
        at += line.size();
        ++lines;
    }
    EXPECT_EQ(at, plain.size());
    auto json = body(get("/numbers"));
    EXPECT_EQ(json.rfind(R"({"called_numbers_total": 3000, "called_numbers": [{)", 0), 0u);
    EXPECT_EQ(json.substr(json.size() - 3), "}]}");
    auto csv = body(get("/numbers?format=csv&limit=2999"));
    EXPECT_NE(csv.find(std::string(60, '1') + "12998,1,"), std::string::npos);
    EXPECT_EQ(csv.find(std::string(60, '1') + "12999,1,"), std::string::npos);
}

TEST_F(RoutesTest, MethodsAndToken) {
    auto r = get("/", "POST");
    EXPECT_EQ(r.status, 405);
    ASSERT_EQ(r.headers.size(), 1u);
    EXPECT_EQ(r.headers[0], (std::pair<std::string, std::string>{"Allow", "GET, HEAD, OPTIONS"}));
    EXPECT_EQ(get("/nope", "DELETE").status, 405);
    make("s3cret");
    EXPECT_EQ(get("/numbers").status, 401);
    EXPECT_EQ(get("/numbers", "GET", "Bearer wrong").status, 401);
    EXPECT_EQ(get("/numbers", "GET", "Bearer s3cret").status, 404); // authorised, empty
    EXPECT_EQ(get("/health-check").status, 200);                    // always open
    EXPECT_EQ(get("/nope").status, 401);                            // unknown paths are not exempt
}

TEST_F(RoutesTest, EveryWrongTokenOfTheRightLengthIsRefused) {
    const std::string token = "s3cret-Token_42";
    make(token);
    ASSERT_EQ(get("/", "GET", "Bearer " + token).status, 200);
    // One byte changed at every position, the first and the last included.
    for (std::size_t i = 0; i < token.size(); ++i) {
        std::string wrong = token;
        wrong[i] = static_cast<char>(wrong[i] ^ 0x01);
        auto r = get("/", "GET", "Bearer " + wrong);
        EXPECT_EQ(r.status, 401) << "position " << i << ": " << wrong;
        EXPECT_EQ(r.body, R"({"error": "Unauthorized"})");
    }
    EXPECT_EQ(get("/", "GET", "Bearer " + std::string(token.size(), 'x')).status, 401);
    EXPECT_EQ(get("/", "GET", "Bearer " + token.substr(0, token.size() - 1)).status, 401);
    EXPECT_EQ(get("/", "GET", "Bearer " + token + "x").status, 401);
    EXPECT_EQ(get("/", "GET", "bearer " + token).status, 401);
}

TEST_F(RoutesTest, CorsHeadersOnlyWhenConfigured) {
    auto r = get("/numbers", "OPTIONS");
    EXPECT_EQ(r.status, 204);
    ASSERT_EQ(r.headers.size(), 1u); // Allow only: no CORS preflight answer by default
    EXPECT_EQ(r.headers[0].first, "Allow");
    EXPECT_EQ(routes->corsOrigin(), "");
    api::ApiOptions o;
    o.cors_origin = "https://dash.example";
    make(o);
    r = get("/numbers", "OPTIONS");
    EXPECT_EQ(r.headers, (std::vector<std::pair<std::string, std::string>>{
                             {"Allow", "GET, HEAD, OPTIONS"},
                             {"Access-Control-Allow-Methods", "GET, HEAD, OPTIONS"},
                             {"Access-Control-Allow-Headers", "Authorization, Content-Type"}}));
    EXPECT_EQ(routes->corsOrigin(), "https://dash.example");
}

TEST_F(RoutesTest, RouteTableDrivesLabelsAndSlowness) {
    std::set<std::string_view> labels;
    for (const auto& route : api::Routes::table()) {
        EXPECT_EQ(route.label, route.pattern);
        EXPECT_TRUE(labels.insert(route.label).second) << route.label;
        // CrowdSec's routes take the bouncer key (X-Api-Key), APIBAN's the {KEY} in their
        // path, not the bearer token.
        const bool bouncer = route.pattern.starts_with("/v1/") || route.pattern == "/api/{key}";
        EXPECT_EQ(route.auth, route.pattern != "/health-check" && !bouncer) << route.pattern;
        // Slow: SQL, or a walk over the whole index (lists and exports) or the decisions.
        EXPECT_EQ(route.slow, route.pattern == "/stats" || route.pattern == "/ip-addresses" ||
                                  route.pattern == "/ip-addresses/ipset" ||
                                  route.pattern == "/numbers" || bouncer)
            << route.pattern;
    }
    EXPECT_EQ(api::Routes::routeLabel("/ip-addresses/1.2.3.4"), "/ip-addresses/{ip}");
    EXPECT_EQ(api::Routes::routeLabel("/ip-addresses/ipset"), "/ip-addresses/ipset");
    EXPECT_EQ(api::Routes::routeLabel("/numbers/+44"), "/numbers/{number}");
    EXPECT_EQ(api::Routes::routeLabel("/evil\"label"), "other");
    EXPECT_EQ(api::Routes::routeLabel("/health-check/x"), "other");
    api::Request slow;
    slow.path = "/stats";
    EXPECT_TRUE(api::Routes::isSlow(slow));
    slow.malformed = true;
    EXPECT_FALSE(api::Routes::isSlow(slow));
    slow.path = "/numbers"; // a walk over the whole index
    slow.malformed = false;
    EXPECT_TRUE(api::Routes::isSlow(slow));
    slow.path = "/numbers/123"; // one lookup
    EXPECT_FALSE(api::Routes::isSlow(slow));
    slow.path = "/health-check";
    EXPECT_FALSE(api::Routes::isSlow(slow));
}

TEST_F(RoutesTest, HandleCountsWhatItAnswers) {
    // The server's only entry point is handle(): what it answers is what /metrics counts.
    routes->registerMetrics(metrics);
    probe("192.0.2.7", "100");
    get("/");
    get("/ip-addresses/192.0.2.7");
    get("/ip-addresses/192.0.2.8");
    get("/evil\"label");
    get("/", "POST");
    api::Request bad;
    bad.method = "GET";
    bad.malformed = true;
    EXPECT_EQ(routes->handle(bad).body, R"({"error": "The request data was invalid"})");
    auto m = get("/metrics").body;
    for (const char* line : {
             "sentrypeer_api_requests_total{route=\"/\",status=\"200\"} 1\n",
             "sentrypeer_api_requests_total{route=\"/\",status=\"405\"} 1\n",
             "sentrypeer_api_requests_total{route=\"/ip-addresses/{ip}\",status=\"200\"} 1\n",
             "sentrypeer_api_requests_total{route=\"/ip-addresses/{ip}\",status=\"404\"} 1\n",
             "sentrypeer_api_requests_total{route=\"other\",status=\"400\"} 1\n",
             "sentrypeer_api_requests_total{route=\"other\",status=\"404\"} 1\n",
             "sentrypeer_api_lists_in_flight 0\n",
             "sentrypeer_api_lists_rejected_total 0\n",
         }) {
        EXPECT_NE(m.find(line), std::string::npos) << line << m;
    }
    // The /metrics request being answered is counted once it is answered.
    EXPECT_NE(
        get("/metrics")
            .body.find("sentrypeer_api_requests_total{route=\"/metrics\",status=\"200\"} 1\n"),
        std::string::npos);
}

TEST_F(RoutesTest, OutOfRangeCursorsAre400) {
    probe("192.0.2.1", "1");
    for (const char* after :
         {"9999999999999999,1.2.3.4", "99999999999999999999,1.2.3.4", "9223372036854775807,1.2.3.4",
          "18446744073709551616,x", ",x", "12a,x", "123"}) {
        auto r = get(std::string("/ip-addresses?after=") + after);
        EXPECT_EQ(r.status, 400) << after;
        EXPECT_EQ(r.body, R"({"error": "The request data was invalid"})");
    }
    auto max = std::to_string(api::kMaxCursorMicros);
    ASSERT_TRUE(api::parseCursor(max + ",k"));
    EXPECT_EQ(api::parseCursor(max + ",k")->key, "k");
    EXPECT_FALSE(api::parseCursor(std::to_string(api::kMaxCursorMicros + 1) + ",k"));
    EXPECT_EQ(get("/ip-addresses?after=" + max + ",x").status, 200); // everything is older
}

TEST_F(RoutesTest, CsvNeutralisesFormulaCells) {
    probe("192.0.2.1", "=1+2", 50s);
    probe("192.0.2.1", "+4420", 40s);
    probe("192.0.2.1", "-3", 30s);
    probe("192.0.2.1", "@SUM(A1)", 20s);
    probe("192.0.2.1", "=a,b", 10s);
    probe("192.0.2.1", "100");
    auto ts = [&](std::chrono::seconds ago) { return core::formatTimestamp(clock.now() - ago); };
    auto line = [&](const std::string& cell, std::chrono::seconds ago) {
        return cell + ",1," + ts(ago) + "," + ts(ago) + "\r\n";
    };
    EXPECT_EQ(body(get("/numbers?format=csv")),
              "called_number,seen_count,seen_first,seen_last\r\n" + line("100", 0s) +
                  line("\"'=a,b\"", 10s) + line("'@SUM(A1)", 20s) + line("'-3", 30s) +
                  line("'+4420", 40s) + line("'=1+2", 50s));
}

TEST_F(RoutesTest, PrefixAcceptsALiteralPlus) {
    probe("192.0.2.1", "+4420", 10s);
    probe("192.0.2.1", "4430", 5s);
    auto expect = R"({"called_numbers_total": 1, "called_numbers": [{"called_number": "+4420", )"
                  R"("seen_last": ")" +
                  core::formatTimestamp(clock.now() - 10s) + R"(", "seen_count": "1"}]})";
    EXPECT_EQ(body(get("/numbers?prefix=+44")), expect); // '+' decodes as ' ', read back as '+'
    EXPECT_EQ(body(get("/numbers?prefix=%2B44")), expect);
    EXPECT_EQ(body(get("/numbers?prefix=%2044")), expect); // no number starts with a space
    EXPECT_EQ(body(get("/numbers?prefix=44")).find("+4420"), std::string::npos);
}

TEST_F(RoutesTest, IpLookupsOfNonCanonicalFormsFindTheCanonicalAddress) {
    probe("192.0.2.7", "1");
    probe("2001:db8::1", "1");
    for (const char* form : {"::ffff:192.0.2.7", "::FFFF:192.0.2.7", "0:0:0:0:0:ffff:c000:207"}) {
        auto r = get(std::string("/ip-addresses/") + form);
        EXPECT_EQ(r.status, 200) << form;
        EXPECT_EQ(r.body.rfind(R"({"bad_actor_found": "192.0.2.7", )", 0), 0u) << r.body;
    }
    for (const char* form : {"2001:DB8::1", "2001:0db8:0:0:0:0:0:1", "2001:db8:0::1"}) {
        auto r = get(std::string("/ip-addresses/") + form);
        EXPECT_EQ(r.status, 200) << form;
        EXPECT_EQ(r.body.rfind(R"({"bad_actor_found": "2001:db8::1", )", 0), 0u) << r.body;
    }
    EXPECT_EQ(get("/ip-addresses/::ffff:192.0.2.8").body, R"({"message": "No bad actor found"})");
    EXPECT_EQ(get("/ip-addresses/192.0.2.07").status, 400);
}

TEST_F(RoutesTest, StatsTopOutOfRangeIs400) {
    for (const char* top : {"0", "101", "500", "999", "1000", "-1", "x", ""}) {
        auto r = get(std::string("/stats?top=") + top);
        EXPECT_EQ(r.status, 400) << top;
        EXPECT_EQ(r.body, R"({"error": "The request data was invalid"})");
    }
    // In range: past validation (the test's database does not exist: 503).
    EXPECT_EQ(get("/stats?top=1").status, 503);
    EXPECT_EQ(get("/stats?top=100").status, 503);
}

TEST_F(RoutesTest, ExportTimeoutsNeverGoBelowTheFloor) {
    EXPECT_EQ(api::kMinExportTimeoutSeconds, 1u);
    auto now = clock.now();
    EXPECT_EQ(api::exportTimeout(7 * 24h, now, now - 8 * 24h), 1u); // past retention
    EXPECT_EQ(api::exportTimeout(7 * 24h, now, now - 7 * 24h), 1u); // exactly at it
    EXPECT_EQ(api::exportTimeout(7 * 24h, now, now - (7 * 24h - 1s)), 1u);
    EXPECT_EQ(api::exportTimeout(7 * 24h, now, now - (7 * 24h - 2s)), 2u);
    EXPECT_EQ(api::exportTimeout(7 * 24h, now, now), 604800u);
    probe("192.0.2.9", "1", 8 * 24h); // older than --max-age, not pruned yet
    probe("2001:db8::9", "1", 7 * 24h);
    EXPECT_EQ(body(get("/ip-addresses?format=ipset&set=s")),
              "create s hash:ip family inet timeout 604800\n"
              "create s_v6 hash:ip family inet6 timeout 604800\n"
              "add s_v6 2001:db8::9 timeout 1\n"
              "add s 192.0.2.9 timeout 1\n");
    EXPECT_EQ(body(get("/ip-addresses?format=nft&set=s&table=t")),
              "table inet t {\n"
              "\tset s {\n\t\ttype ipv4_addr\n\t\tflags timeout\n"
              "\t\telements = { 192.0.2.9 timeout 1s }\n\t}\n"
              "\tset s_v6 {\n\t\ttype ipv6_addr\n\t\tflags timeout\n"
              "\t\telements = { 2001:db8::9 timeout 1s }\n\t}\n"
              "}\n");
}

TEST_F(RoutesTest, FullListsAreBudgeted) {
    api::ApiOptions o;
    o.max_lists = 1;
    make(o);
    routes->registerMetrics(metrics);
    probe("192.0.2.1", "1");
    auto held = get("/ip-addresses?format=plain"); // its stream holds the one slot
    ASSERT_TRUE(held.stream);
    for (const char* target : {"/ip-addresses", "/numbers", "/numbers?format=csv&limit=5",
                               "/ip-addresses?format=nft", "/ip-addresses/ipset"}) {
        auto r = get(target);
        EXPECT_EQ(r.status, 503) << target;
        EXPECT_EQ(r.body, R"({"message": "Too many full lists at once; retry shortly"})");
        EXPECT_EQ(r.headers,
                  (std::vector<std::pair<std::string, std::string>>{{"Retry-After", "1"}}));
    }
    EXPECT_EQ(get("/numbers?limit=10").status, 200); // a page is not a full list
    auto m = get("/metrics").body;
    EXPECT_NE(m.find("sentrypeer_api_lists_in_flight 1\n"), std::string::npos) << m;
    EXPECT_NE(m.find("sentrypeer_api_lists_rejected_total 5\n"), std::string::npos) << m;
    EXPECT_EQ(body(std::move(held)), "192.0.2.1\n"); // streamed to its end: slot given back
    EXPECT_EQ(get("/ip-addresses").status, 200);
    EXPECT_EQ(get("/ip-addresses?format=nft").status, 200); // built at once, slot released
    EXPECT_EQ(get("/ip-addresses?format=nft").status, 200);
}

TEST(ConnectionBudget, CapsInTotalAndPerIpAndCountsRefusals) {
    api::ConnectionBudget b(3, 2);
    EXPECT_TRUE(b.tryAcquire("192.0.2.1"));
    EXPECT_TRUE(b.tryAcquire("192.0.2.1"));
    EXPECT_FALSE(b.tryAcquire("192.0.2.1")); // per IP
    EXPECT_TRUE(b.tryAcquire("192.0.2.2"));
    EXPECT_FALSE(b.tryAcquire("192.0.2.3")); // total
    EXPECT_EQ(b.open(), 3u);
    b.release("192.0.2.1");
    EXPECT_TRUE(b.tryAcquire("192.0.2.3"));
    core::MetricsRegistry registry;
    registry.add([&b](core::MetricsWriter& w) { b.collect(w); });
    auto m = registry.render();
    EXPECT_NE(m.find("sentrypeer_api_connections 3\n"), std::string::npos) << m;
    EXPECT_NE(m.find("sentrypeer_api_connections_rejected_total{reason=\"per_ip\"} 1\n"),
              std::string::npos)
        << m;
    EXPECT_NE(m.find("sentrypeer_api_connections_rejected_total{reason=\"total\"} 1\n"),
              std::string::npos)
        << m;
}

TEST(Http, NumberParamReadsALeadingSpaceAsPlus) {
    api::Request r;
    ASSERT_TRUE(api::parseTarget("/numbers?prefix=+44&x=+1", r.path, r.query));
    EXPECT_EQ(r.param("prefix"), " 44");
    EXPECT_EQ(r.numberParam("prefix"), "+44");
    EXPECT_EQ(r.numberParam("nope"), std::nullopt);
}

namespace {

// Peer data passes the one blocking policy before any firewall export lists it; the JSON
// lists (SentryPeer's) list everything, filtered by ?origin.
TEST_F(RoutesTest, FirewallExportsListOnlyWhatThePolicyBlocks) {
    block::PolicyOptions po;
    po.allow = {"198.51.100.0/24"};
    po.include_own_addresses = false; // this host's own addresses could be documentation ones
    api::ApiOptions o;
    o.policy = std::make_shared<const block::Policy>(po);
    make(std::move(o));
    auto peer = [&](const std::string& ip, const std::string& reporter) {
        index.add(ip, "100", clock.now(), core::Origin::Peer, reporter);
        index.publish();
    };
    peer("203.0.113.9", "node-a"); // one reporter: not enough (default 2)
    peer("127.0.0.1", "node-a");   // loopback: never
    peer("127.0.0.1", "node-b");
    peer("198.51.100.7", "node-a"); // allow-listed: never
    peer("198.51.100.7", "node-b");
    probe("192.0.2.1", "200"); // local: always counts
    EXPECT_EQ(body(get("/ip-addresses?format=plain")), "192.0.2.1\n");
    EXPECT_EQ(body(get("/ip-addresses?format=plain&origin=peer")), "");
    auto all = body(get("/ip-addresses"));
    for (const char* ip : {"203.0.113.9", "127.0.0.1", "198.51.100.7", "192.0.2.1"}) {
        EXPECT_NE(all.find(ip), std::string::npos) << ip;
    }
    auto local = body(get("/ip-addresses?origin=local"));
    EXPECT_NE(local.find("192.0.2.1"), std::string::npos);
    EXPECT_EQ(local.find("203.0.113.9"), std::string::npos);
    auto peers = body(get("/ip-addresses?origin=peer"));
    EXPECT_EQ(peers.find("192.0.2.1"), std::string::npos);
    EXPECT_NE(peers.find("203.0.113.9"), std::string::npos);

    peer("203.0.113.9", "node-b"); // a second reporter: now it is blocked
    EXPECT_EQ(body(get("/ip-addresses?format=plain")),
              "192.0.2.1\n203.0.113.9\n"); // same time: by key
    auto nft = body(get("/ip-addresses?format=nft"));
    EXPECT_NE(nft.find("203.0.113.9"), std::string::npos);
    EXPECT_EQ(nft.find("127.0.0.1"), std::string::npos);
    EXPECT_EQ(nft.find("198.51.100.7"), std::string::npos);
    // ?origin=local in an export counts local events only.
    EXPECT_EQ(body(get("/ip-addresses?format=plain&origin=local")), "192.0.2.1\n");
    EXPECT_EQ(get("/ip-addresses?origin=everything").status, 400);
    // The counts in the JSON list follow ?origin.
    EXPECT_NE(body(get("/ip-addresses?origin=peer")).find(R"("seen_count": "2")"),
              std::string::npos);
}

// ?origin on a firewall export decides which evidence the policy weighs: origin=peer ignores
// the local events of an address, origin=local its peer events (with --block-after 2 here).
TEST_F(RoutesTest, ExportOriginChoosesTheEvidenceThePolicyWeighs) {
    block::PolicyOptions po;
    po.block_after = 2;
    api::ApiOptions o;
    o.policy = std::make_shared<const block::Policy>(po);
    make(std::move(o));
    auto peer = [&](const std::string& ip, const std::string& reporter) {
        index.add(ip, "100", clock.now(), core::Origin::Peer, reporter);
        index.publish();
    };
    // 192.0.2.1: two local events and one peer event from one reporter.
    probe("192.0.2.1", "200");
    probe("192.0.2.1", "200");
    peer("192.0.2.1", "node-a");
    // 203.0.113.9: one local event, two peer events from two reporters.
    probe("203.0.113.9", "200");
    peer("203.0.113.9", "node-a");
    peer("203.0.113.9", "node-b");
    // 198.51.100.7: one local event only (below --block-after 2).
    probe("198.51.100.7", "200");
    EXPECT_EQ(body(get("/ip-addresses?format=plain")), "192.0.2.1\n203.0.113.9\n");
    EXPECT_EQ(body(get("/ip-addresses?format=plain&origin=all")), "192.0.2.1\n203.0.113.9\n");
    EXPECT_EQ(body(get("/ip-addresses?format=plain&origin=local")), "192.0.2.1\n");
    EXPECT_EQ(body(get("/ip-addresses?format=plain&origin=peer")), "203.0.113.9\n");
}

} // namespace

TEST(ApiKeys, CommandLineAndFileKeysMatchExactly) {
    auto path = std::filesystem::temp_directory_path() / "sp_api_keys_test.txt";
    {
        std::ofstream out(path);
        out << "# bouncers\n\n  file-key-0001 \nfile-key-0002\r\ncli-key-0001\n";
    }
    auto keys = api::ApiKeys::load({"cli-key-0001"}, path.string());
    EXPECT_EQ(keys->size(), 3U) << "duplicates kept once, comments and blanks skipped";
    EXPECT_EQ(keys->find("cli-key-0001"), 0U);
    EXPECT_EQ(keys->find("file-key-0001"), 1U);
    EXPECT_EQ(keys->find("file-key-0002"), 2U) << "a CRLF file";
    EXPECT_FALSE(keys->find("file-key-000"));
    EXPECT_FALSE(keys->find("file-key-00011"));
    EXPECT_FALSE(keys->find(""));
    EXPECT_FALSE(api::ApiKeys::load({}, "")->find("cli-key-0001")) << "no keys: nothing matches";
    {
        std::ofstream out(path);
        out << "good-key-0001\nbad key with spaces\n";
    }
    try {
        api::ApiKeys::load({}, path.string());
        FAIL() << "a bad line must stop startup";
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find(":2:"), std::string::npos) << e.what();
        EXPECT_EQ(std::string(e.what()).find("bad key"), std::string::npos) << "never echoes keys";
    }
    EXPECT_THROW(api::ApiKeys::load({}, (path.string() + ".missing")), std::runtime_error);
    std::filesystem::remove(path);
}
