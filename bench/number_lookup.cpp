// Called-number lookups on an index of 100,000 numbers: normalise + probe every stored
// spelling (what the API does, api::findNumber) against one exact probe and against
// normalise + one probe (what a second index keyed by the normalised number would cost).
// 10,000 lookups per round (half stored, spelt "+44..."; half unknown), 5 rounds.
// Results and the decision: docs/BENCHMARKS.md, "Batch checks".
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "api/lookup_keys.hpp"
#include "store/index.hpp"

using namespace sp;

int main() {
    store::Index index;
    auto now = std::chrono::system_clock::now();
    char n[32];
    for (int i = 0; i < 100000; ++i) {
        std::snprintf(n, sizeof n, "+44%09d", i);
        index.add("198.51.100.1", n, now, core::Origin::Local, "");
    }
    index.publish();
    auto snap = index.snapshot();
    std::vector<std::string> queries;
    for (int i = 0; i < 10000; ++i) {
        std::snprintf(n, sizeof n, i % 2 != 0 ? "+44%09d" : "+1555%07d", i);
        queries.emplace_back(n);
    }
    using Ms = std::chrono::duration<double, std::milli>;
    for (int round = 0; round < 5; ++round) {
        std::size_t hits[3] = {0, 0, 0};
        auto t0 = std::chrono::steady_clock::now();
        for (const auto& q : queries) {
            auto normal = api::normaliseNumber(q);
            hits[0] += normal && api::findNumber(snap->by_number, *normal) ? 1 : 0;
        }
        auto t1 = std::chrono::steady_clock::now();
        for (const auto& q : queries) {
            hits[1] += snap->by_number.find(q) != nullptr ? 1 : 0;
        }
        auto t2 = std::chrono::steady_clock::now();
        for (const auto& q : queries) {
            auto normal = api::normaliseNumber(q);
            hits[2] += normal && snap->by_number.find(*normal) != nullptr ? 1 : 0;
        }
        auto t3 = std::chrono::steady_clock::now();
        std::printf("{\"all_spellings_ms\": %.2f, \"exact_ms\": %.2f, \"normalise_one_probe_ms\": "
                    "%.2f, \"hits\": [%zu, %zu, %zu]}\n",
                    Ms(t1 - t0).count(), Ms(t2 - t1).count(), Ms(t3 - t2).count(), hits[0], hits[1],
                    hits[2]);
    }
    std::printf("{\"index_memory_bytes\": %zu, \"numbers\": 100000}\n", snap->memory_bytes);
    return 0;
}
