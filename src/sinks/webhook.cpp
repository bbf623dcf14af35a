#include "sinks/webhook.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <condition_variable>
#include <curl/curl.h>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <spdlog/spdlog.h>
#include <stdexcept>
#include <vector>

#include "core/json.hpp"
#include "core/version.hpp"

namespace sp::sinks {

namespace {

using SteadyClock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr std::size_t kMaxResponseBody = 64UL * 1024; // token responses are a few hundred bytes

std::int64_t steadyNowNs() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               SteadyClock::now().time_since_epoch())
        .count();
}

// Parsed URL parts, or nullopt-like (ok == false) when it is not an absolute URL.
struct UrlParts {
    bool ok = false;
    std::string scheme;
    std::string host;
    std::string port; // empty when not explicit
};

UrlParts parseUrl(const std::string& url) {
    UrlParts parts;
    CURLU* u = curl_url();
    if (u == nullptr) {
        return parts;
    }
    auto get = [u](CURLUPart what, std::string& out) {
        char* value = nullptr;
        if (curl_url_get(u, what, &value, 0) != CURLUE_OK || value == nullptr) {
            return false;
        }
        out = value;
        curl_free(value);
        return true;
    };
    if (curl_url_set(u, CURLUPART_URL, url.c_str(), 0) == CURLUE_OK &&
        get(CURLUPART_SCHEME, parts.scheme) && get(CURLUPART_HOST, parts.host)) {
        get(CURLUPART_PORT, parts.port);
        parts.ok = true;
    }
    curl_url_cleanup(u);
    return parts;
}

void validateUrl(const std::string& url, const char* option) {
    UrlParts p = parseUrl(url);
    if (!p.ok || (p.scheme != "http" && p.scheme != "https") || p.host.empty()) {
        throw std::invalid_argument(std::string(option) +
                                    ": not an http:// or https:// URL: " + Webhook::redactUrl(url));
    }
}

std::string describe(milliseconds d) {
    if (d.count() % 1000 == 0) {
        return std::to_string(d.count() / 1000) + " s";
    }
    return std::to_string(d.count()) + " ms";
}

// expires_in may be a number or (some servers) a numeric string; nullopt when absent/bad.
std::optional<double> expiresIn(const nlohmann::json& j) {
    auto it = j.find("expires_in");
    if (it == j.end()) {
        return std::nullopt;
    }
    if (it->is_number()) {
        return it->get<double>();
    }
    if (it->is_string()) {
        try {
            std::size_t used = 0;
            const auto& s = it->get_ref<const std::string&>();
            double v = std::stod(s, &used);
            if (used == s.size()) {
                return v;
            }
        } catch (const std::exception&) {
        }
    }
    return std::nullopt;
}

} // namespace

// One libcurl easy handle for one URL, reused across requests so the connection is kept
// alive. Used on the sink thread only (created on the constructing thread).
class Webhook::Http {
public:
    struct Response {
        CURLcode code = CURLE_OK;
        long status = 0; // 0 when no HTTP response was received
    };

