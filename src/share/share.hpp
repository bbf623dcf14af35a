#pragma once
// sp::share — "share to receive" (protocol RCP1) over an OpenDHT 2.4.x DhtRunner.
//
// A node publishes records (id, time, subject, attributes) in signed batches, encrypted with
// a per-epoch AES-256-GCM key of its own, under time-bucketed, sharded DHT keys. It hands that
// key (RSA-encrypted, in a signed GRANT value in the recipient's inbox) only to publishers
// whose records it has decrypted and credited recently (tit for tat); a node that publishes
// nothing is never granted a key and decrypts nothing. Protocol, checks and limits:
// docs/P2P.md, section "Share to receive (RCP1)"; API guide: docs/SHARE.md.
//
// No SIP, no storage, no daemon here: the application maps its events into Records, answers
// "is this subject confirmed locally" and receives verified, decrypted Records.
//
// Dependencies: OpenDHT (and its msgpack), zlib, the standard library.

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <opendht/crypto.h>

namespace dht {
class DhtRunner;
}

namespace sp::share {

// ---- records -------------------------------------------------------------------------------

// One shared fact. The application maps its own fields into `subject` (what the record is
// about, e.g. an attacker IP address: 1..255 bytes) and `attributes` (the rest).
// Limits (checked by publish() and by every receiver): at most 64 attributes, keys 1..64
// bytes, and the sum of all keys and values at most kMaxAttributeBytes.
struct Record {
    std::array<std::uint8_t, 16> id{}; // unique id (e.g. a UUID); receivers dedupe on it
    std::int64_t time = 0;             // unix seconds; receivers drop |time - now| > 15 min
    std::string subject;
    std::vector<std::pair<std::string, std::string>> attributes;
};

inline constexpr std::size_t kMaxAttributeBytes = 4096;
inline constexpr std::size_t kMaxAttributes = 64;
inline constexpr std::size_t kMaxSubjectBytes = 255;

// A record received, verified and decrypted.
struct Delivered {
    Record record;
    std::string publisher; // the signer's pkId (40 hex digits): a verified identity
    bool credited = false; // counted toward the publisher's credit under Options::credit
};

// ---- credit levels -------------------------------------------------------------------------

// What a received record must be to earn its publisher credit (and so keys):
// L0: any valid record (private networks, tests);
// L1: the subject is confirmed within ±6 h (by Callbacks::confirmed, or by a publisher this
//     node already grants to) AND this publisher's batch was the first report of it here;
// L2: L1, plus a valid proof-of-work stamp, plus an identity first seen at least one epoch ago.
enum class Credit { L0, L1, L2 };

// "L0"/"l0"/"0", "L1"..., "L2"...; nullopt otherwise.
std::optional<Credit> parseCredit(std::string_view text);
std::string_view toString(Credit c);

// ---- options -------------------------------------------------------------------------------

struct Options {
    // Namespace NS = "rcp1/<app>/<network>": nodes share only within one namespace.
    std::string app = "sentrypeer";
    std::uint64_t network = 0;

    // Time: bucket b = floor(t / bucket), epoch e = floor(t / epoch); epoch must be a
    // multiple of bucket. Batches are flushed every `flush` or at max_batch_bytes;
    // published batches stay in the DHT (and are accepted by receivers) for `retention`.
    // Design values: 1 h / 10 min / 120 s / 1 h; tests use seconds.
    std::chrono::seconds epoch{3600};
    std::chrono::seconds bucket{600};
    std::chrono::milliseconds flush{120000};
    std::chrono::seconds retention{3600};
    // How often grants are re-evaluated; 0 = min(60 s, epoch / 12).
    std::chrono::milliseconds grant_interval{0};

    Credit credit = Credit::L1;
    unsigned shards = 16; // S: batch keys per bucket (publisher's shard = pkId[0] mod S), 1..256

    // Identities (pkId, 40 hex digits). Trust anchors: granted to first while this node is a
    // newcomer, and their records count as confirmations (like a qualified publisher's).
    // Denied: never granted to, their values rejected (reason "denied").
    std::vector<std::string> trust;
    std::vector<std::string> deny;

