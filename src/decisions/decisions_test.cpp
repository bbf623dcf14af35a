// The decision journal (extension, expiry, cursors, resends, filters) and CrowdSec's wire
// formats, pinned byte for byte (golden bodies: what Debian's bouncers parse).
#include <gtest/gtest.h>
#include <thread>

#include "decisions/journal.hpp"

using namespace std::chrono_literals;
using sp::core::ManualClock;
using sp::decisions::Filter;
using sp::decisions::formatGoDuration;
using sp::decisions::Journal;
using sp::decisions::JournalOptions;

namespace {

std::shared_ptr<const sp::block::Policy> policy(std::chrono::seconds window) {
    sp::block::PolicyOptions o;
    o.include_own_addresses = false;
    o.block_window = window;
    return std::make_shared<const sp::block::Policy>(o);
}

sp::store::Seen local(sp::core::TimePoint last, std::uint64_t n = 1) {
    sp::store::Seen s;
    s.count = n;
    s.local = n;
    s.first = last;
    s.last = last;
    return s;
}

sp::store::Seen peer(sp::core::TimePoint last, std::uint32_t reporters) {
    sp::store::Seen s;
    s.count = 3;
    s.peer = 3;
    s.reporters = reporters;
    s.first = last;
    s.last = last;
    return s;
}

Filter filter(Filter::Query q = {}, bool stream = true) {
    std::string error;
    auto f = Filter::parse(q, stream, &error);
    EXPECT_TRUE(f) << error;
    return f ? *f : Filter{};
}

struct JournalTest : ::testing::Test {
    ManualClock clock;
    std::unique_ptr<Journal> journal;
    std::uint64_t base = 0; // the first id this journal gives

    void make(std::chrono::seconds window = 4h, std::size_t keys = 2, std::size_t max_log = 1000) {
        journal = std::make_unique<Journal>(JournalOptions{.keys = keys, .max_log = max_log},
                                            policy(window), clock);
        base = static_cast<std::uint64_t>(
                   std::chrono::duration_cast<std::chrono::seconds>(clock.now().time_since_epoch())
                       .count()) *
               1'000'000;
    }
    void SetUp() override { make(); }
    void see(const std::string& ip, std::optional<sp::store::Seen> s) {
        journal->applyChanges({sp::store::KeyChange{ip, s}});
    }
    void seeLocal(const std::string& ip) { see(ip, local(clock.now())); }
    std::string startup(std::size_t key = 0, Filter::Query q = {}) {
        return sp::decisions::renderStream(journal->startup(key), filter(q), true);
    }
    std::string poll(std::size_t key = 0, Filter::Query q = {}) {
        return sp::decisions::renderStream(journal->poll(key), filter(q), false);
    }
    std::string id(std::uint64_t n) const { return std::to_string(base + n); }
    std::string decision(std::uint64_t n, const std::string& ip, const std::string& duration,
                         const std::string& scenario = "sentrypeer/sip-probe") const {
        return R"({"id":)" + id(n) +
               R"(,"origin":"sentrypeer","type":"ban","scope":"Ip","value":")" + ip +
               R"(","duration":")" + duration + R"(","scenario":")" + scenario +
               R"(","simulated":false})";
    }
    std::string metrics() const {
        sp::core::MetricsWriter w;
        journal->collect(w);
        return w.take();
    }
};

} // namespace

TEST(GoDuration, FormatsAsGoDoes) {
    EXPECT_EQ(formatGoDuration(0s), "0s");
    EXPECT_EQ(formatGoDuration(1s), "1s");
    EXPECT_EQ(formatGoDuration(59s), "59s");
    EXPECT_EQ(formatGoDuration(60s), "1m0s");
    EXPECT_EQ(formatGoDuration(3600s), "1h0m0s");
    EXPECT_EQ(formatGoDuration(3h + 59min + 58s), "3h59m58s");
    EXPECT_EQ(formatGoDuration(3h + 59min + 59500ms), "3h59m59.5s");
    EXPECT_EQ(formatGoDuration(8760h), "8760h0m0s");
    EXPECT_EQ(formatGoDuration(1500ms), "1.5s");
    EXPECT_EQ(formatGoDuration(1ms), "1ms");
    EXPECT_EQ(formatGoDuration(1500us), "1.5ms");
    EXPECT_EQ(formatGoDuration(1us), "1\xC2\xB5s");
    EXPECT_EQ(formatGoDuration(999ns), "999ns");
    EXPECT_EQ(formatGoDuration(1001ms), "1.001s");
    EXPECT_EQ(formatGoDuration(-3min), "-3m0s");
    EXPECT_EQ(formatGoDuration(-1500ms), "-1.5s");
}

