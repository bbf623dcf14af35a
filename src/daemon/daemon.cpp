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

#include "api/routes.hpp"
#include "api/server.hpp"
#include "bus/event_bus.hpp"
#include "core/clock.hpp"
#include "core/ids.hpp"
#include "core/metrics.hpp"
#include "core/version.hpp"
#include "listen/net.hpp"
#include "listen/tcp_listener.hpp"
#include "listen/tls.hpp"
#include "listen/udp_listener.hpp"
#include "p2p/node.hpp"
#include "sinks/json_log.hpp"
#include "sinks/syslog.hpp"
#include "sinks/webhook.hpp"
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
    r.tag_key = core::randomU64(); // To-tags and SDP must not be the same on every node
    return r;
}

// Everything the daemon owns. Declaration order is destruction order reversed: the
// io_context (and the connections its handlers hold) goes before what they reference.
struct Runtime {
    core::SystemClock clock;
    std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
    core::MetricsRegistry metrics;
    bus::EventBus bus;
    std::shared_ptr<store::Store> store;
    std::shared_ptr<sinks::Webhook> webhook;
    std::unique_ptr<listen::Ingest> ingest;
    std::unique_ptr<listen::ConnectionLimits> limits;
    std::unique_ptr<asio::ssl::context> tls;
    std::shared_ptr<p2p::P2pNode> p2p;
    std::unique_ptr<api::Routes> routes;
    // One context per further sp-io thread; TCP/TLS connections are spread over io and these.
    // Declared before io: io's pending accept handlers hold strands of these contexts.
    std::vector<std::unique_ptr<asio::io_context>> connection_io;
    asio::io_context io; // listeners and the API's acceptor; run by the first sp-io thread
    // io, then connection_io: one context per sp-io thread.
    std::vector<asio::io_context*> ioContexts() {
        std::vector<asio::io_context*> all{&io};
        for (auto& ctx : connection_io) {
            all.push_back(ctx.get());
        }
        return all;
    }
    std::shared_ptr<api::Server> api;
    std::vector<std::shared_ptr<listen::UdpListener>> udp;
    std::vector<std::shared_ptr<listen::TcpListener>> tcp;
    std::vector<std::thread> io_threads;
    std::vector<std::string> listening;
};

void startListeners(const config::Config& c, Runtime& rt, const std::string& node_id) {
    listen::IngestOptions io{c.sip_responsive, responderOptions(c), node_id};
    rt.ingest = std::make_unique<listen::Ingest>(
        io, rt.clock, [&bus = rt.bus](const core::EventPtr& e) { bus.publish(e); });
    rt.limits = std::make_unique<listen::ConnectionLimits>(c.tcp_max_connections, c.tcp_max_per_ip);
    listen::TcpOptions tcp{c.sip_responsive, 64UL * 1024, c.tcp_max_connections, c.tcp_max_per_ip,
                           c.tcp_idle_timeout};
    for (unsigned i = 1; i < c.threads; ++i) {
        rt.connection_io.push_back(std::make_unique<asio::io_context>(1));
    }
    const std::vector<asio::io_context*> connection_io = rt.ioContexts();
    for (const auto& hp : c.sip_listen) {
        auto udp = std::make_shared<listen::UdpListener>(
            rt.io, endpoint<asio::ip::udp::endpoint>(hp), *rt.ingest, c.sip_responsive);
        rt.listening.push_back(listen::describe("UDP", udp->localEndpoint()));
        rt.udp.push_back(std::move(udp));
        auto t = std::make_shared<listen::TcpListener>(rt.io, endpoint<asio::ip::tcp::endpoint>(hp),
                                                       *rt.ingest, tcp, *rt.limits, nullptr,
                                                       connection_io);
        rt.listening.push_back(listen::describe("TCP", t->localEndpoint()));
        rt.tcp.push_back(std::move(t));
    }
    if (c.tls_listen) {
        rt.tls = listen::makeTlsContext(c.cert, c.key, c.dataDir());
        auto t = std::make_shared<listen::TcpListener>(
            rt.io, endpoint<asio::ip::tcp::endpoint>(*c.tls_listen), *rt.ingest, tcp, *rt.limits,
            rt.tls.get(), connection_io);
        rt.listening.push_back(listen::describe("TLS", t->localEndpoint()));
        rt.tcp.push_back(std::move(t));
    }
}

