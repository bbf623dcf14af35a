#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <thread>

#include "bus/event_bus.hpp"

using namespace sp;
using namespace std::chrono_literals;

namespace {

class RecordingSink : public bus::Sink {
public:
    void consume(std::span<const core::EventPtr> batch) override {
        if (block_first) {
            while (!release.load()) {
                std::this_thread::sleep_for(1ms);
            }
        }
        std::lock_guard lock(mutex);
        for (const auto& e : batch) {
            seen.push_back(e->event_uuid);
        }
        max_batch = std::max(max_batch, batch.size());
    }
    void reopen() override { ++reopens; }
    void close() override { closed = true; }

    std::mutex mutex;
    std::vector<std::string> seen;
    std::size_t max_batch = 0;
    std::atomic<bool> block_first{false};
    std::atomic<bool> release{false};
    std::atomic<int> reopens{0};
    std::atomic<bool> closed{false};
};

core::EventPtr event(int i) {
    auto e = std::make_shared<core::Event>();
    e->event_uuid = std::to_string(i);
    return e;
}

} // namespace

TEST(EventBus, DeliversEverythingInOrderAndDrainsOnStop) {
    bus::EventBus b;
    auto sink = std::make_shared<RecordingSink>();
    b.addSink(sink, {.name = "rec",
                     .thread_name = "t-rec",
                     .capacity = 100,
                     .max_batch = 7,
                     .tick = 10ms,
                     .lossless = true});
    b.start();
    for (int i = 0; i < 1000; ++i) {
        b.publish(event(i));
    }
    b.stop();
    ASSERT_EQ(sink->seen.size(), 1000u);
    for (int i = 0; i < 1000; ++i) {
        EXPECT_EQ(sink->seen[i], std::to_string(i));
    }
    EXPECT_LE(sink->max_batch, 7u);
    EXPECT_TRUE(sink->closed);
    auto st = b.stats();
    EXPECT_EQ(st[0].accepted, 1000u);
    EXPECT_EQ(st[0].consumed, 1000u);
    EXPECT_EQ(st[0].dropped, 0u);
    b.publish(event(1));
    EXPECT_EQ(b.refusedAfterStop(), 1u);
}

TEST(EventBus, LossySinkDropsAndCountsWithoutBlockingOthers) {
    bus::EventBus b;
    auto slow = std::make_shared<RecordingSink>();
    slow->block_first = true;
    auto fast = std::make_shared<RecordingSink>();
    b.addSink(slow, {.name = "slow", .thread_name = "t-slow", .capacity = 10, .tick = 5ms});
    b.addSink(fast,
              {.name = "fast", .thread_name = "t-fast", .capacity = 100000, .lossless = true});
    b.start();
    for (int i = 0; i < 500; ++i) {
        b.publish(event(i)); // must not block although "slow" is stuck
    }
    auto st = b.stats();
    EXPECT_GT(st[0].dropped, 0u);
    EXPECT_EQ(st[0].accepted + st[0].dropped, 500u);
    slow->release = true;
    b.stop();
    EXPECT_EQ(fast->seen.size(), 500u);
    EXPECT_EQ(slow->seen.size(), b.stats()[0].accepted);
}

TEST(EventBus, LosslessSinkAppliesBackpressureInsteadOfDropping) {
    bus::EventBus b;
    auto sink = std::make_shared<RecordingSink>();
    sink->block_first = true;
    b.addSink(sink, {.name = "store", .thread_name = "t-store", .capacity = 4, .lossless = true});
    b.start();
    std::atomic<int> published{0};
    std::thread producer([&] {
        for (int i = 0; i < 50; ++i) {
            b.publish(event(i));
            ++published;
        }
    });
    std::this_thread::sleep_for(50ms);
    EXPECT_LT(published.load(), 50); // waiting for room, not dropping
    sink->release = true;
    producer.join();
    b.stop();
    EXPECT_EQ(sink->seen.size(), 50u);
    EXPECT_EQ(b.stats()[0].dropped, 0u);
}

TEST(EventBus, ReopenRunsOnSinkThread) {
    bus::EventBus b;
    auto sink = std::make_shared<RecordingSink>();
    b.addSink(sink, {.name = "log", .thread_name = "t-log", .tick = 5ms});
    b.start();
    b.reopen();
    for (int i = 0; i < 200 && sink->reopens == 0; ++i) {
        std::this_thread::sleep_for(5ms);
    }
    b.stop();
    EXPECT_EQ(sink->reopens, 1);
}

TEST(EventBus, LingerGathersEventsIntoOneBatchUnlessMaxBatchIsReached) {
    bus::EventBus b;
    auto sink = std::make_shared<RecordingSink>();
    b.addSink(sink, {.name = "rec",
                     .thread_name = "t-rec",
                     .capacity = 1000,
                     .max_batch = 50,
                     .tick = 10s,
                     .linger = 10s,
                     .lossless = true});
    b.start();
    for (int i = 0; i < 49; ++i) {
        b.publish(event(i));
    }
    std::this_thread::sleep_for(100ms);
    {
        std::lock_guard lock(sink->mutex);
        EXPECT_TRUE(sink->seen.empty()); // lingering: not woken by the first event
    }
    b.publish(event(49)); // the 50th: a full batch wakes the sink at once
    for (int i = 0; i < 500; ++i) {
        std::lock_guard lock(sink->mutex);
        if (sink->seen.size() == 50) {
            break;
        }
        std::this_thread::sleep_for(10ms);
    }
    {
        std::lock_guard lock(sink->mutex);
        EXPECT_EQ(sink->seen.size(), 50u);
        EXPECT_EQ(sink->max_batch, 50u);
    }
    b.publish(event(50));
    b.stop(); // stop wakes it too: nothing is left behind
    EXPECT_EQ(sink->seen.size(), 51u);
}
