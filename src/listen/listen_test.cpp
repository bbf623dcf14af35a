#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <boost/asio/io_context.hpp>
#include <condition_variable>
#include <mutex>
#include <netinet/in.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

#include "listen/net.hpp"
#include "listen/tcp_listener.hpp"
#include "listen/udp_listener.hpp"

using namespace sp;
using namespace std::chrono_literals;
namespace asio = boost::asio;

namespace {

const std::string kOptions = "OPTIONS sip:100@127.0.0.1 SIP/2.0\r\n"
                             "Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK-1;rport\r\n"
                             "From: <sip:scanner@127.0.0.1>;tag=abc\r\n"
                             "To: <sip:100@127.0.0.1>\r\n"
                             "Call-ID: call-1@test\r\n"
                             "CSeq: 1 OPTIONS\r\n"
                             "User-Agent: friendly-scanner\r\n"
                             "Content-Length: 0\r\n\r\n";

// Collects published events; waits for a count.
struct Collector {
    std::mutex mutex;
    std::condition_variable cv;
    std::vector<core::EventPtr> events;

    listen::Ingest::Publish publisher() {
        return [this](core::EventPtr e) {
            std::lock_guard lock(mutex);
            events.push_back(std::move(e));
            cv.notify_all();
        };
    }
    bool waitFor(std::size_t n) {
        std::unique_lock lock(mutex);
        return cv.wait_for(lock, 5s, [&] { return events.size() >= n; });
    }
    // What was published so far, read under the mutex (the io thread may still publish).
    std::vector<core::EventPtr> snapshot() {
        std::lock_guard lock(mutex);
        return events;
    }
};

struct Fixture : ::testing::Test {
    core::SystemClock clock;
    Collector collected;
    std::unique_ptr<listen::Ingest> ingest;
    listen::ConnectionLimits limits{10, 10};
    asio::io_context io; // after what its handlers reference: destroyed first
    std::thread runner;

    void makeIngest(bool responsive) {
        ingest = std::make_unique<listen::Ingest>(
            listen::IngestOptions{responsive, {}, "00000000-0000-4000-8000-000000000001"}, clock,
            collected.publisher());
    }
    void run() {
        runner = std::thread([this] { io.run(); });
    }
    void TearDown() override {
        io.stop();
        if (runner.joinable()) {
            runner.join();
        }
    }
};

int udpSocket(timeval timeout = {2, 0}) {
    int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    return fd;
}

sockaddr_in loopback(std::uint16_t port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

} // namespace

TEST_F(Fixture, UdpRecordsDatagramWithBothAddressesAndReplies) {
    makeIngest(true);
    auto udp = std::make_shared<listen::UdpListener>(
        io, asio::ip::udp::endpoint(asio::ip::make_address("0.0.0.0"), 0), *ingest, true);
    udp->start();
    run();
    int fd = udpSocket();
    auto to = loopback(udp->localEndpoint().port());
    ASSERT_GT(::sendto(fd, kOptions.data(), kOptions.size(), 0, reinterpret_cast<sockaddr*>(&to),
                       sizeof to),
              0);
    char buf[4096];
    auto n = ::recv(fd, buf, sizeof buf, 0);
    ASSERT_GT(n, 0);
    std::string reply(buf, static_cast<std::size_t>(n));
    EXPECT_EQ(reply.rfind("SIP/2.0 200 OK\r\n", 0), 0u) << reply;
    ASSERT_TRUE(collected.waitFor(1));
    const auto events = collected.snapshot();
    const auto& e = *events[0];
    EXPECT_EQ(e.transport_type, "UDP");
    EXPECT_EQ(e.source_ip, "127.0.0.1");
    EXPECT_EQ(e.destination_ip, "127.0.0.1"); // from IP_PKTINFO, not the 0.0.0.0 bind
    EXPECT_EQ(e.destination_port, udp->localEndpoint().port());
    EXPECT_EQ(e.sip_method, "OPTIONS");
    EXPECT_EQ(e.sip_user_agent, "friendly-scanner");
    EXPECT_EQ(e.collected_method, "responsive");
    sockaddr_in me{};
    socklen_t len = sizeof me;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&me), &len);
    EXPECT_EQ(e.source_port, ntohs(me.sin_port));
    ::close(fd);
}