// How long events gather in a sink's queue before its thread takes them: one wake-up per
// batch instead of one per event (measured at 50,000 UDP events/s: the p2p sink woken per
// event cost 6 us per event). What it costs: up to 50 ms more before a row, a log line or a
// DHT put; the webhook, which posts each event on its own anyway, keeps its own options.
constexpr std::chrono::milliseconds kGather{50};

void addSinks(const config::Config& c, Runtime& rt) {
    // The store is the source of truth: lossless (publishers wait rather than drop) with a
    // queue sized for bursts. Events gather for up to kGather (or until 5,000 are waiting),
    // then go in one transaction: few large transactions cost far less than many small ones.
    rt.bus.addSink(rt.store, {.name = "store",
                              .thread_name = "sp-store",
                              .capacity = 65536,
                              .max_batch = 5000,
                              .tick = kGather,
                              .linger = kGather,
                              .lossless = true});
    if (c.json_log) {
        rt.bus.addSink(std::make_shared<sinks::JsonLog>(c.json_log_file, rt.clock),
                       {.name = "json_log",
                        .thread_name = "sp-jsonlog",
                        .capacity = 65536,
                        .linger = kGather});
    }
    if (c.syslog) {
        rt.bus.addSink(
            std::make_shared<sinks::Syslog>(c.syslog_socket, rt.clock),
            {.name = "syslog", .thread_name = "sp-syslog", .capacity = 65536, .linger = kGather});
    }
    if (!c.webhook_url.empty()) {
        rt.webhook = std::make_shared<sinks::Webhook>(
            sinks::WebhookOptions{.url = c.webhook_url,
                                  .oauth2_client_id = c.oauth2_client_id,
                                  .oauth2_client_secret = c.oauth2_client_secret,
                                  .oauth2_token_url = c.oauth2_token_url,
                                  .oauth2_audience = c.oauth2_audience},
            rt.clock);
        rt.bus.addSink(rt.webhook, sinks::Webhook::sinkOptions());
        rt.metrics.add([w = rt.webhook](core::MetricsWriter& m) {
            auto s = w->stats();
            m.family("webhook_sent_total", "counter", "Events accepted by the webhook endpoint");
            m.sample(s.sent);
            m.family("webhook_failed_total", "counter", "Events the webhook gave up on");
            m.sample(s.failed);
            m.family("webhook_retries_total", "counter", "Webhook retry attempts");
            m.sample(s.retries);
            m.family("webhook_oauth2_token_fetches_total", "counter", "OAuth2 token requests");
            m.sample(s.oauth2_token_fetches);
            m.family("webhook_oauth2_failures_total", "counter",
                     "OAuth2 token requests that failed");
            m.sample(s.oauth2_failures);
            m.family("webhook_last_http_status", "gauge", "HTTP status of the last webhook POST");
            m.sample(static_cast<std::uint64_t>(std::max(0L, s.last_http_status)));
        });
    }
}

// The DHT node shares local events (its own sink) and feeds peers' events into the bus.
void startP2p(const config::Config& c, Runtime& rt, const std::string& node_id) {
    p2p::P2pOptions o;
    o.port = c.dht_port;
    o.bootstrap = c.bootstrap;
    o.network = c.dht_network;
    o.data_dir = c.dataDir();
    o.no_rate_limit = c.dht_no_rate_limit;
    o.node_id = node_id;
    rt.p2p = std::make_shared<p2p::P2pNode>(
        o, rt.clock, [&bus = rt.bus](const core::EventPtr& e) { bus.publish(e); });
    rt.bus.addSink(rt.p2p,
                   {.name = "p2p", .thread_name = "sp-p2p", .capacity = 65536, .linger = kGather});
    rt.p2p->start();
    rt.metrics.add([p = rt.p2p](core::MetricsWriter& w) { p->collect(w); });
    rt.listening.push_back("DHT UDP " + std::to_string(c.dht_port) + " (network " +
                           std::to_string(c.dht_network) + ")");
    spdlog::info("peer to peer: this node shares the events it catches with the SentryPeer "
                 "community and receives theirs; opt out with --no-p2p or "
                 "SENTRYPEER_PEER_TO_PEER=0");
}

