#pragma once
// Webhook sink: POSTs each locally captured event (core::eventToJson, the same compact JSON
// as the log line) to an HTTP(S) URL with `Content-Type: application/json` and
// `User-Agent: sentrypeer/<version>`; optionally with an OAuth2 client-credentials token
// (`Authorization: Bearer <token>`), fetched from a token endpoint and cached until shortly
// before it expires. One libcurl easy handle per endpoint, reused (keep-alive).
//
// Delivery policy, per event: up to max_attempts tries, with exponential backoff
// (retry_base, doubling, capped at retry_max) only on transport errors (refused, timeout,
// reset, TLS), HTTP 5xx and 429. Any other status fails the event at once. On 401/403 with
// OAuth2 configured, a new token is fetched once and the event retried. An event that
// still fails is dropped and counted (failed).
// When delivery is impossible for reasons that are not the event's (retries exhausted,
// token endpoint failing, credentials refused) the endpoint is "down": for a backoff period
// (down_min, doubling per consecutive failure up to down_max, measured on the injected
// clock) events are counted as failed without being sent, so a big queue drains in
// microseconds instead of timeouts per event. After the period one event is tried once.
//
// Threads: runs on its own bus thread (sinkOptions()); consume/tick/close are called on that
// thread only. stats() and beginShutdown() are thread-safe. Never logs secrets (client
// secret, token) nor the URL's path/query/userinfo; logs are rate-limited.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "bus/event_bus.hpp"
#include "core/clock.hpp"
#include "core/metrics.hpp"
#include "core/rate_limit.hpp"

namespace sp::sinks {

// SentryPeer's defaults (its -i/-c OAuth2 client credentials).
inline constexpr const char* kDefaultOauth2TokenUrl =
    "https://dev-vtqcrudk2kakzqos.uk.auth0.com/oauth/token";
inline constexpr const char* kDefaultOauth2Audience = "https://sentrypeer.com/api";

struct WebhookOptions {
    std::string url; // http:// or https://; required
    // OAuth2 client credentials: used only when both id and secret are non-empty.
    std::string oauth2_client_id;
    std::string oauth2_client_secret;
    std::string oauth2_token_url = kDefaultOauth2TokenUrl;
    std::string oauth2_audience = kDefaultOauth2Audience;
    std::chrono::milliseconds connect_timeout{2000}; // per request (webhook and token)
    std::chrono::milliseconds total_timeout{5000};   // per request (webhook and token)
    int max_attempts = 3;                            // per event, >= 1
    std::chrono::milliseconds retry_base{200};       // first retry delay, doubled per retry
    std::chrono::milliseconds retry_max{2000};       // cap of one retry delay
    std::chrono::milliseconds down_min{1000};        // first "endpoint down" skip period
    std::chrono::milliseconds down_max{60000};       // cap of the skip period
    std::chrono::milliseconds shutdown_budget{2000}; // after beginShutdown(): give up then
};

// Counters, readable from any thread.
struct WebhookStats {
    std::uint64_t sent = 0;    // events accepted by the endpoint (2xx)
    std::uint64_t failed = 0;  // events dropped: retries exhausted, rejected, endpoint down,
                               // or still queued when the shutdown budget ran out
    std::uint64_t retries = 0; // extra attempts (not counting the token-refresh retry)
    std::uint64_t oauth2_token_fetches = 0; // token requests made (successful or not)
    std::uint64_t oauth2_failures = 0;      // token requests that yielded no token
    long last_http_status = 0; // of the last webhook POST; 0 = none yet or no HTTP response
};

class Webhook final : public bus::Sink {
public:
    // Validates the options (URLs must be http/https, max_attempts >= 1) and prepares the
    // HTTP handles. Throws std::invalid_argument naming the bad option (the URL is
    // redacted to scheme://host[:port]). Does no network I/O. Any thread.
    Webhook(WebhookOptions options, const core::Clock& clock);
    ~Webhook() override;
    Webhook(const Webhook&) = delete;
    Webhook& operator=(const Webhook&) = delete;

    // The bus settings it was designed for: thread "sp-webhook", a lossy bounded queue.
    static bus::SinkOptions sinkOptions();

    void consume(std::span<const core::EventPtr> batch) override;
    void close() override;

    // Thread-safe, idempotent. Starts the shutdown budget: from now on the sink keeps
    // delivering for at most options.shutdown_budget, then aborts the transfer in flight and
    // counts every remaining event as failed, so that EventBus::stop() (drain + close)
    // returns within about that budget even when the endpoint hangs. Call it when the
    // daemon decides to stop, before EventBus::stop().
    void beginShutdown();
    // Thread-safe (EventBus::abort, a second SIGTERM): like beginShutdown() with no budget
    // left: the transfer in flight is aborted now and what is queued counted as failed.
    void interrupt() override;

    // Writes the webhook_* families to /metrics. Any thread.
    void collect(core::MetricsWriter& w) const;

    WebhookStats stats() const;

    // scheme://host[:port] of a URL (no userinfo, path or query), for logs and errors.
    static std::string redactUrl(const std::string& url);

private:
    class Http;
    enum class Result { Sent, Rejected, Down, Aborted };
    enum class Try { Ok, Retry, Auth, Reject, Abort };

    Result deliver(const std::string& body, int max_attempts);
    Try postEvent(const std::string& body);
    Try fetchToken();
    bool haveValidToken(core::TimePoint now) const;
    bool shutdownExpired() const;
    bool sleepFor(std::chrono::milliseconds d); // false when the shutdown budget ran out
    void markDown(core::TimePoint now);
    std::pair<std::chrono::milliseconds, std::chrono::milliseconds> requestTimeouts() const;
    void logLimited(bool warning, const std::string& message);

    WebhookOptions options_;
    const core::Clock& clock_;
    std::string url_for_logs_;
    bool oauth2_ = false;
    std::unique_ptr<Http> webhook_http_;
    std::unique_ptr<Http> token_http_;

    // Sink thread only.
    std::string body_;
    std::string token_;             // never logged
    std::string last_error_;        // why the last attempt failed, for logs (no secrets)
    core::TimePoint token_refresh_; // refresh at/after this time; max() = until rejected
    core::TimePoint down_until_{};
    std::chrono::milliseconds down_period_{0}; // 0 = up
    std::uint64_t failed_while_down_ = 0;      // for the log line on recovery
    core::TokenBucket log_limit_{1.0 / 60, 3};

    // Shutdown: steady-clock deadline in ns since epoch, 0 = not shutting down.
    std::atomic<std::int64_t> shutdown_deadline_ns_{0};
    struct Sleeper;
    std::unique_ptr<Sleeper> sleeper_;

    std::atomic<std::uint64_t> sent_{0};
    std::atomic<std::uint64_t> failed_{0};
    std::atomic<std::uint64_t> retries_{0};
    std::atomic<std::uint64_t> token_fetches_{0};
    std::atomic<std::uint64_t> token_failures_{0};
    std::atomic<long> last_status_{0};
};

} // namespace sp::sinks
