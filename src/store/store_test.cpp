#include "store/store.hpp"

#include <fcntl.h>
#include <linux/fs.h>
#include <sqlite3.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "core/ids.hpp"
#include "core/text.hpp"
#include "store/checkpointer.hpp"

namespace sp::store {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using core::TimePoint;

std::int64_t micros(TimePoint t) {
    return std::chrono::floor<std::chrono::microseconds>(t.time_since_epoch()).count();
}

TimePoint atMicros(TimePoint t) {
    return std::chrono::time_point_cast<TimePoint::duration>(
        std::chrono::floor<std::chrono::microseconds>(t));
}

// A second connection to the database file, for checking what the store wrote and for
// preparing files the way other programs (SentryPeer) leave them.
class Db {
public:
    explicit Db(const fs::path& path) {
        if (sqlite3_open(path.c_str(), &db_) != SQLITE_OK) {
            ADD_FAILURE() << "cannot open " << path << ": " << sqlite3_errmsg(db_);
        }
        sqlite3_busy_timeout(db_, 2000);
    }
    ~Db() { sqlite3_close_v2(db_); }
    Db(const Db&) = delete;
    Db& operator=(const Db&) = delete;

    void exec(const std::string& sql) {
        char* err = nullptr;
        if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
            ADD_FAILURE() << sql << ": " << (err != nullptr ? err : "?");
        }
        sqlite3_free(err);
    }
    // Rows of a query, every value as text ("NULL" for NULL).
    std::vector<std::vector<std::string>> rows(const std::string& sql) {
        std::vector<std::vector<std::string>> out;
        sqlite3_stmt* s = nullptr;
        if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr) != SQLITE_OK) {
            ADD_FAILURE() << sql << ": " << sqlite3_errmsg(db_);
            return out;
        }
        while (sqlite3_step(s) == SQLITE_ROW) {
            std::vector<std::string> row;
            for (int i = 0; i < sqlite3_column_count(s); ++i) {
                const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(s, i));
                row.emplace_back(text != nullptr ? text : "NULL");
            }
            out.push_back(std::move(row));
        }
        sqlite3_finalize(s);
        return out;
    }
    std::string value(const std::string& sql) {
        auto r = rows(sql);
        return r.empty() || r[0].empty() ? "<none>" : r[0][0];
    }
    long long number(const std::string& sql) { return std::stoll(value(sql)); }

private:
    sqlite3* db_ = nullptr;
};

class StoreTest : public ::testing::Test {
protected:
    void SetUp() override {
        const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
        dir_ = fs::temp_directory_path() /
               fmt::format("sp-store-{}-{}-{}", info->test_suite_name(), info->name(), getpid());
        fs::remove_all(dir_);
        fs::create_directories(dir_);
        path_ = dir_ / "sentrypeer.db";
    }
    void TearDown() override { fs::remove_all(dir_); }

    StoreOptions options() const {
        StoreOptions o;
        o.path = path_.string();
        return o;
    }

    static core::EventPtr event(std::string ip, std::string number, TimePoint t) {
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
        e->sip_message = "OPTIONS sip:100@192.0.2.10 SIP/2.0\r\n\r\n";
        return e;
    }

    // A peer's event from node `reporter` (0-9), verified (reporter: a share identity), or
    // with reporter < 0 a plaintext value (no verified reporter, only a node id).
    static core::EventPtr peerEvent(std::string ip, std::string number, TimePoint t, int reporter) {
        auto e = std::const_pointer_cast<core::Event>(event(std::move(ip), std::move(number), t));
        e->origin = core::Origin::Peer;
        e->created_by_node_id =
            fmt::format("0b8bf2e1-3c4d-4e5f-8a9b-0c1d2e3f4a{:02}", reporter < 0 ? 99 : reporter);
        if (reporter >= 0) {
            e->reporter = fmt::format("{:040x}", reporter + 1);
        }
        return e;
    }

    static void consume(Store& store, const std::vector<core::EventPtr>& events) {
        store.consume(std::span<const core::EventPtr>(events));
    }

    long long rowCount() { return Db(path_).number("SELECT COUNT(*) FROM honey"); }

    fs::path dir_;
    fs::path path_;
    core::ManualClock clock_;
};

