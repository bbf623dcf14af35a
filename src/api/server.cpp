#include "api/server.hpp"

#include <array>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <future>
#include <optional>
#include <pthread.h>
#include <span>
#include <spdlog/spdlog.h>

#include "core/text.hpp"
#include "core/version.hpp"

namespace sp::api {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr auto kIdleTimeout = std::chrono::seconds(30);
constexpr std::size_t kMaxHeader = 8UL * 1024;
// The largest body any route accepts (the batch checks'): the limit while the header is
// read; Routes::bodyLimit then sets the request's own.
constexpr std::size_t kMaxAnyBody = 1024UL * 1024;
// After a 413: what is read and dropped before the connection is closed, at most.
constexpr std::size_t kMaxDrain = 8UL * 1024 * 1024;
constexpr auto kDrainTime = std::chrono::seconds(2);

// Headers every response carries, after Content-Type, in this order (SentryPeer's, less
// its `Access-Control-Allow-Origin: *`: only with --api-cors-origin).
std::string commonHeaders(const std::string& cors_origin) {
    std::string headers;
    if (!cors_origin.empty()) {
        headers = "Access-Control-Allow-Origin: " + cors_origin + "\r\n";
    }
    return headers + "X-Powered-By: SentryPeer\r\nX-SentryPeer-Version: " + core::kVersion +
           "\r\nServer: sentrypeer/" + core::kVersion + "\r\n";
}

// The status line and header block of a response, written straight into `out` (the bytes
// Beast's serializer wrote for the same message: status line with the standard reason,
// Content-Type, the common headers, the route's own, Connection when it differs from the
// version's default, then Content-Length or Transfer-Encoding).
void appendHead(std::string& out, unsigned version, const Response& r, bool keep_alive,
                const std::string& common_headers) {
    out.append("HTTP/");
    out.push_back(static_cast<char>('0' + version / 10 % 10));
    out.push_back('.');
    out.push_back(static_cast<char>('0' + version % 10));
    out.push_back(' ');
    core::appendDecimal(out, static_cast<std::uint64_t>(r.status));
    out.push_back(' ');
    auto reason = http::obsolete_reason(static_cast<http::status>(r.status));
    out.append(reason.data(), reason.size());
    out.append("\r\n");
    if (!r.content_type.empty()) {
        out.append("Content-Type: ").append(r.content_type).append("\r\n");
    }
    out.append(common_headers);
    for (const auto& [k, v] : r.headers) {
        out.append(k).append(": ").append(v).append("\r\n");
    }
    if (version >= 11 && !keep_alive) {
        out.append("Connection: close\r\n");
    } else if (version < 11 && keep_alive) {
        out.append("Connection: keep-alive\r\n");
    }
}

void toRequest(const http::request<http::string_body>& req, Request& r) {
    auto method = req.method_string();
    r.method.assign(method.data(), method.size());
    auto target = req.target();
    r.query.clear();
    r.malformed = !parseTarget(std::string_view(target.data(), target.size()), r.path, r.query);
    auto field = [&req](http::field f, std::string& out) {
        auto it = req.find(f);
        if (it == req.end()) {
            out.clear();
        } else {
            out.assign(it->value().data(), it->value().size());
        }
    };
    field(http::field::content_type, r.content_type);
    field(http::field::authorization, r.authorization);
    if (auto it = req.find("X-Api-Key"); it == req.end()) {
        r.api_key.clear();
    } else {
        r.api_key.assign(it->value().data(), it->value().size());
    }
    r.body.clear(); // the body is moved over by the session (Session::onRead)
}

// One HTTP connection: read a request, answer it (streamed when the route streams), and
// loop while keep-alive. Callback style rather than coroutines: Boost 1.74's coroutines do
// not build with clang 14 + libstdc++ (fuzzing, clang-tidy). All handlers run on the
// connection's worker thread (its own io_context), so members need no lock.
//
// Responses are written by hand into one buffer reused for the connection's life (one
// write per response, no per-response objects), on a plain socket: the idle timeout is a
// deadline moved forward per request and checked by one timer, rather than a timer armed
// and cancelled around every operation.
class Session : public std::enable_shared_from_this<Session> {
public:
    // The socket and timer have the worker's concrete executor type, not the type-erased
    // any_io_executor: no executor copies through a polymorphic wrapper per operation.
    using Executor = asio::io_context::executor_type;
    using Socket = asio::basic_stream_socket<tcp, Executor>;

