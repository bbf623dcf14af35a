#pragma once
// The HTTP/1.1 server (Boost.Beast) in front of Routes: keep-alive, HEAD, chunked streaming
// of large lists, SentryPeer's headers on every response, request size and time limits.
// Connections are spread over worker threads ("sp-api"), each running its own io_context,
// so a connection's handlers always run on one thread (no strand, no thread hopping:
// that is what one-connection latency is made of). /stats runs on its own thread so SQL
// never stalls a worker.

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <memory>
#include <thread>
#include <vector>

#include "api/limits.hpp"
#include "api/routes.hpp"

namespace sp::api {

struct ServerOptions {
    unsigned workers = 1;               // worker threads ("sp-api"), at least 1
    std::size_t max_connections = 1024; // open connections at most; more are closed at once
    std::size_t max_per_ip = 64;        // open connections per client IP at most
    // Request bodies over Routes::kMaxRequestBody (up to 1 MiB: the batch checks) read or
    // handled at once; more get 503 + Retry-After. 8: at most 8 MiB of such bodies.
    std::size_t max_large_bodies = 8;
};

class Server : public std::enable_shared_from_this<Server> {
public:
    // Binds and listens now; throws std::runtime_error naming the address. The acceptor runs
    // on `io`; the workers get their own io_context and thread at start(). [::] listens
    // dual stack (IPv4 clients too).
    Server(boost::asio::io_context& io, const boost::asio::ip::tcp::endpoint& ep, Routes& routes,
           const ServerOptions& options);
    ~Server();

    void start();
    // Stops the workers and the slow-route thread; open connections are dropped.
    void stop();
    boost::asio::ip::tcp::endpoint localEndpoint() const { return local_; }
    // Any thread: the connection budget's gauge and refusals.
    void collect(core::MetricsWriter& w) const {
        budget_.collect(w);
        bodies_.collect(w);
    }

private:
    void accept();

    using WorkGuard = boost::asio::executor_work_guard<boost::asio::io_context::executor_type>;

    // Before workers_: sessions (destroyed with their worker's io_context) refer to these.
    ConnectionBudget budget_;
    SlotBudget bodies_;          // large request bodies in flight
    std::string common_headers_; // after Content-Type in every response
    std::vector<std::unique_ptr<boost::asio::io_context>> workers_;
    std::vector<WorkGuard> guards_;
    std::vector<std::thread> threads_;
    std::size_t next_worker_ = 0; // acceptor's handler only
    boost::asio::ip::tcp::acceptor acceptor_;
    boost::asio::steady_timer retry_;
    boost::asio::ip::tcp::endpoint local_;
    Routes& routes_;
    boost::asio::thread_pool slow_{1};
};

} // namespace sp::api
