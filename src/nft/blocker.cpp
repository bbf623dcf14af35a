#include "nft/blocker.hpp"

#include <ctime>
#include <linux/capability.h>
#include <nftables/libnftables.h>
#include <pthread.h>
#include <spdlog/fmt/fmt.h>
#include <spdlog/spdlog.h>
#include <stdexcept>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/json.hpp"

namespace sp::nft {

namespace {

constexpr std::chrono::seconds kSweepEvery{5};
constexpr std::chrono::seconds kRetryAfterError{1};

std::string missingCapability() {
    return "--nft: this process lacks CAP_NET_ADMIN and cannot change the firewall (run it as "
           "root or grant CAP_NET_ADMIN, e.g. AmbientCapabilities=CAP_NET_ADMIN in systemd), "
           "or turn --nft off";
}

// The first line of nft's error text, at most 300 characters (the line it quotes may be a
// 100,000-element command).
std::string firstLine(const char* text) {
    std::string s = text == nullptr ? "" : text;
    auto nl = s.find('\n');
    if (nl != std::string::npos) {
        s.resize(nl);
    }
    if (s.size() > 300) {
        s.resize(300);
        s += "...";
    }
    return s.empty() ? "unknown error" : s;
}

std::string isoTime(TimePoint t) {
    std::time_t secs = std::chrono::system_clock::to_time_t(t);
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

} // namespace

Blocker::Blocker(BlockerOptions o, std::shared_ptr<const block::Policy> policy,
                 const store::Index& index, const core::Clock& clock)
    : o_(std::move(o)), policy_(std::move(policy)), index_(index), clock_(clock) {
    if (!validTableName(o_.table)) {
        throw std::runtime_error("--nft-table: '" + o_.table + "' is not a valid table name");
    }
}

Blocker::~Blocker() {
    stop();
}

void Blocker::checkCapability() {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3]{};
    if (syscall(SYS_capget, &header, data) != 0) {
        throw std::runtime_error(missingCapability());
    }
    if ((data[CAP_NET_ADMIN / 32].effective & (1U << (CAP_NET_ADMIN % 32))) == 0) {
        throw std::runtime_error(missingCapability());
    }
}

bool Blocker::commit(const std::string& script, std::string_view what) {
    auto t0 = std::chrono::steady_clock::now();
    int rc = nft_run_cmd_from_buffer(ctx_, script.c_str());
    const char* err = nft_ctx_get_error_buffer(ctx_);
    nft_ctx_get_output_buffer(ctx_); // discard (and reset) whatever nft printed
    last_apply_seconds_ =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (rc == 0) {
        transactions_.fetch_add(1, std::memory_order_relaxed);
        return true;
    }
    std::string line = firstLine(err);
    errors_.fetch_add(1, std::memory_order_relaxed);
    {
        std::lock_guard lock(error_mutex_);
        last_error_ = std::string(what) + ": " + line;
        last_error_at_ = clock_.now();
    }
    if (line.find("Operation not permitted") != std::string::npos) {
        line = missingCapability();
    }
    spdlog::error("nft: table inet {}: {} refused: {}", o_.table, what, line);
    return false;
}

Elements Blocker::reset(const store::IndexSnapshot& s, TimePoint now) {
    std::vector<std::pair<Address, Tracker::Blocked>> wanted;
    wanted.reserve(s.by_ip.size());
    s.by_ip.forEach([&](std::string_view ip, const store::Seen& seen) {
        auto addr = canonicalAddress(ip);
        if (!addr) {
            return;
        }
        auto d = policy_->decide(ip, block::Evidence{seen.local, seen.peer, seen.reporters},
                                 seen.last, now);
        if (!d) {
            return;
        }
        Tracker::Blocked b;
        if (d->left) {
            b.until = now + *d->left;
        }
        wanted.emplace_back(std::move(*addr), b);
    });
    applied_version_ = s.version;
    return tracker_.reset(wanted, now);
}

void Blocker::record(const store::KeyChange& c, TimePoint now) {
    auto addr = canonicalAddress(c.key);
    if (!addr) {
        return;
    }
    if (!c.seen) {
        tracker_.want(*addr, std::nullopt, now);
        return;
    }
    const auto& seen = *c.seen;
    auto d = policy_->decide(c.key, block::Evidence{seen.local, seen.peer, seen.reporters},
                             seen.last, now);
    std::optional<Tracker::Blocked> b;
    if (d) {
        b.emplace();
        if (d->left) {
            b->until = now + *d->left;
        }
    }
    tracker_.want(*addr, b, seen.last);
}

void Blocker::publishCounts() {
    elements_v4_ = tracker_.count(Family::V4);
    elements_v6_ = tracker_.count(Family::V6);
}

void Blocker::start() {
    auto t0 = std::chrono::steady_clock::now();
    ctx_ = nft_ctx_new(NFT_CTX_DEFAULT);
    if (ctx_ == nullptr) {
        throw std::runtime_error("--nft: cannot create a libnftables context");
    }
    nft_ctx_buffer_output(ctx_);
    nft_ctx_buffer_error(ctx_);
    sub_ = index_.subscribe(o_.max_pending_changes);
    auto first = sub_->wait(std::chrono::milliseconds{0});
    store::SnapshotPtr state = first.state ? first.state : index_.snapshot();
    TimePoint now = clock_.now();
    Elements elements = reset(*state, now);
    std::string script = startupScript(o_.table, o_.set_only, elements);
    if (!commit(script, "startup transaction")) {
        std::string why;
        {
            std::lock_guard lock(error_mutex_);
            why = last_error_;
        }
        tracker_.failed();
        if (why.find("Operation not permitted") != std::string::npos) {
            throw std::runtime_error(missingCapability());
        }
        throw std::runtime_error("--nft: cannot create table inet " + o_.table + ": " + why);
    }
    tracker_.committed();
    full_loads_.fetch_add(1, std::memory_order_relaxed);
    publishCounts();
    adds_.fetch_add(elements.size(), std::memory_order_relaxed);
    // Changes published after the state: recorded now, written by sp-nft's first batch.
    for (const auto& d : first.deltas) {
        if (d->version > applied_version_) {
            for (const auto& c : d->ips) {
                record(c, now);
            }
            applied_version_ = d->version;
        }
    }
    spdlog::info("nft: table inet {} ({}): {} addresses ({} IPv4, {} IPv6) loaded in one "
                 "transaction in {:.3f} s (nft {:.3f} s)",
                 o_.table, o_.set_only ? "sets only" : "sets and drop chain", elements.size(),
                 elements.v4.size(), elements.v6.size(),
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
                 last_apply_seconds_.load());
    started_ = true;
    thread_ = std::thread([this] {
        pthread_setname_np(pthread_self(), "sp-nft");
        run();
    });
}

void Blocker::fullResync(const store::IndexSnapshot& s, std::string_view why) {
    TimePoint now = clock_.now();
    Elements elements = reset(s, now);
    if (commit(resyncScript(o_.table, elements), why)) {
        tracker_.committed();
        full_loads_.fetch_add(1, std::memory_order_relaxed);
        spdlog::info("nft: table inet {}: sets rewritten ({}): {} addresses", o_.table, why,
                     elements.size());
    } else {
        tracker_.failed();
        resync_ = true; // try again after kRetryAfterError
        retry_at_ = std::chrono::steady_clock::now() + kRetryAfterError;
    }
    publishCounts();
}

void Blocker::commitBatch(TimePoint now) {
    Tracker::Batch b = tracker_.take(now);
    if (b.empty()) {
        tracker_.failed(); // nothing in flight
        return;
    }
    if (!commit(batchScript(o_.table, b.put, b.remove), "batch")) {
        tracker_.failed();
        resync_ = true; // the sets may differ from what the tracker believes
        retry_at_ = std::chrono::steady_clock::now() + kRetryAfterError;
        return;
    }
    tracker_.committed();
    adds_.fetch_add(b.adds, std::memory_order_relaxed);
    refreshes_.fetch_add(b.refreshes, std::memory_order_relaxed);
    removes_.fetch_add(b.remove.size(), std::memory_order_relaxed);
    TimePoint done = clock_.now();
    for (TimePoint e : b.events) {
        double s = std::chrono::duration<double>(done - e).count();
        std::size_t i = 0;
        while (i < kLatencyBuckets.size() && s > kLatencyBuckets[i]) {
            ++i;
        }
        latency_[i].fetch_add(1, std::memory_order_relaxed);
    }
    publishCounts();
}

void Blocker::run() {
    using clock = std::chrono::steady_clock;
    auto last_commit = clock::now() - o_.batch_interval;
    auto next_sweep = clock::now() + kSweepEvery;
    bool closed = false;
    while (!stop_) {
        auto due = last_commit + o_.batch_interval;
        auto wait = tracker_.pending() > 0 ? std::max(due - clock::now(), clock::duration{0})
                                           : clock::duration{o_.batch_interval};
        if (closed) {
            std::this_thread::sleep_for(o_.batch_interval);
        } else {
            auto u = sub_->wait(std::chrono::duration_cast<std::chrono::milliseconds>(wait));
            closed = u.closed;
            if (u.state && u.state->version > applied_version_) {
                fullResync(*u.state, "index resync");
            }
            TimePoint now = clock_.now();
            for (const auto& d : u.deltas) {
                if (d->version <= applied_version_) {
                    continue;
                }
                for (const auto& c : d->ips) {
                    record(c, now);
                }
                applied_version_ = d->version;
            }
        }
        auto t = clock::now();
        if (resync_ && t >= retry_at_) {
            resync_ = false;
            fullResync(*index_.snapshot(), "resync");
            last_commit = t;
            continue;
        }
        if (tracker_.pending() > 0 && t >= due) {
            commitBatch(clock_.now());
            last_commit = clock::now();
        }
        if (t >= next_sweep) {
            tracker_.sweep(clock_.now());
            publishCounts();
            next_sweep = t + kSweepEvery;
        }
    }
}

void Blocker::resync() {
    resync_ = true;
}

void Blocker::stop() {
    if (!started_.exchange(false)) {
        if (ctx_ != nullptr) {
            nft_ctx_free(ctx_);
            ctx_ = nullptr;
        }
        return;
    }
    stop_ = true;
    if (thread_.joinable()) {
        thread_.join();
    }
    if (o_.keep) {
        spdlog::info("nft: table inet {} kept (--nft-keep)", o_.table);
    } else if (commit(exitScript(o_.table, o_.set_only),
                      o_.set_only ? "emptying the sets" : "removing the table")) {
        spdlog::info("nft: table inet {} {}", o_.table,
                     o_.set_only ? "kept, its sets emptied (set-only: the table is shared)"
                                 : "removed");
    }
    nft_ctx_free(ctx_);
    ctx_ = nullptr;
}

void Blocker::collect(core::MetricsWriter& w) const {
    w.family("nft_elements", "gauge",
             "Addresses in the nftables blocker's sets (as last committed, expired ones "
             "forgotten within 7 s)");
    w.sample(elements_v4_.load(), {{"set", kSetV4}});
    w.sample(elements_v6_.load(), {{"set", kSetV6}});
    w.family("nft_adds_total", "counter", "Addresses added to the nftables sets");
    w.sample(adds_.load());
    w.family("nft_refreshes_total", "counter",
             "Elements rewritten with a new timeout (the address was seen again)");
    w.sample(refreshes_.load());
    w.family("nft_removes_total", "counter",
             "Addresses taken out of the nftables sets before their timeout (no longer blocked)");
    w.sample(removes_.load());
    w.family("nft_transactions_total", "counter", "nft transactions committed");
    w.sample(transactions_.load());
    w.family("nft_errors_total", "counter", "nft transactions refused (each logged)");
    w.sample(errors_.load());
    w.family("nft_full_loads_total", "counter",
             "Times the sets were written whole (startup, index resync, after an error, SIGHUP)");
    w.sample(full_loads_.load());
    w.family("nft_last_apply_seconds", "gauge", "Duration of the last nft transaction");
    w.sample(last_apply_seconds_.load());
    w.family("nft_event_to_commit_bucket", "counter",
             "Elements added or refreshed whose commit came at most `le` seconds after the "
             "event that caused it (cumulative)");
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i <= kLatencyBuckets.size(); ++i) {
        cumulative += latency_[i].load();
        std::string le =
            i < kLatencyBuckets.size() ? fmt::format("{}", kLatencyBuckets[i]) : "+Inf";
        w.sample(cumulative, {{"le", le}});
    }
    auto sub = sub_;
    w.family("nft_subscription_resyncs_total", "counter",
             "Times the blocker fell behind the index by more than its budget and was given "
             "the whole state again");
    w.sample(sub ? sub->resyncs() : std::uint64_t{0});
    w.family("nft_subscription_pending_changes", "gauge",
             "Index changes queued for the blocker (budget: 1,048,576, then a resync)");
    w.sample(sub ? static_cast<std::uint64_t>(sub->pendingChanges()) : std::uint64_t{0});
}

