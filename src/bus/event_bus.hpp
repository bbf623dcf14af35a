#pragma once
// EventBus: fans every event out to sinks, each with its own bounded queue and thread.
// Each queue is bounded twice: in events (capacity) and in bytes (capacity_bytes, each event
// weighing eventMemoryBytes()), since one 64 KiB datagram weighs as much as a thousand small
// ones. A full queue of a lossy sink drops the event and counts it (by reason); a lossless
// sink (the store, the source of truth) makes publish() wait for room instead, so nothing
// accepted is lost, until stop() or abort() wakes the waiting publishers.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/event.hpp"
#include "core/metrics.hpp"

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
    // Any thread (EventBus::abort()): finish what you are doing soon, e.g. abort a network
    // transfer in flight. consume() may still be called with what is queued for a lossless
    // sink; a lossy sink's queue is discarded.
    virtual void interrupt() {}
    // Any thread: events this sink received but could not write (I/O errors), for
    // /metrics (sentrypeer_sink_write_errors_total{sink}).
    virtual std::uint64_t writeErrors() const { return 0; }
};

// What one event weighs in a queue: sizeof(Event) plus its strings' bytes (an estimate of
// its heap footprint; the shared_ptr's control block and allocator slack are not counted).
std::size_t eventMemoryBytes(const core::Event& e);

struct SinkOptions {
    std::string name;                                   // for metrics and logs, e.g. "store"
    std::string thread_name;                            // <= 15 chars, e.g. "sp-store"
    std::size_t capacity = 65536;                       // events
    std::size_t capacity_bytes = std::size_t{16} << 20; // eventMemoryBytes() summed; an event
                                                        // alone in the queue always fits
    std::size_t max_batch = 1000;
    std::chrono::milliseconds tick{50};
    // How long events may gather in the queue before the sink thread takes them; a full
    // max_batch or stop() wakes it sooner. 0: woken by the first event. Batching trades this
    // much latency for fewer, larger consume() calls (the store: fewer transactions).
    std::chrono::milliseconds linger{0};
    bool lossless = false;
};

// Defaults the sinks' own sinkOptions() share.
// How long events gather in a sink's queue before its thread takes them: one wake-up per
// batch instead of one per event (measured at 50,000 UDP events/s: the p2p sink woken per
// event cost 6 us per event). What it costs: up to 50 ms more before a row, a log line or a
// DHT put.
inline constexpr std::chrono::milliseconds kGather{50};
// Queue byte budget of a lossy sink (eventMemoryBytes), sized for a 1 GiB VM: at most 16 MiB
// each (json log, syslog, p2p, webhook: 64 MiB together; a sink's batch in hand can hold as
// much again). By events alone, 65,536 queued 64 KiB datagrams would weigh 4 GiB per sink.
inline constexpr std::size_t kLossyQueueBytes = std::size_t{16} << 20;

struct SinkStats {
    std::string name;
    std::uint64_t accepted = 0;         // entered the queue
    std::uint64_t dropped = 0;          // queue full in events (never for a lossless sink)
    std::uint64_t dropped_bytes = 0;    // queue full in bytes (never for a lossless sink)
    std::uint64_t dropped_shutdown = 0; // queued, discarded by abort() (lossy sinks only)
    std::uint64_t consumed = 0;         // handed to the sink
    std::uint64_t write_errors = 0;     // Sink::writeErrors()
    std::size_t depth = 0;              // waiting now
    std::size_t bytes = 0;              // eventMemoryBytes() of those waiting now
    std::size_t capacity = 0;
    std::size_t capacity_bytes = 0;
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
    // Thread-safe. Never blocks on a lossy sink; waits for room on a lossless one. After
    // stop() or abort() events are refused (counted); a publisher waiting for room when
    // stop() or abort() is called returns at once, its event refused (counted) for the
    // sinks it had not reached yet.
    void publish(const core::EventPtr& event);
    // Thread-safe: each sink's reopen() runs on its own thread before its next batch.
    void reopen();
    // Refuses new events, wakes waiting publishers, drains every queue, calls close() on
    // every sink, joins the threads. Idempotent. Returns when every sink thread has finished
    // (a sink stuck in consume() holds it: see abort()).
    void stop();
    // Thread-safe, any thread, also while another thread is in stop(); idempotent. The
    // "exit now" path (a second SIGTERM): refuses new events and wakes waiting publishers
    // like stop(); lossy sinks discard their queues (counted, reason "shutdown") and are
    // closed after the batch in hand; lossless sinks still get what is already queued (it
    // was accepted: the store commits it); every sink's interrupt() is called. Does not join:
    // call stop() (or let the destructor) for that.
    void abort();

    std::vector<SinkStats> stats() const;
    std::uint64_t published() const { return published_.load(std::memory_order_relaxed); }
    std::uint64_t refusedAfterStop() const { return refused_.load(std::memory_order_relaxed); }

    // Writes the bus's families (published, refused, per-sink queue depth/bytes/capacity,
    // consumed, dropped by reason, write errors) to /metrics. Any thread.
    void collect(core::MetricsWriter& w) const;

private:
    struct Channel;
    std::vector<std::unique_ptr<Channel>> channels_;
    std::atomic<bool> running_{false};
    std::atomic<bool> stopped_{false}; // refuse new events (stop() or abort())
    std::atomic<bool> joined_{false};  // stop() ran
    std::atomic<std::uint64_t> published_{0};
    std::atomic<std::uint64_t> refused_{0};
};

} // namespace sp::bus
