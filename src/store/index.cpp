#include "store/index.hpp"

#include <algorithm>

namespace sp::store {
namespace {

// Estimated bytes per key (a trie leaf with its Seen and std::string, the allocator's header,
// the trie's share of branch slots), plus the key's own heap bytes beyond std::string's
// inline buffer. Estimates, for the memory budget: measured RSS is in docs/BENCHMARKS.md.
constexpr std::size_t kKeyBytes = 144;
constexpr std::size_t kInlineKey = 15;
constexpr std::size_t kReporterKeyBytes = 96; // a reporter map entry and its vector
constexpr std::size_t kReporterBytes = 16;    // one (reporter, count) pair

std::size_t keyCost(std::string_view key) {
    return kKeyBytes + (key.size() > kInlineKey ? key.size() + 17 : 0);
}

core::TimePoint indexTime(core::TimePoint t) {
    return std::chrono::time_point_cast<core::TimePoint::duration>(
        std::chrono::floor<std::chrono::microseconds>(t));
}

// 0: no reporter (a local event, or a peer event nobody verified: a plaintext value).
std::uint64_t reporterId(core::Origin origin, std::string_view reporter) {
    if (origin != core::Origin::Peer || reporter.empty()) {
        return 0;
    }
    std::uint64_t h = core::keyedHash(reporter);
    return h != 0 ? h : 1;
}

} // namespace

std::optional<OriginFilter> parseOriginFilter(std::string_view s) {
    if (s == "all") {
        return OriginFilter::All;
    }
    if (s == "local") {
        return OriginFilter::Local;
    }
    if (s == "peer") {
        return OriginFilter::Peer;
    }
    return std::nullopt;
}

// ---- IndexSubscription --------------------------------------------------------------------

IndexSubscription::Update IndexSubscription::wait(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    cv_.wait_for(lock, timeout, [&] { return closed_ || state_ || !deltas_.empty(); });
    Update u;
    u.closed = closed_;
    u.state = std::move(state_);
    state_.reset();
    u.deltas.assign(std::make_move_iterator(deltas_.begin()),
                    std::make_move_iterator(deltas_.end()));
    deltas_.clear();
    pending_changes_.store(0, std::memory_order_relaxed);
    return u;
}

// Store thread, under the index's mutex: `snapshot` is the state after `delta`.
void IndexSubscription::deliver(const SnapshotPtr& snapshot,
                                const std::shared_ptr<const IndexDelta>& delta) {
    {
        std::lock_guard lock(mutex_);
        if (state_ || !delta) {
            state_ = snapshot; // a state not taken yet: the newest one replaces it
            deltas_.clear();
            pending_changes_.store(0, std::memory_order_relaxed);
        } else {
            std::size_t n = pending_changes_.load(std::memory_order_relaxed) + delta->ips.size() +
                            delta->numbers.size();
            if (n > max_pending_) {
                deltas_.clear();
                state_ = snapshot;
                pending_changes_.store(0, std::memory_order_relaxed);
                resyncs_.fetch_add(1, std::memory_order_relaxed);
            } else {
                deltas_.push_back(delta);
                pending_changes_.store(n, std::memory_order_relaxed);
            }
        }
    }
    cv_.notify_one();
}

void IndexSubscription::close() {
    {
        std::lock_guard lock(mutex_);
        closed_ = true;
    }
    cv_.notify_all();
}

// ---- Index --------------------------------------------------------------------------------

Index::Index() : current_(std::make_shared<const IndexSnapshot>()) {}

SnapshotPtr Index::snapshot() const {
    std::lock_guard lock(mutex_);
    return current_;
}

std::optional<Seen> Index::ip(std::string_view ip) const {
    auto s = snapshot();
    const Seen* seen = s->by_ip.find(ip);
    return seen != nullptr ? std::optional<Seen>(*seen) : std::nullopt;
}

std::optional<Seen> Index::number(std::string_view number) const {
    auto s = snapshot();
    const Seen* seen = s->by_number.find(number);
    return seen != nullptr ? std::optional<Seen>(*seen) : std::nullopt;
}

std::shared_ptr<IndexSubscription> Index::subscribe(std::size_t max_pending_changes) const {
    auto sub = std::make_shared<IndexSubscription>(std::max<std::size_t>(max_pending_changes, 1));
    std::lock_guard lock(mutex_);
    // Under the same lock as publish(): the state given is the one every later delta follows.
    sub->state_ = current_;
    subscribers_.push_back(sub);
    tracking_.store(true, std::memory_order_release);
    return sub;
}

void Index::closeSubscriptions() {
    std::lock_guard lock(mutex_);
    for (auto& w : subscribers_) {
        if (auto s = w.lock()) {
            s->close();
        }
    }
}

std::size_t Index::subscribers() const {
    std::lock_guard lock(mutex_);
    return static_cast<std::size_t>(std::count_if(subscribers_.begin(), subscribers_.end(),
                                                  [](const auto& w) { return !w.expired(); }));
}

void Index::noteChange(core::StringSet& changed, std::string_view key) {
    if (!dirty_) { // the batch's first change: are its changes recorded from the start?
        dirty_ = true;
        batch_complete_ = tracking_.load(std::memory_order_acquire);
    }
    if (tracking_.load(std::memory_order_relaxed) && changed.find(key) == changed.end()) {
        changed.emplace(key);
    }
}

void Index::addKey(KeyMap& map, ReporterMap& reporters, core::StringSet& changed,
                   std::string_view key, core::TimePoint t, core::Origin origin,
                   std::uint64_t reporter) {
    bool inserted = false;
    Seen& s = map.upsert(key, inserted);
    if (inserted) {
        s.first = t;
        s.last = t;
        master_.memory_bytes += keyCost(key);
    } else {
        s.first = std::min(s.first, t);
        s.last = std::max(s.last, t);
    }
    ++s.count;
    if (origin == core::Origin::Local) {
        ++s.local;
    } else {
        ++s.peer;
        if (reporter == 0) {
            noteChange(changed, key); // a peer event no identity vouches for: no reporter
            return;
        }
        auto it = reporters.find(key);
        if (it == reporters.end()) {
            it = reporters.emplace(std::string(key), ReporterMap::mapped_type{}).first;
            master_.memory_bytes += kReporterKeyBytes + key.size();
        }
        auto& list = it->second;
        auto r = std::find_if(list.begin(), list.end(),
                              [&](const auto& p) { return p.first == reporter; });
        if (r != list.end()) {
            ++r->second;
        } else if (list.size() < kMaxReporters) {
            list.emplace_back(reporter, 1);
            master_.memory_bytes += kReporterBytes;
        }
        s.reporters = static_cast<std::uint32_t>(list.size());
    }
    noteChange(changed, key);
}

bool Index::removeKey(KeyMap& map, ReporterMap& reporters, core::StringSet& changed,
                      std::string_view key, core::TimePoint t, core::Origin origin,
                      std::uint64_t reporter) {
    Seen* s = map.findMutable(key);
    if (s == nullptr) {
        return false;
    }
    noteChange(changed, key);
    if (origin == core::Origin::Local) {
        s->local -= std::min<std::uint64_t>(s->local, 1);
    } else {
        s->peer -= std::min<std::uint64_t>(s->peer, 1);
        if (auto it = reporters.find(key); it != reporters.end()) {
            auto& list = it->second;
            auto r = std::find_if(list.begin(), list.end(),
                                  [&](const auto& p) { return p.first == reporter; });
            if (reporter != 0 && r != list.end() && --r->second == 0) {
                list.erase(r);
                master_.memory_bytes -= kReporterBytes;
            }
            if (list.empty() || s->peer == 0) {
                master_.memory_bytes -=
                    kReporterKeyBytes + key.size() + kReporterBytes * list.size();
                reporters.erase(it);
                s->reporters = 0;
            } else {
                s->reporters = static_cast<std::uint32_t>(list.size());
            }
        }
    }
    if (s->count <= 1) {
        map.erase(key);
        master_.memory_bytes -= keyCost(key);
        return false;
    }
    --s->count;
    s->first = std::max(s->first, t);
    return true;
}

void Index::add(const core::Event& e) {
    add(e.source_ip, e.called_number, e.time, e.origin, e.reporter);
}

void Index::add(std::string_view ip, std::string_view number, core::TimePoint time,
                core::Origin origin, std::string_view reporter) {
    const auto t = indexTime(time);
    const auto r = reporterId(origin, reporter);
    addKey(master_.by_ip, ip_reporters_, changed_ips_, ip, t, origin, r);
    addKey(master_.by_number, number_reporters_, changed_numbers_, number, t, origin, r);
    ++master_.events;
    master_.peer_events += origin == core::Origin::Peer ? 1 : 0;
}

std::pair<bool, bool> Index::remove(std::string_view ip, std::string_view number,
                                    core::TimePoint time, core::Origin origin,
                                    std::string_view reporter) {
    const auto t = indexTime(time);
    const auto r = reporterId(origin, reporter);
    bool ip_left = removeKey(master_.by_ip, ip_reporters_, changed_ips_, ip, t, origin, r);
    bool number_left =
        removeKey(master_.by_number, number_reporters_, changed_numbers_, number, t, origin, r);
    master_.events -= std::min<std::uint64_t>(master_.events, 1);
    if (origin == core::Origin::Peer) {
        master_.peer_events -= std::min<std::uint64_t>(master_.peer_events, 1);
    }
    return {ip_left, number_left};
}

void Index::setFirst(bool ip_key, std::string_view key, core::TimePoint first) {
    KeyMap& map = ip_key ? master_.by_ip : master_.by_number;
    if (Seen* s = map.findMutable(key)) {
        s->first = first;
        noteChange(ip_key ? changed_ips_ : changed_numbers_, key);
    }
}

void Index::reclassifyAsPeer(std::string_view ip, std::string_view number,
                             std::string_view reporter) {
    const auto r = reporterId(core::Origin::Peer, reporter);
    auto move = [&](KeyMap& map, ReporterMap& reporters, core::StringSet& changed,
                    std::string_view key) {
        Seen* s = map.findMutable(key);
        if (s == nullptr || s->local == 0) {
            return;
        }
        // As addKey counts a peer event, without touching count or times.
        --s->local;
        --s->count;
        const auto first = s->first;
        const auto last = s->last;
        addKey(map, reporters, changed, key, first, core::Origin::Peer, r);
        s = map.findMutable(key);
        s->first = first;
        s->last = last;
    };
    move(master_.by_ip, ip_reporters_, changed_ips_, ip);
    move(master_.by_number, number_reporters_, changed_numbers_, number);
    ++master_.peer_events;
}

void Index::clear() {
    std::uint64_t version = master_.version;
    master_ = IndexSnapshot{};
    master_.version = version;
    ip_reporters_.clear();
    number_reporters_.clear();
    changed_ips_.clear();
    changed_numbers_.clear();
    dirty_ = true;
    batch_complete_ = false; // subscribers get the state after a full load
}

void Index::publish() {
    if (!dirty_) {
        return;
    }
    dirty_ = false;
    ++master_.version;
    auto snap = std::make_shared<const IndexSnapshot>(master_); // O(1): shares every node
    // The changes are complete only if they were recorded since the last publish; a
    // subscriber that came meanwhile (none was there before) gets this state instead.
    std::shared_ptr<IndexDelta> delta;
    if (batch_complete_) {
        delta = std::make_shared<IndexDelta>();
        delta->version = master_.version;
        auto collect = [](core::StringSet& changed, const KeyMap& map,
                          std::vector<KeyChange>& out) {
            out.reserve(changed.size());
            for (const auto& key : changed) {
                const Seen* s = map.find(key);
                out.push_back({key, s != nullptr ? std::optional<Seen>(*s) : std::nullopt});
            }
            changed.clear();
        };
        collect(changed_ips_, master_.by_ip, delta->ips);
        collect(changed_numbers_, master_.by_number, delta->numbers);
    }
    changed_ips_.clear();
    changed_numbers_.clear();
    std::lock_guard lock(mutex_);
    current_ = snap;
    std::erase_if(subscribers_, [](const auto& w) { return w.expired(); });
    for (auto& w : subscribers_) {
        if (auto s = w.lock()) {
            s->deliver(snap, delta); // without a delta: the state
        }
    }
    tracking_.store(!subscribers_.empty(), std::memory_order_relaxed);
}

} // namespace sp::store
