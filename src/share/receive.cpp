// The receive pipeline for batches (docs/P2P.md, "Share to receive (RCP1)"): signature,
// binding, replay, caps, key (or wait), AES-GCM + context, records (schema, time, dedupe),
// then credit. Every rejection is counted by reason; nothing here throws past run().
#include <algorithm>
#include <cstdlib>

#include "share/sharer_impl.hpp"

namespace sp::share::detail {

namespace {
constexpr std::int64_t kMaxRecordSkew = std::int64_t{15} * 60; // s
}

const dht::InfoHash* Impl::admitSender(const dht::Value& v, bool batch) {
    // 1. Signature: OpenDHT verified signed values before the callback (failures are counted
    //    through noteDhtLog); an unsigned value has no sender.
    if (!v.owner || v.signature.empty()) {
        ++st_.rejected.signature;
        return nullptr;
    }
    const auto& id = v.owner->getId();
    if (id == self_) {
        return nullptr; // our own value
    }
    if (batch && paused_) {
        ++st_.rejected.bandwidth;
        return nullptr;
    }
    countBytes(v.size(), false);
    if (deny_.count(id)) {
        ++st_.rejected.denied;
        return nullptr;
    }
    return &id;
}

void Impl::handleBatch(const Inbound& in) {
    const auto& v = *in.value;
    const dht::InfoHash* sender = admitSender(v, true);
    if (sender == nullptr) {
        return;
    }
    const auto& pid = *sender;
    auto bv = decodeBatch(v.data);
    if (!bv || v.type != kBatchType) {
        ++st_.rejected.record_schema;
        return;
    }
    // 3. Binding: the key is the one of the header's bucket and the publisher's shard, the
    //    epoch is the bucket's, the bucket is within the retention window.
    std::int64_t cb = bucketOf(nowS());
    const auto& h = bv->hdr;
    if (h.s != shardOf(pid, o_.shards) || batchKey(ns_, h.b, h.s) != in.key ||
        h.e != epochOfBucket(h.b) || h.b < cb - retention_buckets_ - 1 || h.b > cb + 1) {
        ++st_.rejected.binding;
        return;
    }
    Peer* p = peerFor(v.owner);
    if (p == nullptr) {
        ++st_.rejected.cap;
        return;
    }
    // 4. Replay: (publisher, q) must be new; the same value delivered again is ignored.
    auto seen = p->seqs.find(h.q);
    if (seen != p->seqs.end()) {
        if (seen->second.first != v.id) {
            ++st_.rejected.replay;
        }
        return;
    }
    // 2. Caps (after binding and replay, so that replays cannot use up a publisher's cap).
    auto& n = p->batches_in_bucket[h.b];
    if (n >= o_.max_batches_per_publisher_bucket) {
        ++st_.rejected.cap;
        return;
    }
    ++n;
    p->seqs.emplace(h.q, std::make_pair(v.id, h.b));
    p->publisher = true;
    p->last_batch_epoch = std::max(p->last_batch_epoch, h.e);
    if (!p->stamp_ok && h.stamp && checkStamp(pid.toString(), *h.stamp, o_.stamp_bits)) {
        p->stamp_ok = true;
    }
    // 5. Key: without one, wait (bounded) for a grant.
    if (!p->keys.count(h.e)) {
        if (pending_.size() >= o_.max_pending_batches) {
            pending_.pop_front();
            ++st_.rejected.no_key_expired;
        }
        pending_.push_back(Pending{pid, std::move(*bv), nowS()});
        return;
    }
    openBatch(*p, *bv);
}

void Impl::openBatch(Peer& p, const BatchValue& bv) {
    // 6. AES-GCM, inflate, context == header.
    Blob compressed;
    try {
        compressed = dht::crypto::aesDecrypt(bv.ct, p.keys.at(bv.hdr.e));
    } catch (...) {
        ++st_.rejected.decrypt;
        return;
    }
    bool inflate_failed = false;
    auto body = decodeBody(compressed, &inflate_failed);
    if (!body) {
        ++(inflate_failed ? st_.rejected.decrypt : st_.rejected.record_schema);
        return;
    }
    Context want{pkBytes(p.id), bv.hdr.e, bv.hdr.b, bv.hdr.q};
    if (!(body->ctx == want)) {
        ++st_.rejected.context;
        return;
    }
    ++st_.batches_received;
    st_.rejected.record_schema += body->bad_records;
    // 7. Records.
    std::int64_t now = nowS();
    std::string publisher = p.id.toString();
    for (auto& r : body->records) {
        if (std::llabs(r.time - now) > kMaxRecordSkew) {
            ++st_.rejected.record_time;
            continue;
        }
        std::string id(r.id.begin(), r.id.end());
        if (!seen_records_.insert(id).second) {
            ++st_.rejected.duplicate;
            continue;
        }
        seen_order_.push_back(std::move(id));
        while (seen_order_.size() > o_.max_seen_records) {
            seen_records_.erase(seen_order_.front());
            seen_order_.pop_front();
        }
        bool credited = creditRecord(p, r, bv.hdr.e);
        ++st_.records_delivered;
        if (cb_.deliver) {
            cb_.deliver(Delivered{std::move(r), publisher, credited});
        }
    }
}

bool Impl::l2Ok(const Peer& p) const {
    return o_.credit != Credit::L2 || (p.stamp_ok && nowS() - p.first_seen >= epoch_s_);
}

// Credits `p` in epoch `e`: the epoch of the credited batch (at most the current one), not the
// epoch in which it is opened, so a batch received late or decrypted once a key came does not
// extend its publisher's grants (a node that stops in e holds no key for e + 2).
void Impl::creditPeer(Peer& p, std::int64_t e) {
    std::int64_t ce = epochOf(nowS());
    bool was = isQualified(p);
    p.credited_epochs.insert(std::min(e, ce));
    ++st_.records_credited;
    if (!was || !p.granted.count(ce)) {
        grant_now_ = true;
    }
}

// L0: every valid record. L1/L2: the first report of a subject here, once it is confirmed
// (locally, or later by a qualified publisher or trust anchor reporting it too).
bool Impl::creditRecord(Peer& p, const Record& r, std::int64_t e) {
    if (o_.credit == Credit::L0) {
        creditPeer(p, e);
        return true;
    }
    std::int64_t now = nowS();
    auto it = subjects_.find(r.subject);
    if (it == subjects_.end()) {
        if (subjects_.size() >= o_.max_subjects && !subject_order_.empty()) {
            subjects_.erase(subject_order_.front().second);
            subject_order_.pop_front();
        }
        it = subjects_.emplace(r.subject, SubjectSeen{p.id, now, false}).first;
        subject_order_.emplace_back(now, r.subject);
    }
    auto& s = it->second;
    if (s.first != p.id) {
        // A later report: it confirms the first reporter if this publisher is qualified.
        if (!s.credited && (isQualified(p) || trust_.count(p.id))) {
            auto first = peers_.find(s.first);
            if (first != peers_.end() && l2Ok(first->second)) {
                s.credited = true;
                creditPeer(first->second, epochOf(now)); // confirmed now (docs/P2P.md)
            }
        }
        return false;
    }
    if (s.credited || !l2Ok(p)) {
        return false;
    }
    if (cb_.confirmed && cb_.confirmed(r.subject, r.time)) {
        s.credited = true;
        creditPeer(p, e);
        return true;
    }
    return false;
}

} // namespace sp::share::detail