TEST_F(StoreTest, StoresEveryColumn) {
    auto e = std::make_shared<core::Event>();
    e->app_version = "5.0.0";
    e->time = clock_.now() + 123'456'789ns;
    e->event_timestamp = core::formatTimestamp(e->time);
    e->event_uuid = "3f0c1d2e-4b5a-4c6d-8e7f-901a2b3c4d5e";
    e->created_by_node_id = "0b8bf2e1-3c4d-4e5f-8a9b-0c1d2e3f4a5b";
    e->collected_method = "responsive";
    e->transport_type = "TLS";
    e->source_ip = "2001:db8::7";
    e->source_port = 50123;
    e->destination_ip = "2001:db8::1";
    e->destination_port = 5061;
    e->called_number = "+441234567890";
    e->sip_method = "INVITE";
    e->sip_user_agent = "sipvicious \xc3\xa9";
    e->sip_message = "INVITE sip:+441234567890@[2001:db8::1] SIP/2.0\r\nVia: x\r\n\r\n";
    e->origin = core::Origin::Peer;
    e->reporter = "9f2c4b1a0e8d7c6b5a4938271605f4e3d2c1b0a9";
    auto unknown_ports = event("203.0.113.9", "NOT_FOUND", clock_.now());
    auto copy = std::make_shared<core::Event>(*unknown_ports);
    copy->source_port = 0;
    copy->destination_port = 0;

    {
        Store store(options(), clock_);
        consume(store, {e, copy});
        EXPECT_EQ(store.stored(), 2u);
        EXPECT_EQ(store.writeErrors(), 0u);
        store.close();
    }

    Db db(path_);
    EXPECT_EQ(db.value("PRAGMA user_version"), "4");
    EXPECT_EQ(db.value("PRAGMA journal_mode"), "wal");
    EXPECT_EQ(db.value("PRAGMA page_size"), "16384"); // a new database
    auto rows =
        db.rows("SELECT event_timestamp, event_uuid, collected_method, source_ip, called_number,"
                " transport_type, method, user_agent, sip_message, created_by_node_id, created_at,"
                " app_version, source_port, destination_ip, destination_port, origin, event_time,"
                " reporter FROM honey ORDER BY honey_id");
    ASSERT_EQ(rows.size(), 2u);
    std::vector<std::string> expected{e->event_timestamp,
                                      e->event_uuid,
                                      "responsive",
                                      "2001:db8::7",
                                      "+441234567890",
                                      "TLS",
                                      "INVITE",
                                      e->sip_user_agent,
                                      e->sip_message,
                                      e->created_by_node_id,
                                      e->event_timestamp.substr(0, 19),
                                      "5.0.0",
                                      "50123",
                                      "2001:db8::1",
                                      "5061",
                                      "peer",
                                      std::to_string(micros(e->time)),
                                      e->reporter};
    EXPECT_EQ(rows[0], expected);
    EXPECT_EQ(rows[1][17], "NULL"); // a local event: no reporter
    EXPECT_EQ(rows[1][12], "NULL"); // port 0: unknown
    EXPECT_EQ(rows[1][14], "NULL");
    EXPECT_EQ(rows[1][15], "local");
    EXPECT_EQ(db.value("SELECT typeof(event_time) FROM honey LIMIT 1"), "integer");
}

TEST_F(StoreTest, SchemaHasSentryPeerColumnsThenOursAndIndexes) {
    { Store store(options(), clock_); }
    Db db(path_);
    std::vector<std::string> columns;
    for (const auto& r : db.rows("SELECT name FROM pragma_table_info('honey') ORDER BY cid")) {
        columns.push_back(r[0]);
    }
    std::vector<std::string> expected{"honey_id",
                                      "event_timestamp",
                                      "event_uuid",
                                      "collected_method",
                                      "source_ip",
                                      "called_number",
                                      "transport_type",
                                      "method",
                                      "user_agent",
                                      "sip_message",
                                      "created_by_node_id",
                                      "created_at",
                                      "app_version",
                                      "source_port",
                                      "destination_ip",
                                      "destination_port",
                                      "origin",
                                      "event_time",
                                      "reporter"};
    EXPECT_EQ(columns, expected);
    std::vector<std::string> indexes;
    for (const auto& r : db.rows("SELECT name FROM sqlite_master WHERE type = 'index' AND "
                                 "tbl_name = 'honey' ORDER BY name")) {
        indexes.push_back(r[0]);
    }
    std::vector<std::string> expected_indexes{"honey_peer", "honey_time_keys"};
    EXPECT_EQ(indexes, expected_indexes);
    // Reads by time window (the /stats tops, retention) are answered by the time index alone.
    EXPECT_NE(db.rows("EXPLAIN QUERY PLAN SELECT called_number, COUNT(*) FROM honey WHERE "
                      "event_time >= 0 GROUP BY called_number")
                  .at(0)
                  .back()
                  .find("COVERING INDEX honey_time_keys"),
              std::string::npos);
    // The peer-event deduplication lookup uses the partial index.
    EXPECT_NE(db.rows("EXPLAIN QUERY PLAN SELECT 1 FROM honey WHERE event_uuid = 'x' AND "
                      "origin = 'peer'")
                  .at(0)
                  .back()
                  .find("honey_peer"),
              std::string::npos);
}

TEST_F(StoreTest, OneTransactionPerBatch) {
    Store store(options(), clock_);
    std::vector<core::EventPtr> batch;
    batch.reserve(1000);
    for (int i = 0; i < 1000; ++i) {
        batch.push_back(event(fmt::format("198.51.100.{}", i % 200), "100", clock_.now()));
    }
    consume(store, batch);
    EXPECT_EQ(store.transactions(), 1u);
    EXPECT_EQ(store.stored(), 1000u);
    EXPECT_EQ(rowCount(), 1000);
    consume(store, batch);
    EXPECT_EQ(store.transactions(), 2u);
    EXPECT_EQ(rowCount(), 2000);
}

TEST_F(StoreTest, BusyDatabaseKeepsEventsAndRetriesAtTick) {
    StoreOptions o = options();
    o.busy_timeout_ms = 1;
    o.max_age = std::chrono::seconds(0); // no retention transactions in the count
    Store store(o, clock_);
    std::vector<core::EventPtr> batch;
    batch.reserve(10);
    for (int i = 0; i < 10; ++i) {
        batch.push_back(event("192.0.2.77", "100", clock_.now()));
    }
    Db other(path_);
    other.exec("BEGIN IMMEDIATE"); // another writer holds the lock
    consume(store, batch);
    EXPECT_EQ(store.stored(), 0u);
    EXPECT_EQ(store.writeErrors(), 1u);
    EXPECT_EQ(store.pending(), 10u);
    EXPECT_EQ(store.index().events(), 0u); // the index follows committed rows only
    consume(store, batch); // queued behind the first, no attempt before the retry is due
    EXPECT_EQ(store.pending(), 20u);
    EXPECT_EQ(store.writeErrors(), 1u);
    other.exec("COMMIT");

    store.tick(); // not due yet
    EXPECT_EQ(store.pending(), 20u);
    clock_.advance(1s);
    auto transactions = store.transactions();
    store.tick();
    EXPECT_EQ(store.pending(), 0u);
    EXPECT_EQ(store.stored(), 20u);
    EXPECT_EQ(store.transactions(), transactions + 1); // all pending in one transaction
    EXPECT_EQ(store.index().ip("192.0.2.77")->count, 20u);
    EXPECT_EQ(store.lost(), 0u);
    EXPECT_EQ(rowCount(), 20);
}