    // Proof-of-work stamp of this identity (computeStamp), sent in every batch header;
    // nullopt = none (then L2 receivers never credit this node).
    std::optional<std::uint64_t> stamp;
    unsigned stamp_bits = 22; // difficulty a received stamp must meet (L2)

    // Budgets. Every queue and map is bounded; the bound is the option named.
    std::size_t max_batch_bytes =
        std::size_t{32} * 1024;                    // flush threshold (plaintext msgpack); <= 40 KiB
    std::uint64_t max_bytes_per_hour = 0;          // bytes put + received per clock hour; 0 = none
    unsigned max_batches_per_publisher_bucket = 6; // receiver cap per publisher per bucket
    unsigned max_grants_per_granter_epoch = 2;     // receiver cap per granter per target epoch
    unsigned newcomer_grants = 32;                 // publishers a newcomer grants to first
    unsigned newcomer_epochs = 2;                  // newcomer mode ends after this many epochs
    std::size_t max_queued_records = 10000;        // publish() queue; beyond: oldest dropped
    std::size_t max_publishers = 4096;             // publishers tracked (credit, replay, caps)
    std::size_t max_pending_batches = 2048;        // batches waiting for a key (<= retention)
    std::size_t max_inbox = 4096;                  // DHT values waiting for the worker
    std::size_t max_seen_records = 200000;         // record ids remembered for dedupe
    std::size_t max_subjects = 100000;             // subjects remembered for L1 (first/confirm)

    // Clock (tests); default std::chrono::system_clock::now.
    std::function<std::chrono::system_clock::time_point()> now;
    // One line per notable event (grants, identity problems); default: none. Any thread.
    std::function<void(std::string_view)> log;
};

// ---- callbacks -----------------------------------------------------------------------------

// Both are called on the Sharer's worker thread only (never concurrently, never after stop()
// returns); they must not call stop() and should return quickly.
struct Callbacks {
    // L1/L2: "has this node itself seen `subject` within ±6 h of `time` (unix s)?"
    // Unset = never confirmed locally.
    std::function<bool(std::string_view subject, std::int64_t time)> confirmed;
    // A verified, decrypted, deduplicated record of another publisher.
    std::function<void(Delivered)> deliver;
};

// ---- status --------------------------------------------------------------------------------

struct Rejections {
    std::uint64_t signature = 0;      // bad or missing signature (unsigned values, noteDhtLog)
    std::uint64_t cap = 0;            // over a per-publisher/per-granter cap or a full table
    std::uint64_t binding = 0;        // header does not match key / bucket / epoch / window
    std::uint64_t replay = 0;         // (publisher, seq) seen before in another value
    std::uint64_t no_key_expired = 0; // waited for a key longer than retention, or queue full
    std::uint64_t decrypt = 0;        // AES-GCM, RSA or decompression failure
    std::uint64_t context = 0;        // encrypted context differs from the header / grant owner
    std::uint64_t record_schema = 0;  // malformed value or record
    std::uint64_t record_time = 0;    // record time more than 15 min from receipt
    std::uint64_t duplicate = 0;      // record id already delivered
    std::uint64_t denied = 0;         // from a denied identity
    std::uint64_t bandwidth = 0;      // dropped: max_bytes_per_hour reached
};

struct Status {
    bool running = false;
    std::string identity; // pkId (40 hex)
    std::int64_t epoch = 0;
    std::int64_t bucket = 0;
    Credit credit = Credit::L1;
    bool newcomer = true;                // still giving first
    std::vector<std::string> granted_to; // pkIds granted this node's current key
    std::vector<std::string> granted_by; // pkIds whose current-epoch key this node holds
    std::uint64_t records_published = 0; // records put in batches
    std::uint64_t records_delivered = 0; // Callbacks::deliver calls
    std::uint64_t records_credited = 0;
    std::uint64_t records_dropped = 0; // publish() queue overflow or invalid record
    std::uint64_t batches_put = 0;
    std::uint64_t batches_received = 0; // accepted and decrypted
    std::uint64_t grants_sent = 0;
    std::uint64_t grants_received = 0; // accepted and decrypted
    // Times this node, publishing but holding no partner's key for an epoch, began giving
    // first again (how a mesh where everyone was late at once recovers).
    std::uint64_t give_first_restarts = 0;
    std::uint64_t bytes_put = 0;      // packed value sizes (one copy, not the 8 replicas)
    std::uint64_t bytes_received = 0; // packed sizes of values handed to this node
    Rejections rejected;
    std::size_t pending_batches = 0; // waiting for a key
    std::size_t queued_records = 0;  // waiting for the next flush
    std::size_t publishers = 0;      // tracked publishers
};

// {"running":..,"identity":..,"epoch":..,"credit":"L1","partners":{"granted_to":[..],
// "granted_by":[..]},"records":{..},"batches":{..},"grants":{..},"bytes":{..},
// "rejected":{"signature":..,...},"pending_batches":..,...} (one line, keys in this order).
std::string statusJson(const Status& s);

// ---- the sharer ----------------------------------------------------------------------------

class Sharer {
public:
    // `runner` must be running (or be started before start()) with `identity` as its
    // dht_config.id, an RSA identity (loadOrCreateIdentity); it must outlive this Sharer.
    // Throws std::invalid_argument for a non-RSA identity or invalid options.
    Sharer(dht::DhtRunner& runner, dht::crypto::Identity identity, Options options,
           Callbacks callbacks);
    ~Sharer(); // stop()
    Sharer(const Sharer&) = delete;
    Sharer& operator=(const Sharer&) = delete;

