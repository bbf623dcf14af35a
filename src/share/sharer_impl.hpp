#pragma once
// Internal state of a Sharer. Threads: the DHT callbacks (OpenDHT's thread) only push into
// the Mailbox; publish() pushes records into it; everything else (all maps below, the
// application callbacks) belongs to the worker thread. status() reads `snap_` under
// stats_mu_, which the worker refreshes.

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <future>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include <opendht/dhtrunner.h>

#include "share/codec.hpp"
#include "share/share.hpp"

namespace sp::share::detail {

using Vp = std::shared_ptr<dht::Value>;

enum class Kind { Batch, Grant };

// OpenDHT 2.4 has no std::hash for InfoHash; ids are SHA-1 outputs, so 8 bytes are enough.
struct IdHash {
    std::size_t operator()(const dht::InfoHash& h) const noexcept {
        std::size_t v = 0;
        std::memcpy(&v, h.data(), sizeof v);
        return v;
    }
};

struct Inbound {
    Kind kind = Kind::Batch;
    dht::InfoHash key;
    Vp value;
};

// Shared with the DHT callbacks, which may run (and return false) after the Sharer is gone.
struct Mailbox {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<Inbound> values;   // bound: max_values (overflow counted as `cap`)
    std::deque<Record> records;   // bound: max_records (oldest dropped)
    std::size_t record_bytes = 0; // packed size of `records`
    std::size_t max_values = 0;
    std::size_t max_records = 0;
    bool closed = false;
    std::uint64_t overflow = 0; // values dropped, queue full
    std::uint64_t records_dropped = 0;

    // Returns false once closed (the listen then ends).
    bool push(Kind kind, const dht::InfoHash& key, const std::vector<Vp>& vals);
};

struct Peer {
    dht::InfoHash id;
    std::shared_ptr<const dht::crypto::PublicKey> pk;
    std::int64_t first_seen = 0;  // unix s
    std::int64_t last_active = 0; // unix s
    bool stamp_ok = false;
    std::map<std::int64_t, Blob> keys;                  // their epoch keys, held by us
    std::map<std::int64_t, unsigned> batches_in_bucket; // receiver cap
    std::map<std::uint64_t, std::pair<dht::Value::Id, std::int64_t>> seqs; // q -> (value id, b)
    std::map<std::int64_t, std::set<dht::Value::Id>> grants_from;          // target epoch -> values
    std::set<std::int64_t> credited_epochs; // epochs in which a record of theirs was credited
    std::set<std::int64_t> granted;         // our target epochs granted to them
    bool newcomer_grant = false;            // we gave first to them
    bool publisher = false;                 // a batch of theirs passed binding and caps
    std::int64_t last_batch_epoch = std::numeric_limits<std::int64_t>::min() / 2; // of such a batch
};

struct Pending {
    dht::InfoHash publisher;
    BatchValue batch;
    std::int64_t received = 0; // unix s
};

struct SubjectSeen {
    dht::InfoHash first;
    std::int64_t time = 0; // unix s of the first report
    bool credited = false;
};

class Impl {
public:
    Impl(dht::DhtRunner& runner, dht::crypto::Identity identity, Options options,
         Callbacks callbacks);

    void start();
    void stop();
    bool publish(Record r);
    Status status() const;
    void noteDhtLog(std::string_view line);

    std::string self_hex_;

private:
    // sharer.cpp
    void run();
    void tick();
    void maintainListens();
    void catchUp(std::int64_t from_bucket, std::int64_t to_bucket);
    void expire();
    void publishSnapshot(bool force);
    void log(const std::string& line) const;
    std::int64_t nowS() const;
    std::int64_t nowMs() const;
    std::int64_t bucketOf(std::int64_t t) const { return floorDiv(t, bucket_s_); }
    std::int64_t epochOf(std::int64_t t) const { return floorDiv(t, epoch_s_); }
    std::int64_t epochOfBucket(std::int64_t b) const { return floorDiv(b, buckets_per_epoch_); }
    void countBytes(std::uint64_t n, bool put);
    Peer* peerFor(const std::shared_ptr<const dht::crypto::PublicKey>& pk);