TEST_F(StoreTest, PendingIsBoundedAndCloseFlushes) {
    StoreOptions o = options();
    o.busy_timeout_ms = 1;
    o.max_pending = 5;
    Store store(o, clock_);
    Db other(path_);
    other.exec("BEGIN IMMEDIATE");
    std::vector<core::EventPtr> first{event("192.0.2.1", "1", clock_.now()),
                                      event("192.0.2.2", "1", clock_.now()),
                                      event("192.0.2.3", "1", clock_.now())};
    std::vector<core::EventPtr> second{
        event("192.0.2.4", "1", clock_.now()), event("192.0.2.5", "1", clock_.now()),
        event("192.0.2.6", "1", clock_.now()), event("192.0.2.7", "1", clock_.now())};
    consume(store, first);
    consume(store, second);
    EXPECT_EQ(store.pending(), 5u);
    EXPECT_EQ(store.lost(), 2u); // the two oldest
    other.exec("COMMIT");
    store.close(); // commits what is outstanding
    EXPECT_EQ(store.pending(), 0u);
    EXPECT_EQ(store.stored(), 5u);
    Db db(path_);
    auto rows = db.rows("SELECT source_ip FROM honey ORDER BY honey_id");
    ASSERT_EQ(rows.size(), 5u);
    EXPECT_EQ(rows.front()[0], "192.0.2.3");
    EXPECT_EQ(rows.back()[0], "192.0.2.7");
}

TEST_F(StoreTest, CloseCheckpointsTheWal) {
    {
        Store store(options(), clock_);
        consume(store, {event("192.0.2.1", "1", clock_.now())});
        store.close();
        store.close(); // idempotent
    }
    fs::path wal = path_.string() + "-wal";
    EXPECT_TRUE(!fs::exists(wal) || fs::file_size(wal) == 0);
    EXPECT_EQ(rowCount(), 1);
}

TEST_F(StoreTest, IndexCountsFirstLastAndReloads) {
    TimePoint t0 = clock_.now() - 1h + 1500ns; // sub-microsecond part is not kept
    {
        Store store(options(), clock_);
        consume(store, {event("192.0.2.1", "100", t0 + 2s), event("192.0.2.1", "100", t0),
                        event("192.0.2.1", "200", t0 + 1s)});
        consume(store, {event("192.0.2.2", "200", t0 + 5s)});
        const Index& index = store.index();
        auto a = index.ip("192.0.2.1");
        ASSERT_TRUE(a);
        EXPECT_EQ(a->count, 3u);
        EXPECT_EQ(a->first, atMicros(t0));
        EXPECT_EQ(a->last, atMicros(t0 + 2s));
        auto n200 = index.number("200");
        ASSERT_TRUE(n200);
        EXPECT_EQ(n200->count, 2u);
        EXPECT_EQ(n200->first, atMicros(t0 + 1s));
        EXPECT_EQ(n200->last, atMicros(t0 + 5s));
        EXPECT_EQ(index.events(), 4u);
        EXPECT_FALSE(index.ip("198.51.100.1"));
        EXPECT_FALSE(index.number("300"));
    }
    Store reopened(options(), clock_);
    const Index& index = reopened.index();
    EXPECT_EQ(index.events(), 4u);
    auto a = index.ip("192.0.2.1");
    ASSERT_TRUE(a);
    EXPECT_EQ(a->count, 3u);
    EXPECT_EQ(a->first, atMicros(t0));
    EXPECT_EQ(a->last, atMicros(t0 + 2s));
    auto b = index.ip("192.0.2.2");
    ASSERT_TRUE(b);
    EXPECT_EQ(b->count, 1u);
    EXPECT_EQ(index.number("100")->count, 2u);
    EXPECT_EQ(index.number("200")->last, atMicros(t0 + 5s));
    index.read([](const Index::Maps& m) {
        EXPECT_EQ(m.by_ip.size(), 2u);
        EXPECT_EQ(m.by_number.size(), 2u);
    });
}