    // Registers the value types (0x5251 BATCH, 0x5252 GRANT) on the runner, starts the
    // worker thread, listens to the current buckets and this node's inbox and gets the past
    // `retention` of shards (catch-up). Throws std::invalid_argument if the runner's id is not
    // this identity's. Call once, from one thread.
    void start();
    // Cancels listens and this node's puts (its batches and grants leave the DHT within the
    // types' 10-minute life), joins the worker. Idempotent; any thread but the callbacks'.
    void stop();

    // Queues a record for the next batch (flushed every Options::flush or at
    // max_batch_bytes). Any thread, never blocks on the network. Returns false (and counts
    // records_dropped) for an invalid record; a full queue drops its oldest record.
    bool publish(Record record);

    // Any thread; a consistent snapshot.
    Status status() const;

    // Feed OpenDHT's log lines here (from the application's dht::Logger): OpenDHT drops
    // values with bad signatures before any callback, only logging them; each
    // "Signature verification failed" line counts one signature rejection. Any thread.
    void noteDhtLog(std::string_view line);

    // This node's pkId (40 hex digits).
    const std::string& identity() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// ---- identity ------------------------------------------------------------------------------

// Loads <base>.pem (private key) and <base>.crt, or creates an RSA identity of `bits` bits.
// The key file is created 0600 from its first byte (temporary file O_CREAT|O_EXCL, renamed);
// an existing key readable by group/others is made 0600. An existing non-RSA (EC) identity
// — what sentrypeer created before RCP1 — is kept as <base>.pem.ec-old / <base>.crt.ec-old
// and replaced by a new RSA one. Each such event is reported as one line to `log` (if set).
// Throws std::runtime_error naming the file on failure.
dht::crypto::Identity loadOrCreateIdentity(const std::filesystem::path& base, unsigned bits = 4096,
                                           const std::function<void(std::string_view)>& log = {});

// The identity's pkId: its public key id (OpenDHT getId(), SHA-1), 40 lowercase hex digits.
std::string pkId(const dht::crypto::Identity& identity);

// True if the identity is RSA (the only kind OpenDHT 2.4 can verify or encrypt to).
bool isRsa(const dht::crypto::Identity& identity);

// Proof-of-work stamp: the smallest nonce such that SHA-1("rcp1-stamp" | pkId | nonce) starts
// with `bits` zero bits (22 bits: a few seconds; tests use fewer). checkStamp verifies it.
std::uint64_t computeStamp(std::string_view pk_id, unsigned bits = 22);
bool checkStamp(std::string_view pk_id, std::uint64_t stamp, unsigned bits = 22);

} // namespace sp::share
