#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <atomic>
#include <cstdlib>
#include <functional>
#include <map>
#include <mutex>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

#include "bus/event_bus.hpp"
#include "core/json.hpp"
#include "core/version.hpp"
#include "sinks/webhook.hpp"

using namespace sp;
using namespace sp::sinks;
using namespace std::chrono_literals;

namespace {

// libcurl honours http_proxy & co.: the loopback test server must never go through a proxy.
// Runs during static initialisation, before any test thread exists.
[[maybe_unused]] const bool kNoProxy = [] {
    for (const char* name :
         {"http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"}) {
        ::unsetenv(name);
    }
    return true;
}();

struct Request {
    std::string method;
    std::string target;
    std::map<std::string, std::string> headers; // lowercase names
    std::string body;
    int connection = 0; // which accepted connection carried it

    std::string header(const std::string& name) const {
        auto it = headers.find(name);
        return it == headers.end() ? std::string() : it->second;
    }
};

struct Reply {
    int status = 200;
    std::string body;
    bool hang = false; // never answer (the connection stays open)
};

// A tiny HTTP/1.1 server on 127.0.0.1:0 for the tests: one thread polls the listening socket
// and every connection (the sink holds two keep-alive connections at once: webhook and
// token endpoint), reads Content-Length framed requests, records them and answers with the
// handler's reply. The handler runs on the server thread.
class TestServer {
public:
    using Handler = std::function<Reply(const Request&)>;

    explicit TestServer(Handler handler) : handler_(std::move(handler)) {
        listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int one = 1;
        ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
            ::listen(listen_fd_, 64) != 0) {
            throw std::runtime_error("test server: bind/listen failed");
        }
        socklen_t len = sizeof addr;
        ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
        port_ = ntohs(addr.sin_port);
        thread_ = std::thread([this] { run(); });
    }

    ~TestServer() {
        stop_ = true;
        thread_.join();
        for (auto& c : conns_) {
            ::close(c.fd);
        }
        ::close(listen_fd_);
    }

    std::string url(const std::string& path) const {
        return "http://127.0.0.1:" + std::to_string(port_) + path;
    }

    std::vector<Request> requests(const std::string& target = "") const {
        std::lock_guard lock(mutex_);
        std::vector<Request> out;
        for (const auto& r : requests_) {
            if (target.empty() || r.target == target) {
                out.push_back(r);
            }
        }
        return out;
    }

    int connectionsAccepted() const { return accepted_.load(); }

private:
    struct Conn {
        int fd;
        int id;
        std::string in;
        bool hung = false;
    };

    void run() {
        while (!stop_) {
            std::vector<pollfd> fds{{listen_fd_, POLLIN, 0}};
            for (const auto& c : conns_) {
                fds.push_back({c.fd, POLLIN, 0});
            }
            if (::poll(fds.data(), fds.size(), 20) <= 0) {
                continue;
            }
            if ((fds[0].revents & POLLIN) != 0) {
                int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
                if (fd >= 0) {
                    conns_.push_back({fd, ++accepted_, {}});
                }
            }
            for (std::size_t i = 1; i < fds.size(); ++i) {
                if (fds[i].revents == 0) {
                    continue;
                }
                Conn& c = conns_[i - 1];
                char buf[65536];
                ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
                if (n <= 0) {
                    ::close(c.fd);
                    c.fd = -1;
                    continue;
                }
                c.in.append(buf, static_cast<std::size_t>(n));
                serve(c);
            }
            std::erase_if(conns_, [](const Conn& c) { return c.fd < 0; });
        }
    }

