#pragma once
// The one blocking policy every blocking output shares (the firewall exports today;
// nftables, the CrowdSec decision stream and BGP later): which addresses may be blocked,
// and on what evidence. Depends only on sp_core.
//
// Rules (docs/ARCHITECTURE.md, "Blocking policy"):
// - local events always count; peer events count only when at least peer_min_reporters
//   distinct reporters named the address (0: peer data alone never blocks);
// - an address needs max(block_after, 1) counted events;
// - a never-block list always wins: built in (loopback, unspecified, multicast, link-local,
//   broadcast, in IPv4 and IPv4-mapped IPv6 forms), the node's own addresses, --allow and
//   --allow-file. Text that is not an IP address is never blocked.
//
// Threads: shouldBlock/neverBlock/collect may run on any thread at any time; reload() from
// one thread at a time (the daemon's signal handler). Lookups read an immutable list that
// reload() replaces whole.

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/metrics.hpp"

namespace sp::block {

// What the index knows about one address.
struct Evidence {
    std::uint64_t local = 0;     // events this node captured
    std::uint64_t peer = 0;      // events received from peers
    std::uint32_t reporters = 0; // distinct peer reporters (node ids today)
};

struct PolicyOptions {
    unsigned peer_min_reporters = 2;              // 0 = never block on peer data alone
    std::uint64_t block_after = 1;                // events needed before an address is blocked
    std::vector<std::string> allow;               // CIDRs or single addresses (IPv4/IPv6)
    std::string allow_file;                       // one CIDR per line, # comments, blank lines ok
    bool include_own_addresses = true;            // getifaddrs() at construction + reload
    std::vector<std::string> extra_own_addresses; // e.g. the daemon's listen addresses
    // How long a block lasts after the address was last seen: --block-time if set, else the
    // data window (--max-age). 0: no expiry (blocks stay while the address is in the data).
    std::chrono::seconds block_window{0};
};

// An address or prefix in IPv6 space (IPv4 as ::ffff:a.b.c.d, prefix length + 96).
struct Prefix {
    std::array<std::uint8_t, 16> addr{};
    unsigned len = 0; // 0..128
};

// "192.0.2.0/24", "2001:db8::/32", "192.0.2.7", "::1". nullopt with `error` set (one line,
// without the input) when malformed: bad address, mask out of range, host bits set.
std::optional<Prefix> parseCidr(std::string_view text, std::string* error = nullptr);
// An address (no mask) to 16 bytes, IPv4 mapped into ::ffff:0:0/96. nullopt if not an IP.
std::optional<std::array<std::uint8_t, 16>> parseAddress(std::string_view text);

class Policy {
public:
    // Parses the allow list, reads the allow file and the interface addresses. Throws
    // std::runtime_error naming the bad entry or the unreadable file (one line).
    explicit Policy(PolicyOptions o);
    ~Policy();
    Policy(const Policy&) = delete;
    Policy& operator=(const Policy&) = delete;

    // Built-in, own address or allow-listed (or not an IP address at all).
    bool neverBlock(std::string_view ip) const;
    // counted = local + (peer_min_reporters > 0 && reporters >= peer_min_reporters ? peer : 0);
    // true iff !neverBlock(ip) && counted >= max(block_after, 1).
    bool shouldBlock(std::string_view ip, const Evidence& e) const;
    // What is left of a block for an address last seen at `last`: last + block_window - now,
    // at least 0 (0: expired, take it out now). nullopt when blocks do not expire
    // (block_window 0). Every blocking output uses this for its element timeouts.
    std::optional<std::chrono::seconds> remaining(std::chrono::system_clock::time_point last,
                                                  std::chrono::system_clock::time_point now) const;
    // The block to apply now: shouldBlock(ip, e) and not expired (remaining(last, now) not 0).
    // `left`: what remains of it (nullopt: no expiry). nullopt: do not block (or unblock).
    struct Block {
        std::optional<std::chrono::seconds> left;
    };
    std::optional<Block> decide(std::string_view ip, const Evidence& e,
                                std::chrono::system_clock::time_point last,
                                std::chrono::system_clock::time_point now) const;
    // Re-reads allow_file and the interface addresses (SIGHUP). On error keeps the old
    // list, logs one line and returns false.
    bool reload();
    // block_* families for /metrics.
    void collect(core::MetricsWriter& w) const;

    const PolicyOptions& options() const { return o_; }

    struct Lists; // the immutable lookup structure (policy.cpp)

private:
    std::shared_ptr<const Lists> lists() const;
    std::shared_ptr<const Lists> build() const; // throws std::runtime_error

    PolicyOptions o_;
    mutable std::mutex mutex_; // guards lists_ (the pointer, not what it points to)
    std::shared_ptr<const Lists> lists_;
    std::atomic<std::uint64_t> reloads_{0}, reload_failures_{0};
    mutable std::atomic<std::uint64_t> decided_block_{0}, decided_never_{0}, decided_below_{0},
        peer_ignored_{0};
};

} // namespace sp::block
