// sp::share example: two nodes on loopback share one record each and receive the other's.
//
// Build against an installed libsentrypeer-share:
//   c++ -std=c++20 share_example.cpp $(pkg-config --cflags --libs sentrypeer-share) -o
//   share_example
// Run: ./share_example   (exit 0 when each node received the other's record)
#include <share/share.hpp>

#include <opendht/dhtrunner.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

using namespace std::chrono_literals;

namespace {

struct Peer {
    dht::DhtRunner runner;
    dht::crypto::Identity id;
    std::unique_ptr<sp::share::Sharer> sharer;
    std::atomic<int> received{0};
};

void startRunner(Peer& p, in_port_t bootstrap_port) {
    dht::DhtRunner::Config cfg;
    cfg.dht_config.node_config.network = 0x52435058; // a private network id
    cfg.dht_config.node_config.max_req_per_sec = -1; // loopback: no rate limits
    cfg.dht_config.node_config.max_peer_req_per_sec = -1;
    cfg.dht_config.id = p.id; // the Sharer's identity must be the runner's
    cfg.threaded = true;
    cfg.bind4 = dht::SockAddr::resolve("127.0.0.1", "0").front();
    p.runner.run(cfg, dht::DhtRunner::Context{});
    if (bootstrap_port != 0) {
        p.runner.bootstrap("127.0.0.1", std::to_string(bootstrap_port));
    }
}

} // namespace

int main() {
    Peer a;
    Peer b;
    // Real applications keep their identity: sp::share::loadOrCreateIdentity(dir / "id").
    a.id = dht::crypto::generateIdentity("a", {}, 2048);
    b.id = dht::crypto::generateIdentity("b", {}, 2048);
    startRunner(a, 0);
    startRunner(b, a.runner.getBoundPort());

    sp::share::Options options;
    options.app = "example";
    options.network = 1;
    options.epoch = 6s; // short timings for a demo; the defaults are 1 h / 10 min / 120 s
    options.bucket = 1s;
    options.flush = 200ms;
    options.retention = 6s;
    options.credit = sp::share::Credit::L0; // any valid record earns credit

    for (Peer* p : {&a, &b}) {
        sp::share::Callbacks callbacks;
        callbacks.deliver = [p](sp::share::Delivered d) { // the Sharer's worker thread
            std::printf("%s received %s from %s (credited: %s)\n",
                        sp::share::pkId(p->id).substr(0, 8).c_str(), d.record.subject.c_str(),
                        d.publisher.substr(0, 8).c_str(), d.credited ? "yes" : "no");
            p->received++;
        };
        p->sharer = std::make_unique<sp::share::Sharer>(p->runner, p->id, options, callbacks);
        p->sharer->start();
    }

    // Each node shares what it saw; it receives the other's only because it shares too.
    auto record = [](std::uint8_t n, const char* subject) {
        sp::share::Record r;
        r.id.fill(n);
        r.time = std::chrono::duration_cast<std::chrono::seconds>(
                     std::chrono::system_clock::now().time_since_epoch())
                     .count();
        r.subject = subject;
        r.attributes = {{"user_agent", "friendly-scanner"}};
        return r;
    };
    auto deadline = std::chrono::steady_clock::now() + 30s;
    std::uint8_t n = 0;
    while ((a.received == 0 || b.received == 0) && std::chrono::steady_clock::now() < deadline) {
        // Until the keys are granted a node cannot read the other's batches, so keep sharing.
        a.sharer->publish(record(++n, "203.0.113.10"));
        b.sharer->publish(record(++n, "198.51.100.20"));
        std::this_thread::sleep_for(500ms);
    }
    std::printf("%s\n", sp::share::statusJson(a.sharer->status()).c_str());
    bool ok = a.received > 0 && b.received > 0;
    for (Peer* p : {&a, &b}) {
        p->sharer->stop();
        p->runner.shutdown({}, true);
        p->runner.join();
    }
    std::printf("%s\n", ok ? "ok: both nodes received the other's record" : "FAILED");
    return ok ? 0 : 1;
}