    // Answers every complete request buffered on c.
    void serve(Conn& c) {
        for (;;) {
            auto head_end = c.in.find("\r\n\r\n");
            if (head_end == std::string::npos || c.hung) {
                return;
            }
            Request r;
            r.connection = c.id;
            std::size_t line_end = c.in.find("\r\n");
            std::string first = c.in.substr(0, line_end);
            auto sp1 = first.find(' ');
            auto sp2 = first.find(' ', sp1 + 1);
            r.method = first.substr(0, sp1);
            r.target = first.substr(sp1 + 1, sp2 - sp1 - 1);
            std::size_t pos = line_end + 2;
            while (pos < head_end) {
                std::size_t eol = c.in.find("\r\n", pos);
                std::string line = c.in.substr(pos, eol - pos);
                auto colon = line.find(':');
                std::string name = line.substr(0, colon);
                for (auto& ch : name) {
                    ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
                }
                std::string value = line.substr(colon + 1);
                value.erase(0, value.find_first_not_of(' '));
                r.headers[name] = value;
                pos = eol + 2;
            }
            std::size_t length = 0;
            if (auto cl = r.headers.find("content-length"); cl != r.headers.end()) {
                length = std::stoul(cl->second);
            }
            if (c.in.size() < head_end + 4 + length) {
                return; // body not complete yet
            }
            r.body = c.in.substr(head_end + 4, length);
            c.in.erase(0, head_end + 4 + length);
            Reply reply = handler_(r);
            {
                std::lock_guard lock(mutex_);
                requests_.push_back(r);
            }
            if (reply.hang) {
                c.hung = true;
                return;
            }
            std::string out = "HTTP/1.1 " + std::to_string(reply.status) +
                              " Test\r\nContent-Type: application/json\r\nContent-Length: " +
                              std::to_string(reply.body.size()) + "\r\n\r\n" + reply.body;
            for (std::size_t sent = 0; sent < out.size();) {
                ssize_t n = ::send(c.fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
                if (n <= 0) {
                    return;
                }
                sent += static_cast<std::size_t>(n);
            }
        }
    }

    Handler handler_;
    int listen_fd_ = -1;
    std::uint16_t port_ = 0;
    std::atomic<bool> stop_{false};
    std::atomic<int> accepted_{0};
    std::vector<Conn> conns_; // server thread only
    mutable std::mutex mutex_;
    std::vector<Request> requests_;
    std::thread thread_;
};

// A port on 127.0.0.1 where nothing listens (bound, then released).
std::uint16_t closedPort() {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    socklen_t len = sizeof addr;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    ::close(fd);
    return ntohs(addr.sin_port);
}

core::EventPtr probe(int n, core::Origin origin = core::Origin::Local) {
    auto e = std::make_shared<core::Event>();
    e->app_version = core::kVersion;
    e->event_timestamp = "2023-11-14 22:13:20.123456789";
    e->event_uuid = "123e4567-e89b-42d3-a456-42661417" + std::to_string(1000 + n);
    e->created_by_node_id = "0d5c8f3e-7d1a-4c59-9a3e-1f2b3c4d5e6f";
    e->collected_method = "passive";
    e->transport_type = "UDP";
    e->source_ip = "192.0.2.7";
    e->source_port = 5062;
    e->destination_ip = "198.51.100.1";
    e->destination_port = 5060;
    e->called_number = "4471234567";
    e->sip_method = "OPTIONS";
    e->sip_user_agent = "friendly-scanner \"quoted\"";
    // Over 1 KiB: libcurl would wait for "100 Continue" unless told not to.
    e->sip_message = "OPTIONS sip:100@198.51.100.1 SIP/2.0\r\n" + std::string(1500, 'x') + "\r\n";
    e->origin = origin;
    return e;
}

std::vector<core::EventPtr> probes(int n, int first = 0) {
    std::vector<core::EventPtr> out;
    for (int i = 0; i < n; ++i) {
        out.push_back(probe(first + i));
    }
    return out;
}

WebhookOptions fastOptions(std::string url) {
    WebhookOptions o;
    o.url = std::move(url);
    o.retry_base = 10ms;
    o.retry_max = 40ms;
    o.connect_timeout = 1000ms;
    o.total_timeout = 2000ms;
    return o;
}

std::string tokenReply(const std::string& token, int expires_in) {
    return nlohmann::json{
        {"access_token", token}, {"token_type", "Bearer"}, {"expires_in", expires_in}}
        .dump();
}

double secondsSince(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

} // namespace

TEST(Webhook, PostsTheEventJsonWithItsHeadersOnOneConnection) {
    TestServer server([](const Request&) { return Reply{200, "{}"}; });
    core::ManualClock clock;
    Webhook sink(fastOptions(server.url("/events")), clock);
    auto a = probe(1);
    auto b = probe(2);
    std::vector<core::EventPtr> batch{a, probe(3, core::Origin::Peer), b};
    sink.consume(batch);

    auto got = server.requests();
    ASSERT_EQ(got.size(), 2u) << "peer events are not sent";
    EXPECT_EQ(got[0].method, "POST");
    EXPECT_EQ(got[0].target, "/events");
    EXPECT_EQ(got[0].body, core::eventToJson(*a));
    EXPECT_EQ(got[1].body, core::eventToJson(*b));
    EXPECT_EQ(got[0].header("content-type"), "application/json");
    EXPECT_EQ(got[0].header("user-agent"), std::string("sentrypeer/") + core::kVersion);
    EXPECT_EQ(got[0].header("authorization"), "");
    EXPECT_EQ(got[0].header("expect"), "");
    auto json = nlohmann::ordered_json::parse(got[0].body);
    EXPECT_EQ(json.begin().key(), "app_name");
    EXPECT_EQ(json["sip_user_agent"], "friendly-scanner \"quoted\"");
    EXPECT_EQ(server.connectionsAccepted(), 1) << "the connection is kept alive";

    auto s = sink.stats();
    EXPECT_EQ(s.sent, 2u);
    EXPECT_EQ(s.failed, 0u);
    EXPECT_EQ(s.retries, 0u);
    EXPECT_EQ(s.last_http_status, 200);
    EXPECT_EQ(s.oauth2_token_fetches, 0u);
    sink.close();
}

TEST(Webhook, RetriesOn5xxAnd429ThenSucceeds) {
    std::atomic<int> n{0};
    TestServer server([&](const Request&) {
        int i = n++;
        return Reply{i == 0 ? 500 : (i == 1 ? 429 : 201), ""};
    });
    core::ManualClock clock;
    Webhook sink(fastOptions(server.url("/events")), clock);
    auto e = probe(1);
    std::vector<core::EventPtr> batch{e};
    sink.consume(batch);

    auto got = server.requests();
    ASSERT_EQ(got.size(), 3u);
    for (const auto& r : got) {
        EXPECT_EQ(r.body, core::eventToJson(*e));
    }
    auto s = sink.stats();
    EXPECT_EQ(s.sent, 1u);
    EXPECT_EQ(s.failed, 0u);
    EXPECT_EQ(s.retries, 2u);
    EXPECT_EQ(s.last_http_status, 201);
}

TEST(Webhook, OtherClientErrorsFailTheEventWithoutRetryOrBackoff) {
    TestServer server([](const Request&) { return Reply{400, ""}; });
    core::ManualClock clock;
    Webhook sink(fastOptions(server.url("/events")), clock);
    auto batch = probes(2);
    sink.consume(batch);
    EXPECT_EQ(server.requests().size(), 2u) << "a rejected event does not pause delivery";
    auto s = sink.stats();
    EXPECT_EQ(s.sent, 0u);
    EXPECT_EQ(s.failed, 2u);
    EXPECT_EQ(s.retries, 0u);
    EXPECT_EQ(s.last_http_status, 400);
}

TEST(Webhook, ExhaustedRetriesPauseDeliveryUntilTheBackoffEnds) {
    std::atomic<int> status{503};
    TestServer server([&](const Request&) { return Reply{status.load(), ""}; });
    core::ManualClock clock;
    auto options = fastOptions(server.url("/events"));
    options.down_min = 1000ms;
    Webhook sink(options, clock);

    auto first = probes(1);
    sink.consume(first);
    EXPECT_EQ(server.requests().size(), 3u);
    auto more = probes(5, 10);
    sink.consume(more); // within the down period: counted, not sent
    EXPECT_EQ(server.requests().size(), 3u);
    EXPECT_EQ(sink.stats().failed, 6u);
    EXPECT_EQ(sink.stats().retries, 2u);

    // Still down after the period: a single probe attempt, then a longer (doubled) pause.
    clock.advance(1001ms);
    auto probe_batch = probes(1, 20);
    sink.consume(probe_batch);
    EXPECT_EQ(server.requests().size(), 4u);
    clock.advance(1001ms);
    sink.consume(probe_batch);
    EXPECT_EQ(server.requests().size(), 4u) << "second pause is 2 s";
    EXPECT_EQ(sink.stats().failed, 8u);

    status = 200;
    clock.advance(1000ms);
    auto last = probes(2, 30);
    sink.consume(last);
    EXPECT_EQ(server.requests().size(), 6u);
    EXPECT_EQ(sink.stats().sent, 2u);
    EXPECT_EQ(sink.stats().retries, 2u);
}

namespace {

// Token endpoint at /token issuing tok-1, tok-2, ...; webhook at /events accepting only
// `accepted_token` (or any token when empty).
struct OAuthServer {
    std::atomic<int> tokens{0};
    std::atomic<int> expires_in{100};
    std::mutex mutex;
    std::string accepted_token; // guarded by mutex
    TestServer server{[this](const Request& r) {
        if (r.target == "/token") {
            return Reply{200, tokenReply("tok-" + std::to_string(++tokens), expires_in.load())};
        }
        std::lock_guard lock(mutex);
        if (!accepted_token.empty() && r.header("authorization") != "Bearer " + accepted_token) {
            return Reply{401, ""};
        }
        return Reply{200, ""};
    }};

