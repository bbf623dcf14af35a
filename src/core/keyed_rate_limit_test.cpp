#include <gtest/gtest.h>

#include <string>

#include "core/clock.hpp"
#include "core/keyed_rate_limit.hpp"

using namespace sp::core;
using namespace std::chrono_literals;

TEST(KeyedRateLimiter, EachKeyHasItsOwnBucket) {
    ManualClock c;
    KeyedRateLimiter<std::string> l(1.0, 2.0, 16);
    EXPECT_TRUE(l.allow("a", c.now()));
    EXPECT_TRUE(l.allow("a", c.now()));
    EXPECT_FALSE(l.allow("a", c.now()));
    EXPECT_TRUE(l.allow("b", c.now())); // b is not charged for a
    EXPECT_TRUE(l.allow("b", c.now()));
    EXPECT_FALSE(l.allow("b", c.now()));
    c.advance(1s);
    EXPECT_TRUE(l.allow("a", c.now()));
    EXPECT_FALSE(l.allow("a", c.now()));
    EXPECT_EQ(l.allowed(), 5u);
    EXPECT_EQ(l.refused(), 3u);
    c.advance(10s); // refills up to burst only
    EXPECT_TRUE(l.allow("a", c.now()));
    EXPECT_TRUE(l.allow("a", c.now()));
    EXPECT_FALSE(l.allow("a", c.now()));
}

TEST(KeyedRateLimiter, FullTableEvictsOneLeastRecentlyUsedEntryNeverAll) {
    ManualClock c;
    KeyedRateLimiter<std::string> l(1.0, 1.0, 3);
    EXPECT_TRUE(l.allow("a", c.now()));
    EXPECT_TRUE(l.allow("b", c.now()));
    EXPECT_TRUE(l.allow("c", c.now()));
    EXPECT_FALSE(l.allow("a", c.now())); // a is now the most recently used
    EXPECT_TRUE(l.allow("d", c.now()));  // evicts b (least recently used), only b
    EXPECT_EQ(l.size(), 3u);
    EXPECT_EQ(l.evicted(), 1u);
    EXPECT_EQ(l.evictedActive(), 1u);    // b had not refilled yet
    EXPECT_FALSE(l.allow("a", c.now())); // a kept its empty bucket: no reset by the eviction
    EXPECT_FALSE(l.allow("c", c.now()));
    EXPECT_FALSE(l.allow("d", c.now()));
    EXPECT_TRUE(l.allow("b", c.now())); // b came back as new (evicts the LRU one: a)
    EXPECT_EQ(l.size(), 3u);
    EXPECT_EQ(l.evicted(), 2u);
}

TEST(KeyedRateLimiter, RotatingKeysCannotGrowTheTable) {
    ManualClock c;
    KeyedRateLimiter<std::string> l(10.0, 10.0, 100);
    for (int i = 0; i < 10000; ++i) {
        l.allow("k" + std::to_string(i), c.now());
        ASSERT_LE(l.size(), 100u);
    }
    EXPECT_EQ(l.size(), 100u);
    EXPECT_EQ(l.evicted(), 9900u);
    c.advance(1s); // idle entries are full again: evicting them is not "active"
    std::uint64_t active = l.evictedActive();
    l.allow("fresh", c.now());
    EXPECT_EQ(l.evictedActive(), active);
}

TEST(KeyedRateLimiter, ZeroRateIsUnlimitedAndStoresNothing) {
    ManualClock c;
    KeyedRateLimiter<std::string> l(0.0, 1.0, 4);
    for (int i = 0; i < 100; ++i) {
        EXPECT_TRUE(l.allow("a", c.now()));
    }
    EXPECT_EQ(l.size(), 0u);
}

// The p2p publisher limit's case: ids are free to rotate, a busy one must stay limited.
TEST(KeyedRateLimiter, RotatingKeysNeverResetAHotKey) {
    ManualClock clock;
    KeyedRateLimiter<std::string> l(1, 5, 100);
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
