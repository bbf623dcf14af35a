#include "p2p/node.hpp"

#include <array>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <future>
#include <mutex>
#include <opendht/crypto.h>
#include <opendht/dhtrunner.h>
#include <opendht/log_enable.h>
#include <spdlog/spdlog.h>
#include <unordered_map>
#include <unordered_set>

#include "core/json.hpp"
#include "core/keyed_rate_limit.hpp"
#include "core/rate_limit.hpp"
#include "core/string_map.hpp"
#include "core/text.hpp"
#include "p2p/records.hpp"

namespace sp::p2p {

namespace fs = std::filesystem;

namespace {

constexpr std::size_t kSeenUuids = 200000; // dedupe memory for received events

// OpenDHT's log line, formatted (its loggers take printf arguments).
std::string formatLog(char const* format, va_list args) {
    std::array<char, 512> buf{};
    va_list copy;
    va_copy(copy, args);
    int n = std::vsnprintf(buf.data(), buf.size(), format, copy);
    va_end(copy);
    return n < 0 ? std::string()
                 : std::string(buf.data(), std::min<std::size_t>(n, buf.size() - 1));
}

} // namespace

namespace {

// "host", "host:port", "[v6]:port", "v6" -> host, port (default 4222).
std::pair<std::string, std::string> splitHostPort(const std::string& s) {
    if (!s.empty() && s.front() == '[') {
        auto close = s.find(']');
        if (close != std::string::npos) {
            std::string port =
                close + 2 <= s.size() && s[close + 1] == ':' ? s.substr(close + 2) : "4222";
            return {s.substr(1, close - 1), port.empty() ? "4222" : port};
        }
    }
    auto colon = s.rfind(':');
    if (colon == std::string::npos || s.find(':') != colon) {
        return {s, "4222"};
    }
    return {s.substr(0, colon), s.substr(colon + 1)};
}

} // namespace

struct P2pNode::Impl {
    P2pOptions o;
    const core::Clock& clock;
    Publish publish;
    dht::DhtRunner runner;
    // Created in start(), before the runner runs; gone only with the node.
    std::unique_ptr<share::Sharer> sharer;
    std::string identity; // pkId, set by start()
    dht::InfoHash key = dht::InfoHash::get(kBadActorsKey);
    std::atomic<bool> running{false};
    std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();

    // Publishing (sink thread, but for the in-flight count which put callbacks touch).
    std::unordered_map<std::string, core::TimePoint> published; // (ip|number) -> last put
    core::TokenBucket put_rate;
    std::mutex flight_mutex;
    std::condition_variable flight_cv;
    std::size_t in_flight = 0;

    // Receiving (OpenDHT's thread).
    std::mutex recv_mutex;
    std::unordered_set<std::string> seen;
    std::deque<std::string> seen_order;
    // Per self-declared node id: bounded, least recently used evicted one at a time.
    core::KeyedRateLimiter<std::string, core::StringHash> per_publisher;
    core::TokenBucket global_rate;

    std::atomic<std::uint64_t> sent{0}, put_failed{0}, deduped{0}, rate_limited{0}, received{0},
        accepted{0}, records_queued{0}, records_unshareable{0}, records_accepted{0};
    std::array<std::atomic<std::uint64_t>, kRejectReasons> rejected{};

    Impl(P2pOptions options, const core::Clock& c, Publish p)
        : o(std::move(options)), clock(c), publish(std::move(p)),
          put_rate(o.publish_rate, o.publish_rate * 10),
          per_publisher(o.peer_rate, o.peer_rate * 10, o.max_publishers),
          global_rate(o.max_peer_rate, o.max_peer_rate * 10) {}

    // A plaintext SentryPeer value under bad_actors (OpenDHT's thread): never a reporter.
    void onValue(const dht::Value& v) {
        received.fetch_add(1, std::memory_order_relaxed);
        std::string_view bytes(reinterpret_cast<const char*>(v.data.data()), v.data.size());
        auto d = decode(bytes, o.node_id, clock.now());
        if (d.event) {
            d.event->reporter.clear();
        }
        if (admit(d, d.event ? d.event->created_by_node_id : std::string())) {
            accepted.fetch_add(1, std::memory_order_relaxed);
        }
    }