TEST_F(StoreTest, RetentionPrunesOldRowsInChunksAndTheIndexFollows) {
    StoreOptions o = options();
    o.max_age = 1h;
    o.prune_chunk = 2;
    o.prune_interval = 1s;
    TimePoint t0 = clock_.now();
    Store store(o, clock_);
    consume(store, {event("192.0.2.1", "1", t0), event("192.0.2.1", "2", t0 + 10min),
                    event("192.0.2.2", "2", t0 + 20min), event("192.0.2.1", "3", t0 + 2h),
                    event("192.0.2.3", "3", t0 + 2h + 1s)});
    EXPECT_EQ(store.index().events(), 5u);

    clock_.set(t0 + 1h + 30min); // rows before t0 + 30min are old
    store.tick();                // one chunk: the two oldest
    EXPECT_EQ(store.pruned(), 2u);
    EXPECT_EQ(rowCount(), 3);
    const Index& index = store.index();
    EXPECT_EQ(index.ip("192.0.2.1")->count, 1u);
    EXPECT_EQ(index.ip("192.0.2.1")->first, t0 + 2h); // from the database
    EXPECT_EQ(index.ip("192.0.2.1")->last, t0 + 2h);
    EXPECT_FALSE(index.number("1"));
    EXPECT_EQ(index.number("2")->count, 1u);
    EXPECT_EQ(index.number("2")->first, t0 + 20min);

    store.tick(); // the chunk was full: continue at once, no interval
    EXPECT_EQ(store.pruned(), 3u);
    EXPECT_FALSE(index.ip("192.0.2.2"));
    EXPECT_FALSE(index.number("2"));
    EXPECT_EQ(index.events(), 2u);
    auto rows = Db(path_).rows("SELECT source_ip, called_number FROM honey ORDER BY honey_id");
    std::vector<std::vector<std::string>> expected{{"192.0.2.1", "3"}, {"192.0.2.3", "3"}};
    EXPECT_EQ(rows, expected);

    // Caught up: nothing until prune_interval has passed. An event stored already past
    // max_age is kept until then, and never counted.
    consume(store, {event("192.0.2.4", "4", t0 + 5min)});
    store.tick();
    EXPECT_EQ(rowCount(), 3);
    EXPECT_FALSE(index.ip("192.0.2.4"));
    EXPECT_EQ(index.events(), 2u);
    clock_.advance(1s);
    store.tick();
    EXPECT_EQ(rowCount(), 2);
    EXPECT_EQ(store.pruned(), 4u);
    EXPECT_EQ(index.events(), 2u);
    EXPECT_EQ(index.number("3")->count, 2u);

    clock_.set(t0 + 4h);
    store.pruneAll();
    EXPECT_EQ(rowCount(), 0);
    EXPECT_EQ(store.pruned(), 6u);
    EXPECT_EQ(index.events(), 0u);
    index.read([](const Index::Maps& m) {
        EXPECT_TRUE(m.by_ip.empty());
        EXPECT_TRUE(m.by_number.empty());
    });
}

// After retention, a key's `first` is found by a bounded forward scan (5,000 rows per tick):
// a lower bound (the newest removed time) until the scan reaches the key's oldest remaining
// row, exact afterwards. Keys removed while a round runs are searched by the next round.
TEST_F(StoreTest, FirstSeenAfterRetentionIsRefreshedByABoundedScan) {
    StoreOptions o = options();
    o.max_age = 1h;
    o.prune_chunk = 10;
    TimePoint t0 = clock_.now();
    Store store(o, clock_);
    std::vector<core::EventPtr> batch{event("192.0.2.1", "1", t0)};
    for (int i = 0; i < 12000; ++i) { // 12,000 rows of another key between A's two rows
        batch.push_back(event("192.0.2.2", "2", t0 + 1h + std::chrono::milliseconds(i)));
    }
    batch.push_back(event("192.0.2.1", "1", t0 + 2h));
    consume(store, batch);
    const Index& index = store.index();

    clock_.set(t0 + 1h + 1min); // only the row at t0 is old
    store.tick();               // prunes it, then scans the first 5,000 rows
    EXPECT_EQ(store.pruned(), 1u);
    EXPECT_EQ(index.ip("192.0.2.1")->count, 1u);
    EXPECT_EQ(index.ip("192.0.2.1")->first, t0); // not found yet: the lower bound
    store.tick();
    EXPECT_EQ(index.ip("192.0.2.1")->first, t0);
    store.tick(); // rows 10,000 to 12,001: found
    EXPECT_EQ(index.ip("192.0.2.1")->first, t0 + 2h);
    EXPECT_EQ(index.number("1")->first, t0 + 2h);
    EXPECT_EQ(index.number("2")->first, t0 + 1h); // untouched

    clock_.set(t0 + 2h + 5ms); // the first five rows of key 2 are old
    store.pruneAll();          // prunes, then scans to the end
    EXPECT_EQ(index.ip("192.0.2.2")->count, 11995u);
    EXPECT_EQ(index.ip("192.0.2.2")->first, t0 + 1h + 5ms);
    EXPECT_EQ(index.number("2")->first, t0 + 1h + 5ms);
}

