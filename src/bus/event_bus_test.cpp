#include <gtest/gtest.h>
#include <pthread.h>

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
    void reopen() override {
        char name[16] = {};
        pthread_getname_np(pthread_self(), name, sizeof name);
        std::lock_guard lock(mutex);
        reopen_thread = name;
        reopen_thread_id = std::this_thread::get_id();
        ++reopens;
    }
    void close() override { closed = true; }

    std::mutex mutex;
    std::vector<std::string> seen;
    std::size_t max_batch = 0;
    std::atomic<bool> block_first{false};
    std::atomic<bool> release{false};
    std::atomic<int> reopens{0};
    std::string reopen_thread;          // the thread name reopen() ran on
    std::thread::id reopen_thread_id{}; // and its id
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
    b.reopen(); // from this thread; the sink must see it on its own
    for (int i = 0; i < 200 && sink->reopens == 0; ++i) {
        std::this_thread::sleep_for(5ms);
    }
    b.stop();
    EXPECT_EQ(sink->reopens, 1);
    std::lock_guard lock(sink->mutex);
    EXPECT_EQ(sink->reopen_thread, "t-log");
    EXPECT_NE(sink->reopen_thread_id, std::this_thread::get_id());
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

namespace {

core::EventPtr bigEvent(int i, std::size_t message_bytes) {
    auto e = std::make_shared<core::Event>();
    e->event_uuid = std::to_string(i);
    e->sip_message.assign(message_bytes, 'x');
    return e;
}

// Waits up to 5 s for pred.
template <typename Pred> bool eventually(Pred pred) {
    for (int i = 0; i < 500; ++i) {
        if (pred()) {
            return true;
        }
        std::this_thread::sleep_for(10ms);
    }
    return pred();
}

} // namespace

TEST(EventBus, EventMemoryBytesCountsTheStrings) {
    auto small = event(1);
    auto big = bigEvent(1, 65536);
    EXPECT_EQ(bus::eventMemoryBytes(*big) - bus::eventMemoryBytes(*small), 65536u);
    EXPECT_GE(bus::eventMemoryBytes(*small), sizeof(core::Event));
}

TEST(EventBus, LossySinkDropsByBytesBeforeItsEventCapacity) {
    bus::EventBus b;
    auto sink = std::make_shared<RecordingSink>();
    const std::size_t one = bus::eventMemoryBytes(*bigEvent(0, 10000));
    b.addSink(
        sink,
        {.name = "log", .thread_name = "t-log", .capacity = 1000, .capacity_bytes = 10 * one});
    // Not started: the queue fills deterministically.
    for (int i = 0; i < 50; ++i) {
        b.publish(bigEvent(i, 10000));
    }
    auto st = b.stats()[0];
    EXPECT_EQ(st.accepted, 10u);
    EXPECT_EQ(st.dropped_bytes, 40u);
    EXPECT_EQ(st.dropped, 0u);
    EXPECT_EQ(st.bytes, 10 * one);
    EXPECT_EQ(st.capacity_bytes, 10 * one);
    b.start();
    b.stop();
    EXPECT_EQ(sink->seen.size(), 10u);
    EXPECT_EQ(b.stats()[0].bytes, 0u);
}

// A lossy queue takes exactly `capacity` events, not one more (not started: deterministic).
TEST(EventBus, LossySinkTakesExactlyItsCapacity) {
    bus::EventBus b;
    auto sink = std::make_shared<RecordingSink>();
    b.addSink(sink, {.name = "log", .thread_name = "t-log", .capacity = 10});
    for (int i = 0; i < 25; ++i) {
        b.publish(event(i));
    }
    auto st = b.stats()[0];
    EXPECT_EQ(st.accepted, 10u);
    EXPECT_EQ(st.depth, 10u);
    EXPECT_EQ(st.dropped, 15u);
    EXPECT_EQ(st.dropped_bytes, 0u);
    b.start();
    b.stop();
    ASSERT_EQ(sink->seen.size(), 10u);
    EXPECT_EQ(sink->seen.front(), "0"); // the oldest kept, the newest dropped
    EXPECT_EQ(sink->seen.back(), "9");
}

// The byte budget counts the event being queued: a budget one byte short of 10 events
// takes 9, and the queue never holds more bytes than its budget.
TEST(EventBus, ByteBudgetCountsTheIncomingEvent) {
    bus::EventBus b;
    auto sink = std::make_shared<RecordingSink>();
    const std::size_t one = bus::eventMemoryBytes(*bigEvent(0, 10000));
    b.addSink(
        sink,
        {.name = "log", .thread_name = "t-log", .capacity = 1000, .capacity_bytes = 10 * one - 1});
    for (int i = 0; i < 50; ++i) {
        b.publish(bigEvent(i, 10000));
    }
    auto st = b.stats()[0];
    EXPECT_EQ(st.accepted, 9u);
    EXPECT_EQ(st.dropped_bytes, 41u);
    EXPECT_EQ(st.bytes, 9 * one);
    EXPECT_LE(st.bytes, st.capacity_bytes);
    b.start();
    b.stop();
    EXPECT_EQ(sink->seen.size(), 9u);
}