void startApi(const config::Config& c, Runtime& rt) {
    api::ApiOptions options{c.api_token, c.db_file,         c.max_age,
                            {},          c.api_cors_origin, c.api_max_lists};
    if (rt.p2p) {
        options.p2p_status = [p = rt.p2p] { return p->statusJson(); };
    }
    rt.routes =
        std::make_unique<api::Routes>(std::move(options), rt.store->index(), rt.clock, rt.metrics);
    rt.routes->registerMetrics(rt.metrics);
    api::ServerOptions server{c.api_threads, c.api_max_connections, c.api_max_per_ip};
    rt.api = std::make_shared<api::Server>(rt.io, endpoint<asio::ip::tcp::endpoint>(c.api_listen),
                                           *rt.routes, server);
    rt.metrics.add([s = rt.api](core::MetricsWriter& w) { s->collect(w); });
    auto ep = rt.api->localEndpoint();
    // A URL: an IPv6 host in brackets (http://[::]:8082).
    const std::string& host = c.api_listen.host;
    bool v6 = host.find(':') != std::string::npos;
    rt.listening.push_back("API http://" + (v6 ? "[" + host + "]" : host) + ":" +
                           std::to_string(ep.port()));
}

// One collector per module: modules stay unaware of each other and of /metrics.
void registerMetrics(Runtime& rt) {
    rt.metrics.add([&rt](core::MetricsWriter& w) {
        w.family("build_info", "gauge", "Version and git revision of this build");
        w.sample(std::uint64_t{1}, {{"version", core::kVersion}, {"revision", core::kGitRevision}});
        w.family("uptime_seconds", "gauge", "Seconds since the daemon started");
        w.sample(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - rt.started).count());
    });
    rt.metrics.add([&rt](core::MetricsWriter& w) {
        w.family("events_published_total", "counter",
                 "Events handed to the bus (local captures and accepted peer events)");
        w.sample(rt.bus.published());
        auto stats = rt.bus.stats();
        w.family("sink_queue_depth", "gauge", "Events waiting in each sink's queue");
        for (const auto& s : stats) {
            w.sample(std::uint64_t{s.depth}, {{"sink", s.name}});
        }
        w.family("sink_queue_capacity", "gauge", "Capacity of each sink's queue");
        for (const auto& s : stats) {
            w.sample(std::uint64_t{s.capacity}, {{"sink", s.name}});
        }
        w.family("sink_events_total", "counter", "Events handed to each sink");
        for (const auto& s : stats) {
            w.sample(s.consumed, {{"sink", s.name}});
        }
        w.family("sink_dropped_total", "counter", "Events dropped because a sink's queue was full");
        for (const auto& s : stats) {
            w.sample(s.dropped, {{"sink", s.name}});
        }
    });
    rt.metrics.add([&rt](core::MetricsWriter& w) {
        const auto& st = *rt.store;
        w.family("events_stored_total", "counter", "Events committed to the database");
        w.sample(st.stored());
        w.family("events_lost_total", "counter", "Events the database could not take");
        w.sample(st.lost());
        w.family("store_transactions_total", "counter", "Committed database transactions");
        w.sample(st.transactions());
        w.family("store_write_errors_total", "counter", "Failed database transactions");
        w.sample(st.writeErrors());
        w.family("events_pruned_total", "counter", "Events deleted by retention");
        w.sample(st.pruned());
        w.family("database_events", "gauge", "Events in the database");
        w.sample(st.index().events());
        w.family("database_size_bytes", "gauge", "Size of the database file and its WAL");
        std::error_code ec;
        std::uintmax_t size = 0;
        for (const char* suffix : {"", "-wal"}) {
            auto n = fs::file_size(st.path() + suffix, ec);
            size += ec ? 0 : n;
        }
        w.sample(std::uint64_t{size});
        auto [ips, numbers] = st.index().read([](const store::Index::Maps& m) {
            return std::pair{m.by_ip.size(), m.by_number.size()};
        });
        w.family("bad_actors", "gauge", "Distinct source IPs in the database");
        w.sample(std::uint64_t{ips});
        w.family("called_numbers", "gauge", "Distinct called numbers in the database");
        w.sample(std::uint64_t{numbers});
    });
    if (!rt.ingest) {
        return;
    }
    rt.metrics.add([&rt](core::MetricsWriter& w) {
        auto& c = rt.ingest->counters();
        auto each = [&](const char* name, const char* help, auto member) {
            w.family(name, "counter", help);
            for (std::size_t t = 0; t < listen::kTransports; ++t) {
                w.sample((c.by_transport[t].*member).load(),
                         {{"transport", listen::transportName(static_cast<listen::Transport>(t))}});
            }
        };
        w.family("events_received_total", "counter",
                 "SIP messages recorded as events, by transport and method");
        for (std::size_t t = 0; t < listen::kTransports; ++t) {
            for (std::size_t m = 0; m < listen::kMethodLabels.size(); ++m) {
                auto n = c.by_method[t][m].load();
                if (n > 0) {
                    w.sample(
                        n, {{"transport", listen::transportName(static_cast<listen::Transport>(t))},
                            {"method", listen::kMethodLabels[m]}});
                }
            }
        }
        using P = listen::IngestCounters::PerTransport;
        each("unparsable_total", "Inputs that were not SIP (recorded as MALFORMED)", &P::malformed);
        each("sip_responses_received_total", "SIP responses received (recorded, never answered)",
             &P::responses);
        each("empty_datagrams_total", "0-byte datagrams (counted, not stored)", &P::empty);
        each("replies_total", "SIP replies sent in responsive mode", &P::replies);
        each("received_bytes_total", "Bytes of SIP messages received", &P::bytes);
        w.family("connections_refused_total", "counter", "TCP/TLS connections over a cap");
        w.sample(c.connections_refused.load());
        w.family("tls_handshake_failures_total", "counter", "Failed TLS handshakes");
        w.sample(c.tls_handshake_failures.load());
        w.family("tcp_connections", "gauge", "Open SIP TCP/TLS connections");
        w.sample(std::uint64_t{rt.limits->open()});
    });
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
            store::StoreOptions{.path = c.db_file, .max_age = c.max_age, .load_index = false},
            rt.clock);
        addSinks(c, rt);
        if (!c.sip_disable) {
            startListeners(c, rt, node_id);
        }
        if (c.p2p) {
            startP2p(c, rt, node_id);
        } else {
            spdlog::info("peer to peer: off (this node neither shares nor receives events)");
        }
        if (c.api) {
            startApi(c, rt);
        }
        registerMetrics(rt);
        // Last: every socket is bound, so probes (and API requests) that arrive while a large
        // database's index loads wait in the kernel's queues instead of being refused.
        auto loading = std::chrono::steady_clock::now();
        rt.store->loadIndex();
        spdlog::info(
            "store: {} events within --max-age indexed in {:.1f} s", rt.store->index().events(),
            std::chrono::duration<double>(std::chrono::steady_clock::now() - loading).count());
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
    if (rt.api) {
        rt.api->start();
    }
    // sp-io threads: the first runs the listeners' context, each other one a context of
    // connections (kept running while idle by a work guard).
    for (asio::io_context* ctx : rt.ioContexts()) {
        rt.io_threads.emplace_back([ctx, guard = asio::make_work_guard(*ctx)] {
            pthread_setname_np(pthread_self(), "sp-io");
            ctx->run();
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
    // The webhook gets a bounded time (2 s) to deliver what is queued, whatever its endpoint.
    if (rt.webhook) {
        rt.webhook->beginShutdown();
    }
    // Stop the network first, then drain: no producer is left when the bus stops.
    rt.io.stop();
    for (auto& ctx : rt.connection_io) {
        ctx->stop();
    }
    for (auto& t : rt.io_threads) {
        t.join();
    }
    for (auto& u : rt.udp) {
        u->drainAndClose();
    }
    if (rt.api) {
        rt.api->stop();
    }
    if (rt.p2p) {
        rt.p2p->stop(); // no more peer events once the bus starts draining
    }
    rt.bus.stop();
    // Exit 0 only when every accepted event reached the database.
    if (rt.store->lost() > 0) {
        spdlog::error("stopped: {} events stored this run, {} lost (database errors)",
                      rt.store->stored(), rt.store->lost());
        return 1;
    }
    spdlog::info("stopped: {} events stored this run", rt.store->stored());
    return 0;
}

} // namespace sp::daemon
