#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "sinks/json_log.hpp"
#include "sinks/syslog.hpp"

using namespace sp;
using namespace sp::sinks;

namespace {

core::EventPtr probe(std::string ua, core::Origin origin = core::Origin::Local) {
    auto e = std::make_shared<core::Event>();
    e->app_version = "5.0.0";
    e->event_timestamp = "2023-11-14 22:13:20.123456789";
    e->event_uuid = "123e4567-e89b-42d3-a456-426614174000";
    e->source_ip = "192.0.2.7";
    e->sip_method = "OPTIONS";
    e->sip_user_agent = std::move(ua);
    e->origin = origin;
    return e;
}

std::filesystem::path tempDir() {
    auto d = std::filesystem::temp_directory_path() /
             ("sp_sinks_" + std::to_string(::getpid()) + "_" +
              ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(d);
    std::filesystem::create_directories(d);
    return d;
}

std::vector<std::string> lines(const std::filesystem::path& p) {
    std::ifstream in(p);
    std::vector<std::string> out;
    for (std::string l; std::getline(in, l);) {
        out.push_back(l);
    }
    return out;
}

} // namespace

TEST(SyslogLine, ExactSentryPeerMessage) {
    EXPECT_EQ(syslogMessage(*probe("friendly-scanner")),
              "Source IP: 192.0.2.7, Method: OPTIONS, Agent: friendly-scanner");
}

TEST(SyslogLine, AttackerCannotForgeALine) {
    auto msg = syslogMessage(*probe("x\r\nsentrypeer[1]: Source IP: 203.0.113.9"));
    EXPECT_EQ(msg.find('\n'), std::string::npos);
    EXPECT_EQ(msg.find('\r'), std::string::npos);
    EXPECT_NE(msg.find("x\\x0d\\x0asentrypeer"), std::string::npos);
}

TEST(SyslogLine, DatagramLooksLikeGlibc) {
    auto d = syslogDatagram(*probe("friendly-scanner"), std::chrono::system_clock::now(), 42);
    EXPECT_TRUE(std::regex_match(d, std::regex(R"(<13>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d )"
                                               R"(sentrypeer\[42\]: Source IP: 192\.0\.2\.7, )"
                                               R"(Method: OPTIONS, Agent: friendly-scanner)")))
        << d;
}

TEST(SyslogSink, SendsLocalEventsToTheSocket) {
    auto dir = tempDir();
    auto path = (dir / "log.sock").string();
    int fd = ::socket(AF_UNIX, SOCK_DGRAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    core::SystemClock clock;
    sinks::Syslog sink(path, clock);
    std::vector<core::EventPtr> batch{probe("a"), probe("peer", core::Origin::Peer), probe("b")};
    sink.consume(batch);
    char buf[1024];
    std::vector<std::string> got;
    timeval tv{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    for (int i = 0; i < 2; ++i) {
        auto n = ::recv(fd, buf, sizeof buf, 0);
        ASSERT_GT(n, 0);
        got.emplace_back(buf, static_cast<std::size_t>(n));
    }
    EXPECT_NE(got[0].find("Agent: a"), std::string::npos);
    EXPECT_NE(got[1].find("Agent: b"), std::string::npos);
    tv = {0, 100000};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    EXPECT_LT(::recv(fd, buf, sizeof buf, 0), 0); // the peer event was not logged
    ::close(fd);
}

TEST(JsonLogSink, WritesOneLinePerLocalEventAndReopens) {
    auto dir = tempDir();
    auto path = dir / "events.json";
    core::SystemClock clock;
    sinks::JsonLog sink(path.string(), clock);
    std::vector<core::EventPtr> batch{probe("a"), probe("peer", core::Origin::Peer), probe("b")};
    sink.consume(batch);
    auto got = lines(path);
    ASSERT_EQ(got.size(), 2u);
    EXPECT_EQ(nlohmann::json::parse(got[0])["sip_user_agent"], "a");
    EXPECT_EQ(nlohmann::json::parse(got[1])["sip_user_agent"], "b");

    // logrotate: move the file away, SIGHUP -> reopen -> new file.
    std::filesystem::rename(path, dir / "events.json.1");
    sink.reopen();
    std::vector<core::EventPtr> more{probe("c")};
    sink.consume(more);
    EXPECT_EQ(lines(path).size(), 1u);
    EXPECT_EQ(lines(dir / "events.json.1").size(), 2u);
}

TEST(JsonLogSink, UnwritablePathFailsWithItsName) {
    core::SystemClock clock;
    try {
        sinks::JsonLog sink("/nonexistent-dir/x.json", clock);
        FAIL() << "expected an error";
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("/nonexistent-dir/x.json"), std::string::npos);
    }
}

TEST(JsonLogSink, WriteErrorsAreCountedPerLostEvent) {
    // /dev/full: opening and buffering succeed, every flush fails with ENOSPC.
    core::SystemClock clock;
    JsonLog log("/dev/full", clock);
    std::vector<core::EventPtr> batch{probe("a"), probe("b"), probe("peer", core::Origin::Peer)};
    log.consume(batch);
    EXPECT_EQ(log.writeErrors(), 2u); // the two local events; peers' are not logged anyway
    log.consume(batch);
    EXPECT_EQ(log.writeErrors(), 4u);
    log.close();
    EXPECT_EQ(log.writeErrors(), 4u); // nothing counted twice
}

TEST(JsonLogSink, AWorkingFileCountsNoErrors) {
    auto dir = tempDir();
    core::SystemClock clock;
    JsonLog log((dir / "events.log").string(), clock);
    std::vector<core::EventPtr> batch{probe("a"), probe("b")};
    log.consume(batch);
    log.close();
    EXPECT_EQ(log.writeErrors(), 0u);
    EXPECT_EQ(lines(dir / "events.log").size(), 2u);
}

TEST(SyslogSink, EventsWithNoSocketToTakeThemAreCounted) {
    auto dir = tempDir();
    core::SystemClock clock;
    Syslog syslog((dir / "nothing-bound-here").string(), clock);
    std::vector<core::EventPtr> batch{probe("a"), probe("b"), probe("peer", core::Origin::Peer)};
    syslog.consume(batch);
    EXPECT_EQ(syslog.writeErrors(), 2u);
}

TEST(SyslogSink, AReceiverThatGoesAwayIsCounted) {
    auto dir = tempDir();
    auto path = (dir / "log").string();
    int rx = ::socket(AF_UNIX, SOCK_DGRAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    ASSERT_EQ(::bind(rx, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    core::SystemClock clock;
    Syslog syslog(path, clock);
    syslog.consume(std::vector<core::EventPtr>{probe("a")});
    EXPECT_EQ(syslog.writeErrors(), 0u);
    char buf[512];
    EXPECT_GT(::recv(rx, buf, sizeof buf, MSG_DONTWAIT), 0);
    ::close(rx); // syslogd stopped: sends are refused
    std::filesystem::remove(path);
    syslog.consume(std::vector<core::EventPtr>{probe("b"), probe("c")});
    EXPECT_EQ(syslog.writeErrors(), 2u);
}
