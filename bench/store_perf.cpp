// Store insert rate and retention chunk time: a measurement, not a check (it used to be a
// unit test, StoreTest.PerfInsertRateAndRetentionChunk, and ran in every ctest). Built with
// SP_BUILD_BENCH, never registered with ctest. Knobs (environment):
//   SP_STORE_PERF_EVENTS   events inserted (default 20000; use 200000 in a Release build)
//   SP_STORE_PERF_BATCH    events per Store::consume() (1000)
//   SP_STORE_PERF_IPS, SP_STORE_PERF_NUMBERS  distinct source IPs and called numbers, taken
//       in turn (10000 and 3000: every insert lands somewhere else in those two indexes;
//       50 and 50 is closer to a few scanners at full speed)
//
//   build/release/bench/sp_store_perf
// Exit status 1 if the store did not keep (or prune) what it was given.

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "core/clock.hpp"
#include "core/ids.hpp"
#include "core/text.hpp"
#include "store/store.hpp"

namespace {

using namespace sp;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

std::size_t knob(const char* name, std::size_t fallback) {
    const char* env = std::getenv(name); // NOLINT(concurrency-mt-unsafe): single thread
    return env != nullptr ? std::stoul(env) : fallback;
}

double threadCpu() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

double since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

core::EventPtr event(std::string ip, std::string number, core::TimePoint t,
                     const std::string& message) {
    auto e = std::make_shared<core::Event>();
    e->app_version = "5.0.0";
    e->time = t;
    e->event_timestamp = core::formatTimestamp(t);
    e->event_uuid = core::newUuid();
    e->created_by_node_id = "0b8bf2e1-3c4d-4e5f-8a9b-0c1d2e3f4a5b";
    e->collected_method = "passive";
    e->transport_type = "UDP";
    e->source_ip = std::move(ip);
    e->source_port = 5070;
    e->destination_ip = "192.0.2.10";
    e->destination_port = 5060;
    e->called_number = std::move(number);
    e->sip_method = "OPTIONS";
    e->sip_user_agent = "friendly-scanner";
    e->sip_message = message;
    return e;
}

} // namespace

int main() {
    const std::size_t n = std::max<std::size_t>(2, knob("SP_STORE_PERF_EVENTS", 20000));
    const std::size_t batch_size = std::max<std::size_t>(1, knob("SP_STORE_PERF_BATCH", 1000));
    const std::size_t ips = std::max<std::size_t>(1, knob("SP_STORE_PERF_IPS", 10000));
    const std::size_t nums = std::max<std::size_t>(1, knob("SP_STORE_PERF_NUMBERS", 3000));

    const fs::path dir = fs::temp_directory_path() / fmt::format("sp-store-perf-{}", getpid());
    fs::remove_all(dir);
    fs::create_directories(dir);
    const fs::path path = dir / "sentrypeer.db";

    core::ManualClock clock;
    store::StoreOptions o;
    o.path = path.string();
    o.max_age = 1h;
    const core::TimePoint t0 = clock.now();
    std::string message = "INVITE sip:+442012345678@192.0.2.10 SIP/2.0\r\n"
                          "Via: SIP/2.0/UDP 203.0.113.50:5070;branch=z9hG4bK-1234567890\r\n"
                          "From: \"100\" <sip:100@192.0.2.10>;tag=abcdef0123\r\n"
                          "To: <sip:+442012345678@192.0.2.10>\r\n"
                          "Call-ID: 1234567890abcdef1234567890abcdef@203.0.113.50\r\n"
                          "CSeq: 1 INVITE\r\nContact: <sip:100@203.0.113.50:5070>\r\n"
                          "Max-Forwards: 70\r\nUser-Agent: friendly-scanner\r\n";
    message.append(500 - std::min<std::size_t>(500, message.size() + 4), 'x');
    message += "\r\n\r\n";
    std::vector<core::EventPtr> events;
    events.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
        // Half of the events an hour before the rest, so retention has half to prune.
        core::TimePoint t = t0 + std::chrono::milliseconds(i % (n / 2)) + (i < n / 2 ? 0h : 2h);
        events.push_back(event(fmt::format("203.0.{}.{}", (i % ips) / 250, (i % ips) % 250),
                               fmt::format("+44{}", i % nums), t, message));
    }
    int status = 0;
    {
        store::Store store(o, clock);
        double cpu_start = threadCpu();
        auto start = std::chrono::steady_clock::now();
        for (std::size_t i = 0; i < n; i += batch_size) {
            store.consume(
                std::span<const core::EventPtr>(events.data() + i, std::min(batch_size, n - i)));
        }
        double secs = since(start);
        double cpu_secs = threadCpu() - cpu_start;
        std::printf("insert: %zu events in %.3f s: %.0f events/s (store thread CPU %.3f s: "
                    "%.0f events per CPU second)\n",
                    n, secs, static_cast<double>(n) / secs, cpu_secs,
                    static_cast<double>(n) / cpu_secs);
        if (store.stored() != n) {
            std::printf("FAIL: stored %llu of %zu\n",
                        static_cast<unsigned long long>(store.stored()), n);
            status = 1;
        }

        clock.set(t0 + 2h); // the first half is old
        std::size_t chunks = 0;
        start = std::chrono::steady_clock::now();
        while (store.pruned() < n / 2 && chunks < 100000) {
            store.tick();
            ++chunks;
        }
        secs = since(start);
        std::printf("retention: %llu rows in %zu chunks of %zu, %.2f ms per chunk\n",
                    static_cast<unsigned long long>(store.pruned()), chunks, o.prune_chunk,
                    secs * 1000 / static_cast<double>(std::max<std::size_t>(1, chunks)));
        if (store.index().events() != n - n / 2) {
            std::printf("FAIL: index holds %llu events, expected %zu\n",
                        static_cast<unsigned long long>(store.index().events()), n - n / 2);
            status = 1;
        }
        std::error_code ec;
        std::printf("WAL before close: %.1f MB\n",
                    static_cast<double>(fs::file_size(path.string() + "-wal", ec)) / 1e6);
        start = std::chrono::steady_clock::now();
        store.close();
        std::printf("close (checkpoint): %.1f ms\n", since(start) * 1000);
    }
    fs::remove_all(dir);
    return status;
}