TEST(DecisionJson, IsCrowdSecsShape) {
    sp::decisions::Decision d{.id = 1,
                              .until = sp::core::TimePoint{} + 3h + 59min + 58s,
                              .scenario = sp::decisions::Scenario::SipProbe,
                              .renew = false};
    std::string out;
    sp::decisions::appendDecision(out, "192.0.2.7", d, sp::core::TimePoint{}, true);
    EXPECT_EQ(out, R"({"id":1,"origin":"sentrypeer","type":"ban","scope":"Ip","value":"192.0.2.7",)"
                   R"("duration":"3h59m58s","scenario":"sentrypeer/sip-probe","simulated":false})");
    // A "new" entry never says 0s (a permanent ban for the bouncer); a deleted one may be <0.
    out.clear();
    sp::decisions::appendDecision(out, "2001:db8::7", d, d.until + 500ms, true);
    EXPECT_NE(out.find(R"("duration":"1s")"), std::string::npos) << out;
    out.clear();
    sp::decisions::appendDecision(out, "2001:db8::7", d, d.until + 90s, false);
    EXPECT_NE(out.find(R"("duration":"-1m30s")"), std::string::npos) << out;
}

TEST(DecisionJson, OnlyLiteralAddressesAreIps) {
    EXPECT_TRUE(sp::decisions::isLiteralIp("192.0.2.7"));
    EXPECT_TRUE(sp::decisions::isLiteralIp("2001:db8::7"));
    for (const char* bad : {"", "FR", "192.0.2.0/24", "fe80::1%eth0", "192.0.2.7 ", "1.2.3"}) {
        EXPECT_FALSE(sp::decisions::isLiteralIp(bad)) << bad;
    }
}

TEST_F(JournalTest, StartupGoldenAndEmptyDeltaIsNullNull) {
    EXPECT_EQ(startup(), R"({"new":null,"deleted":[]})");
    seeLocal("203.0.113.7");
    EXPECT_EQ(startup(),
              R"({"new":[)" + decision(0, "203.0.113.7", "4h0m0s") + R"(],"deleted":[]})");
    EXPECT_EQ(poll(), R"({"new":null,"deleted":null})");
}

TEST_F(JournalTest, DeltaCarriesNewThenNothingAgain) {
    startup();
    seeLocal("203.0.113.7");
    see("2001:db8::9", peer(clock.now(), 2));
    EXPECT_EQ(poll(), R"({"new":[)" + decision(0, "203.0.113.7", "4h0m0s") + "," +
                          decision(1, "2001:db8::9", "4h0m0s", "sentrypeer/p2p") +
                          R"(],"deleted":null})");
    EXPECT_EQ(poll(), R"({"new":null,"deleted":null})");
}

TEST_F(JournalTest, SeenAgainExtendsWithDeletedAndNewInOneAnswer) {
    startup();
    seeLocal("203.0.113.7");
    poll();
    clock.advance(10min);
    seeLocal("203.0.113.7");
    // Rule 5: the old decision in "deleted", the extended one in "new", the same answer.
    EXPECT_EQ(poll(), R"({"new":[)" + decision(1, "203.0.113.7", "4h0m0s") + R"(],"deleted":[)" +
                          decision(0, "203.0.113.7", "3h50m0s") + "]}");
    // Seen again within the step (4h / 100 = 144 s, at most 60 s): not re-issued.
    clock.advance(30s);
    seeLocal("203.0.113.7");
    EXPECT_EQ(poll(), R"({"new":null,"deleted":null})");
    EXPECT_NE(metrics().find(R"(decisions_changes_total{change="new",reason="extended"} 1)"),
              std::string::npos);
}