    // A record the share library delivered (its worker thread): reporter = its publisher.
    void onRecord(const share::Delivered& r) {
        auto d = fromDelivered(r, o.node_id, clock.now());
        if (d.event && d.event->source_ip != r.record.subject) {
            d.event.reset(); // decode() takes source_ip from the subject: never happens
            d.reason = Reject::BadIp;
        }
        if (admit(d, r.publisher)) {
            records_accepted.fetch_add(1, std::memory_order_relaxed);
        }
    }

    // The checks both paths share (dedupe by UUID, per-publisher then global rate); publishes
    // an admitted event to the bus, counts a refused one by reason. Any receiving thread.
    bool admit(Decoded& d, const std::string& publisher) {
        if (d.event) {
            std::lock_guard lock(recv_mutex);
            if (!seen.insert(d.event->event_uuid).second) {
                d.reason = Reject::Duplicate;
                d.event.reset();
            } else {
                seen_order.push_back(d.event->event_uuid);
                if (seen_order.size() > kSeenUuids) {
                    seen.erase(seen_order.front());
                    seen_order.pop_front();
                }
                // Per publisher first, so one flooding id does not spend the global budget.
                auto now = clock.now();
                if (!per_publisher.allow(publisher, now)) {
                    d.reason = Reject::PublisherRate;
                    d.event.reset();
                } else if (!global_rate.allow(now)) {
                    d.reason = Reject::GlobalRate;
                    d.event.reset();
                }
            }
        }
        if (!d.event) {
            rejected[static_cast<std::size_t>(d.reason)].fetch_add(1, std::memory_order_relaxed);
            return false;
        }
        publish(std::make_shared<const core::Event>(std::move(*d.event)));
        return true;
    }

    void put(const core::Event& e) {
        std::string json = encode(e);
        {
            std::unique_lock lock(flight_mutex);
            if (!flight_cv.wait_for(lock, std::chrono::seconds(5),
                                    [&] { return in_flight < o.max_in_flight || !running; }) ||
                !running) {
                put_failed.fetch_add(1, std::memory_order_relaxed);
                return;
            }
            ++in_flight;
        }
        auto value = std::make_shared<dht::Value>(
            reinterpret_cast<const std::uint8_t*>(json.data()), json.size());
        value->user_type = "text/plain";
        runner.put(key, value, [this](bool ok) {
            (ok ? sent : put_failed).fetch_add(1, std::memory_order_relaxed);
            {
                std::lock_guard lock(flight_mutex);
                --in_flight;
            }
            flight_cv.notify_one();
        });
    }

