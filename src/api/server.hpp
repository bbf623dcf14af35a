#pragma once
// The HTTP/1.1 server (Boost.Beast) in front of Routes: keep-alive, HEAD, chunked streaming
// of large lists, SentryPeer's headers on every response, request size and time limits.
// Runs on the shared io_context (threads "sp-io"); /stats runs on its own thread so SQL
// never stalls an io thread.

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <memory>

#include "api/routes.hpp"

namespace sp::api {

class Server : public std::enable_shared_from_this<Server> {
public:
    // Binds and listens now; throws listen-style std::runtime_error naming the address.
    Server(boost::asio::io_context& io, const boost::asio::ip::tcp::endpoint& ep, Routes& routes);
    ~Server();

    void start();
    // Stops the slow-route thread (after the io threads have stopped).
    void stop();
    boost::asio::ip::tcp::endpoint localEndpoint() const { return local_; }

private:
    void accept();

    boost::asio::io_context& io_;
    boost::asio::ip::tcp::acceptor acceptor_;
    boost::asio::steady_timer retry_;
    boost::asio::ip::tcp::endpoint local_;
    Routes& routes_;
    boost::asio::thread_pool slow_{1};
};

} // namespace sp::api
