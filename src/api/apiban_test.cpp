// APIBAN routes, called-number normalisation and the batch checks (issue 10, parts 3-4).
#include <gtest/gtest.h>
#include <set>

#include "api/apiban.hpp"
#include "api/checks.hpp"
#include "api/lookup_keys.hpp"
#include "api/routes.hpp"

using namespace sp;
using namespace std::chrono_literals;

namespace {

struct BlockingRoutes : ::testing::Test {
    core::ManualClock clock{core::TimePoint{std::chrono::seconds(1'800'000'000)}};
    store::Index index;
    core::MetricsRegistry metrics;
    std::unique_ptr<api::Routes> routes;

    void SetUp() override { make({}); }
    void make(std::vector<std::string> allow_numbers) {
        api::ApiOptions o;
        o.db_path = "/nonexistent.db";
        o.block_window = 7 * 24h;
        block::PolicyOptions p;
        p.include_own_addresses = false;
        p.block_window = 7 * 24h;
        o.policy = std::make_shared<const block::Policy>(p);
        o.bouncer_keys = api::ApiKeys::load({"apiban-key-0001"}, "");
        o.allow_numbers = std::move(allow_numbers);
        routes = std::make_unique<api::Routes>(std::move(o), index, clock, metrics);
    }
    void probe(const std::string& ip, const std::string& number, core::TimePoint t) {
        core::Event e;
        e.source_ip = ip;
        e.called_number = number;
        e.time = t;
        index.add(e);
        index.publish();
    }
    api::Response get(const std::string& target) {
        api::Request r;
        r.method = "GET";
        EXPECT_TRUE(api::parseTarget(target, r.path, r.query));
        return routes->handle(r);
    }
    api::Response post(const std::string& path, std::string body) {
        api::Request r;
        r.method = "POST";
        r.path = path;
        r.body = std::move(body);
        return routes->handle(r);
    }
};

std::string ipOf(int i) {
    return "198.51." + std::to_string(100 + i / 256) + "." + std::to_string(i % 256);
}

} // namespace

TEST(NumberNormalisation, EveryInternationalSpellingIsOneNumber) {
    const std::vector<std::pair<std::string, std::string>> table = {
        {"+442079460000", "442079460000"},
        {"00442079460000", "442079460000"},
        {"442079460000", "442079460000"},
        {"011442079460000", "442079460000"},
        {"011 44 20 7946 0000", "442079460000"},
        {"+44 (20) 7946-0000", "442079460000"},
        {"+44.20.7946.0000", "442079460000"},
        {"00 44 20/7946 0000", "442079460000"},
        {"02079460000", "02079460000"}, // national: kept (country unknown)
        {"01134960000", "01134960000"}, // UK 0113: 8 digits after 011, not international
        {"011234567890", "234567890"},  // 9 after 011: the North American prefix
        {"112", "112"},
        {"*98#", "*98#"},
        {"+0044123", "0044123"}, // one prefix only
        {"0000123", "00123"},
    };
    for (const auto& [dialled, normal] : table) {
        EXPECT_EQ(api::normaliseNumber(dialled), std::optional<std::string>(normal)) << dialled;
    }
    for (const std::string& bad :
         std::vector<std::string>{"", "+", "00", "alice", "44a20", "++44", "4420\n", " - ",
                                  std::string(65, '1'), std::string(300, ' ') + "1"}) {
        EXPECT_FALSE(api::normaliseNumber(bad)) << bad;
    }
    EXPECT_TRUE(api::normaliseNumber(std::string(64, '1')));
}

TEST(NumberNormalisation, SpellingsAreExactlyTheFormsThatNormaliseBack) {
    auto s = api::numberSpellings("442079460000");
    ASSERT_EQ(s.count, 4u);
    EXPECT_EQ(s.forms[0], "442079460000");
    EXPECT_EQ(s.forms[1], "+442079460000");
    EXPECT_EQ(s.forms[2], "00442079460000");
    EXPECT_EQ(s.forms[3], "011442079460000");
    auto short_one = api::numberSpellings("112"); // 011112: too short for the 011 rule
    EXPECT_EQ(short_one.count, 3u);
    auto odd = api::numberSpellings("00123"); // itself reads as 123: only "+00123", "0000123"
    ASSERT_EQ(odd.count, 2u);
    EXPECT_EQ(odd.forms[0], "+00123");
}

TEST(ApibanId, RoundTripsAndOrdersLikeItsCursor) {
    api::apiban::BanCursor c{1'800'000'000'123'456ULL, {}};
    c.address[10] = 0xff;
    c.address[11] = 0xff;
    c.address[12] = 198;
    c.address[15] = 7;
    auto id = api::apiban::encodeId(c);
    EXPECT_EQ(id.size(), 56u);
    EXPECT_EQ(id, "01800000000123456"
                  "000000000000000000000000281474003632135");
    auto p = api::apiban::parseId(id);
    ASSERT_EQ(p.kind, api::apiban::IdKind::After);
    EXPECT_EQ(p.after, c);
    api::apiban::BanCursor max{99'999'999'999'999'999ULL, {}};
    max.address.fill(0xff);
    EXPECT_EQ(api::apiban::parseId(api::apiban::encodeId(max)).after, max);
    EXPECT_EQ(api::apiban::encodeId(max).substr(17), "340282366920938463463374607431768211455");
}

TEST(ApibanId, ForeignIdsStartOverAndGarbageIsRefused) {
    using api::apiban::IdKind;
    for (const std::string& start :
         std::vector<std::string>{"", "100", "0", "987654321", std::string(55, '9')}) {
        EXPECT_EQ(api::apiban::parseId(start).kind, IdKind::Start) << start;
    }
    for (const std::string& bad : std::vector<std::string>{
             "none", "12a", "-1", " 100", std::string(57, '1'),
             "00000000000000000" + std::string("340282366920938463463374607431768211456")}) {
        EXPECT_EQ(api::apiban::parseId(bad).kind, IdKind::Invalid) << bad;
    }
}

TEST_F(BlockingRoutes, ApibanPagesSeeEveryBlockedAddressOnceInLastSeenOrder) {
    auto t0 = clock.now() - 1h;
    for (int i = 0; i < 600; ++i) {
        probe(ipOf(i), "100", t0 + std::chrono::seconds(i % 7)); // ties on last seen
    }
    probe("127.0.0.1", "100", t0); // never blocked
    std::vector<std::string> seen;
    std::string path = "/api/apiban-key-0001/banned";
    int pages = 0;
    for (; pages < 10; ++pages) {
        auto r = get(path);
        if (r.status == 400) {
            EXPECT_EQ(r.body, R"({"ipaddress":["no new bans"], "ID":"none"})");
            break;
        }
        ASSERT_EQ(r.status, 200) << r.body;
        auto id_at = r.body.find(R"(, "ID":")");
        ASSERT_NE(id_at, std::string::npos) << r.body;
        std::string id = r.body.substr(id_at + 8, 56);
        ASSERT_EQ(r.body.substr(id_at), R"(, "ID":")" + id + "\"}");
        ASSERT_EQ(r.body.substr(0, 15), R"({"ipaddress":[")");
        std::string list = r.body.substr(15, id_at - 15 - 2); // between [" and "]
        std::size_t n = 0;
        for (std::size_t at = 0; at != std::string::npos; ++n) {
            auto next = list.find(R"(",")", at);
            seen.push_back(list.substr(at, next == std::string::npos ? next : next - at));
            at = next == std::string::npos ? next : next + 3;
        }
        EXPECT_LE(n, 250u);
        path = "/api/apiban-key-0001/banned/" + id;
    }
    EXPECT_EQ(pages, 3) << "250 + 250 + 100, then no new bans";
    ASSERT_EQ(seen.size(), 600u);
    EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()).size(), 600u);
    EXPECT_EQ(seen.front(), ipOf(0));  // oldest first: i % 7 == 0, lowest address
    EXPECT_EQ(seen.back(), ipOf(594)); // the newest (i % 7 == 6), highest address
    // A refreshed address comes again after the cursor; nothing else does.
    probe(ipOf(3), "100", clock.now());
    auto again = get(path);
    ASSERT_EQ(again.status, 200) << again.body;
    EXPECT_TRUE(again.body.starts_with(R"({"ipaddress":[")" + ipOf(3) + "\"], ")) << again.body;
}

TEST_F(BlockingRoutes, ApibanKeysCheckAndBodies) {
    probe("203.0.113.9", "100", clock.now() - 1min);
    EXPECT_EQ(get("/api/wrong-key-0001/banned").body,
              R"({"ipaddress":"none", "ID":"unauthorized"})");
    EXPECT_EQ(get("/api/wrong-key-0001/banned").status, 403);
    EXPECT_EQ(get("/api/wrong-key-0001/check/203.0.113.9").status, 403);
    EXPECT_EQ(get("/api/").status, 403);
    auto hit = get("/api/apiban-key-0001/check/203.0.113.9");
    EXPECT_EQ(hit.status, 200);
    EXPECT_TRUE(hit.body.starts_with(R"({"ipaddress":["203.0.113.9"], "ID":"01799999940)"))
        << hit.body; // the ID of its (last seen, address)
    auto miss = get("/api/apiban-key-0001/check/203.0.113.10");
    EXPECT_EQ(miss.status, 400);
    EXPECT_EQ(miss.body, R"({"ipaddress":["not blocked"], "ID":"none"})");
    EXPECT_EQ(get("/api/apiban-key-0001/check/127.0.0.1").body, miss.body) << "never blocked";
    auto bad = get("/api/apiban-key-0001/check/999.1.1.1");
    EXPECT_EQ(bad.status, 400);
    EXPECT_EQ(bad.body, R"({"ipaddress":["invalid address"], "ID":"none"})");
    EXPECT_EQ(get("/api/apiban-key-0001/banned/x1").body,
              R"({"ipaddress":["invalid ID"], "ID":"none"})");
    EXPECT_EQ(get("/api/apiban-key-0001/other").status, 404);
    // Expired (past the 7-day window): no longer listed.
    clock.advance(8 * 24h);
    EXPECT_EQ(get("/api/apiban-key-0001/check/203.0.113.9").status, 400);
    EXPECT_EQ(get("/api/apiban-key-0001/banned/100").body,
              R"({"ipaddress":["no new bans"], "ID":"none"})");
}

TEST(CheckBody, ShapesAndBounds) {
    using api::checks::parseBody;
    auto ok = parseBody(R"( { "numbers" : [ "+44 20", "\u0031\"1\\2\/" ] } )", "numbers");
    ASSERT_EQ(ok.status, 200) << ok.error;
    EXPECT_EQ(ok.items, (std::vector<std::string>{"+44 20", "1\"1\\2/"}));
    EXPECT_EQ(parseBody(R"({"numbers": []})", "numbers").status, 200);
    EXPECT_EQ(parseBody(R"({"numbers":["\ud83d\ude00"]})", "numbers").items[0], "\xF0\x9F\x98\x80");
    for (const std::string& bad : std::vector<std::string>{
             "", "[]", R"(["1"])", R"({"numbers": ["1"]} x)", R"({"ip_addresses": ["1"]})",
             R"({"numbers": [1]})", R"({"numbers": ["1",]})", R"({"numbers": ["1"])",
             R"({"numbers": ["1"], "x": []})", "{\"numbers\": [\"a\nb\"]}",
             R"({"numbers": ["\x"]})", R"({"numbers": ["\ud83d"]})", R"({"numbers": ["\udc00"]})",
             R"({"numbers": ["\u12"]})", R"({"numbers": null})", R"({"numbers": ["1")"}) {
        auto r = parseBody(bad, "numbers");
        EXPECT_EQ(r.status, 400) << bad;
        EXPECT_EQ(r.error, R"(expected a JSON object {"numbers": [strings]})");
    }
    std::string big = R"({"numbers": [)";
    for (std::size_t i = 0; i < api::checks::kMaxItems; ++i) {
        big += (i == 0 ? "\"" : ",\"") + std::to_string(i) + "\"";
    }
    EXPECT_EQ(parseBody(big + "]}", "numbers").items.size(), 10000u);
    auto over = parseBody(big + R"(,"x"]})", "numbers");
    EXPECT_EQ(over.status, 413);
    EXPECT_EQ(over.error, "Too many items: at most 10000 per request");
}

