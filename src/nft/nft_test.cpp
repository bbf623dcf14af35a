// Pure parts of the nftables blocker: address checks, transaction text, batching and the
// timeout refresh rule. (The real nft and kernel are exercised by tests/integration/test_nft.py.)
#include <gtest/gtest.h>

#include "nft/commands.hpp"
#include "nft/tracker.hpp"

namespace sp::nft {
namespace {

using namespace std::chrono_literals;

const TimePoint kNow{std::chrono::hours(24 * 365 * 50)};

Address v4(const std::string& s) {
    return Address{Family::V4, s};
}
Address v6(const std::string& s) {
    return Address{Family::V6, s};
}

TEST(NftAddress, CanonicalFormsAndFamilies) {
    auto a = canonicalAddress("203.0.113.10");
    ASSERT_TRUE(a);
    EXPECT_EQ(a->family, Family::V4);
    EXPECT_EQ(a->text, "203.0.113.10");
    auto b = canonicalAddress("2001:DB8:5:0:0:0:0:10");
    ASSERT_TRUE(b);
    EXPECT_EQ(b->family, Family::V6);
    EXPECT_EQ(b->text, "2001:db8:5::10");
    auto m = canonicalAddress("::ffff:198.51.100.7"); // a dual-stack socket's IPv4 peer
    ASSERT_TRUE(m);
    EXPECT_EQ(m->family, Family::V4);
    EXPECT_EQ(m->text, "198.51.100.7");
}

TEST(NftAddress, AnythingElseNeverReachesAScript) {
    for (const char* bad : {"", "example.com", "203.0.113.1 }; flush ruleset; add element {",
                            "203.0.113.256", "2001:db8::/32", "1.2.3.4\n", "::ffff:1.2.3.4 x"}) {
        EXPECT_FALSE(canonicalAddress(bad)) << bad;
    }
}

TEST(NftTable, Names) {
    EXPECT_TRUE(validTableName("sentrypeer"));
    EXPECT_TRUE(validTableName("sp_test-1"));
    for (const char* bad : {"", "1abc", "a b", "a;b", "a}", "a\"", "-x"}) {
        EXPECT_FALSE(validTableName(bad)) << bad;
    }
    EXPECT_FALSE(validTableName(std::string(65, 'a')));
}

TEST(NftScript, StartupReplacesTheTableWithSetsChainAndElements) {
    Elements e;
    e.v4 = {{"203.0.113.10", 3600s}, {"198.51.100.1", std::nullopt}};
    e.v6 = {{"2001:db8:5::10", 61s}};
    std::string s = startupScript("sentrypeer", false, e);
    EXPECT_EQ(s.rfind("add table inet sentrypeer\ndelete table inet sentrypeer\ntable inet "
                      "sentrypeer {\n",
                      0),
              0U)
        << s;
    EXPECT_NE(s.find("set ipv4_addr {\n    type ipv4_addr\n    flags timeout\n"),
              std::string::npos);
    EXPECT_NE(s.find("set ipv6_addr {\n    type ipv6_addr\n    flags timeout\n"),
              std::string::npos);
    EXPECT_NE(s.find("type filter hook input priority filter - 10; policy accept;"),
              std::string::npos);
    EXPECT_NE(s.find("ip saddr @ipv4_addr counter drop"), std::string::npos);
    EXPECT_NE(s.find("ip6 saddr @ipv6_addr counter drop"), std::string::npos);
    EXPECT_NE(s.find("add element inet sentrypeer ipv4_addr { 203.0.113.10 timeout 3600s, "
                     "198.51.100.1 }\n"),
              std::string::npos)
        << s;
    EXPECT_NE(s.find("add element inet sentrypeer ipv6_addr { 2001:db8:5::10 timeout 61s }\n"),
              std::string::npos);

    EXPECT_EQ(startupScript("t", false, Elements{}).find("add element"),
              std::string::npos); // no empty element list
}

TEST(NftScript, SetOnlyStartupTouchesOnlyTheSets) {
    Elements e;
    e.v4 = {{"203.0.113.10", 5s}};
    // The table may hold the operator's chains: never deleted, no chain of ours.
    EXPECT_EQ(startupScript("t", true, e),
              "add table inet t\n"
              "add set inet t ipv4_addr { type ipv4_addr; flags timeout; }\n"
              "add set inet t ipv6_addr { type ipv6_addr; flags timeout; }\n"
              "flush set inet t ipv4_addr\n"
              "flush set inet t ipv6_addr\n"
              "add element inet t ipv4_addr { 203.0.113.10 timeout 5s }\n");
    EXPECT_EQ(exitScript("t", true), "flush set inet t ipv4_addr\nflush set inet t ipv6_addr\n");
    EXPECT_EQ(exitScript("t", false), "add table inet t\ndelete table inet t\n");
}

TEST(NftScript, LargeListsAreCutIntoCommandsOfOneTransaction) {
    Elements e;
    for (int i = 0; i < 25000; ++i) {
        e.v4.push_back(
            {"10.0." + std::to_string(i / 256 % 256) + "." + std::to_string(i % 256), 10s});
    }
    std::string s = startupScript("t", true, e);
    std::size_t commands = 0;
    for (std::size_t p = s.find("add element"); p != std::string::npos;
         p = s.find("add element", p + 1)) {
        ++commands;
    }
    EXPECT_EQ(commands, 3U);
}

TEST(NftScript, TimeoutsAreClampedToWhatKernelsAccept) {
    Elements e;
    e.v4 = {{"203.0.113.1", 0s}, {"203.0.113.2", std::chrono::hours(24 * 400)}};
    std::string s = resyncScript("t", e);
    EXPECT_NE(s.find("203.0.113.1 timeout 1s"), std::string::npos) << s;
    EXPECT_NE(s.find("203.0.113.2 timeout 1987200s"), std::string::npos) << s;
    EXPECT_EQ(s.rfind("flush set inet t ipv4_addr\nflush set inet t ipv6_addr\n", 0), 0U);
}

TEST(NftScript, BatchWritesEveryElementAsAddDeleteAddAndEveryRemovalAsAddDelete) {
    Elements put;
    put.v4 = {{"203.0.113.10", 30s}};
    put.v6 = {{"2001:db8:5::10", std::nullopt}};
    std::string s = batchScript("sp", put, {v4("198.51.100.9")});
    EXPECT_EQ(s, "add element inet sp ipv4_addr { 203.0.113.10 }\n"
                 "add element inet sp ipv6_addr { 2001:db8:5::10 }\n"
                 "add element inet sp ipv4_addr { 198.51.100.9 }\n"
                 "delete element inet sp ipv4_addr { 203.0.113.10 }\n"
                 "delete element inet sp ipv6_addr { 2001:db8:5::10 }\n"
                 "delete element inet sp ipv4_addr { 198.51.100.9 }\n"
                 "add element inet sp ipv4_addr { 203.0.113.10 timeout 30s }\n"
                 "add element inet sp ipv6_addr { 2001:db8:5::10 }\n");
    EXPECT_EQ(batchScript("sp", Elements{}, {}), "");
}

TEST(NftTracker, TimeoutIsWhatRemainsRoundedUp) {
    EXPECT_EQ(Tracker::timeoutAt(kNow + 1500ms, kNow), 2s);
    EXPECT_EQ(Tracker::timeoutAt(kNow + 1ms, kNow), 1s);
    EXPECT_EQ(Tracker::timeoutAt(kNow, kNow), std::nullopt);
    EXPECT_EQ(Tracker::timeoutAt(kNow - 1s, kNow), std::nullopt);
}

TEST(NftTracker, AddThenRefreshOnlyWhenTheExpiryMoves) {
    Tracker t;
    t.want(v4("203.0.113.10"), Tracker::Blocked{kNow + 60s}, kNow);
    auto b = t.take(kNow);
    ASSERT_EQ(b.put.v4.size(), 1U);
    EXPECT_EQ(b.put.v4[0].timeout, 60s);
    EXPECT_EQ(b.adds, 1U);
    EXPECT_EQ(b.refreshes, 0U);
    t.committed();
    EXPECT_EQ(t.count(Family::V4), 1U);

    // Same expiry (e.g. a peer report that does not move last-seen): nothing to write.
    t.want(v4("203.0.113.10"), Tracker::Blocked{kNow + 60s}, kNow);
    EXPECT_TRUE(t.take(kNow + 10s).empty());
    t.committed();

    // Seen again 10 s later: the element is written again with the new remaining time.
    t.want(v4("203.0.113.10"), Tracker::Blocked{kNow + 70s}, kNow + 10s);
    b = t.take(kNow + 10s);
    ASSERT_EQ(b.put.v4.size(), 1U);
    EXPECT_EQ(b.put.v4[0].timeout, 60s);
    EXPECT_EQ(b.refreshes, 1U);
    EXPECT_EQ(b.adds, 0U);
    t.committed();

    // From expiring to never expiring is a refresh too.
    t.want(v4("203.0.113.10"), Tracker::Blocked{std::nullopt}, kNow + 11s);
    b = t.take(kNow + 11s);
    ASSERT_EQ(b.put.v4.size(), 1U);
    EXPECT_EQ(b.put.v4[0].timeout, std::nullopt);
    t.committed();
    EXPECT_EQ(t.count(Family::V4), 1U);
}

TEST(NftTracker, LatestWantedStateWinsWithinABatch) {
    Tracker t;
    t.want(v6("2001:db8:5::10"), Tracker::Blocked{kNow + 60s}, kNow);
    t.want(v6("2001:db8:5::10"), Tracker::Blocked{kNow + 90s}, kNow);
    t.want(v4("203.0.113.1"), Tracker::Blocked{kNow + 60s}, kNow);
    t.want(v4("203.0.113.1"), std::nullopt, kNow); // allow-listed meanwhile: never written
    auto b = t.take(kNow);
    ASSERT_EQ(b.put.v6.size(), 1U);
    EXPECT_EQ(b.put.v6[0].timeout, 90s);
    EXPECT_TRUE(b.put.v4.empty());
    EXPECT_TRUE(b.remove.empty()); // it was never in the sets
    EXPECT_EQ(t.pending(), 0U);
}

TEST(NftTracker, RemovalOnlyOfWhatIsInTheSetsAndExpiredBlocksAreRemovals) {
    Tracker t;
    t.want(v4("203.0.113.10"), Tracker::Blocked{kNow + 5s}, kNow);
    t.want(v4("203.0.113.11"), Tracker::Blocked{kNow + 5s}, kNow);
    t.take(kNow);
    t.committed();
    t.want(v4("203.0.113.10"), std::nullopt, kNow + 1s); // gone from the index
    // Wanted with a block that is already over by the time the batch is built.
    t.want(v4("203.0.113.11"), Tracker::Blocked{kNow + 2s}, kNow + 1s);
    auto b = t.take(kNow + 3s);
    EXPECT_TRUE(b.put.v4.empty());
    ASSERT_EQ(b.remove.size(), 2U);
    t.committed();
    EXPECT_EQ(t.count(Family::V4), 0U);
}

TEST(NftTracker, AFailedBatchChangesNothing) {
    Tracker t;
    t.want(v4("203.0.113.10"), Tracker::Blocked{kNow + 60s}, kNow);
    t.take(kNow);
    t.failed();
    EXPECT_EQ(t.count(Family::V4), 0U);
    // Written again when asked again (the blocker resyncs after a failure).
    t.want(v4("203.0.113.10"), Tracker::Blocked{kNow + 60s}, kNow);
    EXPECT_EQ(t.take(kNow).adds, 1U);
}

TEST(NftTracker, ResetReplacesEverythingAndSkipsExpiredAndDuplicates) {
    Tracker t;
    t.want(v4("198.51.100.1"), Tracker::Blocked{kNow + 60s}, kNow);
    t.take(kNow);
    t.committed();
    auto e = t.reset({{v4("203.0.113.10"), Tracker::Blocked{kNow + 30s}},
                      {v4("203.0.113.10"), Tracker::Blocked{kNow + 30s}},
                      {v4("203.0.113.11"), Tracker::Blocked{kNow - 1s}},
                      {v6("2001:db8:5::10"), Tracker::Blocked{std::nullopt}}},
                     kNow);
    ASSERT_EQ(e.v4.size(), 1U);
    EXPECT_EQ(e.v4[0].timeout, 30s);
    ASSERT_EQ(e.v6.size(), 1U);
    EXPECT_EQ(e.v6[0].timeout, std::nullopt);
    t.committed();
    EXPECT_EQ(t.count(Family::V4), 1U);
    EXPECT_EQ(t.count(Family::V6), 1U);
    // 198.51.100.1 is gone with the reset: wanting it out writes nothing.
    t.want(v4("198.51.100.1"), std::nullopt, kNow);
    EXPECT_TRUE(t.take(kNow).empty());
}

TEST(NftTracker, SweepForgetsWhatNftExpired) {
    Tracker t;
    t.want(v4("203.0.113.10"), Tracker::Blocked{kNow + 5s}, kNow);
    t.want(v6("2001:db8:5::10"), Tracker::Blocked{std::nullopt}, kNow);
    t.take(kNow);
    t.committed();
    t.sweep(kNow + 6s); // within the slack
    EXPECT_EQ(t.count(Family::V4), 1U);
    t.sweep(kNow + 8s);
    EXPECT_EQ(t.count(Family::V4), 0U);
    EXPECT_EQ(t.count(Family::V6), 1U); // no expiry: stays
    // Seen again after nft expired it: an add, not a refresh.
    t.want(v4("203.0.113.10"), Tracker::Blocked{kNow + 70s}, kNow + 10s);
    EXPECT_EQ(t.take(kNow + 10s).adds, 1U);
}

} // namespace
} // namespace sp::nft