TEST(EventBus, AnEventBiggerThanTheBudgetFitsAnEmptyQueue) {
    bus::EventBus b;
    auto sink = std::make_shared<RecordingSink>();
    b.addSink(
        sink,
        {.name = "store", .thread_name = "t-store", .capacity_bytes = 1024, .lossless = true});
    b.start();
    b.publish(bigEvent(1, 100000)); // must not wait forever for room that cannot exist
    b.publish(bigEvent(2, 100000));
    b.stop();
    EXPECT_EQ(sink->seen.size(), 2u);
}

TEST(EventBus, LosslessSinkWaitsForRoomInBytes) {
    bus::EventBus b;
    auto sink = std::make_shared<RecordingSink>();
    sink->block_first = true;
    const std::size_t one = bus::eventMemoryBytes(*bigEvent(0, 10000));
    b.addSink(sink, {.name = "store",
                     .thread_name = "t-store",
                     .capacity = 100000,
                     .capacity_bytes = 3 * one,
                     .lossless = true});
    b.start();
    std::atomic<int> published{0};
    std::thread producer([&] {
        for (int i = 0; i < 20; ++i) {
            b.publish(bigEvent(i, 10000));
            ++published;
        }
    });
    std::this_thread::sleep_for(100ms);
    EXPECT_LT(published.load(), 10); // a few in the stuck sink's hands, 3 queued, 1 waiting
    EXPECT_LE(b.stats()[0].bytes, 3 * one);
    sink->release = true;
    producer.join();
    b.stop();
    EXPECT_EQ(sink->seen.size(), 20u);
    EXPECT_EQ(b.stats()[0].dropped_bytes, 0u);
}

TEST(EventBus, StopWakesAPublisherBlockedOnAStuckLosslessSink) {
    bus::EventBus b;
    auto sink = std::make_shared<RecordingSink>();
    sink->block_first = true; // stuck in consume() until released
    b.addSink(sink, {.name = "store", .thread_name = "t-store", .capacity = 2, .lossless = true});
    b.start();
    std::atomic<int> published{0};
    std::atomic<bool> publisher_done{false};
    std::thread publisher([&] {
        for (int i = 0; i < 100; ++i) {
            b.publish(event(i));
            ++published;
        }
        publisher_done = true;
    });
    ASSERT_TRUE(eventually([&] { return b.stats()[0].depth == 2; })); // queue full
    std::this_thread::sleep_for(50ms);
    ASSERT_FALSE(publisher_done.load()) << "the publisher should be waiting for room";
    std::atomic<bool> stop_returned{false};
    std::thread stopper([&] {
        b.stop();
        stop_returned = true;
    });
    // The publisher returns although the sink is still stuck; its events are refused.
    EXPECT_TRUE(eventually([&] { return publisher_done.load(); }));
    EXPECT_FALSE(stop_returned.load()); // stop() waits for the sink's drain ...
    EXPECT_EQ(published.load(), 100);
    EXPECT_GE(b.refusedAfterStop(), 90u); // 1 or 2 in hand, 2 queued, the rest refused
    sink->release = true;                 // ... which completes once the sink moves
    EXPECT_TRUE(eventually([&] { return stop_returned.load(); }));
    publisher.join();
    stopper.join();
    const auto st = b.stats()[0];
    EXPECT_EQ(st.accepted, st.consumed); // what was accepted was delivered
    EXPECT_EQ(st.accepted + b.refusedAfterStop(), 100u);
    EXPECT_TRUE(sink->closed);
}

namespace {
class InterruptibleSink : public RecordingSink {
public:
    void interrupt() override {
        interrupted = true;
        release = true; // like the webhook: the transfer in flight is aborted
    }
    std::uint64_t writeErrors() const override { return 7; }
    std::atomic<bool> interrupted{false};
};
} // namespace

TEST(EventBus, AbortCommitsLosslessQueueAndDiscardsLossyOnes) {
    bus::EventBus b;
    auto store = std::make_shared<RecordingSink>();
    auto hook = std::make_shared<InterruptibleSink>();
    hook->block_first = true;
    b.addSink(store, {.name = "store", .thread_name = "t-store", .lossless = true});
    b.addSink(hook, {.name = "hook", .thread_name = "t-hook", .max_batch = 1});
    // Queued before start: the store's thread will find them all at once.
    for (int i = 0; i < 100; ++i) {
        b.publish(event(i));
    }
    b.start();
    ASSERT_TRUE(eventually([&] { return b.stats()[1].depth < 100; })); // hook took a batch
    b.abort();
    EXPECT_TRUE(hook->interrupted.load());
    b.publish(event(100));
    EXPECT_EQ(b.refusedAfterStop(), 1u);
    b.stop();
    EXPECT_EQ(store->seen.size(), 100u); // accepted: committed
    const auto st = b.stats()[1];
    EXPECT_EQ(st.consumed + st.dropped_shutdown, 100u);
    EXPECT_GT(st.dropped_shutdown, 0u);
    EXPECT_EQ(st.write_errors, 7u);
    EXPECT_TRUE(hook->closed);
    core::MetricsWriter w;
    b.collect(w);
    const std::string text = w.take();
    EXPECT_NE(text.find("sentrypeer_sink_dropped_total{sink=\"hook\",reason=\"shutdown\"} " +
                        std::to_string(st.dropped_shutdown)),
              std::string::npos)
        << text;
    EXPECT_NE(text.find("sentrypeer_sink_write_errors_total{sink=\"hook\"} 7"), std::string::npos);
    EXPECT_NE(text.find("sentrypeer_sink_queue_capacity_bytes{sink=\"store\"} 16777216"),
              std::string::npos);
}
