#include <gtest/gtest.h>

#include "core/clock.hpp"
#include "p2p/publisher_limit.hpp"

using namespace sp;
using namespace std::chrono_literals;

TEST(PublisherLimit, RateAndBurstPerKey) {
    core::ManualClock clock;
    p2p::PublisherLimit l(2, 4, 10);
    for (int i = 0; i < 4; ++i) {
        EXPECT_TRUE(l.allow("a", clock.now())) << i;
    }
    EXPECT_FALSE(l.allow("a", clock.now()));
    EXPECT_TRUE(l.allow("b", clock.now())); // another publisher has its own bucket
    clock.advance(500ms);
    EXPECT_TRUE(l.allow("a", clock.now())); // 2/s: one token after 0.5 s
    EXPECT_FALSE(l.allow("a", clock.now()));
}

TEST(PublisherLimit, FullMapEvictsOneLeastRecentlyUsedEntry) {
    core::ManualClock clock;
    p2p::PublisherLimit l(1, 1, 3);
    EXPECT_TRUE(l.allow("a", clock.now()));
    EXPECT_TRUE(l.allow("b", clock.now()));
    EXPECT_TRUE(l.allow("c", clock.now()));
    EXPECT_FALSE(l.allow("a", clock.now())); // touches a: b is now the least recently used
    EXPECT_TRUE(l.allow("d", clock.now()));  // evicts b only
    EXPECT_EQ(l.size(), 3U);
    EXPECT_EQ(l.evicted(), 1U);
    EXPECT_FALSE(l.contains("b"));
    EXPECT_TRUE(l.contains("a"));
    EXPECT_TRUE(l.contains("c"));
    EXPECT_TRUE(l.contains("d"));
    // a's empty bucket survived the eviction: still limited
    EXPECT_FALSE(l.allow("a", clock.now()));
}

TEST(PublisherLimit, RotatingIdsNeverResetAHotPublisher) {
    core::ManualClock clock;
    p2p::PublisherLimit l(1, 5, 100);
    for (int i = 0; i < 5; ++i) {
        EXPECT_TRUE(l.allow("noisy", clock.now()));
    }
    // 10,000 fresh ids, with the noisy publisher still sending between them: the noisy
    // bucket is never evicted (it is always recently used) and never refilled for free.
    int noisy_allowed = 0;
    for (int i = 0; i < 10000; ++i) {
        l.allow("rotating-" + std::to_string(i), clock.now());
        noisy_allowed += l.allow("noisy", clock.now()) ? 1 : 0;
    }
    EXPECT_EQ(noisy_allowed, 0);
    EXPECT_EQ(l.size(), 100U); // bounded
    EXPECT_EQ(l.evicted(), 10000U - 99U);
}