    // publisher.cpp
    void maybeFlush();
    const Blob& keyFor(std::int64_t e);
    void putOwn(const dht::InfoHash& key, const Vp& v, std::int64_t until);

    // grants.cpp
    void evaluateGrants();
    void ensureGrant(Peer& p, std::int64_t target);
    // The checks every received value passes first: signed, not our own, (batches) not over
    // the bandwidth cap, counted, not denied. The sender, or null (counted by reason).
    const dht::InfoHash* admitSender(const dht::Value& v, bool batch);
    void handleGrant(const Inbound& in);
    bool isQualified(const Peer& p) const;

    // receive.cpp
    void handleBatch(const Inbound& in);
    void openBatch(Peer& p, const BatchValue& bv);
    bool creditRecord(Peer& p, const Record& r, std::int64_t e); // e: the batch's epoch
    void creditPeer(Peer& p, std::int64_t e);
    bool l2Ok(const Peer& p) const;

    dht::DhtRunner& runner_;
    dht::crypto::Identity identity_;
    Options o_;
    Callbacks cb_;
    std::string ns_;
    dht::InfoHash self_;
    std::int64_t bucket_s_ = 600;
    std::int64_t epoch_s_ = 3600;
    std::int64_t buckets_per_epoch_ = 6;
    std::int64_t retention_s_ = 3600;
    std::int64_t retention_buckets_ = 6;
    std::int64_t retention_epochs_ = 1;
    std::int64_t grant_interval_ms_ = 60000;
    std::unordered_set<dht::InfoHash, IdHash> trust_;
    std::unordered_set<dht::InfoHash, IdHash> deny_;

    std::shared_ptr<Mailbox> mb_;
    std::thread worker_;
    std::atomic<bool> started_{false};
    std::atomic<bool> stopping_{false};
    std::atomic<std::uint64_t> sig_log_{0};

    // ---- worker-owned ----
    Status st_; // counters (identity, lists and a few fields filled at snapshot time)
    std::unordered_map<dht::InfoHash, Peer, IdHash> peers_; // bound: max_publishers
    std::deque<Pending> pending_;                           // bound: max_pending_batches
    std::map<std::int64_t, Blob> own_keys_;                 // epochs within retention (+1)
    std::multimap<std::int64_t, std::pair<dht::InfoHash, dht::Value::Id>> own_puts_; // until
    std::map<dht::InfoHash, std::shared_future<std::size_t>> listens_;               // batch keys
    std::map<dht::InfoHash, std::shared_future<std::size_t>> inbox_listens_;
    std::map<dht::InfoHash, std::int64_t> listen_bucket_;
    std::map<dht::InfoHash, std::int64_t> inbox_epoch_;
    std::unordered_set<std::string> seen_records_; // bound: max_seen_records
    std::deque<std::string> seen_order_;
    std::unordered_map<std::string, SubjectSeen> subjects_; // bound: max_subjects
    std::deque<std::pair<std::int64_t, std::string>> subject_order_;
    std::map<std::int64_t, unsigned> own_batches_in_bucket_;
    std::uint64_t last_q_ = 0;
    std::int64_t start_s_ = 0; // start, or when give-first mode last began
    std::int64_t last_published_epoch_ = std::numeric_limits<std::int64_t>::min() / 2;
    std::int64_t last_flush_ms_ = 0;
    std::int64_t next_grant_ms_ = 0;
    std::int64_t next_expire_ms_ = 0;
    std::int64_t next_snapshot_ms_ = 0;
    std::int64_t hour_ = 0;
    std::uint64_t hour_bytes_ = 0;
    bool paused_ = false;       // bandwidth cap reached: batch listens cancelled
    bool need_catch_up_ = true; // at start and after a pause
    bool grant_now_ = false;    // a peer newly qualified
    bool newcomer_ = true;

    mutable std::mutex stats_mu_;
    Status snap_;
};

} // namespace sp::share::detail