    Session(asio::io_context& worker, Routes& routes, asio::thread_pool& slow,
            const std::string& common_headers, ConnectionBudget& budget, SlotBudget& bodies)
        : socket_(worker.get_executor()), timer_(worker.get_executor()), routes_(routes),
          slow_(slow), common_headers_(common_headers), budget_(budget), bodies_(bodies) {}
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;
    ~Session() {
        if (!client_.empty()) {
            budget_.release(client_);
        }
    }

    Socket& socket() { return socket_; }
    // Acceptor's thread, before start(): the connection's place in the budget, given back
    // when the session ends.
    void holdBudget(std::string client) { client_ = std::move(client); }

    void start() {
        touch();
        armTimer();
        read();
    }

private:
    using Clock = std::chrono::steady_clock;

    void touch() { deadline_ = Clock::now() + kIdleTimeout; }

    void armTimer() {
        timer_.expires_at(deadline_);
        timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
            if (ec || !self->socket_.is_open()) {
                return;
            }
            if (Clock::now() >= self->deadline_) {
                self->close(); // idle: the pending read or write fails and ends the session
            } else {
                self->armTimer();
            }
        });
    }

    void read() {
        parser_.emplace();
        parser_->header_limit(kMaxHeader);
        parser_->body_limit(kMaxAnyBody);
        touch();
        http::async_read_header(
            socket_, buffer_, *parser_,
            [self = shared_from_this()](beast::error_code ec, std::size_t) { self->onHeader(ec); });
    }

    // The header is in: the body limit of this request line, then the body.
    void onHeader(beast::error_code ec) {
        if (ec == http::error::body_limit) {
            tooLarge(kMaxAnyBody);
            return;
        }
        if (ec) {
            close();
            return;
        }
        const auto& req = parser_->get();
        auto target = req.target();
        std::string_view path(target.data(), target.size());
        path = path.substr(0, path.find('?'));
        auto method = req.method_string();
        std::size_t limit = Routes::bodyLimit(std::string_view(method.data(), method.size()), path);
        if (auto length = parser_->content_length(); length && *length > limit) {
            tooLarge(limit);
            return;
        }
        // A body over the small routes' cap may take up to its route's limit (1 MiB): only
        // ServerOptions::max_large_bodies of those are read at once.
        if (limit > Routes::kMaxRequestBody) {
            body_slot_ = bodies_.tryAcquire();
            if (!body_slot_) {
                refuse(503, "{\"error\": \"Too many large requests at once; retry\"}", true);
                return;
            }
        }
        limit_ = limit;
        parser_->body_limit(limit);
        if (parser_->is_done()) {
            onRead({});
            return;
        }
        http::async_read(socket_, buffer_, *parser_,
                         [self = shared_from_this()](beast::error_code read_ec, std::size_t) {
                             self->onRead(read_ec);
                         });
    }

    // 413 for a body over `limit` (its length announced or read so far); the connection is
    // closed after it (the rest of the body is not read).
    void tooLarge(std::size_t limit) {
        refuse(413, "{\"error\": \"Request body over " + std::to_string(limit) + " bytes\"}",
               false);
    }

    // Answers `status` with `body` before reading the request's body, and closes.
    void refuse(int status, std::string body, bool retry_after) {
        const auto& req = parser_->get();
        keep_alive_ = false;
        draining_ = true;
        head_ = false;
        version_ = req.version() == 10 ? 10 : 11;
        auto target = req.target();
        std::string_view path(target.data(), target.size());
        routes_.countUnrouted(path.substr(0, path.find('?')), status);
        Response r;
        r.status = status;
        r.body = std::move(body);
        if (retry_after) {
            r.headers.emplace_back("Retry-After", "1");
        }
        respond(std::move(r));
    }

    void onRead(beast::error_code ec) {
        if (ec == http::error::body_limit) {
            tooLarge(limit_);
            return;
        }
        if (ec) {
            close(); // closed, timed out or unparsable: nothing sensible to answer
            return;
        }
        const auto& req = parser_->get();
        keep_alive_ = req.keep_alive();
        head_ = req.method() == http::verb::head;
        version_ = req.version();
        toRequest(req, request_);
        request_.body = std::move(parser_->get().body());
        parser_.reset(); // nothing of a large body stays with an idle keep-alive connection
        if (Routes::isSlow(request_)) {
            // SQL runs on the slow-route thread, the answer comes back to the worker.
            asio::post(slow_, [self = shared_from_this()]() mutable {
                Response res = self->routes_.handle(self->request_);
                asio::post(self->socket_.get_executor(), [self, res = std::move(res)]() mutable {
                    self->respond(std::move(res));
                });
            });
        } else {
            respond(routes_.handle(request_));
        }
    }

    void respond(Response res) {
        body_slot_.reset(); // the request is answered: its body is no longer needed
        std::string().swap(request_.body);
        touch();
        out_.clear();
        appendHead(out_, version_, res, keep_alive_, common_headers_);
        if (!res.stream) {
            // Content-Length, also for HEAD (the length of the body GET would get) and on
            // a 204 (0), as Beast's serializer wrote it.
            out_.append("Content-Length: ");
            core::appendDecimal(out_, res.body.size());
            out_.append("\r\n\r\n");
            if (!head_) {
                out_.append(res.body);
            }
            asio::async_write(socket_, asio::buffer(out_),
                              [self = shared_from_this()](beast::error_code ec, std::size_t) {
                                  self->afterResponse(ec);
                              });
            return;
        }
        // Streamed: header (with the first chunk), then one chunk per call of the body
        // stream, the last chunk after the final one. HEAD: the header alone, no length.
        if (!head_) {
            out_.append("Transfer-Encoding: chunked\r\n");
        }
        out_.append("\r\n");
        if (head_) {
            asio::async_write(socket_, asio::buffer(out_),
                              [self = shared_from_this()](beast::error_code ec, std::size_t) {
                                  self->afterResponse(ec);
                              });
            return;
        }
        body_ = std::move(res.stream);
        writeChunk();
    }

    // Writes out_ (when not empty: what precedes) then the next chunk of body_.
    void writeChunk() {
        chunk_.clear();
        bool more = body_(chunk_);
        chunk_head_.clear();
        if (!chunk_.empty()) {
            char hex[17];
            std::size_t n = chunk_.size();
            int len = 0;
            do {
                hex[16 - len++] = "0123456789abcdef"[n % 16];
                n /= 16;
            } while (n != 0);
            chunk_head_.assign(hex + 17 - len, static_cast<std::size_t>(len));
            chunk_head_.append("\r\n");
        }
        static constexpr std::string_view kCrlf = "\r\n";
        static constexpr std::string_view kLast = "0\r\n\r\n";
        std::size_t nbufs = 0;
        if (!out_.empty()) {
            bufs_[nbufs++] = asio::buffer(out_);
        }
        if (!chunk_.empty()) {
            bufs_[nbufs++] = asio::buffer(chunk_head_);
            bufs_[nbufs++] = asio::buffer(chunk_);
            bufs_[nbufs++] = asio::buffer(kCrlf.data(), kCrlf.size());
        }
        if (!more) {
            bufs_[nbufs++] = asio::buffer(kLast.data(), kLast.size());
        }
        auto next = [self = shared_from_this(), more](beast::error_code ec, std::size_t) {
            self->out_.clear();
            if (ec || !more) {
                self->chunk_ = std::string(); // a list's buffer is not kept for the next one
                self->afterResponse(ec);
            } else {
                self->writeChunk();
            }
        };
        if (nbufs == 0) {
            // An empty piece in the middle of the stream: ask for the next one later.
            asio::post(socket_.get_executor(), [next] { next({}, 0); });
            return;
        }
        asio::async_write(socket_, std::span<const asio::const_buffer>(bufs_.data(), nbufs),
                          std::move(next));
    }

    void afterResponse(beast::error_code ec) {
        body_ = nullptr;
        if (!ec && draining_) {
            lingeringClose();
            return;
        }
        if (ec || !keep_alive_) {
            close();
            return;
        }
        read();
    }

    // After a 413 the client may still be sending its body: closing with unread data would
    // reset the connection and could destroy the 413 before the client reads it. So the
    // send side is shut, and what arrives is read and dropped until the client closes, up
    // to kMaxDrain bytes or kDrainTime.
    void lingeringClose() {
        beast::error_code ignored;
        socket_.shutdown(tcp::socket::shutdown_send, ignored);
        deadline_ = Clock::now() + kDrainTime;
        armTimer(); // re-armed at the new deadline (the pending wait is cancelled)
        drain(0);
    }

    void drain(std::size_t so_far) {
        drop_.resize(16UL * 1024);
        socket_.async_read_some(asio::buffer(drop_), [self = shared_from_this(),
                                                      so_far](beast::error_code ec, std::size_t n) {
            if (ec || so_far + n > kMaxDrain) {
                self->drop_ = std::string();
                self->close();
                return;
            }
            self->drain(so_far + n);
        });
    }

    void close() {
        beast::error_code ignored;
        timer_.cancel();
        if (socket_.is_open()) {
            socket_.shutdown(tcp::socket::shutdown_send, ignored);
            socket_.close(ignored);
        }
    }

    Socket socket_;
    asio::basic_waitable_timer<Clock, asio::wait_traits<Clock>, Executor> timer_;
    Clock::time_point deadline_{};
    Routes& routes_;
    asio::thread_pool& slow_;
    const std::string& common_headers_;
    ConnectionBudget& budget_;
    SlotBudget& bodies_;
    std::shared_ptr<void> body_slot_; // held from a large body's header to the answer
    std::string client_;              // the client IP counted in budget_ (empty: none)
    beast::flat_buffer buffer_;
    std::optional<http::request_parser<http::string_body>> parser_;
    Request request_; // the current request, its strings reused from one to the next
    std::string out_; // the response head (and body), reused from one to the next
    BodyStream body_;
    std::string chunk_;
    std::string chunk_head_;
    std::array<asio::const_buffer, 5> bufs_{}; // what writeChunk's write sends
    unsigned version_ = 11;
    std::size_t limit_ = 0; // the current request's body limit
    bool draining_ = false; // a 413 was sent: drain, then close
    std::string drop_;      // what a draining connection reads
    bool keep_alive_ = false;
    bool head_ = false;
};