TEST_F(BlockingRoutes, NumberChecksMatchEverySpellingAndHonourAllowNumbers) {
    make({"999", "+1 (911)"}); // the second is 1911, not 911
    probe("203.0.113.1", "+442079460000", clock.now() - 1h);
    probe("203.0.113.1", "00442079460000", clock.now() - 2h);
    probe("203.0.113.2", "999", clock.now() - 1h);
    auto r = post(
        "/numbers/check",
        R"({"numbers": ["442079460000", "011 44 20 7946 0000", "999", "0999", "alice", "911"]})");
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(
        r.body,
        R"({"numbers": [{"number": "442079460000", "valid": true, "normalised": "442079460000", "allowed": false, "known": true, "blocked": true, "seen_count": "2", "seen_first": "2027-01-15 06:00:00.000000000", "seen_last": "2027-01-15 07:00:00.000000000"}, )"
        R"({"number": "011 44 20 7946 0000", "valid": true, "normalised": "442079460000", "allowed": false, "known": true, "blocked": true, "seen_count": "2", "seen_first": "2027-01-15 06:00:00.000000000", "seen_last": "2027-01-15 07:00:00.000000000"}, )"
        R"({"number": "999", "valid": true, "normalised": "999", "allowed": true, "known": true, "blocked": false, "seen_count": "1", "seen_first": "2027-01-15 07:00:00.000000000", "seen_last": "2027-01-15 07:00:00.000000000"}, )"
        R"({"number": "0999", "valid": true, "normalised": "0999", "allowed": false, "known": false, "blocked": false}, )"
        R"({"number": "alice", "valid": false, "known": false, "blocked": false}, )"
        R"({"number": "911", "valid": true, "normalised": "911", "allowed": false, "known": false, "blocked": false}]})");
    // The single lookup keeps SentryPeer's exact answer, then finds other spellings.
    EXPECT_NE(get("/numbers/+442079460000").body.find(R"("phone_number_found": "+442079460000")"),
              std::string::npos);
    EXPECT_NE(get("/numbers/011442079460000").body.find(R"("phone_number_found": "+442079460000")"),
              std::string::npos);
    EXPECT_EQ(get("/numbers/0442079460000").status, 404);
}

