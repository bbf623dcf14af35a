// The CrowdSec routes through Routes::handle: X-Api-Key, LAPI's 403 and error bodies, the
// stream and list bodies (golden), HEAD not moving a cursor.
#include <gtest/gtest.h>

#include "api/routes.hpp"
#include "decisions/journal.hpp"

using namespace std::chrono_literals;
namespace api = sp::api;

namespace {

struct CrowdSecRoutes : ::testing::Test {
    sp::core::ManualClock clock;
    sp::store::Index index;
    sp::core::MetricsRegistry metrics;
    std::shared_ptr<sp::decisions::Journal> journal;
    std::unique_ptr<api::Routes> routes;
    std::uint64_t base = 0;

    void SetUp() override {
        sp::block::PolicyOptions po;
        po.include_own_addresses = false;
        po.block_window = 4h;
        auto policy = std::make_shared<const sp::block::Policy>(po);
        journal = std::make_shared<sp::decisions::Journal>(sp::decisions::JournalOptions{.keys = 2},
                                                           policy, clock);
        base = static_cast<std::uint64_t>(
                   std::chrono::duration_cast<std::chrono::seconds>(clock.now().time_since_epoch())
                       .count()) *
               1'000'000;
        api::ApiOptions o;
        o.db_path = "/nonexistent.db";
        o.token = "bearer-token-not-for-bouncers";
        o.policy = policy;
        o.bouncer_keys = api::ApiKeys::load({"bouncer-key-one", "bouncer-key-two"}, "");
        o.decisions = journal;
        routes = std::make_unique<api::Routes>(std::move(o), index, clock, metrics);
    }
    void seeLocal(const std::string& ip) {
        sp::store::Seen s;
        s.count = s.local = 1;
        s.first = s.last = clock.now();
        journal->applyChanges({sp::store::KeyChange{ip, s}});
    }
    api::Response get(const std::string& target, const std::string& key,
                      const std::string& method = "GET") {
        api::Request r;
        r.method = method;
        r.malformed = !api::parseTarget(target, r.path, r.query);
        r.api_key = key;
        return routes->handle(r);
    }
    static std::string body(api::Response r) {
        if (!r.stream) {
            return r.body;
        }
        std::string all, chunk;
        bool more = true;
        while (more) {
            chunk.clear();
            more = r.stream(chunk);
            all += chunk;
        }
        return all;
    }
    std::string decision(std::uint64_t n, const std::string& ip) const {
        return R"({"id":)" + std::to_string(base + n) +
               R"(,"origin":"sentrypeer","type":"ban","scope":"Ip","value":")" + ip +
               R"(","duration":"4h0m0s","scenario":"sentrypeer/sip-probe","simulated":false})";
    }
};

} // namespace

TEST_F(CrowdSecRoutes, MissingOrWrongKeyIs403AccessForbidden) {
    for (const std::string key : {"", "wrong", "bouncer-key-on", "Bearer bouncer-key-one"}) {
        for (const std::string target : {"/v1/decisions/stream?startup=true", "/v1/decisions"}) {
            auto r = get(target, key);
            EXPECT_EQ(r.status, 403) << target << " " << key;
            EXPECT_EQ(r.body, R"({"message":"access forbidden"})");
        }
    }
}

TEST_F(CrowdSecRoutes, StreamStartupThenDeltasWithTheKeyNotTheBearerToken) {
    seeLocal("203.0.113.7");
    auto r = get("/v1/decisions/stream?startup=true", "bouncer-key-one");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.content_type, "application/json");
    EXPECT_EQ(body(r), R"({"new":[)" + decision(0, "203.0.113.7") + R"(],"deleted":[]})");
    // The firewall bouncer's delta poll: a bare '?'.
    EXPECT_EQ(body(get("/v1/decisions/stream?", "bouncer-key-one")),
              R"({"new":null,"deleted":null})");
    seeLocal("2001:db8::7");
    // HEAD answers 200 and does not move the cursor (as LAPI).
    EXPECT_EQ(get("/v1/decisions/stream", "bouncer-key-one", "HEAD").status, 200);
    EXPECT_EQ(body(get("/v1/decisions/stream", "bouncer-key-one")),
              R"({"new":[)" + decision(1, "2001:db8::7") + R"(],"deleted":null})");
    // The other key has its own cursor: never asked, so everything (rule 9).
    auto other = body(get("/v1/decisions/stream", "bouncer-key-two"));
    EXPECT_NE(other.find("203.0.113.7"), std::string::npos);
    EXPECT_NE(other.find("2001:db8::7"), std::string::npos);
    EXPECT_TRUE(other.ends_with(R"(],"deleted":null})")) << other;
}

TEST_F(CrowdSecRoutes, StreamHonoursTheBouncersFilterQuery) {
    seeLocal("203.0.113.7");
    // What the firewall bouncer sends with scopes/origins/scenarios set in its yaml.
    auto r = get("/v1/decisions/stream?origins=sentrypeer%2Ccscli&scenarios_containing=sip%2Cvoip"
                 "&scenarios_not_containing=ssh&scopes=Ip%2CRange&startup=true",
                 "bouncer-key-one");
    EXPECT_EQ(body(r), R"({"new":[)" + decision(0, "203.0.113.7") + R"(],"deleted":[]})");
    r = get("/v1/decisions/stream?origins=cscli&startup=true", "bouncer-key-one");
    EXPECT_EQ(body(r), R"({"new":null,"deleted":[]})");
}

TEST_F(CrowdSecRoutes, ListAnswersNullWhenNothingMatches) {
    EXPECT_EQ(get("/v1/decisions", "bouncer-key-one").body, "null");
    seeLocal("203.0.113.7");
    EXPECT_EQ(get("/v1/decisions?ip=203.0.113.7", "bouncer-key-one").body,
              "[" + decision(0, "203.0.113.7") + "]");
    EXPECT_EQ(get("/v1/decisions?ip=198.51.100.1", "bouncer-key-one").body, "null");
    EXPECT_EQ(get("/v1/decisions?range=203.0.113.0/24&contains=false&scope=Ip&type=ban&whatever=1",
                  "bouncer-key-one")
                  .body,
              "[" + decision(0, "203.0.113.7") + "]");
    auto bad = get("/v1/decisions?ip=bogus", "bouncer-key-one");
    EXPECT_EQ(bad.status, 400);
    EXPECT_EQ(bad.body, R"({"message":"unable to convert 'bogus' to int: invalid address"})");
}

TEST_F(CrowdSecRoutes, EveryV1ErrorHasAMessage) {
    auto r = get("/v1/decisions/stream", "bouncer-key-one", "DELETE");
    EXPECT_EQ(r.status, 405);
    EXPECT_EQ(r.body, R"({"message":"Method not allowed"})");
    r = get("/v1/decisions/stream?x=%zz", "bouncer-key-one");
    EXPECT_EQ(r.status, 400);
    EXPECT_EQ(r.body, R"({"message":"The request data was invalid"})");
    r = get("/v1/watchers/login", "bouncer-key-one");
    EXPECT_TRUE(r.body.starts_with(R"({"message":)")) << r.body;
    // Outside /v1/ nothing changes.
    EXPECT_TRUE(get("/nowhere", "").body.starts_with(R"({"error": )"));
}