TEST_F(JournalTest, ExpiryMovesToDeleted) {
    make(10s);
    startup();
    seeLocal("203.0.113.7");
    EXPECT_EQ(poll(), R"({"new":[)" + decision(0, "203.0.113.7", "10s") + R"(],"deleted":null})");
    ASSERT_TRUE(journal->nextDue());
    EXPECT_EQ(*journal->nextDue(), clock.now() + 10s);
    clock.advance(9s);
    journal->expire();
    EXPECT_EQ(poll(), R"({"new":null,"deleted":null})");
    clock.advance(1s);
    journal->expire();
    EXPECT_EQ(poll(), R"({"new":null,"deleted":[)" + decision(0, "203.0.113.7", "0s") + "]}");
    EXPECT_EQ(journal->current().size(), 0U);
    EXPECT_EQ(startup(1), R"({"new":null,"deleted":[]})");
}

TEST_F(JournalTest, AddedThenEndedInOneWindowIsOnlyDeleted) {
    make(10s);
    startup();
    seeLocal("203.0.113.7");
    clock.advance(11s);
    journal->expire();
    // Never "new" and "deleted" for an address whose block has ended: the bouncer commits
    // deletes first, so that would ban it again.
    EXPECT_EQ(poll(), R"({"new":null,"deleted":[)" + decision(0, "203.0.113.7", "-1s") + "]}");
}

TEST_F(JournalTest, GoneFromIndexOrNeverBlockIsNotSent) {
    startup();
    seeLocal("203.0.113.7");
    seeLocal("127.0.0.1");                     // never blocked (built-in list)
    seeLocal("FR");                            // not an address: never a value
    see("198.51.100.4", peer(clock.now(), 1)); // one reporter: below the default 2
    EXPECT_EQ(poll(),
              R"({"new":[)" + decision(0, "203.0.113.7", "4h0m0s") + R"(],"deleted":null})");
    see("203.0.113.7", std::nullopt); // retention removed it
    EXPECT_EQ(poll(), R"({"new":null,"deleted":[)" + decision(0, "203.0.113.7", "4h0m0s") + "]}");
}

TEST_F(JournalTest, CursorsArePerKey) {
    startup(0);
    startup(1);
    seeLocal("203.0.113.7");
    EXPECT_NE(poll(0), R"({"new":null,"deleted":null})");
    EXPECT_EQ(poll(0), R"({"new":null,"deleted":null})");
    EXPECT_EQ(poll(1),
              R"({"new":[)" + decision(0, "203.0.113.7", "4h0m0s") + R"(],"deleted":null})");
}

TEST_F(JournalTest, UnknownKeyAfterRestartGetsEverythingOnItsFirstDelta) {
    seeLocal("203.0.113.7");
    // No startup=true since this daemon started (rule 9): the first delta resends all.
    auto a = journal->poll(0);
    EXPECT_TRUE(a.full);
    EXPECT_EQ(sp::decisions::renderStream(a, filter(), false),
              R"({"new":[)" + decision(0, "203.0.113.7", "4h0m0s") + R"(],"deleted":null})");
    EXPECT_EQ(poll(0), R"({"new":null,"deleted":null})");
    EXPECT_NE(metrics().find(R"(decisions_resends_total{reason="unknown_key"} 1)"),
              std::string::npos)
        << metrics();
    EXPECT_NE(metrics().find("decisions_keys_tracked 1"), std::string::npos);
}

