#include "store/store_impl.hpp"

// Loading the in-memory index, retention (--max-age), eviction for the size budgets
// (--max-rows, the index's memory), and the scan that makes first-seen times exact again.

namespace sp::store {

// One pass over honey_time_keys from counted_from (sequential reads of a compact index),
// every row counted as local; then one pass over the peer rows (the covering honey_peer
// index) that counts them as the peers' instead, with their reporters.
void Store::Impl::loadIndex() {
    Index& index = store.index_;
    index.clear();
    sqlite3_stmt* q = keys_from.get();
    sqlite3_bind_int64(q, 1, counted_from);
    sqlite3_bind_int64(q, 2, -1); // no LIMIT
    sqlite3_bind_int64(q, 3, 0);
    int rc = SQLITE_OK;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        // A NULL key (legacy rows) is "", as retention will see it.
        index.add(columnText(q, 1), columnText(q, 2), fromMicros(sqlite3_column_int64(q, 0)),
                  core::Origin::Local, {});
    }
    sqlite3_reset(q);
    if (rc != SQLITE_DONE) {
        startupFailure("loading the index", rc);
    }
    sqlite3_stmt* p = peer_keys.get();
    sqlite3_bind_int64(p, 1, counted_from);
    while ((rc = sqlite3_step(p)) == SQLITE_ROW) {
        index.reclassifyAsPeer(columnText(p, 0), columnText(p, 1), columnText(p, 2));
    }
    sqlite3_reset(p);
    if (rc != SQLITE_DONE) {
        startupFailure("loading the index", rc);
    }
    index.publish();
}

// Deletes up to `limit` rows older than `before`, oldest first, and makes the index follow:
// counts, dropped keys, and for the keys that remain a `first` of at least the newest
// removed time, made exact by refreshFirst().
// Returns the number of rows deleted, nullopt on a database error (nothing changed).
std::optional<std::size_t> Store::Impl::pruneChunk(Micros before, std::size_t limit,
                                                   Eviction reason) {
    struct Removed {
        std::string ip, number;
        Micros time;
        core::Origin origin;
        std::string reporter;
    };
    std::vector<Removed> removed;
    removed.reserve(limit);
    std::size_t deleted = 0;

    std::lock_guard gate(checkpointer->gate());
    int rc = run(begin.get());
    if (rc != SQLITE_OK) {
        fail(rc);
        report("retention failed", 1);
        return std::nullopt;
    }
    sqlite3_stmt* p = prune.get();
    sqlite3_bind_int64(p, 1, before);
    sqlite3_bind_int64(p, 2, static_cast<sqlite3_int64>(limit));
    while ((rc = sqlite3_step(p)) == SQLITE_ROW) {
        ++deleted;
        Micros t = sqlite3_column_int64(p, 2);
        if (t < counted_from) {
            continue; // never counted in the index
        }
        // RETURNING source_ip, called_number, event_time, origin, reporter
        bool peer = columnText(p, 3) == "peer";
        removed.push_back({std::string(columnText(p, 0)), std::string(columnText(p, 1)), t,
                           peer ? core::Origin::Peer : core::Origin::Local,
                           peer ? std::string(columnText(p, 4)) : std::string()});
    }
    sqlite3_reset(p);
    if (rc == SQLITE_DONE) {
        rc = run(commit.get());
    }
    if (rc != SQLITE_OK && rc != SQLITE_DONE) {
        fail(rc);
        rollbackIfOpen();
        report("retention failed", 1);
        return std::nullopt;
    }
    store.transactions_.fetch_add(1, std::memory_order_relaxed);
    for (const Removed& r : removed) {
        auto [ip_left, number_left] =
            store.index_.remove(r.ip, r.number, fromMicros(r.time), r.origin, r.reporter);
        if (ip_left) {
            refresh.waiting[0].insert(r.ip); // `first` is now a lower bound
        }
        if (number_left) {
            refresh.waiting[1].insert(r.number);
        }
    }
    store.index_.publish();
    // Counted after the index shows the deletion: /metrics never sees a row both in
    // database_events and in evicted_total.
    store.pruned_.fetch_add(deleted, std::memory_order_relaxed);
    store.evicted_[static_cast<std::size_t>(reason)].fetch_add(deleted, std::memory_order_relaxed);
    if (reason == Eviction::MaxAge && deleted < limit) {
        counted_from = std::max(counted_from, before); // nothing below the cutoff is left
    }
    return deleted;
}

// Rows per eviction transaction: large enough that eviction keeps up with any insert rate
// (a batch is at most 5,000 events), small enough that one transaction stays short.
constexpr std::size_t kEvictChunk = 20000;

