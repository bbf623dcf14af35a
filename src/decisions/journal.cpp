#include "decisions/journal.hpp"

#include <algorithm>
#include <pthread.h>
#include <spdlog/spdlog.h>
#include <unordered_map>

namespace sp::decisions {

namespace {

// How much a block must grow before it is re-issued (see journal.hpp).
std::chrono::seconds extendStep(std::chrono::seconds window) {
    return std::clamp(window / 100, std::chrono::seconds(1), std::chrono::seconds(60));
}

// The longest the thread sleeps: also how long stop() may wait for it.
constexpr std::chrono::milliseconds kMaxWait{250};

} // namespace

Journal::Journal(JournalOptions options, std::shared_ptr<const block::Policy> policy,
                 const core::Clock& clock)
    : options_(options), policy_(std::move(policy)), clock_(clock),
      extend_step_(extendStep(policy_->options().block_window)),
      // Ids go on increasing across restarts (the microsecond of the start), within the
      // 2^53 a JSON reader keeps exactly.
      next_id_(static_cast<std::uint64_t>(
                   std::chrono::duration_cast<std::chrono::seconds>(clock.now().time_since_epoch())
                       .count()) *
               1'000'000),
      cursors_(options.keys) {}

Journal::~Journal() {
    stop();
}

void Journal::start(const store::Index& index) {
    sub_ = index.subscribe(options_.max_pending);
    auto u = sub_->wait(std::chrono::milliseconds(0));
    if (u.state) {
        applyState(*u.state);
    }
    for (const auto& d : u.deltas) {
        applyChanges(d->ips);
    }
    thread_ = std::thread([this, sub = sub_] { run(sub); });
}

void Journal::stop() {
    stop_ = true;
    if (thread_.joinable()) {
        thread_.join();
    }
}

void Journal::run(const std::shared_ptr<store::IndexSubscription>& sub) {
    pthread_setname_np(pthread_self(), "sp-decisions");
    while (!stop_) {
        auto wait = kMaxWait;
        if (auto due = nextDue()) {
            auto until = std::chrono::ceil<std::chrono::milliseconds>(*due - clock_.now());
            wait = std::clamp(until, std::chrono::milliseconds(0), kMaxWait);
        }
        auto u = sub->wait(wait);
        try {
            if (u.state) {
                applyState(*u.state);
            }
            for (const auto& d : u.deltas) {
                applyChanges(d->ips);
            }
            expire();
        } catch (const std::exception& e) {
            spdlog::error("decisions: {}", e.what()); // out of memory: the next update retries
        }
        if (u.closed) {
            break;
        }
    }
}

core::TimePoint Journal::dueOf(const Decision& d) const {
    return d.renew ? d.until - kNoExpiryHorizon / 2 : d.until;
}

void Journal::log(bool deleted, std::string_view ip, const Decision& d) {
    log_.push_back(LogEntry{next_seq_++, deleted, std::string(ip), d});
    while (log_.size() > options_.max_log) {
        log_.pop_front();
        log_dropped_.fetch_add(1, std::memory_order_relaxed);
    }
}

void Journal::issue(std::string_view ip, Decision d, Why why) {
    d.id = next_id_++;
    bool inserted = false;
    current_.upsert(ip, inserted) = d;
    due_.emplace(dueOf(d), std::string(ip));
    log(false, ip, d);
    (why == Why::First ? issued_first_
                       : (why == Why::Extended ? issued_extended_ : issued_renewed_))
        .fetch_add(1, std::memory_order_relaxed);
}

void Journal::remove(std::string_view ip, const Decision& d, Why why) {
    due_.erase({dueOf(d), std::string(ip)});
    log(true, ip, d);
    if (why == Why::Expired) {
        deleted_expired_.fetch_add(1, std::memory_order_relaxed);
    } else if (why == Why::Unblocked) {
        deleted_unblocked_.fetch_add(1, std::memory_order_relaxed);
    } else {
        deleted_extended_.fetch_add(1, std::memory_order_relaxed);
    }
    if (why == Why::Expired || why == Why::Unblocked) {
        current_.erase(ip);
    }
}

void Journal::applyOne(std::string_view ip, const std::optional<store::Seen>& seen,
                       core::TimePoint now) {
    const Decision* cur = current_.find(ip);
    std::optional<block::Policy::Block> b;
    // Only literal addresses ever reach a bouncer (a non-IP value fails its whole batch).
    if (seen && isLiteralIp(ip)) {
        b = policy_->decide(ip, block::Evidence{seen->local, seen->peer, seen->reporters},
                            seen->last, now);
    }
    if (!b) {
        if (cur != nullptr) {
            Decision old = *cur;
            remove(ip, old, Why::Unblocked);
        }
        return;
    }
    Decision d;
    d.scenario = seen->local > 0 ? Scenario::SipProbe : Scenario::P2p;
    d.renew = !b->left;
    d.until = d.renew ? now + kNoExpiryHorizon : now + *b->left;
    if (cur == nullptr) {
        issue(ip, d, Why::First);
        return;
    }
    if (cur->scenario == d.scenario && cur->renew == d.renew &&
        (d.renew || d.until < cur->until + extend_step_)) {
        return; // not enough change to re-issue
    }
    Decision old = *cur;
    remove(ip, old, Why::Extended);
    issue(ip, d, Why::Extended);
}

void Journal::applyState(const store::IndexSnapshot& state) {
    const auto now = clock_.now();
    std::lock_guard lock(mutex_);
    state.by_ip.forEach([&](std::string_view ip, const store::Seen& seen) {
        applyOne(ip, std::optional<store::Seen>(seen), now);
    });
    std::vector<std::string> gone;
    current_.forEach([&](std::string_view ip, const Decision&) {
        if (state.by_ip.find(ip) == nullptr) {
            gone.emplace_back(ip);
        }
    });
    for (const auto& ip : gone) {
        applyOne(ip, std::nullopt, now);
    }
}

void Journal::applyChanges(const std::vector<store::KeyChange>& changes) {
    const auto now = clock_.now();
    std::lock_guard lock(mutex_);
    for (const auto& c : changes) {
        applyOne(c.key, c.seen, now);
    }
}

void Journal::expire() {
    const auto now = clock_.now();
    std::lock_guard lock(mutex_);
    while (!due_.empty() && due_.begin()->first <= now) {
        std::string ip = due_.begin()->second;
        const Decision* cur = current_.find(ip);
        if (cur == nullptr) {
            due_.erase(due_.begin()); // cannot happen: kept in step with current_
            continue;
        }
        Decision old = *cur;
        if (old.renew) {
            remove(ip, old, Why::Extended);
            Decision d = old;
            d.until = now + kNoExpiryHorizon;
            issue(ip, d, Why::Renewed);
        } else {
            remove(ip, old, Why::Expired);
        }
    }
}

std::optional<core::TimePoint> Journal::nextDue() const {
    std::lock_guard lock(mutex_);
    if (due_.empty()) {
        return std::nullopt;
    }
    return due_.begin()->first;
}

Journal::Answer Journal::full(std::size_t key, core::TimePoint now) {
    if (!cursors_[key]) {
        ++keys_tracked_;
    }
    cursors_[key] = next_seq_ - 1;
    Answer a;
    a.full = true;
    a.all = current_;
    a.now = now;
    return a;
}

Journal::Answer Journal::startup(std::size_t key) {
    const auto now = clock_.now();
    std::lock_guard lock(mutex_);
    if (key >= cursors_.size()) {
        return Answer{.full = true, .all = {}, .added = {}, .removed = {}, .now = now};
    }
    return full(key, now);
}

Journal::Answer Journal::poll(std::size_t key) {
    const auto now = clock_.now();
    std::vector<LogEntry> window;
    {
        std::lock_guard lock(mutex_);
        if (key >= cursors_.size()) {
            return Answer{.full = false, .all = {}, .added = {}, .removed = {}, .now = now};
        }
        const std::uint64_t first = log_.empty() ? next_seq_ : log_.front().seq;
        const auto& cursor = cursors_[key];
        if (!cursor) {
            resend_unknown_.fetch_add(1, std::memory_order_relaxed);
            return full(key, now);
        }
        if (*cursor + 1 < first) {
            resend_fell_off_.fetch_add(1, std::memory_order_relaxed);
            return full(key, now);
        }
        auto from = log_.begin() + static_cast<std::ptrdiff_t>(*cursor + 1 - first);
        window.assign(from, log_.end());
        cursors_[key] = next_seq_ - 1;
    }
    // Each address once: its last change; a re-issued block also with its deletion, so the
    // bouncer deletes then adds (its one way to refresh an element's timeout).
    struct Seen {
        std::size_t last = 0;
        std::optional<std::size_t> last_deleted;
    };
    std::unordered_map<std::string_view, Seen> by_ip;
    by_ip.reserve(window.size());
    for (std::size_t i = 0; i < window.size(); ++i) {
        auto& s = by_ip[window[i].ip];
        s.last = i;
        if (window[i].deleted) {
            s.last_deleted = i;
        }
    }
    Answer a;
    a.now = now;
    for (std::size_t i = 0; i < window.size(); ++i) {
        const auto& s = by_ip[window[i].ip];
        if (s.last != i) {
            continue;
        }
        auto& e = window[i];
        if (e.deleted) {
            a.removed.push_back(Entry{e.ip, e.decision});
        } else {
            if (s.last_deleted) {
                const auto& del = window[*s.last_deleted];
                a.removed.push_back(Entry{del.ip, del.decision});
            }
            a.added.push_back(Entry{e.ip, e.decision});
        }
    }
    return a;
}

DecisionMap Journal::current() const {
    std::lock_guard lock(mutex_);
    return current_;
}

void Journal::collect(core::MetricsWriter& w) const {
    std::size_t active = 0, log_entries = 0, tracked = 0;
    {
        std::lock_guard lock(mutex_);
        active = current_.size();
        log_entries = log_.size();
        tracked = keys_tracked_;
    }
    auto rel = [](const std::atomic<std::uint64_t>& a) {
        return a.load(std::memory_order_relaxed);
    };
    w.family("decisions_active", "gauge", "CrowdSec decisions currently in force");
    w.sample(std::uint64_t{active});
    w.family("decisions_log_entries", "gauge",
             "Entries in the decision change log (the delta polls' window)");
    w.sample(std::uint64_t{log_entries});
    w.family("decisions_log_max_entries", "gauge", "Capacity of the decision change log");
    w.sample(std::uint64_t{options_.max_log});
    w.family("decisions_log_dropped_total", "counter",
             "Change log entries dropped at capacity (oldest first)");
    w.sample(rel(log_dropped_));
    w.family("decisions_keys_tracked", "gauge",
             "Bouncer keys with a cursor (polled since this daemon started), of "
             "decisions_keys");
    w.sample(std::uint64_t{tracked});
    w.family("decisions_keys", "gauge", "Bouncer keys configured");
    w.sample(std::uint64_t{options_.keys});
    w.family("decisions_changes_total", "counter",
             "Decision changes logged, by list (new/deleted) and reason");
    w.sample(rel(issued_first_), {{"change", "new"}, {"reason", "blocked"}});
    w.sample(rel(issued_extended_), {{"change", "new"}, {"reason", "extended"}});
    w.sample(rel(issued_renewed_), {{"change", "new"}, {"reason", "renewed"}});
    w.sample(rel(deleted_expired_), {{"change", "deleted"}, {"reason", "expired"}});
    w.sample(rel(deleted_unblocked_), {{"change", "deleted"}, {"reason", "unblocked"}});
    w.sample(rel(deleted_extended_), {{"change", "deleted"}, {"reason", "reissued"}});
    w.family("decisions_resends_total", "counter",
             "Delta polls answered with the whole state, by reason (unknown_key: first poll "
             "of a key since this daemon started; fell_off: its cursor left the log)");
    w.sample(rel(resend_unknown_), {{"reason", "unknown_key"}});
    w.sample(rel(resend_fell_off_), {{"reason", "fell_off"}});
    w.family("decisions_index_resyncs_total", "counter",
             "Times the decision journal fell behind the index and re-read its whole state");
    w.sample(sub_ ? sub_->resyncs() : std::uint64_t{0});
}

} // namespace sp::decisions

