#include "bus/event_bus.hpp"

#include "core/rate_limit.hpp"

#include <condition_variable>
#include <mutex>
#include <pthread.h>
#include <spdlog/spdlog.h>
#include <thread>

namespace sp::bus {

std::size_t eventMemoryBytes(const core::Event& e) {
    return sizeof(core::Event) + e.app_version.size() + e.event_timestamp.size() +
           e.event_uuid.size() + e.created_by_node_id.size() + e.collected_method.size() +
           e.transport_type.size() + e.source_ip.size() + e.destination_ip.size() +
           e.called_number.size() + e.sip_method.size() + e.sip_user_agent.size() +
           e.sip_message.size();
}

struct EventBus::Channel {
    std::shared_ptr<Sink> sink;
    SinkOptions options;
    std::mutex mutex;
    std::condition_variable not_empty;
    std::condition_variable not_full;
    std::vector<core::EventPtr> items; // guarded by mutex
    std::size_t bytes = 0;             // guarded by mutex: eventMemoryBytes() of items
    bool stopping = false;             // guarded by mutex: drain, then close
    bool aborting = false;             // guarded by mutex: abort(), see EventBus::abort
    std::atomic<bool> reopen{false};
    std::atomic<bool> interrupted{false}; // aborting, readable without the mutex
    std::atomic<std::uint64_t> accepted{0};
    std::atomic<std::uint64_t> dropped{0};
    std::atomic<std::uint64_t> dropped_bytes{0};
    std::atomic<std::uint64_t> dropped_shutdown{0};
    std::atomic<std::uint64_t> consumed{0};
    std::atomic<std::size_t> depth{0};
    std::atomic<std::size_t> depth_bytes{0};
    std::thread thread;
    core::TokenBucket reopen_log{1.0, 5}; // sink thread only: SIGHUP storms log a few lines

