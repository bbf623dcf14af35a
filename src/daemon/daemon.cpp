#include "daemon/daemon.hpp"

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <pthread.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <thread>

#include "api/routes.hpp"
#include "api/server.hpp"
#include "block/policy.hpp"
#include "bus/event_bus.hpp"
#include "core/clock.hpp"
#include "core/ids.hpp"
#include "core/metrics.hpp"
#include "core/rate_limit.hpp"
#include "core/version.hpp"
#include "decisions/journal.hpp"
#include "listen/net.hpp"
#include "listen/tcp_listener.hpp"
#include "listen/tls.hpp"
#include "listen/udp_listener.hpp"
#include "nft/blocker.hpp"
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
    // The blocking policy every blocking output shares (built before the listeners; its
    // allow file is re-read on SIGHUP).
    std::shared_ptr<block::Policy> policy;
    // Keys the blocking tools' feeds accept (--bouncer-key, --bouncer-key-file).
    std::shared_ptr<const api::ApiKeys> bouncer_keys;
    // The CrowdSec decision stream's journal (when the API has bouncer keys): built with the
    // API, started once the index is loaded, stopped before the store.
    std::shared_ptr<decisions::Journal> decisions;
    std::shared_ptr<sinks::Webhook> webhook;
    std::unique_ptr<listen::Ingest> ingest;
    std::unique_ptr<listen::ConnectionLimits> limits;
    std::unique_ptr<asio::ssl::context> tls;
    std::shared_ptr<p2p::P2pNode> p2p;
    // --nft: started after the index loads, before the listeners start; stopped last.
    std::shared_ptr<nft::Blocker> nft;
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
    listen::IngestOptions io{.responsive = c.sip_responsive,
                             .responder = responderOptions(c),
                             .node_id = node_id,
                             .reply_rate = static_cast<double>(c.sip_reply_rate)};
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

