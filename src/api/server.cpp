#include "api/server.hpp"

#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <optional>
#include <pthread.h>
#include <spdlog/spdlog.h>

#include "core/version.hpp"

namespace sp::api {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr auto kIdleTimeout = std::chrono::seconds(30);
constexpr std::size_t kMaxHeader = 8UL * 1024;
constexpr std::size_t kMaxBody = 16UL * 1024;

template <typename Message> void commonHeaders(Message& m, const Response& r) {
    if (!r.content_type.empty()) {
        m.set(http::field::content_type, r.content_type);
    }
    m.set(http::field::access_control_allow_origin, "*");
    m.set("X-Powered-By", "SentryPeer");
    m.set("X-SentryPeer-Version", core::kVersion);
    m.set(http::field::server, std::string("sentrypeer/") + core::kVersion);
    for (const auto& [k, v] : r.headers) {
        m.set(k, v);
    }
}

Request toRequest(const http::request<http::string_body>& req, bool& ok) {
    Request r;
    r.method = std::string(req.method_string());
    auto target = req.target();
    ok = parseTarget(std::string_view(target.data(), target.size()), r.path, r.query);
    r.content_type = std::string(req[http::field::content_type]);
    r.authorization = std::string(req[http::field::authorization]);
    return r;
}

// One HTTP connection: read a request, answer it (streamed when the route streams), and
// loop while keep-alive. Callback style rather than coroutines: Boost 1.74's coroutines do
// not build with clang 14 + libstdc++ (fuzzing, clang-tidy). All handlers run on the
// connection's worker thread (its own io_context), so members need no lock.
class Session : public std::enable_shared_from_this<Session> {
public:
    Session(tcp::socket socket, Routes& routes, asio::thread_pool& slow)
        : stream_(std::move(socket)), routes_(routes), slow_(slow) {}

    void start() { read(); }

private:
    void read() {
        parser_.emplace();
        parser_->header_limit(kMaxHeader);
        parser_->body_limit(kMaxBody);
        stream_.expires_after(kIdleTimeout);
        http::async_read(
            stream_, buffer_, *parser_,
            [self = shared_from_this()](beast::error_code ec, std::size_t) { self->onRead(ec); });
    }

    void onRead(beast::error_code ec) {
        if (ec) {
            close(); // closed, timed out or unparsable: nothing sensible to answer
            return;
        }
        const auto& req = parser_->get();
        keep_alive_ = req.keep_alive();
        head_ = req.method() == http::verb::head;
        version_ = req.version();
        bool target_ok = true;
        Request request = toRequest(req, target_ok);
        if (!target_ok) {
            Response bad;
            bad.status = 400;
            bad.body = R"({"error": "The request data was invalid"})";
            respond(request, std::move(bad));
        } else if (Routes::isSlow(request)) {
            // SQL runs on the slow-route thread, the answer comes back to the worker.
            asio::post(slow_, [self = shared_from_this(), request = std::move(request)]() mutable {
                Response res = self->routes_.handle(request);
                asio::post(self->stream_.get_executor(),
                           [self, request = std::move(request), res = std::move(res)]() mutable {
                               self->respond(request, std::move(res));
                           });
            });
        } else {
            respond(request, routes_.handle(request));
        }
    }

    void respond(const Request& request, Response res) {
        routes_.count(Routes::routeLabel(request.path), res.status);
        stream_.expires_after(kIdleTimeout);
        if (!res.stream) {
            auto out = std::make_shared<http::response<http::string_body>>(
                static_cast<http::status>(res.status), version_);
            commonHeaders(*out, res);
            out->keep_alive(keep_alive_);
            out->body() = std::move(res.body);
            out->prepare_payload();
            if (head_) {
                auto h =
                    std::make_shared<http::response<http::empty_body>>(out->result(), version_);
                h->base() = out->base();
                h->content_length(out->body().size());
                http::async_write(
                    stream_, *h, [self = shared_from_this(), h](beast::error_code ec, std::size_t) {
                        self->afterResponse(ec);
                    });
            } else {
                http::async_write(
                    stream_, *out,
                    [self = shared_from_this(), out](beast::error_code ec, std::size_t) {
                        self->afterResponse(ec);
                    });
            }
            return;
        }
        // Streamed: header, then one chunk per call of the body stream, then the last chunk.
        header_.emplace(static_cast<http::status>(res.status), version_);
        commonHeaders(*header_, res);
        header_->keep_alive(keep_alive_);
        if (!head_) {
            header_->chunked(true);
        }
        body_ = std::move(res.stream);
        serializer_.emplace(*header_);
        http::async_write_header(stream_, *serializer_,
                                 [self = shared_from_this()](beast::error_code ec, std::size_t) {
                                     if (ec || self->head_) {
                                         self->afterResponse(ec);
                                     } else {
                                         self->writeChunk();
                                     }
                                 });
    }

