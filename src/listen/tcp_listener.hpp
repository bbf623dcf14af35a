#pragma once
// SIP over TCP and TLS: an acceptor per listen address (backlog 4096), one connection
// object per client whose handlers run on its own strand. Messages are framed by
// Content-Length (sip::Framer). Caps: message size (64 KiB), idle time, connections in
// total and per source IP (over a cap the connection is accepted and closed at once, and
// counted). Bytes that never formed a message are recorded as MALFORMED when the
// connection ends.

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/connection_limits.hpp"
#include "listen/ingest.hpp"

namespace sp::listen {

struct TcpOptions {
    bool responsive = false;
    std::size_t max_message = 64UL * 1024;
    std::size_t max_connections = 10000;
    std::size_t max_per_ip = 100;
    std::chrono::seconds idle_timeout{30};
};

// Open SIP TCP/TLS connections, in total and per source IP (--tcp-max-connections,
// --tcp-max-per-ip). Thread-safe.
class ConnectionLimits : public core::ConnectionLimits {
public:
    using core::ConnectionLimits::ConnectionLimits;
    // Writes the tcp_connections gauge. Any thread.
    void collect(core::MetricsWriter& w) const;
};

class TcpListener : public std::enable_shared_from_this<TcpListener> {
public:
    // Binds and listens now; throws ListenError naming the address. With tls set, every
    // connection starts with a TLS handshake (TLS >= 1.2, context from listen/tls.hpp).
    // Accepted connections are spread round-robin over connection_io (each context run by
    // one thread: a connection's handlers then never hop threads); empty means `io`.
    TcpListener(boost::asio::io_context& io, const boost::asio::ip::tcp::endpoint& ep,
                Ingest& ingest, const TcpOptions& options, ConnectionLimits& limits,
                boost::asio::ssl::context* tls,
                std::vector<boost::asio::io_context*> connection_io = {});

    void start();
    boost::asio::ip::tcp::endpoint localEndpoint() const { return local_; }

private:
    void accept();

    boost::asio::io_context& nextConnectionContext();

    boost::asio::io_context& io_;
    std::vector<boost::asio::io_context*> connection_io_;
    std::size_t next_connection_io_ = 0; // only touched by the acceptor's handler
    boost::asio::ip::tcp::acceptor acceptor_;
    boost::asio::steady_timer retry_;
    boost::asio::ip::tcp::endpoint local_;
    Ingest& ingest_;
    TcpOptions options_;
    ConnectionLimits& limits_;
    boost::asio::ssl::context* tls_;
    core::TokenBucket error_log_{1.0 / 10, 3};
};

} // namespace sp::listen
