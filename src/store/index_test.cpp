#include "store/index.hpp"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <string>
#include <thread>

#include <fmt/format.h>

namespace sp::store {
namespace {

using namespace std::chrono_literals;
using core::Origin;
using core::TimePoint;

const TimePoint t0{std::chrono::hours(1000)};

TEST(IndexTest, AddAndRemoveAfterPublish) {
    Index index;
    index.add("192.0.2.1", "1", t0 + 1s, Origin::Local, {});
    index.add("192.0.2.1", "2", t0, Origin::Local, {});
    index.add("192.0.2.2", "2", t0 + 2s, Origin::Local, {});
    EXPECT_EQ(index.events(), 0u); // readers see nothing before publish()
    EXPECT_FALSE(index.ip("192.0.2.1"));
    index.publish();
    EXPECT_EQ(index.events(), 3u);
    EXPECT_EQ(index.ip("192.0.2.1")->count, 2u);
    EXPECT_EQ(index.ip("192.0.2.1")->first, t0);
    EXPECT_EQ(index.ip("192.0.2.1")->last, t0 + 1s);

    auto before = index.snapshot();
    EXPECT_EQ(index.remove("192.0.2.1", "2", t0, Origin::Local, {}), std::pair(true, true));
    index.publish();
    EXPECT_EQ(index.events(), 2u);
    EXPECT_EQ(index.ip("192.0.2.1")->count, 1u);
    EXPECT_EQ(index.ip("192.0.2.1")->first, t0); // at least the removed time
    EXPECT_EQ(index.number("2")->count, 1u);
    EXPECT_EQ(index.remove("192.0.2.1", "1", t0 + 1s, Origin::Local, {}), std::pair(false, false));
    index.publish();
    EXPECT_FALSE(index.ip("192.0.2.1"));
    EXPECT_FALSE(index.number("1"));
    index.remove("192.0.2.9", "9", t0, Origin::Local, {}); // unknown keys: no effect on them
    index.publish();
    EXPECT_EQ(index.number("2")->count, 1u);
    // A snapshot taken earlier never changes.
    EXPECT_EQ(before->events, 3u);
    EXPECT_EQ(before->by_ip.find("192.0.2.1")->count, 2u);
}

TEST(IndexTest, CountsLocalAndPeerEventsAndDistinctReporters) {
    Index index;
    // Reporters are verified publisher identities (core::Event::reporter).
    index.add("203.0.113.5", "100", t0, Origin::Peer, "node-a");
    index.add("203.0.113.5", "100", t0, Origin::Peer, "node-a");
    index.add("203.0.113.5", "101", t0, Origin::Peer, "node-b");
    index.add("203.0.113.5", "101", t0, Origin::Local, "ignored-for-local");
    index.publish();
    auto s = index.ip("203.0.113.5");
    ASSERT_TRUE(s);
    EXPECT_EQ(s->count, 4u);
    EXPECT_EQ(s->local, 1u);
    EXPECT_EQ(s->peer, 3u);
    EXPECT_EQ(s->reporters, 2u);
    EXPECT_EQ(index.number("100")->reporters, 1u);
    EXPECT_EQ(index.snapshot()->peer_events, 3u);

    // node-b's only event goes: one reporter left; node-a's two events count as one.
    index.remove("203.0.113.5", "101", t0, Origin::Peer, "node-b");
    index.publish();
    EXPECT_EQ(index.ip("203.0.113.5")->reporters, 1u);
    EXPECT_EQ(index.ip("203.0.113.5")->peer, 2u);
    index.remove("203.0.113.5", "100", t0, Origin::Peer, "node-a");
    index.publish();
    EXPECT_EQ(index.ip("203.0.113.5")->reporters, 1u); // node-a still has one event
    index.remove("203.0.113.5", "100", t0, Origin::Peer, "node-a");
    index.publish();
    EXPECT_EQ(index.ip("203.0.113.5")->reporters, 0u);
    EXPECT_EQ(index.ip("203.0.113.5")->local, 1u);
    EXPECT_EQ(index.snapshot()->peer_events, 0u);
}

// A peer event with an empty reporter (a plaintext SentryPeer value: no verified identity)
// is a peer event but never a reporter, however many arrive; a verified one next to them
// is one reporter, and removing the unverified ones leaves it.
TEST(IndexTest, PeerEventsWithoutAReporterCountButNeverAddOne) {
    Index index;
    for (int i = 0; i < 5; ++i) {
        index.add("203.0.113.7", "200", t0, Origin::Peer, "");
    }
    index.publish();
    auto s = index.ip("203.0.113.7");
    ASSERT_TRUE(s);
    EXPECT_EQ(s->peer, 5u);
    EXPECT_EQ(s->reporters, 0u);
    EXPECT_EQ(index.number("200")->reporters, 0u);
    EXPECT_EQ(index.snapshot()->peer_events, 5u);
    index.add("203.0.113.7", "200", t0, Origin::Peer, "9f2c4b1a0e8d7c6b5a4938271605f4e3d2c1b0a9");
    index.remove("203.0.113.7", "200", t0, Origin::Peer, "");
    index.publish();
    EXPECT_EQ(index.ip("203.0.113.7")->peer, 5u);
    EXPECT_EQ(index.ip("203.0.113.7")->reporters, 1u);
    for (int i = 0; i < 4; ++i) {
        index.remove("203.0.113.7", "200", t0, Origin::Peer, "");
    }
    index.publish();
    EXPECT_EQ(index.ip("203.0.113.7")->peer, 1u);
    EXPECT_EQ(index.ip("203.0.113.7")->reporters, 1u);
    // The load's second pass: a plaintext row reclassified adds no reporter either.
    index.add("203.0.113.8", "201", t0, Origin::Local, {});
    index.reclassifyAsPeer("203.0.113.8", "201", "");
    index.publish();
    EXPECT_EQ(index.ip("203.0.113.8")->peer, 1u);
    EXPECT_EQ(index.ip("203.0.113.8")->reporters, 0u);
}

TEST(IndexTest, ReportersAreCappedSoAFloodOfIdsCostsBoundedMemory) {
    Index index;
    for (int i = 0; i < 1000; ++i) {
        index.add("203.0.113.9", "1", t0, Origin::Peer, fmt::format("node-{}", i));
    }
    index.publish();
    EXPECT_EQ(index.ip("203.0.113.9")->reporters, kMaxReporters);
    EXPECT_EQ(index.ip("203.0.113.9")->peer, 1000u);
    EXPECT_LT(index.memoryBytes(), 4096u);
}

TEST(IndexTest, ReclassifyMovesALocalCountToAPeer) {
    Index index;
    index.add("192.0.2.1", "1", t0, Origin::Local, {});
    index.add("192.0.2.1", "1", t0 + 1s, Origin::Local, {});
    index.reclassifyAsPeer("192.0.2.1", "1", "node-a");
    index.publish();
    auto s = index.ip("192.0.2.1");
    EXPECT_EQ(s->count, 2u);
    EXPECT_EQ(s->local, 1u);
    EXPECT_EQ(s->peer, 1u);
    EXPECT_EQ(s->reporters, 1u);
    EXPECT_EQ(s->first, t0);
    EXPECT_EQ(s->last, t0 + 1s);
}

// What a consumer rebuilds from "the state, then every change".
struct Model {
    std::map<std::string, std::uint64_t> ips, numbers;
    void apply(const IndexSubscription::Update& u) {
        if (u.state) {
            ips.clear();
            numbers.clear();
            for (const auto& [k, s] : u.state->by_ip) {
                ips[std::string(k)] = s.count;
            }
            for (const auto& [k, s] : u.state->by_number) {
                numbers[std::string(k)] = s.count;
            }
        }
        for (const auto& d : u.deltas) {
            for (const auto& c : d->ips) {
                c.seen ? void(ips[c.key] = c.seen->count) : void(ips.erase(c.key));
            }
            for (const auto& c : d->numbers) {
                c.seen ? void(numbers[c.key] = c.seen->count) : void(numbers.erase(c.key));
            }
        }
    }
    static std::map<std::string, std::uint64_t> of(const KeyMap& m) {
        std::map<std::string, std::uint64_t> out;
        for (const auto& [k, s] : m) {
            out[std::string(k)] = s.count;
        }
        return out;
    }
};

TEST(IndexTest, SubscriberGetsTheStateThenEveryChange) {
    Index index;
    index.add("192.0.2.1", "1", t0, Origin::Local, {});
    index.publish();
    auto sub = index.subscribe();
    auto u = sub->wait(0ms);
    ASSERT_TRUE(u.state);
    EXPECT_EQ(u.state->by_ip.size(), 1u);
    EXPECT_TRUE(u.deltas.empty());

    index.add("192.0.2.2", "2", t0, Origin::Local, {});
    index.remove("192.0.2.1", "1", t0, Origin::Local, {});
    index.publish();
    u = sub->wait(1s);
    EXPECT_FALSE(u.state);
    ASSERT_EQ(u.deltas.size(), 1u);
    std::map<std::string, bool> ips;
    for (const auto& c : u.deltas[0]->ips) {
        ips[c.key] = c.seen.has_value();
    }
    EXPECT_EQ(ips, (std::map<std::string, bool>{{"192.0.2.1", false}, {"192.0.2.2", true}}));
    EXPECT_EQ(u.deltas[0]->numbers.size(), 2u);
    EXPECT_FALSE(sub->wait(0ms).state);
}

// A subscription that arrives in the middle of a batch (changes already made, not yet
// published) must not miss them: it gets the published state as a whole.
TEST(IndexTest, SubscribingMidBatchMissesNothing) {
    Index index;
    index.add("192.0.2.1", "1", t0, Origin::Local, {});
    auto sub = index.subscribe(); // before the first publish; the change above is unrecorded
    Model m;
    m.apply(sub->wait(0ms));
    index.publish();
    m.apply(sub->wait(1s));
    EXPECT_EQ(m.ips, Model::of(index.snapshot()->by_ip));
    EXPECT_EQ(m.ips.size(), 1u);
}

TEST(IndexTest, ASubscriberThatFallsBehindIsResyncedNotQueuedForever) {
    Index index;
    auto sub = index.subscribe(10);
    Model m;
    m.apply(sub->wait(0ms));
    for (int i = 0; i < 50; ++i) {
        index.add(fmt::format("192.0.2.{}", i), "1", t0, Origin::Local, {});
        index.publish();
    }
    EXPECT_LE(sub->pendingChanges(), 10u);
    auto u = sub->wait(0ms);
    ASSERT_TRUE(u.state);
    EXPECT_GE(sub->resyncs(), 1u);
    m.apply(u);
    EXPECT_EQ(m.ips, Model::of(index.snapshot()->by_ip));
}

// The writer publishes while a consumer thread applies what it gets: at the end its model is
// exactly the index (no change lost, none applied twice).
TEST(IndexTest, ConcurrentConsumerEndsWithExactlyTheIndex) {
    Index index;
    std::atomic<bool> done{false};
    Model m;
    auto sub = index.subscribe(1000);
    std::thread consumer([&] {
        while (true) {
            bool finished = done.load();
            auto u = sub->wait(5ms);
            m.apply(u);
            if (finished && !u.state && u.deltas.empty()) {
                break;
            }
        }
    });
    std::mt19937 rng(7);
    for (int batch = 0; batch < 400; ++batch) {
        for (int i = 0; i < 20; ++i) {
            auto ip = fmt::format("198.51.100.{}", rng() % 50);
            auto number = std::to_string(rng() % 30);
            if (rng() % 4 == 0) {
                index.remove(ip, number, t0, Origin::Local, {});
            } else {
                index.add(ip, number, t0, Origin::Local, {});
            }
        }
        index.publish();
    }
    done = true;
    consumer.join();
    EXPECT_EQ(m.ips, Model::of(index.snapshot()->by_ip));
    EXPECT_EQ(m.numbers, Model::of(index.snapshot()->by_number));
}

TEST(IndexTest, CloseWakesSubscribers) {
    Index index;
    auto sub = index.subscribe();
    sub->wait(0ms);
    std::thread waiter([&] { EXPECT_TRUE(sub->wait(10s).closed); });
    index.closeSubscriptions();
    waiter.join();
}

TEST(IndexTest, ParsesOriginFilters) {
    EXPECT_EQ(parseOriginFilter("local"), OriginFilter::Local);
    EXPECT_EQ(parseOriginFilter("peer"), OriginFilter::Peer);
    EXPECT_EQ(parseOriginFilter("all"), OriginFilter::All);
    EXPECT_FALSE(parseOriginFilter("Local"));
    EXPECT_FALSE(parseOriginFilter(""));
    Seen s{.count = 5, .local = 2, .peer = 3};
    EXPECT_EQ(countOf(s, OriginFilter::Local), 2u);
    EXPECT_EQ(countOf(s, OriginFilter::Peer), 3u);
    EXPECT_EQ(countOf(s, OriginFilter::All), 5u);
}

} // namespace
} // namespace sp::store
