#include "listen/tcp_listener.hpp"

#include <array>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <deque>
#include <spdlog/spdlog.h>

#include "listen/net.hpp"
#include "sip/framer.hpp"
#include <boost/asio/ip/v6_only.hpp>

namespace sp::listen {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

void ConnectionLimits::collect(core::MetricsWriter& w) const {
    w.family("tcp_connections", "gauge", "Open SIP TCP/TLS connections");
    w.sample(std::uint64_t{open()});
}

namespace {

constexpr std::size_t kMaxQueuedReplies = 256UL * 1024; // a client that never reads is cut off

bool onlyWhitespace(std::string_view s) {
    return s.find_first_not_of(" \t\r\n") == std::string_view::npos;
}

// One client connection. Stream is tcp::socket or ssl::stream<tcp::socket>. Every
// handler runs on the socket's strand, so members need no lock.
template <typename Stream>
class Connection : public std::enable_shared_from_this<Connection<Stream>> {
public:
    Connection(Stream stream, Ingest& ingest, const TcpOptions& options, ConnectionLimits& limits,
               Meta meta)
        : stream_(std::move(stream)), idle_(stream_.get_executor()), ingest_(ingest),
          options_(options), limits_(limits), meta_(std::move(meta)), framer_(options.max_message) {
    }

    ~Connection() { limits_.release(meta_.source_ip); }

    void start() {
        last_activity_ = std::chrono::steady_clock::now();
        armIdle(options_.idle_timeout);
        if constexpr (kTls) {
            stream_.async_handshake(
                asio::ssl::stream_base::server,
                [self = this->shared_from_this()](boost::system::error_code ec) {
                    if (ec) {
                        self->ingest_.counters().tls_handshake_failures.fetch_add(
                            1, std::memory_order_relaxed);
                        self->close();
                        return;
                    }
                    self->read();
                });
        } else {
            read();
        }
    }

private:
    static constexpr bool kTls = !std::is_same_v<Stream, tcp::socket>;

    auto& socket() {
        if constexpr (kTls) {
            return stream_.lowest_layer();
        } else {
            return stream_;
        }
    }

    void armIdle(std::chrono::steady_clock::duration after) {
        idle_.expires_after(after);
        idle_.async_wait([self = this->shared_from_this()](boost::system::error_code ec) {
            if (ec || self->closed_) {
                return;
            }
            auto idle_for = std::chrono::steady_clock::now() - self->last_activity_;
            if (idle_for >= self->options_.idle_timeout) {
                self->recordPending();
                self->close();
            } else {
                self->armIdle(self->options_.idle_timeout - idle_for);
            }
        });
    }

    void read() {
        stream_.async_read_some(asio::buffer(buffer_), [self = this->shared_from_this()](
                                                           boost::system::error_code ec,
                                                           std::size_t n) { self->onRead(ec, n); });
    }

    void onRead(boost::system::error_code ec, std::size_t n) {
        if (closed_) {
            return;
        }
        if (ec) {
            recordPending(); // EOF or reset: whatever never became a message
            close();
            return;
        }
        last_activity_ = std::chrono::steady_clock::now();
        auto status = framer_.feed(std::string_view(buffer_.data(), n), [this](std::string_view m) {
            std::string reply = ingest_.handle(m, meta_);
            if (options_.responsive && !reply.empty()) {
                queueWrite(std::move(reply));
            }
        });
        if (status != sip::Framer::Status::Ok) {
            recordPending();
            close();
            return;
        }
        if (!closed_) {
            read();
        }
    }

    void recordPending() {
        auto pending = framer_.pending();
        if (!recorded_pending_ && !onlyWhitespace(pending)) {
            recorded_pending_ = true;
            ingest_.handle(pending.substr(0, options_.max_message), meta_);
        }
    }

    void queueWrite(std::string bytes) {
        queued_bytes_ += bytes.size();
        if (queued_bytes_ > kMaxQueuedReplies) {
            close();
            return;
        }
        out_.push_back(std::move(bytes));
        if (!writing_) {
            write();
        }
    }

