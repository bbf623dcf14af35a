// Sharer lifecycle, the worker loop, listens and catch-up, budgets, status.
#include <algorithm>
#include <pthread.h>
#include <stdexcept>

#include "share/sharer_impl.hpp"

namespace sp::share {

namespace detail {

namespace {

const dht::ValueType kBatchValueType{kBatchType, "rcp1-batch", std::chrono::minutes(10)};
const dht::ValueType kGrantValueType{kGrantType, "rcp1-grant", std::chrono::minutes(10)};

dht::InfoHash parseId(const std::string& hex, const char* what) {
    bool ok = hex.size() == 40 && std::all_of(hex.begin(), hex.end(), [](char c) {
                  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
              });
    if (!ok) {
        throw std::invalid_argument(std::string("share: ") + what + " \"" + hex +
                                    "\" is not an identity (40 hex digits)");
    }
    return dht::InfoHash(hex);
}

std::int64_t ceilDiv(std::int64_t a, std::int64_t b) {
    return (a + b - 1) / b;
}

} // namespace

bool Mailbox::push(Kind kind, const dht::InfoHash& key, const std::vector<Vp>& vals) {
    {
        std::lock_guard lk(mu);
        if (closed) {
            return false;
        }
        for (const auto& v : vals) {
            if (!v) {
                continue;
            }
            if (values.size() >= max_values) {
                ++overflow;
                continue;
            }
            values.push_back(Inbound{kind, key, v});
        }
    }
    cv.notify_one();
    return true;
}

Impl::Impl(dht::DhtRunner& runner, dht::crypto::Identity identity, Options options,
           Callbacks callbacks)
    : runner_(runner), identity_(std::move(identity)), o_(std::move(options)),
      cb_(std::move(callbacks)) {
    if (!identity_.first || !identity_.second || !isRsa(identity_)) {
        throw std::invalid_argument(
            "share: the identity must be an RSA key with its certificate (OpenDHT 2.4 verifies "
            "and encrypts only with RSA)");
    }
    bucket_s_ = o_.bucket.count();
    epoch_s_ = o_.epoch.count();
    retention_s_ = o_.retention.count();
    if (bucket_s_ <= 0 || epoch_s_ <= 0 || epoch_s_ % bucket_s_ != 0) {
        throw std::invalid_argument("share: epoch must be a positive multiple of bucket");
    }
    if (retention_s_ <= 0 || o_.flush.count() <= 0) {
        throw std::invalid_argument("share: retention and flush must be positive");
    }
    if (o_.shards < 1 || o_.shards > 256) {
        throw std::invalid_argument("share: shards must be 1..256");
    }
    if (o_.max_batch_bytes < 1024 || o_.max_batch_bytes > std::size_t{40} * 1024) {
        throw std::invalid_argument("share: max_batch_bytes must be 1 KiB..40 KiB");
    }
    if (o_.app.empty() || o_.app.find('/') != std::string::npos) {
        throw std::invalid_argument("share: app must be a non-empty name without '/'");
    }
    if (o_.max_publishers == 0 || o_.max_inbox == 0 || o_.max_queued_records == 0 ||
        o_.max_seen_records == 0 || o_.max_subjects == 0) {
        throw std::invalid_argument("share: budgets must be positive");
    }
    buckets_per_epoch_ = epoch_s_ / bucket_s_;
    retention_buckets_ = ceilDiv(retention_s_, bucket_s_);
    retention_epochs_ = ceilDiv(retention_s_, epoch_s_);
    grant_interval_ms_ = o_.grant_interval.count() > 0
                             ? o_.grant_interval.count()
                             : std::min<std::int64_t>(60000, epoch_s_ * 1000 / 12);
    for (const auto& t : o_.trust) {
        trust_.insert(parseId(t, "trust anchor"));
    }
    for (const auto& d : o_.deny) {
        deny_.insert(parseId(d, "denied identity"));
    }
    ns_ = nameSpace(o_.app, o_.network);
    self_ = identity_.second->getId();
    self_hex_ = self_.toString();
    mb_ = std::make_shared<Mailbox>();
    mb_->max_values = o_.max_inbox;
    mb_->max_records = o_.max_queued_records;
    st_.identity = self_hex_;
    st_.credit = o_.credit;
    snap_ = st_;
}

std::int64_t Impl::nowMs() const {
    auto t = o_.now ? o_.now() : std::chrono::system_clock::now();
    return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

std::int64_t Impl::nowS() const {
    return floorDiv(nowMs(), 1000);
}

void Impl::log(const std::string& line) const {
    if (o_.log) {
        o_.log(line);
    }
}

void Impl::start() {
    if (started_.exchange(true)) {
        return;
    }
    if (runner_.getId() != self_) {
        started_ = false;
        throw std::invalid_argument("share: the DhtRunner does not run with this identity (" +
                                    runner_.getId().toString() + " != " + self_hex_ + ")");
    }
    runner_.registerType(kBatchValueType);
    runner_.registerType(kGrantValueType);
    start_s_ = nowS();
    hour_ = floorDiv(start_s_, 3600);
    last_flush_ms_ = nowMs();
    st_.running = true;
    publishSnapshot(true);
    worker_ = std::thread([this] { run(); });
}

void Impl::stop() {
    if (!started_ || stopping_.exchange(true)) {
        return;
    }
    {
        std::lock_guard lk(mb_->mu);
        mb_->closed = true;
    }
    mb_->cv.notify_all();
    if (worker_.joinable()) {
        worker_.join();
    }
    // The worker is gone: its state is ours now.
    for (auto& [key, tok] : listens_) {
        runner_.cancelListen(key, tok);
    }
    for (auto& [key, tok] : inbox_listens_) {
        runner_.cancelListen(key, tok);
    }
    listens_.clear();
    inbox_listens_.clear();
    for (auto& [until, kv] : own_puts_) {
        runner_.cancelPut(kv.first, kv.second);
    }
    own_puts_.clear();
    st_.running = false;
    publishSnapshot(true);
}

bool Impl::publish(Record r) {
    if (!validRecord(r)) {
        std::lock_guard lk(mb_->mu);
        ++mb_->records_dropped;
        return false;
    }
    std::size_t size = recordSize(r);
    {
        std::lock_guard lk(mb_->mu);
        if (mb_->records.size() >= mb_->max_records) {
            mb_->record_bytes -= std::min(mb_->record_bytes, recordSize(mb_->records.front()));
            mb_->records.pop_front();
            ++mb_->records_dropped;
        }
        mb_->records.push_back(std::move(r));
        mb_->record_bytes += size;
    }
    mb_->cv.notify_one();
    return true;
}

void Impl::noteDhtLog(std::string_view line) {
    if (line.find("Signature verification failed") != std::string_view::npos) {
        sig_log_.fetch_add(1, std::memory_order_relaxed);
    }
}

void Impl::run() {
    pthread_setname_np(pthread_self(), "sp-share"); // visible in top -H, gdb, /proc
    std::vector<Inbound> batch;
    for (;;) {
        {
            std::unique_lock lk(mb_->mu);
            mb_->cv.wait_for(lk, std::chrono::milliseconds(50),
                             [&] { return mb_->closed || !mb_->values.empty(); });
            if (mb_->closed) {
                return;
            }
            while (!mb_->values.empty() && batch.size() < 256) {
                batch.push_back(std::move(mb_->values.front()));
                mb_->values.pop_front();
            }
        }
        for (const auto& in : batch) {
            try {
                if (in.kind == Kind::Batch) {
                    handleBatch(in);
                } else {
                    handleGrant(in);
                }
            } catch (const std::exception& e) {
                // Untrusted input never escapes the receive path.
                ++st_.rejected.record_schema;
                log(std::string("share: value rejected: ") + e.what());
            }
        }
        batch.clear();
        try {
            tick();
        } catch (const std::exception& e) {
            log(std::string("share: ") + e.what());
        }
        publishSnapshot(false);
    }
}

void Impl::countBytes(std::uint64_t n, bool put) {
    (put ? st_.bytes_put : st_.bytes_received) += n;
    hour_bytes_ += n;
    if (o_.max_bytes_per_hour != 0 && hour_bytes_ >= o_.max_bytes_per_hour && !paused_) {
        paused_ = true;
        log("share: the bandwidth cap (" + std::to_string(o_.max_bytes_per_hour) +
            " bytes per hour) is reached; receiving batches and publishing pause until the "
            "next hour");
    }
}

void Impl::tick() {
    std::int64_t now = nowS();
    std::int64_t hour = floorDiv(now, 3600);
    if (hour != hour_) {
        hour_ = hour;
        hour_bytes_ = 0;
        if (paused_) {
            paused_ = false;
            need_catch_up_ = true;
        }
    }
    maintainListens();
    maybeFlush();
    std::int64_t ms = nowMs();
    if (grant_now_ || ms >= next_grant_ms_) {
        grant_now_ = false;
        next_grant_ms_ = ms + grant_interval_ms_;
        evaluateGrants();
    }
    if (ms >= next_expire_ms_) {
        next_expire_ms_ = ms + 1000;
        expire();
    }
}

void Impl::maintainListens() {
    std::int64_t now = nowS();
    std::int64_t cb = bucketOf(now);
    std::int64_t ce = epochOf(now);
    // Batch keys: the previous, current and next bucket of every shard (none while paused).
    std::set<dht::InfoHash> want;
    if (!paused_) {
        for (std::int64_t b = cb - 1; b <= cb + 1; ++b) {
            for (unsigned s = 0; s < o_.shards; ++s) {
                auto key = batchKey(ns_, b, s);
                want.insert(key);
                if (!listens_.count(key)) {
                    auto mb = mb_;
                    auto fut =
                        runner_.listen(key, [mb, key](const std::vector<Vp>& vals, bool expired) {
                            return mb->push(Kind::Batch, key, expired ? std::vector<Vp>{} : vals);
                        });
                    listens_.emplace(key, fut.share());
                    listen_bucket_[key] = b;
                }
            }
        }
    }
    for (auto it = listens_.begin(); it != listens_.end();) {
        if (!want.count(it->first)) {
            runner_.cancelListen(it->first, it->second);
            listen_bucket_.erase(it->first);
            it = listens_.erase(it);
        } else {
            ++it;
        }
    }
    // This node's inbox: the previous, current and next epoch.
    std::set<dht::InfoHash> want_inbox;
    for (std::int64_t e = ce - 1; e <= ce + 1; ++e) {
        auto key = inboxKey(ns_, self_, e);
        want_inbox.insert(key);
        if (!inbox_listens_.count(key)) {
            auto mb = mb_;
            auto fut = runner_.listen(key, [mb, key](const std::vector<Vp>& vals, bool expired) {
                return mb->push(Kind::Grant, key, expired ? std::vector<Vp>{} : vals);
            });
            inbox_listens_.emplace(key, fut.share());
        }
    }
    for (auto it = inbox_listens_.begin(); it != inbox_listens_.end();) {
        if (!want_inbox.count(it->first)) {
            runner_.cancelListen(it->first, it->second);
            it = inbox_listens_.erase(it);
        } else {
            ++it;
        }
    }
    if (need_catch_up_ && !paused_) {
        need_catch_up_ = false;
        catchUp(cb - retention_buckets_, cb - 2);
    }
}

// Gets the stored batches of buckets [from, to] of every shard (the listens cover the rest).
void Impl::catchUp(std::int64_t from, std::int64_t to) {
    for (std::int64_t b = from; b <= to; ++b) {
        for (unsigned s = 0; s < o_.shards; ++s) {
            auto key = batchKey(ns_, b, s);
            auto mb = mb_;
            runner_.get(
                key,
                [mb, key](const std::vector<Vp>& vals) { return mb->push(Kind::Batch, key, vals); },
                [](bool) {});
        }
    }
}

Peer* Impl::peerFor(const std::shared_ptr<const dht::crypto::PublicKey>& pk) {
    const auto& id = pk->getId();
    auto it = peers_.find(id);
    std::int64_t now = nowS();
    if (it != peers_.end()) {
        it->second.last_active = now;
        if (!it->second.pk) {
            it->second.pk = pk;
        }
        return &it->second;
    }
    if (peers_.size() >= o_.max_publishers) {
        // Evict the least recently active peer that is neither trusted nor a current partner.
        std::int64_t ce = epochOf(now);
        auto victim = peers_.end();
        for (auto p = peers_.begin(); p != peers_.end(); ++p) {
            if (trust_.count(p->first) || p->second.granted.count(ce) || p->second.keys.count(ce)) {
                continue;
            }
            if (victim == peers_.end() || p->second.last_active < victim->second.last_active) {
                victim = p;
            }
        }
        if (victim == peers_.end()) {
            return nullptr;
        }
        auto gone = victim->first;
        peers_.erase(victim);
        pending_.erase(std::remove_if(pending_.begin(), pending_.end(),
                                      [&](const Pending& x) { return x.publisher == gone; }),
                       pending_.end());
    }
    Peer p;
    p.id = id;
    p.pk = pk;
    p.first_seen = now;
    p.last_active = now;
    return &peers_.emplace(id, std::move(p)).first->second;
}

void Impl::expire() {
    std::int64_t now = nowS();
    std::int64_t cb = bucketOf(now);
    std::int64_t ce = epochOf(now);
    while (!own_puts_.empty() && own_puts_.begin()->first < now) {
        const auto& kv = own_puts_.begin()->second;
        runner_.cancelPut(kv.first, kv.second);
        own_puts_.erase(own_puts_.begin());
    }
    while (!pending_.empty() && pending_.front().received + retention_s_ < now) {
        pending_.pop_front();
        ++st_.rejected.no_key_expired;
    }
    std::int64_t old_b = cb - retention_buckets_ - 2;
    std::int64_t old_e = ce - retention_epochs_ - 1;
    for (auto& [id, p] : peers_) {
        p.batches_in_bucket.erase(p.batches_in_bucket.begin(),
                                  p.batches_in_bucket.lower_bound(old_b));
        for (auto it = p.seqs.begin(); it != p.seqs.end();) {
            it = it->second.second < old_b ? p.seqs.erase(it) : std::next(it);
        }
        p.keys.erase(p.keys.begin(), p.keys.lower_bound(old_e));
        p.grants_from.erase(p.grants_from.begin(), p.grants_from.lower_bound(old_e));
        p.credited_epochs.erase(p.credited_epochs.begin(), p.credited_epochs.lower_bound(ce - 2));
        p.granted.erase(p.granted.begin(), p.granted.lower_bound(ce - 1));
    }
    own_keys_.erase(own_keys_.begin(), own_keys_.lower_bound(old_e));
    own_batches_in_bucket_.erase(own_batches_in_bucket_.begin(),
                                 own_batches_in_bucket_.lower_bound(cb - 1));
    constexpr std::int64_t kSixHours = std::int64_t{6} * 3600;
    while (!subject_order_.empty() && subject_order_.front().first + kSixHours < now) {
        subjects_.erase(subject_order_.front().second);
        subject_order_.pop_front();
    }
}

void Impl::publishSnapshot(bool force) {
    std::int64_t ms = nowMs();
    if (!force && ms < next_snapshot_ms_) {
        return;
    }
    next_snapshot_ms_ = ms + 200;
    std::int64_t now = floorDiv(ms, 1000);
    std::int64_t ce = epochOf(now);
    Status s = st_;
    s.epoch = ce;
    s.bucket = bucketOf(now);
    s.newcomer = newcomer_;
    s.pending_batches = pending_.size();
    s.publishers = peers_.size();
    for (const auto& [id, p] : peers_) {
        if (p.granted.count(ce)) {
            s.granted_to.push_back(id.toString());
        }
        if (p.keys.count(ce)) {
            s.granted_by.push_back(id.toString());
        }
    }
    std::sort(s.granted_to.begin(), s.granted_to.end());
    std::sort(s.granted_by.begin(), s.granted_by.end());
    std::lock_guard lk(stats_mu_);
    snap_ = std::move(s);
}

Status Impl::status() const {
    Status s;
    {
        std::lock_guard lk(stats_mu_);
        s = snap_;
    }
    s.rejected.signature += sig_log_.load(std::memory_order_relaxed);
    std::lock_guard lk(mb_->mu);
    s.rejected.cap += mb_->overflow;
    s.records_dropped += mb_->records_dropped;
    s.queued_records = mb_->records.size();
    return s;
}

} // namespace detail

struct Sharer::Impl : detail::Impl {
    using detail::Impl::Impl;
};

Sharer::Sharer(dht::DhtRunner& runner, dht::crypto::Identity identity, Options options,
               Callbacks callbacks)
    : impl_(std::make_unique<Impl>(runner, std::move(identity), std::move(options),
                                   std::move(callbacks))) {}

Sharer::~Sharer() {
    stop();
}

void Sharer::start() {
    impl_->start();
}

void Sharer::stop() {
    impl_->stop();
}

bool Sharer::publish(Record record) {
    return impl_->publish(std::move(record));
}

Status Sharer::status() const {
    return impl_->status();
}

void Sharer::noteDhtLog(std::string_view line) {
    impl_->noteDhtLog(line);
}

const std::string& Sharer::identity() const {
    return impl_->self_hex_;
}

} // namespace sp::share