TEST_F(BlockingRoutes, IpChecksFollowThePolicy) {
    probe("203.0.113.1", "1", clock.now() - 1h);
    probe("127.0.0.1", "1", clock.now() - 1h);
    auto r = post(
        "/ip-addresses/check",
        R"({"ip_addresses": ["203.0.113.1", "::ffff:203.0.113.1", "127.0.0.1", "203.0.113.2", "x"]})");
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(
        r.body,
        R"({"ip_addresses": [{"ip_address": "203.0.113.1", "valid": true, "known": true, "blocked": true, "seen_count": "1", "seen_first": "2027-01-15 07:00:00.000000000", "seen_last": "2027-01-15 07:00:00.000000000"}, )"
        R"({"ip_address": "::ffff:203.0.113.1", "valid": true, "known": true, "blocked": true, "seen_count": "1", "seen_first": "2027-01-15 07:00:00.000000000", "seen_last": "2027-01-15 07:00:00.000000000"}, )"
        R"({"ip_address": "127.0.0.1", "valid": true, "known": true, "blocked": false, "seen_count": "1", "seen_first": "2027-01-15 07:00:00.000000000", "seen_last": "2027-01-15 07:00:00.000000000"}, )"
        R"({"ip_address": "203.0.113.2", "valid": true, "known": false, "blocked": false}, )"
        R"({"ip_address": "x", "valid": false, "known": false, "blocked": false}]})");
    auto bad = post("/ip-addresses/check", R"({"numbers": []})");
    EXPECT_EQ(bad.status, 400);
    EXPECT_EQ(bad.body, R"({"error": "expected a JSON object {\"ip_addresses\": [strings]}"})");
}

