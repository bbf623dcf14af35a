#pragma once
// EventBus: fans every event out to sinks, each with its own bounded queue and thread.
// A full queue of a lossy sink drops the event and counts it; a lossless sink (the store,
// the source of truth) makes publish() wait for room instead, so nothing accepted is lost.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/event.hpp"

namespace sp::bus {

// A consumer of events. Every method is called on the sink's own thread only.
class Sink {
public:
    virtual ~Sink() = default;
    // A batch of events, in publish order per producer thread.
    virtual void consume(std::span<const core::EventPtr> batch) = 0;
    // Called at least every SinkOptions::tick, with or without events (flushing, retention).
    virtual void tick() {}
    // Called when EventBus::reopen() was requested (SIGHUP: logrotate).
    virtual void reopen() {}
    // Called once after the queue is drained at shutdown; the last call on this sink.
    virtual void close() {}
};

struct SinkOptions {
    std::string name;        // for metrics and logs, e.g. "store"
    std::string thread_name; // <= 15 chars, e.g. "sp-store"
    std::size_t capacity = 65536;
    std::size_t max_batch = 1000;
    std::chrono::milliseconds tick{50};
    // How long events may gather in the queue before the sink thread takes them; a full
    // max_batch or stop() wakes it sooner. 0: woken by the first event. Batching trades this
    // much latency for fewer, larger consume() calls (the store: fewer transactions).
    std::chrono::milliseconds linger{0};
    bool lossless = false;
};

struct SinkStats {
    std::string name;
    std::uint64_t accepted = 0; // entered the queue
    std::uint64_t dropped = 0;  // queue full (never for a lossless sink)
    std::uint64_t consumed = 0; // handed to the sink
    std::size_t depth = 0;      // waiting now
    std::size_t capacity = 0;
};

class EventBus {
public:
    EventBus();
    ~EventBus();
    EventBus(const EventBus&) = delete;
    EventBus& operator=(const EventBus&) = delete;

    // Before start() only.
    void addSink(std::shared_ptr<Sink> sink, SinkOptions options);
    // Starts one thread per sink.
    void start();
    // Thread-safe. Never blocks on a lossy sink. After stop() events are refused (counted).
    void publish(const core::EventPtr& event);
    // Thread-safe: each sink's reopen() runs on its own thread before its next batch.
    void reopen();
    // Drains every queue, calls close() on every sink, joins the threads. Idempotent.
    void stop();

    std::vector<SinkStats> stats() const;
    std::uint64_t published() const { return published_.load(std::memory_order_relaxed); }
    std::uint64_t refusedAfterStop() const { return refused_.load(std::memory_order_relaxed); }

private:
    struct Channel;
    std::vector<std::unique_ptr<Channel>> channels_;
    std::atomic<bool> running_{false};
    std::atomic<bool> stopped_{false};
    std::atomic<std::uint64_t> published_{0};
    std::atomic<std::uint64_t> refused_{0};
};

} // namespace sp::bus