// The size budgets: deletes the oldest rows, whatever their age, until the index is within
// --max-rows and, with 1% headroom, within its memory budget. Called after every written
// batch, so eviction keeps pace with insertion however large batches grow under load.
void Store::Impl::enforceSizeBudgets() {
    const StoreOptions& o = options();
    constexpr Micros kAnyAge = std::numeric_limits<Micros>::max();
    const Index& index = store.index_;
    while (o.max_rows > 0 && index.pendingEvents() > o.max_rows) {
        auto excess = index.pendingEvents() - o.max_rows;
        auto deleted =
            pruneChunk(kAnyAge, std::min<std::uint64_t>(excess, kEvictChunk), Eviction::MaxRows);
        if (!deleted || *deleted == 0) {
            return; // a database error (reported) or nothing left to delete
        }
    }
    while (o.max_index_bytes > 0 && index.memoryBytes() > o.max_index_bytes) {
        // Rows to go, in proportion to the excess (each row holds about memory/events), down
        // to 99% of the budget so that the next batches do not each evict a few rows.
        auto target = o.max_index_bytes - o.max_index_bytes / 100;
        auto per_row = index.memoryBytes() / std::max<std::uint64_t>(index.pendingEvents(), 1);
        auto rows = (index.memoryBytes() - target) / std::max<std::size_t>(per_row, 1) + 1;
        auto deleted =
            pruneChunk(kAnyAge, std::min<std::size_t>(rows, kEvictChunk), Eviction::IndexMemory);
        if (!deleted || *deleted == 0) {
            return;
        }
    }
}

// One retention step (--max-age) when due. True when more is due at once.
bool Store::Impl::retentionStep(core::TimePoint now) {
    const StoreOptions& o = options();
    const auto chunk = std::max<std::size_t>(o.prune_chunk, 1);
    if (o.max_age.count() <= 0 || now < next_prune) {
        return false;
    }
    auto deleted = pruneChunk(toMicros(now - o.max_age), chunk, Eviction::MaxAge);
    // A full chunk means more is due: continue at the next tick, between batches.
    bool more = deleted && *deleted >= chunk;
    next_prune = more ? now : now + o.prune_interval;
    return more;
}

// One step of the forward scan (at most `rows` rows, one read transaction): every key of the
// round found gets `first` = its oldest remaining row. True when more work remains (false
// when done, or after a database error: the scan resumes at the next tick).
// (A peer event older than the scan position, stored for a key of the round after the scan
// passed its time, is not seen: that key's `first` stays later than the peer's event.)
bool Store::Impl::refreshFirst(std::size_t rows) {
    FirstRefresh& r = refresh;
    if (FirstRefresh::empty(r.round)) {
        if (FirstRefresh::empty(r.waiting)) {
            return false;
        }
        std::swap(r.round, r.waiting);
        r.cursor = counted_from;
        r.ties = 0;
    }
    std::array<std::vector<std::pair<std::string, Micros>>, kKeys> found;
    sqlite3_stmt* q = keys_from.get();
    sqlite3_bind_int64(q, 1, r.cursor);
    sqlite3_bind_int64(q, 2, static_cast<sqlite3_int64>(rows));
    sqlite3_bind_int64(q, 3, r.ties);
    std::size_t seen = 0;
    int rc = SQLITE_OK;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        ++seen;
        Micros t = sqlite3_column_int64(q, 0);
        r.ties = t == r.cursor ? r.ties + 1 : 1;
        r.cursor = t;
        for (std::size_t k = 0; k < kKeys; ++k) {
            std::string_view key = columnText(q, static_cast<int>(k) + 1);
            if (auto it = r.round[k].find(key); it != r.round[k].end()) {
                found[k].emplace_back(std::move(r.round[k].extract(it).value()), t);
            }
        }
    }
    sqlite3_reset(q);
    if (rc != SQLITE_DONE) {
        fail(rc);
        report("refreshing first-seen times failed", 1);
        return false;
    }
    if (std::any_of(found.begin(), found.end(), [](const auto& f) { return !f.empty(); })) {
        for (std::size_t k = 0; k < kKeys; ++k) {
            for (const auto& [key, t] : found[k]) {
                store.index_.setFirst(k == 0, key, fromMicros(t));
            }
        }
        store.index_.publish();
    }
    if (seen < rows) { // the end of the table: keys not found have no rows left
        for (auto& keys : r.round) {
            keys.clear();
        }
    }
    return !FirstRefresh::empty(r.round) || !FirstRefresh::empty(r.waiting);
}

} // namespace sp::store