TEST_F(JournalTest, CursorThatFellOffTheLogGetsTheWholeState) {
    make(4h, 2, 4);
    startup(0);
    startup(1);
    for (int i = 1; i <= 3; ++i) {
        seeLocal("203.0.113." + std::to_string(i));
    }
    EXPECT_FALSE(journal->poll(1).full); // within the log
    for (int i = 4; i <= 6; ++i) {
        seeLocal("203.0.113." + std::to_string(i));
    }
    auto a = journal->poll(0); // 6 changes since its cursor, the log keeps 4
    EXPECT_TRUE(a.full);
    EXPECT_EQ(a.all.size(), 6U);
    EXPECT_FALSE(journal->poll(1).full); // 3 changes since: still in the log
    auto m = metrics();
    EXPECT_NE(m.find(R"(decisions_resends_total{reason="fell_off"} 1)"), std::string::npos) << m;
    EXPECT_NE(m.find("decisions_log_entries 4"), std::string::npos) << m;
    EXPECT_NE(m.find("decisions_log_dropped_total 2"), std::string::npos) << m;
}

TEST_F(JournalTest, StateReconcilesAddsAndRemovals) {
    startup();
    seeLocal("203.0.113.7");
    poll();
    sp::store::IndexSnapshot state;
    bool inserted = false;
    state.by_ip.upsert("198.51.100.9", inserted) = local(clock.now());
    journal->applyState(state);
    EXPECT_EQ(poll(), R"({"new":[)" + decision(1, "198.51.100.9", "4h0m0s") + R"(],"deleted":[)" +
                          decision(0, "203.0.113.7", "4h0m0s") + "]}");
}

TEST_F(JournalTest, NoExpiryIsALongFiniteDurationRenewedAtHalf) {
    make(0s);
    startup();
    seeLocal("203.0.113.7");
    EXPECT_EQ(poll(),
              R"({"new":[)" + decision(0, "203.0.113.7", "8760h0m0s") + R"(],"deleted":null})");
    clock.advance(4380h - 1s);
    journal->expire();
    EXPECT_EQ(poll(), R"({"new":null,"deleted":null})");
    clock.advance(1s);
    journal->expire();
    EXPECT_EQ(poll(), R"({"new":[)" + decision(1, "203.0.113.7", "8760h0m0s") + R"(],"deleted":[)" +
                          decision(0, "203.0.113.7", "4380h0m0s") + "]}");
}

TEST_F(JournalTest, PeerOnlyTurningLocalIsReissuedWithTheNewScenario) {
    startup();
    see("203.0.113.7", peer(clock.now(), 3));
    poll();
    auto s = peer(clock.now(), 3);
    s.local = 1;
    s.count = 4;
    see("203.0.113.7", s);
    EXPECT_EQ(poll(), R"({"new":[)" + decision(1, "203.0.113.7", "4h0m0s") + R"(],"deleted":[)" +
                          decision(0, "203.0.113.7", "4h0m0s", "sentrypeer/p2p") + "]}");
}

TEST_F(JournalTest, StreamFiltersAsLapi) {
    seeLocal("203.0.113.7");
    see("2001:db8::9", peer(clock.now(), 2));
    const std::string sip = decision(0, "203.0.113.7", "4h0m0s");
    const std::string p2p = decision(1, "2001:db8::9", "4h0m0s", "sentrypeer/p2p");
    auto only = [](const std::string& d) { return R"({"new":[)" + d + R"(],"deleted":[]})"; };
    const std::string none = R"({"new":null,"deleted":[]})";
    EXPECT_EQ(startup(0, {{"scenarios_containing", "P2P"}}), only(p2p));
    EXPECT_EQ(startup(0, {{"scenarios_containing", "voip,sip"}}), only(sip));
    EXPECT_EQ(startup(0, {{"scenarios_not_containing", "ssh,p2p"}}), only(sip));
    EXPECT_EQ(startup(0, {{"origins", "cscli,crowdsec"}}), none);
    EXPECT_EQ(startup(0, {{"origins", "cscli,sentrypeer"}, {"scenarios_containing", "p2p"}}),
              only(p2p));
    EXPECT_EQ(startup(0, {{"scopes", "Range"}}), none);
    EXPECT_EQ(startup(0, {{"scopes", "Ip,Range"}, {"scenarios_containing", "p2p"}}), only(p2p));
    EXPECT_EQ(startup(0, {{"unknown", "x"}, {"scenarios_containing", "sip"}}), only(sip));
}