TEST_F(Fixture, UdpEmptyDatagramIsCountedNotRecorded) {
    makeIngest(true);
    auto udp = std::make_shared<listen::UdpListener>(
        io, asio::ip::udp::endpoint(asio::ip::make_address("127.0.0.1"), 0), *ingest, true);
    udp->start();
    run();
    int fd = udpSocket({0, 300000});
    auto to = loopback(udp->localEndpoint().port());
    ::sendto(fd, "", 0, 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
    ::sendto(fd, kOptions.data(), kOptions.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
    ASSERT_TRUE(collected.waitFor(1));
    EXPECT_EQ(collected.snapshot().size(), 1u);
    EXPECT_EQ(ingest->counters().by_transport[0].empty.load(), 1u);
    ::close(fd);
}

TEST_F(Fixture, UdpDrainAndCloseReadsWhatIsQueued) {
    makeIngest(false);
    auto udp = std::make_shared<listen::UdpListener>(
        io, asio::ip::udp::endpoint(asio::ip::make_address("127.0.0.1"), 0), *ingest, false);
    // Not started: datagrams wait in the kernel until the final drain.
    int fd = udpSocket();
    auto to = loopback(udp->localEndpoint().port());
    for (int i = 0; i < 100; ++i) {
        ::sendto(fd, kOptions.data(), kOptions.size(), 0, reinterpret_cast<sockaddr*>(&to),
                 sizeof to);
    }
    udp->drainAndClose();
    EXPECT_EQ(collected.snapshot().size(), 100u);
    ::close(fd);
}

TEST_F(Fixture, PortInUseIsAClearError) {
    makeIngest(false);
    auto first = std::make_shared<listen::UdpListener>(
        io, asio::ip::udp::endpoint(asio::ip::make_address("127.0.0.1"), 0), *ingest, false);
    try {
        listen::UdpListener second(io, first->localEndpoint(), *ingest, false);
        FAIL() << "expected ListenError";
    } catch (const listen::ListenError& e) {
        EXPECT_NE(std::string(e.what()).find("UDP 127.0.0.1:"), std::string::npos) << e.what();
    }
}

TEST_F(Fixture, TcpFramesBackToBackMessagesAndReplies) {
    makeIngest(true);
    auto tcp = std::make_shared<listen::TcpListener>(
        io, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0), *ingest,
        listen::TcpOptions{.responsive = true}, limits, nullptr);
    tcp->start();
    run();
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    timeval tv{2, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    auto to = loopback(tcp->localEndpoint().port());
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to), 0);
    std::string two = kOptions + kOptions;
    ASSERT_EQ(::send(fd, two.data(), two.size(), 0), static_cast<ssize_t>(two.size()));
    ASSERT_TRUE(collected.waitFor(2));
    std::string replies;
    char buf[8192];
    while (replies.find("200 OK", replies.find("200 OK") + 1) == std::string::npos) {
        auto n = ::recv(fd, buf, sizeof buf, 0);
        ASSERT_GT(n, 0) << replies;
        replies.append(buf, static_cast<std::size_t>(n));
    }
    EXPECT_EQ(collected.snapshot()[1]->transport_type, "TCP");
    ::close(fd);
}

TEST_F(Fixture, TcpGarbageIsRecordedAsMalformedAtClose) {
    makeIngest(false);
    auto tcp = std::make_shared<listen::TcpListener>(
        io, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0), *ingest,
        listen::TcpOptions{}, limits, nullptr);
    tcp->start();
    run();
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    auto to = loopback(tcp->localEndpoint().port());
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to), 0);
    ::send(fd, "\x16\x03\x01 not sip", 12, 0);
    ::close(fd);
    ASSERT_TRUE(collected.waitFor(1));
    EXPECT_EQ(collected.snapshot()[0]->sip_method, "MALFORMED");
    for (int i = 0; i < 100 && limits.open() != 0; ++i) {
        std::this_thread::sleep_for(10ms);
    }
    EXPECT_EQ(limits.open(), 0u);
}

