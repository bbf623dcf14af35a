// Grants: the tit-for-tat rule (newcomers give first, trust anchors first), sending a grant
// (RSA-encrypted epoch keys in a signed value in the recipient's inbox) and receiving one
// (checked before the RSA decrypt).
#include <algorithm>
#include <opendht/rng.h>

#include "share/sharer_impl.hpp"

namespace sp::share::detail {

bool Impl::isQualified(const Peer& p) const {
    std::int64_t ce = epochOf(nowS());
    return p.credited_epochs.count(ce) != 0 || p.credited_epochs.count(ce - 1) != 0;
}

void Impl::evaluateGrants() {
    std::int64_t ms = nowMs();
    std::int64_t now = floorDiv(ms, 1000);
    std::int64_t ce = epochOf(now);
    // Grants for the next epoch go out in the last quarter of this one.
    bool late = (ms - ce * epoch_s_ * 1000) * 4 >= epoch_s_ * 1000 * 3;
    // The current epoch's key to a publisher credited in this epoch or the previous one; the
    // next epoch's key only to one credited in this epoch (so a node that stops contributing
    // in epoch e holds no key for e + 2: docs/P2P.md, departures).
    for (auto& [id, p] : peers_) {
        if (!p.pk || deny_.count(id) || !isQualified(p)) {
            continue;
        }
        ensureGrant(p, ce);
        if (late && p.credited_epochs.count(ce) != 0) {
            ensureGrant(p, ce + 1);
        }
    }
    // A publisher that holds no partner's key for this epoch or the last gives first again:
    // otherwise a mesh in which everyone was late at once (nobody credited anyone, so
    // nobody granted the next epoch) never recovers. Costs at most newcomer_grants grants
    // per epoch while it lasts; a node that publishes nothing never gives first.
    if (!newcomer_ && last_published_epoch_ >= ce - 1 && now >= start_s_ + epoch_s_ &&
        std::none_of(peers_.begin(), peers_.end(), [ce](const auto& kv) {
            return kv.second.keys.count(ce) != 0 || kv.second.keys.count(ce - 1) != 0;
        })) {
        newcomer_ = true;
        start_s_ = now;
        ++st_.give_first_restarts;
        log("share: no partner key for an epoch while publishing: giving first again");
    }
    if (!newcomer_) {
        return;
    }
    if (now >= start_s_ + static_cast<std::int64_t>(o_.newcomer_epochs) * epoch_s_) {
        newcomer_ = false;
        log("share: newcomer period over without a reciprocating grant");
        return;
    }
    // Newcomers give first, to publishers only (a node known only from its grants has shared
    // nothing), and only to those that published in this epoch or the last (one that stopped
    // contributing gets no key from anyone's giving first): trust anchors, then the earliest
    // seen. The next epoch's key only to those that published in this one, as for credit.
    std::vector<Peer*> given;
    std::vector<Peer*> candidates;
    for (auto& [id, p] : peers_) {
        if (!p.pk || deny_.count(id) || !p.publisher || p.last_batch_epoch < ce - 1) {
            continue;
        }
        (p.newcomer_grant ? given : candidates).push_back(&p);
    }
    std::sort(candidates.begin(), candidates.end(), [&](const Peer* a, const Peer* b) {
        bool ta = trust_.count(a->id) != 0;
        bool tb = trust_.count(b->id) != 0;
        if (ta != tb) {
            return ta;
        }
        return a->first_seen < b->first_seen;
    });
    for (auto* p : candidates) {
        if (given.size() >= o_.newcomer_grants) {
            break;
        }
        p->newcomer_grant = true;
        given.push_back(p);
    }
    for (auto* p : given) {
        ensureGrant(*p, ce);
        if (late && p->last_batch_epoch >= ce) {
            ensureGrant(*p, ce + 1);
        }
    }
}

void Impl::ensureGrant(Peer& p, std::int64_t target) {
    if (p.granted.count(target) || !p.pk) {
        return;
    }
    GrantPayload payload;
    payload.pk = pkBytes(self_);
    payload.e = target;
    // The target epoch's key, plus our keys still within the retention window.
    for (std::int64_t e = target - retention_epochs_; e < target; ++e) {
        auto it = own_keys_.find(e);
        if (it != own_keys_.end()) {
            payload.keys.emplace_back(e, it->second);
        }
    }
    payload.keys.emplace_back(target, keyFor(target));
    GrantValue g;
    g.e = target;
    try {
        g.enc = p.pk->encrypt(encodeGrantPayload(payload));
    } catch (const std::exception& e) {
        log("share: cannot encrypt a grant to " + p.id.toString() + ": " + e.what());
        p.granted.insert(target); // do not retry every interval
        return;
    }
    dht::crypto::random_device rd;
    std::uniform_int_distribution<dht::Value::Id> dist;
    auto v = std::make_shared<dht::Value>(kGrantType, encodeGrant(g), dist(rd));
    v->user_type = "rcp1/g";
    v->recipient = p.id;
    v->sign(*identity_.first);
    putOwn(inboxKey(ns_, p.id, target), v, (target + 1) * epoch_s_ + retention_s_);
    p.granted.insert(target);
    ++st_.grants_sent;
}

void Impl::handleGrant(const Inbound& in) {
    const auto& v = *in.value;
    const dht::InfoHash* sender = admitSender(v, false);
    if (sender == nullptr) {
        return;
    }
    const auto& gid = *sender;
    auto g = decodeGrant(v.data);
    if (!g || v.type != kGrantType) {
        ++st_.rejected.record_schema;
        return;
    }
    std::int64_t ce = epochOf(nowS());
    if (inboxKey(ns_, self_, g->e) != in.key || g->e < ce - retention_epochs_ - 1 ||
        g->e > ce + 1) {
        ++st_.rejected.binding;
        return;
    }
    Peer* p = peerFor(v.owner);
    if (p == nullptr) {
        ++st_.rejected.cap;
        return;
    }
    auto& ids = p->grants_from[g->e];
    if (ids.count(v.id)) {
        return; // the same value again (listen refresh, catch-up): nothing new
    }
    if (ids.size() >= o_.max_grants_per_granter_epoch) {
        ++st_.rejected.cap;
        return;
    }
    ids.insert(v.id);
    // Only now the RSA private-key operation (the checks above cost a verify at most).
    Blob plain;
    try {
        plain = identity_.first->decrypt(g->enc);
    } catch (...) {
        ++st_.rejected.decrypt;
        return;
    }
    auto payload = decodeGrantPayload(plain);
    if (!payload) {
        ++st_.rejected.record_schema;
        return;
    }
    if (payload->pk != pkBytes(gid) || payload->e != g->e) {
        ++st_.rejected.context;
        return;
    }
    bool any = false;
    for (auto& [e, key] : payload->keys) {
        if (e > g->e || e < g->e - retention_epochs_) {
            ++st_.rejected.context;
            return;
        }
        p->keys[e] = std::move(key);
        any = true;
    }
    if (!any) {
        return;
    }
    ++st_.grants_received;
    if (newcomer_ && !p->granted.empty()) {
        newcomer_ = false;
        log("share: first reciprocating grant (from " + gid.toString() + ")");
    }
    // Batches of this publisher that waited for a key.
    std::vector<BatchValue> ready;
    for (auto it = pending_.begin(); it != pending_.end();) {
        if (it->publisher == gid && p->keys.count(it->batch.hdr.e)) {
            ready.push_back(std::move(it->batch));
            it = pending_.erase(it);
        } else {
            ++it;
        }
    }
    for (const auto& bv : ready) {
        openBatch(*p, bv);
    }
}

} // namespace sp::share::detail
