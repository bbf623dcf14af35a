#pragma once
// Listing the index (internal to the API's route files): a snapshot of the matching
// entries (a Page), sorted newest first, then streamed in chunks by a BodyStream. A Page
// is built on the request's thread and read by the connection's thread afterwards (never
// both at once).

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <sys/mman.h>
#include <type_traits>
#include <utility>

#include "api/http.hpp"
#include "api/list_query.hpp"
#include "block/policy.hpp"
#include "core/clock.hpp"
#include "store/store.hpp"

namespace sp::api {

// Memory for one list's snapshot, mapped for it and unmapped when the response is done.
// Not from malloc: glibc would keep a few MB of it in each sp-api thread's arena after the
// first large list (its mmap threshold adapts upwards), and the resident set would keep
// it. Untouched pages of the mapping cost nothing, so capacity can be generous. T must be
// trivially copyable (the mapping moves with mremap).
template <typename T> class MappedArray {
    static_assert(std::is_trivially_copyable_v<T>);

public:
    MappedArray() = default;
    MappedArray(const MappedArray&) = delete;
    MappedArray& operator=(const MappedArray&) = delete;
    MappedArray(MappedArray&& o) noexcept
        : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)),
          capacity_(std::exchange(o.capacity_, 0)) {}
    MappedArray& operator=(MappedArray&& o) noexcept {
        std::swap(data_, o.data_);
        std::swap(size_, o.size_);
        std::swap(capacity_, o.capacity_);
        return *this;
    }
    ~MappedArray() {
        if (data_ != nullptr) {
            munmap(data_, capacity_ * sizeof(T));
        }
    }

    void reserve(std::size_t n) {
        if (n <= capacity_) {
            return;
        }
        n = std::max<std::size_t>(n, 4096 / sizeof(T) + 1);
        void* p = data_ == nullptr
                      ? mmap(nullptr, n * sizeof(T), PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                      : mremap(data_, capacity_ * sizeof(T), n * sizeof(T), MREMAP_MAYMOVE);
        if (p == MAP_FAILED) {
            throw std::bad_alloc();
        }
        data_ = static_cast<T*>(p);
        capacity_ = n;
    }
    void pushBack(const T& v) {
        if (size_ == capacity_) {
            reserve(capacity_ * 2 + 1);
        }
        data_[size_++] = v;
    }
    void append(const T* p, std::size_t n) {
        if (size_ + n > capacity_) {
            reserve(std::max(capacity_ * 2, size_ + n));
        }
        std::copy(p, p + n, data_ + size_);
        size_ += n;
    }
    void resize(std::size_t n) { // shrinking only
        size_ = std::min(n, size_);
    }
    T* begin() { return data_; }
    T* end() { return data_ + size_; }
    const T* begin() const { return data_; }
    const T* end() const { return data_ + size_; }
    const T* data() const { return data_; }
    std::size_t size() const { return size_; }
    bool empty() const { return size_ == 0; }
    T& operator[](std::size_t i) { return data_[i]; }
    const T& operator[](std::size_t i) const { return data_[i]; }
    T& back() { return data_[size_ - 1]; }

private:
    T* data_ = nullptr;
    std::size_t size_ = 0;
    std::size_t capacity_ = 0;
};

// One listed key: a small fixed-size record pointing into the index snapshot the Page holds
// (nothing of the index is copied).
struct Entry {
    core::TimePoint last;
    core::TimePoint first;
    std::uint64_t count;
    const char* key;
    std::size_t key_size;
};

struct Page {
    store::SnapshotPtr snapshot; // the keys' bytes: kept alive while the page is streamed
    MappedArray<Entry> entries;
    std::optional<std::string> next; // cursor of the last entry when more remain
    std::shared_ptr<void> slot;      // a full-list slot (ListBudget), held while streamed

    static std::string_view key(const Entry& e) { return {e.key, e.key_size}; }
    static core::TimePoint first(const Entry& e) { return e.first; }
    // Order: newest first, then by key, so that a cursor (last, key) is a total order.
    static bool before(const Entry& a, const Entry& b) {
        return a.last != b.last ? a.last > b.last : key(a) < key(b);
    }
};

// ---- index_view.cpp: the only code that reads store::Index for lists -----------------

// The keys of the IP (ips) or number map that q selects (origin, since, prefix, after the
// cursor), newest first, at most q.limit (then `next` is set), read from one index snapshot
// with no lock held. With a limit, memory is O(limit) whatever the index's size. With
// `blocking`, only the addresses that policy blocks (on the events of q's origin): what the
// firewall exports list.
Page listIndex(const store::Index& index, bool ips, const ListQuery& q,
               const block::Policy* blocking = nullptr);

struct IndexTotals {
    std::uint64_t events = 0;
    std::uint64_t ip_addresses = 0;
    std::uint64_t called_numbers = 0;
};
IndexTotals indexTotals(const store::Index& index);

// ---- list.cpp: streaming a Page -------------------------------------------------------

// Appends one entry of the page to out (the i-th of the body).
using ItemWriter = std::function<void(std::string& out, const Page&, const Entry&, std::size_t i)>;

// Streams header, then each entry through `item`, then footer; about 32 KiB per chunk.
BodyStream streamEntries(std::shared_ptr<Page> page, std::string header, ItemWriter item,
                         std::string footer);

// A SentryPeer-shaped JSON list: {"<total_key>": N, "<list_key>": [{...}, ...]} with
// "next_after" when the page was cut.
Response jsonList(std::shared_ptr<Page> page, const char* total_key, const char* list_key,
                  const char* item_key);

// A streamed text body of the given content type.
Response textStream(std::shared_ptr<Page> page, std::string header, ItemWriter item,
                    std::string footer, std::string_view content_type);

// One key per line: IPs for a firewall script, numbers for a dial plan.
Response plainList(std::shared_ptr<Page> page);

} // namespace sp::api