// Random events over few keys, several retention steps with a small chunk and the refresh
// scan interleaved with new events: after each step has run to completion, the in-memory
// index equals what the database says (count, first, last per key, and the event total).
TEST_F(StoreTest, IndexMatchesTheDatabaseThroughRandomRetention) {
    StoreOptions o = options();
    o.max_age = 1h;
    o.prune_chunk = 7;
    TimePoint t0 = clock_.now();
    Store store(o, clock_);
    std::srand(12345);
    auto expectIndexMatchesDatabase = [&](const char* when) {
        SCOPED_TRACE(when);
        Db db(path_);
        for (const auto& [column, ips] : {std::pair{"source_ip", true}, {"called_number", false}}) {
            auto rows = db.rows(fmt::format("SELECT {0}, COUNT(*), MIN(event_time), "
                                            "MAX(event_time) FROM honey GROUP BY {0}",
                                            column));
            auto origins = db.rows(fmt::format(
                "SELECT {0}, SUM(origin = 'local'), SUM(origin = 'peer'), COUNT(DISTINCT CASE "
                "WHEN origin = 'peer' THEN reporter END) FROM honey GROUP BY {0}",
                column));
            auto snap = store.index().snapshot();
            const KeyMap& map = ips ? snap->by_ip : snap->by_number;
            EXPECT_EQ(map.size(), rows.size()) << column;
            for (std::size_t i = 0; i < rows.size(); ++i) {
                const auto& r = rows[i];
                const Seen* seen = map.find(r[0]);
                ASSERT_NE(seen, nullptr) << column << " " << r[0];
                EXPECT_EQ(seen->count, std::stoull(r[1])) << r[0];
                EXPECT_EQ(micros(seen->first), std::stoll(r[2])) << r[0];
                EXPECT_EQ(micros(seen->last), std::stoll(r[3])) << r[0];
                ASSERT_EQ(origins[i][0], r[0]);
                EXPECT_EQ(seen->local, std::stoull(origins[i][1])) << r[0];
                EXPECT_EQ(seen->peer, std::stoull(origins[i][2])) << r[0];
                EXPECT_EQ(seen->reporters, std::stoul(origins[i][3])) << r[0];
            }
        }
        EXPECT_EQ(store.index().events(),
                  static_cast<std::uint64_t>(db.number("SELECT COUNT(*) FROM honey")));
    };
    TimePoint now = t0;
    for (int round = 0; round < 6; ++round) {
        std::vector<core::EventPtr> batch;
        for (int i = 0; i < 300; ++i) { // times spread over the last 90 minutes
            auto t = now - std::chrono::seconds(std::rand() % 5400);
            auto ip = fmt::format("192.0.2.{}", std::rand() % 9);
            auto number = std::to_string(std::rand() % 13);
            // Reporters 0-3, or -1: a plaintext value (a peer event without a reporter).
            batch.push_back(i % 3 == 0 ? peerEvent(ip, number, t, std::rand() % 5 - 1)
                                       : event(ip, number, t));
        }
        consume(store, batch);
        now += 20min;
        clock_.set(now);
        for (int tick = 0; tick < 3; ++tick) { // a few chunks, the refresh partly done
            store.tick();
            consume(store, {event("192.0.2.200", "77", now)});
        }
        store.pruneAll(); // the rest of the chunks, then the refresh to its end
        expectIndexMatchesDatabase(fmt::format("round {}", round).c_str());
    }
    // A restart loads the same index from the database (the peer pass included).
    store.close();
    Store reopened(o, clock_);
    EXPECT_EQ(reopened.index().events(), store.index().events());
    auto before = store.index().snapshot();
    auto after = reopened.index().snapshot();
    ASSERT_EQ(after->by_ip.size(), before->by_ip.size());
    for (const auto& [ip, seen] : before->by_ip) {
        const Seen* again = after->by_ip.find(ip);
        ASSERT_NE(again, nullptr) << ip;
        EXPECT_EQ(again->local, seen.local) << ip;
        EXPECT_EQ(again->peer, seen.peer) << ip;
        EXPECT_EQ(again->reporters, seen.reporters) << ip;
        EXPECT_EQ(again->first, seen.first) << ip;
        EXPECT_EQ(again->last, seen.last) << ip;
    }
    EXPECT_EQ(after->peer_events, before->peer_events);
}

// The size budgets evict the oldest rows whatever their age, and the index follows.
TEST_F(StoreTest, MaxRowsEvictsTheOldestRowsAndCountsThem) {
    StoreOptions o = options();
    o.max_rows = 100;
    o.prune_chunk = 30;
    TimePoint t0 = clock_.now();
    Store store(o, clock_);
    std::vector<core::EventPtr> batch;
    for (int i = 0; i < 250; ++i) {
        batch.push_back(event(fmt::format("198.51.100.{}", i), std::to_string(i),
                              t0 + std::chrono::seconds(i)));
    }
    consume(store, batch); // the budget holds as soon as the batch is written
    EXPECT_EQ(rowCount(), 100);
    EXPECT_EQ(store.index().events(), 100u);
    EXPECT_EQ(store.evicted(Eviction::MaxRows), 150u);
    EXPECT_EQ(store.evicted(Eviction::MaxAge), 0u);
    EXPECT_FALSE(store.index().ip("198.51.100.149")); // the oldest went
    EXPECT_TRUE(store.index().ip("198.51.100.150"));
    EXPECT_EQ(store.index().snapshot()->by_number.size(), 100u);
}

// Under load batches grow (up to 5,000 events); eviction must remove what each batch adds,
// or the excess grows without bound (seen in the flood benchmark before this was fixed).
TEST_F(StoreTest, EvictionKeepsPaceWithLargeBatches) {
    StoreOptions o = options();
    o.max_rows = 1000;
    o.prune_chunk = 10; // retention's chunk must not bound the size budgets
    Store store(o, clock_);
    TimePoint t0 = clock_.now();
    for (int b = 0; b < 5; ++b) {
        std::vector<core::EventPtr> batch;
        for (int i = 0; i < 5000; ++i) {
            int n = b * 5000 + i;
            batch.push_back(event(fmt::format("10.{}.{}.{}", n >> 16, (n >> 8) & 255, n & 255),
                                  std::to_string(n), t0 + std::chrono::microseconds(n)));
        }
        consume(store, batch);
        EXPECT_EQ(rowCount(), 1000) << "after batch " << b;
        EXPECT_EQ(store.index().events(), 1000u);
    }
    EXPECT_EQ(store.evicted(Eviction::MaxRows), 24000u);
    EXPECT_EQ(store.pruned(), 24000u);
}

TEST_F(StoreTest, IndexMemoryBudgetEvictsUntilTheIndexFits) {
    StoreOptions o = options();
    o.max_index_bytes = 64 * 1024;
    Store store(o, clock_);
    TimePoint t0 = clock_.now();
    std::vector<core::EventPtr> batch;
    for (int i = 0; i < 2000; ++i) { // unique keys: about 300 bytes of index per row
        batch.push_back(event(fmt::format("2001:db8::{:x}", i), fmt::format("44{:09}", i),
                              t0 + std::chrono::milliseconds(i)));
    }
    consume(store, batch); // 2,000 rows would hold about 600 KB: evicted at once
    EXPECT_LE(store.index().memoryBytes(), o.max_index_bytes);
    EXPECT_LE(store.index().snapshot()->memory_bytes, o.max_index_bytes);
    EXPECT_GT(store.index().events(), 100u); // not everything: only down to the budget
    auto evicted = store.evicted(Eviction::IndexMemory);
    EXPECT_EQ(evicted + store.index().events(), 2000u);
    EXPECT_EQ(static_cast<std::uint64_t>(rowCount()), store.index().events());
    EXPECT_TRUE(store.index().ip(fmt::format("2001:db8::{:x}", 1999)));
}