    WebhookOptions options() {
        auto o = fastOptions(server.url("/events"));
        o.oauth2_client_id = "client-id-1";
        o.oauth2_client_secret = "s3cret\"x";
        o.oauth2_token_url = server.url("/token");
        o.oauth2_audience = "https://sentrypeer.com/api";
        return o;
    }
};

} // namespace

TEST(WebhookOAuth2, FetchesATokenAndSendsItAsBearer) {
    OAuthServer oauth;
    core::ManualClock clock;
    Webhook sink(oauth.options(), clock);
    auto batch = probes(2);
    sink.consume(batch);

    auto token_requests = oauth.server.requests("/token");
    ASSERT_EQ(token_requests.size(), 1u);
    const auto& t = token_requests[0];
    EXPECT_EQ(t.method, "POST");
    EXPECT_EQ(t.header("content-type"), "application/json");
    auto body = nlohmann::json::parse(t.body);
    EXPECT_EQ(body, (nlohmann::json{{"client_id", "client-id-1"},
                                    {"client_secret", "s3cret\"x"},
                                    {"audience", "https://sentrypeer.com/api"},
                                    {"grant_type", "client_credentials"}}));
    auto events = oauth.server.requests("/events");
    ASSERT_EQ(events.size(), 2u);
    EXPECT_EQ(events[0].header("authorization"), "Bearer tok-1");
    EXPECT_EQ(events[1].header("authorization"), "Bearer tok-1");
    EXPECT_EQ(events[0].header("content-type"), "application/json");
    auto s = sink.stats();
    EXPECT_EQ(s.sent, 2u);
    EXPECT_EQ(s.oauth2_token_fetches, 1u);
    EXPECT_EQ(s.oauth2_failures, 0u);
}

TEST(WebhookOAuth2, TokenIsCachedUntilShortlyBeforeItExpires) {
    OAuthServer oauth;
    oauth.expires_in = 100;
    core::ManualClock clock;
    Webhook sink(oauth.options(), clock);
    auto one = probes(1);
    sink.consume(one);
    clock.advance(80s);
    sink.consume(one);
    EXPECT_EQ(sink.stats().oauth2_token_fetches, 1u) << "still valid at 80 s of 100";
    clock.advance(15s); // 95 s: within the refresh margin (a tenth of the lifetime)
    sink.consume(one);
    EXPECT_EQ(sink.stats().oauth2_token_fetches, 2u);
    auto events = oauth.server.requests("/events");
    ASSERT_EQ(events.size(), 3u);
    EXPECT_EQ(events[1].header("authorization"), "Bearer tok-1");
    EXPECT_EQ(events[2].header("authorization"), "Bearer tok-2");
    clock.advance(50s);
    sink.consume(one);
    EXPECT_EQ(sink.stats().oauth2_token_fetches, 2u);
    EXPECT_EQ(sink.stats().sent, 4u);
}

TEST(WebhookOAuth2, UnauthorizedRefreshesTheTokenOnceAndRetries) {
    OAuthServer oauth;
    {
        std::lock_guard lock(oauth.mutex);
        oauth.accepted_token = "tok-2"; // the first token is "revoked"
    }
    core::ManualClock clock;
    Webhook sink(oauth.options(), clock);
    auto one = probes(1);
    sink.consume(one);
    auto events = oauth.server.requests("/events");
    ASSERT_EQ(events.size(), 2u);
    EXPECT_EQ(events[0].header("authorization"), "Bearer tok-1");
    EXPECT_EQ(events[1].header("authorization"), "Bearer tok-2");
    EXPECT_EQ(events[0].body, events[1].body);
    auto s = sink.stats();
    EXPECT_EQ(s.sent, 1u);
    EXPECT_EQ(s.failed, 0u);
    EXPECT_EQ(s.retries, 0u);
    EXPECT_EQ(s.oauth2_token_fetches, 2u);

    // Refused again with a fresh token: one refresh only, then the endpoint is paused.
    {
        std::lock_guard lock(oauth.mutex);
        oauth.accepted_token = "never";
    }
    auto more = probes(3, 10);
    sink.consume(more);
    EXPECT_EQ(sink.stats().oauth2_token_fetches, 3u);
    EXPECT_EQ(oauth.server.requests("/events").size(), 4u);
    EXPECT_EQ(sink.stats().failed, 3u);
    EXPECT_EQ(sink.stats().last_http_status, 401);
}

TEST(WebhookOAuth2, RefusedCredentialsAreCountedAndPauseDelivery) {
    TestServer server([](const Request& r) {
        return r.target == "/token" ? Reply{401, R"({"error":"access_denied"})"} : Reply{200, ""};
    });
    core::ManualClock clock;
    auto o = fastOptions(server.url("/events"));
    o.oauth2_client_id = "id";
    o.oauth2_client_secret = "secret";
    o.oauth2_token_url = server.url("/token");
    Webhook sink(o, clock);
    auto batch = probes(10);
    sink.consume(batch);
    EXPECT_EQ(server.requests("/token").size(), 1u) << "no token request per event";
    EXPECT_EQ(server.requests("/events").size(), 0u);
    auto s = sink.stats();
    EXPECT_EQ(s.oauth2_token_fetches, 1u);
    EXPECT_EQ(s.oauth2_failures, 1u);
    EXPECT_EQ(s.failed, 10u);
}

TEST(WebhookOAuth2, MalformedTokenResponsesAreFailures) {
    for (std::string reply : {std::string("not json"), std::string(R"({"token_type":"Bearer"})"),
                              std::string(R"({"access_token":""})"),
                              std::string(R"({"access_token":"a\r\nX-Evil: 1"})"),
                              std::string(R"(["access_token"])")}) {
        TestServer server([&](const Request& r) {
            return r.target == "/token" ? Reply{200, reply} : Reply{200, ""};
        });
        core::ManualClock clock;
        auto o = fastOptions(server.url("/events"));
        o.oauth2_client_id = "id";
        o.oauth2_client_secret = "secret";
        o.oauth2_token_url = server.url("/token");
        Webhook sink(o, clock);
        auto one = probes(1);
        sink.consume(one);
        EXPECT_EQ(sink.stats().oauth2_failures, 1u) << reply;
        EXPECT_EQ(sink.stats().failed, 1u) << reply;
        EXPECT_EQ(server.requests("/events").size(), 0u) << reply;
    }
}

TEST(WebhookOAuth2, TokenWithoutExpiryIsKeptUntilRefusedAndStringExpiryIsRead) {
    std::atomic<int> n{0};
    std::atomic<bool> revoke_a{false};
    TestServer server([&](const Request& r) {
        if (r.target == "/token") {
            return Reply{200, ++n == 1 ? R"({"access_token":"a"})"
                                       : R"({"access_token":"b","expires_in":"10"})"};
        }
        return Reply{revoke_a && r.header("authorization") == "Bearer a" ? 403 : 200, ""};
    });
    core::ManualClock clock;
    auto o = fastOptions(server.url("/events"));
    o.oauth2_client_id = "id";
    o.oauth2_client_secret = "secret";
    o.oauth2_token_url = server.url("/token");
    Webhook sink(o, clock);
    auto one = probes(1);
    sink.consume(one);
    clock.advance(24h * 365);
    sink.consume(one);
    EXPECT_EQ(sink.stats().oauth2_token_fetches, 1u) << "no expires_in: kept until refused";
    revoke_a = true;
    sink.consume(one); // 403 -> token "b", valid 10 s
    EXPECT_EQ(sink.stats().oauth2_token_fetches, 2u);
    clock.advance(5s);
    sink.consume(one);
    EXPECT_EQ(sink.stats().oauth2_token_fetches, 2u);
    clock.advance(5s);
    sink.consume(one);
    EXPECT_EQ(sink.stats().oauth2_token_fetches, 3u) << "\"expires_in\": \"10\" was read";
    EXPECT_EQ(sink.stats().sent, 5u);
    EXPECT_EQ(sink.stats().failed, 0u);
}

TEST(Webhook, ClosedPortFailsFastAndShutdownReturnsQuickly) {
    core::ManualClock clock;
    auto options = fastOptions("http://127.0.0.1:" + std::to_string(closedPort()) + "/events");
    options.retry_base = 200ms; // the production schedule: 200 ms, 400 ms
    options.retry_max = 2000ms;
    auto sink = std::make_shared<Webhook>(options, clock);
    bus::EventBus bus;
    bus.addSink(sink, Webhook::sinkOptions());
    bus.start();
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 2000; ++i) {
        bus.publish(probe(i));
    }
    // The first event takes its retries (~0.6 s); the rest are dropped during the pause.
    for (int i = 0; i < 300 && sink->stats().failed < 2000; ++i) {
        std::this_thread::sleep_for(10ms);
    }
    EXPECT_EQ(sink->stats().failed, 2000u);
    EXPECT_LT(secondsSince(t0), 2.5);
    auto t1 = std::chrono::steady_clock::now();
    sink->beginShutdown();
    bus.stop();
    EXPECT_LT(secondsSince(t1), 0.5);
    auto s = sink->stats();
    EXPECT_EQ(s.sent, 0u);
    EXPECT_EQ(s.failed, 2000u);
    EXPECT_EQ(s.retries, 2u);
    EXPECT_EQ(s.last_http_status, 0);
    EXPECT_EQ(bus.stats()[0].dropped, 0u);
}

