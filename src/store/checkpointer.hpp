#pragma once
// Checkpointer (private to the store): copies the WAL back into the database file on its own
// thread ("sp-store-ckpt") through its own connection, so the writer does not wait for that
// copy and its fsyncs (measured: they took half of the writer's time when done inline).
//
// A checkpoint that runs while the writer keeps committing never catches up with the end of
// the WAL, and SQLite only restarts the WAL from its beginning once all of it is copied. So:
// passes without blocking anyone until what is left is small, each followed by an fdatasync
// of the database file, then one last short pass between two of the writer's transactions
// (WriteGate). The writer's next transaction then restarts the WAL.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

struct sqlite3;

namespace sp::store {

// Keeps the checkpointer's last pass and the writer's transactions apart. The writer locks
// it around each transaction (BasicLockable, for std::lock_guard); once the checkpointer asks,
// the writer's next lock() waits for that pass instead of overtaking it again and again.
class WriteGate {
public:
    // Store thread.
    void lock();
    void unlock();
    // Checkpointer thread.
    void lockForCheckpoint();
    void unlockForCheckpoint();

private:
    std::mutex mutex_;
    std::condition_variable changed_;
    bool writing_ = false;       // guarded by mutex_
    bool checkpointing_ = false; // guarded by mutex_: asked for, or running
};

class Checkpointer {
public:
    // Opens a connection to the (existing, WAL-mode) database and starts the thread.
    // Throws StoreError naming the file.
    Checkpointer(const std::string& path, int busy_timeout_ms);
    ~Checkpointer();
    Checkpointer(const Checkpointer&) = delete;
    Checkpointer& operator=(const Checkpointer&) = delete;

    // Any thread, cheap, never blocks on the checkpoint: requests made while one runs
    // coalesce into one more.
    void request();
    // The writer holds this around each write transaction.
    WriteGate& gate() { return gate_; }
    // Joins the thread (letting a running checkpoint finish) and closes the connection.
    // Idempotent.
    void stop();
    // Completed checkpoints, readable from any thread.
    std::uint64_t checkpoints() const { return checkpoints_.load(std::memory_order_relaxed); }

private:
    void run();
    void checkpoint();
    void warn(int rc);

    std::string path_;
    sqlite3* db_ = nullptr; // used by the thread only
    int file_ = -1;         // the database file, for fdatasync
    WriteGate gate_;
    std::mutex mutex_;
    std::condition_variable wake_;
    bool requested_ = false; // guarded by mutex_
    bool stopping_ = false;  // guarded by mutex_
    std::atomic<std::uint64_t> checkpoints_{0};
    std::thread thread_;
};

} // namespace sp::store