    void peers(unsigned& good, unsigned& total) const {
        good = 0;
        total = 0;
        for (auto af : {sa_family_t{AF_INET}, sa_family_t{AF_INET6}}) {
            unsigned g = 0, d = 0, c = 0, i = 0;
            runner.getNodesStats(af, &g, &d, &c, &i);
            good += g;
            total += g + d;
        }
    }
};

P2pNode::P2pNode(P2pOptions options, const core::Clock& clock, Publish publish)
    : impl_(std::make_unique<Impl>(std::move(options), clock, std::move(publish))) {}

P2pNode::~P2pNode() {
    stop();
}

void P2pNode::start() {
    auto& d = *impl_;
    std::error_code ec;
    fs::create_directories(d.o.data_dir, ec);
    dht::DhtRunner::Config cfg;
    cfg.dht_config.node_config.network = static_cast<dht::NetId>(d.o.network);
    cfg.dht_config.node_config.persist_path = (fs::path(d.o.data_dir) / "dht-state").string();
    if (d.o.no_rate_limit) {
        cfg.dht_config.node_config.max_req_per_sec = -1;
        cfg.dht_config.node_config.max_peer_req_per_sec = -1;
    }
    auto id =
        share::loadOrCreateIdentity(fs::path(d.o.data_dir) / "dht-identity", d.o.key_bits,
                                    [](std::string_view line) { spdlog::warn("p2p: {}", line); });
    cfg.dht_config.id = id;
    cfg.threaded = true;
    d.identity = share::pkId(id);

    share::Options so;
    so.app = "sentrypeer";
    so.network = d.o.network;
    so.epoch = d.o.epoch;
    so.bucket = d.o.bucket;
    so.flush = d.o.flush;
    so.retention = d.o.epoch; // the design's R = one epoch (1 h): catch-up costs 6*S gets
    so.credit = d.o.credit;
    so.trust = d.o.trust;
    so.deny = d.o.deny;
    so.max_bytes_per_hour = d.o.max_bytes_per_hour;
    // A busy publisher flushes every `flush`: receivers must take that many batches per bucket
    // (the design's 6 is for 120 s flushes in 10-minute buckets).
    auto flushes = static_cast<unsigned>(
        std::chrono::duration_cast<std::chrono::milliseconds>(d.o.bucket).count() /
        std::max<std::int64_t>(1, d.o.flush.count()));
    so.max_batches_per_publisher_bucket = std::max(6U, flushes + 1);
    so.log = [](std::string_view line) { spdlog::info("p2p share: {}", line); };
    share::Callbacks cb;
    cb.confirmed = d.o.confirmed;
    cb.deliver = [&d](const share::Delivered& r) { d.onRecord(r); };
    try {
        d.sharer = std::make_unique<share::Sharer>(d.runner, id, std::move(so), std::move(cb));
    } catch (const std::exception& e) {
        throw std::runtime_error("cannot start the share protocol: " + std::string(e.what()));
    }
    try {
        d.runner.run(d.o.port, cfg);
    } catch (const std::exception& e) {
        throw std::runtime_error("cannot start the DHT node on UDP port " +
                                 std::to_string(d.o.port) + ": " + e.what());
    }
    // OpenDHT drops values with bad signatures after logging them: the share protocol counts
    // those lines (rejections "signature").
    auto note = [&d](char const* format, va_list args) {
        d.sharer->noteDhtLog(formatLog(format, args));
    };
    d.runner.setLoggers(dht::LogMethod(note), dht::LogMethod(note), {});
    d.running = true;
    for (const auto& b : d.o.bootstrap) {
        auto [host, port] = splitHostPort(b);
        // Retried by OpenDHT with backoff until the node is connected.
        d.runner.bootstrap(host, port);
    }
    d.runner.listen(d.key,
                    [&d](const std::vector<std::shared_ptr<dht::Value>>& values, bool expired) {
                        if (!expired) {
                            for (const auto& v : values) {
                                if (v) {
                                    d.onValue(*v);
                                }
                            }
                        }
                        return d.running.load();
                    });
    d.sharer->start();
    spdlog::info("p2p: share identity {} (credit {}){}", d.identity, share::toString(d.o.credit),
                 d.o.compat_publish ? "; SentryPeer compat publishing ON: every event is also put "
                                      "as plaintext that anyone on the DHT can read"
                                    : "");
}

void P2pNode::stop() {
    auto& d = *impl_;
    if (!d.running.exchange(false)) {
        return;
    }
    d.flight_cv.notify_all();
    if (d.sharer) {
        d.sharer->stop(); // cancels its puts and listens, joins its worker
    }
    auto done = std::make_shared<std::promise<void>>();
    auto fut = done->get_future();
    d.runner.shutdown([done] { done->set_value(); }, false);
    fut.wait_for(std::chrono::seconds(3));
    d.runner.join();
}

void P2pNode::consume(std::span<const core::EventPtr> batch) {
    auto& d = *impl_;
    if (!d.running) {
        return;
    }
    auto now = d.clock.now();
    for (const auto& e : batch) {
        if (e->origin != core::Origin::Local) {
            continue; // never re-share what peers shared
        }
        share::Record r;
        if (toRecord(*e, r)) {
            d.sharer->publish(std::move(r));
            d.records_queued.fetch_add(1, std::memory_order_relaxed);
        } else {
            d.records_unshareable.fetch_add(1, std::memory_order_relaxed);
        }
        if (!d.o.compat_publish) {
            continue;
        }
        std::string k = e->source_ip + '|' + e->called_number;
        auto [it, fresh] = d.published.try_emplace(k, now);
        if (!fresh && now - it->second < d.o.dedupe_window) {
            d.deduped.fetch_add(1, std::memory_order_relaxed);
            continue;
        }
        if (!d.put_rate.allow(now)) {
            d.rate_limited.fetch_add(1, std::memory_order_relaxed);
            if (fresh) {
                d.published.erase(it); // not shared: may go out next time
            }
            continue;
        }
        it->second = now;
        d.put(*e);
    }
}

void P2pNode::tick() {
    auto& d = *impl_;
    if (d.published.size() < 4096) {
        return;
    }
    auto now = d.clock.now();
    std::erase_if(d.published,
                  [&](const auto& kv) { return now - kv.second >= d.o.dedupe_window; });
}

void P2pNode::close() {
    stop();
}

namespace {

// The share protocol's counters (sentrypeer_p2p_share_*), from Sharer::status().
void collectShare(core::MetricsWriter& w, const share::Status& s, std::uint64_t accepted) {
    w.family("p2p_share_info", "gauge", "Share-to-receive identity (pkId) and credit level");
    w.sample(std::uint64_t{1},
             {{"identity", s.identity}, {"credit", std::string(share::toString(s.credit))}});
    w.family("p2p_share_newcomer", "gauge",
             "1 while this node still grants its key first (no reciprocating grant yet)");
    w.sample(std::uint64_t{s.newcomer ? 1U : 0U});
    w.family("p2p_share_partners", "gauge",
             "Identities this node grants its current key to, and whose current key it holds");
    w.sample(std::uint64_t{s.granted_to.size()}, {{"direction", "granted_to"}});
    w.sample(std::uint64_t{s.granted_by.size()}, {{"direction", "granted_by"}});
    w.family("p2p_share_records_total", "counter", "Share records, by what happened to them");
    w.sample(s.records_published, {{"event", "published"}});
    w.sample(s.records_dropped, {{"event", "dropped"}});
    w.sample(s.records_delivered, {{"event", "delivered"}});
    w.sample(s.records_credited, {{"event", "credited"}});
    w.sample(accepted, {{"event", "stored"}});
    w.family("p2p_share_batches_total", "counter", "Share batches put and received (decrypted)");
    w.sample(s.batches_put, {{"direction", "put"}});
    w.sample(s.batches_received, {{"direction", "received"}});
    w.family("p2p_share_grants_total", "counter", "Key grants sent and received (decrypted)");
    w.sample(s.grants_sent, {{"direction", "sent"}});
    w.sample(s.grants_received, {{"direction", "received"}});
    w.family("p2p_share_give_first_restarts_total", "counter",
             "Times this node, publishing but holding no partner's key for an epoch, began "
             "giving first again");
    w.sample(s.give_first_restarts);
    w.family("p2p_share_bytes_total", "counter",
             "Share protocol bytes put (one copy) and received (capped by --p2p-max-bandwidth)");
    w.sample(s.bytes_put, {{"direction", "put"}});
    w.sample(s.bytes_received, {{"direction", "received"}});
    w.family("p2p_share_rejections_total", "counter", "Share values rejected, by reason");
    const auto& r = s.rejected;
    for (auto [reason, n] : std::initializer_list<std::pair<const char*, std::uint64_t>>{
             {"signature", r.signature},
             {"cap", r.cap},
             {"binding", r.binding},
             {"replay", r.replay},
             {"no_key_expired", r.no_key_expired},
             {"decrypt", r.decrypt},
             {"context", r.context},
             {"record_schema", r.record_schema},
             {"record_time", r.record_time},
             {"duplicate", r.duplicate},
             {"denied", r.denied},
             {"bandwidth", r.bandwidth}}) {
        w.sample(n, {{"reason", reason}});
    }
    w.family("p2p_share_pending_batches", "gauge",
             "Received batches waiting for their publisher's key (bounded, at most 2,048)");
    w.sample(std::uint64_t{s.pending_batches});
    w.family("p2p_share_queued_records", "gauge",
             "Local records waiting for the next flush (bounded, at most 10,000)");
    w.sample(std::uint64_t{s.queued_records});
    w.family("p2p_share_publishers", "gauge",
             "Publishers tracked for credit, replay and caps (bounded, at most 4,096)");
    w.sample(std::uint64_t{s.publishers});
}

} // namespace

std::string P2pNode::identity() const {
    return impl_->identity;
}

std::string P2pNode::statusJson() const {
    auto& d = *impl_;
    unsigned good = 0, total = 0;
    std::string out = "{";
    auto str = [&](const char* k, const std::string& v) {
        if (out.size() > 1) {
            out += ", ";
        }
        core::appendJsonString(out, k);
        out += ": ";
        core::appendJsonString(out, v);
    };
    auto num = [&](const char* k, std::uint64_t v) {
        out += ", ";
        core::appendJsonString(out, k);
        out += ": " + std::to_string(v);
    };
    str("node_id", d.o.node_id);
    if (!d.running) {
        str("state", "stopped");
        return out + "}";
    }
    d.peers(good, total);
    str("state", good + total > 0 ? "connected" : "bootstrapping");
    str("dht_node_id", d.runner.getNodeId().toString());
    str("key", d.key.toString());
    num("network", d.o.network);
    num("port_ipv4", d.runner.getBoundPort(AF_INET));
    num("port_ipv6", d.runner.getBoundPort(AF_INET6));
    num("good_peers", good);
    num("total_peers", total);
    num("events_sent", d.sent.load());
    num("events_put_failed", d.put_failed.load());
    num("events_not_shared_duplicate", d.deduped.load());
    num("events_not_shared_rate_limited", d.rate_limited.load());
    num("values_received", d.received.load());
    num("events_accepted", d.accepted.load());
    out += ", \"values_rejected\": {";
    for (std::size_t i = 0; i < kRejectReasons; ++i) {
        out += (i ? ", " : "");
        core::appendJsonString(out, rejectName(static_cast<Reject>(i)));
        out += ": " + std::to_string(d.rejected[i].load());
    }
    out += "}";
    // Share to receive: this node's identity, its partners, credit, rejections, traffic.
    str("identity", d.identity);
    str("credit", std::string(share::toString(d.o.credit)));
    out +=
        std::string(", \"sentrypeer_compat_publish\": ") + (d.o.compat_publish ? "true" : "false");
    num("records_queued", d.records_queued.load());
    num("records_not_shareable", d.records_unshareable.load());
    num("records_accepted", d.records_accepted.load());
    out += ", \"share\": " + share::statusJson(d.sharer->status());
    return out + "}";
}

void P2pNode::collect(core::MetricsWriter& w) const {
    auto& d = *impl_;
    unsigned good = 0, total = 0;
    if (d.running) {
        d.peers(good, total);
    }
    w.family("p2p_info", "gauge", "Peer-to-peer node identity");
    std::string dht_id = d.running ? d.runner.getNodeId().toString() : "";
    w.sample(std::uint64_t{1}, {{"node_id", d.o.node_id}, {"dht_node_id", dht_id}});
    w.family("p2p_peers", "gauge", "DHT peers in the routing table");
    w.sample(std::uint64_t{good}, {{"state", "good"}});
    w.sample(std::uint64_t{total}, {{"state", "total"}});
    w.family("p2p_events_sent_total", "counter", "Events put into the DHT");
    w.sample(d.sent.load());
    w.family("p2p_put_failures_total", "counter", "DHT puts that failed");
    w.sample(d.put_failed.load());
    w.family("p2p_events_not_shared_total", "counter", "Local events not put, by reason");
    w.sample(d.deduped.load(), {{"reason", "duplicate"}});
    w.sample(d.rate_limited.load(), {{"reason", "rate_limited"}});
    w.family("p2p_values_received_total", "counter", "DHT values received on the key");
    w.sample(d.received.load());
    w.family("p2p_events_accepted_total", "counter", "Peer events accepted and stored");
    w.sample(d.accepted.load());
    std::size_t buckets = 0;
    std::uint64_t evicted = 0;
    {
        std::lock_guard lock(d.recv_mutex);
        buckets = d.per_publisher.size();
        evicted = d.per_publisher.evicted();
    }
    w.family("p2p_publisher_buckets", "gauge",
             "Per-publisher rate buckets held (at most 10,000; least recently seen evicted)");
    w.sample(std::uint64_t{buckets});
    w.family("p2p_publisher_buckets_evicted_total", "counter",
             "Per-publisher rate buckets evicted to make room for a new publisher");
    w.sample(evicted);
    w.family("p2p_values_rejected_total", "counter", "Peer values rejected, by reason");
    for (std::size_t i = 0; i < kRejectReasons; ++i) {
        w.sample(d.rejected[i].load(), {{"reason", rejectName(static_cast<Reject>(i))}});
    }
    if (d.running) {
        collectShare(w, d.sharer->status(), d.records_accepted.load());
    }
}

} // namespace sp::p2p