TEST(Webhook, ShutdownIsBoundedWhenTheEndpointHangs) {
    TestServer server([](const Request&) { return Reply{200, "", true}; });
    core::ManualClock clock;
    auto options = fastOptions(server.url("/events"));
    options.total_timeout = 5000ms;
    options.shutdown_budget = 500ms;
    auto sink = std::make_shared<Webhook>(options, clock);
    bus::EventBus bus;
    bus.addSink(sink, Webhook::sinkOptions());
    bus.start();
    for (int i = 0; i < 50; ++i) {
        bus.publish(probe(i));
    }
    for (int i = 0; i < 200 && server.requests().empty(); ++i) {
        std::this_thread::sleep_for(10ms);
    }
    ASSERT_EQ(server.requests().size(), 1u) << "the first POST is in flight";
    auto t0 = std::chrono::steady_clock::now();
    sink->beginShutdown();
    bus.stop();
    double took = secondsSince(t0);
    EXPECT_GE(took, 0.4) << "it kept trying within the budget";
    EXPECT_LT(took, 2.0) << "the budget bounds shutdown";
    auto s = sink->stats();
    EXPECT_EQ(s.sent, 0u);
    EXPECT_EQ(s.failed, 50u);
}

TEST(Webhook, ShutdownWithAHealthyEndpointDeliversEverything) {
    TestServer server([](const Request&) { return Reply{204, ""}; });
    core::SystemClock clock;
    auto sink = std::make_shared<Webhook>(fastOptions(server.url("/events")), clock);
    bus::EventBus bus;
    bus.addSink(sink, Webhook::sinkOptions());
    bus.start();
    for (int i = 0; i < 300; ++i) {
        bus.publish(probe(i));
    }
    sink->beginShutdown();
    bus.stop();
    EXPECT_EQ(sink->stats().sent, 300u);
    EXPECT_EQ(server.requests().size(), 300u);
}