TEST_F(StoreTest, PruneAllRemovesEveryOldRow) {
    StoreOptions o = options();
    o.max_age = 1h;
    o.prune_chunk = 3;
    TimePoint t0 = clock_.now();
    Store store(o, clock_);
    std::vector<core::EventPtr> batch;
    batch.reserve(11);
    for (int i = 0; i < 10; ++i) {
        batch.push_back(event("192.0.2.1", "1", t0 + std::chrono::minutes(i)));
    }
    batch.push_back(event("192.0.2.1", "1", t0 + 3h));
    consume(store, batch);
    clock_.set(t0 + 2h);
    store.pruneAll();
    EXPECT_EQ(store.pruned(), 10u);
    EXPECT_EQ(rowCount(), 1);
    auto a = store.index().ip("192.0.2.1");
    ASSERT_TRUE(a);
    EXPECT_EQ(a->count, 1u);
    EXPECT_EQ(a->first, t0 + 3h);
}

TEST_F(StoreTest, IndexLoadCanWaitUntilTheDaemonHasBoundItsSockets) {
    TimePoint t0 = clock_.now();
    {
        Store store(options(), clock_);
        consume(store, {event("192.0.2.1", "1", t0), event("192.0.2.2", "1", t0 + 1s)});
    }
    StoreOptions o = options();
    o.load_index = false;
    Store store(o, clock_);
    EXPECT_EQ(store.index().events(), 0u);
    store.loadIndex();
    EXPECT_EQ(store.index().events(), 2u);
    EXPECT_EQ(store.index().number("1")->count, 2u);
    EXPECT_EQ(store.index().number("1")->first, t0);
    EXPECT_EQ(store.index().number("1")->last, t0 + 1s);
}

TEST_F(StoreTest, IndexLoadsOnlyRowsWithinMaxAge) {
    StoreOptions o = options();
    o.max_age = 1h;
    TimePoint t0 = clock_.now();
    {
        Store store(o, clock_);
        consume(store, {event("192.0.2.1", "1", t0), event("192.0.2.1", "1", t0 + 2h)});
    }
    clock_.set(t0 + 2h + 1min);
    Store store(o, clock_);
    EXPECT_EQ(rowCount(), 2); // still there until retention runs
    EXPECT_EQ(store.index().events(), 1u);
    EXPECT_EQ(store.index().ip("192.0.2.1")->count, 1u);
    EXPECT_EQ(store.index().ip("192.0.2.1")->first, t0 + 2h);
    store.tick();
    EXPECT_EQ(rowCount(), 1);
    EXPECT_EQ(store.index().ip("192.0.2.1")->count, 1u); // the old row was never counted
}

TEST_F(StoreTest, MaxAgeZeroKeepsEverything) {
    StoreOptions o = options();
    o.max_age = std::chrono::seconds(0);
    TimePoint old = clock_.now() - 24h * 365 * 10;
    {
        Store store(o, clock_);
        consume(store, {event("192.0.2.1", "1", old), event("192.0.2.2", "1", clock_.now())});
        clock_.advance(24h * 365 * 10);
        store.tick();
        store.pruneAll();
        EXPECT_EQ(store.pruned(), 0u);
        EXPECT_EQ(store.index().events(), 2u);
    }
    EXPECT_EQ(rowCount(), 2);
    Store reopened(o, clock_);
    EXPECT_EQ(reopened.index().events(), 2u);
    EXPECT_EQ(reopened.index().ip("192.0.2.1")->first, old);
}

// SentryPeer writes event_timestamp in local time with 6 to 9 fraction digits; the migration
// reads it as this machine's local time (SQLite keeps milliseconds).
std::int64_t expectedLocalMicros(int y, int mo, int d, int h, int mi, int s, int ms) {
    std::tm tm{};
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = s;
    tm.tm_isdst = -1;
    std::time_t t = std::mktime(&tm);
    return static_cast<std::int64_t>(t) * 1'000'000 + ms * 1000LL;
}

