#include "store/store_impl.hpp"

#include <thread>

#include "core/text.hpp"

// The write path (store thread): one transaction per batch, the index updated and published
// after the commit; events the database refuses are kept and retried with backoff.

namespace sp::store {

// Remembers the connection's message for the failure being handled; returns rc.
int Store::Impl::fail(int rc) {
    last_error = sqlite3_errmsg(db);
    return rc;
}

// Counts errors and logs at most one line per kErrorReportEvery, whatever the event rate.
void Store::Impl::report(std::string_view what, std::uint64_t errors) {
    store.write_errors_.fetch_add(errors, std::memory_order_relaxed);
    unreported += errors;
    auto now = store.clock_.now();
    if (last_report && now - *last_report < kErrorReportEvery) {
        return;
    }
    spdlog::error("store: {} in {}: {} ({} write errors since the last report; unwritten events "
                  "are kept in memory and retried; {} lost so far)",
                  what, path(), last_error, unreported,
                  store.lost_.load(std::memory_order_relaxed));
    last_report = now;
    unreported = 0;
}

// After each commit of the writer (store thread), with the WAL's size in pages.
int Store::Impl::walHook(void* self, sqlite3* /*db*/, const char* /*name*/, int frames) {
    if (frames >= kCheckpointFrames) {
        static_cast<Impl*>(self)->checkpointer->request();
    }
    return SQLITE_OK;
}

const std::string& Store::Impl::createdAt(core::TimePoint t) {
    auto second = std::chrono::floor<std::chrono::seconds>(t.time_since_epoch()).count();
    if (second != created_at_second) {
        created_at = core::formatTimestamp(t).substr(0, 19); // drop ".nnnnnnnnn"
        created_at_second = second;
    }
    return created_at;
}

void Store::Impl::rollbackIfOpen() {
    if (sqlite3_get_autocommit(db) == 0) {
        run(rollback.get());
    }
}

// One transaction: every event of the batch, or none. Returns SQLITE_OK once committed and
// the index updated; on failure nothing is stored and the error is in last_error.
int Store::Impl::insertBatch(std::span<const core::EventPtr> batch) {
    std::lock_guard gate(checkpointer->gate());
    int rc = run(begin.get());
    if (rc != SQLITE_OK) {
        return fail(rc);
    }
    auto abort = [&](int code) {
        fail(code);
        rollbackIfOpen();
        return code;
    };
    sqlite3_stmt* s = insert.get();
    // The statement holds pointers into the events (SQLITE_STATIC) until the next batch.
    struct Unbind {
        sqlite3_stmt* s;
        ~Unbind() { sqlite3_clear_bindings(s); }
    } unbind{s};
    std::vector<std::size_t> skipped; // in batch order: not stored, not indexed
    std::size_t duplicates = 0;
    for (std::size_t i = 0; i < batch.size(); ++i) {
        const core::Event& e = *batch[i];
        if (e.origin == core::Origin::Peer) {
            bindText(peer_stored.get(), 1, e.event_uuid);
            rc = sqlite3_step(peer_stored.get());
            sqlite3_reset(peer_stored.get());
            sqlite3_clear_bindings(peer_stored.get());
            if (rc == SQLITE_ROW) {
                skipped.push_back(i);
                ++duplicates;
                continue;
            }
            if (rc != SQLITE_DONE) {
                return abort(rc);
            }
        }
        bindText(s, 1, e.event_timestamp);
        bindText(s, 2, e.event_uuid);
        bindText(s, 3, e.collected_method);
        bindText(s, 4, e.source_ip);
        bindText(s, 5, e.called_number);
        bindText(s, 6, e.transport_type);
        bindText(s, 7, e.sip_method);
        bindText(s, 8, e.sip_user_agent);
        bindText(s, 9, e.sip_message);
        bindText(s, 10, e.created_by_node_id);
        bindText(s, 11, createdAt(e.time));
        bindText(s, 12, e.app_version);
        bindPort(s, 13, e.source_port);
        bindText(s, 14, e.destination_ip);
        bindPort(s, 15, e.destination_port);
        bindText(s, 16, core::originName(e.origin));
        sqlite3_bind_int64(s, 17, toMicros(e.time));
        if (e.reporter.empty()) {
            sqlite3_bind_null(s, 18); // local, or a plaintext value: no verified reporter
        } else {
            bindText(s, 18, e.reporter);
        }
        rc = run(s);
        if (rc == SQLITE_OK) {
            continue;
        }
        if (!isRowError(rc)) {
            return abort(rc);
        }
        fail(rc); // this row only: the transaction goes on
        skipped.push_back(i);
    }
    rc = run(commit.get());
    if (rc != SQLITE_OK) {
        return abort(rc);
    }
    const std::size_t refused = skipped.size() - duplicates;
    store.transactions_.fetch_add(1, std::memory_order_relaxed);
    store.stored_.fetch_add(batch.size() - skipped.size(), std::memory_order_relaxed);
    store.duplicates_.fetch_add(duplicates, std::memory_order_relaxed);
    // Skipped rows are almost always none. The index's readers see the batch at publish().
    auto skip = skipped.begin();
    for (std::size_t i = 0; i < batch.size(); ++i) {
        if (skip != skipped.end() && *skip == i) {
            ++skip;
            continue;
        }
        if (toMicros(batch[i]->time) >= counted_from) {
            store.index_.add(*batch[i]);
        }
    }
    store.index_.publish();
    if (refused > 0) {
        store.lost_.fetch_add(refused, std::memory_order_relaxed);
        report(fmt::format("{} events rejected", refused), refused);
    }
    return SQLITE_OK;
}

// Writes a batch, trying again after a short pause while the database is busy (another
// process holds the write lock beyond busy_timeout). False: nothing of it was stored.
bool Store::Impl::write(std::span<const core::EventPtr> batch, int attempts) {
    for (int attempt = 1;; ++attempt) {
        int rc = insertBatch(batch);
        if (rc == SQLITE_OK) {
            return true;
        }
        if (!isBusy(rc) || attempt >= attempts) {
            report(fmt::format("writing {} events failed", batch.size()), 1);
            return false;
        }
        std::this_thread::sleep_for(kBusyBackoff * attempt);
    }
}

void Store::Impl::scheduleRetry() {
    retry_delay = retry_delay.count() == 0 ? kRetryFirst : std::min(retry_delay * 2, kRetryMax);
    retry_at = store.clock_.now() + retry_delay;
}

// Keeps events for a later attempt, dropping (and counting) the oldest beyond max_pending.
void Store::Impl::defer(std::span<const core::EventPtr> batch) {
    pending.insert(pending.end(), batch.begin(), batch.end());
    std::size_t limit = std::max<std::size_t>(store.options_.max_pending, 1);
    if (pending.size() > limit) {
        std::size_t excess = pending.size() - limit;
        pending.erase(pending.begin(), pending.begin() + static_cast<std::ptrdiff_t>(excess));
        store.lost_.fetch_add(excess, std::memory_order_relaxed);
        last_error = fmt::format("{} events dropped, more than {} pending", excess, limit);
        report("giving up on events", 0);
    }
    store.pending_.store(pending.size(), std::memory_order_relaxed);
}

// Writes pending events oldest first, in chunks. False when some remain (retry scheduled).
bool Store::Impl::flushPending(int attempts) {
    std::size_t done = 0;
    bool ok = true;
    while (done < pending.size()) {
        std::size_t n = std::min(kFlushChunk, pending.size() - done);
        if (!write(std::span<const core::EventPtr>(pending.data() + done, n), attempts)) {
            ok = false;
            break;
        }
        done += n;
    }
    pending.erase(pending.begin(), pending.begin() + static_cast<std::ptrdiff_t>(done));
    store.pending_.store(pending.size(), std::memory_order_relaxed);
    if (ok) {
        retry_delay = std::chrono::milliseconds(0);
        spdlog::info("store: {} writable again", path());
    } else {
        scheduleRetry();
    }
    return ok;
}

} // namespace sp::store
