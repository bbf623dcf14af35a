// sp_share tests: codec round trips and malformed input, key/bucket binding, identity files,
// and in-process multi-node runs on loopback (private network id, rate limits off, RSA-2048
// fixtures made once per binary, short timings).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <fstream>
#include <limits>
#include <map>
#include <mutex>
#include <random>
#include <sys/stat.h>
#include <thread>

#include <opendht/dhtrunner.h>
#include <opendht/log_enable.h>

#include "share/codec.hpp"
#include "share/share.hpp"

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using sp::share::Credit;
using sp::share::Delivered;
using sp::share::Options;
using sp::share::Record;
using sp::share::Sharer;
namespace d = sp::share::detail;

namespace {

using SteadyClock = std::chrono::steady_clock;

// RSA-2048 identities, each generated once per test process (keygen is the slow part; ctest
// runs every test in its own process, so only the indexes a test uses are made).
const dht::crypto::Identity& fixture(std::size_t i) {
    static std::mutex mu;
    static std::map<std::size_t, dht::crypto::Identity> ids;
    std::lock_guard lk(mu);
    auto it = ids.find(i);
    if (it == ids.end()) {
        it = ids.emplace(i, dht::crypto::generateIdentity("fixture" + std::to_string(i), {}, 2048))
                 .first;
    }
    return it->second;
}

std::int64_t realMs() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// `time_s`: the record's time (unix s); default now.
Record makeRecord(std::uint32_t n, const std::string& subject, std::int64_t time_s = -1) {
    Record r;
    std::mt19937 rng(n * 7919U + 17U);
    for (auto& b : r.id) {
        b = static_cast<std::uint8_t>(rng());
    }
    r.id[0] = static_cast<std::uint8_t>(n & 0xff);
    r.id[1] = static_cast<std::uint8_t>((n >> 8) & 0xff);
    r.time = time_s >= 0 ? time_s : realMs() / 1000;
    r.subject = subject;
    r.attributes = {{"called_number", "100"}, {"user_agent", "friendly-scanner"}};
    return r;
}

// Deadlines scale with the build: the sanitizers slow this code (not OpenDHT's, which is not
// instrumented) several-fold. A deadline only bounds how long a failing test takes.
#if defined(__SANITIZE_THREAD__)
constexpr int kSlow = 4;
#elif defined(__SANITIZE_ADDRESS__)
constexpr int kSlow = 2;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
constexpr int kSlow = 4;
#elif __has_feature(address_sanitizer)
constexpr int kSlow = 2;
#else
constexpr int kSlow = 1;
#endif
#else
constexpr int kSlow = 1;
#endif

// Waits until pred() (polled every 20 ms) or the deadline (limit x kSlow); returns pred().
template <class P> bool waitFor(P pred, std::chrono::milliseconds limit) {
    auto end = SteadyClock::now() + limit * kSlow;
    while (SteadyClock::now() < end) {
        if (pred()) {
            return true;
        }
        std::this_thread::sleep_for(20ms);
    }
    return pred();
}

// ---- codec -------------------------------------------------------------------------------

TEST(ShareCodec, BatchAndBodyRoundTrip) {
    d::BatchHeader h{5, 31, 3, 123456789ULL, 42};
    d::Blob ct(300, 0xab);
    auto v = d::decodeBatch(d::encodeBatch(h, ct));
    ASSERT_TRUE(v);
    EXPECT_EQ(v->hdr.e, 5);
    EXPECT_EQ(v->hdr.b, 31);
    EXPECT_EQ(v->hdr.s, 3U);
    EXPECT_EQ(v->hdr.q, 123456789ULL);
    EXPECT_EQ(v->hdr.stamp, std::optional<std::uint64_t>(42));
    EXPECT_EQ(v->ct, ct);
    h.stamp.reset();
    EXPECT_FALSE(d::decodeBatch(d::encodeBatch(h, ct))->hdr.stamp);

    d::Context ctx{d::pkBytes(dht::InfoHash::get("pk")), 5, 31, 99};
    std::vector<Record> recs{makeRecord(1, "203.0.113.7"), makeRecord(2, "2001:db8::1")};
    recs[1].attributes.clear();
    auto body = d::decodeBody(d::encodeBody(ctx, recs));
    ASSERT_TRUE(body);
    EXPECT_TRUE(body->ctx == ctx);
    ASSERT_EQ(body->records.size(), 2U);
    EXPECT_EQ(body->bad_records, 0U);
    EXPECT_EQ(body->records[0].id, recs[0].id);
    EXPECT_EQ(body->records[0].time, recs[0].time);
    EXPECT_EQ(body->records[0].subject, "203.0.113.7");
    EXPECT_EQ(body->records[0].attributes, recs[0].attributes);
    EXPECT_TRUE(body->records[1].attributes.empty());
}

TEST(ShareCodec, GrantRoundTrip) {
    d::GrantPayload p;
    p.pk = d::pkBytes(dht::InfoHash::get("granter"));
    p.e = 77;
    p.keys = {{76, d::Blob(32, 1)}, {77, d::Blob(32, 2)}};
    auto q = d::decodeGrantPayload(d::encodeGrantPayload(p));
    ASSERT_TRUE(q);
    EXPECT_EQ(q->pk, p.pk);
    EXPECT_EQ(q->e, 77);
    EXPECT_EQ(q->keys, p.keys);
    auto g = d::decodeGrant(d::encodeGrant({77, d::Blob(512, 9)}));
    ASSERT_TRUE(g);
    EXPECT_EQ(g->e, 77);
    EXPECT_EQ(g->enc.size(), 512U);
    p.keys[0].second.resize(31); // a key must be 32 bytes
    EXPECT_FALSE(d::decodeGrantPayload(d::encodeGrantPayload(p)));
}

TEST(ShareCodec, RecordLimits) {
    auto r = makeRecord(1, "198.51.100.1");
    EXPECT_TRUE(d::validRecord(r));
    r.subject.clear();
    EXPECT_FALSE(d::validRecord(r));
    r.subject = std::string(256, 'x');
    EXPECT_FALSE(d::validRecord(r));
    r.subject = "x";
    r.attributes = {{"k", std::string(4096, 'v')}};
    EXPECT_FALSE(d::validRecord(r)); // 4096 + 1 bytes
    r.attributes[0].second.pop_back();
    EXPECT_TRUE(d::validRecord(r));
    r.attributes = {{"", "v"}};
    EXPECT_FALSE(d::validRecord(r));
    r.attributes.assign(65, {"k", "v"});
    EXPECT_FALSE(d::validRecord(r));
}

// Random bytes, truncations and bit flips of valid encodings: decoders return nullopt or a
// value, never throw, never crash.
TEST(ShareCodec, MalformedInputNeverThrows) {
    std::mt19937 rng(12345);
    d::Context ctx{d::pkBytes(dht::InfoHash::get("pk")), 1, 6, 1};
    std::vector<Record> recs{makeRecord(1, "203.0.113.9")};
    std::vector<d::Blob> seeds{d::encodeBatch({1, 6, 0, 1, {}}, d::Blob(64, 1)),
                               d::encodeBody(ctx, recs), d::encodeGrant({3, d::Blob(40, 2)}),
                               d::encodeGrantPayload({ctx.pk, 3, {{3, d::Blob(32, 3)}}})};
    // Hostile headers claiming huge arrays / strings.
    seeds.push_back({0xdd, 0xff, 0xff, 0xff, 0xff});
    seeds.push_back({0x97, 0x01, 0x01, 0x06, 0x00, 0x01, 0xc0, 0xc6, 0xff, 0xff, 0xff, 0xff});
    std::size_t accepted = 0;
    for (int i = 0; i < 4000; ++i) {
        d::Blob b = seeds[static_cast<std::size_t>(i) % seeds.size()];
        switch (i % 4) {
        case 0:
            b.resize(rng() % (b.size() + 1));
            break;
        case 1:
            if (!b.empty()) {
                b[rng() % b.size()] ^= static_cast<std::uint8_t>(1U << (rng() % 8));
            }
            break;
        case 2:
            b.resize(rng() % 200);
            for (auto& x : b) {
                x = static_cast<std::uint8_t>(rng());
            }
            break;
        default:
            b.push_back(static_cast<std::uint8_t>(rng()));
        }
        EXPECT_NO_THROW({
            accepted += d::decodeBatch(b).has_value();
            accepted += d::decodeBody(b).has_value();
            accepted += d::decodeGrant(b).has_value();
            accepted += d::decodeGrantPayload(b).has_value();
        });
    }
    // A zip bomb is cut at the limit.
    d::Blob zeros(1024 * 1024, 0);
    EXPECT_FALSE(d::inflateBlob(d::deflateBlob(zeros), d::kMaxPlain));
    EXPECT_TRUE(d::inflateBlob(d::deflateBlob(d::Blob(1000, 0)), d::kMaxPlain));
    (void)accepted;
}

TEST(ShareKeys, BucketShardAndInboxBinding) {
    auto ns = d::nameSpace("app", 7);
    EXPECT_EQ(ns, "rcp1/app/7");
    EXPECT_EQ(d::batchKey(ns, 10, 3), dht::InfoHash::get("rcp1/app/7/b/10/3"));
    EXPECT_NE(d::batchKey(ns, 10, 3), d::batchKey(ns, 11, 3));
    EXPECT_NE(d::batchKey(ns, 10, 3), d::batchKey(ns, 10, 4));
    EXPECT_NE(d::batchKey(ns, 10, 3), d::batchKey(d::nameSpace("app", 8), 10, 3));
    auto q = dht::InfoHash::get("q");
    EXPECT_EQ(d::inboxKey(ns, q, 5), dht::InfoHash::get("rcp1/app/7/i/" + q.toString() + "/5"));
    EXPECT_NE(d::inboxKey(ns, q, 5), d::inboxKey(ns, q, 6));
    for (int i = 0; i < 100; ++i) {
        auto h = dht::InfoHash::get(std::to_string(i));
        EXPECT_LT(d::shardOf(h, 16), 16U);
        EXPECT_EQ(d::shardOf(h, 16), h[0] % 16U);
    }
    EXPECT_EQ(d::floorDiv(-1, 6), -1);
    EXPECT_EQ(d::floorDiv(-6, 6), -1);
    EXPECT_EQ(d::floorDiv(-7, 6), -2);
    EXPECT_EQ(d::floorDiv(11, 6), 1);
    EXPECT_EQ(sp::share::parseCredit("L2"), Credit::L2);
    EXPECT_EQ(sp::share::parseCredit("l0"), Credit::L0);
    EXPECT_FALSE(sp::share::parseCredit("L3"));
}

// ---- identity ------------------------------------------------------------------------------

struct TempDir {
    fs::path path;
    TempDir() {
        char tmpl[] = "/tmp/share_test_XXXXXX";
        path = ::mkdtemp(tmpl);
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

mode_t modeOf(const fs::path& p) {
    struct stat st {};
    ::stat(p.c_str(), &st);
    return st.st_mode & 0777;
}

TEST(ShareIdentity, CreateReloadAndMode) {
    TempDir dir;
    auto base = dir.path / "id";
    std::vector<std::string> lines;
    auto log = [&](std::string_view l) { lines.emplace_back(l); };
    auto a = sp::share::loadOrCreateIdentity(base, 2048, log);
    EXPECT_TRUE(sp::share::isRsa(a));
    EXPECT_EQ(modeOf(dir.path / "id.pem"), 0600U);
    EXPECT_TRUE(lines.empty());
    auto b = sp::share::loadOrCreateIdentity(base, 2048, log);
    EXPECT_EQ(sp::share::pkId(a), sp::share::pkId(b));
    EXPECT_EQ(sp::share::pkId(a).size(), 40U);
    ::chmod((dir.path / "id.pem").c_str(), 0644);
    auto c = sp::share::loadOrCreateIdentity(base, 2048, log);
    EXPECT_EQ(sp::share::pkId(a), sp::share::pkId(c));
    EXPECT_EQ(modeOf(dir.path / "id.pem"), 0600U);
    ASSERT_EQ(lines.size(), 1U);
    EXPECT_NE(lines[0].find("readable by others"), std::string::npos);
}

TEST(ShareIdentity, EcIdentityIsMigratedToRsa) {
    TempDir dir;
    auto base = dir.path / "dht-identity";
    auto ec = dht::crypto::generateEcIdentity("old");
    ASSERT_FALSE(sp::share::isRsa(ec));
    {
        std::ofstream k(dir.path / "dht-identity.pem", std::ios::binary);
        auto key = ec.first->serialize();
        k.write(reinterpret_cast<const char*>(key.data()),
                static_cast<std::streamsize>(key.size()));
        std::ofstream c(dir.path / "dht-identity.crt", std::ios::binary);
        auto crt = ec.second->getPacked();
        c.write(reinterpret_cast<const char*>(crt.data()),
                static_cast<std::streamsize>(crt.size()));
    }
    ::chmod((dir.path / "dht-identity.pem").c_str(), 0600);
    std::vector<std::string> lines;
    auto id = sp::share::loadOrCreateIdentity(base, 2048,
                                              [&](std::string_view l) { lines.emplace_back(l); });
    EXPECT_TRUE(sp::share::isRsa(id));
    EXPECT_NE(sp::share::pkId(id), sp::share::pkId(ec));
    EXPECT_TRUE(fs::exists(dir.path / "dht-identity.pem.ec-old"));
    EXPECT_TRUE(fs::exists(dir.path / "dht-identity.crt.ec-old"));
    EXPECT_EQ(modeOf(dir.path / "dht-identity.pem"), 0600U);
    ASSERT_EQ(lines.size(), 1U);
    EXPECT_NE(lines[0].find("not RSA"), std::string::npos);
    // The new identity is the one kept.
    EXPECT_EQ(sp::share::pkId(sp::share::loadOrCreateIdentity(base, 2048)), sp::share::pkId(id));
}

TEST(ShareIdentity, Stamp) {
    auto pk = sp::share::pkId(fixture(0));
    auto s = sp::share::computeStamp(pk, 12);
    EXPECT_TRUE(sp::share::checkStamp(pk, s, 12));
    EXPECT_FALSE(sp::share::checkStamp(pk, s, 40));
    EXPECT_FALSE(sp::share::checkStamp(sp::share::pkId(fixture(1)), s, 20) &&
                 sp::share::checkStamp(pk, s + 1, 20));
}

TEST(ShareSharer, RejectsEcIdentityBadOptionsAndForeignRunner) {
    dht::DhtRunner runner;
    Options o;
    EXPECT_THROW(Sharer(runner, dht::crypto::generateEcIdentity("ec"), o, {}),
                 std::invalid_argument);
    o.epoch = 3601s;
    EXPECT_THROW(Sharer(runner, fixture(0), o, {}), std::invalid_argument);
    o = Options{};
    o.deny = {"not-an-id"};
    EXPECT_THROW(Sharer(runner, fixture(0), o, {}), std::invalid_argument);
    o = Options{};
    Sharer s(runner, fixture(0), o, {}); // runner not running: its id is not ours
    EXPECT_THROW(s.start(), std::invalid_argument);
    Record bad;
    EXPECT_FALSE(s.publish(bad));
    EXPECT_EQ(s.status().records_dropped, 1U);
}

// ---- in-process network --------------------------------------------------------------------

constexpr dht::NetId kNet = 0x52435054; // private network id

// The nodes' clock (Options::now of every Sharer of a Net): the real clock plus an offset
// the test moves forward, held below a limit. A test that depends on the epoch or bucket in
// which something happens moves the clock to the boundary it wants and holds it there, so
// epochs and buckets change only when the test says so, however slow the machine is
// (sanitizers, a loaded CI runner). Unheld (the default) it is the real clock. Any thread.
class TestClock {
public:
    std::int64_t nowMs() const {
        std::lock_guard lk(mu_);
        return std::min(realMs() + offset_ms_, limit_ms_);
    }
    std::int64_t nowS() const { return d::floorDiv(nowMs(), 1000); }
    // Moves the clock to `at_ms` (never backwards) and holds it below `limit_ms`.
    void jumpTo(std::int64_t at_ms, std::int64_t limit_ms) {
        std::lock_guard lk(mu_);
        std::int64_t real = realMs();
        at_ms = std::max(at_ms, std::min(real + offset_ms_, limit_ms_));
        offset_ms_ = at_ms - real;
        limit_ms_ = std::max(limit_ms - 1, at_ms);
    }
    // Moves the clock 50 ms into the next period (of `period_ms`) and holds it there.
    void holdNext(std::int64_t period_ms) {
        std::int64_t next = (d::floorDiv(nowMs(), period_ms) + 1) * period_ms;
        jumpTo(next + 50, next + period_ms);
    }
    std::function<std::chrono::system_clock::time_point()> fn() {
        return [this] {
            return std::chrono::system_clock::time_point(std::chrono::milliseconds(nowMs()));
        };
    }

private:
    mutable std::mutex mu_;
    std::int64_t offset_ms_ = 0;
    std::int64_t limit_ms_ = std::numeric_limits<std::int64_t>::max();
};

struct Node {
    std::string name;
    TestClock* clock = nullptr;
    dht::DhtRunner runner;
    dht::crypto::Identity id;
    std::atomic<Sharer*> sharer{nullptr};
    std::unique_ptr<Sharer> owned;
    std::mutex mu;
    std::vector<Delivered> got;
    std::vector<std::int64_t> latency_ms; // from the "sent_ms" attribute

    std::size_t countFrom(const std::string& pk) {
        std::lock_guard lk(mu);
        std::size_t n = 0;
        for (const auto& g : got) {
            n += g.publisher == pk;
        }
        return n;
    }
    std::size_t total() {
        std::lock_guard lk(mu);
        return got.size();
    }
};

void logLine(Node* n, char const* fmt, va_list ap) {
    char buf[512];
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    if (auto* s = n->sharer.load()) {
        s->noteDhtLog(buf);
    }
}

void startRunner(Node& n, in_port_t boot) {
    dht::DhtRunner::Config cfg;
    cfg.dht_config.node_config.network = kNet;
    cfg.dht_config.node_config.max_req_per_sec = -1;
    cfg.dht_config.node_config.max_peer_req_per_sec = -1;
    cfg.dht_config.id = n.id;
    cfg.threaded = true;
    cfg.bind4 = dht::SockAddr::resolve("127.0.0.1", "0").front();
    dht::DhtRunner::Context ctx;
    Node* np = &n;
    ctx.logger = std::make_shared<dht::Logger>(
        dht::LogMethod([np](char const* f, va_list a) { logLine(np, f, a); }),
        dht::LogMethod([np](char const* f, va_list a) { logLine(np, f, a); }), dht::LogMethod{});
    n.runner.run(cfg, std::move(ctx));
    if (boot != 0) {
        n.runner.bootstrap("127.0.0.1", std::to_string(boot));
    }
}

Options testOptions() {
    Options o;
    o.app = "test";
    o.network = static_cast<std::uint64_t>(realMs()); // a fresh namespace per test
    o.epoch = 6s;
    o.bucket = 1s;
    o.flush = 200ms;
    o.retention = 6s;
    o.grant_interval = 300ms;
    o.credit = Credit::L0;
    o.shards = 4;
    return o;
}

// n nodes: fixtures [first, first+n), connected, each with a Sharer (started) unless
// `raw` lists its index. Every Sharer's Options::now is `clock`; with `hold_ms` > 0 the clock
// is moved to the start of the next period of hold_ms (an epoch, an hour) and held in it
// before the Sharers start. `base`: the options with the clock (for Sharers a test starts).
struct Net {
    TestClock clock;
    std::vector<std::unique_ptr<Node>> nodes;
    Options base;

    Net(std::size_t n, std::size_t first, Options o,
        const std::function<void(std::size_t, Options&)>& tweak = {},
        std::vector<std::size_t> raw = {}, std::int64_t hold_ms = 0)
        : base(std::move(o)) {
        base.now = clock.fn();
        for (std::size_t i = 0; i < n; ++i) {
            auto node = std::make_unique<Node>();
            node->clock = &clock;
            node->name = std::string(1, static_cast<char>('A' + i));
            node->id = fixture(first + i);
            startRunner(*node, i == 0 ? 0 : nodes[0]->runner.getBoundPort());
            nodes.push_back(std::move(node));
        }
        bool connected = waitFor(
            [&] {
                for (auto& x : nodes) {
                    if (x->runner.getNodesStats(AF_INET).good_nodes + 1 < nodes.size()) {
                        return false;
                    }
                }
                return true;
            },
            15s);
        EXPECT_TRUE(connected);
        if (hold_ms > 0) {
            clock.holdNext(hold_ms);
        }
        for (std::size_t i = 0; i < n; ++i) {
            if (std::find(raw.begin(), raw.end(), i) != raw.end()) {
                continue;
            }
            Options oi = base;
            if (tweak) {
                tweak(i, oi);
            }
            Node* np = nodes[i].get();
            sp::share::Callbacks cbs;
            cbs.deliver = [np](Delivered dl) {
                std::lock_guard lk(np->mu);
                for (const auto& [k, v] : dl.record.attributes) {
                    if (k == "sent_ms") {
                        np->latency_ms.push_back(np->clock->nowMs() - std::stoll(v));
                    }
                }
                np->got.push_back(std::move(dl));
            };
            np->owned = std::make_unique<Sharer>(np->runner, np->id, oi, cbs);
            np->sharer = np->owned.get();
            np->owned->start();
        }
    }
    ~Net() {
        for (auto& x : nodes) {
            if (x->owned) {
                x->owned->stop();
            }
        }
        for (auto& x : nodes) {
            x->sharer = nullptr;
            x->runner.shutdown({}, true);
        }
        for (auto& x : nodes) {
            x->runner.join();
        }
    }
    Node& operator[](std::size_t i) { return *nodes[i]; }
};

std::string pkOf(Node& n) {
    return sp::share::pkId(n.id);
}

// Publishes record `seq` (time and "sent_ms" from the node's clock).
void publishFrom(Node& n, std::uint32_t seq) {
    std::int64_t ms = n.clock->nowMs();
    auto r = makeRecord(seq, "203.0.113." + std::to_string(seq % 250), d::floorDiv(ms, 1000));
    r.attributes.emplace_back("sent_ms", std::to_string(ms));
    n.owned->publish(std::move(r));
}

// How many records of `n` (makeRecord's id) `node` received.
std::size_t received(Node& node, std::uint32_t n) {
    auto id = makeRecord(n, "x").id;
    std::lock_guard lk(node.mu);
    std::size_t c = 0;
    for (const auto& g : node.got) {
        c += g.record.id == id;
    }
    return c;
}

bool contains(const std::vector<std::string>& v, const std::string& x) {
    return std::find(v.begin(), v.end(), x) != v.end();
}

// Two contributors give first, then grant each other and decrypt each other's records; a
// listen-only node (a Sharer that never publishes) decrypts nothing. The clock is held in
// epoch e0, then moved to its last quarter (next-epoch grants) and to e0 + 1.
TEST(ShareNet, ContributorsExchangeListenOnlyGetsNothing) {
    auto o = testOptions();
    o.epoch = 60s;
    constexpr std::int64_t kEpochMs = 60000;
    Net net(3, 0, o, {}, {}, kEpochMs);
    auto& a = net[0];
    auto& b = net[1];
    auto& l = net[2];
    std::int64_t e0 = d::floorDiv(net.clock.nowMs(), kEpochMs);
    std::uint32_t seq = 1;
    bool both = waitFor(
        [&] {
            publishFrom(a, seq++);
            publishFrom(b, 1000 + seq++);
            return a.countFrom(pkOf(b)) > 0 && b.countFrom(pkOf(a)) > 0;
        },
        20s);
    ASSERT_TRUE(both) << sp::share::statusJson(a.owned->status()) << "\n"
                      << sp::share::statusJson(b.owned->status());
    // Qualified: every new record arrives, and quickly.
    {
        std::lock_guard lk(b.mu);
        b.latency_ms.clear();
    }
    auto before = b.countFrom(pkOf(a));
    for (std::uint32_t i = 0; i < 10; ++i) {
        publishFrom(a, 5000 + i);
        std::this_thread::sleep_for(100ms);
    }
    EXPECT_TRUE(waitFor([&] { return b.countFrom(pkOf(a)) >= before + 10; }, 10s));
    {
        std::lock_guard lk(b.mu);
        std::sort(b.latency_ms.begin(), b.latency_ms.end());
        ASSERT_FALSE(b.latency_ms.empty());
        std::printf("[ share ] delivery latency A->B (flush 200 ms): p50 %lld ms, max %lld ms\n",
                    static_cast<long long>(b.latency_ms[b.latency_ms.size() / 2]),
                    static_cast<long long>(b.latency_ms.back()));
        EXPECT_LT(b.latency_ms.back(), 5000 * kSlow);
    }
    ASSERT_EQ(d::floorDiv(net.clock.nowMs(), kEpochMs), e0) << "the exchange took the held epoch";
    auto sa = a.owned->status();
    auto sb = b.owned->status();
    EXPECT_TRUE(contains(sa.granted_to, pkOf(b)));
    EXPECT_TRUE(contains(sa.granted_by, pkOf(b)));
    EXPECT_TRUE(contains(sb.granted_to, pkOf(a)));
    EXPECT_GT(sb.records_credited, 0U);
    EXPECT_GT(sb.bytes_received, 0U);
    EXPECT_GT(sa.bytes_put, 0U);
    EXPECT_EQ(sb.rejected.duplicate + sb.rejected.replay + sb.rejected.binding, 0U)
        << sp::share::statusJson(sb);
    // In e0's last quarter the next epoch's grants cross: A leaves newcomer mode (a grant from a
    // node it granted to; the first grants may have crossed the other way round).
    net.clock.jumpTo(e0 * kEpochMs + kEpochMs * 3 / 4 + 50, (e0 + 1) * kEpochMs);
    EXPECT_TRUE(waitFor(
        [&] {
            publishFrom(a, seq++);
            publishFrom(b, 1000 + seq++);
            return !a.owned->status().newcomer;
        },
        20s))
        << sp::share::statusJson(a.owned->status());
    // The listen-only node is nobody's partner and decrypts nothing, past the first epoch too
    // (it receives the batches: they wait for a key).
    std::int64_t e1_ms = (e0 + 1) * kEpochMs;
    net.clock.jumpTo(e1_ms + 50, e1_ms + kEpochMs);
    std::size_t b_from_a_e1 = 0;
    EXPECT_TRUE(waitFor(
        [&] {
            publishFrom(a, seq++);
            publishFrom(b, 1000 + seq++);
            std::lock_guard lk(b.mu);
            b_from_a_e1 = 0;
            for (const auto& g : b.got) {
                for (const auto& [k, v] : g.record.attributes) {
                    b_from_a_e1 += k == "sent_ms" && std::stoll(v) >= e1_ms;
                }
            }
            return b_from_a_e1 >= 5 && l.owned->status().pending_batches > 0;
        },
        20s))
        << b_from_a_e1 << " records of e0 + 1 at B\n"
        << sp::share::statusJson(l.owned->status());
    EXPECT_EQ(l.total(), 0U);
    auto sl = l.owned->status();
    EXPECT_TRUE(sl.granted_by.empty());
    EXPECT_FALSE(contains(a.owned->status().granted_to, pkOf(l)));
    EXPECT_FALSE(contains(b.owned->status().granted_to, pkOf(l)));
    std::printf("[ share ] status A: %s\n", sp::share::statusJson(a.owned->status()).c_str());
}

// A denies C: A never grants to C and drops C's values; B and C still exchange.
TEST(ShareNet, DeniedIdentityGetsNoGrant) {
    auto o = testOptions();
    std::string c_pk = sp::share::pkId(fixture(5));
    Net net(3, 3, o, [&](std::size_t i, Options& oi) {
        if (i == 0) {
            oi.deny = {c_pk};
        }
    });
    auto& a = net[0];
    auto& b = net[1];
    auto& c = net[2];
    std::uint32_t seq = 1;
    bool ok = waitFor(
        [&] {
            publishFrom(a, seq++);
            publishFrom(b, 1000 + seq++);
            publishFrom(c, 2000 + seq++);
            return c.countFrom(pkOf(b)) > 0 && b.countFrom(pkOf(c)) > 0 && b.countFrom(pkOf(a)) > 0;
        },
        20s);
    ASSERT_TRUE(ok);
    for (int i = 0; i < 10; ++i) {
        publishFrom(a, 3000 + seq++);
        publishFrom(c, 4000 + seq++);
        std::this_thread::sleep_for(100ms);
    }
    std::this_thread::sleep_for(1s);
    EXPECT_EQ(c.countFrom(pkOf(a)), 0U);
    EXPECT_EQ(a.countFrom(pkOf(c)), 0U);
    auto sa = a.owned->status();
    EXPECT_FALSE(contains(sa.granted_to, c_pk));
    EXPECT_GT(sa.rejected.denied, 0U);
    EXPECT_FALSE(contains(c.owned->status().granted_by, pkOf(a)));
}

// A publishes, B receives; F (a raw DHT node) tampers with, replays, re-keys and floods.
// The clock is held in one epoch, and below in one bucket, so that every value lands where
// the test puts it however long the steps take.
TEST(ShareNet, TamperedReplayedMisboundAndOverCapRejected) {
    auto o = testOptions();
    o.bucket = 2s;
    o.epoch = 120s;
    o.retention = 8s;
    Net net(3, 6, o, {}, {2}, 120000);
    auto& a = net[0];
    auto& b = net[1];
    auto& f = net[2];
    std::uint32_t seq = 1;
    ASSERT_TRUE(waitFor(
        [&] {
            publishFrom(a, seq++);
            publishFrom(b, 1000 + seq++);
            return b.countFrom(pkOf(a)) > 0 && a.countFrom(pkOf(b)) > 0;
        },
        20s));
    // Everything below happens in bucket cb (the clock is held there) and under cb + 1's keys,
    // both of the held epoch.
    auto ns = d::nameSpace(o.app, o.network);
    std::int64_t bsec = o.bucket.count();
    net.clock.holdNext(bsec * 1000);
    std::int64_t cb = d::floorDiv(net.clock.nowS(), bsec);
    ASSERT_EQ(d::floorDiv(cb + 1, o.epoch.count() / bsec),
              d::floorDiv(cb - 1, o.epoch.count() / bsec))
        << "the exchange above took most of the held epoch";
    publishFrom(a, 9000);
    auto key = d::batchKey(ns, cb, d::shardOf(a.id.second->getId(), o.shards));
    // A's value, got by F. The get's callbacks run on F's DHT thread, possibly after a wait
    // below gave up: they share only `found` with the test.
    struct Found {
        std::mutex mu;
        std::shared_ptr<dht::Value> value;
    };
    auto found = std::make_shared<Found>();
    auto a_id = a.id.second->getId();
    ASSERT_TRUE(waitFor(
        [&] {
            auto done = std::make_shared<std::atomic<bool>>(false);
            f.runner.get(
                key,
                [found, a_id](const std::vector<std::shared_ptr<dht::Value>>& vals) {
                    for (const auto& v : vals) {
                        if (v->owner && v->owner->getId() == a_id) {
                            std::lock_guard lk(found->mu);
                            found->value = v;
                        }
                    }
                    return true;
                },
                [done](bool) { *done = true; });
            waitFor([&] { return done->load(); }, 3s);
            std::lock_guard lk(found->mu);
            return found->value != nullptr;
        },
        5s));
    std::shared_ptr<dht::Value> genuine;
    {
        std::lock_guard lk(found->mu);
        genuine = found->value;
    }
    ASSERT_TRUE(waitFor([&] { return received(b, 9000) == 1; }, 5s));
    auto s0 = b.owned->status();
    auto copyOf = [&](const std::shared_ptr<dht::Value>& v) {
        auto packed = v->getPacked();
        auto oh = msgpack::unpack(reinterpret_cast<const char*>(packed.data()), packed.size());
        return std::make_shared<dht::Value>(oh.get());
    };
    // Tampered: data changed, owner and signature kept.
    auto tampered = copyOf(genuine);
    tampered->data.back() ^= 0x01;
    tampered->id = genuine->id + 1;
    f.runner.put(key, tampered);
    // Replayed: the same signed value under a new value id, same key.
    auto replay = copyOf(genuine);
    replay->id = genuine->id + 2;
    f.runner.put(key, replay);
    // Re-keyed: the genuine value under the next bucket's key.
    auto moved = copyOf(genuine);
    moved->id = genuine->id + 3;
    f.runner.put(d::batchKey(ns, cb + 1, d::shardOf(a.id.second->getId(), o.shards)), moved);
    // Flood: 9 distinct, validly signed batches of F in one bucket (cap 6), and one junk value.
    auto fid = f.id.second->getId();
    auto fkey = d::batchKey(ns, cb + 1, d::shardOf(fid, o.shards));
    for (std::uint64_t q = 1; q <= 9; ++q) {
        d::BatchHeader h{
            d::floorDiv(cb + 1, o.epoch.count() / bsec), cb + 1, d::shardOf(fid, o.shards), q, {}};
        auto v = std::make_shared<dht::Value>(d::kBatchType, d::encodeBatch(h, d::Blob(100, 7)),
                                              1000 + q);
        v->sign(*f.id.first);
        f.runner.put(fkey, v);
    }
    auto junk = std::make_shared<dht::Value>(d::kBatchType, d::Blob{1, 2, 3}, 2000);
    junk->sign(*f.id.first);
    f.runner.put(fkey, junk);

    auto s = b.owned->status();
    bool counted = waitFor(
        [&] {
            s = b.owned->status();
            return s.rejected.signature > s0.rejected.signature &&
                   s.rejected.replay > s0.rejected.replay &&
                   s.rejected.binding > s0.rejected.binding &&
                   s.rejected.cap >= s0.rejected.cap + 3 &&
                   s.rejected.record_schema > s0.rejected.record_schema;
        },
        8s);
    EXPECT_TRUE(counted) << sp::share::statusJson(s);
    // The genuine batch's record was delivered once; nothing else came of the copies.
    EXPECT_EQ(received(b, 9000), 1U);
    EXPECT_EQ(b.countFrom(pkOf(f)), 0U);
    EXPECT_EQ(s.rejected.duplicate, s0.rejected.duplicate);
    std::printf("[ share ] B after the attacks: %s\n", sp::share::statusJson(s).c_str());
}

// A node that joins late gets the stored batches of the retention window (catch-up) and,
// once it contributes, the keys within the window: it reads records published before it came.
// The clock is held in one epoch; the newcomer starts 4 buckets after the early records, so
// that only its catch-up (not its listens, which cover the previous bucket on) finds them.
TEST(ShareNet, NewcomerCatchesUpTheWindow) {
    auto o = testOptions();
    o.epoch = 120s;
    o.retention = 20s;
    Net net(3, 9, o, {}, {2}, 120000);
    auto& a = net[0];
    auto& b = net[1];
    auto& n = net[2];
    std::uint32_t seq = 1;
    ASSERT_TRUE(waitFor(
        [&] {
            publishFrom(a, seq++);
            publishFrom(b, 1000 + seq++);
            return b.countFrom(pkOf(a)) > 0 && a.countFrom(pkOf(b)) > 0;
        },
        20s));
    std::int64_t early_bucket = net.clock.nowS();
    ASSERT_LT(early_bucket + 6, (d::floorDiv(early_bucket, 120) + 1) * 120)
        << "the exchange above took most of the held epoch";
    for (std::uint32_t i = 0; i < 5; ++i) {
        publishFrom(a, 60000 + i);
    }
    // Published and stored (B has them) before the newcomer starts.
    ASSERT_TRUE(waitFor(
        [&] {
            std::size_t n_got = 0;
            for (std::uint32_t i = 0; i < 5; ++i) {
                n_got += received(b, 60000 + i);
            }
            return n_got == 5;
        },
        10s));
    ASSERT_LT(net.clock.nowS(), early_bucket + 4) << "the early records took 4 buckets";
    net.clock.jumpTo((early_bucket + 5) * 1000 + 50, (d::floorDiv(early_bucket, 120) + 1) * 120000);
    sp::share::Callbacks cbs;
    Node* np = &n;
    cbs.deliver = [np](Delivered dl) {
        std::lock_guard lk(np->mu);
        np->got.push_back(std::move(dl));
    };
    n.owned = std::make_unique<Sharer>(n.runner, n.id, net.base, cbs);
    n.sharer = n.owned.get();
    n.owned->start();
    auto gotAllEarly = [&] {
        std::size_t found = 0;
        for (std::uint32_t i = 0; i < 5; ++i) {
            found += received(n, 60000 + i);
        }
        return found == 5;
    };
    bool ok = waitFor(
        [&] {
            publishFrom(n, 3000 + seq++);
            publishFrom(a, 4000 + seq++);
            return gotAllEarly();
        },
        10s);
    EXPECT_TRUE(ok) << sp::share::statusJson(n.owned->status());
    EXPECT_TRUE(waitFor([&] { return contains(a.owned->status().granted_to, pkOf(n)); }, 3s));
}

// A contributor that stops publishing in epoch e decrypts nothing published from e + 2 on,
// while the others keep exchanging. The test moves the (held) clock from epoch to epoch: e0
// (all three exchange), e0 + 1 (A receives X's last batch, of e0, then A and B exchange), the
// last quarter of e0 + 1 (next-epoch grants), e0 + 2 (X must hold no key).
TEST(ShareNet, StoppedContributorIsCutOff) {
    auto o = testOptions();
    o.epoch = 60s;
    o.retention = 10s;
    o.grant_interval = 200ms;
    constexpr std::int64_t kEpochMs = 60000;
    // X's clock runs one second behind the others' (one bucket of skew is accepted).
    auto lag_x = [&](std::size_t i, Options& oi) {
        if (i == 2) {
            oi.now = [net_now = oi.now] { return net_now() - 1s; };
        }
    };
    Net net(3, 12, o, lag_x, {}, kEpochMs);
    auto& a = net[0];
    auto& b = net[1];
    auto& x = net[2];
    auto& clock = net.clock;
    std::int64_t e0 = d::floorDiv(clock.nowMs(), kEpochMs);
    auto hold = [&](std::int64_t at_ms) {
        clock.jumpTo(at_ms, (d::floorDiv(at_ms, kEpochMs) + 1) * kEpochMs);
    };
    // Records of `from` that `to` received, published at or after `since_ms`.
    auto count_since = [&](Node& to, Node& from, std::int64_t since_ms) {
        std::string pk = pkOf(from);
        std::lock_guard lk(to.mu);
        std::size_t c = 0;
        for (const auto& g : to.got) {
            for (const auto& [k, v] : g.record.attributes) {
                c += k == "sent_ms" && std::stoll(v) >= since_ms && g.publisher == pk;
            }
        }
        return c;
    };
    std::uint32_t seq = 1;
    auto next = [&](std::uint32_t base) { return base + seq++ % 10000; };
    ASSERT_TRUE(waitFor(
        [&] {
            publishFrom(a, next(10000));
            publishFrom(b, next(20000));
            publishFrom(x, next(30000));
            return x.countFrom(pkOf(a)) > 0 && a.countFrom(pkOf(x)) > 0 &&
                   b.countFrom(pkOf(a)) > 0 && a.countFrom(pkOf(b)) > 0;
        },
        20s));
    // Last quarter of e0: the grants of e0 + 1 go out, and A and B leave newcomer mode (a grant
    // from a node each granted to), so that only credit decides their grants from now on.
    hold(e0 * kEpochMs + kEpochMs * 3 / 4 + 50);
    ASSERT_EQ(d::floorDiv(clock.nowMs(), kEpochMs), e0) << "the exchange took the held epoch";
    ASSERT_TRUE(waitFor(
        [&] {
            publishFrom(a, next(10000));
            publishFrom(b, next(20000));
            publishFrom(x, next(30000));
            return !a.owned->status().newcomer && !b.owned->status().newcomer;
        },
        20s))
        << sp::share::statusJson(a.owned->status()) << "\n"
        << sp::share::statusJson(b.owned->status());
    // X's last record: with X's clock behind, its batch is of e0's last bucket while A receives
    // it in e0 + 1; its credit counts for e0, the batch's epoch. Then X stops contributing.
    std::int64_t e1_ms = (e0 + 1) * kEpochMs;
    hold(e1_ms + 50);
    publishFrom(x, 39999);
    ASSERT_TRUE(waitFor([&] { return x.owned->status().queued_records == 0; }, 5s));
    ASSERT_TRUE(waitFor([&] { return received(a, 39999) == 1; }, 10s));
    // e0 + 1: A and B exchange (each credited by the other in e0 + 1).
    ASSERT_TRUE(waitFor(
        [&] {
            publishFrom(a, next(40000));
            publishFrom(b, next(50000));
            return count_since(a, b, e1_ms) > 0 && count_since(b, a, e1_ms) > 0;
        },
        20s));
    // Last quarter of e0 + 1: A grants e0 + 2's key to B (credited in e0 + 1), not to X.
    auto grants_before = a.owned->status().grants_sent;
    hold(e1_ms + kEpochMs * 3 / 4 + 50);
    ASSERT_TRUE(waitFor(
        [&] {
            publishFrom(a, next(40000));
            publishFrom(b, next(50000));
            return a.owned->status().grants_sent > grants_before;
        },
        20s));
    // e0 + 2 (X's clock too): B decrypts A's records, X none (it receives the batches: they
    // wait for a key).
    std::int64_t e2_ms = (e0 + 2) * kEpochMs;
    hold(e2_ms + 50);
    ASSERT_TRUE(waitFor(
        [&] {
            publishFrom(a, next(60000));
            publishFrom(b, next(70000));
            auto sx = x.owned->status();
            return count_since(b, a, e2_ms) >= 5 && sx.epoch == e0 + 2 &&
                   (sx.pending_batches > 0 || count_since(x, a, e2_ms) > 0);
        },
        20s))
        << sp::share::statusJson(b.owned->status()) << "\n"
        << sp::share::statusJson(x.owned->status());
    EXPECT_EQ(count_since(x, a, e2_ms), 0U) << sp::share::statusJson(x.owned->status());
    EXPECT_EQ(count_since(x, b, e2_ms), 0U);
    EXPECT_FALSE(contains(a.owned->status().granted_to, pkOf(x)));
    EXPECT_TRUE(contains(a.owned->status().granted_to, pkOf(b)));
    EXPECT_FALSE(contains(x.owned->status().granted_by, pkOf(a)));
}

// With a bandwidth cap, a node stops receiving batches (and publishing) once the hour's
// budget is used: its traffic stays bounded while the others go on. The clock is held in one
// clock hour (the budget's period).
TEST(ShareNet, BandwidthCapBoundsTraffic) {
    auto o = testOptions();
    constexpr std::uint64_t kCap = 30000;
    Net net(
        2, 15, o,
        [&](std::size_t i, Options& oi) {
            if (i == 1) {
                oi.max_bytes_per_hour = kCap;
            }
        },
        {}, 3600000);
    auto& a = net[0];
    auto& b = net[1];
    std::uint32_t seq = 1;
    std::mt19937 rng(99);
    auto big = [&](Node& n) {
        auto r = makeRecord(seq++, "203.0.113.200", net.clock.nowS());
        std::string noise(3000, ' ');
        for (auto& c : noise) {
            c = static_cast<char>('a' + rng() % 26); // does not compress much
        }
        r.attributes.emplace_back("sip_message", std::move(noise));
        n.owned->publish(std::move(r));
    };
    for (int i = 0; i < 40; ++i) {
        big(a);
        big(b);
        std::this_thread::sleep_for(150ms);
    }
    std::this_thread::sleep_for(1s);
    auto sb = b.owned->status();
    EXPECT_GE(sb.bytes_put + sb.bytes_received, kCap) << sp::share::statusJson(sb);
    // At most one value beyond the cap is counted (the one that crossed it).
    EXPECT_LT(sb.bytes_put + sb.bytes_received, kCap + 48 * 1024) << sp::share::statusJson(sb);
    auto sa = a.owned->status();
    EXPECT_GT(sa.bytes_put, 2 * kCap);
    EXPECT_GT(sb.queued_records, 0U); // B's own records wait for the next hour
}

// L1: only the first report of a subject the receiver confirms earns credit (and a grant);
// a publisher of unconfirmed subjects is read while A gives first, but never credited.
TEST(ShareNet, L1CreditsOnlyConfirmedFirstReports) {
    auto o = testOptions();
    o.credit = Credit::L1;
    Net net(3, 17, o, {}, {0});
    auto& a = net[0];
    auto& b = net[1];
    auto& c = net[2];
    sp::share::Callbacks cbs;
    Node* ap = &a;
    cbs.deliver = [ap](Delivered dl) {
        std::lock_guard lk(ap->mu);
        ap->got.push_back(std::move(dl));
    };
    // A's own sensor saw the 203.0.113.0/24 addresses, not 198.51.100.0/24.
    cbs.confirmed = [](std::string_view subject, std::int64_t) {
        return subject.rfind("203.0.113.", 0) == 0;
    };
    auto oa = net.base;
    a.owned = std::make_unique<Sharer>(a.runner, a.id, oa, cbs);
    a.sharer = a.owned.get();
    a.owned->start();
    std::uint32_t seq = 1;
    auto creditedFrom = [&](Node& from, bool credited) {
        std::lock_guard lk(a.mu);
        std::size_t n = 0;
        for (const auto& g : a.got) {
            n += g.publisher == pkOf(from) && g.credited == credited;
        }
        return n;
    };
    bool ok = waitFor(
        [&] {
            ++seq;
            a.owned->publish(makeRecord(seq, "192.0.2.1"));
            b.owned->publish(makeRecord(1000 + seq, "203.0.113." + std::to_string(seq % 200)));
            c.owned->publish(makeRecord(3000 + seq, "198.51.100." + std::to_string(seq % 200)));
            return creditedFrom(b, true) > 0 && creditedFrom(c, false) > 0;
        },
        20s);
    EXPECT_TRUE(ok) << sp::share::statusJson(a.owned->status());
    EXPECT_EQ(creditedFrom(c, true), 0U);
    EXPECT_TRUE(waitFor([&] { return contains(a.owned->status().granted_to, pkOf(b)); }, 3s));
}

// Crypto costs with the fixtures' RSA-2048 and a RSA-4096 key (printed, not asserted).
TEST(ShareNet, CryptoTimings) {
    auto measure = [](const dht::crypto::Identity& id, const char* name) {
        dht::Blob msg(1500, 7);
        auto t0 = SteadyClock::now();
        dht::Blob sig;
        for (int i = 0; i < 10; ++i) {
            sig = id.first->sign(msg);
        }
        auto t1 = SteadyClock::now();
        for (int i = 0; i < 10; ++i) {
            EXPECT_TRUE(id.first->getPublicKey().checkSignature(msg, sig));
        }
        auto t2 = SteadyClock::now();
        auto ct = id.first->getPublicKey().encrypt(dht::Blob(120, 1));
        auto t3 = SteadyClock::now();
        for (int i = 0; i < 10; ++i) {
            EXPECT_EQ(id.first->decrypt(ct).size(), 120U);
        }
        auto t4 = SteadyClock::now();
        auto ms = [](auto d) { return std::chrono::duration<double, std::milli>(d).count() / 10; };
        std::printf("[ share ] %s: sign %.2f ms, verify %.3f ms, decrypt %.2f ms\n", name,
                    ms(t1 - t0), ms(t2 - t1), ms(t4 - t3));
    };
    measure(fixture(0), "RSA-2048");
}

} // namespace

// Everyone late at once (here: both quiet for three epochs, so nobody credited anyone and
// nobody granted the later epochs) must not end the exchange for good: a publisher holding
// no partner's key for an epoch gives first again, and the pair recovers.
TEST(ShareNet, StarvedPublishersGiveFirstAgain) {
    auto o = testOptions();
    o.epoch = 4s;
    o.retention = 4s;
    o.grant_interval = 200ms;
    o.newcomer_epochs = 1;
    Net net(2, 20, o);
    auto& a = net[0];
    auto& b = net[1];
    std::uint32_t seq = 1;
    ASSERT_TRUE(waitFor(
        [&] {
            publishFrom(a, seq++);
            publishFrom(b, 1000 + seq++);
            return a.countFrom(pkOf(b)) > 0 && b.countFrom(pkOf(a)) > 0;
        },
        20s));
    std::this_thread::sleep_for(13s); // three quiet epochs and a bit: every key is stale
    auto sa = a.owned->status();
    ASSERT_TRUE(sa.granted_by.empty())
        << "the pair must have lost its keys: " << sp::share::statusJson(sa);
    const auto before_a = a.countFrom(pkOf(b));
    const auto before_b = b.countFrom(pkOf(a));
    ASSERT_TRUE(waitFor(
        [&] {
            publishFrom(a, 5000 + seq++);
            publishFrom(b, 6000 + seq++);
            return a.countFrom(pkOf(b)) > before_a && b.countFrom(pkOf(a)) > before_b;
        },
        30s))
        << sp::share::statusJson(a.owned->status());
    // status() is a snapshot refreshed every 200 ms.
    EXPECT_TRUE(waitFor(
        [&] {
            return a.owned->status().give_first_restarts + b.owned->status().give_first_restarts >=
                   1;
        },
        2s));
}
