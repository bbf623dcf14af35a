#include "daemon/daemon.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <pthread.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <thread>

#include "bus/event_bus.hpp"
#include "core/clock.hpp"
#include "core/ids.hpp"
#include "core/version.hpp"
#include "listen/net.hpp"
#include "listen/tcp_listener.hpp"
#include "listen/tls.hpp"
#include "listen/udp_listener.hpp"
#include "sinks/json_log.hpp"
#include "sinks/syslog.hpp"
#include "store/store.hpp"

namespace sp::daemon {

namespace asio = boost::asio;
namespace fs = std::filesystem;

std::string loadOrCreateNodeId(const std::string& data_dir) {
    auto path = fs::path(data_dir) / "node-id";
    {
        std::ifstream in(path);
        std::string id;
        if (in && std::getline(in, id) && core::isUuid(id)) {
            return id;
        }
    }
    std::string id = core::newUuid();
    auto tmp = path;
    tmp += ".tmp";
    {
        std::ofstream out(tmp, std::ios::trunc);
        out << id << '\n';
        if (!out.flush()) {
            throw std::runtime_error("cannot write node id file " + tmp.string());
        }
    }
    std::error_code ec;
    fs::rename(tmp, path, ec);
    if (ec) {
        throw std::runtime_error("cannot write node id file " + path.string() + ": " +
                                 ec.message());
    }
    return id;
}

namespace {

void setupLogging(const config::Config& c) {
    auto logger = spdlog::stderr_color_mt("sentrypeer");
    logger->set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");
    logger->set_level(c.debug ? spdlog::level::trace
                              : (c.verbose ? spdlog::level::debug : spdlog::level::info));
    spdlog::set_default_logger(logger);
}

template <typename Endpoint> Endpoint endpoint(const config::HostPort& hp) {
    return Endpoint(asio::ip::make_address(hp.host), hp.port);
}

sip::ResponderOptions responderOptions(const config::Config& c) {
    sip::ResponderOptions r;
    if (!c.sip_redirect.empty()) {
        r.mode = sip::AgentMode::Redirect;
        r.redirect_uri = c.sip_redirect;
    } else if (c.sip_agent == 404) {
        r.mode = sip::AgentMode::NotFound;
    }
    if (!c.sip_server_header.empty()) {
        r.server = c.sip_server_header;
    }
    return r;
}

// Everything the daemon owns. Declaration order is destruction order reversed: the
// io_context (and the connections its handlers hold) goes before what they reference.
struct Runtime {
    core::SystemClock clock;
    bus::EventBus bus;
    std::shared_ptr<store::Store> store;
    std::unique_ptr<listen::Ingest> ingest;
    std::unique_ptr<listen::ConnectionLimits> limits;
    std::unique_ptr<asio::ssl::context> tls;
    asio::io_context io;
    std::vector<std::shared_ptr<listen::UdpListener>> udp;
    std::vector<std::shared_ptr<listen::TcpListener>> tcp;
    std::vector<std::thread> io_threads;
    std::vector<std::string> listening;
};

void startListeners(const config::Config& c, Runtime& rt, const std::string& node_id) {
    listen::IngestOptions io{c.sip_responsive, responderOptions(c), node_id};
    rt.ingest = std::make_unique<listen::Ingest>(
        io, rt.clock, [&bus = rt.bus](core::EventPtr e) { bus.publish(std::move(e)); });
    rt.limits = std::make_unique<listen::ConnectionLimits>(c.tcp_max_connections, c.tcp_max_per_ip);
    listen::TcpOptions tcp{c.sip_responsive, 64 * 1024, c.tcp_max_connections, c.tcp_max_per_ip,
                           c.tcp_idle_timeout};
    for (const auto& hp : c.sip_listen) {
        auto udp = std::make_shared<listen::UdpListener>(
            rt.io, endpoint<asio::ip::udp::endpoint>(hp), *rt.ingest, c.sip_responsive);
        rt.listening.push_back(listen::describe("UDP", udp->localEndpoint()));
        rt.udp.push_back(std::move(udp));
        auto t = std::make_shared<listen::TcpListener>(rt.io, endpoint<asio::ip::tcp::endpoint>(hp),
                                                       *rt.ingest, tcp, *rt.limits, nullptr);
        rt.listening.push_back(listen::describe("TCP", t->localEndpoint()));
        rt.tcp.push_back(std::move(t));
    }
    if (c.tls_listen) {
        rt.tls = listen::makeTlsContext(c.cert, c.key, c.dataDir());
        auto t = std::make_shared<listen::TcpListener>(
            rt.io, endpoint<asio::ip::tcp::endpoint>(*c.tls_listen), *rt.ingest, tcp, *rt.limits,
            rt.tls.get());
        rt.listening.push_back(listen::describe("TLS", t->localEndpoint()));
        rt.tcp.push_back(std::move(t));
    }
}

void addSinks(const config::Config& c, Runtime& rt) {
    // The store is the source of truth: lossless (publishers wait rather than drop) with a
    // queue sized for bursts; it commits in batches of up to 1,000 or every 50 ms.
    rt.bus.addSink(rt.store, {.name = "store",
                              .thread_name = "sp-store",
                              .capacity = 262144,
                              .max_batch = 1000,
                              .tick = std::chrono::milliseconds(50),
                              .lossless = true});
    if (c.json_log) {
        rt.bus.addSink(std::make_shared<sinks::JsonLog>(c.json_log_file, rt.clock),
                       {.name = "json_log", .thread_name = "sp-jsonlog", .capacity = 65536});
    }
    if (c.syslog) {
        rt.bus.addSink(std::make_shared<sinks::Syslog>(c.syslog_socket, rt.clock),
                       {.name = "syslog", .thread_name = "sp-syslog", .capacity = 65536});
    }
}

} // namespace

int run(const config::Config& c) {
    setupLogging(c);
    Runtime rt;
    std::string node_id;
    try {
        std::error_code ec;
        fs::create_directories(c.dataDir(), ec);
        if (ec) {
            throw std::runtime_error("cannot create data directory " + c.dataDir() + ": " +
                                     ec.message());
        }
        node_id = loadOrCreateNodeId(c.dataDir());
        rt.store = std::make_shared<store::Store>(
            store::StoreOptions{.path = c.db_file, .max_age = c.max_age}, rt.clock);
        addSinks(c, rt);
        if (!c.sip_disable) {
            startListeners(c, rt, node_id);
        }
    } catch (const std::exception& e) {
        spdlog::critical("{}", e.what());
        return 1;
    }

    std::mutex mutex;
    std::condition_variable cv;
    bool stop = false;
    asio::signal_set signals(rt.io, SIGINT, SIGTERM, SIGHUP);
    std::function<void(const boost::system::error_code&, int)> on_signal =
        [&](const boost::system::error_code& ec, int signo) {
            if (ec) {
                return;
            }
            if (signo == SIGHUP) {
                spdlog::info("SIGHUP: reopening log files");
                rt.bus.reopen();
                signals.async_wait(on_signal);
                return;
            }
            spdlog::info("{}: shutting down", signo == SIGTERM ? "SIGTERM" : "SIGINT");
            std::lock_guard lock(mutex);
            stop = true;
            cv.notify_all();
        };
    signals.async_wait(on_signal);

    rt.bus.start();
    for (auto& u : rt.udp) {
        u->start();
    }
    for (auto& t : rt.tcp) {
        t->start();
    }
    for (unsigned i = 0; i < c.threads; ++i) {
        rt.io_threads.emplace_back([&rt] {
            pthread_setname_np(pthread_self(), "sp-io");
            rt.io.run();
        });
    }

    std::string where;
    for (const auto& l : rt.listening) {
        where += (where.empty() ? "" : ", ") + l;
    }
    spdlog::info("sentrypeer {} ready: {}; {} mode; database {}; node id {}", core::kVersion,
                 where.empty() ? "no SIP listener" : where,
                 c.sip_responsive ? "responsive" : "passive", c.db_file, node_id);

    {
        std::unique_lock lock(mutex);
        cv.wait(lock, [&] { return stop; });
    }
    // Stop the network first, then drain: no producer is left when the bus stops.
    rt.io.stop();
    for (auto& t : rt.io_threads) {
        t.join();
    }
    for (auto& u : rt.udp) {
        u->drainAndClose();
    }
    rt.bus.stop();
    spdlog::info("stopped: {} events stored this run", rt.store->stored());
    return rt.store->writeErrors() == 0 ? 0 : 1;
}

} // namespace sp::daemon
