#include "p2p/node.hpp"

#include <cerrno>
#include <condition_variable>
#include <deque>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <opendht/crypto.h>
#include <opendht/dhtrunner.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>
#include <unordered_map>
#include <unordered_set>

#include "core/json.hpp"
#include "core/keyed_rate_limit.hpp"
#include "core/rate_limit.hpp"
#include "core/string_map.hpp"
#include "core/text.hpp"
#include "p2p/identity.hpp"

namespace sp::p2p {

namespace fs = std::filesystem;

namespace {

constexpr std::size_t kSeenUuids = 200000; // dedupe memory for received events

dht::Blob readFile(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return dht::Blob((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Writes `data` to `path` through a fresh file created with `mode` (never readable by
// others, not even for a moment), then renames it over `path`. Throws naming the file.
void writePrivate(const fs::path& path, const dht::Blob& data, mode_t mode) {
    fs::path tmp = path;
    tmp += ".tmp";
    ::unlink(tmp.c_str()); // a leftover of a crash; O_EXCL below refuses anything in the way
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0) {
        throw std::runtime_error("cannot create " + tmp.string() + ": " +
                                 core::errnoMessage(errno));
    }
    ::fchmod(fd, mode); // the umask may have taken bits; it can only have removed some
    std::size_t done = 0;
    while (done < data.size()) {
        auto n = ::write(fd, data.data() + done, data.size() - done);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            int err = errno;
            ::close(fd);
            ::unlink(tmp.c_str());
            throw std::runtime_error("cannot write " + tmp.string() + ": " +
                                     core::errnoMessage(err));
        }
        done += static_cast<std::size_t>(n);
    }
    if (::fsync(fd) != 0 || ::close(fd) != 0) {
        ::unlink(tmp.c_str());
        throw std::runtime_error("cannot write " + tmp.string() + ": " + core::errnoMessage(errno));
    }
    std::error_code ec;
    fs::rename(tmp, path, ec);
    if (ec) {
        ::unlink(tmp.c_str());
        throw std::runtime_error("cannot write " + path.string() + ": " + ec.message());
    }
}

// A private key that group or others can read is made 0600 (it may have leaked: say so).
void fixKeyMode(const fs::path& key) {
    struct stat st {};
    if (::stat(key.c_str(), &st) != 0 || (st.st_mode & 077) == 0) {
        return;
    }
    if (::chmod(key.c_str(), S_IRUSR | S_IWUSR) != 0) {
        throw std::runtime_error(
            "the DHT identity key " + key.string() +
            " is readable by others and cannot be made private: " + core::errnoMessage(errno));
    }
    spdlog::warn("p2p: the DHT identity key {} was readable by others (mode {:o}); made it 0600",
                 key.string(), st.st_mode & 0777);
}

} // namespace

// The node's OpenDHT identity (EC key + self-signed certificate), created on first start.
// The key file is created 0600; the certificate is public.
dht::crypto::Identity loadOrCreateIdentity(const fs::path& base) {
    fs::path key = base;
    key += ".pem";
    fs::path crt = base;
    crt += ".crt";
    if (fs::exists(key) && fs::exists(crt)) {
        fixKeyMode(key);
        try {
            return {std::make_shared<dht::crypto::PrivateKey>(readFile(key)),
                    std::make_shared<dht::crypto::Certificate>(readFile(crt))};
        } catch (const std::exception& e) {
            throw std::runtime_error("cannot load the DHT identity " + key.string() + ": " +
                                     e.what());
        }
    }
    auto id = dht::crypto::generateEcIdentity("sentrypeer");
    try {
        writePrivate(key, id.first->serialize(), S_IRUSR | S_IWUSR);
        writePrivate(crt, id.second->getPacked(), S_IRUSR | S_IWUSR | S_IRGRP | S_IROTH);
    } catch (const std::exception& e) {
        throw std::runtime_error("cannot save the DHT identity: " + std::string(e.what()));
    }
    return id;
}

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
        accepted{0};
    std::array<std::atomic<std::uint64_t>, kRejectReasons> rejected{};

    Impl(P2pOptions options, const core::Clock& c, Publish p)
        : o(std::move(options)), clock(c), publish(std::move(p)),
          put_rate(o.publish_rate, o.publish_rate * 10),
          per_publisher(o.peer_rate, o.peer_rate * 10, o.max_publishers),
          global_rate(o.max_peer_rate, o.max_peer_rate * 10) {}

    void onValue(const dht::Value& v) {
        received.fetch_add(1, std::memory_order_relaxed);
        std::string_view bytes(reinterpret_cast<const char*>(v.data.data()), v.data.size());
        auto d = decode(bytes, o.node_id, clock.now());
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
                if (!per_publisher.allow(d.event->created_by_node_id, now)) {
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
            return;
        }
        accepted.fetch_add(1, std::memory_order_relaxed);
        publish(std::make_shared<const core::Event>(std::move(*d.event)));
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
    cfg.dht_config.id = loadOrCreateIdentity(fs::path(d.o.data_dir) / "dht-identity");
    cfg.threaded = true;
    try {
        d.runner.run(d.o.port, cfg);
    } catch (const std::exception& e) {
        throw std::runtime_error("cannot start the DHT node on UDP port " +
                                 std::to_string(d.o.port) + ": " + e.what());
    }
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
}

void P2pNode::stop() {
    auto& d = *impl_;
    if (!d.running.exchange(false)) {
        return;
    }
    d.flight_cv.notify_all();
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
    return out + "}}";
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
}

} // namespace sp::p2p