namespace sp::decisions {

namespace {

constexpr std::size_t kChunkBytes = 64UL * 1024;

struct StreamState {
    Journal::Answer a;
    Filter f;
    bool startup = false;
    int phase = 0; // 0: not started, 1: "new", 2: "deleted", 3: done
    // The snapshot's entries (views into `a.all`, which lives as long as this state).
    std::vector<std::pair<std::string_view, const Decision*>> entries;
    std::size_t idx = 0;
    bool any = false;

    void emit(std::string& out, std::string_view ip, const Decision& d, bool positive) {
        if (!f.matches(ip, d.scenario)) {
            return;
        }
        out.push_back(any ? ',' : '[');
        any = true;
        appendDecision(out, ip, d, a.now, positive);
    }
    void close(std::string& out) {
        out.append(any ? "]" : "null");
        any = false;
        idx = 0;
    }

    bool next(std::string& out) {
        if (phase == 0) {
            out.append(R"({"new":)");
            phase = 1;
            if (a.full) {
                entries.reserve(a.all.size());
                a.all.forEach([this](std::string_view ip, const Decision& d) {
                    entries.emplace_back(ip, &d);
                });
            }
        }
        if (phase == 1) {
            if (a.full) {
                for (; idx < entries.size() && out.size() < kChunkBytes; ++idx) {
                    emit(out, entries[idx].first, *entries[idx].second, true);
                }
                if (idx < entries.size()) {
                    return true;
                }
            } else {
                for (; idx < a.added.size() && out.size() < kChunkBytes; ++idx) {
                    emit(out, a.added[idx].ip, a.added[idx].decision, true);
                }
                if (idx < a.added.size()) {
                    return true;
                }
            }
            close(out);
            out.append(R"(,"deleted":)");
            if (startup) {
                out.append("[]}");
                phase = 3;
                return false;
            }
            phase = 2;
        }
        if (phase == 2) {
            for (; idx < a.removed.size() && out.size() < kChunkBytes; ++idx) {
                emit(out, a.removed[idx].ip, a.removed[idx].decision, false);
            }
            if (idx < a.removed.size()) {
                return true;
            }
            close(out);
            out.push_back('}');
            phase = 3;
        }
        return false;
    }
};

} // namespace

std::function<bool(std::string& chunk)> streamBody(Journal::Answer a, Filter f, bool startup) {
    auto s = std::make_shared<StreamState>();
    s->a = std::move(a);
    s->f = std::move(f);
    s->startup = startup;
    return [s](std::string& chunk) { return s->next(chunk); };
}

std::string renderStream(const Journal::Answer& a, const Filter& f, bool startup) {
    auto body = streamBody(a, f, startup);
    std::string out, chunk;
    bool more = true;
    while (more) {
        chunk.clear();
        more = body(chunk);
        out += chunk;
    }
    return out;
}

std::string renderList(const DecisionMap& all, const Filter& f, core::TimePoint now) {
    std::string out;
    auto emit = [&](std::string_view ip, const Decision& d) {
        if (f.matches(ip, d.scenario)) {
            out.push_back(out.empty() ? '[' : ',');
            appendDecision(out, ip, d, now, true);
        }
    };
    if (const auto& ip = f.exactIp()) {
        if (const Decision* d = all.find(*ip)) {
            emit(*ip, *d);
        }
    } else {
        all.forEach(emit);
    }
    return out.empty() ? std::string("null") : out + "]";
}

} // namespace sp::decisions
