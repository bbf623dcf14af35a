#include "bus/event_bus.hpp"

#include <condition_variable>
#include <mutex>
#include <pthread.h>
#include <thread>

namespace sp::bus {

struct EventBus::Channel {
    std::shared_ptr<Sink> sink;
    SinkOptions options;
    std::mutex mutex;
    std::condition_variable not_empty;
    std::condition_variable not_full;
    std::vector<core::EventPtr> items; // guarded by mutex
    bool stopping = false;             // guarded by mutex
    std::atomic<bool> reopen{false};
    std::atomic<std::uint64_t> accepted{0};
    std::atomic<std::uint64_t> dropped{0};
    std::atomic<std::uint64_t> consumed{0};
    std::atomic<std::size_t> depth{0};
    std::thread thread;

    void run();
};

void EventBus::Channel::run() {
    pthread_setname_np(pthread_self(), options.thread_name.substr(0, 15).c_str());
    std::vector<core::EventPtr> batch;
    batch.reserve(options.max_batch);
    for (;;) {
        bool done = false;
        {
            std::unique_lock lock(mutex);
            if (options.linger.count() > 0) {
                not_empty.wait_for(lock, std::min(options.linger, options.tick),
                                   [&] { return items.size() >= options.max_batch || stopping; });
            } else {
                not_empty.wait_for(lock, options.tick, [&] { return !items.empty() || stopping; });
            }
            batch.swap(items);
            depth.store(0, std::memory_order_relaxed);
            done = stopping && batch.empty();
        }
        if (!batch.empty()) {
            not_full.notify_all();
        }
        if (reopen.exchange(false)) {
            sink->reopen();
        }
        for (std::size_t i = 0; i < batch.size(); i += options.max_batch) {
            std::size_t n = std::min(options.max_batch, batch.size() - i);
            sink->consume(std::span<const core::EventPtr>(batch.data() + i, n));
            consumed.fetch_add(n, std::memory_order_relaxed);
        }
        batch.clear();
        sink->tick();
        if (done) {
            break;
        }
    }
    sink->close();
}

EventBus::EventBus() = default;

EventBus::~EventBus() {
    stop();
}

void EventBus::addSink(std::shared_ptr<Sink> sink, SinkOptions options) {
    auto ch = std::make_unique<Channel>();
    ch->sink = std::move(sink);
    if (options.max_batch == 0) {
        options.max_batch = 1;
    }
    ch->items.reserve(std::min<std::size_t>(options.capacity, 4096));
    ch->options = std::move(options);
    channels_.push_back(std::move(ch));
}

void EventBus::start() {
    if (running_.exchange(true)) {
        return;
    }
    for (auto& ch : channels_) {
        ch->thread = std::thread([c = ch.get()] { c->run(); });
    }
}

void EventBus::publish(const core::EventPtr& event) {
    if (stopped_.load(std::memory_order_acquire)) {
        refused_.fetch_add(1, std::memory_order_relaxed);
        return;
    }
    published_.fetch_add(1, std::memory_order_relaxed);
    for (auto& ch : channels_) {
        bool wake = false;
        {
            std::unique_lock lock(ch->mutex);
            if (ch->items.size() >= ch->options.capacity) {
                if (!ch->options.lossless) {
                    ch->dropped.fetch_add(1, std::memory_order_relaxed);
                    continue;
                }
                ch->not_full.wait(
                    lock, [&] { return ch->items.size() < ch->options.capacity || ch->stopping; });
            }
            ch->items.push_back(event);
            wake = ch->options.linger.count() > 0 ? ch->items.size() == ch->options.max_batch
                                                  : ch->items.size() == 1;
            ch->depth.store(ch->items.size(), std::memory_order_relaxed);
        }
        ch->accepted.fetch_add(1, std::memory_order_relaxed);
        if (wake) {
            ch->not_empty.notify_one();
        }
    }
}

void EventBus::reopen() {
    for (auto& ch : channels_) {
        ch->reopen.store(true);
        ch->not_empty.notify_one();
    }
}

void EventBus::stop() {
    if (stopped_.exchange(true, std::memory_order_acq_rel)) {
        return;
    }
    for (auto& ch : channels_) {
        {
            std::lock_guard lock(ch->mutex);
            ch->stopping = true;
        }
        ch->not_empty.notify_all();
    }
    for (auto& ch : channels_) {
        if (ch->thread.joinable()) {
            ch->thread.join();
        } else if (!running_) {
            ch->sink->close();
        }
    }
}

std::vector<SinkStats> EventBus::stats() const {
    std::vector<SinkStats> out;
    out.reserve(channels_.size());
    for (const auto& ch : channels_) {
        out.push_back(SinkStats{ch->options.name, ch->accepted.load(), ch->dropped.load(),
                                ch->consumed.load(), ch->depth.load(), ch->options.capacity});
    }
    return out;
}

} // namespace sp::bus