TEST(CheckRoutes, BodyLimitsAndSlowness) {
    EXPECT_EQ(api::Routes::bodyLimit("POST", "/numbers/check"), 1024u * 1024);
    EXPECT_EQ(api::Routes::bodyLimit("POST", "/ip-addresses/check"), 1024u * 1024);
    EXPECT_EQ(api::Routes::bodyLimit("GET", "/numbers/check"), 16u * 1024);
    EXPECT_EQ(api::Routes::bodyLimit("POST", "/numbers"), 16u * 1024);
    api::Request r;
    r.method = "POST";
    r.path = "/numbers/check";
    r.body = std::string(16 * 1024, ' ');
    EXPECT_FALSE(api::Routes::isSlow(r)) << "a small batch answers on the io thread";
    r.body.push_back(' ');
    EXPECT_TRUE(api::Routes::isSlow(r));
    r.method = "GET";
    r.path = "/api/k/banned";
    r.body.clear();
    EXPECT_TRUE(api::Routes::isSlow(r)) << "APIBAN pages walk the index";
    r.path = "/api/k/banned/100";
    EXPECT_TRUE(api::Routes::isSlow(r));
    r.path = "/api/k/check/192.0.2.1";
    EXPECT_FALSE(api::Routes::isSlow(r)) << "an APIBAN check is one lookup";
    r.path = "/api/check/192.0.2.1"; // the key is "check": a 403 either way
    EXPECT_TRUE(api::Routes::isSlow(r));
}