TEST_F(StoreTest, OpensSentryPeerDatabaseAndMigratesIt) {
    {
        Db legacy(path_);
        legacy.exec("CREATE TABLE IF NOT EXISTS honey (honey_id INTEGER PRIMARY KEY, "
                    "event_timestamp TEXT, event_uuid TEXT, collected_method TEXT, source_ip "
                    "TEXT, called_number TEXT, transport_type TEXT, method TEXT, user_agent "
                    "TEXT, sip_message TEXT, created_by_node_id TEXT, created_at DATETIME "
                    "DEFAULT CURRENT_TIMESTAMP);"
                    "CREATE INDEX IF NOT EXISTS source_ip_index ON honey (source_ip);"
                    "CREATE INDEX IF NOT EXISTS called_number_index ON honey (called_number);"
                    "CREATE INDEX IF NOT EXISTS event_uuid_index ON honey (event_uuid);");
        const char* insert =
            "INSERT INTO honey (event_timestamp, event_uuid, collected_method, source_ip, "
            "called_number, transport_type, method, user_agent, sip_message, "
            "created_by_node_id, created_at) VALUES ('{}', '{}', 'passive', '{}', '{}', 'UDP', "
            "'OPTIONS', 'friendly-scanner', 'OPTIONS sip:100@192.0.2.10 SIP/2.0', "
            "'7d0c4f7e-2a57-4a8e-9c41-0e3bba3b2b11', '{}')";
        legacy.exec(fmt::format(fmt::runtime(insert), "2024-03-01 12:34:56.123456",
                                "11111111-2222-4333-8444-555555555555", "203.0.113.5", "100",
                                "2024-03-01 12:34:57"));
        legacy.exec(fmt::format(fmt::runtime(insert), "2024-03-01 12:35:00.987654321",
                                "11111111-2222-4333-8444-555555555556", "203.0.113.5", "200",
                                "2024-03-01 12:35:01"));
        legacy.exec(fmt::format(fmt::runtime(insert), "not a time",
                                "11111111-2222-4333-8444-555555555557", "203.0.113.6", "200",
                                "2024-03-01 10:00:00"));
        EXPECT_EQ(legacy.value("PRAGMA user_version"), "0");
    }
    clock_.set(*core::parseTimestamp("2024-03-02 00:00:00"));
    StoreOptions o = options(); // max_age 7 days: every legacy row is within it
    {
        Store store(o, clock_);
        Db db(path_);
        EXPECT_EQ(db.value("PRAGMA user_version"), "4");
        auto rows = db.rows("SELECT event_timestamp, source_ip, called_number, user_agent, "
                            "created_at, origin, app_version, source_port, event_time FROM honey "
                            "ORDER BY honey_id");
        ASSERT_EQ(rows.size(), 3u);
        EXPECT_EQ(rows[0][0], "2024-03-01 12:34:56.123456"); // kept as written
        EXPECT_EQ(rows[0][1], "203.0.113.5");
        EXPECT_EQ(rows[0][3], "friendly-scanner");
        EXPECT_EQ(rows[0][4], "2024-03-01 12:34:57");
        EXPECT_EQ(rows[0][5], "local");
        EXPECT_EQ(rows[0][6], "NULL");
        EXPECT_EQ(rows[0][7], "NULL");
        EXPECT_EQ(rows[0][8], std::to_string(expectedLocalMicros(2024, 3, 1, 12, 34, 56, 123)));
        EXPECT_EQ(rows[1][8], std::to_string(expectedLocalMicros(2024, 3, 1, 12, 35, 0, 988)));
        // Unparseable event_timestamp: created_at, which is UTC.
        EXPECT_EQ(rows[2][8], std::to_string(micros(*core::parseTimestamp("2024-03-01 10:00:00"))));
        // SentryPeer's indexes are superseded by the time index and, for event_uuid, by one
        // on peer events; version 1's per-key indexes are gone again.
        EXPECT_EQ(db.number("SELECT COUNT(*) FROM sqlite_master WHERE type = 'index'"), 2);
        EXPECT_EQ(db.number("SELECT COUNT(*) FROM sqlite_master WHERE name IN "
                            "('honey_peer', 'honey_time_keys')"),
                  2);

        EXPECT_EQ(store.index().events(), 3u);
        EXPECT_EQ(store.index().ip("203.0.113.5")->count, 2u);
        EXPECT_EQ(store.index().number("200")->count, 2u);
        consume(store, {event("203.0.113.5", "100", clock_.now())});
        EXPECT_EQ(store.stored(), 1u);
        EXPECT_EQ(store.index().ip("203.0.113.5")->count, 3u);
    }
    Store again(o, clock_); // already at schema 2: nothing to migrate twice
    EXPECT_EQ(rowCount(), 4);
    EXPECT_EQ(again.index().events(), 4u);
    EXPECT_EQ(Db(path_).value("PRAGMA user_version"), "4");
}

TEST_F(StoreTest, RefusesNewerSchema) {
    {
        Db db(path_);
        db.exec("CREATE TABLE honey (honey_id INTEGER PRIMARY KEY); PRAGMA user_version = 5;");
    }
    try {
        Store store(options(), clock_);
        FAIL() << "opened a schema 5 database";
    } catch (const StoreError& e) {
        EXPECT_EQ(std::string(e.what()),
                  fmt::format("database {} was written by a newer sentrypeer (schema 5, we know 4)",
                              path_.string()));
    }
    EXPECT_EQ(Db(path_).value("PRAGMA user_version"), "5");
}

