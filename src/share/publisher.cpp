// Publishing: per-epoch keys, batches (flush every Options::flush or at max_batch_bytes),
// signed with Value::sign and put permanently until the retention window has passed.
#include <opendht/rng.h>

#include "share/sharer_impl.hpp"

namespace sp::share::detail {

namespace {

dht::Value::Id randomId() {
    dht::crypto::random_device rd;
    std::uniform_int_distribution<dht::Value::Id> dist;
    return dist(rd);
}

} // namespace

const Blob& Impl::keyFor(std::int64_t e) {
    auto it = own_keys_.find(e);
    if (it != own_keys_.end()) {
        return it->second;
    }
    Blob key(kKeyBytes);
    dht::crypto::random_device rd;
    std::uniform_int_distribution<unsigned> dist(0, 255);
    for (auto& b : key) {
        b = static_cast<std::uint8_t>(dist(rd));
    }
    return own_keys_.emplace(e, std::move(key)).first->second;
}

void Impl::putOwn(const dht::InfoHash& key, const Vp& v, std::int64_t until) {
    countBytes(v->size(), true);
    runner_.put(
        key, v, [](bool) {}, dht::time_point::max(), true);
    own_puts_.emplace(until, std::make_pair(key, v->id));
}

void Impl::maybeFlush() {
    if (paused_) {
        return;
    }
    std::int64_t ms = nowMs();
    std::int64_t now = floorDiv(ms, 1000);
    std::int64_t b = bucketOf(now);
    if (own_batches_in_bucket_[b] >= o_.max_batches_per_publisher_bucket) {
        return; // receivers would drop it: wait for the next bucket
    }
    std::vector<Record> recs;
    {
        std::lock_guard lk(mb_->mu);
        bool due = !mb_->records.empty() && (ms - last_flush_ms_ >= o_.flush.count() ||
                                             mb_->record_bytes >= o_.max_batch_bytes);
        if (!due) {
            return;
        }
        std::size_t bytes = 0;
        while (!mb_->records.empty()) {
            std::size_t sz = recordSize(mb_->records.front());
            if (!recs.empty() && bytes + sz > o_.max_batch_bytes) {
                break;
            }
            bytes += sz;
            mb_->record_bytes -= std::min(mb_->record_bytes, sz);
            recs.push_back(std::move(mb_->records.front()));
            mb_->records.pop_front();
        }
    }
    last_flush_ms_ = ms;
    std::int64_t e = epochOfBucket(b);
    std::uint64_t q = std::max<std::uint64_t>(last_q_ + 1, static_cast<std::uint64_t>(ms));
    last_q_ = q;
    Context ctx{pkBytes(self_), e, b, q};
    BatchHeader hdr{e, b, shardOf(self_, o_.shards), q, o_.stamp};
    Blob ct = dht::crypto::aesEncrypt(encodeBody(ctx, recs), keyFor(e));
    auto v = std::make_shared<dht::Value>(kBatchType, encodeBatch(hdr, ct), randomId());
    v->user_type = "rcp1/b";
    v->sign(*identity_.first);
    putOwn(batchKey(ns_, b, hdr.s), v, (b + 1) * bucket_s_ + retention_s_);
    ++own_batches_in_bucket_[b];
    ++st_.batches_put;
    last_published_epoch_ = e;
    st_.records_published += recs.size();
    for (const auto& r : recs) {
        std::string id(r.id.begin(), r.id.end());
        if (seen_records_.insert(id).second) {
            seen_order_.push_back(std::move(id));
        }
    }
    while (seen_order_.size() > o_.max_seen_records) {
        seen_records_.erase(seen_order_.front());
        seen_order_.pop_front();
    }
}

} // namespace sp::share::detail