    // Whether an event of n bytes fits now (mutex held). An event alone always fits, so a
    // lossless publisher cannot wait forever for an event bigger than the byte budget.
    bool fits(std::size_t n) const {
        return items.size() < options.capacity &&
               (items.empty() || bytes + n <= options.capacity_bytes);
    }
    void run();
};

void EventBus::Channel::run() {
    pthread_setname_np(pthread_self(), options.thread_name.substr(0, 15).c_str());
    std::vector<core::EventPtr> batch;
    batch.reserve(std::min<std::size_t>(options.max_batch, 4096));
    spdlog::debug("sink {}: started ({}, queue of {} events / {} bytes)", options.name,
                  options.lossless ? "lossless" : "lossy", options.capacity,
                  options.capacity_bytes);
    for (;;) {
        bool done = false;
        bool discarded = false;
        {
            std::unique_lock lock(mutex);
            if (options.linger.count() > 0) {
                not_empty.wait_for(lock, std::min(options.linger, options.tick), [&] {
                    return items.size() >= options.max_batch || stopping || aborting;
                });
            } else {
                not_empty.wait_for(lock, options.tick,
                                   [&] { return !items.empty() || stopping || aborting; });
            }
            if (aborting && !options.lossless) {
                dropped_shutdown.fetch_add(items.size(), std::memory_order_relaxed);
                discarded = !items.empty();
                items.clear();
                done = true;
            } else {
                batch.swap(items);
                done = (stopping || aborting) && batch.empty();
            }
            bytes = 0;
            depth.store(0, std::memory_order_relaxed);
            depth_bytes.store(0, std::memory_order_relaxed);
        }
        if (!batch.empty() || discarded) {
            not_full.notify_all();
        }
        if (reopen.exchange(false)) {
            if (reopen_log.allow(std::chrono::system_clock::now())) {
                spdlog::debug("sink {}: reopening", options.name);
            }
            sink->reopen();
        }
        for (std::size_t i = 0; i < batch.size(); i += options.max_batch) {
            if (!options.lossless && interrupted.load(std::memory_order_relaxed)) {
                dropped_shutdown.fetch_add(batch.size() - i, std::memory_order_relaxed);
                done = true;
                break;
            }
            std::size_t n = std::min(options.max_batch, batch.size() - i);
            sink->consume(std::span<const core::EventPtr>(batch.data() + i, n));
            consumed.fetch_add(n, std::memory_order_relaxed);
        }
        batch.clear();
        if (!interrupted.load(std::memory_order_relaxed)) {
            sink->tick(); // no retention pass or flush timer while exiting in a hurry
        }
        if (done) {
            break;
        }
    }
    spdlog::debug("sink {}: {}, closing ({} events consumed, {} discarded)", options.name,
                  interrupted.load() ? "interrupted" : "drained", consumed.load(),
                  dropped_shutdown.load());
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
    // spdlog's registry is created on first use: do it here, before the sink threads that log
    // (its lazy creation from two threads at once is safe, but TSan cannot see it in the
    // uninstrumented library and reports a race).
    spdlog::default_logger_raw();
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
    const std::size_t n = eventMemoryBytes(*event); // once per event, whatever the sinks
    for (auto& ch : channels_) {
        bool wake = false;
        {
            std::unique_lock lock(ch->mutex);
            if (!ch->fits(n) && !ch->stopping && !ch->aborting) {
                if (!ch->options.lossless) {
                    auto& counter =
                        ch->items.size() >= ch->options.capacity ? ch->dropped : ch->dropped_bytes;
                    counter.fetch_add(1, std::memory_order_relaxed);
                    continue;
                }
                ch->not_full.wait(lock,
                                  [&] { return ch->fits(n) || ch->stopping || ch->aborting; });
            }
            if (ch->stopping || ch->aborting) {
                // stop() or abort() came first (or woke us): this sink's thread may already
                // have taken its last batch, so the event is refused, not queued.
                lock.unlock();
                refused_.fetch_add(1, std::memory_order_relaxed);
                return;
            }
            ch->items.push_back(event);
            ch->bytes += n;
            wake = ch->options.linger.count() > 0 ? ch->items.size() == ch->options.max_batch
                                                  : ch->items.size() == 1;
            ch->depth.store(ch->items.size(), std::memory_order_relaxed);
            ch->depth_bytes.store(ch->bytes, std::memory_order_relaxed);
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
    stopped_.store(true, std::memory_order_release);
    if (joined_.exchange(true, std::memory_order_acq_rel)) {
        return;
    }
    for (auto& ch : channels_) {
        {
            std::lock_guard lock(ch->mutex);
            ch->stopping = true;
        }
        ch->not_empty.notify_all();
        ch->not_full.notify_all(); // publishers waiting for room: refused, not stuck
    }
    for (auto& ch : channels_) {
        if (ch->thread.joinable()) {
            ch->thread.join();
        } else if (!running_) {
            ch->sink->close();
        }
    }
}

void EventBus::abort() {
    stopped_.store(true, std::memory_order_release);
    for (auto& ch : channels_) {
        {
            std::lock_guard lock(ch->mutex);
            ch->aborting = true;
        }
        ch->interrupted.store(true, std::memory_order_relaxed);
        ch->not_empty.notify_all();
        ch->not_full.notify_all();
        ch->sink->interrupt();
    }
}

std::vector<SinkStats> EventBus::stats() const {
    std::vector<SinkStats> out;
    out.reserve(channels_.size());
    for (const auto& ch : channels_) {
        out.push_back(SinkStats{.name = ch->options.name,
                                .accepted = ch->accepted.load(),
                                .dropped = ch->dropped.load(),
                                .dropped_bytes = ch->dropped_bytes.load(),
                                .dropped_shutdown = ch->dropped_shutdown.load(),
                                .consumed = ch->consumed.load(),
                                .write_errors = ch->sink->writeErrors(),
                                .depth = ch->depth.load(),
                                .bytes = ch->depth_bytes.load(),
                                .capacity = ch->options.capacity,
                                .capacity_bytes = ch->options.capacity_bytes});
    }
    return out;
}

void EventBus::collect(core::MetricsWriter& w) const {
    w.family("events_published_total", "counter",
             "Events handed to the bus (local captures and accepted peer events)");
    w.sample(published());
    w.family("events_refused_total", "counter",
             "Events the bus refused because it was shutting down");
    w.sample(refusedAfterStop());
    const auto stats = this->stats();
    auto each = [&](const char* name, const char* type, const char* help, auto value) {
        w.family(name, type, help);
        for (const auto& s : stats) {
            w.sample(std::uint64_t{value(s)}, {{"sink", s.name}});
        }
    };
    each("sink_queue_depth", "gauge", "Events waiting in each sink's queue",
         [](const SinkStats& s) { return s.depth; });
    each("sink_queue_capacity", "gauge", "Capacity of each sink's queue, in events",
         [](const SinkStats& s) { return s.capacity; });
    each("sink_queue_bytes", "gauge", "Approximate memory of the events waiting in each queue",
         [](const SinkStats& s) { return s.bytes; });
    each("sink_queue_capacity_bytes", "gauge", "Capacity of each sink's queue, in bytes",
         [](const SinkStats& s) { return s.capacity_bytes; });
    each("sink_events_total", "counter", "Events handed to each sink",
         [](const SinkStats& s) { return s.consumed; });
    each("sink_write_errors_total", "counter",
         "Events a sink received but could not write (I/O errors)",
         [](const SinkStats& s) { return s.write_errors; });
    w.family("sink_dropped_total", "counter",
             "Events dropped by a lossy sink's queue: full in events (full) or in bytes (bytes), "
             "or discarded by an immediate exit (shutdown)");
    for (const auto& s : stats) {
        w.sample(s.dropped, {{"sink", s.name}, {"reason", "full"}});
        w.sample(s.dropped_bytes, {{"sink", s.name}, {"reason", "bytes"}});
        w.sample(s.dropped_shutdown, {{"sink", s.name}, {"reason", "shutdown"}});
    }
}

} // namespace sp::bus
