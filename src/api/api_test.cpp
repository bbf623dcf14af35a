#include <gtest/gtest.h>

#include "api/http.hpp"
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

    void SetUp() override { make({}); }
    void make(std::string token) {
        routes = std::make_unique<api::Routes>(
            api::ApiOptions{token, "/nonexistent.db", 7 * 24h, {}}, index, clock, metrics);
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

TEST_F(RoutesTest, MethodsAndToken) {
    auto r = get("/", "POST");
    EXPECT_EQ(r.status, 405);
    ASSERT_FALSE(r.headers.empty());
    EXPECT_EQ(r.headers[0].first, "Allow");
    make("s3cret");
    EXPECT_EQ(get("/numbers").status, 401);
    EXPECT_EQ(get("/numbers", "GET", "Bearer wrong").status, 401);
    EXPECT_EQ(get("/numbers", "GET", "Bearer s3cret").status, 404); // authorised, empty
    EXPECT_EQ(get("/health-check").status, 200);                    // always open
}

TEST_F(RoutesTest, MetricsIncludeApiCounters) {
    routes->registerMetrics(metrics);
    routes->count("/", 200);
    auto m = get("/metrics").body;
    EXPECT_NE(m.find("sentrypeer_api_requests_total{route=\"/\",status=\"200\"} 1"),
              std::string::npos)
        << m;
    EXPECT_EQ(api::Routes::routeLabel("/ip-addresses/1.2.3.4"), "/ip-addresses/{ip}");
    EXPECT_EQ(api::Routes::routeLabel("/evil\"label"), "other");
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