    void writeChunk() {
        chunk_.clear();
        bool more = body_(chunk_);
        auto next = [self = shared_from_this(), more](beast::error_code ec, std::size_t) {
            if (ec) {
                self->afterResponse(ec);
            } else if (more) {
                self->writeChunk();
            } else {
                asio::async_write(self->stream_, http::make_chunk_last(),
                                  [self](beast::error_code last_ec, std::size_t) {
                                      self->afterResponse(last_ec);
                                  });
            }
        };
        if (chunk_.empty()) {
            asio::post(stream_.get_executor(), [next] { next({}, 0); });
        } else {
            asio::async_write(stream_, http::make_chunk(asio::buffer(chunk_)), std::move(next));
        }
    }

    void afterResponse(beast::error_code ec) {
        body_ = nullptr;
        if (ec || !keep_alive_) {
            close();
            return;
        }
        read();
    }

    void close() {
        beast::error_code ignored;
        stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
        stream_.socket().close(ignored);
    }

    beast::tcp_stream stream_;
    Routes& routes_;
    asio::thread_pool& slow_;
    beast::flat_buffer buffer_;
    std::optional<http::request_parser<http::string_body>> parser_;
    std::optional<http::response<http::empty_body>> header_;
    std::optional<http::response_serializer<http::empty_body>> serializer_;
    BodyStream body_;
    std::string chunk_;
    unsigned version_ = 11;
    bool keep_alive_ = false;
    bool head_ = false;
};

} // namespace

Server::Server(asio::io_context& io, const tcp::endpoint& ep, Routes& routes, unsigned workers)
    : acceptor_(io), retry_(io), routes_(routes) {
    for (unsigned i = 0; i < std::max(1u, workers); ++i) {
        workers_.push_back(std::make_unique<asio::io_context>(1));
        guards_.push_back(asio::make_work_guard(*workers_.back()));
    }
    boost::system::error_code ec;
    acceptor_.open(ep.protocol(), ec);
    if (!ec) {
        acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
    }
    if (!ec && ep.address().is_v6()) {
        acceptor_.set_option(asio::ip::v6_only(true), ec);
    }
    if (!ec) {
        acceptor_.bind(ep, ec);
    }
    if (!ec) {
        acceptor_.listen(1024, ec);
    }
    if (ec) {
        std::string host = ep.address().to_string();
        throw std::runtime_error("cannot listen on API " +
                                 (ep.address().is_v6() ? "[" + host + "]" : host) + ":" +
                                 std::to_string(ep.port()) + ": " + ec.message());
    }
    local_ = acceptor_.local_endpoint();
}

Server::~Server() {
    stop();
}

void Server::start() {
    for (auto& w : workers_) {
        threads_.emplace_back([ctx = w.get()] {
            pthread_setname_np(pthread_self(), "sp-api");
            ctx->run();
        });
    }
    accept();
}

void Server::stop() {
    guards_.clear();
    for (auto& w : workers_) {
        w->stop();
    }
    for (auto& t : threads_) {
        if (t.joinable()) {
            t.join();
        }
    }
    slow_.stop();
    slow_.join();
}

void Server::accept() {
    acceptor_.async_accept(
        *workers_[next_worker_++ % workers_.size()],
        [self = shared_from_this()](boost::system::error_code ec, tcp::socket socket) {
            if (ec == asio::error::operation_aborted) {
                return;
            }
            if (ec) {
                // Out of file descriptors, typically: back off instead of spinning.
                self->retry_.expires_after(std::chrono::milliseconds(100));
                self->retry_.async_wait([self](boost::system::error_code wait_ec) {
                    if (!wait_ec) {
                        self->accept();
                    }
                });
                return;
            }
            socket.set_option(tcp::no_delay(true), ec);
            std::make_shared<Session>(std::move(socket), self->routes_, self->slow_)->start();
            self->accept();
        });
}

} // namespace sp::api