TEST(ConnectionLimits, PerIpAndTotalCaps) {
    listen::ConnectionLimits l(3, 2);
    EXPECT_TRUE(l.tryAcquire("a"));
    EXPECT_TRUE(l.tryAcquire("a"));
    EXPECT_FALSE(l.tryAcquire("a"));
    EXPECT_TRUE(l.tryAcquire("b"));
    EXPECT_FALSE(l.tryAcquire("c")); // total
    l.release("a");
    EXPECT_TRUE(l.tryAcquire("c"));
    EXPECT_EQ(l.open(), 3u);
}

TEST_F(Fixture, UdpDrainIsBoundedInDatagramsAndByAbort) {
    makeIngest(false);
    auto udp = std::make_shared<listen::UdpListener>(
        io, asio::ip::udp::endpoint(asio::ip::make_address("127.0.0.1"), 0), *ingest, false);
    int fd = udpSocket();
    auto to = loopback(udp->localEndpoint().port());
    for (int i = 0; i < 200; ++i) {
        ::sendto(fd, kOptions.data(), kOptions.size(), 0, reinterpret_cast<sockaddr*>(&to),
                 sizeof to);
    }
    // Stops at the first batch boundary (32 datagrams) at or past the bound.
    std::size_t drained = udp->drainAndClose(40);
    EXPECT_GE(drained, 40u);
    EXPECT_LT(drained, 200u);
    EXPECT_EQ(collected.snapshot().size(), drained);
    ::close(fd);

    auto second = std::make_shared<listen::UdpListener>(
        io, asio::ip::udp::endpoint(asio::ip::make_address("127.0.0.1"), 0), *ingest, false);
    fd = udpSocket();
    to = loopback(second->localEndpoint().port());
    for (int i = 0; i < 10; ++i) {
        ::sendto(fd, kOptions.data(), kOptions.size(), 0, reinterpret_cast<sockaddr*>(&to),
                 sizeof to);
    }
    std::atomic<bool> abort{true};
    EXPECT_EQ(second->drainAndClose(100000, std::chrono::milliseconds(2000), &abort), 0u);
    ::close(fd);
}

TEST_F(Fixture, UdpRepliesArePerDestinationRateLimitedButAllRecorded) {
    ingest = std::make_unique<listen::Ingest>(
        listen::IngestOptions{.responsive = true,
                              .responder = {},
                              .node_id = "00000000-0000-4000-8000-000000000001",
                              .reply_rate = 3},
        clock, collected.publisher());
    auto udp = std::make_shared<listen::UdpListener>(
        io, asio::ip::udp::endpoint(asio::ip::make_address("127.0.0.1"), 0), *ingest, true);
    udp->start();
    run();
    int fd = udpSocket({0, 300000});
    auto to = loopback(udp->localEndpoint().port());
    for (int i = 0; i < 20; ++i) {
        ::sendto(fd, kOptions.data(), kOptions.size(), 0, reinterpret_cast<sockaddr*>(&to),
                 sizeof to);
    }
    ASSERT_TRUE(collected.waitFor(20));
    int replies = 0;
    char buf[4096];
    while (::recv(fd, buf, sizeof buf, 0) > 0) {
        ++replies;
    }
    // A burst of 3, plus at most 3/s refill while the 20 arrive.
    EXPECT_GE(replies, 3);
    EXPECT_LE(replies, 6);
    const auto& c = ingest->counters().by_transport[0];
    EXPECT_EQ(c.replies.load() + c.replies_suppressed.load(), 20u);
    EXPECT_EQ(c.replies.load(), static_cast<std::uint64_t>(replies));
    ::close(fd);
}
