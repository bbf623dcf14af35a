#pragma once
// SIP over UDP: one socket per listen address, drained in batches with recvmmsg(2) when
// readable; the destination address of every datagram comes from IP_PKTINFO /
// IPV6_RECVPKTINFO, and replies leave from that same address. Datagrams up to 65,507
// bytes are read whole. All handlers of one listener run one at a time (one pending wait).

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/udp.hpp>
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
    // every datagram that reached us before SIGTERM is recorded), then closes.
    void drainAndClose();

    boost::asio::ip::udp::endpoint localEndpoint() const { return local_; }

private:
    struct Batch;
    void arm();
    // Receives and handles up to max_rounds batches. Returns false when the socket is
    // empty (EAGAIN) or broken.
    bool receive(int max_rounds);
    void sendReply(const std::string& reply, std::size_t slot);

    boost::asio::ip::udp::socket socket_;
    boost::asio::ip::udp::endpoint local_;
    Ingest& ingest_;
    bool responsive_;
    std::unique_ptr<Batch> batch_;
    core::TokenBucket error_log_{1.0 / 10, 3};
};

} // namespace sp::listen