std::string Blocker::statusJson() const {
    std::string out = "{\"state\": \"on\", \"table\": ";
    core::appendJsonString(out, "inet " + o_.table);
    out += ", \"mode\": ";
    core::appendJsonString(out, o_.set_only ? "set-only" : "drop");
    out += ", \"keep\": ";
    out += o_.keep ? "true" : "false";
    out += ", \"elements\": {\"ipv4_addr\": " + std::to_string(elements_v4_.load()) +
           ", \"ipv6_addr\": " + std::to_string(elements_v6_.load()) + "}";
    out += ", \"adds\": " + std::to_string(adds_.load());
    out += ", \"refreshes\": " + std::to_string(refreshes_.load());
    out += ", \"removes\": " + std::to_string(removes_.load());
    out += ", \"transactions\": " + std::to_string(transactions_.load());
    out += ", \"errors\": " + std::to_string(errors_.load());
    out += ", \"last_apply_seconds\": " + fmt::format("{:.6f}", last_apply_seconds_.load());
    std::lock_guard lock(error_mutex_);
    out += ", \"last_error\": ";
    if (last_error_.empty()) {
        out += "null, \"last_error_at\": null";
    } else {
        core::appendJsonString(out, last_error_);
        out += ", \"last_error_at\": ";
        core::appendJsonString(out, isoTime(last_error_at_));
    }
    out += "}";
    return out;
}

} // namespace sp::nft
