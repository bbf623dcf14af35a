#pragma once
// SIP over UDP: one socket per listen address, drained in batches with recvmmsg(2) when
// readable; the destination address of every datagram comes from IP_PKTINFO /
// IPV6_RECVPKTINFO, and replies leave from that same address. Datagrams up to 65,507
// bytes are read whole. All handlers of one listener run one at a time (one pending wait).
//
// Interrupt moderation: after a wake-up that found datagrams, the socket is read again
// after kPollInterval (1 ms, a timer) rather than on the next datagram, so a steady stream is
// taken in batches instead of one thread wake-up per datagram (at 10,000/s, 10,000 wake-ups
// a second). When a poll finds nothing the listener goes back to waiting for readability.
// A datagram waits at most kPollInterval longer: nothing next to SIP's 500 ms T1.

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <memory>
#include <vector>

#include "listen/ingest.hpp"

namespace sp::listen {

class UdpListener : public std::enable_shared_from_this<UdpListener> {
public:
    // Binds now; throws ListenError naming the address when it cannot.
    UdpListener(boost::asio::io_context& io, const boost::asio::ip::udp::endpoint& ep,
                Ingest& ingest, bool responsive);
    ~UdpListener();

    void start();
    // After the io threads have stopped: reads what is still queued in the kernel (so
    // every datagram that reached us before SIGTERM is recorded), then closes. Bounded, so a
    // flood that keeps the socket full cannot hold shutdown: at most max_datagrams and
    // max_time (what is left is not read), and it returns early once *abort becomes true
    // (checked between batches of 32). Returns how many datagrams it read.
    std::size_t drainAndClose(std::size_t max_datagrams = kDrainMaxDatagrams,
                              std::chrono::milliseconds max_time = kDrainMaxTime,
                              const std::atomic<bool>* abort = nullptr);
    // The default drain bounds: a 16 MiB receive buffer holds at most ~30,000 small
    // datagrams; at ~100,000 datagrams/s that is well under the time bound.
    static constexpr std::size_t kDrainMaxDatagrams = 100000;
    static constexpr std::chrono::milliseconds kDrainMaxTime{2000};

    boost::asio::ip::udp::endpoint localEndpoint() const { return local_; }

    static constexpr std::chrono::microseconds kPollInterval{1000};

private:
    struct Batch;
    void arm();
    void poll();
    // Receives and handles up to max_rounds batches; returns how many datagrams it read
    // (fewer than max_rounds full batches: the socket is empty, or broken).
    std::size_t receive(int max_rounds);
    void sendReply(const std::string& reply, std::size_t slot);

    boost::asio::ip::udp::socket socket_;
    boost::asio::steady_timer poll_timer_;
    boost::asio::ip::udp::endpoint local_;
    Ingest& ingest_;
    bool responsive_;
    std::unique_ptr<Batch> batch_;
    core::TokenBucket error_log_{1.0 / 10, 3};
};

} // namespace sp::listen
