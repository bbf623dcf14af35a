// Micro-benchmarks of the ingest path's stages, one at a time: parsing one SIP message,
// turning it into an event (Ingest::handle), and storing events (Store::consume, batches of
// 1,000 into a fresh WAL database). CPU time per item; results in docs/BENCHMARKS.md.
//
//   build/release/bench/sp_pipeline_bench --benchmark_min_time=2

#include <benchmark/benchmark.h>

#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <string>
#include <unistd.h>
#include <vector>

#include "core/clock.hpp"
#include "listen/ingest.hpp"
#include "sip/parse.hpp"
#include "store/store.hpp"

namespace {

using namespace sp;

// The load generator's INVITE: ~480 bytes with SDP, distinct Call-ID/branch/number per seq.
std::string invite(std::uint64_t seq) {
    char body[200];
    int body_len =
        std::snprintf(body, sizeof body,
                      "v=0\r\no=- %" PRIu64 " 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 "
                      "127.0.0.1\r\nt=0 0\r\nm=audio 12000 RTP/AVP 0 8\r\na=sendrecv\r\n",
                      seq);
    char buf[1024];
    int n = std::snprintf(buf, sizeof buf,
                          "INVITE sip:00972%09" PRIu64 "@127.0.0.1:5060 SIP/2.0\r\n"
                          "Via: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bK%016" PRIx64 ";rport\r\n"
                          "Max-Forwards: 70\r\n"
                          "From: \"1234\" <sip:1234@127.0.0.1>;tag=%08" PRIx64 "\r\n"
                          "To: <sip:00972%09" PRIu64 "@127.0.0.1>\r\n"
                          "Call-ID: bench-%016" PRIx64 "@127.0.0.1\r\n"
                          "CSeq: 1 INVITE\r\n"
                          "Contact: <sip:1234@127.0.0.1:40000>\r\n"
                          "User-Agent: friendly-scanner\r\n"
                          "Allow: INVITE, ACK, CANCEL, OPTIONS, BYE\r\n"
                          "Content-Type: application/sdp\r\n"
                          "Content-Length: %d\r\n\r\n%s",
                          seq % 1000000000, seq * 2654435761U, seq, seq % 1000000000, seq, body_len,
                          body);
    return {buf, static_cast<std::size_t>(n)};
}

std::vector<std::string> messages(std::size_t n) {
    std::vector<std::string> out;
    out.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
        out.push_back(invite(i * 7919));
    }
    return out;
}

listen::Meta udpMeta() {
    return {listen::Transport::Udp, "127.0.0.1", 40000, "127.0.0.1", 5060};
}

void BM_Parse(benchmark::State& state) {
    auto msgs = messages(1024);
    sip::initParser();
    std::size_t i = 0;
    for (auto _ : state) {
        sip::Message m = sip::parse(msgs[i++ % msgs.size()]);
        benchmark::DoNotOptimize(m);
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Parse);

void BM_IngestHandle(benchmark::State& state) {
    auto msgs = messages(1024);
    core::SystemClock clock;
    listen::IngestOptions options;
    options.node_id = "5f3b0c1e-8a7d-4c2b-9e61-0d4f2a6b7c88";
    options.responsive = state.range(0) != 0;
    listen::Ingest ingest(options, clock, [](core::EventPtr e) { benchmark::DoNotOptimize(e); });
    const listen::Meta meta = udpMeta();
    std::size_t i = 0;
    for (auto _ : state) {
        std::string reply = ingest.handle(msgs[i++ % msgs.size()], meta);
        benchmark::DoNotOptimize(reply);
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_IngestHandle)->Arg(0)->Arg(1)->ArgName("responsive");

void BM_StoreConsume(benchmark::State& state) {
    const std::size_t batch_size = static_cast<std::size_t>(state.range(0));
    auto msgs = messages(4096);
    core::SystemClock clock;
    listen::IngestOptions options;
    options.node_id = "5f3b0c1e-8a7d-4c2b-9e61-0d4f2a6b7c88";
    std::vector<core::EventPtr> events;
    listen::Ingest ingest(options, clock, [&](core::EventPtr e) { events.push_back(e); });
    for (const auto& m : msgs) {
        ingest.handle(m, udpMeta());
    }
    auto dir = std::filesystem::temp_directory_path() /
               ("sp_pipeline_bench." + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    {
        store::StoreOptions so;
        so.path = (dir / "bench.db").string();
        so.max_age = std::chrono::seconds(0);
        store::Store st(so, clock);
        std::vector<core::EventPtr> batch;
        std::size_t next = 0;
        for (auto _ : state) {
            state.PauseTiming();
            batch.clear();
            for (std::size_t i = 0; i < batch_size; ++i) {
                batch.push_back(events[next++ % events.size()]);
            }
            state.ResumeTiming();
            st.consume(batch);
            st.tick();
        }
        st.close();
        state.counters["rows"] = static_cast<double>(st.stored());
    }
    std::filesystem::remove_all(dir);
    state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(batch_size));
}
// 200,000 rows per run: the cost of an insert grows with the database (index depth, cache).
BENCHMARK(BM_StoreConsume)->Arg(100)->Iterations(2000)->MeasureProcessCPUTime()->UseRealTime();
BENCHMARK(BM_StoreConsume)->Arg(1000)->Iterations(600)->MeasureProcessCPUTime()->UseRealTime();

} // namespace

BENCHMARK_MAIN();
