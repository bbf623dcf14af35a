// The API's only reads of store::Index's maps (lists and /stats totals), in one place so
// that the index's access (lock, snapshot) can change here alone. Any thread.
#include <algorithm>

#include "api/list.hpp"

namespace sp::api {

Page listIndex(const store::Index& index, bool ips, const ListQuery& q, bool with_first,
               const block::Policy* blocking) {
    Page page;
    page.with_first = with_first;
    // A snapshot: no lock is held while the list is copied, the writer goes on meanwhile.
    index.read([&](const store::IndexSnapshot& maps) {
        const auto& map = ips ? maps.by_ip : maps.by_number;
        // Generous: pages never written to stay out of the resident set.
        page.entries.reserve(map.size());
        page.keys.reserve(map.size() * (with_first ? 40 : 32));
        for (const auto& [key, seen] : map) {
            if (q.since && seen.last < *q.since) {
                continue;
            }
            if (!q.prefix.empty() && key.compare(0, q.prefix.size(), q.prefix) != 0) {
                continue;
            }
            if (q.after && (seen.last > q.after->last ||
                            (seen.last == q.after->last && key <= q.after->key))) {
                continue; // not after the cursor in list order
            }
            const std::uint64_t count = store::countOf(seen, q.origin);
            if (count == 0) {
                continue; // no event of the asked origin
            }
            if (blocking != nullptr) {
                const bool local = q.origin != store::OriginFilter::Peer;
                const bool peer = q.origin != store::OriginFilter::Local;
                if (!blocking->shouldBlock(key, block::Evidence{local ? seen.local : 0,
                                                                peer ? seen.peer : 0,
                                                                peer ? seen.reporters : 0})) {
                    continue;
                }
            }
            page.entries.pushBack(Entry{seen.last, count,
                                        static_cast<std::uint32_t>(page.keys.size()),
                                        static_cast<std::uint32_t>(key.size())});
            if (with_first) {
                char first[sizeof(core::TimePoint)];
                std::memcpy(first, &seen.first, sizeof first);
                page.keys.append(first, sizeof first);
            }
            page.keys.append(key.data(), key.size());
        }
    });
    auto before = [&page](const Entry& a, const Entry& b) { return page.before(a, b); };
    if (q.limit && page.entries.size() > *q.limit) {
        std::partial_sort(page.entries.begin(),
                          page.entries.begin() + static_cast<std::ptrdiff_t>(*q.limit),
                          page.entries.end(), before);
        page.entries.resize(*q.limit);
        page.next = cursorText(page.entries.back().last, page.key(page.entries.back()));
    } else {
        std::sort(page.entries.begin(), page.entries.end(), before);
    }
    return page;
}

IndexTotals indexTotals(const store::Index& index) {
    return index.read([](const store::IndexSnapshot& m) {
        return IndexTotals{m.events, m.by_ip.size(), m.by_number.size()};
    });
}

} // namespace sp::api
