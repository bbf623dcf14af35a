#include "store/checkpointer.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <unistd.h>

#include <chrono>
#include <optional>

#include <spdlog/spdlog.h>

#include "store/store.hpp"

namespace sp::store {
namespace {

constexpr int kTailFrames = 256; // left for the gated pass: ~1 MiB, a few ms
constexpr int kMaxPasses = 4;    // then the gated pass takes whatever is left

} // namespace

void WriteGate::lock() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return !checkpointing_; });
    writing_ = true;
}

void WriteGate::unlock() {
    {
        std::lock_guard lock(mutex_);
        writing_ = false;
    }
    changed_.notify_all();
}

void WriteGate::lockForCheckpoint() {
    std::unique_lock lock(mutex_);
    checkpointing_ = true;
    changed_.wait(lock, [&] { return !writing_; });
}

void WriteGate::unlockForCheckpoint() {
    {
        std::lock_guard lock(mutex_);
        checkpointing_ = false;
    }
    changed_.notify_all();
}

Checkpointer::Checkpointer(const std::string& path, int busy_timeout_ms) : path_(path) {
    int rc =
        sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK) {
        std::string msg = db_ != nullptr ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
        sqlite3_close_v2(db_);
        db_ = nullptr;
        throw StoreError(fmt::format("cannot open database {} for checkpoints: {}", path, msg));
    }
    sqlite3_busy_timeout(db_, busy_timeout_ms);
    // A connection learns that the file is in WAL mode when it first reads it; until then
    // a checkpoint through it does nothing.
    rc = sqlite3_exec(db_, "SELECT COUNT(*) FROM sqlite_master", nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) {
        std::string msg = sqlite3_errmsg(db_);
        sqlite3_close_v2(db_);
        db_ = nullptr;
        throw StoreError(fmt::format("cannot read database {} for checkpoints: {}", path, msg));
    }
    // Without it the checkpoint still works; the gated pass just has more to flush.
    file_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    thread_ = std::thread([this] { run(); });
}

Checkpointer::~Checkpointer() {
    stop();
}

void Checkpointer::request() {
    {
        std::lock_guard lock(mutex_);
        requested_ = true;
    }
    wake_.notify_one();
}

void Checkpointer::stop() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_one();
    if (thread_.joinable()) {
        thread_.join();
    }
    if (db_ != nullptr) {
        sqlite3_close_v2(db_);
        db_ = nullptr;
    }
    if (file_ >= 0) {
        ::close(file_);
        file_ = -1;
    }
}

void Checkpointer::run() {
    pthread_setname_np(pthread_self(), "sp-store-ckpt");
    for (;;) {
        {
            std::unique_lock lock(mutex_);
            wake_.wait(lock, [&] { return requested_ || stopping_; });
            if (stopping_) {
                return;
            }
            requested_ = false;
        }
        checkpoint();
    }
}

void Checkpointer::checkpoint() {
    int wal = 0;
    int copied = 0;
    auto pass = [&] {
        // PASSIVE: copies what no reader still needs; never waits for readers or the writer.
        int rc = sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, &wal, &copied);
        if (rc != SQLITE_OK) {
            warn(rc);
        }
        return rc == SQLITE_OK;
    };
    // Each pass copies what the writer added during the previous one, until that is little.
    for (int n = 0, before = -1; n < kMaxPasses; ++n) {
        if (!pass()) {
            return;
        }
        if (copied < before) {
            return; // the WAL restarted meanwhile: all of it was copied
        }
        if (before >= 0 && copied - before <= kTailFrames) {
            break;
        }
        before = copied;
    }
    // The copied pages reach the disk here, so that the fsync in the last pass has little to do.
    if (file_ >= 0) {
        ::fdatasync(file_);
    }
    gate_.lockForCheckpoint(); // the writer is between transactions
    bool ok = pass();
    gate_.unlockForCheckpoint();
    if (ok) {
        checkpoints_.fetch_add(1, std::memory_order_relaxed);
    }
}

// At most one line a minute. Busy is not an error: another checkpoint was running.
void Checkpointer::warn(int rc) {
    static constexpr auto kEvery = std::chrono::minutes(1);
    static thread_local std::optional<std::chrono::steady_clock::time_point> last;
    if ((rc & 0xff) == SQLITE_BUSY) {
        return;
    }
    auto now = std::chrono::steady_clock::now();
    if (last && now - *last < kEvery) {
        return;
    }
    last = now;
    spdlog::warn("store: checkpoint of {} failed: {}", path_, sqlite3_errmsg(db_));
}

} // namespace sp::store