    void write() {
        writing_ = true;
        asio::async_write(
            stream_, asio::buffer(out_.front()),
            [self = this->shared_from_this()](boost::system::error_code ec, std::size_t) {
                self->queued_bytes_ -= self->out_.front().size();
                self->out_.pop_front();
                self->writing_ = false;
                if (ec) {
                    self->close();
                } else if (!self->out_.empty() && !self->closed_) {
                    self->write();
                }
            });
    }

    void close() {
        if (closed_) {
            return;
        }
        closed_ = true;
        idle_.cancel();
        boost::system::error_code ignored;
        socket().shutdown(tcp::socket::shutdown_both, ignored);
        socket().close(ignored);
    }

    Stream stream_;
    asio::steady_timer idle_;
    Ingest& ingest_;
    TcpOptions options_;
    ConnectionLimits& limits_;
    Meta meta_;
    sip::Framer framer_;
    std::array<char, 16384> buffer_{};
    std::deque<std::string> out_;
    std::size_t queued_bytes_ = 0;
    std::chrono::steady_clock::time_point last_activity_;
    bool writing_ = false;
    bool closed_ = false;
    bool recorded_pending_ = false;
};

} // namespace

TcpListener::TcpListener(asio::io_context& io, const tcp::endpoint& ep, Ingest& ingest,
                         const TcpOptions& options, ConnectionLimits& limits,
                         asio::ssl::context* tls, std::vector<asio::io_context*> connection_io)
    : io_(io), connection_io_(std::move(connection_io)), acceptor_(io), retry_(io), ingest_(ingest),
      options_(options), limits_(limits), tls_(tls) {
    boost::system::error_code ec;
    const char* proto = tls != nullptr ? "TLS" : "TCP";
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
        acceptor_.listen(4096, ec);
    }
    if (ec) {
        throw ListenError("cannot listen on " + describe(proto, ep) + ": " + ec.message());
    }
    local_ = acceptor_.local_endpoint();
}

void TcpListener::start() {
    spdlog::debug("{}: listening", describe(tls_ != nullptr ? "TLS" : "TCP", local_));
    accept();
}

asio::io_context& TcpListener::nextConnectionContext() {
    if (connection_io_.empty()) {
        return io_;
    }
    return *connection_io_[next_connection_io_++ % connection_io_.size()];
}

void TcpListener::accept() {
    acceptor_.async_accept(
        asio::make_strand(nextConnectionContext()),
        [self = shared_from_this()](boost::system::error_code ec, tcp::socket socket) {
            if (ec == asio::error::operation_aborted) {
                return;
            }
            if (ec) {
                // Out of file descriptors: back off instead of spinning.
                if (self->error_log_.allow(self->ingest_.clock().now())) {
                    spdlog::warn("{}: accept: {}",
                                 describe(self->tls_ ? "TLS" : "TCP", self->local_), ec.message());
                }
                self->retry_.expires_after(std::chrono::milliseconds(100));
                self->retry_.async_wait([self](boost::system::error_code wait_ec) {
                    if (!wait_ec) {
                        self->accept();
                    }
                });
                return;
            }
            boost::system::error_code ep_ec;
            auto remote = socket.remote_endpoint(ep_ec);
            auto local = socket.local_endpoint(ep_ec);
            if (!ep_ec) {
                Meta meta{self->tls_ ? Transport::Tls : Transport::Tcp, printable(remote.address()),
                          remote.port(), printable(local.address()), local.port()};
                if (!self->limits_.tryAcquire(meta.source_ip)) {
                    self->ingest_.counters().connections_refused.fetch_add(
                        1, std::memory_order_relaxed);
                    socket.close(ep_ec);
                } else {
                    socket.set_option(tcp::no_delay(true), ep_ec);
                    if (self->tls_ != nullptr) {
                        using TlsStream = asio::ssl::stream<tcp::socket>;
                        std::make_shared<Connection<TlsStream>>(
                            TlsStream(std::move(socket), *self->tls_), self->ingest_,
                            self->options_, self->limits_, std::move(meta))
                            ->start();
                    } else {
                        std::make_shared<Connection<tcp::socket>>(std::move(socket), self->ingest_,
                                                                  self->options_, self->limits_,
                                                                  std::move(meta))
                            ->start();
                    }
                }
            }
            self->accept();
        });
}

} // namespace sp::listen