void addSinks(const config::Config& c, Runtime& rt) {
    // Each sink's queue options (capacity, byte budget, batching) are its own.
    rt.bus.addSink(rt.store, store::Store::sinkOptions());
    if (c.json_log) {
        rt.bus.addSink(std::make_shared<sinks::JsonLog>(c.json_log_file, rt.clock),
                       sinks::JsonLog::sinkOptions());
    }
    if (c.syslog) {
        rt.bus.addSink(std::make_shared<sinks::Syslog>(c.syslog_socket, rt.clock),
                       sinks::Syslog::sinkOptions());
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
        rt.metrics.add([w = rt.webhook](core::MetricsWriter& m) { w->collect(m); });
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
    o.max_peer_rate = c.p2p_max_peer_rate;
    o.credit = *share::parseCredit(c.p2p_credit); // validated by the option table
    o.epoch = c.p2p_epoch;
    o.bucket = c.p2p_bucket;
    o.flush = c.p2p_flush;
    o.trust = c.p2p_trust;
    o.deny = c.p2p_deny;
    o.max_bytes_per_hour = c.p2p_max_bandwidth;
    o.compat_publish = c.p2p_sentrypeer_compat;
    // Credit L1/L2: "this node caught `subject` itself within ±6 h of `time`", from the
    // index's snapshot (no lock held; the share library's worker thread calls it).
    o.confirmed = [store = rt.store](std::string_view subject, std::int64_t time) {
        auto seen = store->index().ip(subject);
        if (!seen || seen->local == 0) {
            return false;
        }
        constexpr std::chrono::hours kWindow{6};
        auto t = core::TimePoint{std::chrono::seconds(time)};
        return seen->last >= t - kWindow && seen->last <= t + kWindow;
    };
    rt.p2p = std::make_shared<p2p::P2pNode>(
        o, rt.clock, [&bus = rt.bus](const core::EventPtr& e) { bus.publish(e); });
    rt.bus.addSink(rt.p2p, p2p::P2pNode::sinkOptions());
    rt.p2p->start();
    rt.metrics.add([p = rt.p2p](core::MetricsWriter& w) { p->collect(w); });
    rt.listening.push_back("DHT UDP " + std::to_string(c.dht_port) + " (network " +
                           std::to_string(c.dht_network) + ")");
    spdlog::info("peer to peer: this node shares the events it catches with the peers that "
                 "share theirs with it (share to receive), and receives SentryPeer's plaintext "
                 "values; opt out with --no-p2p or SENTRYPEER_PEER_TO_PEER=0");
}

void startApi(const config::Config& c, Runtime& rt) {
    api::ApiOptions options{.token = c.api_token,
                            .db_path = c.db_file,
                            .block_window = rt.policy->options().block_window,
                            .p2p_status = {},
                            .block_status = {},
                            .cors_origin = c.api_cors_origin,
                            .max_lists = c.api_max_lists,
                            .policy = rt.policy,
                            .bouncer_keys = rt.bouncer_keys,
                            .decisions = {},
                            .allow_numbers = c.allow_numbers};
    if (rt.bouncer_keys && rt.bouncer_keys->size() > 0) {
        rt.decisions = std::make_shared<decisions::Journal>(
            decisions::JournalOptions{.keys = rt.bouncer_keys->size()}, rt.policy, rt.clock);
        options.decisions = rt.decisions;
        rt.metrics.add([d = rt.decisions](core::MetricsWriter& w) { d->collect(w); });
    }
    if (rt.p2p) {
        options.p2p_status = [p = rt.p2p] { return p->statusJson(); };
    }
    if (rt.nft) {
        options.block_status = [n = rt.nft] { return n->statusJson(); };
    }
    rt.routes =
        std::make_unique<api::Routes>(std::move(options), rt.store->index(), rt.clock, rt.metrics);
    rt.routes->registerMetrics(rt.metrics);
    api::ServerOptions server{c.api_threads, c.api_max_connections, c.api_max_per_ip};
    rt.api = std::make_shared<api::Server>(rt.io, endpoint<asio::ip::tcp::endpoint>(c.api_listen),
                                           *rt.routes, server);
    // Not a shared_ptr: the registry outlives rt.io, and the server's acceptor must go first.
    rt.metrics.add([s = rt.api.get()](core::MetricsWriter& w) { s->collect(w); });
    auto ep = rt.api->localEndpoint();
    // A URL: an IPv6 host in brackets (http://[::]:8082).
    const std::string& host = c.api_listen.host;
    bool v6 = host.find(':') != std::string::npos;
    rt.listening.push_back("API http://" + (v6 ? "[" + host + "]" : host) + ":" +
                           std::to_string(ep.port()));
}

// The never-block list also holds the daemon's own listen addresses (beside the interface
// addresses the policy finds itself). Throws std::runtime_error naming the entry or file.
void buildPolicy(const config::Config& c, Runtime& rt) {
    block::PolicyOptions o;
    o.peer_min_reporters = c.peer_min_reporters;
    o.block_after = c.block_after;
    o.allow = c.allow;
    o.allow_file = c.allow_file;
    for (const auto& hp : c.sip_listen) {
        o.extra_own_addresses.push_back(hp.host);
    }
    if (c.tls_listen) {
        o.extra_own_addresses.push_back(c.tls_listen->host);
    }
    o.extra_own_addresses.push_back(c.api_listen.host);
    o.block_window = c.block_time.count() > 0 ? c.block_time : c.max_age;
    rt.policy = std::make_shared<block::Policy>(std::move(o));
    rt.metrics.add([p = rt.policy](core::MetricsWriter& w) { p->collect(w); });
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
    rt.metrics.add([&bus = rt.bus](core::MetricsWriter& w) { bus.collect(w); });
    rt.metrics.add([s = rt.store](core::MetricsWriter& w) { s->collect(w); });
    if (!rt.ingest) {
        return;
    }
    rt.metrics.add([&ingest = *rt.ingest](core::MetricsWriter& w) { ingest.collect(w); });
    rt.metrics.add([&limits = *rt.limits](core::MetricsWriter& w) { limits.collect(w); });
}

// After a second SIGTERM/SIGINT, the longest the process waits for the database to commit
// what was queued before it exits regardless (exit status 1).
constexpr std::chrono::seconds kAbortGrace{5};

// The shutdown sequence, on the main thread: network first, then the bounded UDP drain, then
// the bus (each sink drains its queue and closes). `aborting` (a second signal) may become
// true at any point: the UDP drain stops, the DHT node is not waited for, and the bus
// (already aborted by the signal thread) hands the store what it had queued and discards the
// lossy queues. Returns the exit status: 0 when every accepted event reached the database.
int shutDown(Runtime& rt, const std::atomic<bool>& aborting) {
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
    spdlog::debug("listeners stopped");
    for (auto& u : rt.udp) {
        u->drainAndClose(listen::UdpListener::kDrainMaxDatagrams,
                         listen::UdpListener::kDrainMaxTime, &aborting);
    }
    if (rt.api) {
        rt.api->stop();
        spdlog::debug("API stopped");
    }
    if (rt.decisions) {
        rt.decisions->stop(); // before the store closes the index
    }
    if (rt.p2p && !aborting) {
        rt.p2p->stop(); // no more peer events once the bus starts draining
        spdlog::debug("peer to peer stopped");
    }
    rt.bus.stop();
    if (rt.nft) {
        rt.nft->stop(); // removes the table unless --nft-keep
    }
    // Exit 0 only when every accepted event reached the database.
    if (rt.store->lost() > 0) {
        spdlog::error("stopped: {} events stored this run, {} lost (database errors)",
                      rt.store->stored(), rt.store->lost());
        return 1;
    }
    spdlog::info("stopped: {} events stored this run{}", rt.store->stored(),
                 aborting ? " (exited at once: lossy queues discarded)" : "");
    return 0;
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
            store::StoreOptions{.path = c.db_file,
                                .max_age = c.max_age,
                                .max_rows = c.max_rows,
                                .max_index_bytes = c.max_index_memory_mib * 1024 * 1024,
                                .load_index = false},
            rt.clock);
        buildPolicy(c, rt);
        if (c.nft) {
            // Before anything binds: without CAP_NET_ADMIN, one line and exit status 1.
            nft::Blocker::checkCapability();
            rt.nft = std::make_shared<nft::Blocker>(nft::BlockerOptions{.table = c.nft_table,
                                                                        .set_only = c.nft_set_only,
                                                                        .keep = c.nft_keep},
                                                    rt.policy, rt.store->index(), rt.clock);
        }
        rt.bouncer_keys = api::ApiKeys::load(c.bouncer_keys, c.bouncer_key_file);
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
        if (rt.decisions) {
            rt.decisions->start(rt.store->index()); // every block is in its first answer
        }
        // The sets hold every blocked address (one transaction) before a listener starts.
        if (rt.nft) {
            rt.nft->start();
            rt.metrics.add([n = rt.nft](core::MetricsWriter& w) { n->collect(w); });
        }
    } catch (const std::exception& e) {
        spdlog::critical("{}", e.what());
        return 1;
    }

    // Signals are handled on their own thread (sp-signal), which keeps running through the
    // shutdown sequence: the first SIGTERM/SIGINT starts a graceful stop on the main thread;
    // a second one makes it exit now (see docs/ARCHITECTURE.md "Shutdown").
    std::mutex mutex;
    std::condition_variable cv;
    bool stop = false;                 // guarded by mutex
    std::atomic<bool> aborting{false}; // second signal: cut the drain, discard lossy queues
    int stop_signals = 0;              // sp-signal thread only
    asio::io_context signal_io(1);
    asio::signal_set signals(signal_io, SIGINT, SIGTERM, SIGHUP);
    asio::steady_timer watchdog(signal_io);
    core::TokenBucket hup_log(1.0, 3); // sp-signal thread only
    std::function<void(const boost::system::error_code&, int)> on_signal =
        [&](const boost::system::error_code& ec, int signo) {
            if (ec) {
                return;
            }
            const char* name = signo == SIGTERM ? "SIGTERM" : (signo == SIGINT ? "SIGINT" : "");
            if (signo == SIGHUP) {
                if (hup_log.allow(rt.clock.now())) {
                    spdlog::info("SIGHUP: reopening log files, re-reading the allow file");
                }
                rt.bus.reopen();
                rt.policy->reload(); // logs one line either way; keeps the old list on error
                if (rt.nft) {
                    rt.nft->resync(); // the sets follow the new allow list
                }
            } else if (++stop_signals == 1) {
                spdlog::info("{}: shutting down (send it again to exit at once)", name);
                std::lock_guard lock(mutex);
                stop = true;
                cv.notify_all();
            } else if (stop_signals == 2) {
                spdlog::warn("{} again: exiting now; what is queued for the database is "
                             "committed, the rest (UDP still in the kernel, log, syslog, "
                             "webhook and p2p queues) is dropped",
                             name);
                aborting = true;
                rt.bus.abort(); // wakes publishers, interrupts the webhook's transfer
                {
                    std::lock_guard lock(mutex);
                    stop = true;
                    cv.notify_all();
                }
                // Last resort: a step that cannot be interrupted (a hung filesystem, a DHT
                // node that does not stop) cannot hold the process past kAbortGrace.
                watchdog.expires_after(kAbortGrace);
                watchdog.async_wait([](const boost::system::error_code& e) {
                    if (!e) {
                        spdlog::error("shutdown still blocked {} s after the second signal: "
                                      "exiting without waiting",
                                      kAbortGrace.count());
                        spdlog::shutdown();
                        std::_Exit(1);
                    }
                });
            } else {
                spdlog::error("{} a third time: exiting without waiting", name);
                spdlog::shutdown();
                std::_Exit(1);
            }
            signals.async_wait(on_signal);
        };
    signals.async_wait(on_signal);
    std::thread signal_thread([&signal_io, guard = asio::make_work_guard(signal_io)] {
        pthread_setname_np(pthread_self(), "sp-signal");
        signal_io.run();
    });

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
    const int code = shutDown(rt, aborting);
    signal_io.stop();
    signal_thread.join();
    if (aborting) {
        // Exit now: the database has what was queued; destructors (the DHT node's among
        // them) are skipped rather than waited for.
        spdlog::shutdown();
        std::_Exit(code);
    }
    return code;
}

} // namespace sp::daemon
