#include <gtest/gtest.h>

#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/persistent_map.hpp"

namespace sp::core {
namespace {

// Weak hashes force what the keyed hash almost never produces: long shared prefixes of hash
// bits (deep paths) and full collisions (collision branches).
struct FewBitsHash { // 4 distinct values: collisions everywhere
    std::uint64_t operator()(std::string_view s) const noexcept { return s.size() % 4; }
};
struct HighBitsHash { // differ only in the top bits: paths 12 levels deep
    std::uint64_t operator()(std::string_view s) const noexcept {
        return static_cast<std::uint64_t>(std::hash<std::string_view>{}(s)&0xf) << 60;
    }
};

// What forEach visits; iteration must visit the same, each key once.
template <typename Map> std::map<std::string, int> contents(const Map& m) {
    std::map<std::string, int> out;
    m.forEach([&](std::string_view k, const int& v) { out.emplace(std::string(k), v); });
    std::map<std::string, int> iterated;
    std::size_t n = 0;
    for (const auto& [k, v] : m) {
        iterated.emplace(std::string(k), v);
        ++n;
    }
    EXPECT_EQ(iterated, out);
    EXPECT_EQ(n, out.size());
    return out;
}

// Random upserts and erases against std::map, taking snapshots along the way: every snapshot
// must still hold exactly what the model held when it was taken.
template <typename Map> void randomized(unsigned seed, int keys, int steps) {
    std::mt19937 rng(seed);
    Map map;
    std::map<std::string, int> model;
    std::vector<std::pair<Map, std::map<std::string, int>>> snapshots;
    for (int step = 0; step < steps; ++step) {
        std::string key = "k" + std::to_string(rng() % keys);
        if (rng() % 3 == 0) {
            EXPECT_EQ(map.erase(key), model.erase(key) == 1);
        } else {
            bool inserted = false;
            int& v = map.upsert(key, inserted);
            EXPECT_EQ(inserted, model.count(key) == 0);
            v += 1;
            model[key] += 1;
        }
        ASSERT_EQ(map.size(), model.size());
        if (step % 97 == 0) {
            snapshots.emplace_back(map, model);
        }
    }
    EXPECT_EQ(contents(map), model);
    for (const auto& [k, v] : model) {
        ASSERT_NE(map.find(k), nullptr) << k;
        EXPECT_EQ(*map.find(k), v);
    }
    EXPECT_EQ(map.find("absent"), nullptr);
    for (const auto& [snap, expected] : snapshots) {
        EXPECT_EQ(contents(snap), expected);
        EXPECT_EQ(snap.size(), expected.size());
    }
    // Erasing everything leaves an empty map; snapshots are still intact.
    for (const auto& [k, v] : model) {
        EXPECT_TRUE(map.erase(k));
    }
    EXPECT_TRUE(map.empty());
    EXPECT_EQ(contents(map).size(), 0U);
    if (!snapshots.empty()) {
        EXPECT_EQ(contents(snapshots.back().first), snapshots.back().second);
    }
}

TEST(PersistentMap, MatchesAModelAndSnapshotsNeverChange) {
    randomized<PersistentMap<int>>(1, 2000, 20000);
}

TEST(PersistentMap, CollisionBranches) {
    randomized<PersistentMap<int, FewBitsHash>>(2, 200, 5000);
}

TEST(PersistentMap, DeepPaths) {
    randomized<PersistentMap<int, HighBitsHash>>(3, 300, 5000);
}

TEST(PersistentMap, FindMutableCopiesOnlyWhatASnapshotShares) {
    PersistentMap<int> map;
    bool inserted = false;
    map.upsert("a", inserted) = 1;
    map.upsert("b", inserted) = 2;
    PersistentMap<int> snap = map;
    *map.findMutable("a") = 10;
    EXPECT_EQ(map.findMutable("zzz"), nullptr);
    EXPECT_EQ(*map.find("a"), 10);
    EXPECT_EQ(*snap.find("a"), 1);
    EXPECT_EQ(*snap.find("b"), 2);
}

// A reader thread walks snapshots while the writer keeps changing its map and dropping old
// snapshots (run under ThreadSanitizer and ASan in CI).
TEST(PersistentMap, ReadersOfSnapshotsRaceTheWriter) {
    PersistentMap<int> map;
    std::atomic<bool> done{false};
    std::mutex m;
    PersistentMap<int> published;
    std::thread reader([&] {
        while (!done.load()) {
            PersistentMap<int> snap;
            {
                std::lock_guard lock(m);
                snap = published;
            }
            std::size_t n = 0;
            snap.forEach([&](std::string_view, const int& v) { n += v > 0 ? 1 : 0; });
            EXPECT_EQ(n, snap.size());
        }
    });
    for (int i = 0; i < 20000; ++i) {
        bool inserted = false;
        map.upsert("k" + std::to_string(i % 3000), inserted) += 1;
        if (i % 5 == 0) {
            map.erase("k" + std::to_string((i * 7) % 3000));
        }
        if (i % 50 == 0) {
            std::lock_guard lock(m);
            published = map;
        }
    }
    done = true;
    reader.join();
}

} // namespace
} // namespace sp::core
