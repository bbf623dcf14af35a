// SipHash-1-3 (Aumasson and Bernstein) with a random key per process: the hash of keys an
// attacker chooses (called numbers, addresses) for PersistentMap.

#include <cstring>

#include "core/ids.hpp"
#include "core/persistent_map.hpp"

namespace sp::core {
namespace {

constexpr std::uint64_t rotl(std::uint64_t x, int b) {
    return (x << b) | (x >> (64 - b));
}

struct SipState {
    std::uint64_t v0, v1, v2, v3;
    void round() {
        v0 += v1;
        v1 = rotl(v1, 13);
        v1 ^= v0;
        v0 = rotl(v0, 32);
        v2 += v3;
        v3 = rotl(v3, 16);
        v3 ^= v2;
        v0 += v3;
        v3 = rotl(v3, 21);
        v3 ^= v0;
        v2 += v1;
        v1 = rotl(v1, 17);
        v1 ^= v2;
        v2 = rotl(v2, 32);
    }
};

struct Key {
    std::uint64_t k0 = randomU64();
    std::uint64_t k1 = randomU64();
};

const Key& processKey() {
    static const Key key; // thread-safe initialisation, once
    return key;
}

} // namespace

std::uint64_t keyedHash(std::string_view s) noexcept {
    const Key& k = processKey();
    SipState st{k.k0 ^ 0x736f6d6570736575ULL, k.k1 ^ 0x646f72616e646f6dULL,
                k.k0 ^ 0x6c7967656e657261ULL, k.k1 ^ 0x7465646279746573ULL};
    const std::size_t n = s.size();
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        std::uint64_t m = 0;
        std::memcpy(&m, s.data() + i, 8); // little-endian machines (x86_64, arm64)
        st.v3 ^= m;
        st.round();
        st.v0 ^= m;
    }
    std::uint64_t last = static_cast<std::uint64_t>(n & 0xff) << 56;
    for (std::size_t j = 0; i + j < n; ++j) {
        last |= static_cast<std::uint64_t>(static_cast<unsigned char>(s[i + j])) << (8 * j);
    }
    st.v3 ^= last;
    st.round();
    st.v0 ^= last;
    st.v2 ^= 0xff;
    st.round();
    st.round();
    st.round();
    return st.v0 ^ st.v1 ^ st.v2 ^ st.v3;
}

} // namespace sp::core