    Http(const std::string& url, const std::atomic<std::int64_t>& shutdown_deadline_ns)
        : handle_(curl_easy_init()), shutdown_deadline_ns_(shutdown_deadline_ns) {
        if (handle_ == nullptr) {
            throw std::runtime_error("webhook: curl_easy_init failed");
        }
        static const std::string user_agent = std::string("sentrypeer/") + core::kVersion;
        curl_easy_setopt(handle_, CURLOPT_URL, url.c_str());
        curl_easy_setopt(handle_, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(handle_, CURLOPT_NOSIGNAL, 1L); // we are one thread of many
        curl_easy_setopt(handle_, CURLOPT_USERAGENT, user_agent.c_str());
        curl_easy_setopt(handle_, CURLOPT_TCP_KEEPALIVE, 1L);
        curl_easy_setopt(handle_, CURLOPT_FOLLOWLOCATION, 0L);
        curl_easy_setopt(handle_, CURLOPT_WRITEFUNCTION, &Http::onWrite);
        curl_easy_setopt(handle_, CURLOPT_WRITEDATA, this);
        curl_easy_setopt(handle_, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(handle_, CURLOPT_XFERINFOFUNCTION, &Http::onProgress);
        curl_easy_setopt(handle_, CURLOPT_XFERINFODATA, this);
    }
    ~Http() { curl_easy_cleanup(handle_); }
    Http(const Http&) = delete;
    Http& operator=(const Http&) = delete;

    // POSTs body with the given extra header lines. The response body goes to
    // *response_body (truncated at kMaxResponseBody) or is discarded when null.
    Response post(const std::string& body, const std::vector<std::string>& headers,
                  std::string* response_body, milliseconds connect_timeout,
                  milliseconds total_timeout) {
        curl_slist* list = nullptr;
        // "Expect:" stops libcurl from waiting up to 1 s for "100 Continue" on bodies over
        // 1 KiB (a SIP message often is).
        list = curl_slist_append(list, "Expect:");
        for (const auto& h : headers) {
            curl_slist* grown = curl_slist_append(list, h.c_str());
            if (grown == nullptr) {
                curl_slist_free_all(list);
                return {CURLE_OUT_OF_MEMORY, 0};
            }
            list = grown;
        }
        response_ = response_body;
        if (response_ != nullptr) {
            response_->clear();
        }
        // 0 means "no timeout" to libcurl: never pass it.
        curl_easy_setopt(
            handle_, CURLOPT_CONNECTTIMEOUT_MS,
            static_cast<long>(std::max<milliseconds::rep>(1, connect_timeout.count())));
        curl_easy_setopt(handle_, CURLOPT_TIMEOUT_MS,
                         static_cast<long>(std::max<milliseconds::rep>(1, total_timeout.count())));
        curl_easy_setopt(handle_, CURLOPT_HTTPHEADER, list);
        curl_easy_setopt(handle_, CURLOPT_POSTFIELDS, body.data());
        curl_easy_setopt(handle_, CURLOPT_POSTFIELDSIZE_LARGE,
                         static_cast<curl_off_t>(body.size()));
        Response r;
        r.code = curl_easy_perform(handle_);
        curl_easy_getinfo(handle_, CURLINFO_RESPONSE_CODE, &r.status);
        curl_easy_setopt(handle_, CURLOPT_HTTPHEADER, nullptr);
        curl_easy_setopt(handle_, CURLOPT_POSTFIELDS, nullptr);
        curl_slist_free_all(list);
        response_ = nullptr;
        return r;
    }

private:
    static std::size_t onWrite(char* data, std::size_t size, std::size_t n, void* self) {
        auto* http = static_cast<Http*>(self);
        std::size_t bytes = size * n;
        if (http->response_ != nullptr && http->response_->size() < kMaxResponseBody) {
            http->response_->append(data,
                                    std::min(bytes, kMaxResponseBody - http->response_->size()));
        }
        return bytes;
    }

    // Aborts the transfer in flight once the shutdown budget has run out. libcurl calls it
    // at least about once per second while a transfer waits.
    static int onProgress(void* self, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
        auto* http = static_cast<Http*>(self);
        std::int64_t deadline = http->shutdown_deadline_ns_.load(std::memory_order_acquire);
        return deadline != 0 && steadyNowNs() >= deadline ? 1 : 0;
    }

    CURL* handle_;
    const std::atomic<std::int64_t>& shutdown_deadline_ns_;
    std::string* response_ = nullptr;
};

struct Webhook::Sleeper {
    std::mutex mutex;
    std::condition_variable cv;
};

Webhook::Webhook(WebhookOptions options, const core::Clock& clock)
    : options_(std::move(options)), clock_(clock), sleeper_(std::make_unique<Sleeper>()) {
    // Once per process, before the sink thread uses libcurl.
    static std::once_flag curl_init;
    std::call_once(curl_init, [] {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
            throw std::runtime_error("webhook: curl_global_init failed");
        }
    });
    validateUrl(options_.url, "webhook URL");
    if (options_.max_attempts < 1) {
        throw std::invalid_argument("webhook: max attempts must be at least 1");
    }
    if (options_.connect_timeout.count() <= 0 || options_.total_timeout.count() <= 0) {
        throw std::invalid_argument("webhook: timeouts must be positive");
    }
    oauth2_ = !options_.oauth2_client_id.empty() && !options_.oauth2_client_secret.empty();
    if (oauth2_) {
        validateUrl(options_.oauth2_token_url, "OAuth2 token URL");
    }
    url_for_logs_ = redactUrl(options_.url);
    webhook_http_ = std::make_unique<Http>(options_.url, shutdown_deadline_ns_);
    if (oauth2_) {
        token_http_ = std::make_unique<Http>(options_.oauth2_token_url, shutdown_deadline_ns_);
    }
}

Webhook::~Webhook() = default;

bus::SinkOptions Webhook::sinkOptions() {
    // 16,384 queued events, at most 16 MiB of them (a queue of 64 KiB datagrams would
    // otherwise reach 4 GiB), absorb a burst while the endpoint is slow; beyond that the bus
    // drops and counts (by reason). tick() does nothing here: wake rarely.
    return {.name = "webhook",
            .thread_name = "sp-webhook",
            .capacity = 16384,
            .capacity_bytes = bus::kLossyQueueBytes,
            .max_batch = 256,
            .tick = std::chrono::milliseconds(1000),
            .lossless = false};
}

std::string Webhook::redactUrl(const std::string& url) {
    UrlParts p = parseUrl(url);
    if (!p.ok) {
        return "<unparsable URL>";
    }
    std::string out = p.scheme + "://" + p.host;
    if (!p.port.empty()) {
        out += ":" + p.port;
    }
    return out;
}

void Webhook::beginShutdown() {
    std::int64_t deadline =
        steadyNowNs() +
        std::chrono::duration_cast<std::chrono::nanoseconds>(options_.shutdown_budget).count();
    std::int64_t expected = 0;
    shutdown_deadline_ns_.compare_exchange_strong(expected, std::max<std::int64_t>(deadline, 1),
                                                  std::memory_order_acq_rel);
    // Wake a retry backoff sleep so it re-reads the deadline.
    std::lock_guard lock(sleeper_->mutex);
    sleeper_->cv.notify_all();
}

void Webhook::interrupt() {
    // The deadline becomes now (or stays earlier): the transfer in flight is aborted and the
    // rest of the queue counted as failed.
    std::int64_t now = std::max<std::int64_t>(steadyNowNs(), 1);
    std::int64_t current = shutdown_deadline_ns_.load(std::memory_order_acquire);
    while ((current == 0 || current > now) &&
           !shutdown_deadline_ns_.compare_exchange_weak(current, now, std::memory_order_acq_rel)) {
    }
    std::lock_guard lock(sleeper_->mutex);
    sleeper_->cv.notify_all();
}

void Webhook::collect(core::MetricsWriter& m) const {
    auto s = stats();
    m.family("webhook_sent_total", "counter", "Events accepted by the webhook endpoint");
    m.sample(s.sent);
    m.family("webhook_failed_total", "counter", "Events the webhook gave up on");
    m.sample(s.failed);
    m.family("webhook_retries_total", "counter", "Webhook retry attempts");
    m.sample(s.retries);
    m.family("webhook_oauth2_token_fetches_total", "counter", "OAuth2 token requests");
    m.sample(s.oauth2_token_fetches);
    m.family("webhook_oauth2_failures_total", "counter", "OAuth2 token requests that failed");
    m.sample(s.oauth2_failures);
    m.family("webhook_last_http_status", "gauge", "HTTP status of the last webhook POST");
    m.sample(static_cast<std::uint64_t>(std::max(0L, s.last_http_status)));
}

bool Webhook::shutdownExpired() const {
    std::int64_t deadline = shutdown_deadline_ns_.load(std::memory_order_acquire);
    return deadline != 0 && steadyNowNs() >= deadline;
}

bool Webhook::sleepFor(milliseconds d) {
    const std::int64_t until = steadyNowNs() + std::chrono::nanoseconds(d).count();
    std::unique_lock lock(sleeper_->mutex);
    for (;;) {
        std::int64_t deadline = shutdown_deadline_ns_.load(std::memory_order_acquire);
        std::int64_t wake = deadline != 0 ? std::min(until, deadline) : until;
        std::int64_t now = steadyNowNs();
        if (now >= wake) {
            break;
        }
        sleeper_->cv.wait_for(lock, std::chrono::nanoseconds(wake - now));
    }
    return !shutdownExpired();
}

WebhookStats Webhook::stats() const {
    WebhookStats s;
    s.sent = sent_.load(std::memory_order_relaxed);
    s.failed = failed_.load(std::memory_order_relaxed);
    s.retries = retries_.load(std::memory_order_relaxed);
    s.oauth2_token_fetches = token_fetches_.load(std::memory_order_relaxed);
    s.oauth2_failures = token_failures_.load(std::memory_order_relaxed);
    s.last_http_status = last_status_.load(std::memory_order_relaxed);
    return s;
}

void Webhook::logLimited(bool warning, const std::string& message) {
    auto level = warning ? spdlog::level::warn : spdlog::level::info;
    if (!log_limit_.allow(clock_.now())) {
        return;
    }
    std::uint64_t suppressed = log_limit_.takeSuppressed();
    if (suppressed > 0) {
        spdlog::log(level, "webhook {}: {} ({} similar messages suppressed)", url_for_logs_,
                    message, suppressed);
    } else {
        spdlog::log(level, "webhook {}: {}", url_for_logs_, message);
    }
}

bool Webhook::haveValidToken(core::TimePoint now) const {
    return !token_.empty() && now < token_refresh_;
}

Webhook::Try Webhook::fetchToken() {
    token_.clear();
    token_fetches_.fetch_add(1, std::memory_order_relaxed);
    nlohmann::json request = {{"client_id", options_.oauth2_client_id},
                              {"client_secret", options_.oauth2_client_secret},
                              {"audience", options_.oauth2_audience},
                              {"grant_type", "client_credentials"}};
    // replace: operator-supplied strings with invalid UTF-8 must not throw here.
    std::string body = request.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    std::string response;
    auto [connect_timeout, total_timeout] = requestTimeouts();
    Http::Response r = token_http_->post(body, {"Content-Type: application/json"}, &response,
                                         connect_timeout, total_timeout);

    auto fail = [&](Try t, std::string why) {
        token_failures_.fetch_add(1, std::memory_order_relaxed);
        last_error_ = "OAuth2 token request to " + redactUrl(options_.oauth2_token_url) + ": " +
                      std::move(why);
        return t;
    };
    if (r.code == CURLE_ABORTED_BY_CALLBACK || (r.code != CURLE_OK && shutdownExpired())) {
        return fail(Try::Abort, "aborted at shutdown");
    }
    if (r.code != CURLE_OK) {
        return fail(Try::Retry, curl_easy_strerror(r.code));
    }
    if (r.status == 429 || r.status >= 500) {
        return fail(Try::Retry, "HTTP " + std::to_string(r.status));
    }
    if (r.status < 200 || r.status > 299) {
        return fail(Try::Reject, "HTTP " + std::to_string(r.status));
    }
    nlohmann::json j = nlohmann::json::parse(response, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
        return fail(Try::Reject, "response is not a JSON object");
    }
    auto token = j.find("access_token");
    if (token == j.end() || !token->is_string() || token->get_ref<const std::string&>().empty()) {
        return fail(Try::Reject, "response has no access_token");
    }
    const std::string& value = token->get_ref<const std::string&>();
    if (value.find_first_of("\r\n") != std::string::npos) {
        return fail(Try::Reject, "access_token contains a line break");
    }
    auto type = j.find("token_type");
    if (type != j.end() && type->is_string()) {
        std::string t = type->get<std::string>();
        std::transform(t.begin(), t.end(), t.begin(),
                       [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
        if (t != "bearer") {
            logLimited(true, "OAuth2 token_type is not Bearer; sending it as a "
                             "Bearer token anyway");
        }
    }
    token_ = value;
    core::TimePoint now = clock_.now();
    std::optional<double> expires = expiresIn(j);
    if (expires && std::isfinite(*expires)) {
        // Clamp to [0, 10 years] so the arithmetic cannot overflow; refresh a tenth of the
        // lifetime (at most a minute) before it ends.
        double secs = std::clamp(*expires, 0.0, 10.0 * 365 * 24 * 3600);
        auto lifetime =
            std::chrono::duration_cast<milliseconds>(std::chrono::duration<double>(secs));
        auto margin = std::min<milliseconds>(milliseconds(60000), lifetime / 10);
        token_refresh_ = now + (lifetime - margin);
    } else {
        token_refresh_ = core::TimePoint::max(); // until the webhook rejects it (401/403)
    }
    return Try::Ok;
}

std::pair<milliseconds, milliseconds> Webhook::requestTimeouts() const {
    milliseconds connect = options_.connect_timeout;
    milliseconds total = options_.total_timeout;
    std::int64_t deadline = shutdown_deadline_ns_.load(std::memory_order_acquire);
    if (deadline != 0) {
        auto left = std::chrono::duration_cast<milliseconds>(
            std::chrono::nanoseconds(std::max<std::int64_t>(0, deadline - steadyNowNs())));
        left = std::max(left, milliseconds(1));
        connect = std::min(connect, left);
        total = std::min(total, left);
    }
    return {connect, total};
}

Webhook::Try Webhook::postEvent(const std::string& body) {
    std::vector<std::string> headers{"Content-Type: application/json"};
    if (oauth2_) {
        headers.push_back("Authorization: Bearer " + token_);
    }
    auto [connect_timeout, total_timeout] = requestTimeouts();
    Http::Response r = webhook_http_->post(body, headers, nullptr, connect_timeout, total_timeout);
    last_status_.store(r.code == CURLE_OK ? r.status : 0, std::memory_order_relaxed);
    if (r.code == CURLE_ABORTED_BY_CALLBACK || (r.code != CURLE_OK && shutdownExpired())) {
        last_error_ = "aborted at shutdown";
        return Try::Abort;
    }
    if (r.code == CURLE_URL_MALFORMAT || r.code == CURLE_UNSUPPORTED_PROTOCOL) {
        last_error_ = curl_easy_strerror(r.code);
        return Try::Reject;
    }
    if (r.code != CURLE_OK) {
        last_error_ = curl_easy_strerror(r.code);
        return Try::Retry;
    }
    last_error_ = "HTTP " + std::to_string(r.status);
    if (r.status >= 200 && r.status <= 299) {
        return Try::Ok;
    }
    if (r.status == 401 || r.status == 403) {
        return Try::Auth;
    }
    if (r.status == 429 || r.status >= 500) {
        return Try::Retry;
    }
    return Try::Reject;
}

Webhook::Result Webhook::deliver(const std::string& body, int max_attempts) {
    int attempt = 1;
    bool refreshed = false;
    for (;;) {
        if (shutdownExpired()) {
            return Result::Aborted;
        }
        Try t = Try::Ok;
        bool token_failed = false;
        if (oauth2_ && !haveValidToken(clock_.now())) {
            t = fetchToken();
            token_failed = t != Try::Ok;
        }
        if (t == Try::Ok) {
            t = postEvent(body);
        }
        switch (t) {
        case Try::Ok:
            return Result::Sent;
        case Try::Abort:
            return Result::Aborted;
        case Try::Auth:
            if (oauth2_ && !refreshed) {
                // The token was revoked or rotated early: one fresh token, one more try.
                refreshed = true;
                token_.clear();
                continue;
            }
            // With a fresh token still refused, every event would cost a token request:
            // treat it as down (back off) rather than hammer the token endpoint.
            return oauth2_ ? Result::Down : Result::Rejected;
        case Try::Reject:
            // A token endpoint refusing us (bad credentials) fails every event alike.
            return token_failed ? Result::Down : Result::Rejected;
        case Try::Retry:
            if (attempt >= max_attempts) {
                return Result::Down;
            }
            {
                auto delay = options_.retry_base;
                for (int i = 1; i < attempt && delay < options_.retry_max; ++i) {
                    delay *= 2;
                }
                delay = std::min(delay, options_.retry_max);
                ++attempt;
                retries_.fetch_add(1, std::memory_order_relaxed);
                if (!sleepFor(delay)) {
                    return Result::Aborted;
                }
            }
            continue;
        }
    }
}

void Webhook::markDown(core::TimePoint now) {
    down_period_ = down_period_.count() == 0 ? options_.down_min
                                             : std::min(options_.down_max, down_period_ * 2);
    down_period_ = std::max(down_period_, milliseconds(1));
    down_until_ = now + down_period_;
    logLimited(true, last_error_ + "; events dropped for the next " + describe(down_period_) +
                         " (" + std::to_string(failed_.load()) + " failed so far)");
}

void Webhook::consume(std::span<const core::EventPtr> batch) {
    for (const auto& e : batch) {
        if (e->origin != core::Origin::Local) {
            continue; // the webhook reports what this node caught
        }
        if (shutdownExpired()) {
            failed_.fetch_add(1, std::memory_order_relaxed);
            continue;
        }
        core::TimePoint now = clock_.now();
        if (down_period_.count() != 0 && now < down_until_) {
            failed_.fetch_add(1, std::memory_order_relaxed);
            ++failed_while_down_;
            continue;
        }
        body_.clear();
        core::appendEventJson(body_, *e);
        // After a down period, one attempt tells whether the endpoint is back.
        Result r = deliver(body_, down_period_.count() != 0 ? 1 : options_.max_attempts);
        switch (r) {
        case Result::Sent:
            sent_.fetch_add(1, std::memory_order_relaxed);
            if (down_period_.count() != 0) {
                logLimited(false, "reachable again (" + std::to_string(failed_while_down_) +
                                      " events dropped while it was down)");
                down_period_ = milliseconds(0);
                failed_while_down_ = 0;
            }
            break;
        case Result::Rejected:
            failed_.fetch_add(1, std::memory_order_relaxed);
            logLimited(true, "event rejected: " + last_error_);
            break;
        case Result::Down:
            failed_.fetch_add(1, std::memory_order_relaxed);
            markDown(clock_.now());
            break;
        case Result::Aborted:
            failed_.fetch_add(1, std::memory_order_relaxed);
            break;
        }
    }
}

void Webhook::close() {
    WebhookStats s = stats();
    if (s.sent + s.failed > 0) {
        spdlog::info("webhook {}: {} events sent, {} failed, {} retries", url_for_logs_, s.sent,
                     s.failed, s.retries);
    }
    // Drop the connections now; the destructor may run much later (shared ownership).
    webhook_http_.reset();
    token_http_.reset();
}

} // namespace sp::sinks