TEST_F(JournalTest, ListFiltersAsLapi) {
    seeLocal("203.0.113.7");
    see("2001:db8::9", peer(clock.now(), 2));
    const std::string sip = decision(0, "203.0.113.7", "4h0m0s");
    const std::string p2p = decision(1, "2001:db8::9", "4h0m0s", "sentrypeer/p2p");
    auto list = [&](Filter::Query q) {
        return sp::decisions::renderList(journal->current(), filter(q, false), clock.now());
    };
    EXPECT_EQ(list({{"ip", "203.0.113.7"}}), "[" + sip + "]");
    EXPECT_EQ(list({{"ip", "2001:DB8:0::9"}}), "[" + p2p + "]");
    EXPECT_EQ(list({{"ip", "203.0.113.8"}}), "null");
    EXPECT_EQ(list({{"range", "203.0.113.0/24"}}),
              "null"); // contains=true: the range in a decision
    EXPECT_EQ(list({{"range", "203.0.113.0/24"}, {"contains", "false"}}), "[" + sip + "]");
    EXPECT_EQ(list({{"range", "2001:db8::/32"}, {"contains", "0"}}), "[" + p2p + "]");
    EXPECT_EQ(list({{"ip", "203.0.113.7"}, {"type", "captcha"}}), "null");
    EXPECT_EQ(list({{"ip", "203.0.113.7"}, {"type", "ban"}, {"scope", "ip"}}), "[" + sip + "]");
    EXPECT_EQ(list({{"value", "2001:db8::9"}}), "[" + p2p + "]");
    EXPECT_EQ(list({{"scope", "range"}}), "null");
    std::string error;
    EXPECT_FALSE(Filter::parse({{"ip", "not-an-ip"}}, false, &error));
    EXPECT_EQ(error, "unable to convert 'not-an-ip' to int: invalid address");
    EXPECT_FALSE(Filter::parse({{"contains", "maybe"}}, false, &error));
    EXPECT_EQ(error,
              R"(invalid contains value : strconv.ParseBool: parsing "maybe": invalid syntax)");
}

TEST_F(JournalTest, LargeStartupIsStreamedInPiecesOfBoundedSize) {
    for (int i = 0; i < 2000; ++i) {
        seeLocal("2001:db8::" + std::to_string(i));
    }
    auto body = sp::decisions::streamBody(journal->startup(0), filter(), true);
    std::string all, chunk;
    int pieces = 0;
    bool more = true;
    while (more) {
        chunk.clear();
        more = body(chunk);
        EXPECT_LE(chunk.size(), 64U * 1024 + 512);
        all += chunk;
        ++pieces;
    }
    EXPECT_GT(pieces, 3);
    EXPECT_TRUE(all.starts_with(R"({"new":[{"id":)"));
    EXPECT_TRUE(all.ends_with(R"(}],"deleted":[]})"));
    std::size_t n = 0;
    for (auto at = all.find(R"("scope":"Ip")"); at != std::string::npos;
         at = all.find(R"("scope":"Ip")", at + 1)) {
        ++n;
    }
    EXPECT_EQ(n, 2000U);
}

TEST(JournalThread, FollowsTheIndexSubscription) {
    sp::core::SystemClock clock;
    sp::store::Index index;
    index.add("203.0.113.7", "100", clock.now(), sp::core::Origin::Local, "");
    index.publish();
    Journal journal(JournalOptions{.keys = 1}, policy(4h), clock);
    journal.start(index);
    auto first = journal.startup(0);
    ASSERT_EQ(first.all.size(), 1U); // the state is applied before start() returns
    index.add("198.51.100.8", "100", clock.now(), sp::core::Origin::Local, "");
    index.publish();
    auto deadline = std::chrono::steady_clock::now() + 5s;
    std::vector<Journal::Entry> added;
    while (added.empty() && std::chrono::steady_clock::now() < deadline) {
        added = journal.poll(0).added;
        std::this_thread::sleep_for(10ms);
    }
    ASSERT_EQ(added.size(), 1U);
    EXPECT_EQ(added[0].ip, "198.51.100.8");
    journal.stop();
}
