#include "share/codec.hpp"

#include <limits>
#include <msgpack.hpp>
#include <zlib.h>

namespace sp::share::detail {

namespace {

using Packer = msgpack::packer<msgpack::sbuffer>;

Blob toBlob(const msgpack::sbuffer& b) {
    return Blob(reinterpret_cast<const std::uint8_t*>(b.data()),
                reinterpret_cast<const std::uint8_t*>(b.data()) + b.size());
}

void packBin(Packer& pk, const std::uint8_t* p, std::size_t n) {
    pk.pack_bin(static_cast<std::uint32_t>(n));
    pk.pack_bin_body(reinterpret_cast<const char*>(p), static_cast<std::uint32_t>(n));
}

// Limits that keep a hostile header from making the unpacker allocate much.
const msgpack::unpack_limit kLimit(4096, 64, std::size_t{64} * 1024, std::size_t{64} * 1024, 0, 8);

// Unpacks exactly one object filling `data`; nullopt on any error.
std::optional<msgpack::object_handle> unpackAll(const std::uint8_t* data, std::size_t n) noexcept {
    try {
        std::size_t off = 0;
        bool referenced = false;
        auto oh = msgpack::unpack(reinterpret_cast<const char*>(data), n, off, referenced, nullptr,
                                  nullptr, kLimit);
        if (off != n) {
            return std::nullopt;
        }
        return oh;
    } catch (...) {
        return std::nullopt;
    }
}

bool getInt(const msgpack::object& o, std::int64_t& out) {
    if (o.type == msgpack::type::POSITIVE_INTEGER) {
        if (o.via.u64 > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
            return false;
        }
        out = static_cast<std::int64_t>(o.via.u64);
        return true;
    }
    if (o.type == msgpack::type::NEGATIVE_INTEGER) {
        out = o.via.i64;
        return true;
    }
    return false;
}

bool getUint(const msgpack::object& o, std::uint64_t& out) {
    if (o.type != msgpack::type::POSITIVE_INTEGER) {
        return false;
    }
    out = o.via.u64;
    return true;
}

bool getBin(const msgpack::object& o, Blob& out) {
    if (o.type != msgpack::type::BIN) {
        return false;
    }
    const auto* p = reinterpret_cast<const std::uint8_t*>(o.via.bin.ptr);
    out.assign(p, p + o.via.bin.size);
    return true;
}

template <std::size_t N> bool getFixed(const msgpack::object& o, std::array<std::uint8_t, N>& out) {
    if (o.type != msgpack::type::BIN || o.via.bin.size != N) {
        return false;
    }
    std::memcpy(out.data(), o.via.bin.ptr, N);
    return true;
}

bool getStr(const msgpack::object& o, std::string& out) {
    if (o.type != msgpack::type::STR) {
        return false;
    }
    out.assign(o.via.str.ptr, o.via.str.size);
    return true;
}

bool isArray(const msgpack::object& o, std::size_t n) {
    return o.type == msgpack::type::ARRAY && o.via.array.size == n;
}

void packRecord(Packer& pk, const Record& r) {
    pk.pack_array(4);
    packBin(pk, r.id.data(), r.id.size());
    pk.pack(r.time);
    pk.pack(r.subject);
    pk.pack_array(static_cast<std::uint32_t>(r.attributes.size()));
    for (const auto& [k, v] : r.attributes) {
        pk.pack_array(2);
        pk.pack(k);
        pk.pack(v);
    }
}

bool unpackRecord(const msgpack::object& o, Record& r) {
    if (!isArray(o, 4)) {
        return false;
    }
    const auto* f = o.via.array.ptr;
    if (!getFixed(f[0], r.id) || !getInt(f[1], r.time) || !getStr(f[2], r.subject) ||
        f[3].type != msgpack::type::ARRAY) {
        return false;
    }
    const auto& a = f[3].via.array;
    if (a.size > kMaxAttributes) {
        return false;
    }
    r.attributes.clear();
    r.attributes.reserve(a.size);
    for (std::uint32_t i = 0; i < a.size; ++i) {
        if (!isArray(a.ptr[i], 2)) {
            return false;
        }
        std::string k;
        std::string v;
        if (!getStr(a.ptr[i].via.array.ptr[0], k) || !getStr(a.ptr[i].via.array.ptr[1], v)) {
            return false;
        }
        r.attributes.emplace_back(std::move(k), std::move(v));
    }
    return validRecord(r);
}

} // namespace

bool validRecord(const Record& r) noexcept {
    if (r.subject.empty() || r.subject.size() > kMaxSubjectBytes ||
        r.attributes.size() > kMaxAttributes) {
        return false;
    }
    std::size_t total = 0;
    for (const auto& [k, v] : r.attributes) {
        if (k.empty() || k.size() > 64) {
            return false;
        }
        total += k.size() + v.size();
    }
    return total <= kMaxAttributeBytes;
}

Blob encodeBatch(const BatchHeader& hdr, const Blob& ct) {
    msgpack::sbuffer buf;
    Packer pk(&buf);
    pk.pack_array(7);
    pk.pack(1);
    pk.pack(hdr.e);
    pk.pack(hdr.b);
    pk.pack(hdr.s);
    pk.pack(hdr.q);
    if (hdr.stamp) {
        pk.pack(*hdr.stamp);
    } else {
        pk.pack_nil();
    }
    packBin(pk, ct.data(), ct.size());
    return toBlob(buf);
}

std::optional<BatchValue> decodeBatch(const Blob& data) noexcept {
    try {
        auto oh = unpackAll(data.data(), data.size());
        if (!oh || !isArray(oh->get(), 7)) {
            return std::nullopt;
        }
        const auto* f = oh->get().via.array.ptr;
        BatchValue v;
        std::int64_t ver = 0;
        std::uint64_t s = 0;
        if (!getInt(f[0], ver) || ver != 1 || !getInt(f[1], v.hdr.e) || !getInt(f[2], v.hdr.b) ||
            !getUint(f[3], s) || s > 255 || !getUint(f[4], v.hdr.q) || !getBin(f[6], v.ct)) {
            return std::nullopt;
        }
        v.hdr.s = static_cast<std::uint32_t>(s);
        if (f[5].type != msgpack::type::NIL) {
            std::uint64_t st = 0;
            if (!getUint(f[5], st)) {
                return std::nullopt;
            }
            v.hdr.stamp = st;
        }
        return v;
    } catch (...) {
        return std::nullopt;
    }
}

std::size_t recordSize(const Record& r) {
    msgpack::sbuffer buf;
    Packer pk(&buf);
    packRecord(pk, r);
    return buf.size();
}

Blob encodeBody(const Context& ctx, const std::vector<Record>& records) {
    msgpack::sbuffer buf;
    Packer pk(&buf);
    pk.pack_array(2);
    pk.pack_array(4);
    packBin(pk, ctx.pk.data(), ctx.pk.size());
    pk.pack(ctx.e);
    pk.pack(ctx.b);
    pk.pack(ctx.q);
    pk.pack_array(static_cast<std::uint32_t>(records.size()));
    for (const auto& r : records) {
        packRecord(pk, r);
    }
    return deflateBlob(toBlob(buf));
}

std::optional<Body> decodeBody(const Blob& compressed, bool* inflate_failed) noexcept {
    if (inflate_failed != nullptr) {
        *inflate_failed = false;
    }
    try {
        auto plain = inflateBlob(compressed, kMaxPlain);
        if (!plain) {
            if (inflate_failed != nullptr) {
                *inflate_failed = true;
            }
            return std::nullopt;
        }
        auto oh = unpackAll(plain->data(), plain->size());
        if (!oh || !isArray(oh->get(), 2)) {
            return std::nullopt;
        }
        const auto* f = oh->get().via.array.ptr;
        if (!isArray(f[0], 4) || f[1].type != msgpack::type::ARRAY) {
            return std::nullopt;
        }
        Body body;
        const auto* c = f[0].via.array.ptr;
        if (!getFixed(c[0], body.ctx.pk) || !getInt(c[1], body.ctx.e) ||
            !getInt(c[2], body.ctx.b) || !getUint(c[3], body.ctx.q)) {
            return std::nullopt;
        }
        const auto& recs = f[1].via.array;
        for (std::uint32_t i = 0; i < recs.size; ++i) {
            Record r;
            if (unpackRecord(recs.ptr[i], r)) {
                body.records.push_back(std::move(r));
            } else {
                ++body.bad_records;
            }
        }
        return body;
    } catch (...) {
        return std::nullopt;
    }
}

Blob encodeGrant(const GrantValue& g) {
    msgpack::sbuffer buf;
    Packer pk(&buf);
    pk.pack_array(3);
    pk.pack(1);
    pk.pack(g.e);
    packBin(pk, g.enc.data(), g.enc.size());
    return toBlob(buf);
}

std::optional<GrantValue> decodeGrant(const Blob& data) noexcept {
    try {
        auto oh = unpackAll(data.data(), data.size());
        if (!oh || !isArray(oh->get(), 3)) {
            return std::nullopt;
        }
        const auto* f = oh->get().via.array.ptr;
        GrantValue g;
        std::int64_t ver = 0;
        if (!getInt(f[0], ver) || ver != 1 || !getInt(f[1], g.e) || !getBin(f[2], g.enc)) {
            return std::nullopt;
        }
        return g;
    } catch (...) {
        return std::nullopt;
    }
}

Blob encodeGrantPayload(const GrantPayload& p) {
    msgpack::sbuffer buf;
    Packer pk(&buf);
    pk.pack_array(3);
    packBin(pk, p.pk.data(), p.pk.size());
    pk.pack(p.e);
    pk.pack_array(static_cast<std::uint32_t>(p.keys.size()));
    for (const auto& [e, k] : p.keys) {
        pk.pack_array(2);
        pk.pack(e);
        packBin(pk, k.data(), k.size());
    }
    return toBlob(buf);
}

std::optional<GrantPayload> decodeGrantPayload(const Blob& data) noexcept {
    try {
        auto oh = unpackAll(data.data(), data.size());
        if (!oh || !isArray(oh->get(), 3)) {
            return std::nullopt;
        }
        const auto* f = oh->get().via.array.ptr;
        GrantPayload p;
        if (!getFixed(f[0], p.pk) || !getInt(f[1], p.e) || f[2].type != msgpack::type::ARRAY ||
            f[2].via.array.size > 16) {
            return std::nullopt;
        }
        for (std::uint32_t i = 0; i < f[2].via.array.size; ++i) {
            const auto& k = f[2].via.array.ptr[i];
            std::int64_t e = 0;
            Blob key;
            if (!isArray(k, 2) || !getInt(k.via.array.ptr[0], e) ||
                !getBin(k.via.array.ptr[1], key) || key.size() != kKeyBytes) {
                return std::nullopt;
            }
            p.keys.emplace_back(e, std::move(key));
        }
        return p;
    } catch (...) {
        return std::nullopt;
    }
}

Blob deflateBlob(const Blob& in) {
    uLongf n = compressBound(static_cast<uLong>(in.size()));
    Blob out(n);
    if (compress2(out.data(), &n, in.data(), static_cast<uLong>(in.size()), 6) != Z_OK) {
        throw std::runtime_error("zlib compress failed");
    }
    out.resize(n);
    return out;
}

std::optional<Blob> inflateBlob(const Blob& in, std::size_t limit) noexcept {
    try {
        z_stream zs{};
        if (inflateInit(&zs) != Z_OK) {
            return std::nullopt;
        }
        Blob out;
        std::array<std::uint8_t, 16384> chunk{};
        zs.next_in = const_cast<Bytef*>(in.data());
        zs.avail_in = static_cast<uInt>(in.size());
        int rc = Z_OK;
        while (rc != Z_STREAM_END) {
            zs.next_out = chunk.data();
            zs.avail_out = static_cast<uInt>(chunk.size());
            rc = inflate(&zs, Z_NO_FLUSH);
            if (rc != Z_OK && rc != Z_STREAM_END) {
                inflateEnd(&zs);
                return std::nullopt;
            }
            std::size_t got = chunk.size() - zs.avail_out;
            if (out.size() + got > limit || (got == 0 && rc != Z_STREAM_END && zs.avail_in == 0)) {
                inflateEnd(&zs);
                return std::nullopt;
            }
            out.insert(out.end(), chunk.data(), chunk.data() + got);
        }
        bool trailing = zs.avail_in != 0;
        inflateEnd(&zs);
        if (trailing) {
            return std::nullopt;
        }
        return out;
    } catch (...) {
        return std::nullopt;
    }
}

std::string nameSpace(const std::string& app, std::uint64_t network) {
    return "rcp1/" + app + "/" + std::to_string(network);
}

dht::InfoHash batchKey(const std::string& ns, std::int64_t b, std::uint32_t s) {
    return dht::InfoHash::get(ns + "/b/" + std::to_string(b) + "/" + std::to_string(s));
}

dht::InfoHash inboxKey(const std::string& ns, const dht::InfoHash& recipient, std::int64_t e) {
    return dht::InfoHash::get(ns + "/i/" + recipient.toString() + "/" + std::to_string(e));
}

std::uint32_t shardOf(const dht::InfoHash& pk, unsigned shards) {
    return static_cast<std::uint32_t>(pk[0] % (shards == 0 ? 1U : shards));
}

PkBytes pkBytes(const dht::InfoHash& h) {
    PkBytes out{};
    std::memcpy(out.data(), h.data(), out.size());
    return out;
}

} // namespace sp::share::detail