// The per-IP budget's key: the address, an IPv4-mapped IPv6 one (a dual-stack [::]
// listener's IPv4 client) as the IPv4 address it is.
std::string clientKey(const asio::ip::address& a) {
    if (a.is_v6() && a.to_v6().is_v4_mapped()) {
        return asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6()).to_string();
    }
    return a.to_string();
}

} // namespace

Server::Server(asio::io_context& io, const tcp::endpoint& ep, Routes& routes,
               const ServerOptions& options)
    : budget_(options.max_connections, options.max_per_ip),
      bodies_(options.max_large_bodies, "api_large_bodies",
              "Request bodies over 16 KiB (the batch checks', up to 1 MiB each)"),
      common_headers_(commonHeaders(routes.corsOrigin())), acceptor_(io), retry_(io),
      routes_(routes) {
    for (unsigned i = 0; i < std::max(1u, options.workers); ++i) {
        workers_.push_back(std::make_unique<asio::io_context>(1));
        guards_.push_back(asio::make_work_guard(*workers_.back()));
    }
    boost::system::error_code ec;
    acceptor_.open(ep.protocol(), ec);
    if (!ec) {
        acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
    }
    if (!ec && ep.address().is_v6()) {
        // [::] takes IPv4 too (dual stack); any other IPv6 address is IPv6 only anyway.
        acceptor_.set_option(asio::ip::v6_only(!ep.address().is_unspecified()), ec);
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
    // The slow-route thread (/stats, lists) is thread_pool's own: named from inside, and
    // waited for, so that the name is there before the first request.
    std::promise<void> named;
    asio::post(slow_, [&named] {
        pthread_setname_np(pthread_self(), "sp-api-slow");
        named.set_value();
    });
    named.get_future().wait();
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
    auto session = std::make_shared<Session>(*workers_[next_worker_++ % workers_.size()], routes_,
                                             slow_, common_headers_, budget_, bodies_);
    acceptor_.async_accept(
        session->socket(), [self = shared_from_this(), session](boost::system::error_code ec) {
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
            auto client = clientKey(session->socket().remote_endpoint(ec).address());
            if (ec || !self->budget_.tryAcquire(client)) {
                // Over budget (counted) or already gone: closed at once, nothing read.
                boost::system::error_code ignored;
                session->socket().close(ignored);
                self->accept();
                return;
            }
            session->holdBudget(std::move(client));
            session->socket().set_option(tcp::no_delay(true), ec);
            // The session's handlers all run on its worker thread, its start too.
            asio::post(session->socket().get_executor(), [session] { session->start(); });
            self->accept();
        });
}

} // namespace sp::api