TEST_F(StoreTest, RefusesAFileThatIsNotADatabase) {
    std::string text;
    for (int i = 0; i < 100; ++i) {
        text += "this is a text file, not a database\n";
    }
    { std::ofstream(path_) << text; }
    try {
        Store store(options(), clock_);
        FAIL() << "opened a text file";
    } catch (const StoreError& e) {
        std::string msg = e.what();
        EXPECT_NE(msg.find(path_.string()), std::string::npos) << msg;
        EXPECT_NE(msg.find("not a SQLite database"), std::string::npos) << msg;
    }
    std::ifstream in(path_);
    std::string after((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_EQ(after, text); // untouched
}

TEST_F(StoreTest, RefusesAnUnwritablePath) {
    fs::path file = dir_ / "a-file";
    std::ofstream(file) << "x";
    for (const fs::path& bad : {file / "sentrypeer.db", dir_ / "missing" / "sentrypeer.db"}) {
        StoreOptions o = options();
        o.path = bad.string();
        try {
            Store store(o, clock_);
            ADD_FAILURE() << "opened " << bad;
        } catch (const StoreError& e) {
            std::string msg = e.what();
            EXPECT_NE(msg.find(bad.string()), std::string::npos) << msg;
            EXPECT_NE(msg.find("cannot open database"), std::string::npos) << msg;
        }
    }
}

// Makes a file unwritable even for root (the immutable attribute), for as long as it lives.
class Immutable {
public:
    explicit Immutable(const fs::path& path) : fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {
        int flags = 0;
        if (fd_ >= 0 && ioctl(fd_, FS_IOC_GETFLAGS, &flags) == 0) {
            flags |= FS_IMMUTABLE_FL;
            set_ = ioctl(fd_, FS_IOC_SETFLAGS, &flags) == 0;
        }
    }
    ~Immutable() {
        int flags = 0;
        if (set_ && ioctl(fd_, FS_IOC_GETFLAGS, &flags) == 0) {
            flags &= ~FS_IMMUTABLE_FL;
            ioctl(fd_, FS_IOC_SETFLAGS, &flags);
        }
        if (fd_ >= 0) {
            ::close(fd_);
        }
    }
    Immutable(const Immutable&) = delete;
    Immutable& operator=(const Immutable&) = delete;
    bool set() const { return set_; }

private:
    int fd_;
    bool set_ = false;
};

TEST_F(StoreTest, RefusesAReadOnlyFile) {
    { Store store(options(), clock_); }
    fs::permissions(path_, fs::perms::owner_read);
    std::optional<Immutable> immutable;
    if (geteuid() == 0) {
        immutable.emplace(path_);
        if (!immutable->set()) {
            GTEST_SKIP() << "root can write a read-only file, and this file system has no "
                            "immutable attribute";
        }
    }
    try {
        Store store(options(), clock_);
        ADD_FAILURE() << "opened a read-only file for writing";
    } catch (const StoreError& e) {
        EXPECT_EQ(std::string(e.what()),
                  fmt::format("cannot write database {}: the file is read-only", path_.string()));
    }
}

TEST_F(StoreTest, CheckpointerCopiesTheWalBackSoItRestarts) {
    Db db(path_);
    db.exec("PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; CREATE TABLE t (x BLOB)");
    for (int i = 0; i < 200; ++i) {
        db.exec("INSERT INTO t VALUES (randomblob(1000))");
    }
    Checkpointer checkpointer(path_.string(), 1000);
    checkpointer.request();
    // Its own thread: wait for it, boundedly.
    for (int i = 0; i < 10000 && checkpointer.checkpoints() == 0; ++i) {
        std::this_thread::sleep_for(1ms);
    }
    ASSERT_EQ(checkpointer.checkpoints(), 1u);
    // All of the WAL was copied, so the next write starts it over: a few frames, not 200.
    db.exec("INSERT INTO t VALUES (1)");
    auto wal = db.rows("PRAGMA wal_checkpoint(PASSIVE)").at(0); // busy, frames, copied
    EXPECT_LT(std::stoi(wal.at(1)), 10);
    EXPECT_EQ(db.number("SELECT COUNT(*) FROM t"), 201);
    checkpointer.stop();
    checkpointer.stop(); // idempotent
}

TEST_F(StoreTest, PeerEventAlreadyStoredIsSkippedAcrossRestarts) {
    auto peer = std::make_shared<core::Event>(*event("198.51.100.7", "100", clock_.now()));
    peer->origin = core::Origin::Peer;
    auto local = event("198.51.100.7", "100", clock_.now());
    {
        Store store(options(), clock_);
        consume(store, {peer, local});
        store.close();
    }
    Store store(options(), clock_);
    // The same peer value seen again (e.g. re-announced after a restart) and a local event
    // that happens to carry a uuid a peer used: only the duplicate peer event is skipped.
    auto local_same_uuid = std::make_shared<core::Event>(*local);
    local_same_uuid->event_uuid = peer->event_uuid;
    local_same_uuid->origin = core::Origin::Local;
    consume(store, {peer, local_same_uuid});
    EXPECT_EQ(store.duplicates(), 1u);
    EXPECT_EQ(store.stored(), 1u);
    EXPECT_EQ(store.lost(), 0u);
    EXPECT_EQ(store.index().ip("198.51.100.7")->count, 3u);
    store.close();
    EXPECT_EQ(rowCount(), 3);
}

} // namespace
// Schema 3 -> 4: peer rows stored before the reporter column existed stay peer events but
// name no reporter (their created_by_node_id is self-declared); new verified ones do.
TEST_F(StoreTest, SchemaThreePeerRowsMigrateWithoutReporters) {
    {
        Store store(options(), clock_);
        consume(store, {peerEvent("203.0.113.5", "100", clock_.now(), 1),
                        peerEvent("203.0.113.5", "100", clock_.now(), 2)});
        store.close();
    }
    {
        // Back to what schema 3 had: no reporter column, honey_peer on created_by_node_id.
        Db db(path_);
        db.exec("DROP INDEX honey_peer; ALTER TABLE honey DROP COLUMN reporter;"
                "CREATE INDEX honey_peer ON honey (event_uuid, event_time, source_ip, "
                "called_number, created_by_node_id) WHERE origin = 'peer';"
                "PRAGMA user_version = 3;");
    }
    Store store(options(), clock_);
    Db db(path_);
    EXPECT_EQ(db.value("PRAGMA user_version"), "4");
    EXPECT_EQ(db.number("SELECT COUNT(*) FROM honey WHERE reporter IS NULL AND origin = 'peer'"),
              2);
    EXPECT_NE(db.value("SELECT sql FROM sqlite_master WHERE name = 'honey_peer'").find("reporter"),
              std::string::npos);
    auto seen = store.index().ip("203.0.113.5");
    ASSERT_TRUE(seen);
    EXPECT_EQ(seen->peer, 2u);
    EXPECT_EQ(seen->reporters, 0u); // two node ids, no verified reporter
    consume(store, {peerEvent("203.0.113.5", "100", clock_.now(), 1),
                    peerEvent("203.0.113.5", "100", clock_.now(), -1)});
    seen = store.index().ip("203.0.113.5");
    EXPECT_EQ(seen->peer, 4u);
    EXPECT_EQ(seen->reporters, 1u); // the verified one only
}

} // namespace sp::store