TEST(Webhook, BadOptionsAreRefusedWithoutLeakingSecrets) {
    core::ManualClock clock;
    auto expectRefused = [&](WebhookOptions o, const std::string& secret) {
        try {
            Webhook sink(std::move(o), clock);
            ADD_FAILURE() << "accepted";
        } catch (const std::invalid_argument& e) {
            EXPECT_EQ(std::string(e.what()).find(secret), std::string::npos) << e.what();
        }
    };
    WebhookOptions o;
    o.url = "ftp://user:pa55@192.0.2.1/x";
    expectRefused(o, "pa55");
    o.url = "127.0.0.1:8080/events";
    expectRefused(o, "\x01");
    o.url = "";
    expectRefused(o, "\x01");
    o.url = "http://192.0.2.1/events";
    o.max_attempts = 0;
    expectRefused(o, "\x01");
    o.max_attempts = 3;
    o.oauth2_client_id = "id";
    o.oauth2_client_secret = "secret";
    o.oauth2_token_url = "file:///etc/passwd";
    expectRefused(o, "secret");
    o.oauth2_client_secret = ""; // OAuth2 off: the token URL is not used
    EXPECT_NO_THROW(Webhook(o, clock));
}

TEST(Webhook, RedactedUrlKeepsOnlySchemeHostAndPort) {
    EXPECT_EQ(Webhook::redactUrl("https://user:secret@example.com:8443/p?token=x"),
              "https://example.com:8443");
    EXPECT_EQ(Webhook::redactUrl("http://192.0.2.1/events"), "http://192.0.2.1");
    EXPECT_EQ(Webhook::redactUrl("not a url"), "<unparsable URL>");
}
