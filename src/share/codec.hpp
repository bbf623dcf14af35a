#pragma once
// RCP1 wire formats and key derivation (internal to sp_share; tests include it).
//
// BATCH value data (msgpack):  [1, e, b, s, q, stamp|nil, ciphertext(bin)]
//   ciphertext = crypto::aesEncrypt(zlib(msgpack [ctx, records]), K_{P,e})
//   ctx        = [pkId(bin 20), e, b, q]
//   record     = [id(bin 16), time, subject(str), [[key, value], ...]]
// GRANT value data (msgpack):  [1, e, rsa(bin)]
//   rsa        = PublicKey(Q).encrypt(msgpack [pkId_P(bin 20), e, [[e_i, K_i(bin 32)], ...]])
// Decoders never throw: malformed input gives nullopt.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <opendht/infohash.h>

#include "share/share.hpp"

namespace sp::share::detail {

using Blob = std::vector<std::uint8_t>;
using PkBytes = std::array<std::uint8_t, 20>;

inline constexpr std::uint16_t kBatchType = 0x5251;
inline constexpr std::uint16_t kGrantType = 0x5252;
inline constexpr std::size_t kMaxPlain = std::size_t{256} * 1024;     // inflated body limit
inline constexpr std::size_t kMaxBatchValue = std::size_t{48} * 1024; // a BATCH value's data
inline constexpr std::size_t kKeyBytes = 32;                          // AES-256

struct BatchHeader {
    std::int64_t e = 0;
    std::int64_t b = 0;
    std::uint32_t s = 0;
    std::uint64_t q = 0;
    std::optional<std::uint64_t> stamp;
};

struct BatchValue {
    BatchHeader hdr;
    Blob ct;
};

struct Context {
    PkBytes pk{};
    std::int64_t e = 0;
    std::int64_t b = 0;
    std::uint64_t q = 0;
    bool operator==(const Context&) const = default;
};

struct Body {
    Context ctx;
    std::vector<Record> records; // well-formed records
    std::size_t bad_records = 0; // entries that are not records (schema)
};

struct GrantValue {
    std::int64_t e = 0;
    Blob enc;
};

struct GrantPayload {
    PkBytes pk{};
    std::int64_t e = 0;
    std::vector<std::pair<std::int64_t, Blob>> keys; // (epoch, 32-byte key)
};

Blob encodeBatch(const BatchHeader& hdr, const Blob& ct);
std::optional<BatchValue> decodeBatch(const Blob& data) noexcept;

// msgpack [ctx, records], then zlib. Records are not validated here.
Blob encodeBody(const Context& ctx, const std::vector<Record>& records);
// Packed size of one record (for batch sizing).
std::size_t recordSize(const Record& r);
// nullopt when inflate fails (*inflate_failed = true) or the msgpack is not [ctx, [..]].
std::optional<Body> decodeBody(const Blob& compressed, bool* inflate_failed = nullptr) noexcept;

Blob encodeGrant(const GrantValue& g);
std::optional<GrantValue> decodeGrant(const Blob& data) noexcept;
Blob encodeGrantPayload(const GrantPayload& p);
std::optional<GrantPayload> decodeGrantPayload(const Blob& data) noexcept;

// Record limits of share.hpp (subject, attributes, count).
bool validRecord(const Record& r) noexcept;

// zlib (exposed for tests).
Blob deflateBlob(const Blob& in);
std::optional<Blob> inflateBlob(const Blob& in, std::size_t limit) noexcept;

// Keys. ns = "rcp1/<app>/<network>".
std::string nameSpace(const std::string& app, std::uint64_t network);
dht::InfoHash batchKey(const std::string& ns, std::int64_t b, std::uint32_t s);
dht::InfoHash inboxKey(const std::string& ns, const dht::InfoHash& recipient, std::int64_t e);
std::uint32_t shardOf(const dht::InfoHash& pk, unsigned shards);
PkBytes pkBytes(const dht::InfoHash& h);

// floor division for time (t may be negative in tests with odd clocks).
inline std::int64_t floorDiv(std::int64_t a, std::int64_t b) {
    return a >= 0 ? a / b : -((-a + b - 1) / b);
}

} // namespace sp::share::detail
