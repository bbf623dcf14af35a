#include "api/server.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <spdlog/spdlog.h>

#include "core/version.hpp"

namespace sp::api {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr auto kIdleTimeout = std::chrono::seconds(30);
constexpr std::size_t kMaxHeader = 8 * 1024;
constexpr std::size_t kMaxBody = 16 * 1024;

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

asio::awaitable<void> session(beast::tcp_stream stream, Routes& routes, asio::thread_pool& slow) {
    beast::flat_buffer buffer;
    beast::error_code ec;
    for (;;) {
        http::request_parser<http::string_body> parser;
        parser.header_limit(kMaxHeader);
        parser.body_limit(kMaxBody);
        stream.expires_after(kIdleTimeout);
        co_await http::async_read(stream, buffer, parser,
                                  asio::redirect_error(asio::use_awaitable, ec));
        if (ec) {
            break; // closed, timed out or unparsable: nothing sensible to answer
        }
        auto& req = parser.get();
        bool target_ok = true;
        Request request = toRequest(req, target_ok);
        Response res;
        if (!target_ok) {
            res.status = 400;
            res.body = R"({"error": "The request data was invalid"})";
        } else if (Routes::isSlow(request)) {
            auto home = co_await asio::this_coro::executor;
            co_await asio::post(slow, asio::use_awaitable);
            res = routes.handle(request);
            co_await asio::post(home, asio::use_awaitable);
        } else {
            res = routes.handle(request);
        }
        routes.count(Routes::routeLabel(request.path), res.status);
        bool keep_alive = req.keep_alive();
        bool head = req.method() == http::verb::head;

        stream.expires_after(kIdleTimeout);
        if (!res.stream) {
            http::response<http::string_body> out{static_cast<http::status>(res.status),
                                                  req.version()};
            commonHeaders(out, res);
            out.keep_alive(keep_alive);
            out.body() = std::move(res.body);
            out.prepare_payload();
            if (head) {
                http::response<http::empty_body> h{out.result(), out.version()};
                h.base() = out.base();
                h.content_length(out.body().size());
                co_await http::async_write(stream, h,
                                           asio::redirect_error(asio::use_awaitable, ec));
            } else {
                co_await http::async_write(stream, out,
                                           asio::redirect_error(asio::use_awaitable, ec));
            }
        } else {
            http::response<http::empty_body> out{static_cast<http::status>(res.status),
                                                 req.version()};
            commonHeaders(out, res);
            out.keep_alive(keep_alive);
            if (!head) {
                out.chunked(true);
            }
            http::response_serializer<http::empty_body> sr{out};
            co_await http::async_write_header(stream, sr,
                                              asio::redirect_error(asio::use_awaitable, ec));
            std::string chunk;
            bool more = !head;
            while (!ec && more) {
                chunk.clear();
                more = res.stream(chunk);
                if (!chunk.empty()) {
                    co_await asio::async_write(stream, http::make_chunk(asio::buffer(chunk)),
                                               asio::redirect_error(asio::use_awaitable, ec));
                }
            }
            if (!ec && !head) {
                co_await asio::async_write(stream, http::make_chunk_last(),
                                           asio::redirect_error(asio::use_awaitable, ec));
            }
        }
        if (ec || !keep_alive) {
            break;
        }
    }
    stream.socket().shutdown(tcp::socket::shutdown_send, ec);
}

} // namespace

Server::Server(asio::io_context& io, const tcp::endpoint& ep, Routes& routes)
    : io_(io), acceptor_(io), retry_(io), routes_(routes) {
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
    accept();
}

void Server::stop() {
    slow_.stop();
    slow_.join();
}

void Server::accept() {
    acceptor_.async_accept(asio::make_strand(io_), [self = shared_from_this()](
                                                       boost::system::error_code ec,
                                                       tcp::socket socket) {
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
        {
            socket.set_option(tcp::no_delay(true), ec);
            auto executor = socket.get_executor();
            asio::co_spawn(
                executor, session(beast::tcp_stream(std::move(socket)), self->routes_, self->slow_),
                asio::detached);
        }
        self->accept();
    });
}

} // namespace sp::api
